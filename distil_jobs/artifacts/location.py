"""Where an artifact lives: a local folder, an S3-compatible prefix or a Hugging Face Hub repo.

Every write goes through `put_files` (atomic per file, one commit on the Hub) or
`create_exclusive` (exactly one writer wins), so a reader never sees a half-written file.
"""

from __future__ import annotations

import functools
import json
import os
import posixpath
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec

from distil_jobs.errors import DistilError, first_line

TMP_PREFIX = ".tmp-"  # files being written: never listed, counted or read


def is_temporary(rel: str) -> bool:
    """A staging name of an unfinished write (ours, or a killed run's leftover), anywhere in the artifact."""
    return rel.startswith("_tmp/") or posixpath.basename(rel).startswith(TMP_PREFIX)


def temporary_name(rel: str) -> str:
    """Where `rel` is written before it is renamed into place: beside it, so the rename is atomic."""
    return posixpath.join(posixpath.dirname(rel), f"{TMP_PREFIX}{uuid.uuid4().hex}-{posixpath.basename(rel)}")


@dataclass(frozen=True, slots=True)
class HubRepo:
    repo_id: str
    repo_type: str  # "model" or "dataset"
    subdir: str
    revision: str = "main"

    @property
    def fs_root(self) -> str:
        """The path HfFileSystem reads: `[datasets/]org/name@revision[/subdir]`."""
        prefix = "datasets/" if self.repo_type == "dataset" else ""
        root = f"{prefix}{self.repo_id}@{self.revision}"
        return posixpath.join(root, self.subdir) if self.subdir else root


def parse_hub_uri(uri: str) -> HubRepo:
    """hf://[datasets/]org/name[@revision][/subdir]; the revision defaults to main."""
    rest = uri[len("hf://"):].strip("/")
    parts = rest.split("/")
    repo_type = "model"
    if parts and parts[0] in ("datasets", "models", "spaces"):
        repo_type = parts[0].rstrip("s")
        parts = parts[1:]
    if len(parts) < 2:
        raise DistilError(f"{uri}: a Hub URI needs an org and a name, e.g. hf://datasets/org/name or hf://org/model")
    name, _, revision = parts[1].partition("@")
    return HubRepo(f"{parts[0]}/{name}", repo_type, "/".join(parts[2:]), revision or "main")


def s3_filesystem() -> Any:
    try:
        import s3fs
    except ImportError:
        raise DistilError("s3:// URIs need s3fs: pip install 'distil-jobs[s3]'") from None
    # botocore reads keys, region and AWS_ENDPOINT_URL* itself; passing the endpoint explicitly
    # keeps older botocore releases working with S3-compatible stores (MinIO, SeaweedFS, Ceph).
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    fs = s3fs.S3FileSystem(endpoint_url=endpoint) if endpoint else s3fs.S3FileSystem()
    return S3Guard(fs, endpoint or "the default AWS endpoint")


class S3Guard:
    """Forwards every call to an s3fs filesystem and turns credential and connection failures into
    one-line DistilErrors: they are the user's to fix, and s3fs reports them as deep tracebacks.

    Translation happens here, around the public calls, because s3fs itself catches broad
    exceptions in places. Libraries that need a real fsspec instance (pyarrow `filesystem=`,
    datasets) take `.unwrapped`."""

    def __init__(self, fs: Any, endpoint: str) -> None:
        self._fs = fs
        self._endpoint = endpoint

    @property
    def unwrapped(self) -> Any:
        return self._fs

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._fs, name)
        if not callable(attr):
            return attr

        @functools.wraps(attr)
        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return attr(*args, **kwargs)
            except PermissionError as e:
                where = f"s3://{args[0]}" if args and isinstance(args[0], str) else "S3"
                # The message names the variables, never their values.
                raise DistilError(f"access denied to {where} at {self._endpoint} ({first_line(e)}): check "
                                  "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY") from None
            except Exception as e:
                if _is_connection_error(e):
                    raise DistilError(f"cannot reach S3 at {self._endpoint} ({first_line(e)}): check "
                                      "AWS_ENDPOINT_URL and that the server is up") from None
                raise

        return call


def _is_connection_error(e: BaseException) -> bool:
    try:
        from botocore.exceptions import ConnectionError as BotoConnectionError
    except ImportError:  # pragma: no cover - s3fs always brings botocore
        return False
    chain: BaseException | None = e
    while chain is not None:
        if isinstance(chain, BotoConnectionError):
            return True
        chain = chain.__cause__
    return False


def _is_precondition_failed(e: BaseException) -> bool:
    """True for S3's answer to a conditional put that lost (HTTP 412 PreconditionFailed).

    s3fs turns it into a bare OSError whose text depends on the server, so look at the
    botocore error it wraps."""
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


@dataclass(slots=True)
class Location:
    """An artifact root. Paths given to its methods are relative to the root, '/'-separated."""

    uri: str
    scheme: str  # "file", "s3" or "hf"
    root: str  # path inside `fs`
    fs: Any

    @property
    def is_local(self) -> bool:
        return self.scheme == "file"

    def ensure_writable(self) -> None:
        """Fail early on a local output we cannot write (remote stores report that on first write)."""
        if self.is_local:
            ensure_writable_dir(self.root, self.uri)

    def path(self, rel: str = "") -> str:
        return posixpath.join(self.root, rel) if rel else self.root

    def child(self, rel: str) -> Location:
        return Location(self.uri.rstrip("/") + "/" + rel, self.scheme, self.path(rel), self.fs)

    def exists(self, rel: str = "") -> bool:
        self._forget(rel)
        return bool(self.fs.exists(self.path(rel)))

    def read_bytes(self, rel: str) -> bytes:
        self._forget(rel)
        return bytes(self.fs.cat_file(self.path(rel)))

    def _forget(self, rel: str) -> None:
        # Other processes (shards, a resumed run) write here too: a listing cached by this
        # process must not hide a manifest or marker that appeared since.
        if self.scheme == "s3":
            self.fs.invalidate_cache(self.path(rel))

    def read_json(self, rel: str) -> Any:
        return json.loads(self.read_bytes(rel))

    def listdir(self, rel: str = "") -> list[str]:
        """File names directly under `rel` (empty when the folder does not exist)."""
        try:
            entries = self.fs.ls(self.path(rel), detail=False, refresh=True) if self.scheme != "file" \
                else self.fs.ls(self.path(rel), detail=False)
        except FileNotFoundError:
            return []
        return sorted(posixpath.basename(str(e).rstrip("/")) for e in entries)

    def size(self, rel: str) -> int:
        return int(self.fs.size(self.path(rel)))

    def delete(self, rel: str) -> None:
        if self.scheme == "hf":
            repo = parse_hub_uri(self.uri)
            _hub_api().delete_file(posixpath.join(repo.subdir, rel), repo.repo_id, repo_type=repo.repo_type,
                                   revision=repo.revision)
        elif self.exists(rel):
            self.fs.rm(self.path(rel), recursive=True)

    def put_files(self, files: list[tuple[str, str]], message: str = "distil-jobs: publish") -> None:
        """Publish local files at relative paths; each appears whole or not at all.

        Local: copy next to the target, then rename (atomic on POSIX). S3: upload under a
        temporary key, then server-side copy (an object appears only when its copy completes).
        Hub: one commit with every file.
        """
        if not files:
            return
        if self.scheme == "hf":
            self._hub_commit(files, message)
            return
        for local, rel in files:
            target = self.path(rel)
            if self.scheme == "file":
                os.makedirs(os.path.dirname(target), exist_ok=True)
                tmp = temporary_name(target)
                try:
                    shutil.copyfile(local, tmp)
                    os.replace(tmp, target)
                finally:
                    if os.path.exists(tmp):
                        os.unlink(tmp)
            else:
                tmp = self.path(f"_tmp/{uuid.uuid4().hex}")
                self.fs.put_file(local, tmp)
                try:
                    self.fs.copy(tmp, target)
                finally:
                    self.fs.rm(tmp)

    def put_bytes(self, rel: str, data: bytes, message: str = "distil-jobs: publish") -> None:
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "blob")
            Path(p).write_bytes(data)
            self.put_files([(p, rel)], message)

    def create_exclusive(self, rel: str, data: bytes) -> bool:
        """Write `rel` only if it does not exist yet. True if this call created it."""
        if self.scheme == "file":
            target = self.path(rel)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            tmp = temporary_name(target)
            Path(tmp).write_bytes(data)
            try:
                os.link(tmp, target)  # fails if target exists: the atomic "create if absent"
                return True
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp)
        if self.scheme == "s3":
            try:
                self.fs.pipe_file(self.path(rel), data, mode="create")  # S3 conditional put (If-None-Match)
                return True
            except FileExistsError:
                return False
            except OSError as e:
                if _is_precondition_failed(e):
                    return False
                raise
        # Hub: a commit whose parent is the revision we checked fails if anyone committed since.
        if self.exists(rel):
            return False
        repo = parse_hub_uri(self.uri)
        api = _hub_api()
        head = api.repo_info(repo.repo_id, repo_type=repo.repo_type, revision=repo.revision).sha
        from huggingface_hub import CommitOperationAdd

        try:
            api.create_commit(repo.repo_id, [CommitOperationAdd(posixpath.join(repo.subdir, rel), data)],
                              commit_message=f"distil-jobs: {rel}", repo_type=repo.repo_type, parent_commit=head,
                              revision=repo.revision)
        except Exception as e:  # the Hub reports a lost race as a generic HTTP error
            if self.exists(rel):
                return False
            raise DistilError(f"could not write {self.uri}/{rel}: {e}") from e
        return True

    def _hub_commit(self, files: list[tuple[str, str]], message: str) -> None:
        from huggingface_hub import CommitOperationAdd

        repo = parse_hub_uri(self.uri)
        api = _hub_api()
        api.create_repo(repo.repo_id, repo_type=repo.repo_type, exist_ok=True, private=True)
        ops = [CommitOperationAdd(posixpath.join(repo.subdir, rel), local) for local, rel in files]
        api.create_commit(repo.repo_id, ops, commit_message=message, repo_type=repo.repo_type, revision=repo.revision)
        self.fs.invalidate_cache()


def ensure_writable_dir(folder: str, uri: str) -> None:
    """Create `folder` and check we may write there, before any work is done."""
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise DistilError(f"output {uri} is not writable ({e.strerror}): choose another --output") from None
    if not os.access(folder, os.W_OK):
        raise DistilError(f"output {uri} is not writable: choose another --output")


def _hub_filesystem() -> Any:
    from huggingface_hub import HfFileSystem

    return HfFileSystem()


def _hub_api() -> Any:
    from huggingface_hub import HfApi

    return HfApi()  # reads HF_TOKEN from the environment; never passed around or logged


def open_location(uri: str) -> Location:
    """Resolve an artifact URI: a local path, file://..., s3://bucket/prefix or hf://[datasets/]org/name."""
    uri = str(uri).strip()
    if not uri:
        raise DistilError("empty URI: give a local path, s3://bucket/prefix or hf://org/name")
    if uri.startswith("s3://"):
        fs = s3_filesystem()
        return Location(uri.rstrip("/"), "s3", uri[len("s3://"):].rstrip("/"), fs)
    if uri.startswith("hf://"):
        return Location(uri.rstrip("/"), "hf", parse_hub_uri(uri).fs_root, _hub_filesystem())
    if "://" in uri and not uri.startswith("file://"):
        scheme = uri.split("://", 1)[0]
        raise DistilError(f"{uri}: unsupported scheme '{scheme}://': use a local path, file://, s3:// or hf://")
    path = os.path.abspath(os.path.expanduser(uri[len("file://"):] if uri.startswith("file://") else uri))
    return Location(path, "file", path, fsspec.filesystem("file"))
