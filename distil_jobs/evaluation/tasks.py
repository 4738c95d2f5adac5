"""The tasks of one evaluation: named MTEB tasks and local folder tasks, behind one small record."""

from __future__ import annotations

import difflib
import logging
import os
import warnings
from dataclasses import dataclass, field
from typing import Any

from distil_jobs.errors import DistilError, first_line
from distil_jobs.evaluation import import_mteb
from distil_jobs.evaluation.specs import MAIN_SCORES, LocalTaskSpec

_LOCAL_TYPES = {"classification": "Classification", "sts": "STS", "bitext": "BitextMining"}


@dataclass(slots=True)
class EvalTask:
    name: str
    source: str  # "mteb" (a named task) or "local" (a data folder)
    type: str  # mteb task type, e.g. "Classification"
    main_score: str
    spec: LocalTaskSpec | None = None
    _task: Any = field(default=None, repr=False)

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "source": self.source, "type": self.type, "main_score": self.main_score}
        if self.spec:
            d["spec"] = self.spec.as_dict()
        return d


def named_tasks(names: list[str]) -> list[EvalTask]:
    """Resolve MTEB task names from mteb's registry (metadata only: works offline)."""
    if not names:
        return []
    mteb = import_mteb()
    out = []
    for name in names:
        try:
            t = mteb.get_task(name)
        except KeyError:
            close = difflib.get_close_matches(name, _all_task_names(mteb), n=3, cutoff=0.6)
            hint = f"close matches: {', '.join(close)}" if close else "see `python -m mteb available-tasks`"
            raise DistilError(f"unknown MTEB task '{name}' ({hint}); fix --tasks") from None
        out.append(EvalTask(name, "mteb", str(t.metadata.type), str(t.metadata.main_score), _task=t))
    return out


def _all_task_names(mteb: Any) -> list[str]:
    # Superseded, beta and private tasks count too: a typo of any of them deserves a suggestion.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        level = logging.getLogger("mteb").level
        logging.getLogger("mteb").setLevel(logging.ERROR)
        try:
            tasks = mteb.get_tasks(exclude_superseded=False, exclude_private=False, exclude_beta=False)
        finally:
            logging.getLogger("mteb").setLevel(level)
    return [t.metadata.name for t in tasks]


def local_tasks(specs: list[LocalTaskSpec]) -> list[EvalTask]:
    return [EvalTask(s.name, "local", _LOCAL_TYPES[s.kind], MAIN_SCORES[s.kind], spec=s) for s in specs]


def load_task(task: EvalTask, max_test_rows: int | None) -> Any:
    """The mteb task object with its data loaded; a named task whose data cannot be read fails by name."""
    if task.spec is not None:
        if task._task is None:
            from distil_jobs.evaluation.local_tasks import build_local_task

            task._task = build_local_task(task.spec, max_test_rows)
        return task._task
    t = task._task
    if not t.data_loaded:
        try:
            t.load_data()
        except Exception as e:  # datasets reports offline/missing data with many types
            first = first_line(e)
            offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
            fix = ("HF_HUB_OFFLINE=1 and its data is not in the local HF cache: run once online to cache it, "
                   "or drop it from --tasks") if offline else "check the network, HF_TOKEN and HF_HOME"
            raise DistilError(f"MTEB task {task.name}: cannot load its data ({first}); {fix}") from None
    return t
