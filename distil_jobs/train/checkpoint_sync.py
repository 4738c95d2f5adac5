"""The collective side of store checkpoints (checkpoint_store): before training, every node's cache
is made to agree with the store; after the manifest, the store's checkpoints are dropped."""

from __future__ import annotations

import json
import logging
import os
import shutil
from typing import Any

from distil_jobs.artifacts import Location
from distil_jobs.distributed import Rendezvous, io_barrier
from distil_jobs.train.checkpoint_store import CheckpointStore
from distil_jobs.train.guard import BEST, BEST_INFO

log = logging.getLogger("distil_jobs.train.checkpoint_sync")


def _rank0_value(rdzv: Rendezvous, value: Any) -> Any:
    """Rank 0's `value` on every rank: the ranks must agree on which step they resume from."""
    if not rdzv.distributed:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _barrier(rdzv: Rendezvous) -> None:
    if rdzv.distributed:
        io_barrier()  # node leaders may be pulling a large checkpoint


def restore_from_stores(stores: dict[str, CheckpointStore], rdzv: Rendezvous, work_dir: str) -> None:
    """For each local checkpoint root: rank 0 names the store's newest complete step, each node's
    local rank 0 pulls it (unless its cache already holds that very save) and drops any other local
    step. Rank 0 also restores the curve (metrics.jsonl) of a pulled step and the --keep-best record."""
    is_main = (rdzv.rank or 0) == 0
    node_leader = (rdzv.local_rank or 0) == 0
    newest: list[int | None] = []
    if is_main:
        for store in stores.values():
            complete = store.complete_steps()
            newest.append(complete[-1] if complete else None)
    # One decision for every rank, taken before any pull (a pull may outlast --dist-timeout). By
    # position: the local roots differ between nodes, the stores do not.
    newest = _rank0_value(rdzv, newest)
    for (root, store), step in zip(stores.items(), newest, strict=True):
        folder, pulled = store.sync_cache(root, step) if node_leader else (None, False)
        if is_main and folder is not None and pulled:
            curve = os.path.join(folder, "metrics.jsonl")
            if os.path.exists(curve):
                shutil.copyfile(curve, os.path.join(work_dir, "metrics.jsonl"))
        is_best = os.path.basename(root) == BEST
        if is_main and is_best:
            _restore_best_record(root, store.info(step) if step is not None else None)
        if is_main and step is not None:
            log.info("checkpoint store %s: %s step %d", store.uri, "the best so far is" if is_best else "resuming from",
                     step)
    _barrier(rdzv)


def _restore_best_record(root: str, info: dict[str, Any] | None) -> None:
    """--keep-best reads best.json beside the best checkpoint: the store's marker holds it."""
    path = os.path.join(root, BEST_INFO)
    if info is None or "best" not in info:
        if os.path.exists(path):
            os.unlink(path)
        return
    os.makedirs(root, exist_ok=True)
    with open(path, "w") as f:
        json.dump(info["best"], f)


def drop_store_checkpoints(out: Location) -> None:
    """After the manifest: the output keeps its result, not the optimizer states of its checkpoints."""
    store = CheckpointStore.of_output(out)
    if store.loc.exists():
        store.delete_all()
        log.info("removed the checkpoints from %s (the run is published)", store.uri)
