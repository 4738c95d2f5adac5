"""Benchmark: sense distillation against plain embedding distillation, scored by evaluate-mteb.

The whole method as a user runs it, every step a real job, on the first --rows sentences of
corpus/sentences_en.tsv with MiniLM-L6 as the teacher:
  gather-senses (last layer, --cap vectors per token) → cluster --k K → precompute-embeddings twice
  (sense_ids labels, and final sentence embeddings) → two students of the same size and budget,
  MiniLM's first --layers layers, one epoch at the same learning rate and batch:
    embedding  train-student --method embedding (MSE to the teacher's sentence embedding)
    sense      train-student --method sense (the teacher's sense of every token)
Then evaluate-mteb on Banking77, Emotion and AmazonCounterfactualEn (test splits capped at
--max-test-rows) for: the teacher, the untrained student (the same layers, no training), the
embedding student, the sense student (plain mean pooling) and the sense student's sense-replace
encoder. Prints the table (teacher = 100%) and writes the chart; a rerun into the same --work
reuses every finished job.

    python bench/sense.py                                   # 20,000 sentences: ~40 min on 2 cores
    python bench/sense.py --rows 2000 --work out/bench-sense-quick
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TASKS = [("Banking77", "banking77", 8), ("Emotion", "emotion", 16),
         ("AmazonCounterfactualEn", "amazon_counterfactual_en", 32)]  # samples per label as in MTEB


def job(*args: str) -> None:
    """One distil-jobs command; a finished output with the same settings makes it a no-op."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "distil_jobs.cli", *args], check=True, stderr=subprocess.DEVNULL)
    print(f"  {args[0]} → {args[args.index('--output') + 1]}: {time.perf_counter() - t0:.0f} s", flush=True)


def untrained(layers: str, dest: Path) -> Path:
    """The student before training: MiniLM cut to the same layers, saved as a model folder."""
    if not (dest / "modules.json").exists():
        import torch

        from distil_jobs.train.student import build_student

        st = build_student("minilm", target_dim=None, layers=[int(x) for x in layers.split(",")], projection=False,
                           drop_normalize=False, max_length=128, device=torch.device("cpu"), attention="sdpa")
        st.save(str(dest))
    return dest


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=20_000, help="Corpus sentences gathered and trained on.")
    p.add_argument("--cap", type=int, default=200, help="gather-senses --max-per-token.")
    p.add_argument("--k", type=int, default=10, help="cluster --k.")
    p.add_argument("--layers", default="0,1", help="The students' layers of MiniLM-L6.")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--max-test-rows", type=int, default=2000)
    p.add_argument("--work", default="out/bench-sense", help="Folder of every artifact (reused on rerun).")
    p.add_argument("--chart", default=None, help="Also copy the chart here (e.g. docs/img/sense.png).")
    args = p.parse_args()

    from distil_jobs.data import data_dir

    data, work = Path(data_dir()), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    corpus = work / "corpus.tsv"
    if not corpus.exists():
        with open(data / "corpus" / "sentences_en.tsv", encoding="utf-8") as f:
            corpus.write_text("".join(next(f) for _ in range(args.rows + 1)), encoding="utf-8")
    t0 = time.perf_counter()
    print(f"teacher minilm, students: layers {args.layers}, {args.rows} sentences", flush=True)
    job("gather-senses", "--input", str(corpus), "--teacher", "minilm", "--max-per-token", str(args.cap),
        "--max-length", "64", "--batch-size", "64", "--output", str(work / "samples"))
    job("cluster", "--samples", str(work / "samples"), "--k", str(args.k), "--output", str(work / "dict"))
    job("precompute-embeddings", "--input", str(corpus), "--teacher", "minilm", "--output-type", "sense_ids",
        "--sense-dict", str(work / "dict"), "--max-length", "64", "--output", str(work / "labels"))
    job("precompute-embeddings", "--input", str(corpus), "--teacher", "minilm", "--max-length", "64",
        "--output", str(work / "targets"))
    budget = ["--student", "minilm", "--student-layers", args.layers, "--max-length", "64", "--epochs", "1",
              "--batch-size", str(args.batch_size), "--lr", str(args.lr), "--eval-steps", "200", "--save-steps", "0"]
    job("train-student", "--method", "embedding", "--targets", str(work / "targets"), *budget,
        "--output", str(work / "embedding"))
    job("train-student", "--method", "sense", "--targets", str(work / "labels"), "--sense-dict", str(work / "dict"),
        *budget, "--output", str(work / "sense"))

    models = {"teacher": "minilm", "untrained": str(untrained(args.layers, work / "untrained")),
              "embedding": str(work / "embedding" / "final"), "sense": str(work / "sense" / "final"),
              "sense_replace": str(work / "sense" / "final" / "sense-replace")}
    tasks = [f"kind=classification,name={name},path={data / folder},langs=eng-Latn,samples_per_label={spl}"
             for name, folder, spl in TASKS]
    job("evaluate-mteb", *[a for m in models.values() for a in ("--model", m)], "--labels", ",".join(models),
        "--reference", "teacher", *[a for t in tasks for a in ("--local-task", t)], "--max-test-rows",
        str(args.max_test_rows), "--batch-size", "64", "--device", "cpu", "--output", str(work / "report"))
    report(work, models, args.chart)
    print(f"wall time of this run: {time.perf_counter() - t0:.0f} s", flush=True)
    return 0


def report(work: Path, models: dict[str, str], chart: str | None) -> None:
    summary = json.loads((work / "report" / "summary.json").read_text())
    labels = list(models)
    for name in ("embedding", "sense"):
        extra = json.loads((work / name / "manifest.json").read_text())["extra"]
        metric = extra["headline"]["metric"]
        print(f"{name} student: {extra['steps']} steps, {metric} {extra['untrained_metrics'][metric]:.4f} → "
              f"{extra['final_metrics'][metric]:.4f}")
    print("\n| task | " + " | ".join(labels) + " |")
    print("|---|" + "---:|" * len(labels))
    for t in summary["tasks"]:
        scores = summary["scores"][t["name"]]
        print(f"| {t['name']} ({t['main_score']}) | " + " | ".join(f"{100 * scores[lb]:.2f}" for lb in labels) + " |")
    print("| **mean** | " + " | ".join(f"**{100 * summary['mean'][lb]:.2f}**" for lb in labels) + " |")
    print("| mean / teacher | " + " | ".join(f"{summary['mean_ratio'].get(lb, 1.0):.3f}" for lb in labels) + " |")
    if chart:
        shutil.copyfile(work / "report" / "scores.png", chart)
        print(f"chart: {chart}")


if __name__ == "__main__":
    sys.exit(main())
