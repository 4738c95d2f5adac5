"""The store side of checkpoints (train/checkpoint_store.py) on a local Location: the same code
runs on s3:// and hf:// (tests/infra/test_checkpoint_s3.py runs it through training on SeaweedFS)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distil_jobs.artifacts import open_location
from distil_jobs.train import checkpoints
from distil_jobs.train.checkpoint_store import DONE, CheckpointStore, owner


def write_step(folder: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    return folder


def saved(store: CheckpointStore, tmp: Path, step: int, world: int = 1, done: bool = True) -> None:
    """What Trainer.save does on the store: every rank uploads its files, then rank 0 marks the step."""
    files = {"state.pt": f"weights {step}".encode()} | {f"rng-rank{r}.pt": f"rng {r}".encode() for r in range(world)}
    folder = write_step(tmp / f"local-{step}", files)
    for rank in range(world):
        store.upload(str(folder), step, rank)
    if done:
        store.mark_done(step, {"step": step, "world_size": world})


@pytest.fixture()
def store(tmp_path: Path) -> CheckpointStore:
    return CheckpointStore.of_output(open_location(str(tmp_path / "out")))


def test_each_rank_uploads_only_the_files_it_wrote():
    assert owner("rng-rank3.pt") == 3 and owner("state.pt") == 0
    assert owner("state/zero_pp_rank_5_mp_rank_00_optim_states.pt") == 5  # DeepSpeed ZeRO, per rank
    assert owner("state/bf16_zero_pp_rank_2_mp_rank_00_optim_states.pt") == 2
    assert owner("state/mp_rank_00_model_states.pt") == 0 and owner("latest") == 0


def test_a_step_without_its_done_marker_is_ignored(store, tmp_path):
    saved(store, tmp_path, 4)
    saved(store, tmp_path, 8, done=False)  # killed between the uploads and the marker
    assert store.steps() == [4, 8]
    assert store.complete_steps() == [4]

    cache = tmp_path / "cache"
    folder, pulled = store.sync_cache(str(cache), store.complete_steps()[-1])
    assert pulled and Path(folder).name == "step-4"
    assert (Path(folder) / "state.pt").read_bytes() == b"weights 4"
    assert checkpoints.read_info(folder) == {"step": 4, "world_size": 1}  # the marker's info, for resume
    assert checkpoints.latest(str(cache)) == folder


def test_ranks_on_separate_nodes_make_one_whole_step(store, tmp_path):
    # Two nodes, no shared folder: each node's folder holds only its rank's files.
    node0 = write_step(tmp_path / "n0", {"state.pt": b"w", "rng-rank0.pt": b"r0"})
    node1 = write_step(tmp_path / "n1", {"rng-rank1.pt": b"r1"})
    assert store.upload(str(node0), 2, rank=0) == 2 and store.upload(str(node1), 2, rank=1) == 1
    store.mark_done(2, {"step": 2, "world_size": 2})
    folder, _ = store.sync_cache(str(tmp_path / "fresh"), 2)
    assert sorted(p.name for p in Path(folder).iterdir()) == [checkpoints.COMPLETE, "rng-rank0.pt", "rng-rank1.pt",
                                                             "state.pt"]


def test_pruning_keeps_the_newest_n_and_removes_markers_first(store, tmp_path):
    for step in (2, 4, 6, 8):
        saved(store, tmp_path, step)
    saved(store, tmp_path, 5, done=False)  # a leftover of a killed save, older than what is kept
    assert store.prune(2) == [2, 4, 5]
    assert store.steps() == [6, 8] == store.complete_steps()
    saved(store, tmp_path, 10)
    store.prune(2)
    assert store.complete_steps() == [8, 10]


def test_the_cache_is_only_a_cache(store, tmp_path):
    """A local copy of the same save is used as is; anything else is replaced by what the store says."""
    cache = tmp_path / "cache"
    saved(store, tmp_path, 4)
    folder, pulled = store.sync_cache(str(cache), 4)
    assert pulled
    folder, pulled = store.sync_cache(str(cache), 4)
    assert not pulled and folder == checkpoints.step_dir(str(cache), 4)

    (cache / "step-12").mkdir()  # a stale cache of another attempt: not on the store, so not resumed
    (cache / "step-12" / checkpoints.COMPLETE).write_text(json.dumps({"step": 12}))
    (cache / ".tmp-step-16").mkdir()
    store.mark_done(4, {"step": 4, "world_size": 1, "save_id": "another save"})  # the store's step 4 changed
    folder, pulled = store.sync_cache(str(cache), 4)
    assert pulled and sorted(p.name for p in cache.iterdir()) == ["step-4"]

    assert store.sync_cache(str(cache), None) == (None, False)  # nothing on the store: start from step 0
    assert list(cache.iterdir()) == []


def test_delete_all_leaves_no_checkpoint_folder(store, tmp_path):
    saved(store, tmp_path, 2)
    saved(store, tmp_path, 4)
    store.delete_all()
    assert not store.loc.exists() and store.complete_steps() == []
    assert not (tmp_path / "out" / "checkpoints" / "step-4" / DONE).exists()
