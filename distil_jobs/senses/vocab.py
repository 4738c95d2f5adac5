"""Tokenizer identity: which token ids a sense dictionary is keyed by, and whether two tokenizers agree.

A sense dictionary is indexed by token id, so it is only meaningful with the vocabulary it was
gathered with. `tokenizer_fingerprint` names that vocabulary; gather-senses records it in its
manifest and every later consumer (cluster, the training method) refuses a dictionary whose
fingerprint is not its own tokenizer's.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """sha256 of the vocabulary: the JSON of its (token, id) pairs sorted by token, added tokens included.

    The pairs, not the ids alone: two vocabularies of the same size that map one string to
    different ids must not pass for each other."""
    pairs = sorted((str(token), int(idx)) for token, idx in tokenizer.get_vocab().items())
    blob = json.dumps(pairs, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()


def vocab_size(tokenizer: Any) -> int:
    """One past the largest token id the tokenizer can produce (added tokens may lie past `vocab_size`)."""
    return max(int(i) for i in tokenizer.get_vocab().values()) + 1


def excluded_ids(tokenizer: Any) -> list[int]:
    """Ids never sampled: special tokens ([CLS], </s>, ...) and padding carry no word sense."""
    ids = {int(i) for i in tokenizer.all_special_ids}
    if tokenizer.pad_token_id is not None:
        ids.add(int(tokenizer.pad_token_id))
    return sorted(ids)
