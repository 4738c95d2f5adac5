"""Where an artifact lives: a local folder, an S3-compatible prefix or a Hugging Face Hub repo.

Every write goes through `put_files` (atomic per file, one commit on the Hub) or
`create_exclusive` (exactly one writer wins), so a reader never sees a half-written file.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec

from distil_jobs.artifacts.s3 import is_precondition_failed, s3_filesystem
from distil_jobs.errors import DistilError

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


_HUB_NAME = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?$")


def parse_hub_uri(uri: str) -> HubRepo:
    """hf://[datasets/]org/name[@revision][/subdir]; the revision defaults to main."""
    rest = uri[len("hf://"):].strip("/")
    parts = rest.split("/")
    repo_type = "model"
    if parts and parts[0] in ("datasets", "models", "spaces"):
        repo_type = parts[0].rstrip("s")
        parts = parts[1:]
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise DistilError(f"{uri}: a Hub URI needs an org and a name, e.g. hf://datasets/org/name or hf://org/model")
    name, at, revision = parts[1].partition("@")
    for part in (parts[0], name):
        # The Hub's own rule; checked here so a typo is one line, not huggingface_hub's HfUriError traceback.
        if not _HUB_NAME.match(part) or "--" in part or ".." in part:
            raise DistilError(f"{uri}: '{part}' is not a valid Hub org or repo name (letters, digits, '-', '_', '.'; "
                              "at most 96; no leading or trailing '-' or '.'): fix the URI")
    if at and not revision:
        raise DistilError(f"{uri}: '@' without a revision: write hf://org/name@REVISION, or drop the '@' for main")
    subdir = [p for p in parts[2:] if p]
    if ".." in subdir:
        raise DistilError(f"{uri}: '..' is not allowed in a Hub path: name the folder inside the repo directly")
    return HubRepo(f"{parts[0]}/{name}", repo_type, "/".join(subdir), revision or "main")


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
            api = _hub_api()
            # A folder (e.g. an old checkpoint) goes in one commit; delete_file refuses folders.
            remove = api.delete_folder if self.fs.isdir(self.path(rel)) else api.delete_file
            remove(posixpath.join(repo.subdir, rel), repo.repo_id, repo_type=repo.repo_type, revision=repo.revision)
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
                if is_precondition_failed(e):
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


class HubOffline(DistilError):
    """hf:// used while HF_HUB_OFFLINE is set: huggingface_hub refuses every request, deep in a traceback."""


def _require_hub_online() -> None:
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:  # huggingface_hub's own reading of HF_HUB_OFFLINE (1/true/yes/on)
        raise HubOffline("the Hugging Face Hub is offline here (HF_HUB_OFFLINE is set): unset HF_HUB_OFFLINE to "
                         "reach it, or use a local path instead")


def _hub_filesystem() -> Any:
    _require_hub_online()
    from huggingface_hub import HfFileSystem

    return HfFileSystem()


def _hub_api() -> Any:
    _require_hub_online()
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
        root = parse_hub_uri(uri).fs_root
        try:
            fs = _hub_filesystem()
        except HubOffline as e:
            raise HubOffline(f"{uri}: {e}") from None
        return Location(uri.rstrip("/"), "hf", root, fs)
    if "://" in uri and not uri.startswith("file://"):
        scheme = uri.split("://", 1)[0]
        raise DistilError(f"{uri}: unsupported scheme '{scheme}://': use a local path, file://, s3:// or hf://")
    path = os.path.abspath(os.path.expanduser(uri[len("file://"):] if uri.startswith("file://") else uri))
    return Location(path, "file", path, fsspec.filesystem("file"))
