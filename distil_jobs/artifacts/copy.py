"""`distil-jobs cp SRC DST`: move a finished artifact between stores (local, s3://, hf://).

Each listed file is streamed to a local staging file while it is hashed, checked against the
source manifest, then published whole at the destination (one commit per batch on the Hub).
The source manifest is written last, byte for byte, so the copy has the same manifest hash (and
downstream runs see the same input fingerprint). A killed copy resumes: files already at the
destination with the promised size and hash are kept.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from typing import Any

from distil_jobs.artifacts.location import Location, open_location
from distil_jobs.artifacts.manifest import MANIFEST, read_manifest
from distil_jobs.artifacts.verify import IntegrityError, check_stream, entries
from distil_jobs.errors import DistilError

log = logging.getLogger("distil_jobs.artifacts.copy")
BATCH_BYTES = 1 << 30  # staged locally per publish: bounded disk use, few commits on the Hub


@dataclass(frozen=True, slots=True)
class Copied:
    files: int
    bytes: int
    kept: int  # already at the destination, verified


def copy_artifact(src_uri: str, dst_uri: str) -> Copied:
    from tqdm.auto import tqdm

    src, dst = open_location(src_uri), open_location(dst_uri)
    manifest = read_manifest(src)
    if manifest is None:
        raise DistilError(f"{src_uri} has no manifest.json: only finished artifacts are copied")
    raw = src.read_bytes(MANIFEST)
    there = read_manifest(dst)
    if there is not None:
        if hashlib.sha256(dst.read_bytes(MANIFEST)).digest() == hashlib.sha256(raw).digest():
            log.info("%s already holds this artifact: nothing to copy", dst_uri)
            return Copied(0, 0, len(entries(manifest)))
        raise DistilError(f"{dst_uri} already holds another artifact ({there.get('kind')}): choose an empty destination")
    dst.ensure_writable()
    listed = entries(manifest)
    kept = 0
    with tempfile.TemporaryDirectory(prefix="distil-cp-") as stage, \
            tqdm(total=sum(int(e.get("bytes", 0)) for e in listed.values()), unit="B", unit_scale=True,
                 desc="cp") as bar:
        batch: list[tuple[str, str]] = []
        staged = 0
        for i, (rel, entry) in enumerate(sorted(listed.items())):
            if _already_there(dst, rel, entry):
                kept += 1
                bar.update(int(entry.get("bytes", 0)))
                continue
            local = os.path.join(stage, f"{i:06d}")
            with open(local, "wb") as sink:
                staged += check_stream(src, rel, entry, sink)  # a bad source file stops the copy here
            bar.update(os.path.getsize(local))
            batch.append((local, rel))
            if staged >= BATCH_BYTES:
                _publish(dst, batch)
                batch, staged = [], 0
        _publish(dst, batch)
    for rel, entry in listed.items():  # what landed is what was sent
        if dst.size(rel) != int(entry.get("bytes", dst.size(rel))):
            raise IntegrityError(f"{dst_uri}/{rel} arrived with {dst.size(rel)} bytes, not {entry['bytes']}: rerun the copy")
    if not dst.create_exclusive(MANIFEST, raw):
        raise DistilError(f"{dst_uri} got a manifest from another writer during the copy: check it with "
                          "`distil-jobs verify`")
    return Copied(len(listed), sum(int(e.get("bytes", 0)) for e in listed.values()), kept)


def _already_there(dst: Location, rel: str, entry: dict[str, Any]) -> bool:
    try:
        check_stream(dst, rel, entry)
        return True
    except IntegrityError:
        return False


def _publish(dst: Location, batch: list[tuple[str, str]]) -> None:
    if batch:
        dst.put_files(batch, message=f"distil-jobs cp: {len(batch)} file(s)")
        for local, _ in batch:
            os.unlink(local)
