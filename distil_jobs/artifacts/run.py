"""The run contract: how every job writes its output, whatever the job and wherever the output lives.

    claim (settings fingerprint) → publish files or chunks → mark shards done → manifest, last and exclusive

- **Claim.** Before its first write a job records the settings its result depends on in
  `_shards/run.json`. A rerun with the same settings resumes; with other settings it is refused
  (it would mix two runs), naming the settings that differ. Some settings may *grow* (a report
  that gains a model): their entries must agree where both runs have them.
- **Publish.** Files appear whole or not at all (`Location.put_files`).
- **Shards.** A sharded job leaves `_shards/<shard>.done`; the shard that finds every marker writes
  the manifest.
- **Manifest.** Written last, created exclusively (one writer wins), listing every file with its
  size and sha256, and the fingerprint of the run that made it. A folder without one is not an
  artifact.

A finished output is recognised by its manifest's kind and fingerprint (`completed`), never by its
name alone: another job's artifact, or one made with other settings, is an error, not "done".
"""

from __future__ import annotations

import json
import logging
from typing import Any

from distil_jobs.artifacts.location import Location
from distil_jobs.artifacts.manifest import MANIFEST, Manifest, file_entries, read_manifest
from distil_jobs.errors import DistilError
from distil_jobs.shards import Shard

log = logging.getLogger("distil_jobs.artifacts.run")
CLAIM = "_shards/run.json"


def differences(previous: dict[str, Any], current: dict[str, Any], growable: tuple[str, ...] = ()) -> list[str]:
    """Names of the settings that differ; a growable setting (a dict) differs only in shared entries."""
    diff = []
    for key in sorted(set(previous) | set(current)):
        old, new = previous.get(key), current.get(key)
        if key in growable and isinstance(old, dict) and isinstance(new, dict):
            diff += [f"{key} {k}" for k in sorted(set(old) & set(new)) if old[k] != new[k]]
        elif old != new:
            diff.append(key)
    return diff


def claim_output(out: Location, job: str, fingerprint: dict[str, Any], *, info: dict[str, Any] | None = None,
                 growable: tuple[str, ...] = (), reset: bool = False, fix: str = "") -> dict[str, Any]:
    """Claim `out` for a run of `job` with these settings; returns the claim as stored.

    Call it after every value is validated and every model loaded, so a failed start leaves no
    claim behind. `reset` replaces any earlier claim (e.g. --overwrite). `fix` adds a way out to
    the refusal message."""
    record = {"job": job, "fingerprint": fingerprint, **(info or {})}
    data = json.dumps(record, indent=2, sort_keys=True).encode()
    if reset:
        out.put_bytes(CLAIM, data)
        return record
    if out.create_exclusive(CLAIM, data):
        return record
    previous = read_claim(out)
    if previous.get("job") not in (None, job):
        raise DistilError(f"{out.uri} holds a {previous['job']} run: use another --output for {job}")
    diff = differences(previous.get("fingerprint", {}), fingerprint, growable)
    if diff:
        raise DistilError(f"{out.uri} already holds a run with different settings ({', '.join(diff)}): use a new "
                          f"--output, or the same settings to resume{fix}")
    if growable:
        merged = dict(fingerprint)
        for key in growable:
            if isinstance(fingerprint.get(key), dict):
                merged[key] = previous["fingerprint"].get(key, {}) | fingerprint[key]
        record = previous | {"fingerprint": merged}
        out.put_bytes(CLAIM, json.dumps(record, indent=2, sort_keys=True).encode())
    return previous | record


def read_claim(out: Location) -> dict[str, Any]:
    try:
        claim = out.read_json(CLAIM)
    except FileNotFoundError:
        return {}
    except ValueError:
        raise DistilError(f"{out.uri}/{CLAIM} is not valid JSON (a damaged output): use a new --output") from None
    return claim if isinstance(claim, dict) else {}


def completed(out: Location, kind: str, fingerprint: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The manifest when `out` already holds this result, None when it holds no finished artifact.

    A manifest of another kind, or of this kind made with other settings, is a one-line error:
    saying "nothing to do" there would pass off someone else's artifact as this run's result."""
    manifest = read_manifest(out)
    if manifest is None:
        return None
    if manifest.get("kind") != kind:
        raise DistilError(f"{out.uri} already holds a '{manifest.get('kind')}' artifact (made by "
                          f"{manifest.get('job')}), not '{kind}': choose another --output")
    made_with = manifest.get("fingerprint")
    if fingerprint is not None and made_with:
        diff = differences(made_with, fingerprint)
        if diff:
            raise DistilError(f"{out.uri} already holds a finished {kind} made with different settings "
                              f"({', '.join(diff)}): use a new --output, or the same settings")
    return manifest


def shard_marker(shard: Shard) -> str:
    return f"_shards/{shard.tag}.done"


def mark_shard_done(out: Location, shard: Shard, info: dict[str, Any]) -> None:
    out.put_bytes(shard_marker(shard), json.dumps(info).encode())


def missing_shards(out: Location, count: int) -> list[int]:
    done = set(out.listdir("_shards"))
    return [i for i in range(count) if shard_marker(Shard(i, count, "")).split("/", 1)[1] not in done]


def finish(out: Location, manifest: Manifest, files: list[tuple[str, str]] | None = None,
           listed: list[str] | None = None, message: str = "distil-jobs: publish") -> bool:
    """Publish `files` (local path, relative path), then the manifest listing `listed` (default:
    every data file in the output) with the sizes and sha256 read back from the store.
    True if this call wrote the manifest; False if another writer was first."""
    if files:
        out.put_files(files, message=message)
    manifest.files = file_entries(out, listed)
    if out.create_exclusive(MANIFEST, manifest.to_json()):
        log.info("manifest written: %s/%s (%s, %d files)", out.uri, MANIFEST, manifest.kind, len(manifest.files))
        return True
    log.info("%s already had a manifest (another writer was first): left as it was", out.uri)
    return False
