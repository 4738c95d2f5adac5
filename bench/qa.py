"""Benchmark: SQuAD question-answering distillation, mpnet teacher → its 6-layer slice.

Every step a real job on squad_v1.1_dev, split by article: 12 held-out articles (fixed by
--seed), the other 36 to prepare the teacher and to distil. On 2 CPU cores a whole epoch of the
36 articles (~8,000 questions) through a 12-layer teacher takes hours, so the bench trains on
--train-questions spread evenly over the 36 articles and scores --eval-questions spread over the
12 held-out ones (the README states the sizes of the run it reports):
  prepare-teacher --task qa --model mpnet (the encoder and a new QA head on the gold spans)
  → precompute-embeddings --output-type qa_logits (the teacher's start/end logits, once)
  → two students, the teacher's layers 0,2,4,7,9,11 with its head, the same budget (each pair
    trained for every --student-epochs count, 1 and 2 by default):
      gold only   train-student --method qa --alpha-ce 0 --alpha-qa 1 (no teacher)
      KD          train-student --method qa (α_ce=α_qa=0.5, T=2) from the stored logits
Prints EM/F1 on the held-out questions for the teacher, the untrained slice and both students,
the KD student's F1 as a fraction of the teacher's, and the inference speed-up (the same
features through teacher and student, interleaved batch by batch). Writes a chart; a rerun into
the same --work reuses every finished job.

    python bench/qa.py                        # ~80 min on 2 cores
    python bench/qa.py --train-questions 300 --eval-questions 150 --work out/bench-qa-quick
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


def job(*args: str) -> float:
    """One distil-jobs command (a finished output with the same settings makes it a no-op); its seconds."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "distil_jobs.cli", *args], check=True, stderr=subprocess.DEVNULL)
    secs = time.perf_counter() - t0
    print(f"  {args[0]} → {args[args.index('--output') + 1]}: {secs:.0f} s", flush=True)
    return secs


def spread(rows: list[dict], titles: list[str], n: int) -> list[dict]:
    """About n questions, the same number from each article (its first ones: whole paragraphs)."""
    per = max(1, n // len(titles))
    taken: dict[str, int] = {}
    out = []
    for row in rows:
        if row["title"] in titles and taken.get(row["title"], 0) < per:
            taken[row["title"]] = taken.get(row["title"], 0) + 1
            out.append(row)
    return out


def inputs(data: Path, work: Path, args: argparse.Namespace) -> tuple[Path, Path]:
    import numpy as np

    work.mkdir(parents=True, exist_ok=True)
    train, held = work / "train.jsonl", work / "eval.jsonl"
    if not train.exists():
        rows = [json.loads(line) for line in (data / "squad_v1.1_dev" / "dev.jsonl").read_text("utf-8").splitlines()]
        titles = list(dict.fromkeys(r["title"] for r in rows))
        order = np.random.default_rng(args.seed).permutation(len(titles))
        eval_titles = [titles[i] for i in sorted(order[:args.eval_articles])]
        train_titles = [t for t in titles if t not in eval_titles]
        for path, picked in ((train, spread(rows, train_titles, args.train_questions)),
                             (held, spread(rows, eval_titles, args.eval_questions))):
            path.write_text("".join(json.dumps(r) + "\n" for r in picked), encoding="utf-8")
    return train, held


def extra(run: Path) -> dict:
    return json.loads((run / "manifest.json").read_text())["extra"]


def speedup(teacher: Path, student: Path, held: Path, max_length: int, stride: int) -> tuple[float, float]:
    """Seconds of one pass over the held-out features: teacher, student (the same batches, interleaved)."""
    import torch

    from distil_jobs.qa.features import collate, make_features
    from distil_jobs.qa.models import load_qa, load_qa_tokenizer
    from distil_jobs.qa.squad import load_examples

    models = [load_qa(str(p / "final"), "model")[0].eval() for p in (teacher, student)]
    tok = load_qa_tokenizer(str(teacher / "final"), "model")
    features = make_features(tok, load_examples(str(held)), max_length, stride)
    secs = [0.0, 0.0]
    with torch.inference_mode():
        for b in range(0, len(features), 64):
            batch = collate(features, list(range(b, min(b + 64, len(features)))), tok.pad_token_id, torch.device("cpu"))
            for i, m in enumerate(models):
                t0 = time.perf_counter()
                m(**batch.inputs)
                secs[i] += time.perf_counter() - t0
    return secs[0], secs[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train-questions", type=int, default=1200, help="Questions from the 36 training articles.")
    p.add_argument("--eval-questions", type=int, default=600, help="Questions from the 12 held-out articles.")
    p.add_argument("--eval-articles", type=int, default=12)
    p.add_argument("--teacher-model", default="mpnet")
    p.add_argument("--student-layers", default="0,2,4,7,9,11", help="The teacher's layers the students keep.")
    p.add_argument("--max-length", type=int, default=192)
    p.add_argument("--doc-stride", type=int, default=64)
    p.add_argument("--epochs", type=int, default=1, help="The teacher's epochs.")
    p.add_argument("--student-epochs", default="1,2", help="Train both students for each of these epoch counts.")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", default="out/bench-qa", help="Folder of every artifact (reused on rerun).")
    p.add_argument("--chart", default=None, help="Also copy the chart here (e.g. docs/img/qa.png).")
    args = p.parse_args()

    from distil_jobs.data import data_dir

    work = Path(args.work)
    train, held = inputs(Path(data_dir()), work, args)
    qa = ["--max-length", str(args.max_length), "--doc-stride", str(args.doc_stride)]
    common = [*qa, "--batch-size", "16", "--save-steps", "0", "--eval-steps", "0", "--lr", str(args.lr)]
    teacher, t_logits, e_logits = work / "teacher", work / "logits-train", work / "logits-eval"
    job("prepare-teacher", "--task", "qa", "--model", args.teacher_model, "--input", str(train), "--dev-input",
        str(held), "--output", str(teacher), *common, "--epochs", str(args.epochs))
    for src, out in ((train, t_logits), (held, e_logits)):
        job("precompute-embeddings", "--output-type", "qa_logits", "--input", str(src), "--teacher", str(teacher),
            *qa, "--batch-size", "32", "--output", str(out))
    student = ["--method", "qa", "--targets", str(t_logits), "--dev-input", str(e_logits), "--student", str(teacher),
               "--student-layers", args.student_layers, *common]
    students: list[tuple[int, Path, Path]] = []
    for epochs in (int(e) for e in args.student_epochs.split(",")):
        suffix = "" if epochs == 1 else f"-{epochs}ep"
        gold, kd = work / f"student-gold{suffix}", work / f"student-kd{suffix}"
        job("train-student", *student, "--epochs", str(epochs), "--alpha-ce", "0", "--alpha-qa", "1", "--output",
            str(gold))
        job("train-student", *student, "--epochs", str(epochs), "--output", str(kd))
        students.append((epochs, gold, kd))
    report(work, teacher, students, held, args)
    return 0


def report(work: Path, teacher: Path, students: list[tuple[int, Path, Path]], held: Path,
           args: argparse.Namespace) -> None:
    k = extra(students[0][2])
    t = k["teacher_metrics"]
    layers = json.loads((teacher / "final" / "config.json").read_text())["num_hidden_layers"]
    rows = [(f"teacher ({layers} layers)", t), (f"untrained student ({k['student_num_layers']} layers)",
                                                  k["untrained_metrics"])]
    for epochs, gold, kd in students:
        rows += [(f"student, gold spans only, {epochs} epoch(s)", extra(gold)["final_metrics"]),
                 (f"student, KD, {epochs} epoch(s)", extra(kd)["final_metrics"])]
    print(f"\nheld-out SQuAD v1.1 ({k['eval_questions']} questions of {len(k['eval_articles'])} articles; trained on "
          f"{k['train_questions']} questions of {len(k['train_articles'])} other articles):")
    print("| model | EM | F1 | F1 / teacher |\n|---|---:|---:|---:|")
    for name, m in rows:
        print(f"| {name} | {m['dev_exact_match']:.1f} | {m['dev_f1']:.1f} | {m['dev_f1'] / t['dev_f1']:.3f} |")
    t_s, s_s = speedup(teacher, students[0][2], held, args.max_length, args.doc_stride)
    print(f"\ninference over the held-out features: teacher {t_s:.1f} s, student {s_s:.1f} s → speed-up "
          f"{t_s / s_s:.2f}x")
    chart(work, rows, args.chart)


def chart(work: Path, rows: list[tuple[str, dict]], copy_to: str | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 0.5 * len(rows) + 1))
    names = [r[0] for r in rows][::-1]
    values = [r[1]["dev_f1"] for r in rows][::-1]
    colors = ["#888", "#c66"] + ["#888", "#48c"] * ((len(rows) - 2) // 2)
    ax.barh(names, values, color=colors[::-1])
    ax.set_xlabel("SQuAD F1 on held-out articles")
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:.1f}", va="center")
    fig.tight_layout()
    out = work / "qa.png"
    fig.savefig(out, dpi=120)
    if copy_to:
        shutil.copy(out, copy_to)
    print(f"chart: {out}")


if __name__ == "__main__":
    raise SystemExit(main())
