"""Cluster each token's teacher vectors into senses: a gather-senses artifact → a sense dictionary.

Per token id, k-means (faiss) over its samples gives k sense vectors; `--k-rule skd` picks k per
token with the paper's MCL rule instead (Wang et al., "Multi-Sense Embeddings for Language Models
and Knowledge Distillation", ACL Findings 2025). A token with at most k distinct samples keeps
them. Shards split the samples' token-id ranges; each range is published as one part, so a
killed shard resumes from its published parts. The shard that sees every shard done writes
`sense_dict.safetensors` (centroids, offsets, counts) and the manifest. Details: docs/senses.md.

\b
Single machine:
  distil-jobs cluster --samples out/minilm-senses --output out/minilm-dict --plot-tokens bank,light
Four shards (any order, any machine; the last one done merges):
  distil-jobs cluster --samples out/minilm-senses --output out/minilm-dict --num-shards 4 --shard-index $I
"""

from __future__ import annotations

import dataclasses
import io
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from safetensors.numpy import load as load_tensors
from safetensors.numpy import save_file

from distil_jobs.artifacts import Location
from distil_jobs.artifacts.manifest import input_ref, list_files, new_manifest, require_artifact
from distil_jobs.artifacts.run import claim_output, finish, mark_shard_done, missing_shards
from distil_jobs.artifacts.verify import REMAKE, IntegrityError, entries, read_verified
from distil_jobs.config import config_dict, setting
from distil_jobs.errors import DistilError, JobFault
from distil_jobs.jobs import SENSE_DICT, SENSE_SAMPLES, sharded
from distil_jobs.log import get_logger, log_metrics
from distil_jobs.senses.kmeans import K_RULES, Params
from distil_jobs.senses.labels import DICTIONARY
from distil_jobs.senses.mcl import MAX_SAMPLES, NEIGHBOURS
from distil_jobs.senses.merge import COUNTS, samples_name
from distil_jobs.senses.range_kmeans import cluster_range, thread_pool
from distil_jobs.shards import Shard

NAME = "cluster"
KIND = SENSE_DICT
PARTS = "parts/"
PLOT = "senses.png"
SKD_FLOOR = 5  # the smallest k the skd rule gives
_READ_AHEAD = 2  # ranges read ahead of the one being clustered, at most one per worker
_READ_ROWS = 4_096  # samples decoded per Parquet batch
log = get_logger(NAME)


@dataclasses.dataclass(kw_only=True, slots=True)
class Config:
    samples: str | None = setting(None, "A gather-senses artifact (folder, s3://... or hf://...).", data=True)
    output: str | None = setting(None, "Artifact URI to write: a folder, s3://bucket/prefix or hf://datasets/org/name.")
    k: int = setting(10, "Senses per token (k-means clusters); a token with fewer distinct samples keeps them.",
                     fingerprint=True, min=1)
    k_rule: str = setting("fixed", "fixed: --k senses per token; skd: k per token from the paper's MCL rule "
                                   "(0.1·m clusters for m <= 900, else 0.4·m, at least 5).",
                          choices=K_RULES, fingerprint=True)
    niter: int = setting(20, "k-means (Lloyd) iterations per token.", fingerprint=True, min=1)
    seed: int = setting(0, "Seed of each token's initial centroids (and of MCL's subsample).", fingerprint=True,
                        min=0)
    plot_words: list[str] = setting([], "Words whose samples and senses senses.png shows (first sub-token of "
                                        "each), e.g. bank,light.", aliases=("--plot-tokens",), fingerprint=True)
    workers: int | None = setting(None, "Threads clustering tokens (default: every core).", min=1)
    num_shards: int | None = setting(None, "Total shards (default: SLURM_ARRAY_TASK_COUNT, else 1).", min=1)
    shard_index: int | None = setting(None, "This shard (default: SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX, else 0).",
                                      min=0)
    finalize: bool = setting(False, "Only check that every shard is done and write the dictionary; "
                                    "names missing shards.")


def validate(cfg: Config) -> None:
    if not cfg.output:
        raise DistilError("--output is required: where to write the sense dictionary")
    if not cfg.finalize and not cfg.samples:
        raise DistilError("--samples is required: a gather-senses artifact (e.g. out/minilm-senses)")


@dataclasses.dataclass(slots=True)
class Samples:
    """A gather-senses artifact, opened and checked: its manifest promises every file read from it."""

    loc: Location
    manifest: dict[str, Any]
    extra: dict[str, Any]
    ranges: list[tuple[int, int]]
    dim: int
    vocab_size: int
    files: dict[tuple[int, int], str]

    @classmethod
    def open(cls, uri: str) -> Samples:
        loc, manifest = require_artifact(uri, SENSE_SAMPLES)
        extra = manifest.get("extra") or {}
        missing = [k for k in ("dim", "vocab_size", "max_per_token", "token_ranges") if k not in extra]
        if missing:
            raise DistilError(f"{uri}: its manifest lacks {', '.join(missing)}: rerun gather-senses into a new output")
        # Each entry is [lo, hi) or [lo, hi, file]: gather-senses names the file of each range it wrote.
        ranges = [(int(r[0]), int(r[1])) for r in extra["token_ranges"]]
        files = {(int(r[0]), int(r[1])): str(r[2]) for r in extra["token_ranges"] if len(r) > 2}
        return cls(loc, manifest, extra, ranges, int(extra["dim"]), int(extra["vocab_size"]), files)

    def _read(self, rel: str) -> Any:
        return pq.read_table(io.BytesIO(read_verified(self.loc, rel, entries(self.manifest).get(rel))))

    def read_range(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The samples of every token in [lo, hi) as arrays: token ids [T], starts [T + 1] (token i's rows
        are values[starts[i]:starts[i + 1]]) and values [N, dim] float16, by token id. One read and no
        per-token copies: the cluster job batches over tokens."""
        rel = self.files.get((lo, hi), samples_name(lo, hi))
        empty = np.zeros(0, np.int64), np.zeros(1, np.int64), np.zeros((0, self.dim), np.float16)
        if rel not in entries(self.manifest):  # gather-senses writes no file for a range where no token occurred
            return empty
        # Decoded in batches into one preallocated array: `read_table` on the samples' dictionary-encoded
        # float16 column peaked at ~6x the file's size and took twice the CPU (113 MB file: +703 MiB, 2.0 s
        # vs +203 MiB, 1.1 s in batches of 4,096 rows).
        data = pq.ParquetFile(pa.BufferReader(read_verified(self.loc, rel, entries(self.manifest).get(rel))))
        size = data.schema_arrow.field("vector").type.list_size
        if size != self.dim:
            raise IntegrityError(f"{self.loc.uri}/{rel}: vectors of {size} dims, its manifest says {self.dim}: {REMAKE}")
        rows = data.metadata.num_rows
        if not rows:
            return empty
        ids, values, at = np.empty(rows, np.int64), np.empty((rows, self.dim), np.float16), 0
        for batch in data.iter_batches(batch_size=_READ_ROWS, columns=["token_id", "vector"]):
            n = batch.num_rows
            ids[at:at + n] = batch.column(0).to_numpy()
            values[at:at + n] = batch.column(1).flatten().to_numpy(zero_copy_only=False).reshape(n, self.dim)
            at += n
        if len(ids) and (np.any(np.diff(ids) < 0) or ids[0] < lo or ids[-1] >= hi):
            raise IntegrityError(f"{self.loc.uri}/{rel}: token ids unsorted or outside [{lo}, {hi}): {REMAKE}")
        starts = np.concatenate([[0], np.flatnonzero(np.diff(ids)) + 1, [len(ids)]]).astype(np.int64)
        return ids[starts[:-1]].astype(np.int64), starts, values

    def tokens(self, lo: int, hi: int) -> list[tuple[int, np.ndarray]]:
        """The samples of every token in [lo, hi), as (token id, [n, dim] float16), by token id."""
        ids, starts, values = self.read_range(lo, hi)
        return [(int(t), values[s:e]) for t, s, e in zip(ids, starts[:-1], starts[1:], strict=True)]

    def kept(self) -> dict[int, int] | None:
        """Samples kept per token id, from counts.parquet (None if the artifact has none)."""
        if COUNTS not in entries(self.manifest):
            return None
        table = self._read(COUNTS)
        return dict(zip(table.column("token_id").to_pylist(), table.column("kept").to_pylist(), strict=True))


def part_name(lo: int, hi: int) -> str:
    return f"{PARTS}part-{lo:08d}-{hi:08d}.safetensors"


def part_files(out: Location) -> list[str]:
    return [f for f in list_files(out) if f.startswith(PARTS) and f.endswith(".safetensors")]


def check_k(cfg: Config, samples: Samples) -> None:
    """Refuse a k the samples cannot support: with a cap below k every token would keep its samples."""
    cap = int(samples.extra["max_per_token"])
    k, what = (SKD_FLOOR, f"--k-rule skd's smallest k ({SKD_FLOOR})") if cfg.k_rule == "skd" else (cfg.k, f"--k {cfg.k}")
    if cap < k:
        raise DistilError(f"{samples.loc.uri} keeps at most {cap} samples per token (max_per_token), fewer than "
                          f"{what}: lower --k or gather with --max-per-token >= {k}")


def plot_token_ids(words: list[str], teacher: str, samples: Samples) -> list[tuple[str, str, int]]:
    """(word, sub-token, token id) for each --plot-words word: its first sub-token under the teacher's
    tokenizer, which must have samples."""
    if not words:
        return []
    from transformers import AutoTokenizer

    from distil_jobs.models.registry import resolve_model
    from distil_jobs.senses.vocab import tokenizer_fingerprint

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(teacher))
    expected = samples.extra.get("tokenizer_fingerprint")
    if expected and tokenizer_fingerprint(tokenizer) != expected:  # token ids would name other words
        raise DistilError(f"--plot-words: the tokenizer of {teacher} is not the one {samples.loc.uri} was gathered "
                          "with (tokenizer_fingerprint differs)")
    kept = samples.kept()
    found = []
    for word in words:
        ids = tokenizer(word, add_special_tokens=False)["input_ids"]
        if not ids:
            raise DistilError(f"--plot-words {word!r}: the teacher's tokenizer gives no token for it")
        token = tokenizer.convert_ids_to_tokens(ids[0])
        if kept is not None and not kept.get(ids[0]):
            raise DistilError(f"--plot-words {word!r}: its token {token!r} (id {ids[0]}) has no samples in "
                              f"{samples.loc.uri}: pick a word the corpus contains")
        found.append((word, token, int(ids[0])))
    return found


def layout(cfg: Config) -> dict[str, Any]:
    """Which shard owns which range: a resume must keep it, a finished dictionary does not depend on it."""
    return {"num_shards": cfg.num_shards}


def shard_ranges(ranges: list[tuple[int, int]], shard: Shard) -> list[tuple[int, int]]:
    start, end = shard.row_range(len(ranges))
    return ranges[start:end]


def run(cfg: Config) -> None:
    started = sharded.start(cfg, KIND, finalize)
    if started is None:
        return
    out, settings, shard = started
    assert cfg.samples
    samples = Samples.open(cfg.samples)
    check_k(cfg, samples)
    plot = plot_token_ids(cfg.plot_words, str(samples.extra.get("teacher", "")), samples)
    # The first write: everything above can still fail cleanly.
    claim_output(out, NAME, settings | layout(cfg), info={"ranges": len(samples.ranges)},
                 concurrent=shard.count > 1, produced=lambda: bool(part_files(out)))

    params = Params(cfg.k, cfg.k_rule, cfg.niter, cfg.seed)
    mine, done = shard_ranges(samples.ranges, shard), set(part_files(out))
    todo = [(lo, hi) for lo, hi in mine if part_name(lo, hi) not in done]
    log.info("shard %d/%d (%s): %d token range(s), %d already published", shard.index, shard.count, shard.source,
             len(mine), len(mine) - len(todo))
    t0, tokens = time.perf_counter(), 0
    # The next ranges are read and decoded (sha256, Parquet: both release the GIL) while this one is
    # clustered: decoding the samples' dictionary-encoded float16 column takes about as much CPU as the
    # clustering, so it runs on as many threads as the clustering does.
    ahead_n = max(1, min(_READ_AHEAD, cfg.workers or os.cpu_count() or 1))
    with tempfile.TemporaryDirectory(prefix="distil-cluster-") as staging, \
            ThreadPoolExecutor(ahead_n, thread_name_prefix="read") as reader, thread_pool(cfg.workers) as pmap:
        ahead = [reader.submit(samples.read_range, lo, hi) for lo, hi in todo[:ahead_n]]
        for r, (lo, hi) in enumerate(todo):
            tr = time.perf_counter()
            ids, starts, values = ahead.pop(0).result()
            if r + ahead_n < len(todo):
                ahead.append(reader.submit(samples.read_range, *todo[r + ahead_n]))
            arrays = cluster_range(ids, starts, values, params, pmap)
            del ids, starts, values
            local = os.path.join(staging, "part.safetensors")
            save_file(arrays, local)
            out.put_files([(local, part_name(lo, hi))], message=f"distil-jobs: senses of tokens {lo}-{hi}")
            tokens += len(arrays["token_ids"])
            log_metrics(log, "range", lo=lo, hi=hi, tokens=len(arrays["token_ids"]), senses=len(arrays["counts"]),
                        seconds=round(time.perf_counter() - tr, 3))
    mark_shard_done(out, shard, {"ranges": len(mine)})
    log_metrics(log, "summary", shard=shard.tag, tokens=tokens, seconds=round(time.perf_counter() - t0, 2))
    finalize(out, cfg, required=False, samples=samples, plot=plot)


def merge(out: Location, ranges: list[tuple[int, int]], vocab_size: int, dim: int
          ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Every range's part → the dictionary's arrays (tokens in id order) and the manifest's statistics."""
    missing = [part_name(lo, hi) for lo, hi in ranges if not out.exists(part_name(lo, hi))]
    if missing:
        raise JobFault(f"{out.uri}: every shard is done but {len(missing)} part(s) are missing (first {missing[0]}): "
                       "delete the output and rerun")
    parts = [load_tensors(out.read_bytes(part_name(lo, hi))) for lo, hi in ranges]
    ids = np.concatenate([p["token_ids"] for p in parts]) if parts else np.zeros(0, np.int64)
    if np.any(np.diff(ids) <= 0) or (len(ids) and not 0 <= ids[0] <= ids[-1] < vocab_size):
        raise JobFault(f"{out.uri}: the parts' token ids overlap or leave the vocabulary: delete the output and rerun")
    sizes = np.zeros(vocab_size, np.int64)
    sizes[ids] = np.concatenate([p["sizes"] for p in parts]) if parts else []
    arrays = {
        "centroids": np.concatenate([p["centroids"] for p in parts]) if parts else np.zeros((0, dim), np.float32),
        "offsets": np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
        "counts": np.concatenate([p["counts"] for p in parts]) if parts else np.zeros(0, np.int64),
    }
    ks = np.concatenate([p["ks"] for p in parts]) if parts else np.zeros(0, np.int64)
    samples = int(sum(p["samples"].sum() for p in parts))
    inertia = float(sum(p["inertia"].sum() for p in parts))
    stats = {"tokens_covered": int((sizes > 0).sum()), "total_senses": int(sizes.sum()), "total_samples": samples,
             # the mean squared distance from a sample to its sense's centroid, over every sample
             "mean_inertia": inertia / samples if samples else 0.0,
             "k_chosen": {"min": int(ks.min()), "mean": round(float(ks.mean()), 3), "max": int(ks.max())} if len(ks)
             else None}
    return arrays, stats


def finalize(out: Location, cfg: Config, required: bool, samples: Samples | None = None,
             plot: list[tuple[str, str, int]] | None = None) -> None:
    """Write the dictionary and manifest once every shard is done; with `required`, fail naming the missing shards."""
    claim = sharded.finished_claim(out, KIND, NAME)
    if claim is None:
        return
    fp = claim["fingerprint"]
    count = int(fp["num_shards"])
    missing = missing_shards(out, count)
    if missing:
        if required:
            raise DistilError(f"{len(missing)} of {count} shard(s) not done: {', '.join(map(str, missing[:20]))}; "
                              "rerun those shard indices")
        log.info("shard done; waiting for %d other shard(s) before the dictionary is written", len(missing))
        return
    samples = samples or Samples.open(fp["samples"])
    if plot is None:
        plot = plot_token_ids(list(fp["plot_words"]), str(samples.extra.get("teacher", "")), samples)
    t0 = time.perf_counter()
    arrays, stats = merge(out, samples.ranges, samples.vocab_size, samples.dim)
    copied = {k: samples.extra.get(k) for k in ("teacher", "layer", "dim", "vocab_size", "tokenizer_fingerprint")}
    with tempfile.TemporaryDirectory(prefix="distil-cluster-") as staging:
        files = [(os.path.join(staging, DICTIONARY), DICTIONARY)]
        # One metadata key: safetensors stores metadata in a hash map, so several keys come out in
        # any order and the same dictionary would not be the same bytes. The manifest says the rest.
        save_file(arrays, files[0][0], metadata={"format": "sense-dict/1"})
        if plot:
            files.append((os.path.join(staging, PLOT), PLOT))
            draw(files[-1][0], plot, samples, arrays, fp)
        content, settings = sharded.manifest_fingerprints(fp, layout(cfg))
        manifest = new_manifest(
            KIND, NAME, config_dict(cfg) | settings | {"shard_index": None, "finalize": False},
            [input_ref(fp["samples"], "samples") | {"content": fp.get("content:samples")}],
            stats["total_senses"], license=samples.manifest.get("license"), fingerprint=content, **copied,
            k=fp["k"], k_rule=fp["k_rule"], niter=fp["niter"], seed=fp["seed"], shards=count,
            mcl={"neighbours": NEIGHBOURS, "max_samples": MAX_SAMPLES, "expansion": 2, "inflation": 2.0}
            if fp["k_rule"] == "skd" else None,
            plot_tokens={word: {"token": token, "id": tid} for word, token, tid in plot}, **stats,
        )
        finish(out, manifest, files=files)
    log_metrics(log, "merge", ranges=len(samples.ranges), tokens_covered=stats["tokens_covered"],
                total_senses=stats["total_senses"], seconds=round(time.perf_counter() - t0, 2))


def draw(path: str, plot: list[tuple[str, str, int]], samples: Samples, arrays: dict[str, np.ndarray],
         fp: dict[str, Any]) -> None:
    from distil_jobs.senses.plot import TokenView, plot_senses

    views = []
    for word, token, tid in plot:
        found = [dict(samples.tokens(lo, hi)).get(tid) for lo, hi in samples.ranges if lo <= tid < hi]
        x = next((f for f in found if f is not None), None)
        if x is None:
            log.warning("--plot-words %r: token %r has no samples: left out of %s", word, token, PLOT)
            continue
        a, b = arrays["offsets"][tid], arrays["offsets"][tid + 1]
        views.append(TokenView(word, token, x.astype(np.float32), arrays["centroids"][a:b]))
    if not views:
        return
    rule = f"k-rule skd (seed {fp['seed']})" if fp["k_rule"] == "skd" else f"k={fp['k']} (seed {fp['seed']})"
    plot_senses(views, path, f"senses of {samples.extra.get('teacher')} layer {samples.extra.get('layer')}, {rule}")
