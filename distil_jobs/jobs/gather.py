"""Sample a teacher's contextual token vectors per token id: the first step of sense distillation.

For every token id (special tokens and padding excepted) the job keeps a uniform random sample,
without replacement, of at most --max-per-token of its contextual vectors (float16, one layer of
the teacher), and counts every occurrence. The `cluster` job turns the samples into a sense
dictionary (Wang et al., "Multi-Sense Embeddings for Language Models and Knowledge Distillation",
ACL Findings 2025). The sample is bottom-k by a hash of (seed, row, position): the same for any
--num-shards and across kills and resumes. Details and the output layout: docs/senses.md.

\b
Single machine:
  distil-jobs gather-senses --input $DISTIL_DATA_DIR/corpus/sentences_en.tsv \\
      --teacher minilm --max-length 128 --output out/minilm-senses
Four shards (any order, any machine; the last one done merges):
  distil-jobs gather-senses ... --num-shards 4 --shard-index $I
"""

from __future__ import annotations

import dataclasses
import re
import time
from typing import Any

import numpy as np
import pyarrow as pa

from distil_jobs.artifacts import Location
from distil_jobs.artifacts.chunks import ChunkedOutput, chunk_files, chunk_name, collect
from distil_jobs.artifacts.manifest import input_ref, new_manifest
from distil_jobs.artifacts.run import claim_output, finish
from distil_jobs.config import config_dict, setting
from distil_jobs.data import license_of, read_table, text_column
from distil_jobs.errors import DistilError, JobFault
from distil_jobs.jobs import SENSE_SAMPLES, sharded
from distil_jobs.log import get_logger, log_metrics
from distil_jobs.senses.merge import GROUP_BYTES, merge_chunks, range_bound
from distil_jobs.senses.sampling import Candidates, bottom_k, chunk_table, concat, occurrence_keys, row_bytes
from distil_jobs.shards import Shard

NAME = "gather-senses"
KIND = SENSE_SAMPLES
log = get_logger(NAME)


@dataclasses.dataclass(kw_only=True, slots=True)
class Config:
    input: str | None = setting(None, "Dataset URI: jsonl/csv/tsv/parquet file or folder, save_to_disk folder, "
                                      "s3://... or hf://datasets/org/name.", data=True)
    output: str | None = setting(None, "Artifact URI to write: a folder, s3://bucket/prefix or hf://datasets/org/name.")
    teacher: str = setting("minilm", "Teacher: any transformers encoder or decoder (alias, folder, hf://org/model "
                                     "or hub id).", fingerprint=True)
    adapter: str | None = setting(None, "PEFT adapter folder merged into the teacher (e.g. an LLM2Vec LoRA; "
                                        "needs `pip install peft`).", fingerprint=True)
    text_column: str = setting("text", "Column with the texts.", fingerprint=True)
    max_rows: int | None = setting(None, "Use only the first N input rows.", fingerprint=True, min=1)
    layer: int = setting(-1, "Hidden state to sample: 0 = embeddings, 1..N the layers, -1 the last.", fingerprint=True)
    max_per_token: int = setting(1000, "Vectors kept per token id (uniform sample without replacement).",
                                 fingerprint=True, min=1, secret=False)
    seed: int = setting(0, "Seed of the sample (the hash of seed, row and position).", fingerprint=True, min=0)
    instruction: str | None = setting(None, "Instruction put before every text; its tokens are not sampled.",
                                      fingerprint=True)
    instruction_column: str | None = setting(None, "Column with a per-row instruction (instead of --instruction).",
                                             fingerprint=True)
    separator: str = setting(" ", "Text between the instruction and the text, as the teacher sees it.",
                             fingerprint=True)
    max_length: int | None = setting(None, "Truncate texts (with their instruction) to this many tokens "
                                           "(default: the model's limit).", fingerprint=True, min=1)
    tokens_per_file: int = setting(2048, "Token ids per samples/ file: the unit of the merge and its memory.",
                                   fingerprint=True, min=1)
    max_memory: str = setting("8GiB", "Host memory the samples may take (chunk or merge range); a larger bound "
                                      "is refused before the run starts. E.g. 512MiB, 4GiB.")
    batch_size: int = setting(32, "Texts per forward pass.", min=1)
    device: str = setting("auto", "auto, cpu, cuda or cuda:N.")
    trust_remote_code: bool = setting(False, "Allow model code from the model's repository.")
    num_shards: int | None = setting(None, "Total shards (default: SLURM_ARRAY_TASK_COUNT, else 1).", min=1)
    shard_index: int | None = setting(None, "This shard (default: SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX, else 0).",
                                      min=0)
    chunk_rows: int = setting(500, "Input rows per chunk file; the unit of resume.", min=1)
    finalize: bool = setting(False, "Only check that every shard is done and merge; names missing shards.")


_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(text: str) -> int:
    """'4GiB', '512 MB', '1e9' → bytes."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-z]*)\s*", text.lower())
    if not match or match.group(2) not in _UNITS:
        raise DistilError(f"--max-memory {text!r}: give a size such as 4GiB, 512MiB or 8GB")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def validate(cfg: Config) -> None:
    if not cfg.output:
        raise DistilError("--output is required: where to write the sense samples")
    parse_size(cfg.max_memory)
    if cfg.finalize:
        return
    if not cfg.input:
        raise DistilError("--input is required: a dataset URI (e.g. $DISTIL_DATA_DIR/corpus/sentences_en.tsv)")
    if cfg.instruction is not None and cfg.instruction_column:
        raise DistilError("--instruction and --instruction-column exclude each other: pass one")


def layout(cfg: Config) -> dict[str, Any]:
    """How rows map to chunk files: a resume must keep it, the merged samples do not depend on it."""
    return {"num_shards": cfg.num_shards, "chunk_rows": cfg.chunk_rows}


def load_input(cfg: Config) -> tuple[list[str], list[str]]:
    """The texts and each row's prefix (instruction + separator, or '' for none)."""
    assert cfg.input
    table = read_table(cfg.input)
    if cfg.max_rows is not None:
        table = table.slice(0, cfg.max_rows)
    if table.num_rows == 0:
        raise DistilError(f"input {cfg.input} has no rows")
    texts = ["" if t is None else str(t) for t in text_column(table, cfg.text_column, cfg.input)]
    if cfg.instruction_column:
        found = text_column(table, cfg.instruction_column, cfg.input, "--instruction-column")
        instructions = ["" if i is None else str(i) for i in found]
    else:
        instructions = [cfg.instruction or ""] * len(texts)
    # A row without an instruction gets no separator either: its text is read as is.
    prefixes = [i + cfg.separator if i else "" for i in instructions]
    empty = sum(1 for t in texts if not t.strip())
    if empty:
        log.info("%d empty text(s): they contribute no tokens", empty)
    return texts, prefixes


def check_memory(cfg: Config, dim: int, vocab: int, max_length: int) -> None:
    """Log what the samples may take and refuse a run whose chunk or merge range cannot fit --max-memory."""
    limit, per_row = parse_size(cfg.max_memory), row_bytes(dim)
    total = vocab * cfg.max_per_token * dim * 2
    # A chunk holds every occurrence of its rows until it is reduced: list + concatenation + result.
    chunk = 3 * min(cfg.chunk_rows * max_length, vocab * cfg.max_per_token) * per_row + GROUP_BYTES
    merge = range_bound(cfg.tokens_per_file, cfg.max_per_token, per_row)
    log_metrics(log, "memory_estimate", samples_upper_bound_bytes=total, chunk_bound_bytes=chunk,
                merge_range_bound_bytes=merge, max_memory_bytes=limit)
    log.info("memory: all samples ≤ %.2f GiB on disk; ≤ %.2f GiB per chunk, ≤ %.2f GiB per merge range "
             "(--max-memory %s)", total / 2**30, chunk / 2**30, merge / 2**30, cfg.max_memory)
    if merge > limit:
        fits = max(1, (limit - 2 * GROUP_BYTES) // (4 * cfg.max_per_token * per_row))
        raise DistilError(f"one merge range needs up to {merge / 2**30:.2f} GiB, over --max-memory {cfg.max_memory}: "
                          f"use --tokens-per-file {fits} or less (or a smaller --max-per-token)")
    if chunk > limit:
        raise DistilError(f"one chunk needs up to {chunk / 2**30:.2f} GiB, over --max-memory {cfg.max_memory}: "
                          "use a smaller --chunk-rows or --max-length")


def gather_chunk(teacher: Any, texts: list[str], prefixes: list[str], start: int, end: int, layer: int,
                 cfg: Config, bar: Any) -> pa.Table:
    """Rows [start, end) → the chunk file: per-token bottom-k candidates and the chunk's counts."""
    parts, seen = [], []
    # Longest texts first: little padding per batch, and an out-of-memory shows at the first batch.
    order = start + np.argsort([-len(texts[i]) for i in range(start, end)], kind="stable")
    for b in range(0, len(order), cfg.batch_size):
        rows = order[b:b + cfg.batch_size]
        ids, keep, hidden = teacher.encode([texts[i] for i in rows], [prefixes[i] for i in rows], layer)
        r, p = np.nonzero(keep)
        tokens, row_idx = ids[r, p].astype(np.int32), rows[r].astype(np.int64)
        seen.append(tokens)
        parts.append(Candidates(tokens, occurrence_keys(cfg.seed, row_idx, p), row_idx, p.astype(np.int32),
                                hidden[r, p]))
        bar.update(len(rows))
    return chunk_table(bottom_k(concat(parts, teacher.dim), cfg.max_per_token), np.concatenate(seen) if seen
                       else np.empty(0, np.int32), teacher.dim)


def run(cfg: Config) -> None:
    started = sharded.start(cfg, KIND, finalize)
    if started is None:
        return
    out, settings, shard = started

    log.info("phase 1/4: read input %s (shard %d/%d from %s)", cfg.input, shard.index, shard.count, shard.source)
    texts, prefixes = load_input(cfg)

    from distil_jobs.senses.teacher import TokenTeacher

    log.info("phase 2/4: load teacher %s", cfg.teacher)
    teacher = TokenTeacher(cfg.teacher, cfg.device, cfg.max_length, cfg.adapter, cfg.trust_remote_code)
    layer = teacher.layer_index(cfg.layer)
    check_memory(cfg, teacher.dim, teacher.vocab_size, teacher.max_length)
    info = {"total_rows": len(texts), "dim": teacher.dim, "vocab_size": teacher.vocab_size, "layer_index": layer,
            "teacher_path": teacher.path, "tokenizer_fingerprint": teacher.fingerprint}
    # The first write: everything above can still fail cleanly.
    claim_output(out, NAME, settings | layout(cfg), info=info, concurrent=shard.count > 1,
                 produced=lambda: bool(chunk_files(out) or out.listdir("_shards") != ["run.json"]))

    from tqdm.auto import tqdm

    t0, done_rows, candidates = time.perf_counter(), 0, 0
    with ChunkedOutput(out, KIND, shard, len(texts), cfg.chunk_rows) as chunks:
        todo = chunks.pending()
        log.info("phase 3/4: sample %d rows in %d chunk(s) → %s", sum(e - s for s, e in todo), len(todo), out.uri)
        bar = tqdm(total=sum(e - s for s, e in todo), desc="gather", unit="rows")
        # Small row groups with statistics: the merge reads one token range of a chunk, not all of it.
        options = {"row_group_size": max(1024, GROUP_BYTES // row_bytes(teacher.dim)), "write_page_checksum": True}
        for start, end in todo:
            tc = time.perf_counter()
            table = gather_chunk(teacher, texts, prefixes, start, end, layer, cfg, bar)
            chunks.write(start, end, table, **options)
            done_rows, candidates = done_rows + end - start, candidates + table.num_rows
            secs = time.perf_counter() - tc
            log_metrics(log, "chunk", start=start, end=end, rows=end - start, candidates=table.num_rows,
                        seconds=round(secs, 3), rows_per_s=round((end - start) / max(secs, 1e-9), 1))
        bar.close()
        chunks.close({"rows": chunks.rows})
    secs = time.perf_counter() - t0
    log_metrics(log, "summary", shard=shard.tag, rows=chunks.rows, sampled_rows=done_rows, candidates=candidates,
                seconds=round(secs, 2), rows_per_s=round(done_rows / max(secs, 1e-9), 1))
    finalize(out, cfg, required=False, extra={"attention": teacher.attention})


def expected_chunks(total: int, num_shards: int, chunk_rows: int) -> list[str]:
    names = []
    for i in range(num_shards):
        start, end = Shard(i, num_shards, "").row_range(total)
        names += [chunk_name(s, min(s + chunk_rows, end)) for s in range(start, end, chunk_rows)]
    return sorted(names)


def finalize(out: Location, cfg: Config, required: bool, extra: dict[str, Any] | None = None) -> None:
    """Once every shard is done: merge the chunks into samples/ and counts.parquet, then the manifest.
    With `required`, fail naming the missing shards."""
    claim = sharded.finished_claim(out, KIND, NAME)
    if claim is None:
        return
    fp = claim["fingerprint"]
    count, total = int(fp["num_shards"]), int(claim["total_rows"])
    if collect(out, count, required) is None:
        return
    files = chunk_files(out)
    missing = sorted(set(expected_chunks(total, count, int(fp["chunk_rows"]))) - set(files))
    if missing:
        raise JobFault(f"{out.uri}: every shard is marked done but {len(missing)} chunk(s) are missing (first "
                       f"{missing[0]}): the output is inconsistent; delete it and rerun")
    dim, vocab, cap = int(claim["dim"]), int(claim["vocab_size"]), int(fp["max_per_token"])
    tokens_per_file = int(fp["tokens_per_file"])
    bound = range_bound(tokens_per_file, cap, row_bytes(dim))
    if bound > parse_size(cfg.max_memory):
        raise DistilError(f"one merge range needs up to {bound / 2**30:.2f} GiB, over --max-memory {cfg.max_memory}: "
                          "raise --max-memory for --finalize (the range size is fixed by the run)")
    log.info("phase 4/4: merge %d chunk(s) into %d-token files", len(files), tokens_per_file)
    t0 = time.perf_counter()
    merged = merge_chunks(out, files, dim, cap, vocab, tokens_per_file)
    log_metrics(log, "merge", chunks=len(files), tokens_covered=merged.tokens_covered,
                total_vectors=merged.total_vectors, files=len(merged.files), seconds=round(time.perf_counter() - t0, 2))
    content, settings = sharded.manifest_fingerprints(fp, layout(cfg))
    manifest = new_manifest(
        KIND, NAME, config_dict(cfg) | settings | {"shard_index": None, "finalize": False},
        [input_ref(fp["input"], "input") | {"content": fp.get("content:input")}, {"role": "teacher", "uri": fp["teacher"]}],
        merged.total_vectors, license=license_of(fp["input"] or ""), fingerprint=content,
        input_rows=total, shards=count, teacher=fp["teacher"], teacher_path=claim["teacher_path"],
        adapter=fp["adapter"], layer=int(claim["layer_index"]), dim=dim, vocab_size=vocab, max_per_token=cap,
        seed=fp["seed"], tokens_covered=merged.tokens_covered, total_vectors=merged.total_vectors,
        instruction=fp["instruction"], instruction_column=fp["instruction_column"], separator=fp["separator"],
        max_length=fp["max_length"], tokens_per_file=tokens_per_file, token_ranges=merged.token_ranges,
        tokenizer_fingerprint=claim["tokenizer_fingerprint"], dtype="float16", **(extra or {}),
    )
    # The manifest lists what readers use; the per-chunk files under data/ are the run's
    # intermediate state (kept so a repeated --finalize can merge again) and may be deleted.
    finish(out, manifest, listed=merged.files)
