"""The sense method's data: texts with, for every token, the teacher's sense, read from a
`precompute-embeddings --output-type sense_ids` artifact, or raw text left for an online teacher.

A labels artifact is only used with the dictionary it was made from: its manifest records that
dictionary's manifest hash, and it must be the hash of `--sense-dict`. The labels themselves are
checked too (token ids inside the vocabulary, each label one of its token's senses), so a damaged
or foreign artifact fails before training instead of teaching nonsense.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np
import pyarrow as pa

from distil_jobs.artifacts import require_artifact
from distil_jobs.artifacts.manifest import input_ref
from distil_jobs.data import dev_split, license_of, read_table
from distil_jobs.errors import DistilError
from distil_jobs.jobs import TEACHER_EMBEDDINGS
from distil_jobs.senses.labels import LABELS_COLUMN, NO_SENSE, TOKENS_COLUMN, SenseDictionary
from distil_jobs.train.methods.embedding_data import texts_of

log = logging.getLogger("distil_jobs.train.sense_data")


@dataclasses.dataclass(slots=True)
class SenseRows:
    texts: list[str]
    tokens: list[np.ndarray] | None  # each text's token ids, special tokens left out; None: the teacher labels online
    labels: list[np.ndarray] | None  # the teacher's sense of each of those tokens (NO_SENSE where it has none)

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, idx: np.ndarray) -> SenseRows:
        return SenseRows([self.texts[i] for i in idx], _pick(self.tokens, idx), _pick(self.labels, idx))


def _pick(rows: list[np.ndarray] | None, idx: np.ndarray) -> list[np.ndarray] | None:
    return None if rows is None else [rows[i] for i in idx]


@dataclasses.dataclass(slots=True)
class LoadedSenses:
    train: SenseRows
    dev: SenseRows | None
    teacher: str | None  # the teacher named by the labels artifact
    license: str | None
    inputs: list[dict[str, Any]]


def _lists(table: pa.Table, column: str, dtype: type) -> list[np.ndarray]:
    col = table.column(column).combine_chunks()
    values = col.flatten().to_numpy(zero_copy_only=False).astype(dtype)
    return np.split(values, col.offsets.to_numpy()[1:-1])


def _check_labels(uri: str, rows: SenseRows, dictionary: SenseDictionary) -> None:
    assert rows.tokens is not None and rows.labels is not None
    tokens, labels = np.concatenate(rows.tokens), np.concatenate(rows.labels)
    if any(len(t) != len(s) for t, s in zip(rows.tokens, rows.labels, strict=True)):
        raise DistilError(f"{uri}: some rows have more token ids than sense labels: rerun precompute-embeddings")
    vocab = len(dictionary.offsets) - 1
    if tokens.size and (tokens.min() < 0 or tokens.max() >= vocab):
        raise DistilError(f"{uri} holds token ids outside the dictionary's vocabulary of {vocab}: relabel it with "
                          f"this --sense-dict")
    counts = dictionary.offsets[tokens + 1] - dictionary.offsets[tokens]
    bad = (labels < NO_SENSE) | (labels >= np.maximum(counts, 1)) | ((labels == NO_SENSE) != (counts == 0))
    if bad.any():
        raise DistilError(f"{uri}: {int(bad.sum())} sense label(s) do not fit --sense-dict {dictionary.uri} (a label "
                          "past its token's senses): relabel with precompute-embeddings --output-type sense_ids")


def _read(uri: str, cfg: Any, dictionary: SenseDictionary, labelled: bool, max_rows: int | None = None
          ) -> tuple[SenseRows, dict[str, Any]]:
    """A labels artifact (`labelled`), or raw text whose labels the online teacher computes."""
    info: dict[str, Any] = {"teacher": None, "license": license_of(uri)}
    column = cfg.text_column or "text"
    if labelled:
        _, manifest = require_artifact(uri, TEACHER_EMBEDDINGS)
        extra = manifest.get("extra") or {}
        if extra.get("output_type") != "sense_ids":
            raise DistilError(f"{uri} holds {extra.get('output_type')} outputs, not sense labels: make them with "
                              f"precompute-embeddings --output-type sense_ids --sense-dict {dictionary.uri}")
        made_from = next((i for i in manifest.get("inputs", []) if i.get("role") == "sense_dict"), {})
        if made_from.get("manifest_sha256") != dictionary.ref.get("manifest_sha256"):
            raise DistilError(f"{uri} holds sense labels made from another dictionary ({made_from.get('uri')}) than "
                              f"--sense-dict {dictionary.uri}: pass the dictionary they were made from, or relabel "
                              "with precompute-embeddings --output-type sense_ids --sense-dict "
                              f"{dictionary.uri}")
        info["teacher"] = (manifest.get("config") or {}).get("teacher")
        info["license"] = manifest.get("license") or info["license"]
        column = cfg.text_column or extra.get("text_column") or "text"
    table = read_table(uri)
    if max_rows is not None:
        table = table.slice(0, max_rows)
    if table.num_rows == 0:
        raise DistilError(f"{uri} has no rows")
    texts = texts_of(table, column, uri, "--text-column", cfg.cast_text)
    if not labelled:
        return SenseRows(texts, None, None), info
    rows = SenseRows(texts, _lists(table, TOKENS_COLUMN, np.int64), _lists(table, LABELS_COLUMN, np.int64))
    _check_labels(uri, rows, dictionary)
    return rows, info


def _is_artifact(uri: str) -> bool:
    return bool(input_ref(uri, "probe").get("kind"))


def load_senses(cfg: Any, dictionary: SenseDictionary) -> LoadedSenses:
    uri = cfg.targets or cfg.input
    train, info = _read(uri, cfg, dictionary, labelled=bool(cfg.targets), max_rows=cfg.max_rows)
    inputs = [input_ref(uri, "targets" if cfg.targets else "input"), dictionary.ref]
    dev: SenseRows | None = None
    if cfg.dev_input:
        dev, _ = _read(cfg.dev_input, cfg, dictionary, labelled=_is_artifact(cfg.dev_input))
        inputs.append(input_ref(cfg.dev_input, "dev"))
    elif cfg.dev_fraction > 0:
        kept, held = dev_split(len(train), cfg.dev_fraction, cfg.seed)
        dev, train = train.subset(held), train.subset(kept)
    log.info("data: %d training rows, %d dev rows, sense labels %s", len(train), len(dev) if dev else 0,
             "precomputed" if train.labels is not None else "from the online teacher")
    return LoadedSenses(train, dev, info["teacher"], info["license"], inputs)
