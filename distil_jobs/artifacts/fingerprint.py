"""What an input holds, as one short string: the run claim records it, so a resume over changed input
is refused however the input is named.

- an artifact (a folder with `manifest.json`): the manifest's sha256, which lists every file's hash;
- a file: its size and a sha256 of its bytes: all of them up to `FULL_HASH_BYTES`, else the size,
  the modification time and samples from the start, middle and end (a full pass over a corpus of
  hundreds of GiB on every start would cost more than the job);
- a folder of data files: the same over each file, with its relative path.

Remote files (s3://, hf://) are read the same way through their filesystem.
"""

from __future__ import annotations

import hashlib

from distil_jobs.artifacts.location import Location, is_temporary, open_location
from distil_jobs.artifacts.manifest import MANIFEST, PRIVATE_PREFIXES
from distil_jobs.errors import DistilError

FULL_HASH_BYTES = 256 << 20
SAMPLE_BYTES = 4 << 20


def content_fingerprint(uri: str) -> str:
    loc = open_location(uri)
    if not loc.exists():
        raise DistilError(f"input {uri} not found: check the path")
    if loc.exists(MANIFEST):
        return "manifest:" + hashlib.sha256(loc.read_bytes(MANIFEST)).hexdigest()
    if not loc.fs.isdir(loc.root):
        return "file:" + _file_digest(loc, "")
    h = hashlib.sha256()
    root = loc.root.rstrip("/") + "/"
    for path in sorted(str(p) for p in loc.fs.find(loc.root)):
        rel = path[len(root):] if path.startswith(root) else path
        if rel.startswith(PRIVATE_PREFIXES) or is_temporary(rel):
            continue
        h.update(f"{rel}\0{_file_digest(loc, rel)}\0".encode())
    return "folder:" + h.hexdigest()


def _file_digest(loc: Location, rel: str) -> str:
    info = loc.fs.info(loc.path(rel))
    size = int(info.get("size") or 0)
    h = hashlib.sha256(str(size).encode())
    with loc.fs.open(loc.path(rel), "rb") as f:
        if size <= FULL_HASH_BYTES:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
            return h.hexdigest()
        # Too big to read on every start: samples, and the modification time for edits between them.
        h.update(str(info.get("mtime") or info.get("LastModified") or info.get("last_commit") or "").encode())
        for offset in (0, size // 2, size - SAMPLE_BYTES):
            f.seek(offset)
            h.update(f.read(SAMPLE_BYTES))
    return "sampled-" + h.hexdigest()
