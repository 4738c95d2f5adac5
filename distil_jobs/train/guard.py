"""What a run must not publish without saying so: a student worse than it started.

Every training run, whatever the method, evaluates the untrained student first (step 0) and the
published one last, on the method's *watched* dev metrics (its headline and whatever it must not
lose, e.g. English STS while it learns Yoruba). `regressions` names each watched metric that got
worse; the manifest and the end-of-run summary say so plainly, and `--fail-on-regression` turns it
into a failed run with no manifest. `--keep-best METRIC` publishes the evaluation step with the
best value of one metric instead of the last step (`BestTracker` decides, the loop saves).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterator
from typing import Any

from distil_jobs.errors import DistilError
from distil_jobs.train.methods.base import Method, Metric

log = logging.getLogger("distil_jobs.train.guard")
BEST = "best"  # checkpoint sub-folder of the best evaluation step
BEST_INFO = "best.json"


def watched_metrics(method: Method) -> list[Metric]:
    """The method's headline, then the other metrics it declares it must not lose (`watched`)."""
    seen = [method.headline]
    for m in getattr(method, "watched", ()):
        if m.name not in {s.name for s in seen}:
            seen.append(m)
    return seen


def metric_named(method: Method, name: str) -> Metric:
    """`--keep-best` names a metric: `headline`, or one of the method's watched metrics."""
    if name == "headline":
        return method.headline
    known = watched_metrics(method)
    for m in known:
        if m.name == name:
            return m
    raise DistilError(f"--keep-best {name}: --method {getattr(method, 'name', '?')} reports "
                      f"{', '.join(m.name for m in known)} (or say 'headline')")


def is_better(metric: Metric, new: float, old: float | None) -> bool:
    if old is None or not math.isfinite(old):
        return math.isfinite(new)
    return new > old if metric.higher_is_better else new < old


def _compared(watched: list[Metric], untrained: dict[str, Any], published: dict[str, Any]
              ) -> Iterator[tuple[Metric, float, float, bool]]:
    """(metric, untrained value, published value, got worse) for each watched metric both evaluations have."""
    for m in watched:
        before, after = untrained.get(m.name), published.get(m.name)
        if before is not None and after is not None:
            yield m, before, after, is_better(m, before, after)


def regressions(watched: list[Metric], untrained: dict[str, Any], published: dict[str, Any]) -> list[dict[str, Any]]:
    """Each watched metric on which the published student is worse than the untrained one."""
    return [{"metric": m.name, "untrained": before, "published": after, "higher_is_better": m.higher_is_better}
            for m, before, after, worse in _compared(watched, untrained, published) if worse]


def summary_lines(watched: list[Metric], untrained: dict[str, Any], published: dict[str, Any]) -> list[str]:
    """The end-of-run table: each watched metric before and after, and which way it went."""
    return [f"{'metric':<22} {'untrained':>10} {'published':>10}  verdict"] + [
        f"{m.name:<22} {before:>10.4f} {after:>10.4f}  {'WORSE than untrained' if worse else 'ok'}"
        for m, before, after, worse in _compared(watched, untrained, published)]


def check(watched: list[Metric], untrained: dict[str, Any], published: dict[str, Any], fail: bool
          ) -> list[dict[str, Any]]:
    """Log the summary; with `fail`, refuse to publish a student that regressed."""
    worse = regressions(watched, untrained, published)
    for line in summary_lines(watched, untrained, published):
        log.info("%s", line)
    if worse:
        names = ", ".join(f"{w['metric']} {w['untrained']:.4f} → {w['published']:.4f}" for w in worse)
        if fail:
            raise DistilError(f"the trained student is worse than the untrained one ({names}); nothing was "
                              "published (--fail-on-regression): change the recipe, or drop the flag to publish it")
        log.warning("the published student is WORSE than the untrained one on: %s", names)
    return worse


class BestTracker:
    """The best evaluation so far by one metric, remembered next to the checkpoints so a resumed run
    keeps it."""

    def __init__(self, metric: Metric, root: str) -> None:
        self.metric = metric
        self.root = os.path.join(root, BEST)
        self.step: int | None = None
        self.value: float | None = None
        self.metrics: dict[str, float] = {}
        path = os.path.join(self.root, BEST_INFO)
        if os.path.exists(path):
            with open(path) as f:
                info = json.load(f)
            self.step, self.value, self.metrics = info["step"], info["value"], info["metrics"]

    def improves(self, metrics: dict[str, float]) -> bool:
        value = metrics.get(self.metric.name)
        return value is not None and is_better(self.metric, float(value), self.value)

    def record(self, step: int, metrics: dict[str, float], write: bool) -> None:
        """After the weights of `step` were saved under `self.root`; rank 0 `write`s it down."""
        self.step, self.value, self.metrics = step, float(metrics[self.metric.name]), dict(metrics)
        if not write:
            return
        os.makedirs(self.root, exist_ok=True)
        tmp = os.path.join(self.root, f".tmp-{BEST_INFO}")
        with open(tmp, "w") as f:
            json.dump({"metric": self.metric.name, "step": step, "value": self.value, "metrics": metrics}, f)
        os.replace(tmp, os.path.join(self.root, BEST_INFO))
        log.info("new best %s = %.5f at step %d", self.metric.name, self.value, step)
