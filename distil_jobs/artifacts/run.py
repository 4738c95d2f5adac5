"""The run contract: how every job writes its output, whatever the job and wherever the output lives.

    claim (settings fingerprint) → publish files or chunks → mark shards done → manifest, last and exclusive

- **Claim.** Before its first write (and after every value is validated and every model loaded)
  a job records in `_shards/run.json` the settings its result depends on and a content fingerprint
  of each input (`artifacts.fingerprint`). A rerun with the same settings and inputs resumes; with
  others it is refused (it would mix two runs), naming what differs, unless the earlier run left
  no work. Some settings may *grow* (a report that gains a model): their entries must agree where
  both runs have them.
- **Publish.** Files appear whole or not at all (`Location.put_files`).
- **Shards.** A sharded job leaves `_shards/<shard>.done`; the shard that finds every marker writes
  the manifest.
- **Manifest.** Written last, created exclusively (one writer wins), listing every file with its
  size and sha256, and the fingerprint of the run that made it. A folder without one is not an
  artifact; readers check every file they open against it (`artifacts.verify`).

A finished output is recognised by its manifest's kind and fingerprint (`completed`), never by its
name alone: another job's artifact, or one made with other settings, is an error, not "done".
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from distil_jobs.artifacts.location import Location, is_temporary
from distil_jobs.artifacts.manifest import MANIFEST, Manifest, file_entries, read_manifest
from distil_jobs.errors import DistilError
from distil_jobs.shards import Shard

log = logging.getLogger("distil_jobs.artifacts.run")
CLAIM = "_shards/run.json"
STALE_AFTER_S = 15 * 60  # a temporary file untouched this long belongs to no live writer


def differences(previous: dict[str, Any], current: dict[str, Any], growable: tuple[str, ...] = ()) -> list[str]:
    """Names of the settings that differ; a growable setting (a dict) differs only in shared entries."""
    diff = []
    for key in sorted(set(previous) | set(current)):
        old, new = previous.get(key), current.get(key)
        if key.startswith("content:") and key not in previous:
            continue  # recorded before content fingerprints existed: nothing to compare with
        if key in growable and isinstance(old, dict) and isinstance(new, dict):
            diff += [f"{key} {k}" for k in sorted(set(old) & set(new)) if old[k] != new[k]]
        elif old != new:
            diff.append(key)
    return diff


def claim_output(out: Location, job: str, fingerprint: dict[str, Any], *, info: dict[str, Any] | None = None,
                 growable: tuple[str, ...] = (), reset: bool = False, fix: str = "",
                 produced: Callable[[], bool] | None = None, concurrent: bool = False) -> dict[str, Any]:
    """Claim `out` for a run of `job` with these settings; returns the claim as stored.

    Call it after every value is validated and every model loaded, so a failed start leaves no
    claim behind. `reset` replaces any earlier claim (e.g. --overwrite). `fix` adds a way out to
    the refusal message. `produced` says whether the earlier run left any work (a chunk, a
    checkpoint): if not, a rerun with other settings replaces its claim instead of being refused,
    so a run that crashed on a bad value does not block its corrected rerun. A resumed claim first
    sweeps away the temporary files a killed writer left (`concurrent`: other shards may be writing
    now, so only those older than `STALE_AFTER_S` go)."""
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
    if diff and produced is not None and not produced():
        log.info("%s: the earlier run (other %s) left no work: its claim is replaced", out.uri, ", ".join(diff))
        out.put_bytes(CLAIM, data)
        return record
    settings = [d for d in diff if not d.startswith("content:")]
    if diff and not settings:
        changed = diff[0].removeprefix("content:").replace("_", "-")
        raise DistilError(f"{out.uri}: the content of --{changed} changed since this run started (its fingerprint "
                          "differs): restore it, or use a new --output")
    if diff:
        raise DistilError(f"{out.uri} already holds a run with different settings ({', '.join(settings)}): use a new "
                          f"--output, or the same settings to resume{fix}")
    sweep_temporaries(out, time.time() - (STALE_AFTER_S if concurrent else 0))
    if growable:
        merged = dict(fingerprint)
        for key in growable:
            if isinstance(fingerprint.get(key), dict):
                merged[key] = previous["fingerprint"].get(key, {}) | fingerprint[key]
        record = previous | {"fingerprint": merged}
        out.put_bytes(CLAIM, json.dumps(record, indent=2, sort_keys=True).encode())
    return previous | record


def sweep_temporaries(out: Location, before: float) -> list[str]:
    """Delete the temporary files (`.tmp-*`, `_tmp/`) last written before `before` (a Unix time):
    what a killed copy or upload left. No reader counts them; this only frees the space."""
    if out.scheme == "hf":  # Hub commits are atomic: nothing temporary is ever left there
        return []
    root = out.root.rstrip("/") + "/"
    swept = []
    for path, info in out.fs.find(out.root, detail=True, withdirs=False).items():
        rel = str(path)[len(root):] if str(path).startswith(root) else str(path)
        if is_temporary(rel) and _modified(info) < before:
            out.fs.rm(str(path))
            swept.append(rel)
    if swept:
        log.info("removed %d stale temporary file(s) under %s", len(swept), out.uri)
    return swept


def _modified(info: dict[str, Any]) -> float:
    stamp = info.get("mtime") or info.get("LastModified") or info.get("created")
    if hasattr(stamp, "timestamp"):
        return float(stamp.timestamp())
    return float(stamp) if stamp is not None else 0.0


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
        changed = [d.removeprefix("content:") for d in diff if d.startswith("content:")]
        if changed:
            raise DistilError(f"{out.uri} already holds a finished {kind} made from other content of "
                              f"--{changed[0].replace('_', '-')}: use a new --output for the new input")
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
