"""Sentence encoders: a sentence-transformers folder or a plain transformers model, one interface.

`TextEncoder.encode` returns float32 arrays for the requested outputs, in input order:
- `final`: the model's sentence embedding (the full sentence-transformers pipeline);
- `pre_dense`: the pooled embedding before any Dense/Normalize module;
- `hidden_states`: a masked mean of each requested layer (0 = the embedding layer).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from distil_jobs.errors import DistilError, first_line
from distil_jobs.models.loading import load_sentence_transformer, with_attention_fallback
from distil_jobs.models.registry import resolve_model

log = logging.getLogger("distil_jobs.models")

OUTPUT_TYPES = ("final", "pre_dense", "hidden_states")
POOLINGS = ("auto", "cls", "mean", "last")


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DistilError(f"--device {device} asked for, but no CUDA device is visible: use --device cpu or auto")
    return torch.device(device)


def pick_attention(device: torch.device) -> str:
    """flash-attn 2 where it can run (CUDA and the package importable), else PyTorch's sdpa."""
    if device.type == "cuda" and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def column_name(output_type: str, layer: int | None = None) -> str:
    if output_type == "hidden_states":
        return f"hidden_state_layer_{layer}"
    return f"teacher_embedding_{output_type}"


def pool(token_embeddings: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "cls":
        return token_embeddings[:, 0]
    if mode == "last":
        # Index of the last real token per row; works for right padding.
        last = mask.sum(dim=1).clamp(min=1) - 1
        return token_embeddings[torch.arange(token_embeddings.size(0), device=last.device), last]
    m = mask.unsqueeze(-1).to(token_embeddings.dtype)
    return (token_embeddings * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)


class TextEncoder:
    """Loads a teacher once and encodes batches of text with it."""

    def __init__(self, ref: str, device: str = "auto", pooling: str = "auto", max_length: int | None = None,
                 trust_remote_code: bool = False, compile: bool = False) -> None:
        self.ref = ref
        self.device = pick_device(device)
        self.pooling = pooling
        self.path = resolve_model(ref)
        self.attention = pick_attention(self.device)
        self.st: Any = None
        self._load(trust_remote_code)
        if max_length:
            self.tokenizer.model_max_length = max_length
            if self.st is not None:
                self.st.max_seq_length = max_length
        self.max_length = max_length or min(getattr(self.tokenizer, "model_max_length", 512) or 512, 8192)
        self.model.eval()
        self.autocast_dtype = torch.bfloat16 if self.device.type == "cuda" and torch.cuda.is_bf16_supported() else None
        if compile:
            self.model = torch.compile(self.model, dynamic=True)
        log.info("loaded %s on %s (attention=%s, autocast=%s, layers=%d)", ref, self.device, self.attention,
                 self.autocast_dtype, self.num_layers)

    def _load(self, trust_remote_code: bool) -> None:
        # flash-attn kernels take only half-precision weights; the loader drops this for other kernels.
        extra: dict[str, Any] = {"dtype": torch.bfloat16} if self.attention == "flash_attention_2" else {}
        if os.path.exists(os.path.join(self.path, "modules.json")):
            self.st, self.attention = load_sentence_transformer(self.path, f"model {self.ref}", str(self.device), self.attention,
                                                                trust_remote_code, **extra)
            self.model = self.st[0].auto_model
            self.tokenizer = self.st[0].tokenizer
            return
        from transformers import AutoModel, AutoTokenizer

        def load(attn: str) -> Any:
            kwargs = extra if attn == "flash_attention_2" else {}
            return AutoModel.from_pretrained(self.path, trust_remote_code=trust_remote_code, attn_implementation=attn,
                                             **kwargs)

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.path, trust_remote_code=trust_remote_code)
            self.model, self.attention = with_attention_fallback(load, self.attention)
        except (OSError, ValueError, KeyError) as e:
            raise DistilError(f"cannot load model {self.ref} ({first_line(e)}): pass a model folder, alias or hub id"
                              ) from None
        self.model.to(self.device)

    @property
    def num_layers(self) -> int:
        return int(getattr(self.model.config, "num_hidden_layers", 0))

    @property
    def is_decoder(self) -> bool:
        cfg = self.model.config
        return bool(getattr(cfg, "is_decoder", False)) or any(a.endswith("ForCausalLM") for a in cfg.architectures or [])

    def _pooling_mode(self) -> str:
        if self.pooling != "auto":
            return self.pooling
        return "last" if self.is_decoder else "mean"

    def check_layers(self, layers: list[int]) -> None:
        bad = [i for i in layers if i < 0 or i > self.num_layers]
        if bad:
            raise DistilError(f"layer {bad[0]} out of range for {self.ref}: it has layers 0..{self.num_layers} (0 = embeddings)")

    def dims(self, output_type: str, layers: list[int]) -> dict[str, int]:
        sample = self.encode(["dimension probe"], output_type, layers, batch_size=1, progress=False)
        return {k: v.shape[1] for k, v in sample.items()}

    def _tokenize(self, texts: list[str]) -> dict[str, Any]:
        if self.st is not None:
            feats = self.st.preprocess(texts)
        else:
            feats = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        return {k: (v.to(self.device) if isinstance(v, torch.Tensor) else v) for k, v in dict(feats).items()}

    def _forward(self, texts: list[str], output_type: str, layers: list[int]) -> dict[str, torch.Tensor]:
        feats = self._tokenize(texts)
        mask = feats["attention_mask"]
        if output_type == "hidden_states":
            inputs = {k: v for k, v in feats.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
            hidden = self.model(**inputs, output_hidden_states=True).hidden_states
            return {column_name(output_type, i): pool(hidden[i], mask, "mean") for i in layers}
        if self.st is None:
            out = self.model(**{k: v for k, v in feats.items() if k != "modality"})
            return {column_name(output_type): pool(out.last_hidden_state, mask, self._pooling_mode())}
        from sentence_transformers.base.modules.normalize import Normalize
        from sentence_transformers.sentence_transformer.modules.pooling import Pooling

        for module in self.st:
            if output_type == "pre_dense" and (isinstance(module, Normalize) or type(module).__name__ == "Dense"):
                break
            if isinstance(module, Pooling) and self.pooling != "auto":
                feats["sentence_embedding"] = pool(feats["token_embeddings"], mask, self.pooling)
            else:
                feats = module(feats)
        return {column_name(output_type): feats["sentence_embedding"]}

    def batches(self, texts: list[str], batch_size: int) -> Iterator[list[int]]:
        """Batches of indices, longest texts first: padding waste is small and an OOM shows early."""
        order = np.argsort([-len(t) for t in texts], kind="stable")
        for start in range(0, len(order), batch_size):
            yield order[start:start + batch_size].tolist()

    @torch.inference_mode()
    def encode(self, texts: list[str], output_type: str = "final", layers: list[int] | None = None,
               batch_size: int = 64, normalize: bool = False, progress: bool = True) -> dict[str, np.ndarray]:
        from tqdm.auto import tqdm

        layers = layers or []
        results: dict[str, np.ndarray] = {}
        bar = tqdm(total=len(texts), desc="encode", unit="rows", disable=not progress, leave=False)
        for idx in self.batches(texts, batch_size):
            with torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
                out = self._forward([texts[i] for i in idx], output_type, layers)
            for name, emb in out.items():
                emb = emb.float()
                if normalize:
                    emb = torch.nn.functional.normalize(emb, dim=-1)
                if name not in results:
                    results[name] = np.empty((len(texts), emb.shape[1]), dtype=np.float32)
                results[name][idx] = emb.cpu().numpy()
            bar.update(len(idx))
        bar.close()
        return results
