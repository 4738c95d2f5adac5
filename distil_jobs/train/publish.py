"""The end of a run: the student in its method's format under `<output>/final/`, the metrics and
training curve beside it, the manifest last (the run contract's `finish`), and an optional push to the Hub."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from typing import Any

import torch

from distil_jobs.artifacts import Location, open_location
from distil_jobs.artifacts.run import finish
from distil_jobs.errors import DistilError
from distil_jobs.train.nonfinite import require_finite_weights

log = logging.getLogger("distil_jobs.train.publish")


def save_student(method: Any, student: torch.nn.Module, zero3: bool, is_main: bool) -> str:
    """The method writes its student on rank 0 into a staging folder; under ZeRO-3 every rank must
    join the gather of the weights first. Returns the folder ("" on other ranks)."""
    folder = tempfile.mkdtemp(prefix="distil-student-") if is_main else ""
    gathered: Any = contextlib.nullcontext()
    if zero3:
        import deepspeed

        gathered = deepspeed.zero.GatheredParameters(list(student.parameters()), modifier_rank=None)
    with gathered:
        if is_main:
            require_finite_weights(student)  # whatever happened in training, a NaN student is never saved
            method.save(folder)
    return folder


def local_files(root: str, prefix: str) -> list[tuple[str, str]]:
    files = []
    for dirpath, _, names in os.walk(root):
        for name in names:
            local = os.path.join(dirpath, name)
            files.append((local, prefix + os.path.relpath(local, root).replace(os.sep, "/")))
    return sorted(files, key=lambda f: f[1])


def publish_run(out: Location, student_dir: str, extras: list[tuple[str, str]], manifest: Any) -> None:
    """Upload final/ and the run's files (those not already in place), then the manifest listing them."""
    files = local_files(student_dir, "final/") + [(p, rel) for p, rel in extras if os.path.exists(p)]
    pending = [(p, rel) for p, rel in files if not (out.is_local and os.path.abspath(p) == out.path(rel))]
    if finish(out, manifest, pending, listed=[rel for _, rel in files], message="distil-jobs: student model"):
        log.info("student published: %s/final", out.uri)


def push_to_hub(uri: str, student_dir: str, extras: list[tuple[str, str]]) -> None:
    """Upload the student folder to hf://org/name in one commit (token: HF_TOKEN)."""
    if not uri.startswith("hf://"):
        raise DistilError(f"--push-to {uri}: expected hf://org/name")
    target = open_location(uri)
    files = local_files(student_dir, "") + [(p, os.path.basename(rel)) for p, rel in extras if os.path.exists(p)]
    try:
        target.put_files(files, message="distil-jobs: student model")
    except DistilError:
        raise
    except Exception as e:  # auth, network and permission errors all end here
        # Only the exception type and the repo: the message could echo request headers.
        raise DistilError(f"push to {uri} failed ({type(e).__name__}): check HF_TOKEN and that you may write "
                          "to that repo; the model is saved under the output's final/") from None
    log.info("pushed the student to %s", uri)
