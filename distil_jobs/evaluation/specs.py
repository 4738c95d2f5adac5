"""Local task specs: `kind=sts,path=DIR,name=NAME[,columns=a:b]` strings or YAML mappings.

Parsing is kept free of mteb and torch so a typo fails in milliseconds, before anything loads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from distil_jobs.artifacts import open_location
from distil_jobs.data import DATA_EXTENSIONS
from distil_jobs.errors import DistilError

KINDS = ("classification", "sts", "bitext")
KEYS = ("kind", "path", "name", "columns", "split", "train_split", "langs", "samples_per_label")
# Column pairs each kind reads when `columns` is not given (bitext has no sensible default).
DEFAULT_COLUMNS: dict[str, tuple[str, str] | None] = {
    "classification": ("text", "label"),
    "sts": ("sentence1", "sentence2"),
    "bitext": None,
}
# What each kind's mteb task reports as its main score (mteb's own choice for these task types).
MAIN_SCORES = {"classification": "accuracy", "sts": "cosine_spearman", "bitext": "f1"}
DEFAULT_LANG = "und-Zyyy"  # undetermined language and script: mteb only uses it to label results
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
EXAMPLE = "kind=classification,path=DIR,name=NAME (bitext also needs columns=SRC:TGT)"


@dataclass(frozen=True, slots=True)
class LocalTaskSpec:
    """One task whose data lives in a folder: `<split>.jsonl` (or csv/tsv/parquet) files."""

    kind: str
    path: str
    name: str
    columns: tuple[str, str]
    split: str = "test"
    train_split: str = "train"  # classification only: where the classifier's examples come from
    langs: tuple[str, ...] = (DEFAULT_LANG,)  # BCP-47 "lang-Script" per column
    # classification only: training examples per label in each of mteb's 10 experiments. mteb's
    # default is 8; some MTEB tasks set their own (EmotionClassification 16, AmazonCounterfactual 32).
    samples_per_label: int | None = None

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "path": self.path, "name": self.name,
                             "columns": ":".join(self.columns), "split": self.split, "langs": ":".join(self.langs)}
        if self.kind == "classification":
            d["train_split"] = self.train_split
            d["samples_per_label"] = self.samples_per_label
        return d


def _pair(value: Any, key: str, where: str) -> tuple[str, ...]:
    items = [str(v).strip() for v in value] if isinstance(value, (list, tuple)) else str(value).split(":")
    items = [i.strip() for i in items]
    if not all(items):
        raise DistilError(f"local task {where}: {key}={value!r} has an empty part; write {key}=A:B")
    return tuple(items)


def _fields_from_string(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep:
            raise DistilError(f"local task '{text}': '{part}' is not key=value; write {EXAMPLE}")
        fields[key.strip().replace("-", "_")] = value.strip()
    return fields


def parse_local_task(raw: str | dict[str, Any]) -> LocalTaskSpec:
    """Parse one --local-task value (string) or YAML entry (mapping)."""
    if isinstance(raw, dict):
        fields = {str(k).replace("-", "_"): v for k, v in raw.items()}
        where = str(raw)
    else:
        fields = _fields_from_string(str(raw))
        where = f"'{raw}'"
    unknown = sorted(set(fields) - set(KEYS))
    if unknown:
        raise DistilError(f"local task {where}: unknown key '{unknown[0]}'; valid keys: {', '.join(KEYS)}")
    kind = str(fields.get("kind") or "").strip().lower()
    if kind not in KINDS:
        got = f"kind={kind}" if kind else "no kind"
        raise DistilError(f"local task {where}: {got}; use kind={'|'.join(KINDS)}")
    path = str(fields.get("path") or "").strip()
    if not path:
        split = fields.get("split") or "test"
        raise DistilError(f"local task {where}: path=DIR is missing (a folder with {split}.jsonl)")
    name = str(fields.get("name") or "").strip() or path.rstrip("/").rsplit("/", 1)[-1]
    if not _NAME.match(name):
        raise DistilError(f"local task {where}: name '{name}' must be letters, digits, '.', '_' or '-'")
    if "columns" in fields and fields["columns"] not in (None, ""):
        columns = _pair(fields["columns"], "columns", where)
    else:
        default = DEFAULT_COLUMNS[kind]
        if default is None:
            raise DistilError(f"local task {where}: kind=bitext needs columns=SRC:TGT, e.g. columns=en:yo")
        columns = default
    if len(columns) != 2 or columns[0] == columns[1]:
        raise DistilError(f"local task {where}: columns must name two different columns, e.g. columns=en:yo")
    if kind == "bitext" and any("-" in c for c in columns):
        # mteb names bitext directions "src-tgt" and splits on '-'.
        raise DistilError(f"local task {where}: bitext column names cannot contain '-'; rename the columns")
    langs = _pair(fields["langs"], "langs", where) if fields.get("langs") else (DEFAULT_LANG,)
    if kind == "bitext" and len(langs) == 1:
        langs = (langs[0], langs[0])
    if len(langs) != (2 if kind == "bitext" else 1):
        need = "one per column, e.g. langs=eng-Latn:yor-Latn" if kind == "bitext" else "one, e.g. langs=eng-Latn"
        raise DistilError(f"local task {where}: langs needs {need}")
    samples = fields.get("samples_per_label")
    if samples not in (None, ""):
        if kind != "classification":
            raise DistilError(f"local task {where}: samples_per_label only applies to kind=classification")
        try:
            samples = int(samples)
        except (TypeError, ValueError):
            samples = 0
        if samples < 1:
            raise DistilError(f"local task {where}: samples_per_label must be a positive integer")
    return LocalTaskSpec(kind=kind, path=path, name=name, columns=(columns[0], columns[1]),
                         split=str(fields.get("split") or "test"),
                         train_split=str(fields.get("train_split") or "train"), langs=langs,
                         samples_per_label=samples or None)


def split_file(path: str, split: str) -> str | None:
    """The URI of `<split>.<ext>` inside folder `path`, or None when there is none."""
    loc = open_location(path)
    names = loc.listdir()
    for ext in DATA_EXTENSIONS:
        if f"{split}{ext}" in names:
            return f"{loc.uri}/{split}{ext}"
    return None


def check_local_task(spec: LocalTaskSpec) -> None:
    """Fail early, naming the fix, when the folder lacks a split the task needs."""
    loc = open_location(spec.path)
    if not loc.exists():
        raise DistilError(f"local task {spec.name}: folder {spec.path} not found; check path= (and DISTIL_DATA_DIR)")
    needed = [spec.split] + ([spec.train_split] if spec.kind == "classification" else [])
    for split in needed:
        if split_file(spec.path, split) is None:
            present = ", ".join(n for n in loc.listdir() if n.endswith(DATA_EXTENSIONS)) or "no data files"
            what = "evaluation" if split == spec.split else "training"
            raise DistilError(f"local task {spec.name}: {spec.path} has no {split} split ({split}.jsonl) for "
                              f"{what} (found: {present}); add it or set "
                              f"{'split' if split == spec.split else 'train_split'}=NAME")
