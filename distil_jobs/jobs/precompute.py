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
import json
import os
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from distil_jobs.artifacts import MANIFEST, Location, Publisher, open_location
from distil_jobs.artifacts.manifest import file_entries, input_ref, new_manifest
from distil_jobs.config import config_dict, setting
from distil_jobs.data import empty_rows, license_of, read_table, text_column
from distil_jobs.errors import DistilError
from distil_jobs.log import get_logger, log_metrics
from distil_jobs.models.encoder import OUTPUT_TYPES, POOLINGS
from distil_jobs.shards import Shard, resolve_shard

NAME = "precompute-embeddings"
KIND = "teacher-embeddings"
RUN_FILE = "_shards/run.json"
log = get_logger(NAME)


@dataclasses.dataclass(kw_only=True, slots=True)
class Config:
    input: str | None = setting(None, "Dataset URI: jsonl/csv/tsv/parquet file or folder, save_to_disk folder, "
                                      "s3://... or hf://datasets/org/name.")
    output: str | None = setting(None, "Artifact URI to write: a folder, s3://bucket/prefix or hf://datasets/org/name.")
    teacher: str = setting("minilm", "Teacher model: alias (minilm, mpnet), folder, hf://org/model or hub id.")
    text_column: str = setting("text", "Column with the text the teacher embeds.")
    pair_column: str | None = setting(None, "Optional translation column kept beside the text (parallel distillation).")
    max_rows: int | None = setting(None, "Use only the first N input rows.")
    output_type: str = setting("final", "What to store: the sentence embedding, the one before Dense/Normalize, "
                                        "or per-layer hidden-state means.", choices=OUTPUT_TYPES)
    layers: list[int] = setting([], "Layers for --output-type hidden_states, e.g. 0,6,12 (0 = embedding layer).")
    pooling: str = setting("auto", "Pooling for plain transformers models (auto: the model's own, else mean; "
                                   "last for decoders).", choices=POOLINGS)
    normalize: bool = setting(False, "L2-normalise the stored embeddings.")
    dtype: str = setting("float16", "Storage dtype (Arrow has no bfloat16).", choices=("float16", "float32"))
    batch_size: int = setting(64, "Texts per forward pass.")
    max_length: int | None = setting(None, "Truncate texts to this many tokens (default: the model's limit).")
    device: str = setting("auto", "auto, cpu, cuda or cuda:N.")
    compile: bool = setting(False, "torch.compile the teacher.")
    trust_remote_code: bool = setting(False, "Allow model code from the model's repository.")
    num_shards: int | None = setting(None, "Total shards (default: SLURM_ARRAY_TASK_COUNT, else 1).")
    shard_index: int | None = setting(None, "This shard (default: SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX, else 0).")
    chunk_rows: int = setting(10_000, "Rows per Parquet file; the unit of resume.")
    push_every: int | None = setting(None, "Publish finished chunks every N rows (one commit on hf://) "
                                           "[default: every chunk].")
    skip_empty: bool = setting(False, "Skip empty/None texts (counted in the manifest) instead of failing.")
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
    for name in ("chunk_rows", "batch_size"):
        if getattr(cfg, name) < 1:
            raise DistilError(f"--{name.replace('_', '-')} must be at least 1")


# Settings that change what the artifact holds: a rerun into the same output must match them.
_FINGERPRINT = ("input", "teacher", "text_column", "pair_column", "max_rows", "output_type", "layers", "pooling",
                "normalize", "dtype", "max_length", "num_shards", "chunk_rows", "skip_empty")


@dataclasses.dataclass(slots=True)
class InputRows:
    table: pa.Table  # rows to embed, input columns + row_idx
    texts: list[str]
    total: int  # rows in the (max_rows-limited) input
    skipped: int


def load_input(cfg: Config) -> InputRows:
    assert cfg.input
    table = read_table(cfg.input)
    if cfg.max_rows is not None:
        table = table.slice(0, cfg.max_rows)
    texts = text_column(table, cfg.text_column, cfg.input)
    if cfg.pair_column:
        text_column(table, cfg.pair_column, cfg.input, "--pair-column")
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


def claim_output(out: Location, cfg: Config, rows: InputRows) -> None:
    """Record what this output holds; a rerun with different settings is refused, not mixed in."""
    fingerprint = {k: getattr(cfg, k) for k in _FINGERPRINT} | {"num_shards": cfg.num_shards}
    run = {"fingerprint": fingerprint, "total_rows": rows.total}
    if out.create_exclusive(RUN_FILE, json.dumps(run, sort_keys=True).encode()):
        return
    previous = out.read_json(RUN_FILE)
    diff = [k for k in fingerprint if previous["fingerprint"].get(k) != fingerprint[k]]
    if diff:
        raise DistilError(f"{out.uri} already holds a run with different settings ({', '.join(diff)}): "
                          "use a new --output, or the same settings to resume")


def chunk_ranges(shard: Shard, n_rows: int, chunk_rows: int) -> list[tuple[int, int]]:
    start, end = shard.row_range(n_rows)
    return [(s, min(s + chunk_rows, end)) for s in range(start, end, chunk_rows)]


def embedding_column(values: np.ndarray, dtype: str) -> pa.FixedSizeListArray:
    flat = pa.array(values.astype(np.float16 if dtype == "float16" else np.float32).reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, values.shape[1])


def run(cfg: Config) -> None:
    assert cfg.output
    out = open_location(cfg.output)
    if cfg.finalize:
        finalize(out, cfg, required=True)
        return
    if out.exists(MANIFEST):
        log.info("%s is already complete (manifest present): nothing to do", out.uri)
        return
    shard = resolve_shard(cfg.shard_index, cfg.num_shards)
    cfg.num_shards, cfg.shard_index = shard.count, shard.index
    out.ensure_writable()

    log.info("phase 1/3: read input %s (shard %d/%d from %s)", cfg.input, shard.index, shard.count, shard.source)
    rows = load_input(cfg)

    from distil_jobs.models.encoder import TextEncoder

    log.info("phase 2/3: load teacher %s", cfg.teacher)
    encoder = TextEncoder(cfg.teacher, cfg.device, cfg.pooling, cfg.max_length, cfg.trust_remote_code, cfg.compile)
    if cfg.output_type == "hidden_states":
        encoder.check_layers(cfg.layers)
    claim_output(out, cfg, rows)  # the first write: everything above can still fail cleanly

    chunks = chunk_ranges(shard, rows.table.num_rows, cfg.chunk_rows)
    publisher = Publisher(out, KIND, cfg.push_every or cfg.chunk_rows, rows.table.num_rows)
    done_files = set(out.listdir("data"))
    log.info("phase 3/3: embed %d rows in %d chunk(s) → %s", sum(e - s for s, e in chunks), len(chunks), out.uri)
    t0, embedded = time.perf_counter(), 0
    try:
        for start, end in chunks:
            rel = f"data/part-{start:010d}-{end:010d}.parquet"
            if os.path.basename(rel) in done_files:
                log.info("chunk %s already published: skipped", rel)
                continue
            tc = time.perf_counter()
            emb = encoder.encode(rows.texts[start:end], cfg.output_type, cfg.layers, cfg.batch_size, cfg.normalize)
            part = rows.table.slice(start, end - start)
            for name, values in emb.items():
                part = part.append_column(name, embedding_column(values, cfg.dtype))
            local = publisher.staging_path(rel)
            pq.write_table(part, local)
            publisher.add(local, rel, end - start)
            embedded += end - start
            secs = time.perf_counter() - tc
            log_metrics(log, "chunk", file=rel, rows=end - start, seconds=round(secs, 3),
                        rows_per_s=round((end - start) / max(secs, 1e-9), 1))
        publisher.flush()
    finally:
        publisher.close()
    shard_rows = sum(e - s for s, e in chunks)
    out.put_bytes(f"_shards/{shard.tag}.done", json.dumps({"rows": shard_rows}).encode())
    secs = time.perf_counter() - t0
    log_metrics(log, "summary", shard=shard.tag, rows=shard_rows, embedded=embedded, seconds=round(secs, 2),
                rows_per_s=round(embedded / max(secs, 1e-9), 1))
    finalize(out, cfg, required=False, extra={"teacher_path": encoder.path, "attention": encoder.attention})


def finalize(out: Location, cfg: Config, required: bool, extra: dict[str, Any] | None = None) -> None:
    """Write the manifest once every shard is done; with `required`, fail naming the missing shards."""
    if out.exists(MANIFEST):
        log.info("%s already has a manifest", out.uri)
        return
    if not out.exists(RUN_FILE):
        raise DistilError(f"{out.uri} holds no precompute run: run precompute-embeddings with this --output first")
    run_info = out.read_json(RUN_FILE)
    fp = run_info["fingerprint"]
    count = int(fp["num_shards"])
    markers = set(out.listdir("_shards"))
    missing = [i for i in range(count) if f"{Shard(i, count, '').tag}.done" not in markers]
    if missing:
        if required:
            raise DistilError(f"{len(missing)} of {count} shard(s) not done: {', '.join(map(str, missing[:20]))}; "
                              "rerun those shard indices")
        log.info("shard done; waiting for %d other shard(s) before the manifest is written", len(missing))
        return
    files = [f"data/{n}" for n in out.listdir("data") if n.endswith(".parquet")]
    entries = file_entries(out, files)
    rows = sum(pq.ParquetFile(out.fs.open(out.path(f), "rb")).metadata.num_rows for f in files)
    total = int(run_info["total_rows"])
    skipped = total - rows
    if skipped < 0 or (skipped and not fp.get("skip_empty")):
        raise DistilError(f"{out.uri} holds {rows} rows but the input has {total}: the output is inconsistent; "
                          "delete it and rerun")
    first = pq.ParquetFile(out.fs.open(out.path(files[0]), "rb")).schema_arrow
    emb_cols = [f.name for f in first if pa.types.is_fixed_size_list(f.type)]
    manifest = new_manifest(
        KIND, NAME, config_dict(cfg) | {"num_shards": count, "shard_index": None, "finalize": False},
        [input_ref(fp["input"], "input"), {"role": "teacher", "uri": fp["teacher"]}],
        rows, entries, license_of(fp["input"] or ""),
        input_rows=total, skipped_empty=skipped, shards=count, columns=first.names,
        embedding_columns={c: first.field(c).type.list_size for c in emb_cols},
        text_column=fp["text_column"], pair_column=fp["pair_column"], output_type=fp["output_type"],
        dtype=fp["dtype"], **(extra or {}),
    )
    if out.create_exclusive(MANIFEST, manifest.to_json()):
        log.info("manifest written: %s/%s (%d rows, %d files)", out.uri, MANIFEST, rows, len(files))
    else:
        log.info("another shard wrote the manifest first")
