"""`--wait-for-inputs SECONDS`: start a job before the jobs that make its inputs have finished.

One `kubectl apply -k` of a whole pipeline starts precompute, train and evaluate at once; without
waiting, train and evaluate fail at once on "has no manifest.json". With the option, a job first
polls each of its inputs (the options `JobSpec.inputs` names) until it is ready:

- ready at once: a model alias (minilm), a hub id (org/name that is not a local path), an `hf://`
  URI while the Hub is offline (the job itself reports that), a finished artifact (manifest.json),
  and an existing dataset or model that no job is producing (no run claim);
- waited for: a path or URI that does not exist yet, an empty folder, and an output with a run
  claim (`_shards/run.json`) but no manifest.json yet, itself or in one of its two parent folders
  (`out/student/final`, `out/emb/data/part-0.parquet`).

Timing out is a `JobFault` (exit 1), not a usage error (exit 2): the upstream job may simply be
queued or retried, and exit 2 is "fatal, never retry" to the Kubernetes podFailurePolicy and the
Slurm launchers. Exit 1 is retried within the Job's backoffLimit, which bounds a truly missing
input; exit 75 would be retried without limit.
"""

from __future__ import annotations

import logging
import posixpath
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from distil_jobs.errors import DistilError, JobFault, first_line

log = logging.getLogger("distil_jobs.wait")
LOG_EVERY_S = 30.0  # a "still waiting" line at most this often (and one when it starts)
FIRST_POLL_S = 0.5
MAX_POLL_S = 15.0  # backoff cap: an input that appears is noticed within ~15 s
PARENT_LEVELS = 2  # out/student/final, out/emb/data/x.parquet: the artifact root is at most 2 levels up
CLAIM = "_shards/run.json"  # artifacts.run.CLAIM (not imported: run.py pulls in the shard machinery)
MANIFEST = "manifest.json"


class InputNotReady(JobFault):
    """Timed out waiting for an input: exit 1, so a launcher retries (the upstream may be queued)."""


def parse_wait(value: Any, source: str) -> float:
    """The option's value in seconds (>= 0); a bad one is a one-line usage error."""
    if value is None or value == "":
        return 0.0
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise DistilError(f"{source} {value!r}: expected a number of seconds (e.g. 600; 0 = don't wait)") from None
    if not seconds >= 0 or seconds == float("inf"):
        raise DistilError(f"{source} {value!r}: expected a number of seconds >= 0 (e.g. 600; 0 = don't wait)")
    return seconds


@dataclass(frozen=True, slots=True)
class Input:
    option: str  # config field name, e.g. "dev_input"
    uri: str
    kinds: tuple[str, ...]

    @property
    def flag(self) -> str:
        return "--" + self.option.replace("_", "-")

    def __str__(self) -> str:
        return f"{self.flag} {self.uri}"


def job_inputs(job: str, cfg: Any) -> list[Input]:
    """The input URIs a job's config names, one per value (a list option gives several)."""
    from distil_jobs.jobs import JOBS

    spec = JOBS.get(job)
    if spec is None:
        return []
    found = []
    for option, kinds in spec.inputs.items():
        value = getattr(cfg, option, None)
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(v, str) and v.strip():
                found.append(Input(option, v.strip(), kinds))
    return found


def _is_hub_id(ref: str) -> bool:
    """org/name as `models.registry` reads it: not a URI, not an explicit path, exactly one '/'."""
    from distil_jobs.artifacts.location import _HUB_NAME

    if "://" in ref or ref.startswith((".", "/", "~")):
        return False
    parts = ref.split("/")
    return len(parts) == 2 and all(_HUB_NAME.match(p) for p in parts)


def _parents(uri: str) -> Iterator[str]:
    """Up to PARENT_LEVELS parent URIs, never above an S3 bucket or the file system root."""
    if uri.startswith("hf://"):
        return
    scheme, rest = ("s3://", uri[5:]) if uri.startswith("s3://") else ("", uri)
    rest = rest.rstrip("/")
    for _ in range(PARENT_LEVELS):
        parent = posixpath.dirname(rest)
        if not parent or parent == rest or parent == "/" or (scheme and "/" not in parent):
            return  # an S3 bucket root or "/" is nobody's output
        rest = parent
        yield scheme + rest


def not_ready(inp: Input) -> str | None:
    """Why `inp` is not ready yet, or None when the job may read it now."""
    from distil_jobs.artifacts.location import HubOffline, open_location
    from distil_jobs.jobs import MODEL

    if MODEL in inp.kinds:
        from distil_jobs.models.registry import REGISTRY

        if inp.uri in REGISTRY:
            return None
    try:
        loc = open_location(inp.uri)
    except HubOffline:
        return None  # the job's own check names the fix
    if MODEL in inp.kinds and loc.is_local and _is_hub_id(inp.uri) and not loc.exists():
        return None  # a hub id, as models.registry resolves it (write ./org/name for a local folder)
    if loc.exists(MANIFEST):
        return None
    if loc.exists(CLAIM):
        return "being produced: a run claim, no manifest.json yet"
    for parent in _parents(inp.uri):
        up = open_location(parent)
        if up.exists(MANIFEST):
            break
        if up.exists(CLAIM):
            return f"being produced: {parent} has a run claim, no manifest.json yet"
    if not loc.exists():
        return "does not exist yet"
    if loc.is_local and loc.fs.isdir(loc.root) and not loc.listdir():
        return "an empty folder"  # a producer has made its output folder but not claimed it yet
    return None


def wait_for_inputs(job: str, cfg: Any, timeout_s: float, *, clock: Callable[[], float] = time.monotonic,
                    sleep: Callable[[float], None] = time.sleep) -> None:
    """Return once every input of `cfg` is ready; raise `InputNotReady` after `timeout_s` seconds."""
    if timeout_s <= 0:
        return
    pending = job_inputs(job, cfg)
    start = clock()
    last_log = -LOG_EVERY_S
    delay = FIRST_POLL_S
    reasons: dict[Input, str] = {}
    while True:
        for inp in list(pending):
            try:
                reason = not_ready(inp)
            except JobFault as e:  # the S3 guard gave up on a store that is not up (yet): poll again
                reason = f"cannot be read yet ({first_line(e, 120)})"
            except DistilError:
                raise  # a malformed URI or a missing credential: waiting cannot fix it
            except Exception as e:  # any other store error (a Hub 5xx): poll again
                reason = f"cannot be read yet ({first_line(e, 120)})"
            if reason is None:
                if inp in reasons:
                    log.info("input %s is ready (waited %.0f s)", inp, clock() - start)
                pending.remove(inp)
            else:
                reasons[inp] = reason
        if not pending:
            return
        elapsed = clock() - start
        if elapsed >= timeout_s:
            first = pending[0]
            more = f" (and {len(pending) - 1} more input(s))" if len(pending) > 1 else ""
            raise InputNotReady(
                f"input {first} is not ready after --wait-for-inputs {timeout_s:g} s ({reasons[first]}){more}: "
                "check that the job producing it runs and succeeds, or raise --wait-for-inputs")
        if elapsed - last_log >= LOG_EVERY_S:
            log.info("waiting for %d input(s) (%.0f s of %g s): %s", len(pending), elapsed, timeout_s,
                     "; ".join(f"{i} ({reasons[i]})" for i in pending))
            last_log = elapsed
        sleep(min(delay, max(timeout_s - elapsed, 0.0)))
        delay = min(delay * 1.5, MAX_POLL_S)
