"""What the integrity checks cost: verified reads against plain pyarrow reads, side by side.

Builds a teacher-embeddings artifact the shape of the Yoruba recipe's targets (MENYO-20k train,
every English/Yoruba pair, 768-dim float16 embeddings as from mpnet) through the real chunk writer
and run contract, then times, each the median of --repeat runs:

- baseline: `pyarrow.parquet.read_table` over the chunk files (no checks at all);
- verified: `distil_jobs.data.read_table` (size + sha256 of every chunk, rows and dims against the
  manifest), what train-student does;
- `distil-jobs verify` (streaming hash + Parquet footers) and `distil-jobs cp` against `shutil.copytree`;
- the content fingerprint of the raw input a resume compares (`artifacts.fingerprint`).

The embedding values are random: only bytes are read here, never their meaning.

  python bench/integrity.py                 # ~1 minute on 2 cores
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]


def median_seconds(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def build_artifact(folder: Path, source: Path, dim: int, chunk_rows: int) -> int:
    from distil_jobs.artifacts import open_location
    from distil_jobs.artifacts.chunks import ChunkedOutput, collect
    from distil_jobs.artifacts.manifest import new_manifest
    from distil_jobs.artifacts.run import claim_output, finish
    from distil_jobs.data import read_table
    from distil_jobs.shards import Shard

    table = read_table(str(source))
    n = table.num_rows
    table = table.append_column("row_idx", pa.array(np.arange(n, dtype=np.int64)))
    rng = np.random.default_rng(0)
    out = open_location(str(folder))
    claim_output(out, "bench", {"dim": dim})
    with ChunkedOutput(out, "teacher-embeddings", Shard(0, 1, "bench"), n, chunk_rows) as chunks:
        for start, end in chunks.pending():
            emb = rng.standard_normal((end - start, dim)).astype(np.float16)
            part = table.slice(start, end - start).append_column(
                "teacher_embedding_final", pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), dim))
            chunks.write(start, end, part)
        chunks.close()
    summary = collect(out, 1, required=True)
    assert summary is not None
    finish(out, new_manifest("teacher-embeddings", "bench", {}, [], summary.rows,
                             embedding_columns={"teacher_embedding_final": dim}), listed=summary.files)
    return n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = Path(os.environ.get("DISTIL_DATA_DIR", ROOT.parent / "shared" / "data"))
    ap.add_argument("--input", default=str(data / "menyo20k" / "train.jsonl"))
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--chunk-rows", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    from distil_jobs.artifacts.copy import copy_artifact
    from distil_jobs.artifacts.fingerprint import content_fingerprint
    from distil_jobs.artifacts.verify import verify_artifact
    from distil_jobs.data import read_table

    with tempfile.TemporaryDirectory(prefix="bench-integrity-") as tmp:
        art = Path(tmp) / "targets"
        rows = build_artifact(art, Path(args.input), args.dim, args.chunk_rows)
        files = sorted((art / "data").glob("part-*.parquet"))
        size = sum(f.stat().st_size for f in files)
        read_table(str(art))  # warm the page cache for both sides
        plain = median_seconds(lambda: pq.read_table(files), args.repeat)
        checked = median_seconds(lambda: read_table(str(art)), args.repeat)
        verify = median_seconds(lambda: verify_artifact(str(art)), args.repeat)

        def cp() -> None:
            shutil.rmtree(Path(tmp) / "copy", ignore_errors=True)
            copy_artifact(str(art), str(Path(tmp) / "copy"))

        def copytree() -> None:
            shutil.rmtree(Path(tmp) / "tree", ignore_errors=True)
            shutil.copytree(art, Path(tmp) / "tree")

        copy_checked, copy_plain = median_seconds(cp, args.repeat), median_seconds(copytree, args.repeat)
        fingerprint = median_seconds(lambda: content_fingerprint(args.input), args.repeat)
        input_mb = os.path.getsize(args.input) / 1e6

    mb = size / 1e6
    print(f"artifact: {rows:,} rows, {args.dim}-dim float16, {len(files)} chunks, {mb:.1f} MB; median of {args.repeat}")
    print(f"{'what':<44}{'seconds':>9}{'MB/s':>9}{'ratio':>8}")
    print(f"{'read: pyarrow read_table (baseline)':<44}{plain:>9.3f}{mb / plain:>9.0f}{1:>8.2f}")
    print(f"{'read: verified read_table (sha256 + shape)':<44}{checked:>9.3f}{mb / checked:>9.0f}{checked / plain:>8.2f}")
    print(f"{'distil-jobs verify (stream + footers)':<44}{verify:>9.3f}{mb / verify:>9.0f}{verify / plain:>8.2f}")
    print(f"{'copy: shutil.copytree (baseline)':<44}{copy_plain:>9.3f}{mb / copy_plain:>9.0f}{1:>8.2f}")
    print(f"{'copy: distil-jobs cp (verified)':<44}{copy_checked:>9.3f}{mb / copy_checked:>9.0f}"
          f"{copy_checked / copy_plain:>8.2f}")
    print(f"{'content fingerprint of the input':<44}{fingerprint:>9.3f}{input_mb / fingerprint:>9.0f}"
          f"{'':>8}  ({input_mb:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
