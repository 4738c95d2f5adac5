"""mteb task classes for data folders: classification, STS and bitext mining.

Each local task is a subclass of mteb's own abstract task with a `load_data` that reads the
folder, so encoding, classifiers, correlations and nearest-neighbour matching are mteb's code
and the scores mean what they mean on the MTEB leaderboard.
"""

from __future__ import annotations

import math
from typing import Any

from distil_jobs.data import read_table
from distil_jobs.errors import DistilError
from distil_jobs.evaluation import import_mteb
from distil_jobs.evaluation.specs import MAIN_SCORES, LocalTaskSpec, check_local_task, split_file

_TYPES = {"classification": ("Classification", "t2c"), "sts": ("STS", "t2t"), "bitext": ("BitextMining", "t2t")}
SEED = 42  # mteb's default task seed: same subsample and classifier runs every time


def _read_split(spec: LocalTaskSpec, split: str, columns: list[str], texts: list[str],
                required: tuple[str, ...] = ()) -> dict[str, list[Any]]:
    """Read `columns` of one split; `texts` are the columns that must hold non-empty text, `required`
    those (labels, scores) that must have a value in every row."""
    uri = split_file(spec.path, split)
    assert uri is not None  # check_local_task ran first
    table = read_table(uri)
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise DistilError(f"local task {spec.name}: column '{missing[0]}' not in {uri} "
                          f"(columns: {', '.join(table.column_names)}); set columns=A:B")
    if table.num_rows == 0:
        raise DistilError(f"local task {spec.name}: {uri} has no rows")
    data = {c: table.column(c).to_pylist() for c in columns}
    for c in texts:
        empty = [i for i, t in enumerate(data[c]) if t is None or not str(t).strip()]
        if empty:
            raise DistilError(f"local task {spec.name}: {len(empty)} empty text(s) in '{c}' of {uri} "
                              f"(first at row {empty[0]}); clean the data")
    for c in required:
        # mteb would fail deep in its classifier or correlation code, after the model has loaded.
        missing = [i for i, v in enumerate(data[c]) if v is None]
        if missing:
            raise DistilError(f"local task {spec.name}: {len(missing)} missing value(s) in '{c}' of {uri} "
                              f"(first at row {missing[0]}); fill them in or drop those rows")
    return data


def _scores(spec: LocalTaskSpec, values: list[Any], uri: str) -> list[float]:
    """STS gold scores as floats; numeric strings ("4.2") pass, anything else is named by row."""
    scores: list[float] = []
    for i, v in enumerate(values):
        try:
            score = float(v) if not isinstance(v, bool) else math.nan
        except (TypeError, ValueError):
            score = math.nan
        if not math.isfinite(score):
            raise DistilError(f"local task {spec.name}: score {v!r} in row {i} of {uri} is not a number; "
                              "give every row a numeric 'score' (e.g. 0 to 5)")
        scores.append(score)
    return scores


def _sample(n: int, max_rows: int | None) -> list[int] | None:
    """Seeded random rows (not the first rows: data files are often sorted by label or source)."""
    if max_rows is None or n <= max_rows:
        return None
    import numpy as np

    return sorted(np.random.default_rng(SEED).choice(n, size=max_rows, replace=False).tolist())


def build_local_task(spec: LocalTaskSpec, max_test_rows: int | None = None) -> Any:
    """An mteb task object for `spec`, its data loaded (so errors surface before any output is written)."""
    check_local_task(spec)
    import_mteb()
    from datasets import Dataset, DatasetDict
    from mteb.abstasks.classification import AbsTaskClassification
    from mteb.abstasks.sts import AbsTaskSTS
    from mteb.abstasks.task_metadata import TaskMetadata
    from mteb.abstasks.text.bitext_mining import AbsTaskBitextMining

    task_type, category = _TYPES[spec.kind]
    a, b = spec.columns
    if spec.kind == "bitext":
        # Both directions, as mteb's parallel bitext tasks do: each subset "src-tgt" finds, for
        # every src sentence, its nearest tgt sentence. The main score averages the two.
        eval_langs: Any = {f"{a}-{b}": list(spec.langs), f"{b}-{a}": list(reversed(spec.langs))}
    else:
        eval_langs = list(spec.langs)
    metadata = TaskMetadata(
        name=spec.name, description=f"Local {spec.kind} task read from {spec.path}",
        dataset={"path": spec.path, "revision": "local"}, type=task_type, category=category,
        modalities=["text"], eval_splits=[spec.split], eval_langs=eval_langs, main_score=MAIN_SCORES[spec.kind],
        license="not specified", sample_creation="found",
    )

    def load_data(self: Any, num_proc: int | None = None, **kwargs: Any) -> None:
        if self.data_loaded:
            return
        if spec.kind == "classification":
            text, label = spec.columns
            splits = {}
            for split in (spec.train_split, spec.split):
                d = _read_split(spec, split, [text, label], [text], required=(label,))
                splits[split] = Dataset.from_dict({"text": [str(t) for t in d[text]], "label": d[label]})
            ds = DatasetDict(splits)
            if max_test_rows is not None and len(ds[spec.split]) > max_test_rows:
                # mteb's own stratified subsampling, as it does for its large classification test sets.
                ds = self.stratified_subsampling(ds, seed=SEED, splits=[spec.split], n_samples=max_test_rows)
            self.dataset = ds
        elif spec.kind == "sts":
            d = _read_split(spec, spec.split, [a, b, "score"], [a, b], required=("score",))
            scores = _scores(spec, d["score"], split_file(spec.path, spec.split) or spec.path)
            ds = Dataset.from_dict({"sentence1": [str(t) for t in d[a]], "sentence2": [str(t) for t in d[b]],
                                    "score": scores})
            keep = _sample(len(ds), max_test_rows)
            self.dataset = DatasetDict({spec.split: ds.select(keep) if keep else ds})
        else:
            d = _read_split(spec, spec.split, [a, b], [a, b])
            ds = Dataset.from_dict({a: [str(t) for t in d[a]], b: [str(t) for t in d[b]]})
            keep = _sample(len(ds), max_test_rows)
            self.dataset = DatasetDict({spec.split: ds.select(keep) if keep else ds})
        self.data_loaded = True

    attrs: dict[str, Any] = {"metadata": metadata, "load_data": load_data}
    base: type
    if spec.kind == "classification":
        base = AbsTaskClassification
        attrs["train_split"] = spec.train_split
        if spec.samples_per_label:
            attrs["samples_per_label"] = spec.samples_per_label
    elif spec.kind == "sts":
        # min/max_score (default 0..5) only rescale gold scores linearly: correlations are unchanged.
        base = AbsTaskSTS
    else:
        base = AbsTaskBitextMining
        attrs["parallel_subsets"] = True
    cls = type(f"Local{task_type}_{spec.name.replace('-', '_').replace('.', '_')}", (base,), attrs)
    task = cls()
    task.load_data()
    return task
