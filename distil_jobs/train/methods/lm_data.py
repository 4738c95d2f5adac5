"""LM distillation data: raw texts (masked on the fly) or a stored top-k artifact, and the dev set.

Rows keep their input row number: masks are drawn from it (mlm/masking.py), so a text is masked
alike in precompute-embeddings and in every training run. Training texts that also appear in the
dev set are dropped (counted in the manifest): a held-out score must be held out. A top-k
artifact is only used with what it was made with: the same masking (seed, probability, counts),
temperature and vocabulary, and the same teacher when one is named.
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
from distil_jobs.mlm.batches import StoredRows
from distil_jobs.mlm.topk import TOPK_COLUMNS
from distil_jobs.train.methods.embedding_data import texts_of
from distil_jobs.train.methods.stored import teacher_outputs

log = logging.getLogger("distil_jobs.train.lm_data")
MLM_TOPK = "mlm_topk"


@dataclasses.dataclass(slots=True)
class LmRows:
    texts: list[str]
    row_ids: np.ndarray  # each text's input row number: what its mask is drawn from
    stored: StoredRows | None = None  # the teacher's top-k, from an artifact

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, idx: np.ndarray) -> LmRows:
        return LmRows([self.texts[i] for i in idx], self.row_ids[idx],
                      self.stored.subset(idx) if self.stored is not None else None)


@dataclasses.dataclass(slots=True)
class LmData:
    train: LmRows
    dev: LmRows | None
    all_texts: list[str]  # every training input text, before the dev split: what tokens are counted over
    artifact: dict[str, Any]  # the top-k artifact's manifest extra ({} for raw text)
    license: str | None
    inputs: list[dict[str, Any]]
    dropped_as_dev: int


def _lists(table: pa.Table, column: str, dtype: Any, width: int | None = None) -> list[np.ndarray]:
    col = table.column(column).combine_chunks()
    flat = col.flatten()
    values = (flat.flatten() if width else flat).to_numpy(zero_copy_only=False).astype(dtype)
    if width:
        values = values.reshape(-1, width)
    return np.split(values, col.offsets.to_numpy()[1:-1])


def _stored(table: pa.Table, k: int) -> StoredRows:
    return StoredRows(_lists(table, "input_ids", np.int64), _lists(table, "positions", np.int64),
                      _lists(table, "labels", np.int64), _lists(table, TOPK_COLUMNS[0], np.int64, k),
                      _lists(table, TOPK_COLUMNS[1], np.float32, k), _lists(table, TOPK_COLUMNS[2], np.float32))


def _read(uri: str, cfg: Any, stored: bool) -> tuple[LmRows, dict[str, Any]]:
    extra: dict[str, Any] = {}
    column = cfg.text_column or "text"
    if stored:
        extra = teacher_outputs(uri, MLM_TOPK, "the teacher's top-k logits")
        column = cfg.text_column or extra.get("text_column") or "text"
    table = read_table(uri)
    if table.num_rows == 0:
        raise DistilError(f"{uri} has no rows")
    texts = texts_of(table, column, uri, "--text-column", cfg.cast_text)
    row_ids = (table.column("row_idx").to_numpy().astype(np.int64) if "row_idx" in table.column_names
               else np.arange(table.num_rows, dtype=np.int64))
    rows = LmRows(texts, row_ids, _stored(table, int(extra["topk"])) if stored else None)
    return rows, extra


def _is_topk(uri: str) -> bool:
    ref = input_ref(uri, "probe")
    if ref.get("kind") != TEACHER_EMBEDDINGS:
        return False
    _, manifest = require_artifact(uri, TEACHER_EMBEDDINGS)
    return (manifest.get("extra") or {}).get("output_type") == MLM_TOPK


def load_lm_data(cfg: Any) -> LmData:
    targets = getattr(cfg, "targets", None)  # prepare-teacher reads raw text only
    uri = targets or cfg.input
    train, extra = _read(uri, cfg, stored=bool(targets))
    all_texts = train.texts
    if cfg.max_rows is not None:
        train = train.subset(np.arange(min(cfg.max_rows, len(train))))
    inputs = [input_ref(uri, "targets" if targets else "input")]
    dev: LmRows | None = None
    if cfg.dev_input:
        dev_stored = _is_topk(cfg.dev_input)
        dev, dev_extra = _read(cfg.dev_input, cfg, stored=dev_stored)
        if dev_stored and extra and any(dev_extra.get(k) != extra.get(k) for k in ("masking", "kd_temperature")):
            raise DistilError(f"--dev-input {cfg.dev_input} was precomputed with other masking or temperature than "
                              f"--targets {uri}: precompute both with the same settings")
        inputs.append(input_ref(cfg.dev_input, "dev"))
    elif cfg.dev_fraction > 0:
        kept, held = dev_split(len(train), cfg.dev_fraction, cfg.seed)
        dev, train = train.subset(held), train.subset(kept)
    dropped = 0
    if dev is not None:
        seen = set(dev.texts)
        keep = np.asarray([i for i, t in enumerate(train.texts) if t not in seen], dtype=np.int64)
        dropped = len(train) - len(keep)
        if dropped:
            log.info("dropped %d training row(s) whose text is also in the dev set", dropped)
            train = train.subset(keep)
    if not len(train):
        raise DistilError(f"no training rows left in {uri} (all of them are in the dev set): use other data")
    log.info("data: %d training rows, %d dev rows, teacher %s", len(train), len(dev) if dev else 0,
             "stored top-k" if train.stored is not None else "online")
    return LmData(train, dev, all_texts, extra, extra.get("license") or license_of(uri), inputs, dropped)
