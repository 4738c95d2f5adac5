"""Benchmark: precompute-embeddings vs the baseline `SentenceTransformer.encode` + writing Parquet.

Same model, same sentences (the first N of corpus/sentences_en.tsv), same machine, run side
by side as separate processes so each one's peak RSS is its own. Prints throughput, the ratio
job/baseline (goal on CPU: >= 1.0) and peak RSS at two sizes (memory must not grow with rows).

    python bench/precompute.py                       # 5,000 rows + memory check at 20,000
    python bench/precompute.py --rows 2000 --mem-rows 0 --teacher minilm
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))


def corpus_file(rows: int, workdir: Path) -> Path:
    from distil_jobs.data import data_dir

    src = Path(data_dir()) / "corpus" / "sentences_en.tsv"
    dst = workdir / f"sentences_{rows}.tsv"
    with open(src, encoding="utf-8") as f, open(dst, "w", encoding="utf-8") as g:
        for i, line in enumerate(f):
            if i > rows:
                break
            g.write(line)
    return dst


def run_job(tsv: Path, out: Path, teacher: str, batch_size: int, max_length: int) -> None:
    from click.testing import CliRunner

    from distil_jobs.cli import main

    result = CliRunner().invoke(main, ["precompute-embeddings", "--input", str(tsv), "--output", str(out),
                                       "--teacher", teacher, "--batch-size", str(batch_size), "--chunk-rows",
                                       "5000", "--device", "cpu", "--max-length", str(max_length)],
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output


def run_baseline(tsv: Path, out: Path, teacher: str, batch_size: int, max_length: int) -> None:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq
    from sentence_transformers import SentenceTransformer

    from distil_jobs.models.registry import resolve_model

    table = pacsv.read_csv(tsv, parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False))
    model = SentenceTransformer(resolve_model(teacher), device="cpu")
    model.max_seq_length = max_length
    emb = model.encode(table.column("text").to_pylist(), batch_size=batch_size, show_progress_bar=False)
    col = pa.FixedSizeListArray.from_arrays(pa.array(emb.astype("float16").reshape(-1)), emb.shape[1])
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.append_column("teacher_embedding_final", col), out / "embeddings.parquet")


def child(variant: str, tsv: Path, out: Path, teacher: str, batch_size: int, max_length: int) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    (run_job if variant == "job" else run_baseline)(tsv, out, teacher, batch_size, max_length)
    secs = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"variant": variant, "seconds": secs, "peak_rss_mb": peak_mb}))


def measure(variant: str, rows: int, workdir: Path, teacher: str, batch_size: int, max_length: int) -> dict:
    tsv = corpus_file(rows, workdir)
    out = Path(tempfile.mkdtemp(dir=workdir))
    done = subprocess.run([sys.executable, __file__, "--child", variant, "--tsv", str(tsv), "--out", str(out),
                           "--teacher", teacher, "--batch-size", str(batch_size), "--max-length", str(max_length)],
                          capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["rows"] = rows
    result["rows_per_s"] = rows / result["seconds"]
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=5000)
    ap.add_argument("--mem-rows", type=int, default=20000, help="second size for the memory check (0: skip)")
    ap.add_argument("--teacher", default="minilm")
    ap.add_argument("--batch-size", type=int, default=64)
    # The same token limit for both runs and both sizes: peak memory is bounded by batch x length,
    # so a fixed limit isolates what the row count does to memory.
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--child", choices=("job", "baseline"))
    ap.add_argument("--tsv", type=Path)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.tsv, args.out, args.teacher, args.batch_size, args.max_length)
        return
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        base = measure("baseline", args.rows, work, args.teacher, args.batch_size, args.max_length)
        job = measure("job", args.rows, work, args.teacher, args.batch_size, args.max_length)
        print(f"teacher={args.teacher} rows={args.rows} batch={args.batch_size} max_length={args.max_length} "
              f"cpu_count={os.cpu_count()}")
        print(f"{'run':<32}{'seconds':>9}{'rows/s':>9}{'peak RSS MB':>13}")
        for name, r in (("baseline: ST.encode + Parquet", base), ("distil-jobs precompute", job)):
            print(f"{name:<32}{r['seconds']:>9.1f}{r['rows_per_s']:>9.1f}{r['peak_rss_mb']:>13.0f}")
        print(f"throughput ratio job/baseline: {job['rows_per_s'] / base['rows_per_s']:.2f} (goal >= 1.0)")
        if args.mem_rows:
            big = measure("job", args.mem_rows, work, args.teacher, args.batch_size, args.max_length)
            print(f"job peak RSS: {job['peak_rss_mb']:.0f} MB at {args.rows} rows, "
                  f"{big['peak_rss_mb']:.0f} MB at {args.mem_rows} rows "
                  f"(ratio {big['peak_rss_mb'] / job['peak_rss_mb']:.2f}; rows x{args.mem_rows / args.rows:.0f})")


if __name__ == "__main__":
    main()
