"""The embedding method's data: texts (and translations) with the teacher's embeddings, either read
from a precompute-embeddings artifact or left for an online teacher to fill."""

from __future__ import annotations

import dataclasses
import logging
import unicodedata
from typing import Any

import numpy as np
import pyarrow as pa

from distil_jobs.artifacts import require_artifact
from distil_jobs.artifacts.manifest import input_ref
from distil_jobs.data import dev_split, empty_rows, license_of, read_table, text_column
from distil_jobs.errors import DistilError
from distil_jobs.jobs import TEACHER_EMBEDDINGS
from distil_jobs.models.encoder import column_name

log = logging.getLogger("distil_jobs.train.embedding_data")
TARGETS_KIND = TEACHER_EMBEDDINGS


@dataclasses.dataclass(slots=True)
class DistilData:
    texts: list[str]
    pairs: list[str] | None  # translations of `texts` (parallel distillation)
    targets: np.ndarray | None  # float32 (rows, dim) teacher embeddings of `texts`; None = online teacher

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, idx: np.ndarray) -> DistilData:
        return DistilData([self.texts[i] for i in idx], [self.pairs[i] for i in idx] if self.pairs else None,
                          None if self.targets is None else self.targets[idx])


@dataclasses.dataclass(slots=True)
class DataSpec:
    """What the job was asked to read (a slice of the train config)."""

    targets: str | None
    input: str | None
    target_type: str
    text_column: str | None
    pair_column: str | None
    monolingual: bool
    max_rows: int | None
    dev_input: str | None
    dev_fraction: float
    seed: int
    cast_text: bool = False


@dataclasses.dataclass(slots=True)
class LoadedData:
    train: DistilData
    dev: DistilData | None
    teacher: str | None  # the teacher named by the targets artifact
    target_dim: int | None
    text_column: str
    pair_column: str | None
    license: str | None
    inputs: list[dict[str, Any]]


def embeddings(table: pa.Table, column: str, uri: str, target_type: str) -> np.ndarray:
    if column not in table.column_names:
        have = [c for c in table.column_names if c.startswith("teacher_embedding_")]
        raise DistilError(f"{uri} has no column '{column}' (it has {', '.join(have) or 'no embeddings'}): pass "
                          f"--target-type {have[0].removeprefix('teacher_embedding_') if have else 'final'} or rerun "
                          f"precompute-embeddings with --output-type {target_type}")
    col = table.column(column).combine_chunks()
    if col.null_count:
        raise DistilError(f"{uri}: {col.null_count} row(s) have no '{column}': rerun precompute-embeddings")
    dim = col.type.list_size
    values = np.asarray(col.flatten().to_numpy(zero_copy_only=False), dtype=np.float32).reshape(len(col), dim)
    bad = ~np.isfinite(values).all(axis=1)  # one NaN target turns the whole student into NaN
    if bad.any():
        first = int(np.argmax(bad))
        where = f"row_idx {table.column('row_idx')[first]}" if "row_idx" in table.column_names else f"row {first}"
        raise DistilError(f"{uri}: {int(bad.sum())} target(s) in '{column}' hold NaN or inf (first at {where}): "
                          "rerun precompute-embeddings, or drop those rows")
    return values


def texts_of(table: pa.Table, column: str, uri: str, flag: str, cast: bool = False) -> list[str]:
    values = text_column(table, column, uri, flag, cast)
    empty = empty_rows(values)
    if empty:
        raise DistilError(f"{len(empty)} empty text(s) in column '{column}' of {uri} (first at row {empty[0]}): "
                          "clean the input")
    return [str(v) for v in values]


def _read(uri: str, spec: DataSpec, role: str) -> tuple[DistilData, dict[str, Any]]:
    """One dataset: a teacher-embeddings artifact (with targets) or raw text (targets left to the teacher)."""
    info: dict[str, Any] = {"teacher": None, "text_column": spec.text_column or "text", "pair_column": spec.pair_column,
                            "license": license_of(uri)}
    manifest = None
    if spec.targets and uri == spec.targets:
        _, manifest = require_artifact(uri, TARGETS_KIND)
    elif role == "dev":
        try:
            _, manifest = require_artifact(uri, TARGETS_KIND)
        except DistilError:
            manifest = None  # raw dev text: the teacher embeds it
    if manifest is not None:
        extra = manifest.get("extra", {})
        info["teacher"] = (manifest.get("config") or {}).get("teacher")
        info["license"] = manifest.get("license") or info["license"]  # the data's licence travels along
        info["text_column"] = spec.text_column or extra.get("text_column") or "text"
        if not spec.monolingual:
            info["pair_column"] = spec.pair_column or extra.get("pair_column")
    table = read_table(uri)
    if spec.max_rows is not None and role == "train":
        table = table.slice(0, spec.max_rows)
    if table.num_rows == 0:
        raise DistilError(f"{uri} has no rows")
    texts = texts_of(table, info["text_column"], uri, "--text-column", spec.cast_text)
    pairs = texts_of(table, info["pair_column"], uri, "--pair-column", spec.cast_text) if info["pair_column"] else None
    targets = embeddings(table, column_name(spec.target_type), uri, spec.target_type) if manifest else None
    return DistilData(texts, pairs, targets), info


def load_data(spec: DataSpec) -> LoadedData:
    uri = spec.targets or spec.input
    if not uri:
        raise DistilError("give --targets (a precompute-embeddings artifact) or --input with --teacher")
    train, info = _read(uri, spec, "train")
    inputs = [input_ref(uri, "targets" if spec.targets else "input")]
    if spec.dev_input:
        dev, _ = _read(spec.dev_input, spec, "dev")
        if train.pairs is not None and dev.pairs is None:
            raise DistilError(f"--dev-input {spec.dev_input} has no pair column '{info['pair_column']}' but the "
                              "training data is parallel: give a dev set with both columns")
        inputs.append(input_ref(spec.dev_input, "dev"))
    elif spec.dev_fraction > 0:
        kept, held = dev_split(len(train), spec.dev_fraction, spec.seed)
        dev, train = train.subset(held), train.subset(kept)
    else:
        dev = None
    if dev is not None and train.pairs is None:
        dev.pairs = None
    dim = None if train.targets is None else int(train.targets.shape[1])
    if dev is not None and dev.targets is not None and dim is not None and dev.targets.shape[1] != dim:
        raise DistilError(f"dev targets have {dev.targets.shape[1]} dims, training targets {dim}: use the same teacher")
    log.info("data: %d training rows, %d dev rows%s, targets %s", len(train), len(dev) if dev else 0,
             ", parallel" if train.pairs else "", "precomputed" if dim else "from the online teacher")
    return LoadedData(train, dev, info["teacher"], dim, info["text_column"], info["pair_column"], info["license"],
                      inputs)


@dataclasses.dataclass(slots=True)
class StsPairs:
    """Sentence pairs with a similarity score: what the student must keep while it learns (e.g. English STS)."""

    first: list[str]
    second: list[str]
    scores: np.ndarray


def load_sts(uri: str, rows: int) -> StsPairs:
    """The first `rows` rows of an STS file with columns sentence1, sentence2 and score."""
    table = read_table(uri).slice(0, rows)
    missing = [c for c in ("sentence1", "sentence2", "score") if c not in table.column_names]
    if missing:
        raise DistilError(f"--watch-sts {uri} has no column {missing[0]} (columns: {', '.join(table.column_names)}): "
                          "give a file with sentence1, sentence2 and score, e.g. $DISTIL_DATA_DIR/stsb/dev.jsonl")
    first = texts_of(table, "sentence1", uri, "--watch-sts")
    second = texts_of(table, "sentence2", uri, "--watch-sts")
    try:
        scores = np.asarray(table.column("score").to_pylist(), dtype=np.float64)
    except (TypeError, ValueError):
        raise DistilError(f"--watch-sts {uri}: column score must hold numbers") from None
    if len(first) < 10 or not np.isfinite(scores).all():
        raise DistilError(f"--watch-sts {uri}: needs at least 10 rows with finite scores")
    return StsPairs(first, second, scores)


def strip_diacritics(text: str) -> str:
    """Yoruba as it is often typed: without tone marks and underdots ("Ẹ kú àárọ̀" → "E ku aaro")."""
    decomposed = unicodedata.normalize("NFD", text)
    return unicodedata.normalize("NFC", "".join(c for c in decomposed if unicodedata.category(c) != "Mn"))
