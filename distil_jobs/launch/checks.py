"""Checks before anything is submitted: each bad value is one line naming the fix (exit 2).

Slurm reads some bad values as something else, silently: `--time=0` is no limit, `--mem=0` the
whole node; others are refused only after the job waited in the queue. So they are caught here.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import sys
from typing import TYPE_CHECKING

from distil_jobs.errors import DistilError, first_line

if TYPE_CHECKING:
    from distil_jobs.launch.slurm import LaunchSpec

MAX_MEM_GB = 64 * 1024  # far above any node today: a larger value is a unit mistake (MB given as GB)
_DEPENDENCY = re.compile(r"^(singleton|(after|afterany|afterok|afternotok|aftercorr|afterburstbuffer)"
                         r"(:\d+(_\d+)?(\+\d+)?)+)([,?](singleton|[a-z]+(:\d+(_\d+)?(\+\d+)?)+))*$")


def check_resources(spec: LaunchSpec) -> None:
    """Times, sizes and counts of a launch."""
    counts = {"--nodes": spec.nodes, "--tasks-per-node": spec.tasks_per_node, "--cpus-per-task": spec.cpus_per_task}
    for flag, value in counts.items():
        if value < 1:
            raise DistilError(f"{flag} {value}: must be at least 1")
    if spec.gpus_per_node < 0:
        raise DistilError(f"--gpus-per-node {spec.gpus_per_node}: must be 0 or more")
    if spec.timeout_min < 1:
        raise DistilError(f"--time-min {spec.timeout_min}: must be at least 1 (Slurm reads 0 as no limit)")
    if spec.signal_delay_s < 1 or spec.signal_delay_s >= spec.timeout_min * 60:
        raise DistilError(f"--signal-delay-s {spec.signal_delay_s}: the pre-timeout signal must come between 1 s and "
                          f"the time limit ({spec.timeout_min * 60} s): raise --time-min or lower --signal-delay-s")
    if spec.mem_gb is not None:
        if not math.isfinite(spec.mem_gb) or int(spec.mem_gb * 1024) < 1:
            raise DistilError(f"--mem-gb {spec.mem_gb}: must be at least 1 MB (0.001); leave it out for the "
                              "cluster's default (Slurm reads 0 as the whole node)")
        if spec.mem_gb > MAX_MEM_GB:
            raise DistilError(f"--mem-gb {spec.mem_gb}: more than {MAX_MEM_GB} GB per node; the value is in GB")
    if spec.array is not None and spec.array < 1:
        raise DistilError(f"--array {spec.array}: must be at least 1")
    if spec.array_parallelism is not None:
        if spec.array_parallelism < 1:
            raise DistilError(f"--array-parallelism {spec.array_parallelism}: must be at least 1")
        if not spec.array:
            raise DistilError("--array-parallelism applies to an array: add --array N")
    if spec.dependency is not None and not _DEPENDENCY.match(spec.dependency):
        raise DistilError(f"--dependency {spec.dependency!r}: use Slurm's form, e.g. afterok:1234 or "
                          "afterok:1234:1235,afterany:1236")


def slurm_reachable() -> bool:
    if not shutil.which("sinfo"):
        return False
    try:
        return subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def check_partition(partition: str | None) -> None:
    """The partition exists, when Slurm can be asked (`sinfo`); without Slurm nothing is checked."""
    if not partition or not slurm_reachable():
        return
    shown = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=20).stdout
    known = sorted({p.strip().rstrip("*") for p in shown.split() if p.strip()})
    if partition not in known:
        raise DistilError(f"--partition {partition}: no such partition on this cluster (sinfo lists "
                          f"{', '.join(known) or 'none'}): pass one of them")


def check_pyxis() -> None:
    """`--container-image` needs the pyxis plugin, which adds --container-image to srun."""
    if not shutil.which("srun"):
        return
    try:
        shown = subprocess.run(["srun", "--help"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return
    if shown and "--container-image" not in shown:
        raise DistilError("--container-image needs the pyxis plugin, which this cluster's srun lacks: "
                          "use --apptainer SIF, or ask the admins for pyxis/enroot")


def check_job_flags(job: str, args: tuple[str, ...]) -> None:
    """Resolve the job's config here (--dry-run) so a typo fails now, not after hours in the queue."""
    done = subprocess.run([sys.executable, "-m", "distil_jobs.cli", job, *args, "--dry-run"],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        last = first_line(done.stderr, last=True)
        raise DistilError(f"the {job} flags do not resolve: {last.removeprefix('error: ')}")
