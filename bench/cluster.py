"""Benchmark: the cluster job vs per-token scikit-learn KMeans, as the SenseDict reference code does it.

Samples: the gather-senses job (MiniLM, last layer) on the first --rows sentences of
corpus/sentences_en.tsv, at most --cap per token (the size reached is printed). Then, each in its
own process so each peak RSS is its own, on the same samples:
  job       `distil-jobs cluster --k K` (faiss, threads over tokens), end to end: read, cluster,
            publish parts, merge, manifest
  baseline  the reference's loop: for each token, fewer than 10 samples are kept as they are, else
            `KMeans(n_clusters=K, random_state=0, n_init="auto").fit(x)`; read the same Parquet
            files, save the centroids with numpy
Prints seconds (wall and CPU), ratio baseline/job, peak RSS (resource.getrusage, in each child: a fork keeps its
parent's peak, so the parent never loads the model) and the mean inertia of each.

    python bench/cluster.py                       # 26,000 sentences (~3-4 min to gather), cap 1000, k 10
    python bench/cluster.py --rows 3000 --cap 200
    python bench/cluster.py --samples /tmp/cluster-bench/samples   # reuse a gather-senses output
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))


def build(workdir: Path, rows: int, cap: int) -> Path:
    """Samples made by the real gather-senses job (MiniLM, last layer) from the first `rows` corpus sentences."""
    from distil_jobs.data import data_dir

    src = Path(data_dir()) / "corpus" / "sentences_en.tsv"
    out = workdir / "samples"
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "distil_jobs.cli", "gather-senses", "--input", str(src), "--max-rows",
                    str(rows), "--teacher", "minilm", "--max-length", "64", "--max-per-token", str(cap),
                    "--batch-size", "64", "--chunk-rows", "2000", "--output", str(out)], check=True,
                   stderr=subprocess.DEVNULL)
    extra = json.loads((out / "manifest.json").read_text())["extra"]
    print(f"samples: gather-senses on {rows} sentences in {time.perf_counter() - t0:.0f} s → "
          f"{extra['tokens_covered']} tokens, {extra['total_vectors']} vectors (cap {cap})", flush=True)
    return out


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_job(samples: Path, out: Path, k: int) -> dict[str, float]:
    from click.testing import CliRunner

    from distil_jobs.cli import main

    t0 = time.perf_counter()
    result = CliRunner().invoke(main, ["cluster", "--samples", str(samples), "--output", str(out), "--k", str(k)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    secs = time.perf_counter() - t0
    extra = json.loads((out / "manifest.json").read_text())["extra"]
    return {"seconds": secs, "tokens": extra["tokens_covered"], "senses": extra["total_senses"],
            "mean_inertia": extra["mean_inertia"]}


def run_baseline(samples: Path, out: Path, k: int) -> dict[str, float]:
    import numpy as np
    from sklearn.cluster import KMeans

    from distil_jobs.jobs.cluster import Samples

    t0 = time.perf_counter()
    source = Samples.open(str(samples))
    centroids, inertia, n_samples, tokens = [], 0.0, 0, 0
    for lo, hi in source.ranges:
        for _, x in source.tokens(lo, hi):
            x = x.astype(np.float32)
            tokens += 1
            n_samples += len(x)
            if len(x) < 10:  # the reference keeps a token with fewer than `occurance` (10) samples as it is
                centroids.append(x)
                continue
            km = KMeans(n_clusters=k, random_state=0, n_init="auto").fit(x)
            centroids.append(km.cluster_centers_.astype(np.float32))
            inertia += float(km.inertia_)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "centroids.npy", np.concatenate(centroids))
    return {"seconds": time.perf_counter() - t0, "tokens": tokens, "senses": sum(len(c) for c in centroids),
            "mean_inertia": inertia / n_samples}


def child(which: str, samples: Path, out: Path, k: int) -> None:
    cpu = cpu_seconds()
    stats = (run_job if which == "job" else run_baseline)(samples, out, k)
    # CPU seconds (every thread) next to wall seconds: on a machine shared with other work the wall
    # ratio moves with the load (scikit-learn's OpenMP threads suffer most), the CPU ratio less.
    print(json.dumps(stats | {"cpu_seconds": round(cpu_seconds() - cpu, 2), "peak_rss_mib": peak_mib()}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=26_000, help="corpus sentences to gather samples from")
    ap.add_argument("--cap", type=int, default=1000, help="vectors kept per token")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--samples", type=Path, help="reuse a samples artifact instead of building one")
    ap.add_argument("--child", choices=("build", "job", "baseline"), help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child == "build":
        build(args.out, args.rows, args.cap)
        return
    if args.child:
        child(args.child, args.samples, args.out, args.k)
        return
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        work = Path(tmp)
        if not args.samples:  # in a process of its own: the model's memory must not count as the job's
            subprocess.run([sys.executable, __file__, "--child", "build", "--out", str(work), "--rows",
                            str(args.rows), "--cap", str(args.cap)], check=True)
        samples = args.samples or work / "samples"
        results = {}
        for which in ("job", "baseline"):
            done = subprocess.run([sys.executable, __file__, "--child", which, "--samples", str(samples),
                                   "--out", str(work / which), "--k", str(args.k)],
                                  capture_output=True, text=True, check=False)
            if done.returncode != 0:
                sys.exit(f"{which} failed:\n{done.stderr[-3000:]}")
            results[which] = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"{which:9s} {results[which]}", flush=True)
        job, base = results["job"], results["baseline"]
        print(f"ratio baseline/job: {base['seconds'] / job['seconds']:.1f}x faster (CPU seconds: "
              f"{base['cpu_seconds'] / job['cpu_seconds']:.1f}x); peak RSS job "
              f"{job['peak_rss_mib']:.0f} MiB vs baseline {base['peak_rss_mib']:.0f} MiB; mean inertia job "
              f"{job['mean_inertia']:.3f} vs baseline {base['mean_inertia']:.3f} (squared distance to the "
              "sample's sense, over every sample)")


if __name__ == "__main__":
    main()
