"""Baseline MTEB numbers for the teacher and the off-the-shelf student on the local task set.

Runs `distil-jobs evaluate-mteb --config jobs/evaluate.yaml` (all-mpnet-base-v2 = baseline,
all-MiniLM-L6-v2) and prints, per task, both main scores side by side with the student/teacher
ratio, plus each model's evaluation time and the time ratio. Distilled students are judged
against this table (docs/evaluate-mteb.md).

  python bench/evaluate.py --output out/bench-evaluate
  python bench/evaluate.py --output out/bench-evaluate-quick --max-test-rows 1000   # capped eval splits

A rerun into the same --output reuses finished (model, task) pairs and only rebuilds the table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output", default="out/bench-evaluate", help="report folder (reused on rerun)")
    ap.add_argument("--config", default=str(ROOT / "jobs" / "evaluate.yaml"))
    ap.add_argument("--max-test-rows", type=int, default=None,
                    help="cap each local task's evaluation split (seeded/stratified subsample) on slow machines")
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()

    env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
           "DISTIL_DATA_DIR": os.environ.get("DISTIL_DATA_DIR", str(ROOT.parent / "shared" / "data"))}
    cmd = [sys.executable, "-m", "distil_jobs.cli", "evaluate-mteb", "--config", args.config,
           "--output", args.output, "--batch-size", str(args.batch_size)]
    if args.max_test_rows:
        cmd += ["--max-test-rows", str(args.max_test_rows)]
    print("$", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, check=False)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        print(f"evaluate-mteb failed with exit code {done.returncode}", file=sys.stderr)
        return done.returncode

    summary = json.loads((Path(args.output) / "summary.json").read_text())
    ref = summary["reference"]
    labels = [m["label"] for m in summary["models"]]
    others = [lb for lb in labels if lb != ref]
    secs = {lb: sum(v[lb] or 0.0 for v in summary["evaluation_seconds"].values()) for lb in labels}
    head = ["task", "metric", *labels, *[f"{o}/{ref}" for o in others]]
    print("\n| " + " | ".join(head) + " |")
    print("|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|")
    for t in summary["tasks"]:
        name = t["name"]
        row = [name, t["main_score"], *[f"{100 * summary['scores'][name][lb]:.2f}" for lb in labels],
               *[f"{summary['ratios'][name][o]:.3f}" for o in others]]
        print("| " + " | ".join(row) + " |")
    print("| **mean** | | " + " | ".join(f"**{100 * summary['mean'][lb]:.2f}**" for lb in labels) + " | "
          + " | ".join(f"**{summary['mean_ratio'][o]:.3f}**" for o in others) + " |")
    print("| eval time (s) | | " + " | ".join(f"{secs[lb]:.0f}" for lb in labels) + " | "
          + " | ".join(f"{secs[o] / secs[ref]:.3f}" if secs[ref] else "n/a" for o in others) + " |")
    print(f"\nbaseline: {ref}; chart: {Path(args.output) / 'scores.png'}; wall time of this run: {wall:.0f} s "
          "(0 work for pairs already in --output)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
