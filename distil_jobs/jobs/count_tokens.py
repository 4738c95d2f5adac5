"""Count how often each token of a model's vocabulary occurs in a text dataset.

The counts weight DistilBERT's masking (rare tokens are masked more often: counts^-0.7) for
train-student --method mlm, prepare-teacher --task mlm and precompute-embeddings --output-type
mlm_topk. Counted once per corpus, they give every later job the same masks.

\b
  distil-jobs count-tokens --input $DISTIL_DATA_DIR/corpus/sentences_en.tsv --model out/mlm-teacher \\
      --output out/counts-en
"""

from __future__ import annotations

import dataclasses
import os
import tempfile

import pyarrow.parquet as pq

from distil_jobs.artifacts import open_location
from distil_jobs.artifacts.manifest import input_ref, new_manifest
from distil_jobs.artifacts.run import claim_output, completed, finish
from distil_jobs.config import config_dict, content_of, fingerprint_of, setting
from distil_jobs.data import license_of, read_table, text_column
from distil_jobs.errors import DistilError
from distil_jobs.jobs import TOKEN_COUNTS
from distil_jobs.log import get_logger, log_metrics

NAME = "count-tokens"
log = get_logger(NAME)


@dataclasses.dataclass(kw_only=True, slots=True)
class Config:
    input: str | None = setting(None, "Dataset URI (jsonl/csv/tsv/txt/parquet, s3://, hf://datasets/...).", data=True)
    output: str | None = setting(None, "Artifact URI to write.")
    model: str = setting("minilm", "Model whose tokenizer counts: alias, folder or hub id.", fingerprint=True)
    text_column: str = setting("text", "Column with the texts.", fingerprint=True)
    max_rows: int | None = setting(None, "Count only the first N rows.", fingerprint=True, min=1)
    cast_text: bool = setting(False, "Count the string form of a non-text column.", fingerprint=True)


def validate(cfg: Config) -> None:
    if not cfg.output:
        raise DistilError("--output is required: where to write the token counts")
    if not cfg.input:
        raise DistilError("--input is required: the corpus to count (e.g. $DISTIL_DATA_DIR/corpus/sentences_en.tsv)")


def run(cfg: Config) -> None:
    from transformers import AutoTokenizer

    from distil_jobs.mlm.counts import TOKEN_COUNTS_FILE, count_tokens, counts_table
    from distil_jobs.models.registry import resolve_model
    from distil_jobs.senses.vocab import tokenizer_fingerprint

    assert cfg.input and cfg.output
    out = open_location(cfg.output)
    settings = fingerprint_of(cfg) | content_of(cfg)
    if completed(out, TOKEN_COUNTS, settings):
        log.info("%s is already complete: nothing to do", out.uri)
        return
    table = read_table(cfg.input)
    if cfg.max_rows is not None:
        table = table.slice(0, cfg.max_rows)
    texts = [t for t in text_column(table, cfg.text_column, cfg.input, cast=cfg.cast_text) if t]
    if not texts:
        raise DistilError(f"{cfg.input} has no non-empty text in column '{cfg.text_column}'")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(cfg.model))
    out.ensure_writable()
    claim_output(out, NAME, settings, produced=lambda: False)  # one step: a failed run leaves nothing to keep
    counts = count_tokens(tokenizer, [str(t) for t in texts])
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "token_counts.parquet")
        pq.write_table(counts_table(tokenizer, counts), path)
        manifest = new_manifest(TOKEN_COUNTS, NAME, config_dict(cfg), [input_ref(cfg.input, "input"),
                                {"role": "model", "uri": cfg.model}], len(counts),
                                license=license_of(cfg.input), fingerprint=settings, model=cfg.model,
                                tokenizer_fingerprint=tokenizer_fingerprint(tokenizer), texts=len(texts),
                                tokens=int(counts.sum()), distinct_tokens=int((counts > 0).sum()))
        finish(out, manifest, files=[(path, TOKEN_COUNTS_FILE)])
    log_metrics(log, "summary", texts=len(texts), tokens=int(counts.sum()), distinct=int((counts > 0).sum()))
