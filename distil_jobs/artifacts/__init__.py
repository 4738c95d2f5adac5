"""Artifacts: folders of data files plus a manifest, addressed by URI (local, s3://, hf://).

- `location`: where an artifact lives and atomic writes there;
- `manifest`: what made an artifact, written last;
- `run`: the run contract every job follows (claim, shards, manifest);
- `chunks`: sharded, resumable Parquet output for jobs that map rows to rows.
"""

from __future__ import annotations

from distil_jobs.artifacts.location import Location, open_location
from distil_jobs.artifacts.manifest import MANIFEST, Manifest, read_manifest, require_artifact

__all__ = ["MANIFEST", "Location", "Manifest", "open_location", "read_manifest", "require_artifact"]
