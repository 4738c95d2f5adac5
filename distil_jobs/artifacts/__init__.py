"""Artifacts: folders of data files plus a manifest, addressed by URI (local, s3://, hf://)."""

from __future__ import annotations

from distil_jobs.artifacts.location import Location, open_location
from distil_jobs.artifacts.manifest import MANIFEST, Manifest, read_manifest, require_artifact
from distil_jobs.artifacts.publish import Publisher

__all__ = ["MANIFEST", "Location", "Manifest", "Publisher", "open_location", "read_manifest", "require_artifact"]
