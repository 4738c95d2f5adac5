"""Building the student: a SentenceTransformer, optionally cut to a subset of its layers and
given a Dense projection to the teacher's dimension, so the saved folder is a drop-in model."""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from torch import nn

from distil_jobs.errors import DistilError
from distil_jobs.models.loading import load_sentence_transformer
from distil_jobs.models.registry import resolve_model

log = logging.getLogger("distil_jobs.train.student")


def _st_modules() -> tuple[type, type]:
    try:
        from sentence_transformers.sentence_transformer.modules import Dense, Normalize
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.models import Dense, Normalize
    return Dense, Normalize


def mean_pooling(dim: int) -> Any:
    """A sentence-transformers mean Pooling over `dim`-wide token vectors."""
    try:
        from sentence_transformers.sentence_transformer.modules import Pooling
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.models import Pooling
    return Pooling(dim, "mean")


def layer_list(model: nn.Module) -> nn.ModuleList:
    """The transformer's stack of layers: the ModuleList as long as config.num_hidden_layers
    (encoder.layer for BERT/MPNet, transformer.layer for DistilBERT, layers for most decoders)."""
    n = int(getattr(model.config, "num_hidden_layers", -1))
    for _, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == n:
            return module
    raise DistilError(f"cannot find the layer stack of {type(model).__name__}: --student-layers does not support it")


def keep_layers(model: nn.Module, layers: list[int]) -> None:
    """Layer reduction (DistilBERT / sentence-transformers style): keep only the listed layers."""
    stack = layer_list(model)
    bad = [i for i in layers if not 0 <= i < len(stack)]
    if bad or len(set(layers)) != len(layers):
        raise DistilError(f"--student-layers {','.join(map(str, layers))}: use distinct layers in 0..{len(stack) - 1}")
    kept = [stack[i] for i in sorted(layers)]
    for new_index, layer in enumerate(kept):
        # Some attention modules remember their index (KV caches); keep it consistent.
        for m in layer.modules():
            if hasattr(m, "layer_idx"):
                m.layer_idx = new_index
    stack._modules.clear()
    for i, layer in enumerate(kept):
        stack.add_module(str(i), layer)
    model.config.num_hidden_layers = len(kept)


def set_dropout(model: nn.Module, p: float) -> None:
    """Every dropout of the model (hidden, attention, embeddings) at `p`, also in its saved config."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = p
    for key in ("hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "attention_dropout"):
        if hasattr(model.config, key):
            setattr(model.config, key, p)


def features(student: Any, texts: list[str], device: torch.device) -> dict[str, Any]:
    """A SentenceTransformer's tokenized batch, its tensors on `device`."""
    # sentence-transformers >= 6 renamed tokenize to preprocess.
    prep = getattr(student, "preprocess", None) or student.tokenize
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in prep(texts).items()}


def build_student(ref: str, *, target_dim: int | None, layers: list[int], projection: bool, drop_normalize: bool,
                  max_length: int | None, device: torch.device, attention: str,
                  gradient_checkpointing: bool = False) -> Any:
    """The student SentenceTransformer on `device`, its output `target_dim` wide (None: as it comes)."""
    Dense, Normalize = _st_modules()
    path = resolve_model(ref)
    st, _ = load_sentence_transformer(path, f"student {ref}", str(device), attention)
    if not os.path.exists(os.path.join(path, "modules.json")):
        log.info("%s is a plain transformers model: sentence-transformers added mean pooling", ref)
    backbone = st[0].auto_model
    if layers:
        keep_layers(backbone, layers)
    if max_length:
        st.max_seq_length = max_length
    if drop_normalize:
        # Targets taken before the teacher's Normalize are not unit vectors: the student must not normalise.
        kept = [m for m in st if not isinstance(m, Normalize)]
        if len(kept) != len(st):
            st = type(st)(modules=kept, device=str(device))
    dim = (st.get_embedding_dimension if hasattr(st, "get_embedding_dimension")
           else st.get_sentence_embedding_dimension)()
    if target_dim is not None and dim != target_dim:
        if not projection:
            raise DistilError(f"student {ref} gives {dim}-dim embeddings but the targets have {target_dim}: "
                              "allow a projection (drop --no-projection) or pick a student of that width")
        dense = Dense(dim, target_dim, bias=True, activation_function=nn.Identity())
        modules = list(st)
        at = next((i for i, m in enumerate(modules) if isinstance(m, Normalize)), len(modules))
        modules.insert(at, dense)  # before Normalize, so a normalised student stays normalised
        st = type(st)(modules=modules, device=str(device))
        log.info("student %s: added a trainable Dense projection %d → %d", ref, dim, target_dim)
    # BERT-style poolers are loaded but never used by sentence-transformers: freeze them, or DDP waits
    # forever for their gradients (and ZeRO reduces them for nothing).
    for name, p in backbone.named_parameters():
        if name.startswith("pooler."):
            p.requires_grad_(False)
    if gradient_checkpointing:
        backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    st.to(device)
    st.train()
    return st
