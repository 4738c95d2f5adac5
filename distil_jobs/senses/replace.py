"""Scoring a token vector against its token's senses, and the sense-replace encoder built on it.

`sense_logits` is the one place where "which sense is meant" is computed in torch: the training
loss, the dev accuracy and the sense-replace module all call it, so they cannot disagree.

`SenseReplace` is a sentence-transformers module. Between the Transformer and the Pooling of a
sense-distilled student it projects each token vector into the teacher's space (P) and replaces
it by the nearest of its token's senses (argmax of the dot product, as in training); tokens
without senses ([CLS], [SEP], words never gathered) keep their projected vector.

A saved encoder is portable: `make_portable` puts this file beside the weights as
`sense_replace.py`, the way Hub models ship custom code, so `SentenceTransformer(path,
trust_remote_code=True)` loads it without distil_jobs (sentence-transformers >= 6 asks for
trust_remote_code before running any module of its own). This file therefore imports only torch
and sentence-transformers. distil-jobs' own loaders trust a folder whose code is byte-identical
to this file (`is_own_code`), so evaluate-mteb scores it like any other model.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any, ClassVar

import torch
from torch import nn

try:
    from sentence_transformers.base.modules.module import Module
except ImportError:  # sentence-transformers < 6
    from sentence_transformers.models import Module  # type: ignore[no-redef]


def sense_logits(centroids: torch.Tensor, offsets: torch.Tensor, tokens: torch.Tensor, vectors: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Dot products of each vector with its token's senses, padded to the most senses any token here has.

    centroids [senses, dim], offsets [vocab+1] (token t owns rows offsets[t]:offsets[t+1]),
    tokens [n], vectors [n, dim] → (logits [n, k] with -inf past a token's own senses, counts [n])."""
    lo = offsets[tokens]
    counts = offsets[tokens + 1] - lo
    width = max(int(counts.max()) if counts.numel() else 0, 1)
    slot = torch.arange(width, device=tokens.device)
    valid = slot[None, :] < counts[:, None]
    rows = torch.where(valid, lo[:, None] + slot[None, :], torch.zeros_like(lo)[:, None])
    logits = torch.einsum("nkd,nd->nk", centroids[rows].to(vectors.dtype), vectors)
    return logits.masked_fill(~valid, float("-inf")), counts


class SenseReplace(Module):
    """Token vectors → P(vector) → the nearest of the token's senses (teacher space); see the module doc."""

    config_keys: ClassVar[list[str]] = ["in_dim", "out_dim", "total_senses", "vocab_size", "projection"]

    def __init__(self, in_dim: int, out_dim: int, total_senses: int, vocab_size: int, projection: bool) -> None:
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim
        self.total_senses, self.vocab_size, self.projection = total_senses, vocab_size, projection
        self.proj: nn.Module = nn.Linear(in_dim, out_dim) if projection else nn.Identity()
        # Half precision: the dictionary is most of the folder, and argmax over a handful of senses does not
        # need more (the labels were taken from float16 teacher vectors too).
        self.register_buffer("centroids", torch.zeros(total_senses, out_dim, dtype=torch.float16))
        self.register_buffer("offsets", torch.zeros(vocab_size + 1, dtype=torch.int64))

    @classmethod
    def build(cls, proj: nn.Module, centroids: torch.Tensor, offsets: torch.Tensor) -> SenseReplace:
        """From a trained projection (Linear, or Identity for a student as wide as the teacher) and the dictionary."""
        linear = isinstance(proj, nn.Linear)
        out_dim = centroids.shape[1]
        module = cls(proj.in_features if linear else out_dim, out_dim, centroids.shape[0], offsets.numel() - 1, linear)
        with torch.no_grad():
            if linear:
                module.proj.load_state_dict({k: v.detach().float().cpu() for k, v in proj.state_dict().items()})
            module.centroids.copy_(centroids.to(torch.float16))
            module.offsets.copy_(offsets.to(torch.int64))
        return module

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        vectors = self.proj(features["token_embeddings"])
        ids = features["input_ids"].clamp(max=self.vocab_size - 1)  # ids past the dictionary have no senses
        flat, tokens = vectors.reshape(-1, vectors.shape[-1]), ids.reshape(-1)
        logits, counts = sense_logits(self.centroids, self.offsets, tokens, flat)
        has = counts > 0
        pick = (self.offsets[tokens] + logits.argmax(-1)).clamp(max=self.total_senses - 1)  # in range where unused
        chosen = self.centroids[pick].to(flat.dtype)
        replaced = torch.where(has[:, None], chosen, flat)
        features["token_embeddings"] = replaced.reshape(vectors.shape)
        return features

    def get_embedding_dimension(self) -> int:
        return self.out_dim

    def save(self, output_path: str, *args: Any, safe_serialization: bool = True, **kwargs: Any) -> None:
        # A SentenceTransformer casts its modules to one dtype; the dictionary goes to disk in half precision.
        self.centroids = self.centroids.to(torch.float16)
        self.save_config(output_path)
        self.save_torch_weights(output_path, safe_serialization=safe_serialization)

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", token: bool | str | None = None,
             cache_folder: str | None = None, revision: str | None = None, local_files_only: bool = False,
             **kwargs: Any) -> SenseReplace:
        hub = {"subfolder": subfolder, "token": token, "cache_folder": cache_folder, "revision": revision,
               "local_files_only": local_files_only}
        module = cls(**cls.load_config(model_name_or_path=model_name_or_path, **hub))
        return cls.load_torch_weights(model_name_or_path=model_name_or_path, model=module, **hub)


CODE_FILE = "sense_replace.py"  # this file, in a saved encoder's folder
PORTABLE_TYPE = "sense_replace.SenseReplace"  # how modules.json names the class there


def make_portable(folder: str) -> None:
    """Ship this module's code with a saved encoder and point modules.json at that copy."""
    shutil.copyfile(__file__, os.path.join(folder, CODE_FILE))
    path = os.path.join(folder, "modules.json")
    with open(path, encoding="utf-8") as f:
        modules = json.load(f)
    for m in modules:
        if m["type"].endswith(".SenseReplace"):
            m["type"] = PORTABLE_TYPE
    with open(path, "w", encoding="utf-8") as f:
        json.dump(modules, f, indent=2)


def is_own_code(folder: str) -> bool:
    """True for a local encoder whose only custom code is exactly this file: loading it runs nothing new."""
    try:
        with open(os.path.join(folder, "modules.json"), encoding="utf-8") as f:
            types = {m["type"] for m in json.load(f)}
        with open(os.path.join(folder, CODE_FILE), "rb") as f, open(__file__, "rb") as mine:
            same = f.read() == mine.read()
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return same and {t for t in types if not t.startswith("sentence_transformers.")} == {PORTABLE_TYPE}
