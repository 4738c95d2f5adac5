"""Checkpoints under `<work dir>/checkpoints/step-N/`.

Every rank writes into `.tmp-step-N/`; after a barrier rank 0 marks it complete and renames it
to `step-N`, so a folder with that name is always whole. The newest one is resumed from; only
`keep` are kept. The folder must be on storage every node sees (for several nodes).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from typing import Any

import numpy as np
import torch

from distil_jobs.errors import DistilError

COMPLETE = "complete.json"
STEP_NAME = re.compile(r"^step-(\d+)$")  # also the checkpoints on an output's store


def step_dir(root: str, step: int) -> str:
    return os.path.join(root, f"step-{step}")


def tmp_dir(root: str, step: int) -> str:
    return os.path.join(root, f".tmp-step-{step}")


def complete_steps(root: str) -> list[int]:
    if not os.path.isdir(root):
        return []
    steps = []
    for name in os.listdir(root):
        m = STEP_NAME.match(name)
        if m and os.path.exists(os.path.join(root, name, COMPLETE)):
            steps.append(int(m.group(1)))
    return sorted(steps)


def latest(root: str) -> str | None:
    steps = complete_steps(root)
    return step_dir(root, steps[-1]) if steps else None


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_rng(folder: str, rank: int) -> None:
    # Per rank: every rank draws its own dropout masks; DeepSpeed's client_state is only kept by rank 0.
    torch.save(rng_state(), os.path.join(folder, f"rng-rank{rank}.pt"))


def load_rng(folder: str, rank: int) -> None:
    path = os.path.join(folder, f"rng-rank{rank}.pt")
    if not os.path.exists(path):
        raise DistilError(f"checkpoint {folder} has no RNG state for rank {rank}: it was written with another "
                          "world size; resume with the same number of processes or use a new --output")
    set_rng_state(torch.load(path, weights_only=False))


def prepare(root: str, step: int) -> str:
    """Rank 0: an empty temporary folder for the checkpoint of `step`."""
    tmp = tmp_dir(root, step)
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp, exist_ok=True)
    return tmp


def publish(root: str, step: int, info: dict[str, Any], keep: int) -> str:
    """Rank 0, after every rank wrote its part: mark complete, rename into place, prune old ones."""
    tmp, final = tmp_dir(root, step), step_dir(root, step)
    with open(os.path.join(tmp, COMPLETE), "w") as f:
        json.dump(info, f, indent=2, sort_keys=True)
    if os.path.exists(final):
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in complete_steps(root)[:-keep] if keep > 0 else []:
        shutil.rmtree(step_dir(root, old), ignore_errors=True)
    return final


def read_info(folder: str) -> dict[str, Any]:
    with open(os.path.join(folder, COMPLETE)) as f:
        return json.load(f)
