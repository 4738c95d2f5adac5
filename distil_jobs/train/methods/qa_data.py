"""QA distillation data: SQuAD examples (raw, or an artifact with the teacher's stored logits), split
into training and held-out articles, cut into the student's features.

The held-out set is --dev-input, else the articles named by --eval-titles, else a seeded
--eval-fraction of the articles; it never shares an article with the training set. A stored-logits
artifact is used only with the features it was made for: the same tokenizer, --max-length and
--doc-stride (recorded in its manifest), and the same teacher when --teacher is also named.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np
import pyarrow as pa

from distil_jobs.artifacts.manifest import input_ref
from distil_jobs.config import setting
from distil_jobs.data import license_of, read_table
from distil_jobs.errors import DistilError
from distil_jobs.jobs import TEACHER_EMBEDDINGS
from distil_jobs.qa.features import QaFeatures, make_features
from distil_jobs.qa.squad import QaExamples, examples_of, read_squad, split_titles
from distil_jobs.qa.stored import QA_LOGITS, read_logits
from distil_jobs.senses.vocab import tokenizer_fingerprint
from distil_jobs.train.methods.stored import teacher_outputs

log = logging.getLogger("distil_jobs.train.qa_data")


@dataclasses.dataclass(kw_only=True, slots=True)
class QaDataOptions:
    """How SQuAD data is cut and split: shared by train-student --method qa and prepare-teacher --task qa."""

    doc_stride: int = setting(128, "Tokens that consecutive windows of a long context share.", fingerprint=True,
                              min=1)
    max_answer_length: int = setting(30, "Longest answer, in tokens, that evaluation may predict.", fingerprint=True,
                                     min=1)
    n_best: int = setting(20, "Start and end candidates per feature that evaluation pairs up.", fingerprint=True,
                          min=1)
    eval_titles: list[str] = setting([], "Held-out articles (the data's 'title' values), e.g. "
                                         "Super_Bowl_50,Warsaw.", fingerprint=True)
    train_titles: list[str] = setting([], "Train on these articles only (default: every article not held out).",
                                      fingerprint=True)
    eval_fraction: float = setting(0.25, "Without --eval-titles or --dev-input: hold out this fraction of the "
                                         "articles (fixed by --seed).", fingerprint=True, min=0, max=1)


@dataclasses.dataclass(slots=True)
class QaSplit:
    examples: QaExamples
    features: QaFeatures
    start_logits: list[np.ndarray] | None = None  # the teacher's, stored (real tokens of each feature)
    end_logits: list[np.ndarray] | None = None

    def rows(self, idx: np.ndarray, which: str) -> list[np.ndarray]:
        values = self.start_logits if which == "start" else self.end_logits
        assert values is not None
        return [values[i] for i in idx]


@dataclasses.dataclass(slots=True)
class QaData:
    train: QaSplit
    dev: QaSplit
    artifact: dict[str, Any]  # the stored-logits artifact's manifest extra ({} for raw data)
    license: str | None
    inputs: list[dict[str, Any]]


def _source(uri: str, stored: bool) -> tuple[pa.Table, dict[str, Any]]:
    if not stored:
        return read_squad(uri), {}
    return read_table(uri), teacher_outputs(uri, QA_LOGITS, "a QA teacher's logits")


def _is_stored(uri: str) -> bool:
    return input_ref(uri, "probe").get("kind") == TEACHER_EMBEDDINGS


def check_stored(extra: dict[str, Any], uri: str, tokenizer: Any, student: str, max_length: int,
                 doc_stride: int) -> None:
    if extra.get("tokenizer_fingerprint") != tokenizer_fingerprint(tokenizer):
        raise DistilError(f"{uri} holds logits over the tokens of teacher {extra.get('teacher')}, and student "
                          f"{student} has another tokenizer: start the student from that teacher (--student-layers), "
                          "or distil from it online")
    for key, ours, flag in (("max_length", max_length, "--max-length"), ("doc_stride", doc_stride, "--doc-stride")):
        if extra.get(key) != ours:
            raise DistilError(f"{uri} was cut into features with {flag} {extra.get(key)}, this run uses {ours}: pass "
                              f"{flag} {extra.get(key)}, or precompute again")


def _split(cfg: Any, opts: QaDataOptions, tokenizer: Any, examples: QaExamples, stored: pa.Table | None,
           uri: str) -> QaSplit:
    """The examples cut into features; `stored`: their rows of a stored-logits artifact, in the same order."""
    features = make_features(tokenizer, examples, cfg.max_length, opts.doc_stride)
    split = QaSplit(examples, features)
    if stored is not None:
        split.start_logits, split.end_logits = read_logits(stored, features, uri)
    return split


def load_qa_data(cfg: Any, opts: QaDataOptions, tokenizer: Any, student: str) -> QaData:
    targets = getattr(cfg, "targets", None)  # prepare-teacher reads raw data only
    uri = targets or cfg.input
    table, extra = _source(uri, stored=bool(targets))
    if extra:
        check_stored(extra, uri, tokenizer, student, cfg.max_length, opts.doc_stride)
    examples = examples_of(table, uri)  # every row checked, named by its row in the source
    titles = examples.titles
    unknown = sorted(set(opts.train_titles) - set(titles))
    if unknown:
        raise DistilError(f"--train-titles: {unknown[0]!r} is not an article of {uri}; titles are the data's 'title' "
                          "values")
    inputs = [input_ref(uri, "targets" if targets else "input")]
    if cfg.dev_input:
        if opts.eval_titles:
            raise DistilError("give --dev-input or --eval-titles, not both: both name the held-out articles")
        dev_stored = _is_stored(cfg.dev_input)
        dev_table, dev_extra = _source(cfg.dev_input, dev_stored)
        if dev_extra:
            check_stored(dev_extra, cfg.dev_input, tokenizer, student, cfg.max_length, opts.doc_stride)
        dev_examples = examples_of(dev_table, cfg.dev_input)
        train_titles = set(opts.train_titles) or set(titles)
        overlap = sorted((set(dev_examples.titles) & train_titles) - {""})
        if overlap:
            raise DistilError(f"--dev-input {cfg.dev_input} shares {len(overlap)} article(s) with the training data, "
                              f"e.g. {overlap[0]!r}: hold out whole articles (or pass --train-titles without them)")
        inputs.append(input_ref(cfg.dev_input, "dev"))
    else:
        train_titles, held = split_titles(titles, opts.eval_titles, opts.train_titles, opts.eval_fraction, cfg.seed,
                                          uri)
        rows = np.flatnonzero([t in held for t in titles])
        dev_examples, dev_table, dev_stored = examples.subset(rows), table.take(pa.array(rows)), bool(targets)
    keep = np.flatnonzero([t in train_titles for t in titles])
    if cfg.max_rows is not None:
        keep = keep[:cfg.max_rows]
    train = _split(cfg, opts, tokenizer, examples.subset(keep), table.take(pa.array(keep)) if targets else None, uri)
    dev = _split(cfg, opts, tokenizer, dev_examples, dev_table if dev_stored else None, cfg.dev_input or uri)
    log.info("data: %d training questions (%d features) from %d article(s), %d held-out questions (%d features) "
             "from %d article(s), teacher %s", len(train.examples), len(train.features), len(set(train.examples.titles)),
             len(dev.examples), len(dev.features), len(set(dev.examples.titles)),
             "stored logits" if targets else "online")
    return QaData(train, dev, extra, extra.get("license") or license_of(uri), inputs)
