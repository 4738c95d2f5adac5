"""The comparison report: summary.json, report.md (tasks × models, ratio to a reference) and a PNG chart.

Scores are read back from mteb's result files, so the report can be rebuilt from any output
folder (`--merge`) without rerunning a model.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from distil_jobs.artifacts import Location

RESULTS = "results"
SUMMARY, REPORT, CHART = "summary.json", "report.md", "scores.png"


@dataclass(frozen=True, slots=True)
class TaskScore:
    score: float  # mteb's main score, averaged over splits and subsets (TaskResult.get_score)
    subsets: dict[str, float]  # "split/subset" -> main score
    seconds: float | None


def result_file(out: Location, label: str, task: str) -> str | None:
    """Relative path of mteb's result for (model label, task), whatever revision folder mteb chose."""
    for revision in out.listdir(f"{RESULTS}/{label}"):
        rel = f"{RESULTS}/{label}/{revision}/{task}.json"
        if out.exists(rel):
            return rel
    return None


def read_score(out: Location, rel: str) -> TaskScore:
    raw = out.read_json(rel)
    values, subsets = [], {}
    for split, entries in (raw.get("scores") or {}).items():
        for e in entries:
            values.append(float(e["main_score"]))
            subsets[f"{split}/{e.get('hf_subset', 'default')}"] = float(e["main_score"])
    return TaskScore(float(np.mean(values)) if values else math.nan, subsets, raw.get("evaluation_time"))


def build_summary(models: list[dict[str, str]], tasks: list[dict[str, Any]], scores: dict[str, dict[str, TaskScore]],
                  reference: str) -> dict[str, Any]:
    """scores[task][label]. Ratios are model score / reference score, per task and for the task mean."""
    labels = [m["label"] for m in models]
    table: dict[str, dict[str, float]] = {t["name"]: {lb: scores[t["name"]][lb].score for lb in labels} for t in tasks}
    ratios = {t: {lb: _ratio(v[lb], v[reference]) for lb in labels} for t, v in table.items()}
    mean = {lb: float(np.mean([table[t][lb] for t in table])) for lb in labels}
    return {
        "reference": reference,
        "models": models,
        "tasks": tasks,
        "scores": table,
        "subset_scores": {t: {lb: scores[t][lb].subsets for lb in labels} for t in table},
        "ratios": ratios,
        "mean": mean,
        "mean_ratio": {lb: _ratio(mean[lb], mean[reference]) for lb in labels},
        "mean_of_task_ratios": {lb: float(np.mean([ratios[t][lb] for t in table])) for lb in labels},
        "evaluation_seconds": {t: {lb: scores[t][lb].seconds for lb in labels} for t in table},
    }


def _ratio(value: float, ref: float) -> float:
    return value / ref if ref else math.nan


def render_markdown(summary: dict[str, Any]) -> str:
    ref = summary["reference"]
    labels = [m["label"] for m in summary["models"]]
    others = [lb for lb in labels if lb != ref]
    head = ["task", "type", "metric", *labels, *[f"{lb} / {ref}" for lb in others]]
    lines = [
        f"# MTEB comparison (reference: {ref})",
        "",
        "Main score of each task as mteb computes it (×100); ratio columns divide by the reference model.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---"] * 3 + ["---:"] * (len(head) - 3)) + "|",
    ]
    for t in summary["tasks"]:
        name = t["name"]
        row = [name, t["type"], t["main_score"]]
        row += [f"{100 * summary['scores'][name][lb]:.2f}" for lb in labels]
        row += [f"{summary['ratios'][name][lb]:.3f}" for lb in others]
        lines.append("| " + " | ".join(row) + " |")
    mean_row = ["**mean**", "", ""] + [f"**{100 * summary['mean'][lb]:.2f}**" for lb in labels]
    mean_row += [f"**{summary['mean_ratio'][lb]:.3f}**" for lb in others]
    lines.append("| " + " | ".join(mean_row) + " |")
    lines += ["", "Models:", ""]
    lines += [f"- `{m['label']}`: {m['uri']}" for m in summary["models"]]
    lines += ["", f"Chart: [{CHART}]({CHART}). Raw mteb results: `{RESULTS}/<model>/<revision>/<task>.json`.", ""]
    return "\n".join(lines)


def render_chart(summary: dict[str, Any]) -> bytes:
    """Grouped bars: one group per task (plus the mean), one bar per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [m["label"] for m in summary["models"]]
    tasks = [t["name"] for t in summary["tasks"]] + ["mean"]
    values = {lb: [summary["scores"][t][lb] for t in tasks[:-1]] + [summary["mean"][lb]] for lb in labels}
    width = 0.8 / len(labels)
    x = np.arange(len(tasks))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(tasks) * max(1, len(labels)) / 2 + 2), 4.2))
    for i, lb in enumerate(labels):
        bars = ax.bar(x + (i - (len(labels) - 1) / 2) * width, [100 * v for v in values[lb]], width, label=lb)
        ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=1)
    ax.set_xticks(x, tasks, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("main score (×100)")
    ax.set_ylim(0, 105)
    ax.set_title(f"MTEB main scores (reference: {summary['reference']})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, metadata={"Software": None})  # no version stamp: same input, same bytes
    plt.close(fig)
    return buf.getvalue()
