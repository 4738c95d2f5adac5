"""Shard resolution from flags, Slurm arrays and Kubernetes Indexed Jobs."""

from __future__ import annotations

import pytest

from distil_jobs.errors import DistilError
from distil_jobs.shards import Shard, resolve_shard


def test_flags_win_over_scheduler_env():
    env = {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4"}
    assert resolve_shard(1, 2, env) == Shard(1, 2, "flags")


def test_slurm_array_offset_by_task_min():
    # sbatch --array=10-13: ids 10..13, count 4
    env = {"SLURM_ARRAY_TASK_ID": "12", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "10"}
    assert resolve_shard(None, None, env) == Shard(2, 4, "slurm-array")


def test_with_num_shards_the_array_task_id_is_the_shard_index():
    # The documented rerun of one shard: `sbatch --array=3 slurm/precompute.sbatch ... --num-shards 8`.
    env = {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "1", "SLURM_ARRAY_TASK_MIN": "3"}
    assert resolve_shard(None, 8, env) == Shard(3, 8, "slurm-array")
    assert resolve_shard(None, None, env) == Shard(0, 1, "slurm-array")  # without it: the array is the shard set
    # --array=0-7 with --num-shards 8 is the same as without it.
    assert resolve_shard(None, 8, {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "8"}) == Shard(5, 8, "slurm-array")


def test_an_array_task_beyond_num_shards_names_the_array_to_submit():
    with pytest.raises(DistilError, match=r"array task 9 is out of range for 8 shard\(s\): submit with --array=0-7"):
        resolve_shard(None, 8, {"SLURM_ARRAY_TASK_ID": "9", "SLURM_ARRAY_TASK_COUNT": "10"})


def test_kubernetes_indexed_job_needs_the_shard_count():
    assert resolve_shard(None, 3, {"JOB_COMPLETION_INDEX": "2"}) == Shard(2, 3, "k8s-indexed-job")
    with pytest.raises(DistilError, match="pass --num-shards"):
        resolve_shard(None, None, {"JOB_COMPLETION_INDEX": "2"})


def test_index_out_of_range_is_an_error():
    with pytest.raises(DistilError, match=r"shard index 2 is out of range for 2 shard\(s\): use 0\.\.1"):
        resolve_shard(2, 2, {})


@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_row_ranges_cover_every_row_once(count):
    ranges = [Shard(i, count, "flags").row_range(100) for i in range(count)]
    rows = [r for start, end in ranges for r in range(start, end)]
    assert rows == list(range(100))
