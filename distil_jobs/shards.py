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
    """Flags win; else a Slurm array task (SLURM_ARRAY_TASK_ID/COUNT, offset by TASK_MIN);
    else a Kubernetes Indexed Job (JOB_COMPLETION_INDEX, with --num-shards = completions)."""
    env = os.environ if env is None else env
    source = "flags"
    if index is None and "SLURM_ARRAY_TASK_ID" in env:
        task_min = int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
        index = int(env["SLURM_ARRAY_TASK_ID"]) - task_min
        if count is None and "SLURM_ARRAY_TASK_COUNT" in env:
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
    if not 0 <= index < count:
        raise DistilError(f"shard index {index} is out of range for {count} shard(s): use 0..{count - 1}")
    return Shard(index, count, source)
