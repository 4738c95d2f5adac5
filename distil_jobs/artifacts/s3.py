"""S3 access for artifacts: an s3fs filesystem behind `S3Guard`.

The guard is the one place that decides what an S3 failure means for a job:

- no credentials, wrong credentials: the user's to fix, a one-line DistilError (exit 2);
- the server unreachable or failing (connection refused or reset, timeouts, 5xx, SlowDown): retried
  with exponential backoff and jitter for at most `DISTIL_S3_RETRY_SECONDS` (default 60), then a
  one-line JobFault (exit 1) naming the endpoint. Every write is atomic and the manifest comes
  last, so the job leaves no manifest and the same command resumes once the server is back.

botocore and s3fs retry too. Their retries would multiply the wait (botocore's default alone
spends ~8 s per call against a dead server), so both are turned off and the guard is the only
loop: a call gives up after the bound plus at most the attempt in flight (connect 5 s + read
15 s). A user who sets AWS_MAX_ATTEMPTS / AWS_RETRY_MODE gets botocore's retries inside each attempt.
"""

from __future__ import annotations

import asyncio
import functools
import os
import random
import time
from typing import Any

from distil_jobs.errors import DistilError, JobFault, first_line
from distil_jobs.log import get_logger

log = get_logger("s3")

RETRY_ENV = "DISTIL_S3_RETRY_SECONDS"
DEFAULT_RETRY_SECONDS = 60.0
_FIRST_DELAY_S = 0.5
_MAX_DELAY_S = 10.0
# s3fs's own loop would repeat a timed-out request up to `retries` times inside one guarded attempt
# (5 x the 15 s read timeout against a hung server): one try, and the guard decides.
_S3FS_RETRIES = 1

# Calls that may be repeated after a failure whose outcome is unknown: reads, whole-object writes
# under a fixed key (the same bytes land twice), copies, deletes. `pipe_file(mode="create")` is
# conditional; `_call` resolves its ambiguous outcome. Any other call that loses the server fails
# at once, without a retry.
_IDEMPOTENT = frozenset({
    "exists", "info", "size", "isdir", "isfile", "ls", "find", "glob", "du", "cat", "cat_file", "open",
    "get", "get_file", "put", "put_file", "pipe", "pipe_file", "copy", "cp_file", "rm", "rm_file",
    "mkdir", "makedirs", "invalidate_cache", "read",
})
# S3 error codes that mean "the server is struggling, ask again later".
_TRANSIENT_CODES = frozenset({"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "Throttling",
                              "ThrottlingException", "RequestLimitExceeded", "503", "500"})


def retry_seconds() -> float:
    raw = os.environ.get(RETRY_ENV, "").strip()
    if not raw:
        return DEFAULT_RETRY_SECONDS
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also refuses nan
        raise DistilError(f"{RETRY_ENV}={raw!r} is not a number of seconds >= 0: set it to e.g. 60, or unset it")
    return value


def s3_filesystem() -> S3Guard:
    try:
        import s3fs
    except ImportError:
        raise DistilError("s3:// URIs need s3fs: pip install 'distil-jobs[s3]'") from None
    # botocore reads keys, region and AWS_ENDPOINT_URL* itself; passing the endpoint explicitly
    # keeps older botocore releases working with S3-compatible stores (MinIO, SeaweedFS, Ceph).
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    kwargs: dict[str, Any] = {}
    if endpoint:
        kwargs["endpoint_url"] = endpoint
    if not (os.environ.get("AWS_MAX_ATTEMPTS") or os.environ.get("AWS_RETRY_MODE")):
        kwargs["config_kwargs"] = {"retries": {"mode": "standard", "total_max_attempts": 1}}
    fs = s3fs.S3FileSystem(**kwargs)
    fs.retries = _S3FS_RETRIES  # a class attribute in s3fs, not a constructor argument
    return S3Guard(fs, endpoint or "the default AWS endpoint", retry_seconds())


class S3Guard:
    """Forwards every call to an s3fs filesystem; retries transient failures within a time bound
    and turns what is left into one-line errors (s3fs reports them as deep tracebacks).

    Translation happens here, around the public calls, because s3fs itself catches broad
    exceptions in places. Libraries that need a real fsspec instance (pyarrow `filesystem=`,
    datasets) take `.unwrapped`, which is neither retried nor translated."""

    def __init__(self, fs: Any, endpoint: str, budget_s: float = DEFAULT_RETRY_SECONDS) -> None:
        self._fs = fs
        self._endpoint = endpoint
        self._budget_s = budget_s
        # Set once a call gave up: later calls (clean-up in `finally` blocks) try once and fail
        # fast with the same message instead of waiting out the bound again before the job exits.
        self._fault: str | None = None

    @property
    def unwrapped(self) -> Any:
        return self._fs

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._fs, name)
        if not callable(attr):
            return attr

        @functools.wraps(attr)
        def call(*args: Any, **kwargs: Any) -> Any:
            result = self._call(name, attr, args, kwargs)
            if name == "open" and str(kwargs.get("mode", args[1] if len(args) > 1 else "rb")).startswith("r"):
                return _GuardedFile(self, result)
            return result

        return call

    def _call(self, name: str, attr: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        started: float | None = None
        attempt = 0
        while True:
            try:
                result = attr(*args, **kwargs)
                if name != "invalidate_cache":  # local: says nothing about the server
                    self._fault = None
                return result
            except Exception as e:
                if attempt and self._settled_by_earlier_attempt(name, args, kwargs, e):
                    return None
                self._raise_if_users(e, args)
                if not is_transient(e):
                    raise
                now = time.monotonic()
                started = now if started is None else started
                waited = now - started
                if self._fault is None and name not in _IDEMPOTENT:
                    self._fault = f"S3 at {self._endpoint} failed during {name}, which is not retried ({first_line(e)})"
                elif self._fault is None and waited >= self._budget_s:
                    self._fault = f"S3 at {self._endpoint} unreachable for {waited:.0f} s ({first_line(e)})"
                if self._fault is not None:
                    raise JobFault(f"{self._fault}: check the server and AWS_ENDPOINT_URL, then rerun the same "
                                   "command to resume") from None
                # Exponential backoff, jittered to 50-100 % so that shards do not retry in step; never past the bound.
                delay = min(_MAX_DELAY_S, _FIRST_DELAY_S * 2 ** attempt) * random.uniform(0.5, 1.0)
                delay = min(delay, self._budget_s - waited)
                attempt += 1
                log.warning("S3 at %s: %s failed (%s); retry %d in %.1f s (giving up after %.0f s)",
                            self._endpoint, name, first_line(e, 120), attempt, delay, self._budget_s)
                time.sleep(delay)

    def _settled_by_earlier_attempt(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any],
                                    e: Exception) -> bool:
        """After a failure whose answer was lost, a retry may find the work already done."""
        if name in ("rm", "rm_file") and isinstance(e, FileNotFoundError):
            return True  # the lost attempt deleted it
        if name == "pipe_file" and kwargs.get("mode") == "create" and is_precondition_failed(e):
            # An exclusive create (the manifest, a claim) whose first attempt may have landed: 412 then
            # means "exists", not "another writer won". Ours if it holds our bytes; a rival that wrote
            # the very same bytes published the same thing, so either answer is right.
            path = args[0] if args else kwargs.get("path")
            data = args[1] if len(args) > 1 else kwargs.get("data", kwargs.get("value"))
            try:
                stored = self._call("cat_file", self._fs.cat_file, (path,), {})
            except FileNotFoundError:
                return False
            return bytes(stored) == bytes(data)
        return False

    def _raise_if_users(self, e: Exception, args: tuple[Any, ...]) -> None:
        """Credential problems are the user's to fix: one line naming the variables, never their values."""
        where = f"s3://{args[0]}" if args and isinstance(args[0], str) else "S3"
        if isinstance(e, PermissionError):
            raise DistilError(f"access denied to {where} at {self._endpoint} ({first_line(e)}): check "
                              "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY") from None
        if _in_chain(e, _credential_errors()):
            endpoint = "" if self._endpoint.startswith("http") else " (and AWS_ENDPOINT_URL for a server other than AWS)"
            raise DistilError(f"no S3 credentials for {where} at {self._endpoint} ({first_line(e)}): set "
                              f"AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY{endpoint}") from None


class _GuardedFile:
    """A file opened for reading whose reads go through the guard: a streaming read (pyarrow, a
    checksum) that loses the server retries within the same bound. A failed read leaves the
    position unchanged, so repeating it is safe."""

    def __init__(self, guard: S3Guard, f: Any) -> None:
        self._guard = guard
        self._f = f

    def read(self, *args: Any) -> Any:
        return self._guard._call("read", self._f.read, args, {})

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)

    def __enter__(self) -> _GuardedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._f.close()


def _credential_errors() -> tuple[type[BaseException], ...]:
    from botocore.exceptions import NoCredentialsError, PartialCredentialsError

    return (NoCredentialsError, PartialCredentialsError)


def _chain(e: BaseException) -> list[BaseException]:
    """`e` and its explicit causes (s3fs and botocore wrap with `from`). Not `__context__`: an error
    raised while handling a connection error is not itself one."""
    seen: list[BaseException] = []
    link: BaseException | None = e
    while link is not None and link not in seen:
        seen.append(link)
        link = link.__cause__
    return seen


def _in_chain(e: BaseException, types: tuple[type[BaseException], ...]) -> bool:
    return any(isinstance(link, types) for link in _chain(e))


def is_transient(e: BaseException) -> bool:
    """A failure another attempt may not see: the server unreachable, slow, or failing (5xx)."""
    from http.client import IncompleteRead

    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import HTTPClientError
    from botocore.parsers import ResponseParserError
    from fsspec.exceptions import FSTimeoutError

    # ResponseParserError: throttling servers sometimes answer with invalid XML (s3fs issue 484).
    types: tuple[type[BaseException], ...] = (BotoConnectionError, HTTPClientError, ResponseParserError,
                                              IncompleteRead, FSTimeoutError, ConnectionError, TimeoutError,
                                              asyncio.TimeoutError)
    try:
        import aiohttp

        types += (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError)
    except ImportError:  # pragma: no cover - s3fs brings aiohttp
        pass
    for link in _chain(e):
        if isinstance(link, PermissionError):
            return False
        if isinstance(link, types):
            return True
        response = getattr(link, "response", None)
        if isinstance(response, dict):
            code = str(response.get("Error", {}).get("Code", ""))
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in _TRANSIENT_CODES or (isinstance(status, int) and status >= 500):
                return True
    return False


def is_precondition_failed(e: BaseException) -> bool:
    """True for S3's answer to a conditional put that lost (HTTP 412 PreconditionFailed).

    s3fs turns it into FileExistsError or a bare OSError whose text depends on the server, so
    look at the botocore error it wraps."""
    if isinstance(e, FileExistsError):
        return True
    chain: BaseException | None = e
    while chain is not None:
        response = getattr(chain, "response", None)
        if isinstance(response, dict):
            code = str(response.get("Error", {}).get("Code", ""))
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("PreconditionFailed", "412") or status == 412:
                return True
        if "PreconditionFailed" in str(chain):
            return True
        chain = chain.__cause__
    return False
