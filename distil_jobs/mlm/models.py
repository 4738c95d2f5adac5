"""Loading masked (or causal) LMs for distillation: the teacher must have a trained LM head, the
student shares its vocabulary, and logits are computed only where a loss needs them.

A sentence-transformers package ships an encoder without its LM head: `from_pretrained` then
initialises the head at random and says so only in `missing_keys`. Such a teacher would teach
noise, so it is refused, pointing to `prepare-teacher --task mlm`, which fits one.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from distil_jobs.errors import DistilError
from distil_jobs.models.loading import with_attention_fallback
from distil_jobs.models.registry import resolve_model
from distil_jobs.senses.vocab import tokenizer_fingerprint


def auto_class(causal: bool) -> Any:
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    return AutoModelForCausalLM if causal else AutoModelForMaskedLM


def head_keys(missing: set[str] | list[str], model: nn.Module) -> list[str]:
    """The missing weights that belong to the LM head (not to the base model)."""
    prefix = getattr(model, "base_model_prefix", "") + "."
    return sorted(k for k in missing if not k.startswith(prefix))


def load_tokenizer(ref: str, what: str, causal: bool) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(ref))
    if not causal and tokenizer.mask_token_id is None:
        raise DistilError(f"{what} {ref}'s tokenizer has no mask token: masked-LM distillation needs one")
    return tokenizer


def load_lm(ref: str, what: str, causal: bool, attention: str = "sdpa", *, head: str = "trained") -> tuple[Any, Any]:
    """(model, tokenizer). `head`: "trained" refuses a missing or random LM head; "new" accepts it
    (prepare-teacher fits it)."""
    tokenizer = load_tokenizer(ref, what, causal)
    path = resolve_model(ref)
    cls = auto_class(causal)
    try:
        (model, info), _ = with_attention_fallback(
            lambda attn: cls.from_pretrained(path, attn_implementation=attn, output_loading_info=True), attention)
    except ValueError as e:  # an architecture with no MLM (or causal) head class
        kind = "causal" if causal else "masked"
        raise DistilError(f"{what} {ref} cannot be loaded as a {kind} LM ({str(e).splitlines()[0][:120]}): pass a "
                          f"{kind}-LM model") from None
    missing = head_keys(info.get("missing_keys", []), model)
    if missing and head == "trained":
        raise DistilError(f"{what} {ref} has no trained LM head ({len(missing)} head weight(s) missing, e.g. "
                          f"{missing[0]}; it would be random): fit one with distil-jobs prepare-teacher --task mlm "
                          f"--model {ref} --input TEXTS --output DIR, and use DIR")
    return model, tokenizer


def check_same_vocabulary(teacher_tok: Any, student_tok: Any, teacher: str, student: str) -> None:
    if tokenizer_fingerprint(teacher_tok) != tokenizer_fingerprint(student_tok):
        raise DistilError(f"student {student} has another vocabulary than teacher {teacher}: logits are compared token "
                          "by token, so start the student from the teacher (--student TEACHER --student-layers "
                          "0,2,4,...)")


def lm_head(model: nn.Module) -> nn.Module:
    """The module that turns last hidden states into vocabulary logits."""
    for name in ("cls", "lm_head"):  # BERT-likes; RoBERTa/MPNet/XLM-R and decoders
        if hasattr(model, name):
            return getattr(model, name)
    if hasattr(model, "vocab_projector"):  # DistilBERT keeps its head in three parts
        return _DistilBertHead(model)
    raise DistilError(f"{type(model).__name__}: unknown LM head layout (expected cls, lm_head or vocab_projector)")


class _DistilBertHead(nn.Module):
    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = [model]  # a list: not registered as a submodule twice

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        m = self.model[0]
        return m.vocab_projector(m.vocab_layer_norm(m.activation(m.vocab_transform(hidden))))


class LmWithHead(nn.Module):
    """An LM whose forward returns logits only at chosen positions, and the last hidden states.

    Logits over a 30k-50k vocabulary at every position are most of the memory and time of a
    step; the losses need them at the masked positions (or, for the full KL, at the real tokens)."""

    def __init__(self, lm: nn.Module) -> None:
        super().__init__()
        self.lm = lm

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, rows: torch.Tensor,
                positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        base = getattr(self.lm, self.lm.base_model_prefix)
        hidden = base(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return lm_head(self.lm)(hidden[rows, positions]), hidden
