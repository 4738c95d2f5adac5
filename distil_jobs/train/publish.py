"""The end of a run: the student as a SentenceTransformer folder under `<output>/final/`, the
metrics and training curve beside it, the manifest last, and an optional push to the Hub."""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Any

from distil_jobs.artifacts import MANIFEST, Location, open_location
from distil_jobs.artifacts.manifest import file_entries, new_manifest
from distil_jobs.errors import DistilError

log = logging.getLogger("distil_jobs.train.publish")
KIND = "student-model"


def save_student(student: Any, folder: str, zero3: bool, is_main: bool) -> None:
    """Write the student on rank 0. Under ZeRO-3 every rank must join the gather of the weights."""
    if zero3:
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(student.parameters()), modifier_rank=None):
            if is_main:
                student.save(folder)
    elif is_main:
        student.save(folder)


def _local_files(root: str, prefix: str) -> list[tuple[str, str]]:
    files = []
    for dirpath, _, names in os.walk(root):
        for name in names:
            local = os.path.join(dirpath, name)
            files.append((local, prefix + os.path.relpath(local, root).replace(os.sep, "/")))
    return sorted(files, key=lambda f: f[1])


def publish_run(out: Location, student_dir: str, extras: list[tuple[str, str]], job: str, config: dict[str, Any],
                inputs: list[dict[str, Any]], rows: int, license: str | None, **extra: Any) -> None:
    """Upload final/ and the run's files, then write the manifest (exactly once)."""
    files = _local_files(student_dir, "final/") + [(p, rel) for p, rel in extras if os.path.exists(p)]
    # Copy everything that is not already in place (metrics.jsonl lives in the output when it is local).
    pending = [(p, rel) for p, rel in files if not (out.is_local and os.path.abspath(p) == out.path(rel))]
    out.put_files(pending, message="distil-jobs: student model")
    manifest = new_manifest(KIND, job, config, inputs, rows, file_entries(out, [rel for _, rel in files]),
                            license, **extra)
    if out.create_exclusive(MANIFEST, manifest.to_json()):
        log.info("student published: %s/final (manifest %s/%s)", out.uri, out.uri, MANIFEST)
    else:
        log.info("%s already had a manifest: left as it was", out.uri)


def push_to_hub(uri: str, student_dir: str, extras: list[tuple[str, str]]) -> None:
    """Upload the SentenceTransformer folder to hf://org/name in one commit (token: HF_TOKEN)."""
    if not uri.startswith("hf://"):
        raise DistilError(f"--push-to {uri}: expected hf://org/name")
    target = open_location(uri)
    files = _local_files(student_dir, "") + [(p, os.path.basename(rel)) for p, rel in extras if os.path.exists(p)]
    try:
        target.put_files(files, message="distil-jobs: student model")
    except DistilError:
        raise
    except Exception as e:  # auth, network and permission errors all end here
        # Only the exception type and the repo: the message could echo request headers.
        raise DistilError(f"push to {uri} failed ({type(e).__name__}): check HF_TOKEN and that you may write "
                          "to that repo; the model is saved under the output's final/") from None
    log.info("pushed the student to %s", uri)


def staging_dir() -> str:
    return tempfile.mkdtemp(prefix="distil-student-")
