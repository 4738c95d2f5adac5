"""Loading models with the best attention kernel the architecture has.

flash-attn 2 on CUDA when installed, else PyTorch's sdpa; architectures without an sdpa kernel in
transformers (MPNet, for one) raise ValueError/ImportError for it, and get eager attention.
Every loader of the project (teachers, students, evaluated models) goes through here, so a model
that loads in one job loads in all of them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from distil_jobs.errors import DistilError, first_line

log = logging.getLogger("distil_jobs.models")
T = TypeVar("T")


def with_attention_fallback(load: Callable[[str], T], attention: str) -> tuple[T, str]:
    """`load(attention)`, retried with eager attention when the architecture lacks the kernel."""
    try:
        return load(attention), attention
    except (ValueError, ImportError) as e:
        if attention == "eager":
            raise
        log.info("attention %s unavailable (%s): using eager", attention, first_line(e, 120))
        return load("eager"), "eager"


def load_sentence_transformer(path: str, what: str, device: str, attention: str = "sdpa",
                              trust_remote_code: bool = False, **model_kwargs: Any) -> tuple[Any, str]:
    """A SentenceTransformer and the attention it runs with. A model that cannot load is a one-line error
    naming `what` (e.g. "student minilm")."""
    from sentence_transformers import SentenceTransformer

    from distil_jobs.senses.replace import is_own_code

    trust_remote_code = trust_remote_code or is_own_code(path)  # a sense-replace encoder runs our own code

    def load(attn: str) -> Any:
        kwargs = dict(model_kwargs, attn_implementation=attn)
        if attn != "flash_attention_2":
            kwargs.pop("dtype", None)  # bf16 weights only where the flash kernel needs them
        return SentenceTransformer(path, device=device, trust_remote_code=trust_remote_code, model_kwargs=kwargs)

    try:
        return with_attention_fallback(load, attention)
    except DistilError:
        raise
    except (OSError, ValueError, KeyError) as e:
        raise DistilError(f"cannot load {what} ({first_line(e)}): pass a model folder, alias or hub id") from None
