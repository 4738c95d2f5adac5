"""Benchmark: precomputed teacher targets vs an online teacher, mpnet → MiniLM, same machine.

Two workloads, one epoch each way:
  (a) English compression on corpus/sentences_en.tsv (student sees one side);
  (b) parallel en+yo on MENYO train (student sees both sides, teacher only the English one).
Baseline: the online teacher. Prints time per epoch (training steps only), the speed-up of
precomputed targets, the one-off precompute cost, and the dev metrics of both ways (they must match).

  python bench/train.py                      # subsets sized for a small CPU box
  python bench/train.py --rows 59633 --pairs 10070 --batch-size 64   # the full sets (needs a GPU)

Needs mpnet: distil-jobs fetch-model mpnet.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distil_jobs.data import data_dir


def cli(*args: str) -> float:
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "distil_jobs.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    if done.returncode != 0:
        sys.exit(f"distil-jobs {' '.join(args[:1])} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - t0


def subset_tsv(src: Path, dst: Path, rows: int) -> Path:
    with open(src, encoding="utf-8") as f, open(dst, "w", encoding="utf-8") as out:
        for i, line in enumerate(f):
            if i > rows:  # header + rows
                break
            out.write(line)
    return dst


def subset_jsonl(src: Path, dst: Path, rows: int) -> Path:
    with open(src, encoding="utf-8") as f, open(dst, "w", encoding="utf-8") as out:
        for i, line in enumerate(f):
            if i >= rows:
                break
            out.write(line)
    return dst


def result(out: Path) -> dict:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if "loss" in r]
    dev = [r for r in rows if "dev_mse" in r][-1]
    return {"epoch_s": train[-1]["train_seconds"], "steps": train[-1]["step"], **{k: v for k, v in dev.items()
                                                                                  if k.startswith("dev_")}}


def workload(name: str, data: Path, text: str, pair: str | None, work: Path, a: argparse.Namespace) -> dict:
    common = ["--student", "minilm", "--max-length", str(a.max_length), "--batch-size", str(a.batch_size),
              "--epochs", "1", "--lr", "1e-4", "--dev-fraction", "0.05", "--eval-steps", "0", "--save-steps", "0",
              "--seed", "42"]
    pair_args = ["--pair-column", pair] if pair else []
    targets = work / f"{name}-targets"
    pre_s = cli("precompute-embeddings", "--input", str(data), "--text-column", text, *pair_args, "--teacher",
                "mpnet", "--dtype", "float32", "--max-length", str(a.max_length), "--batch-size", "64",
                "--output", str(targets))
    cli("train-student", "--targets", str(targets), *common, "--output", str(work / f"{name}-pre"))
    cli("train-student", "--input", str(data), "--text-column", text, *pair_args, "--teacher", "mpnet",
        "--teacher-max-length", str(a.max_length), *common, "--output", str(work / f"{name}-online"))
    return {"precompute_s": pre_s, "pre": result(work / f"{name}-pre"), "online": result(work / f"{name}-online")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=640, help="English sentences for (a)")
    p.add_argument("--pairs", type=int, default=320, help="MENYO pairs for (b)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--workdir", default=None)
    a = p.parse_args()
    data = Path(data_dir())
    work = Path(a.workdir or tempfile.mkdtemp(prefix="bench-train-"))
    work.mkdir(parents=True, exist_ok=True)
    runs = {
        "(a) en compression": workload("en", subset_tsv(data / "corpus" / "sentences_en.tsv", work / "en.tsv",
                                                        a.rows), "text", None, work, a),
        "(b) parallel en+yo": workload("menyo", subset_jsonl(data / "menyo20k" / "train.jsonl", work / "menyo.jsonl",
                                                             a.pairs), "en", "yo", work, a),
    }
    print(f"\nmpnet teacher → MiniLM student (6 layers), max length {a.max_length}, batch {a.batch_size}, "
          f"{os.cpu_count()} CPU core(s); baseline = online teacher")
    print(f"{'workload':22} {'online s/epoch':>15} {'precomp s/epoch':>16} {'speed-up':>9} {'+precompute':>12}  "
          f"dev metrics (online | precomputed)")
    for name, r in runs.items():
        on, pre = r["online"], r["pre"]
        dev = "  ".join(f"{k[4:]}={on[k]:.5f}|{pre[k]:.5f}" for k in on if k.startswith("dev_"))
        print(f"{name:22} {on['epoch_s']:15.1f} {pre['epoch_s']:16.1f} {on['epoch_s'] / pre['epoch_s']:8.2f}x "
              f"{r['precompute_s']:11.1f}s  {dev}")
    print(f"(precompute = one-off wall time of precompute-embeddings incl. model load; outputs in {work})")


if __name__ == "__main__":
    main()
