"""A teacher's contextual token vectors: any transformers encoder or decoder, optionally with a
PEFT adapter merged in, and the positions of each text worth sampling.

Texts may carry an instruction prefix (`instruction + separator + text`, as instruction-tuned
embedders such as LLM2Vec see them); the prefix conditions the text's vectors but its own tokens
are never sampled. Padding is on the right, so a sampled `position` indexes the unpadded sequence
and a causal model's vectors are those of the text alone.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from distil_jobs.errors import DistilError, first_line
from distil_jobs.models.encoder import pick_attention, pick_device
from distil_jobs.models.loading import with_attention_fallback
from distil_jobs.models.registry import resolve_model
from distil_jobs.senses.vocab import excluded_ids, tokenizer_fingerprint, vocab_size

log = logging.getLogger("distil_jobs.senses")


def merge_adapter(model: Any, adapter: str) -> Any:
    """The model with a PEFT (LoRA) adapter merged into its weights, so sampling runs the plain model."""
    try:
        from peft import PeftModel
    except ImportError:
        raise DistilError("--adapter needs the peft package: pip install peft") from None
    try:
        return PeftModel.from_pretrained(model, adapter).merge_and_unload()
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise DistilError(f"cannot merge adapter {adapter} ({first_line(e)}): pass a PEFT adapter folder made "
                          "for this teacher") from None


class TokenTeacher:
    """Loads the teacher once; `encode` gives the hidden states of one layer and which positions to sample."""

    def __init__(self, ref: str, device: str = "auto", max_length: int | None = None, adapter: str | None = None,
                 trust_remote_code: bool = False) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.ref = ref
        self.device = pick_device(device)
        self.path = resolve_model(ref)
        attention = pick_attention(self.device)
        # flash-attn kernels take only half-precision weights.
        extra: dict[str, Any] = {"dtype": torch.bfloat16} if attention == "flash_attention_2" else {}

        def load(attn: str) -> Any:
            kwargs = extra if attn == "flash_attention_2" else {}
            return AutoModel.from_pretrained(self.path, trust_remote_code=trust_remote_code, attn_implementation=attn,
                                             **kwargs)

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.path, trust_remote_code=trust_remote_code)
            self.model, self.attention = with_attention_fallback(load, attention)
        except (OSError, ValueError, KeyError) as e:
            raise DistilError(f"cannot load teacher {ref} ({first_line(e)}): pass a model folder, alias or hub id"
                              ) from None
        if adapter:
            self.model = merge_adapter(self.model, adapter)
        self.model.to(self.device).eval()
        if self.tokenizer.pad_token is None:  # decoders often have none; padding is masked out anyway
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        self.tokenizer.padding_side = "right"
        limit = getattr(self.tokenizer, "model_max_length", 512) or 512
        self.max_length = max_length or min(int(limit), 8192)  # some tokenizers say 1e30: "no limit"
        self.autocast_dtype = torch.bfloat16 if self.device.type == "cuda" and torch.cuda.is_bf16_supported() else None
        self.excluded = np.asarray(excluded_ids(self.tokenizer), dtype=np.int64)
        self.vocab_size = vocab_size(self.tokenizer)
        self.fingerprint = tokenizer_fingerprint(self.tokenizer)
        self.num_states = int(getattr(self.model.config, "num_hidden_layers", 0)) + 1  # + the embedding layer
        self.dim = int(self.encode(["dimension probe"], [""], self.num_states - 1)[2].shape[-1])
        log.info("loaded teacher %s on %s (attention=%s, hidden states 0..%d, dim %d, vocabulary %d)", ref,
                 self.device, self.attention, self.num_states - 1, self.dim, self.vocab_size)

    def layer_index(self, layer: int) -> int:
        """--layer as an index into the hidden states (0 = embeddings, -1 = last)."""
        n = self.num_states
        if not -n <= layer < n:
            raise DistilError(f"--layer {layer} is out of range for {self.ref}: it has hidden states 0..{n - 1} "
                              f"(0 = embeddings), or -{n}..-1 counting from the last")
        return layer % n

    @torch.inference_mode()
    def encode(self, texts: list[str], prefixes: list[str], layer: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(input ids, positions to sample, float16 hidden states of `layer`), each (batch, length[, dim]).

        A position is sampled when it is a real token of the text: not padding, not a special
        token, not part of the row's prefix (its characters start before the prefix ends)."""
        full = [p + t for p, t in zip(prefixes, texts, strict=True)]
        offsets = any(prefixes)
        if offsets and not self.tokenizer.is_fast:
            raise DistilError(f"an instruction needs a fast tokenizer (character offsets) and {self.ref} has none")
        feats = self.tokenizer(full, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt",
                               return_offsets_mapping=offsets)
        ids = feats["input_ids"].numpy()
        keep = feats["attention_mask"].numpy().astype(bool) & ~np.isin(ids, self.excluded)
        if offsets:
            starts = feats.pop("offset_mapping")[..., 0].numpy()
            keep &= starts >= np.asarray([len(p) for p in prefixes])[:, None]
        inputs = {k: v.to(self.device) for k, v in feats.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        last = layer == self.num_states - 1
        with torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
            # Every layer's states only when an inner one is asked for: for a large decoder they dwarf the batch.
            out = self.model(**inputs, output_hidden_states=not last)
        hidden = out.last_hidden_state if last else out.hidden_states[layer]
        return ids, keep, hidden.to(torch.float16).cpu().numpy()
