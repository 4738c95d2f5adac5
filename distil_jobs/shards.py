"""Which slice of the input this process handles: from flags, Slurm arrays or Kubernetes Indexed Jobs."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from distil_jobs.errors import DistilError


@dataclass(frozen=True, slots=True)
class Shard:
    index: int
    count: int
    source: str

    def row_range(self, total: int) -> tuple[int, int]:
        """Contiguous rows [start, end): output files sort into input order whatever the shard count."""
        return total * self.index // self.count, total * (self.index + 1) // self.count

    @property
    def tag(self) -> str:
        return f"shard-{self.index:05d}-of-{self.count:05d}"


def resolve_shard(index: int | None, count: int | None, env: Mapping[str, str] | None = None) -> Shard:
    """Flags win; else a Slurm array task; else a Kubernetes Indexed Job (JOB_COMPLETION_INDEX, with
    --num-shards = completions).

    A Slurm array task with --num-shards N is shard SLURM_ARRAY_TASK_ID of N, whatever else the array
    holds, so `sbatch --array=3 ... --num-shards 8` redoes exactly shard 3. Without --num-shards the
    array itself is the shard set: shard ID - SLURM_ARRAY_TASK_MIN of SLURM_ARRAY_TASK_COUNT.
    """
    env = os.environ if env is None else env
    source = "flags"
    if index is None and "SLURM_ARRAY_TASK_ID" in env:
        task_id = int(env["SLURM_ARRAY_TASK_ID"])
        if count is not None:
            index = task_id
        else:
            index = task_id - int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
            if "SLURM_ARRAY_TASK_COUNT" in env:
                count = int(env["SLURM_ARRAY_TASK_COUNT"])
        source = "slurm-array"
    elif index is None and "JOB_COMPLETION_INDEX" in env:
        index = int(env["JOB_COMPLETION_INDEX"])
        source = "k8s-indexed-job"
        if count is None:
            raise DistilError("JOB_COMPLETION_INDEX is set but the shard count is not: pass --num-shards (= completions)")
    count = 1 if count is None else count
    index = 0 if index is None else index
    if source == "flags" and index == 0 and count == 1:
        source = "single"
    if count < 1:
        raise DistilError(f"--num-shards {count}: must be at least 1")
    if not 0 <= index < count and source == "slurm-array":
        raise DistilError(f"array task {index} is out of range for {count} shard(s): submit with --array=0-{count - 1} "
                          "(or a subset of it)")
    if not 0 <= index < count:
        raise DistilError(f"shard index {index} is out of range for {count} shard(s): use 0..{count - 1}")
    return Shard(index, count, source)
