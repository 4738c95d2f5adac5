"""The manifest: what made an artifact, from what, with which config and code. Written last.

A folder without `manifest.json` is not an artifact yet; readers refuse it unless asked for a
partial read (`--allow-partial`), which lists the chunks in `progress.json` instead.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import subprocess
from dataclasses import asdict, dataclass, field
from typing import Any

from distil_jobs import __version__
from distil_jobs.artifacts.location import Location, is_temporary, open_location
from distil_jobs.errors import DistilError

MANIFEST = "manifest.json"
PROGRESS = "progress.json"
SCHEMA_VERSION = 1
_LIBRARIES = ("torch", "transformers", "sentence-transformers", "datasets", "pyarrow", "huggingface-hub",
              "deepspeed", "mteb")
# Folders that hold a job's bookkeeping, not its data.
PRIVATE_PREFIXES = ("_tmp/", "_shards/")


@dataclass(slots=True)
class Manifest:
    kind: str
    job: str
    config: dict[str, Any]
    inputs: list[dict[str, Any]]
    rows: int | None
    files: list[dict[str, Any]]
    license: str | None = None
    fingerprint: dict[str, Any] = field(default_factory=dict)  # the settings the run was claimed with
    extra: dict[str, Any] = field(default_factory=dict)
    code: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> bytes:
        # Strict JSON: a NaN or inf metric is refused here rather than written as bare NaN.
        return json.dumps(asdict(self), indent=2, sort_keys=True, default=str, allow_nan=False).encode()


def code_version() -> dict[str, Any]:
    libs = {}
    for name in _LIBRARIES:
        try:
            libs[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return {"distil_jobs": __version__, "git_commit": _git_commit(), "python": platform.python_version(),
            "libraries": libs}


def _git_commit() -> str | None:
    # DISTIL_GIT_COMMIT wins; images bake the commit into the package (GIT_COMMIT, written by the
    # Dockerfile's package stage); a source checkout asks git.
    if os.environ.get("DISTIL_GIT_COMMIT"):
        return os.environ["DISTIL_GIT_COMMIT"]
    baked = os.path.join(os.path.dirname(os.path.dirname(__file__)), "GIT_COMMIT")
    if os.path.exists(baked):
        with open(baked) as f:
            return f.read().strip() or None
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=os.path.dirname(__file__), capture_output=True,
                             text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def sha256_of(loc: Location, rel: str) -> str:
    h = hashlib.sha256()
    with loc.fs.open(loc.path(rel), "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def list_files(loc: Location) -> list[str]:
    """Every data file under the root, relative, excluding the manifest and bookkeeping."""
    root = loc.root.rstrip("/")
    found = loc.fs.find(root) if loc.scheme == "file" else loc.fs.find(root, refresh=True)
    # A Hub filesystem may drop the "@revision" of the root from the paths it returns.
    roots = (root + "/", re.sub(r"@[^/]+", "", root, count=1) + "/")
    rels = [next((str(p)[len(r):] for r in roots if str(p).startswith(r)), "") for p in found]
    return sorted(r for r in rels if r and r != MANIFEST and not r.startswith(PRIVATE_PREFIXES)
                  and not is_temporary(r))


def file_entries(loc: Location, rels: list[str] | None = None) -> list[dict[str, Any]]:
    rels = list_files(loc) if rels is None else rels
    return [{"path": r, "bytes": loc.size(r), "sha256": sha256_of(loc, r)} for r in rels]


def input_ref(uri: str, role: str) -> dict[str, Any]:
    """How a manifest names an input: its URI and, if it is an artifact, its manifest's hash."""
    ref: dict[str, Any] = {"role": role, "uri": uri}
    try:
        loc = open_location(uri)
        if loc.exists(MANIFEST):
            raw = loc.read_bytes(MANIFEST)
            ref["manifest_sha256"] = hashlib.sha256(raw).hexdigest()
            ref["kind"] = json.loads(raw).get("kind")
    except (OSError, DistilError, ValueError):
        pass
    return ref


def new_manifest(kind: str, job: str, config: dict[str, Any], inputs: list[dict[str, Any]], rows: int | None,
                 files: list[dict[str, Any]] | None = None, license: str | None = None,
                 fingerprint: dict[str, Any] | None = None, **extra: Any) -> Manifest:
    """A manifest to publish with `run.finish`, which fills in `files` from what the output holds."""
    return Manifest(kind=kind, job=job, config=config, inputs=inputs, rows=rows, files=files or [], license=license,
                    fingerprint=fingerprint or {}, extra=extra, code=code_version(),
                    created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))


def read_manifest(uri: str | Location) -> dict[str, Any] | None:
    loc = open_location(uri) if isinstance(uri, str) else uri
    if not loc.exists(MANIFEST):
        return None
    try:
        manifest = json.loads(loc.read_bytes(MANIFEST))
    except ValueError:  # JSONDecodeError and UnicodeDecodeError: a torn or overwritten file
        manifest = None
    if not isinstance(manifest, dict):
        raise DistilError(f"{loc.uri}/{MANIFEST} is not valid JSON (a damaged artifact): rerun the job that wrote "
                          "it into a new output")
    return manifest


def require_artifact(uri: str, kind: str | None = None, allow_partial: bool = False) -> tuple[Location, dict[str, Any]]:
    """Open an artifact for reading. Without a manifest it is refused (or read partially if allowed)."""
    loc = open_location(uri)
    manifest = read_manifest(loc)
    if manifest is None:
        if allow_partial and loc.exists(PROGRESS):
            progress = loc.read_json(PROGRESS)
            return loc, {"kind": progress.get("kind"), "partial": True, "files": progress.get("files", []),
                         "rows": progress.get("rows"), "total_rows": progress.get("total_rows")}
        if not loc.exists():
            raise DistilError(f"{uri} does not exist: check the URI (and credentials for s3:// or hf://)")
        raise DistilError(f"{uri} has no {MANIFEST}: the job that writes it has not finished "
                          "(rerun it to resume, or pass --allow-partial to read the chunks published so far)")
    if kind and manifest.get("kind") != kind:
        raise DistilError(f"{uri} is a '{manifest.get('kind')}' artifact, not '{kind}': pass the output of the right job")
    return loc, manifest
