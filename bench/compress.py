"""Benchmark: how much faster the compressed students encode than their teacher (jobs/compress-en.yaml).

Every model encodes the same sentences (held-out WikiText: the end of corpus/sentences_en.tsv, which
the recipe's first 20,000 rows do not reach) at the same batch size and max length, in one process,
one after the other; three rounds, the median of each. The baseline is the teacher, mpnet. Students
are the recipe's outputs when --workdir holds them, else stand-ins of the same shape (MiniLM, and
MiniLM cut to layers 0,3,5): speed depends on the shape, not on the weights.

    python bench/compress.py --workdir out          # after `distil-jobs pipeline run jobs/compress-en.yaml`
    python bench/compress.py --rows 500 --rounds 1  # quick look
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def sentences(rows: int) -> list[str]:
    from distil_jobs.data import data_dir

    lines = (Path(data_dir()) / "corpus" / "sentences_en.tsv").read_text(encoding="utf-8").splitlines()[1:]
    return [line.split("\t", 1)[1] for line in lines[-rows:]]


def load(label: str, ref: str, layers: list[int], max_length: int) -> Any:
    from sentence_transformers import SentenceTransformer

    from distil_jobs.models.registry import resolve_model
    from distil_jobs.train.student import keep_layers

    model = SentenceTransformer(str(resolve_model(ref)), device="cpu")
    if layers:
        keep_layers(model[0].auto_model, layers)
    model.max_seq_length = max_length
    model.eval()
    params = sum(p.numel() for p in model.parameters())
    n_layers = model[0].auto_model.config.num_hidden_layers
    print(f"{label}: {ref}{' layers ' + ','.join(map(str, layers)) if layers else ''}: {n_layers} layers, "
          f"{params / 1e6:.1f} M parameters", flush=True)
    return model


def models(workdir: Path | None) -> list[tuple[str, str, list[int]]]:
    def trained(name: str, layers: list[int]) -> tuple[str, list[int]]:
        final = workdir / name / "final" if workdir else None
        return (str(final), []) if final and (final / "modules.json").exists() else ("minilm", layers)

    six, three = trained("minilm-6l", []), trained("minilm-3l", [0, 3, 5])
    return [("mpnet (teacher, baseline)", "mpnet", []), ("student-6l", *six), ("student-3l", *three)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=None, help="the recipe's workdir (its students are measured)")
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    import torch

    texts = sentences(args.rows)
    loaded = [(label, load(label, ref, layers, args.max_length)) for label, ref, layers in models(args.workdir)]
    for _, model in loaded:  # warm-up: oneDNN builds its kernels on first use of each shape
        model.encode(texts[: args.batch_size * 2], batch_size=args.batch_size)
    seconds: dict[str, list[float]] = {label: [] for label, _ in loaded}
    with torch.inference_mode():
        for _ in range(args.rounds):  # rounds interleave the models, so load drifts hit all alike
            for label, model in loaded:
                start = time.perf_counter()
                model.encode(texts, batch_size=args.batch_size)
                seconds[label].append(time.perf_counter() - start)

    base = statistics.median(seconds[loaded[0][0]])
    print(f"\n{args.rows} sentences, batch {args.batch_size}, max length {args.max_length}, "
          f"{torch.get_num_threads()} threads, median of {args.rounds}")
    print("| model | seconds | sentences/s | speed-up vs mpnet |\n|---|---:|---:|---:|")
    for label, _ in loaded:
        s = statistics.median(seconds[label])
        print(f"| {label} | {s:.1f} | {args.rows / s:.0f} | **{base / s:.2f}×** |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
