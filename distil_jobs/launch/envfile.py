"""Secrets for a Slurm job from a file (`submit --env-file`, `DISTIL_ENV_FILE` in slurm/*.sbatch).

Only the file's path travels with the job: it is read on the node, just before the job starts, so
HF_TOKEN, WANDB_API_KEY or AWS keys are never in the sbatch script, submitit's pickles or any log.
The file must be readable by its owner only (mode 600), as ssh demands of a private key.

Format: `KEY=VALUE` lines, as a shell would `source` them (`export KEY=VALUE`, quoted values and
`#` comments are fine); no variable expansion.
"""

from __future__ import annotations

import re
import stat
from pathlib import Path

from distil_jobs.errors import DistilError

_LINE = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$")


def check_env_file(path: str | Path) -> Path:
    """The absolute path of a usable env file, or a one-line error naming the fix."""
    p = Path(path).expanduser().absolute()
    if not p.is_file():
        raise DistilError(f"--env-file {path}: no such file: create it with KEY=VALUE lines, then chmod 600 {path}")
    mode = stat.S_IMODE(p.stat().st_mode)
    if mode & 0o077:
        raise DistilError(f"--env-file {path} is readable by others (mode {mode:o}): chmod 600 {path}")
    read_env_file(p)  # a malformed line fails now, not on the node
    return p


def read_env_file(path: str | Path) -> dict[str, str]:
    """KEY=VALUE pairs; a bad line is named by number only (it may hold a secret)."""
    env: dict[str, str] = {}
    for number, raw in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if not m:
            raise DistilError(f"--env-file {path}: line {number} is not KEY=VALUE")
        value = m.group(2).strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[m.group(1)] = value
    return env
