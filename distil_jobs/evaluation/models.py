"""Models to evaluate: resolve each URI to a local folder (or cached hub id) and a report label."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distil_jobs.errors import DistilError
from distil_jobs.models.registry import REGISTRY, resolve_model

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True, slots=True)
class EvalModel:
    uri: str  # as the user gave it
    label: str  # column name in the report and folder name under results/
    path: str  # what from_pretrained opens: a local folder or a hub id


def _manifest_label(uri: str) -> str | None:
    """A label recorded by the job that made the model (train-student writes its run's label)."""
    from distil_jobs.artifacts.manifest import read_manifest

    candidates = [uri]
    if uri.rstrip("/").endswith("/final"):  # the student folder inside a train-student output
        candidates.append(uri.rstrip("/")[: -len("/final")])
    for c in candidates:
        try:
            manifest = read_manifest(c)
        except (OSError, DistilError, ValueError):
            continue
        if manifest:
            for section in (manifest.get("extra") or {}, manifest.get("config") or {}):
                for key in ("label", "name", "run_name"):
                    if section.get(key):
                        return str(section[key])
    return None


def default_label(uri: str) -> str:
    ref = uri.strip().rstrip("/")
    if ref in REGISTRY:
        return ref
    local = ref[len("file://"):] if ref.startswith("file://") else ref
    if "://" not in ref and os.path.exists(os.path.expanduser(local)):
        found = _manifest_label(local)
        if found:
            return _UNSAFE.sub("_", found)
        p = Path(local).expanduser().resolve()
        return p.parent.name if p.name == "final" else p.name
    return _UNSAFE.sub("_", ref.rsplit("/", 1)[-1])


def _check_hub_id_offline(ref: str, path: str) -> None:
    """With HF_HUB_OFFLINE a hub id works only if cached: say so now, not after other models ran."""
    if os.path.isdir(path) or os.environ.get("HF_HUB_OFFLINE", "").lower() not in ("1", "true", "yes"):
        return
    from huggingface_hub import try_to_load_from_cache

    if not isinstance(try_to_load_from_cache(path, "config.json"), str):
        raise DistilError(f"model {ref} is not in the local Hugging Face cache and HF_HUB_OFFLINE=1: "
                          "pass a local folder or alias, or download it once online")


def resolve_models(uris: list[str], labels: list[str]) -> list[EvalModel]:
    if not uris:
        raise DistilError("no model to evaluate: pass --model URI (repeatable) or --models a,b")
    if labels and len(labels) != len(uris):
        raise DistilError(f"{len(labels)} --label value(s) for {len(uris)} model(s): "
                          "give one label per model, in order")
    out = []
    for i, uri in enumerate(uris):
        path = resolve_model(uri)  # also finds final/ inside a train-student output, local or downloaded
        _check_hub_id_offline(uri, path)
        label = _UNSAFE.sub("_", labels[i]) if labels else default_label(uri)
        out.append(EvalModel(uri, label, path))
    seen: dict[str, str] = {}
    for m in out:
        if m.label in seen:
            raise DistilError(f"models {seen[m.label]} and {m.uri} both get the label '{m.label}': "
                              "pass --label for each model")
        seen[m.label] = m.uri
    return out


def load_eval_model(model: EvalModel, device: str, max_length: int | None) -> Any:
    """A SentenceTransformer named after the label, so mteb files its results under results/<label>/."""
    from distil_jobs.models.encoder import pick_attention, pick_device
    from distil_jobs.models.loading import load_sentence_transformer

    dev = pick_device(device)
    st, _ = load_sentence_transformer(model.path, f"model {model.uri}", str(dev), pick_attention(dev))
    if max_length:
        st.max_seq_length = max_length
    st.model_card_data.model_name = model.label
    return st
