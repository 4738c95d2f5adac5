"""Held-out scores of sentence encoders for the Yoruba recipe: what a user of the student cares about.

  python bench/yoruba_eval.py minilm mpnet out/menyo-student [--label a,b,c] [--json out.json]

For each model (alias, folder or train-student output), on data no recipe trains on:
- MENYO-20k test, first 2,000 pairs: en→yo and yo→en top-1 retrieval, in-batch over those 2,000;
- STS-B test (English, 1,379 pairs): Spearman of cosine similarity against the gold scores;
- AfriSenti-yor: accuracy of a logistic regression on the embeddings (train: a seeded sample of 2,000
  rows of the train split, test: 2,000 of the test split; the files are sorted by label), as MTEB's
  classification tasks do.
Each model is loaded the way the jobs load it; timings are printed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distil_jobs.data import data_dir

ROWS = 2000


def _jsonl(path: Path, n: int | None = None) -> list[dict[str, Any]]:
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if n is not None and len(out) >= n:
                break
            out.append(json.loads(line))
    return out


def _sample(rows: list[dict[str, Any]], n: int, seed: int = 42) -> list[dict[str, Any]]:
    return [rows[i] for i in np.sort(np.random.default_rng(seed).permutation(len(rows))[:n])]


def load_model(ref: str) -> Any:
    from distil_jobs.models.loading import load_sentence_transformer
    from distil_jobs.models.registry import resolve_model

    st, _ = load_sentence_transformer(resolve_model(ref), f"model {ref}", "cpu")
    st.max_seq_length = min(st.max_seq_length or 128, 128)
    return st


def encode(st: Any, texts: list[str]) -> np.ndarray:
    emb = st.encode(texts, batch_size=64, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False)
    return np.asarray(emb, dtype=np.float32)


def scores(st: Any, data: Path, rows: int = ROWS, sts_rows: int | None = None, afrisenti: bool = True
           ) -> dict[str, float]:
    """The held-out scores above; `rows`, `sts_rows` and `afrisenti` shrink them for a test."""
    from scipy.stats import spearmanr
    from sklearn.linear_model import LogisticRegression

    menyo = _jsonl(data / "menyo20k" / "test.jsonl", rows)
    en, yo = encode(st, [r["en"] for r in menyo]), encode(st, [r["yo"] for r in menyo])
    sim = en @ yo.T
    truth = np.arange(len(menyo))
    out = {"menyo_en2yo_top1": float((sim.argmax(1) == truth).mean()),
           "menyo_yo2en_top1": float((sim.argmax(0) == truth).mean())}
    sts = _jsonl(data / "stsb" / "test.jsonl", sts_rows)
    a, b = encode(st, [r["sentence1"] for r in sts]), encode(st, [r["sentence2"] for r in sts])
    out["stsb_spearman"] = float(spearmanr((a * b).sum(1), [r["score"] for r in sts]).statistic)
    if not afrisenti:
        return out
    # The files are sorted by label: a seeded sample of each split, not its first rows.
    train, test = (_sample(_jsonl(data / "afrisenti_yor" / f"{split}.jsonl"), ROWS) for split in ("train", "test"))
    clf = LogisticRegression(max_iter=1000)
    clf.fit(encode(st, [r["text"] for r in train]), [r["label"] for r in train])
    out["afrisenti_accuracy"] = float(clf.score(encode(st, [r["text"] for r in test]), [r["label"] for r in test]))
    return out


METRICS = (("menyo_en2yo_top1", "MENYO en→yo top-1"), ("menyo_yo2en_top1", "MENYO yo→en top-1"),
           ("stsb_spearman", "STS-B Spearman"), ("afrisenti_accuracy", "AfriSenti accuracy"))


def plot(results: dict[str, dict[str, float]], path: str) -> None:
    """One panel per metric, one bar per model, the untrained student's value as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(results)
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4 * len(METRICS), 0.35 * len(labels) + 1.6), sharey=True)
    for ax, (key, title) in zip(axes, METRICS, strict=True):
        values = [results[m].get(key, float("nan")) for m in labels]
        ax.barh(range(len(labels)), values, color="#4c72b0")
        if "minilm" in results:
            ax.axvline(results["minilm"][key], color="#c44e52", linestyle="--", linewidth=1)
        lo = min(v for v in values if v == v)
        ax.set_xlim(max(0.0, lo - 0.05), max(values) + 0.02)
        ax.set_title(title, fontsize=10)
        for i, v in enumerate(values):
            ax.text(v, i, f" {v:.3f}", va="center", fontsize=7)
    axes[0].set_yticks(range(len(labels)), labels, fontsize=8)
    axes[0].invert_yaxis()
    fig.suptitle("Yoruba recipe, held-out scores (dashed: untrained MiniLM)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("models", nargs="*", help="Models to score (none: only --plot what --json holds).")
    p.add_argument("--label", default=None, help="Comma-separated labels, one per model.")
    p.add_argument("--json", default=None, help="Also write the scores here (merged into an existing file).")
    p.add_argument("--plot", default=None, help="Draw every model in --json (or this run) into this PNG.")
    a = p.parse_args()
    labels = a.label.split(",") if a.label else a.models
    data = Path(data_dir())
    results = json.loads(Path(a.json).read_text()) if a.json and Path(a.json).exists() else {}
    print(f"{'model':28} {'en→yo':>7} {'yo→en':>7} {'STS-B':>7} {'AfriSenti':>9} {'seconds':>8}")
    for ref, label in zip(a.models, labels, strict=True):
        t0 = time.perf_counter()
        r = scores(load_model(ref), data)
        r["eval_seconds"] = round(time.perf_counter() - t0, 1)
        results[label] = r
        print(f"{label:28} {r['menyo_en2yo_top1']:7.3f} {r['menyo_yo2en_top1']:7.3f} {r['stsb_spearman']:7.3f} "
              f"{r['afrisenti_accuracy']:9.3f} {r['eval_seconds']:8.1f}", flush=True)
        if a.json:
            Path(a.json).write_text(json.dumps(results, indent=2, sort_keys=True))
    if a.plot:
        plot(results, a.plot)


if __name__ == "__main__":
    main()
