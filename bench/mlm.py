"""Benchmark: DistilBERT-style masked-LM distillation, online teacher vs stored top-k logits.

Every step a real job, on the non-WikiText sentences of corpus/sentences_en.tsv (the first
--rows), held-out text = the first --dev-rows of wikitext2_raw_test/sentences.txt:
  count-tokens → prepare-teacher --task mlm --model mpnet --train-encoder (fits the MLM head and
  adapts the encoder to masked-LM: all-mpnet-base-v2's sentence-embedding tuning has degraded its
  token-level predictions, a head-only teacher is worse than its own 6-layer slice) → two students,
  half the teacher's layers (0,2,4,7,9,11), the same budget (--epochs at --lr, KL on the masked
  positions for both):
    online   train-student --method mlm --input ... --teacher TEACHER
    stored   precompute-embeddings --output-type mlm_topk --topk K, then train-student --targets
             (no teacher in memory)
Prints masked-token accuracy and perplexity on the held-out text for the teacher, the untrained
student and both students; the student's inference speed-up (a forward pass over the held-out
text, teacher vs student, side by side); the epoch-time ratio stored/online; and the bytes per
masked position of the top-k artifact against full fp16 logits. Writes the chart; a rerun into the
same --work reuses every finished job.

    python bench/mlm.py                      # 6,000 sentences: ~35 min on 2 cores
    python bench/mlm.py --rows 1000 --dev-rows 200 --work out/bench-mlm-quick
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
LAYERS = "0,2,4,7,9,11"


def job(*args: str) -> float:
    """One distil-jobs command (a finished output with the same settings makes it a no-op); its seconds."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "distil_jobs.cli", *args], check=True, stderr=subprocess.DEVNULL)
    secs = time.perf_counter() - t0
    print(f"  {args[0]} → {args[args.index('--output') + 1]}: {secs:.0f} s", flush=True)
    return secs


def inputs(data: Path, work: Path, rows: int, dev_rows: int) -> tuple[Path, Path]:
    """Training sentences without WikiText (the held-out text is WikiText), and the held-out sentences."""
    work.mkdir(parents=True, exist_ok=True)
    train, dev = work / "train.tsv", work / "dev.txt"
    if not train.exists():
        lines = (data / "corpus" / "sentences_en.tsv").read_text(encoding="utf-8").splitlines()
        kept = [line for line in lines[1:] if not line.startswith("wikitext2_test\t")][:rows]
        train.write_text("\n".join([lines[0], *kept]) + "\n", encoding="utf-8")
        held = (data / "wikitext2_raw_test" / "sentences.txt").read_text(encoding="utf-8").splitlines()[:dev_rows]
        dev.write_text("\n".join(held) + "\n", encoding="utf-8")
    return train, dev


def final(run: Path) -> dict:
    return json.loads((run / "manifest.json").read_text())["extra"]


def train_seconds(run: Path) -> float:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return max(r.get("train_seconds", 0.0) for r in rows)


def speedup(teacher: Path, student: Path, dev: Path, max_length: int) -> tuple[float, float]:
    """Seconds of one forward pass over the held-out text: teacher, student (the same batches, interleaved)."""
    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    texts = dev.read_text(encoding="utf-8").splitlines()
    tok = AutoTokenizer.from_pretrained(teacher / "final")
    models = [AutoModelForMaskedLM.from_pretrained(p / "final").eval() for p in (teacher, student)]
    secs = [0.0, 0.0]
    with torch.inference_mode():
        for b in range(0, len(texts), 64):
            enc = tok(texts[b:b + 64], truncation=True, max_length=max_length, padding=True, return_tensors="pt")
            for i, m in enumerate(models):
                t0 = time.perf_counter()
                m(**enc)
                secs[i] += time.perf_counter() - t0
    return secs[0], secs[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=6000, help="Training sentences.")
    p.add_argument("--dev-rows", type=int, default=1000, help="Held-out WikiText sentences.")
    p.add_argument("--teacher-model", default="mpnet", help="The encoder prepare-teacher fits the head on.")
    p.add_argument("--topk", type=int, default=64)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--max-length", type=int, default=48)
    p.add_argument("--work", default="out/bench-mlm", help="Folder of every artifact (reused on rerun).")
    p.add_argument("--chart", default=None, help="Also copy the chart here (e.g. docs/img/mlm.png).")
    args = p.parse_args()

    from distil_jobs.data import data_dir

    work = Path(args.work)
    train, dev = inputs(Path(data_dir()), work, args.rows, args.dev_rows)
    common = ["--max-length", str(args.max_length), "--batch-size", "32", "--save-steps", "0"]
    counts, teacher = work / "counts", work / "teacher"
    job("count-tokens", "--input", str(train), "--model", args.teacher_model, "--output", str(counts))
    job("prepare-teacher", "--task", "mlm", "--model", args.teacher_model, "--input", str(train), "--output",
        str(teacher), "--token-counts", str(counts), "--dev-input", str(dev), "--train-encoder", "--lr", "1e-4",
        "--epochs", "1",
        "--eval-steps", "0", *common)
    student = ["--method", "mlm", "--student", str(teacher), "--student-layers", LAYERS, "--dev-input", str(dev),
               "--token-counts", str(counts), "--restrict-ce-to-mask", "--lr", str(args.lr), "--epochs",
               str(args.epochs), "--eval-steps", "0", *common]
    online, topk, stored = work / "student-online", work / "topk", work / "student-stored"
    job("train-student", "--input", str(train), "--teacher", str(teacher), "--output", str(online), *student)
    precompute_s = job("precompute-embeddings", "--input", str(train), "--teacher", str(teacher), "--output-type",
                       "mlm_topk", "--topk", str(args.topk), "--token-counts", str(counts), "--max-length",
                       str(args.max_length), "--output", str(topk))
    job("train-student", "--targets", str(topk), "--output", str(stored), *student)
    report(work, teacher, online, stored, topk, dev, args, precompute_s)
    return 0


def report(work: Path, teacher: Path, online: Path, stored: Path, topk: Path, dev: Path, args: argparse.Namespace,
           precompute_s: float) -> None:
    on, st = final(online), final(stored)
    t = on["teacher_metrics"]
    acc, ppl = "dev_masked_accuracy", "dev_perplexity"
    rows = [("teacher (12 layers)", t[acc], t[ppl]),
            ("untrained student (6 layers)", on["untrained_metrics"][acc], on["untrained_metrics"][ppl]),
            ("student, online teacher", on["final_metrics"][acc], on["final_metrics"][ppl]),
            ("student, stored top-k", st["final_metrics"][acc], st["final_metrics"][ppl])]
    print(f"\nheld-out WikiText ({args.dev_rows} sentences), masked-token accuracy / perplexity:")
    print("| model | accuracy | perplexity | accuracy / teacher |\n|---|---:|---:|---:|")
    for name, a, pp in rows:
        print(f"| {name} | {a:.4f} | {pp:.1f} | {a / t[acc]:.3f} |")
    t_s, s_s = speedup(teacher, online, dev, args.max_length)
    on_s, st_s = train_seconds(online), train_seconds(stored)
    manifest = json.loads((topk / "manifest.json").read_text())
    extra = manifest["extra"]
    disk = sum(f["bytes"] for f in manifest["files"])
    positions = _positions(topk)
    print(f"\ninference over the held-out text: teacher {t_s:.1f} s, student {s_s:.1f} s → speed-up {t_s / s_s:.2f}x")
    print(f"training epoch: online teacher {on_s:.0f} s, stored top-k {st_s:.0f} s → ratio stored/online "
          f"{st_s / on_s:.2f} (the top-k precompute, paid once: {precompute_s:.0f} s)")
    print(f"top-{extra['topk']} artifact: {extra['stored_bytes_per_position']} B per masked position in memory, "
          f"{disk / positions:.0f} B on disk (Parquet, all columns), full fp16 logits "
          f"{extra['full_logits_bytes_per_position']} B → {extra['full_logits_bytes_per_position'] / (disk / positions):.0f}x "
          "smaller")
    chart(work, rows, args.chart)


def _positions(topk: Path) -> int:
    from distil_jobs.data import read_table

    return int(sum(len(x) for x in read_table(str(topk)).column("positions").to_pylist()))


def chart(work: Path, rows: list[tuple[str, float, float]], copy_to: str | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3))
    names = [r[0] for r in rows]
    ax.barh(names[::-1], [r[1] for r in rows][::-1], color=["#888", "#c66", "#888", "#48c"][::-1])
    ax.set_xlabel("masked-token accuracy on held-out WikiText")
    for i, r in enumerate(rows[::-1]):
        ax.text(r[1], i, f" {r[1]:.3f}", va="center")
    fig.tight_layout()
    out = work / "mlm.png"
    fig.savefig(out, dpi=120)
    if copy_to:
        shutil.copy(out, copy_to)
    print(f"chart: {out}")


if __name__ == "__main__":
    raise SystemExit(main())
