"""Embed a text dataset with a teacher model and publish the embeddings as a Parquet artifact.

The output keeps every input column, adds `row_idx` (the input row number) and one embedding
column per requested output. Work is split into shards (flags, Slurm array or Kubernetes
Indexed Job) and chunks; every chunk is published atomically, so a killed run resumes where it
stopped. The shard that sees every shard done writes the manifest.

\b
Single machine:
  distil-jobs precompute-embeddings --input $DISTIL_DATA_DIR/menyo20k/train.jsonl \\
      --text-column en --pair-column yo --teacher minilm --output out/menyo-minilm
Four Slurm array tasks (each takes its shard from SLURM_ARRAY_TASK_ID/COUNT):
  sbatch --array=0-3 slurm/precompute.sbatch
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np
import pyarrow as pa

from distil_jobs.artifacts import Location
from distil_jobs.artifacts.chunks import ChunkedOutput, chunk_files, collect
from distil_jobs.artifacts.manifest import input_ref, new_manifest
from distil_jobs.artifacts.run import claim_output, finish
from distil_jobs.config import config_dict, setting
from distil_jobs.data import empty_rows, license_of, read_table, text_column
from distil_jobs.errors import DistilError, JobFault
from distil_jobs.jobs import TEACHER_EMBEDDINGS, sharded
from distil_jobs.log import get_logger, log_metrics
from distil_jobs.models.encoder import OUTPUT_TYPES, POOLINGS
from distil_jobs.qa.stored import QA_LOGITS

NAME = "precompute-embeddings"
KIND = TEACHER_EMBEDDINGS
log = get_logger(NAME)


@dataclasses.dataclass(kw_only=True, slots=True)
class Config:
    input: str | None = setting(None, "Dataset URI: jsonl/csv/tsv/parquet file or folder, save_to_disk folder, "
                                      "s3://... or hf://datasets/org/name.", data=True)
    output: str | None = setting(None, "Artifact URI to write: a folder, s3://bucket/prefix or hf://datasets/org/name.")
    teacher: str = setting("minilm", "Teacher model: alias (minilm, mpnet), folder, hf://org/model or hub id.",
                           fingerprint=True)
    text_column: str = setting("text", "Column with the text the teacher embeds.", fingerprint=True)
    pair_column: str | None = setting(None, "Optional translation column kept beside the text (parallel distillation).",
                                      fingerprint=True)
    max_rows: int | None = setting(None, "Use only the first N input rows.", fingerprint=True, min=1)
    output_type: str = setting("final", "What to store: the sentence embedding, the one before Dense/Normalize, "
                                        "per-layer hidden-state means, or each token's sense label (sense_ids, "
                                        "with --sense-dict), or a masked-LM teacher's top-k logits at masked "
                                        "positions (mlm_topk), or a QA teacher's start/end logits per feature of "
                                        "SQuAD-format input (qa_logits).",
                               choices=(*OUTPUT_TYPES, "sense_ids", "mlm_topk", QA_LOGITS),
                               fingerprint=True)
    sense_dict: str | None = setting(None, "A cluster job's sense dictionary, for --output-type sense_ids: the "
                                           "teacher must be the one it was gathered with.", data=True)
    topk: int = setting(64, "--output-type mlm_topk: teacher log-probabilities kept per masked position.",
                        fingerprint=True, min=1)
    kd_temperature: float = setting(2.0, "--output-type mlm_topk: the temperature the log-probabilities are taken at "
                                         "(train-student's --kd-temperature).", fingerprint=True, min=1e-6)
    mlm_probability: float = setting(0.15, "--output-type mlm_topk: fraction of each text's tokens masked.",
                                     fingerprint=True, min=1e-6, max=1)
    mask_seed: int = setting(0, "--output-type mlm_topk: seed of the masks (with each row's number).",
                             fingerprint=True, min=0)
    token_counts: str | None = setting(None, "--output-type mlm_topk: counts from count-tokens for the masking "
                                             "(default: counted over the input).", data=True)
    doc_stride: int = setting(128, "--output-type qa_logits: tokens that consecutive windows of a long context "
                                   "share (train-student's --doc-stride).", fingerprint=True, min=1)
    layers: list[int] = setting([], "Layers for --output-type hidden_states, e.g. 0,6,12 (0 = embedding layer).",
                                fingerprint=True, min=0)
    pooling: str = setting("auto", "Pooling for plain transformers models (auto: the model's own, else mean; "
                                   "last for decoders).", choices=POOLINGS, fingerprint=True)
    normalize: bool = setting(False, "L2-normalise the stored embeddings.", fingerprint=True)
    dtype: str = setting("float16", "Storage dtype (Arrow has no bfloat16).", choices=("float16", "float32"),
                         fingerprint=True)
    batch_size: int = setting(64, "Texts per forward pass.", min=1)
    max_length: int | None = setting(None, "Truncate texts to this many tokens (default: the model's limit).",
                                     fingerprint=True, min=1)
    device: str = setting("auto", "auto, cpu, cuda or cuda:N.")
    compile: bool = setting(False, "torch.compile the teacher.")
    trust_remote_code: bool = setting(False, "Allow model code from the model's repository.")
    num_shards: int | None = setting(None, "Total shards (default: SLURM_ARRAY_TASK_COUNT, else 1).", min=1)
    shard_index: int | None = setting(None, "This shard (default: SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX, else 0).",
                                      min=0)
    chunk_rows: int = setting(10_000, "Rows per Parquet file; the unit of resume.", min=1)
    push_every: int | None = setting(None, "Publish finished chunks every N rows (one commit on hf://) "
                                           "[default: every chunk].", min=1)
    cast_text: bool = setting(False, "Embed the string form of a non-text column (numbers, lists) instead of "
                                     "refusing it.", fingerprint=True)
    skip_empty: bool = setting(False, "Skip empty/None texts (counted in the manifest) instead of failing.",
                               fingerprint=True)
    finalize: bool = setting(False, "Only check that every shard is done and write the manifest; "
                                    "names missing shards.")


def validate(cfg: Config) -> None:
    if not cfg.output:
        raise DistilError("--output is required: where to write the embeddings artifact")
    if cfg.finalize:
        return
    if not cfg.input:
        raise DistilError("--input is required: a dataset URI (e.g. $DISTIL_DATA_DIR/menyo20k/train.jsonl)")
    if cfg.output_type == "hidden_states" and not cfg.layers:
        raise DistilError("--output-type hidden_states needs --layers, e.g. --layers 0,6,12")
    if cfg.layers and cfg.output_type != "hidden_states":
        raise DistilError(f"--layers only applies to --output-type hidden_states (got {cfg.output_type})")
    if cfg.token_counts and cfg.output_type != "mlm_topk":
        raise DistilError("--token-counts only applies to --output-type mlm_topk (its masking)")
    if cfg.output_type == QA_LOGITS and cfg.pair_column:
        raise DistilError("--pair-column does not apply to --output-type qa_logits: its rows are SQuAD questions "
                          "with their contexts")
    if (cfg.output_type == "sense_ids") != bool(cfg.sense_dict):
        raise DistilError("--output-type sense_ids and --sense-dict go together: labels need a dictionary (from the "
                          "cluster job), and a dictionary is only used for labels")


def layout(cfg: Config) -> dict[str, Any]:
    """How rows map to chunk files: a resume must keep it, a finished artifact does not depend on it."""
    return {"num_shards": cfg.num_shards, "chunk_rows": cfg.chunk_rows}


@dataclasses.dataclass(slots=True)
class InputRows:
    table: pa.Table  # rows to embed, input columns + row_idx
    texts: list[str]
    total: int  # rows in the (max_rows-limited) input
    skipped: int


def load_input(cfg: Config) -> InputRows:
    assert cfg.input
    if cfg.output_type == QA_LOGITS:
        return _qa_input(cfg)
    table = read_table(cfg.input)
    if cfg.max_rows is not None:
        table = table.slice(0, cfg.max_rows)
    texts = text_column(table, cfg.text_column, cfg.input, cast=cfg.cast_text)
    table = _as_strings(table, cfg.text_column, texts)
    if cfg.pair_column:
        flag = "--pair-column"
        table = _as_strings(table, cfg.pair_column, text_column(table, cfg.pair_column, cfg.input, flag, cfg.cast_text))
    total = table.num_rows
    table = table.append_column("row_idx", pa.array(np.arange(total, dtype=np.int64)))
    empty = empty_rows(texts)
    if empty and not cfg.skip_empty:
        raise DistilError(f"{len(empty)} empty text(s) in column '{cfg.text_column}' (first at row {empty[0]}): "
                          "clean the input or pass --skip-empty")
    if empty:
        keep = np.setdiff1d(np.arange(total), np.asarray(empty))
        table = table.take(pa.array(keep))
        texts = [texts[i] for i in keep]
        log.info("skipping %d empty text(s) (first at row %d)", len(empty), empty[0])
    if total == 0:
        raise DistilError(f"input {cfg.input} has no rows")
    return InputRows(table, [str(t) for t in texts], total, len(empty))


def _qa_input(cfg: Config) -> InputRows:
    """SQuAD-format rows (official nested JSON or flat), every answer checked against its context."""
    from distil_jobs.qa.squad import examples_of, read_squad

    assert cfg.input
    table = read_squad(cfg.input)
    if cfg.max_rows is not None:
        table = table.slice(0, cfg.max_rows)
    examples = examples_of(table, cfg.input)
    return InputRows(table.append_column("row_idx", pa.array(np.arange(table.num_rows, dtype=np.int64))),
                     examples.questions, table.num_rows, 0)


def _as_strings(table: pa.Table, column: str, texts: list[str | None]) -> pa.Table:
    """The artifact stores the texts as strings, whatever type the input gave them."""
    return table.set_column(table.schema.get_field_index(column), column, pa.array(texts, pa.string()))


def embedding_column(values: np.ndarray, dtype: str) -> pa.FixedSizeListArray:
    flat = pa.array(values.astype(np.float16 if dtype == "float16" else np.float32).reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, values.shape[1])


def load_encoder(cfg: Config, texts: list[str]) -> Any:
    """The teacher (and, for sense labels, its dictionary), checked before anything is claimed."""
    if cfg.output_type == "mlm_topk":
        from distil_jobs.mlm.precompute import TopKTeacher

        return TopKTeacher(cfg, texts)
    if cfg.output_type == QA_LOGITS:
        from distil_jobs.qa.precompute import QaLogitsTeacher

        return QaLogitsTeacher(cfg)
    if cfg.output_type == "sense_ids":
        from distil_jobs.senses.labels import SenseDictionary, SenseLabeler

        assert cfg.sense_dict
        return SenseLabeler(SenseDictionary(cfg.sense_dict), cfg.teacher, cfg.device, cfg.max_length,
                            cfg.trust_remote_code)
    from distil_jobs.models.encoder import TextEncoder

    encoder = TextEncoder(cfg.teacher, cfg.device, cfg.pooling, cfg.max_length, cfg.trust_remote_code, cfg.compile)
    if cfg.output_type == "hidden_states":
        encoder.check_layers(cfg.layers)
    return encoder


def output_columns(encoder: Any, part: pa.Table, texts: list[str], cfg: Config) -> dict[str, pa.Array]:
    if cfg.output_type == "mlm_topk":
        return encoder.columns(texts, cfg.batch_size, part.column("row_idx").to_pylist())
    if cfg.output_type == QA_LOGITS:
        return encoder.columns(part, cfg.batch_size)
    if cfg.output_type == "sense_ids":
        return encoder.columns(texts, cfg.batch_size)
    emb = encoder.encode(texts, cfg.output_type, cfg.layers, cfg.batch_size, cfg.normalize)
    return {name: embedding_column(values, cfg.dtype) for name, values in emb.items()}


def run(cfg: Config) -> None:
    started = sharded.start(cfg, KIND, finalize)
    if started is None:
        return
    out, settings, shard = started

    log.info("phase 1/3: read input %s (shard %d/%d from %s)", cfg.input, shard.index, shard.count, shard.source)
    rows = load_input(cfg)

    log.info("phase 2/3: load teacher %s", cfg.teacher)
    encoder = load_encoder(cfg, rows.texts)
    # The first write: everything above can still fail cleanly. `facts` (what readers must match, e.g. the
    # masking) go into the claim, so that whichever shard finishes last writes them into the manifest.
    claim_output(out, NAME, settings | layout(cfg), info={"total_rows": rows.total, "rows": rows.table.num_rows,
                                                          "facts": getattr(encoder, "facts", {})},
                 concurrent=shard.count > 1,
                 produced=lambda: bool(chunk_files(out) or out.listdir("_shards") != ["run.json"]))

    t0, embedded = time.perf_counter(), 0
    with ChunkedOutput(out, KIND, shard, rows.table.num_rows, cfg.chunk_rows, cfg.push_every) as chunks:
        todo = chunks.pending()
        log.info("phase 3/3: embed %d rows in %d chunk(s) → %s", sum(e - s for s, e in todo), len(todo), out.uri)
        for start, end in todo:
            tc = time.perf_counter()
            part = rows.table.slice(start, end - start)
            for name, column in output_columns(encoder, part, rows.texts[start:end], cfg).items():
                part = part.append_column(name, column)
            chunks.write(start, end, part)
            embedded += end - start
            secs = time.perf_counter() - tc
            log_metrics(log, "chunk", start=start, end=end, rows=end - start, seconds=round(secs, 3),
                        rows_per_s=round((end - start) / max(secs, 1e-9), 1))
        chunks.close()
    secs = time.perf_counter() - t0
    log_metrics(log, "summary", shard=shard.tag, rows=chunks.rows, embedded=embedded, seconds=round(secs, 2),
                rows_per_s=round(embedded / max(secs, 1e-9), 1))
    finalize(out, cfg, required=False, extra={"teacher_path": encoder.path, "attention": encoder.attention})


def finalize(out: Location, cfg: Config, required: bool, extra: dict[str, Any] | None = None) -> None:
    """Write the manifest once every shard is done; with `required`, fail naming the missing shards."""
    claim = sharded.finished_claim(out, KIND, NAME)
    if claim is None:
        return
    fp = claim["fingerprint"]
    count = int(fp["num_shards"])
    summary = collect(out, count, required)
    if summary is None:
        return
    total = int(claim["total_rows"])
    expected = int(claim.get("rows", total))  # the rows left after --skip-empty
    if summary.rows != expected:
        raise JobFault(f"{out.uri} holds {summary.rows} rows but the run was to write {expected}: the output is "
                       "inconsistent; delete it and rerun")
    schema = summary.schema
    emb_cols = [f.name for f in schema if pa.types.is_fixed_size_list(f.type)]
    content, settings = sharded.manifest_fingerprints(fp, layout(cfg))
    manifest = new_manifest(
        KIND, NAME, config_dict(cfg) | settings | {"shard_index": None, "finalize": False},
        [input_ref(fp["input"], "input") | {"content": fp.get("content:input")}, {"role": "teacher", "uri": fp["teacher"]},
         *([input_ref(fp["sense_dict"], "sense_dict")] if fp.get("sense_dict") else []),
         *([input_ref(fp["token_counts"], "token_counts")] if fp.get("token_counts") else [])],
        summary.rows, license=license_of(fp["input"] or ""), fingerprint=content,
        input_rows=total, skipped_empty=total - summary.rows, shards=count, columns=schema.names,
        embedding_columns={c: schema.field(c).type.list_size for c in emb_cols},
        text_column=fp["text_column"], pair_column=fp["pair_column"], output_type=fp["output_type"],
        dtype=fp["dtype"], **claim.get("facts", {}), **(extra or {}),
    )
    finish(out, manifest, listed=summary.files)
