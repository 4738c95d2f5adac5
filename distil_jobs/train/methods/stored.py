"""Reading a precompute-embeddings artifact that holds one kind of stored teacher output."""

from __future__ import annotations

from typing import Any

from distil_jobs.artifacts import require_artifact
from distil_jobs.errors import DistilError
from distil_jobs.jobs import TEACHER_EMBEDDINGS


def teacher_outputs(uri: str, output_type: str, what: str) -> dict[str, Any]:
    """The artifact's manifest facts (with its teacher and licence); refuses another --output-type.
    `what` names the outputs wanted, e.g. "a QA teacher's logits"."""
    _, manifest = require_artifact(uri, TEACHER_EMBEDDINGS)
    extra = dict(manifest.get("extra") or {})
    if extra.get("output_type") != output_type:
        raise DistilError(f"{uri} holds {extra.get('output_type')} outputs, not {what}: make them with "
                          f"precompute-embeddings --output-type {output_type}")
    extra["teacher"] = (manifest.get("config") or {}).get("teacher")
    extra["license"] = manifest.get("license")
    return extra
