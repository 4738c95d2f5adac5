"""Running every Slurm job of `distil-jobs submit` inside a container.

Two ways, as clusters offer them:
- pyxis/enroot (`--container-image IMAGE`): `srun --container-image` starts submitit's own Python
  inside the image (the image has distil-jobs and submitit: the `slurm` extra), so the job and its
  launcher share one environment. submitit's folder (pickles, logs) and the env file are mounted
  at the same paths, plus any `--container-mounts`.
- Apptainer (`--apptainer SIF`): submitit runs on the node as usual and starts the job as
  `apptainer exec [--nv] SIF distil-jobs <job> ...`; Apptainer passes the environment through
  (the env file's secrets included) and binds $HOME, /tmp and the working folder by itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from distil_jobs.errors import DistilError


@dataclass(frozen=True, slots=True)
class Container:
    image: str | None = None  # pyxis: an enroot image URI (nvcr.io#nvidia/pytorch:24.05-py3) or .sqsh path
    sif: str | None = None  # Apptainer/Singularity image file
    mounts: tuple[str, ...] = ()  # SRC[:DST[:FLAGS]], as pyxis's --container-mounts and apptainer's --bind take
    python: str = "python3"  # the Python inside a pyxis image that runs submitit

    def __post_init__(self) -> None:
        if self.image and self.sif:
            raise DistilError("--container-image and --apptainer both given: pick one (pyxis or Apptainer)")
        if self.mounts and not (self.image or self.sif):
            raise DistilError("--container-mounts needs --container-image or --apptainer")
        for m in self.mounts:
            if not m or "," in m or not m.split(":")[0].startswith("/"):
                raise DistilError(f"--container-mounts {m!r}: give one absolute SRC[:DST[:ro]] per option")
        if self.sif and not Path(self.sif).expanduser().is_file():
            raise DistilError(f"--apptainer {self.sif}: no such image file: build one, e.g. "
                              f"apptainer build {self.sif} docker-daemon://distil-jobs:cpu")

    @property
    def pyxis(self) -> bool:
        return bool(self.image)

    def srun_args(self, folder: str | Path, env_file: str | None = None) -> list[str]:
        """pyxis options for the srun that starts submitit (none for Apptainer)."""
        if not self.image:
            return []
        base = str(folder).split("%j")[0].rstrip("/") or "/"
        mounts = [f"{base}:{base}", *([f"{env_file}:{env_file}:ro"] if env_file else []), *self.mounts]
        return [f"--container-image={self.image}", f"--container-mounts={','.join(mounts)}"]

    def launcher(self, gpus: bool) -> tuple[str, ...]:
        """The prefix that runs `distil-jobs` in the container (none for pyxis: submitit already is)."""
        if not self.sif:
            return ()
        binds = [a for m in self.mounts for a in ("--bind", m)]
        return ("apptainer", "exec", *(["--nv"] if gpus else []), *binds, str(Path(self.sif).expanduser().absolute()))
