"""Run tracking: `metrics.jsonl` (always), wandb (only with --wandb; see `wandb_mode`) and a PNG of
the training curve. Only rank 0 tracks.

The tracker knows no metric by name: dev metrics are whatever the method's `evaluate` returns
(keys starting with `dev_`), and the method's headline metric is the one the curve shows."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Any

log = logging.getLogger("distil_jobs.train.tracking")


def wandb_mode() -> str:
    """WANDB_MODE when set (the user's word wins: offline on a cluster without network, even with a
    key), else online with WANDB_API_KEY, else offline (files under the run, `wandb sync` later):
    wandb never prompts for a login in a batch job."""
    return os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")


class Tracker:
    def __init__(self, folder: str, enabled: bool, use_wandb: bool, project: str, run_name: str | None,
                 config: dict[str, Any], run_key: str, resume_step: int = 0, headline: str | None = None) -> None:
        self.enabled = enabled
        self.headline = headline  # the dev metric the curve shows (default: the first one logged)
        self.path = os.path.join(folder, "metrics.jsonl")
        self.wandb: Any = None
        if not enabled:
            return
        os.makedirs(folder, exist_ok=True)
        self._truncate_after(resume_step)
        if use_wandb:
            import wandb

            mode = wandb_mode()
            run_id = hashlib.sha256(run_key.encode()).hexdigest()[:16]  # a resumed job continues its run
            self.wandb = wandb.init(project=project, name=run_name, config=config, dir=folder, mode=mode,
                                    id=run_id, resume="allow")
            log.info("wandb %s run %s (project %s)", mode, run_id, project)

    def _truncate_after(self, step: int) -> None:
        """A resumed run repeats the steps after its checkpoint: drop their old lines.

        A run killed while writing leaves a torn last line (`{"step": 3, "lo`); the checkpoints are
        good, so that line is dropped with a warning instead of blocking the resume."""
        if not os.path.exists(self.path):
            return
        kept: list[str] = []
        torn: list[int] = []
        # errors="replace": a line torn inside a multi-byte character must not fail the read itself.
        with open(self.path, encoding="utf-8", errors="replace") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                row = _parse(line)
                if row is None:
                    torn.append(number)
                elif row.get("step", 0) <= step:
                    kept.append(line if line.endswith("\n") else line + "\n")
        if torn:
            log.warning("%s: dropped %d unparseable line(s) (first: line %d), left by a run killed while writing",
                        self.path, len(torn), torn[0])
        with open(self.path, "w", encoding="utf-8") as f:
            f.writelines(kept)

    def log(self, step: int, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, **values}, sort_keys=True) + "\n")
        if self.wandb is not None:
            self.wandb.log({k: v for k, v in values.items() if isinstance(v, (int, float))}, step=step)

    def rows(self) -> list[dict[str, Any]]:
        if not os.path.exists(self.path):
            return []
        with open(self.path, encoding="utf-8", errors="replace") as f:
            return [row for line in f if line.strip() and (row := _parse(line)) is not None]

    def dev_rows(self) -> list[dict[str, Any]]:
        return [r for r in self.rows() if any(k.startswith("dev_") for k in r)]

    def untrained_metrics(self) -> dict[str, Any]:
        """Dev metrics before the first step: what the manifest compares the final ones with."""
        first = next((r for r in self.dev_rows() if r.get("step") == 0), {})
        return {k: v for k, v in first.items() if k.startswith("dev_")}

    def plot(self, png: str) -> str | None:
        """Training loss, and the headline dev metric, against the step."""
        rows = self.rows()
        train = [r for r in rows if "loss" in r]
        if not train:
            return None
        dev = self.dev_rows()
        metric = self.headline or next((k for r in dev for k in sorted(r) if k.startswith("dev_")), None)
        dev = [r for r in dev if metric in r]
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        panels = 2 if dev else 1
        fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4), squeeze=False)
        ax = axes[0][0]
        ax.plot([r["step"] for r in train], [r["loss"] for r in train], label="train loss")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        if all(r["loss"] > 0 for r in train):
            ax.set_yscale("log")
        ax.set_title("training loss")
        if dev:
            ax2 = axes[0][1]
            ax2.plot([r["step"] for r in dev], [r[metric] for r in dev], "o-", color="C1")
            ax2.set_xlabel("step")
            ax2.set_ylabel(metric)
            ax2.set_title(f"dev: {metric}")
        fig.tight_layout()
        fig.savefig(png, dpi=100)
        plt.close(fig)
        return png

    def finish(self, summary: dict[str, Any]) -> None:
        if self.wandb is not None:
            self.wandb.summary.update(summary)
            self.wandb.finish()


def _parse(line: str) -> dict[str, Any] | None:
    """One metrics line, or None when it is not a JSON object (torn by a kill mid-write)."""
    try:
        row = json.loads(line)
    except ValueError:
        return None
    return row if isinstance(row, dict) else None
