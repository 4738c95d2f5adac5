"""Run tracking: `metrics.jsonl` (always), wandb (when a key is set or --wandb is given; offline
without a key) and a PNG of the training curve. Only rank 0 tracks."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Any

log = logging.getLogger("distil_jobs.train.tracking")


class Tracker:
    def __init__(self, folder: str, enabled: bool, use_wandb: bool, project: str, run_name: str | None,
                 config: dict[str, Any], run_key: str, resume_step: int = 0) -> None:
        self.enabled = enabled
        self.path = os.path.join(folder, "metrics.jsonl")
        self.wandb: Any = None
        if not enabled:
            return
        os.makedirs(folder, exist_ok=True)
        self._truncate_after(resume_step)
        if use_wandb:
            import wandb

            # Without a key wandb runs offline (files under `folder`, `wandb sync` later); never prompts.
            mode = "online" if os.environ.get("WANDB_API_KEY") else "offline"
            run_id = hashlib.sha256(run_key.encode()).hexdigest()[:16]  # a resumed job continues its run
            self.wandb = wandb.init(project=project, name=run_name, config=config, dir=folder, mode=mode,
                                    id=run_id, resume="allow")
            log.info("wandb %s run %s (project %s)", mode, run_id, project)

    def _truncate_after(self, step: int) -> None:
        """A resumed run repeats the steps after its checkpoint: drop their old lines."""
        if not os.path.exists(self.path):
            return
        with open(self.path) as f:
            kept = [line for line in f if line.strip() and json.loads(line).get("step", 0) <= step]
        with open(self.path, "w") as f:
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
        with open(self.path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def untrained_metrics(self) -> dict[str, Any]:
        """Dev metrics before the first step: what the manifest compares the final ones with."""
        first = next((r for r in self.rows() if r.get("step") == 0 and "dev_mse" in r), {})
        return {k: v for k, v in first.items() if k.startswith("dev_")}

    def plot(self, png: str) -> str | None:
        """Training loss and dev metrics against the step."""
        rows = self.rows()
        train = [r for r in rows if "loss" in r]
        dev = [r for r in rows if "dev_mse" in r]
        if not train:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        panels = 2 if dev else 1
        fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4), squeeze=False)
        ax = axes[0][0]
        ax.plot([r["step"] for r in train], [r["loss"] for r in train], label="train loss")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_yscale("log")
        ax.set_title("training loss")
        if dev:
            ax2 = axes[0][1]
            ax2.plot([r["step"] for r in dev], [r["dev_mse"] for r in dev], "o-", label="dev MSE")
            ax2.set_xlabel("step")
            ax2.set_ylabel("dev MSE to teacher")
            if any("dev_retrieval_top1" in r for r in dev):
                ax3 = ax2.twinx()
                ax3.plot([r["step"] for r in dev], [r.get("dev_retrieval_top1") for r in dev], "s--", color="C1",
                         label="dev retrieval top-1")
                ax3.set_ylabel("retrieval top-1")
                ax3.legend(loc="upper right")
            ax2.legend(loc="upper left")
            ax2.set_title("dev")
        fig.tight_layout()
        fig.savefig(png, dpi=100)
        plt.close(fig)
        return png

    def finish(self, summary: dict[str, Any]) -> None:
        if self.wandb is not None:
            self.wandb.summary.update(summary)
            self.wandb.finish()
