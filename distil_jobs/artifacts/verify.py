"""Verify on read: a reader uses a file only if it is the file the manifest promises.

A manifest lists every file with its size and sha256. Readers hash each file as they read it
(`read_verified`: the bytes are in memory anyway, so this costs one pass at hashing speed) and
stop at the first mismatch with one line naming the file. `check_shape` compares the manifest's
rows and embedding sizes with what the data says. `verify_artifact` (`distil-jobs verify URI`)
runs every check over a whole artifact and names every bad file.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from distil_jobs.artifacts.location import Location, open_location
from distil_jobs.artifacts.manifest import PROGRESS, list_files, read_manifest
from distil_jobs.errors import DistilError

BLOCK = 4 << 20
REMAKE = "rerun the job that wrote it into a new output, or copy a good one with `distil-jobs cp`"


class IntegrityError(DistilError):
    """A file or manifest that is not what the manifest promises: nothing may be made from it."""


def entries(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The manifest's files by relative path (a partial read's progress lists bare names: no promise)."""
    return {f["path"]: f for f in manifest.get("files", []) if isinstance(f, dict) and "path" in f}


def _compare(where: str, size: int, sha256: str, entry: dict[str, Any]) -> None:
    """A file's size and digest against its manifest entry: the one check every reader makes."""
    if "bytes" in entry and size != int(entry["bytes"]):
        raise IntegrityError(f"{where} has {size} bytes, its manifest says {entry['bytes']}: {REMAKE}")
    if entry.get("sha256") and sha256 != entry["sha256"]:
        raise IntegrityError(f"{where} does not match the sha256 in its manifest (changed after it was "
                             f"written): {REMAKE}")


def check_bytes(uri: str, rel: str, data: bytes, entry: dict[str, Any] | None) -> None:
    if entry is not None:
        _compare(f"{uri}/{rel}", len(data), hashlib.sha256(data).hexdigest(), entry)


def read_verified(loc: Location, rel: str, entry: dict[str, Any] | None) -> bytes:
    """The whole file, checked against its manifest entry (when there is one)."""
    try:
        with loc.fs.open(loc.path(rel), "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise IntegrityError(f"{loc.uri}/{rel} is listed in the manifest but missing: {REMAKE}") from None
    check_bytes(loc.uri, rel, data, entry)
    return data


def embedding_dims(schema: pa.Schema) -> dict[str, int]:
    return {f.name: f.type.list_size for f in schema if pa.types.is_fixed_size_list(f.type)}


def check_shape(uri: str, manifest: dict[str, Any], rows: int, schema: pa.Schema | None) -> None:
    """The manifest's row count and embedding sizes against the data's own."""
    promised = manifest.get("rows")
    if manifest.get("partial"):
        return
    if promised is not None and int(promised) != rows:
        raise IntegrityError(f"{uri}: the manifest promises {promised} rows but the data holds {rows}: {REMAKE}")
    promised_dims = (manifest.get("extra") or {}).get("embedding_columns") or {}
    have = embedding_dims(schema) if schema is not None else {}
    for column, dim in promised_dims.items():
        if have.get(column) != dim:
            raise IntegrityError(f"{uri}: the manifest promises {column} with {dim} dims, the data has "
                                 f"{have.get(column, 'no such column')}: {REMAKE}")


@dataclass(slots=True)
class Report:
    uri: str
    files: int = 0
    bytes: int = 0
    rows: int | None = None
    problems: list[str] = field(default_factory=list)
    unlisted: list[str] = field(default_factory=list)  # ignored by every reader, reported for the curious

    @property
    def ok(self) -> bool:
        return not self.problems


def check_stream(loc: Location, rel: str, entry: dict[str, Any], sink: BinaryIO | None = None) -> int:
    """Hash the file in blocks (optionally copying it into `sink`) and check it; returns its size."""
    h, size = hashlib.sha256(), 0
    try:
        with loc.fs.open(loc.path(rel), "rb") as f:
            for block in iter(lambda: f.read(BLOCK), b""):
                h.update(block)
                size += len(block)
                if sink is not None:
                    sink.write(block)
    except FileNotFoundError:
        raise IntegrityError(f"{loc.uri}/{rel} is listed in the manifest but missing: {REMAKE}") from None
    _compare(f"{loc.uri}/{rel}", size, h.hexdigest(), entry)
    return size


def require_intact(uri: str, prefix: str = "") -> None:
    """Check the artifact's files under `prefix` (e.g. a student's `final/`) before they are loaded."""
    loc = open_location(uri)
    manifest = read_manifest(loc)
    for rel, entry in sorted(entries(manifest or {}).items()):
        if rel.startswith(prefix):
            check_stream(loc, rel, entry)


def verify_artifact(uri: str) -> Report:
    """Every check a reader makes, over the whole artifact, streaming; every bad file named."""
    loc = open_location(uri)
    manifest = read_manifest(loc)
    if manifest is None:
        raise DistilError(f"{uri} has no manifest.json: it is not a finished artifact (rerun the job that writes it)")
    report = Report(uri)
    listed = entries(manifest)
    chunks = [r for r in listed if r.startswith("data/") and r.endswith(".parquet")]
    for rel, entry in sorted(listed.items()):
        try:
            report.bytes += check_stream(loc, rel, entry)
            report.files += 1
        except IntegrityError as e:
            report.problems.append(str(e))
    report.unlisted = sorted(set(list_files(loc)) - set(listed) - {PROGRESS})
    if chunks and not report.problems:
        rows, schema = 0, None
        for rel in chunks:  # the footers say how many rows and which columns the data holds
            with loc.fs.open(loc.path(rel), "rb") as f:
                meta = pq.ParquetFile(f)
                rows += meta.metadata.num_rows
                schema = schema or meta.schema_arrow
        report.rows = rows
        try:
            check_shape(uri, manifest, rows, schema)
        except IntegrityError as e:
            report.problems.append(str(e))
    return report
