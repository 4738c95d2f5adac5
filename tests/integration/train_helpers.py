"""Shared set-up for the train-student tests: a tiny real targets artifact and common flags."""

from __future__ import annotations

import json
from pathlib import Path

# A 2-layer slice of MiniLM, short texts, small batches: seconds per run on 2 CPU cores.
STUDENT = ["--student", "minilm", "--student-layers", "0,1", "--max-length", "32", "--batch-size", "16"]


def make_targets(cli, data_path: Path, folder: Path, rows: int = 200) -> Path:
    """MENYO en/yo pairs with MiniLM's (float32) embeddings of the English side, via precompute-embeddings."""
    from tests.conftest import head_jsonl

    src = head_jsonl(data_path / "menyo20k" / "train.jsonl", folder / "menyo20k" / "train.jsonl", rows)
    out = folder / "targets"
    cli("precompute-embeddings", "--input", str(src), "--text-column", "en", "--pair-column", "yo",
        "--teacher", "minilm", "--dtype", "float32", "--max-length", "64", "--output", str(out), check=True)
    return out


def raw_input(targets: Path) -> Path:
    """The raw rows the targets were computed from."""
    return targets.parent / "menyo20k" / "train.jsonl"


def metrics(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines() if line.strip()]


def evals(output: Path) -> list[dict]:
    return [r for r in metrics(output) if "dev_mse" in r]


def losses(output: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in metrics(output) if "loss" in r}
