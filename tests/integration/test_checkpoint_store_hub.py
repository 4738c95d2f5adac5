"""Checkpoints on an hf:// output, through the local Hub stand-in: the same store logic as on S3
(tests/infra/test_checkpoint_s3.py), with uploads as commits and old steps deleted as folders."""

from __future__ import annotations

from pathlib import Path

from distil_jobs.artifacts import open_location
from distil_jobs.train import checkpoints
from distil_jobs.train.checkpoint_store import CheckpointStore


def test_hub_checkpoints_are_complete_pruned_and_pulled(local_hub, tmp_path):
    store = CheckpointStore.of_output(open_location("hf://me/run"))
    for step in (4, 8, 12):
        local = tmp_path / f"local-{step}"
        local.mkdir()
        (local / "state.pt").write_bytes(f"weights {step}".encode())
        (local / "rng-rank1.pt").write_bytes(b"rank 1")
        store.upload(str(local), step, rank=0)
        store.upload(str(local), step, rank=1)
        if step != 12:  # step 12: killed before its marker
            store.mark_done(step, {"step": step, "world_size": 2})
    assert store.complete_steps() == [4, 8]
    assert local_hub.commits[0]["files"] == ["checkpoints/step-4/state.pt"]  # rank 0's files only

    assert store.prune(1) == [4]
    repo = local_hub.root / "me" / "run" / "checkpoints"
    assert sorted(p.name for p in repo.iterdir()) == ["step-12", "step-8"]

    folder, pulled = store.sync_cache(str(tmp_path / "cache"), store.complete_steps()[-1])
    assert pulled and checkpoints.read_info(folder)["step"] == 8
    assert (Path(folder) / "state.pt").read_bytes() == b"weights 8" and (Path(folder) / "rng-rank1.pt").exists()

    store.delete_all()
    assert store.complete_steps() == [] and not repo.exists()
