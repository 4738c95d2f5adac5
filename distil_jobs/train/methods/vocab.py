"""Extend a WordPiece student's vocabulary with pieces of a new language that keep its diacritics.

MiniLM's tokenizer lowercases and strips accents, so every Yoruba tone mark and underdot is gone
before the model sees the text: "Ẹ kú àárọ̀, ṣé àlàáfíà ni?" becomes `e ku aa ##ro , se ala ##af
##ia ni ?`, and words that differ only in tone collapse into one. This module:

1. trains a WordPiece vocabulary (`tokenizers`) on the new language's text, lowercased, NFC, with
   accents kept;
2. adds the pieces that are new *and* carry a non-ASCII character. Pure-ASCII pieces are left out
   on purpose: then ASCII text (English) is tokenized exactly as before, piece for piece;
3. switches the normaliser to NFC + lowercase without accent stripping;
4. grows the embedding matrix, each new row the mean of the old embeddings of the piece with its
   accents stripped, as the old tokenizer splits it (FOCUS/WECHSEL-style: new pieces start where
   the model already put their plain spelling).

The tokenizer is saved with the student (as a plain fast tokenizer: tokenizer.json verbatim), so
`SentenceTransformer(path)` loads it as trained.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from distil_jobs.errors import DistilError
from distil_jobs.train.methods.embedding_data import strip_diacritics

log = logging.getLogger("distil_jobs.train.vocab")
_SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def train_pieces(texts: list[str], size: int) -> list[str]:
    """A WordPiece vocabulary of `size` pieces learned on `texts`, accents kept."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=size, min_frequency=2, special_tokens=list(_SPECIAL),
                                        continuing_subword_prefix="##", show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return [p for p in tok.get_vocab() if p not in _SPECIAL]


def extend(transformer: Any, texts: list[str], size: int) -> dict[str, Any]:
    """Extend a sentence-transformers `Transformer` module's tokenizer and embeddings in place."""
    from tokenizers import models, normalizers
    from transformers import PreTrainedTokenizerFast

    tokenizer = transformer.tokenizer
    backend = tokenizer.backend_tokenizer
    if not isinstance(backend.model, models.WordPiece):
        raise DistilError(f"--extend-vocab needs a WordPiece tokenizer (BERT, MiniLM); this student's is "
                          f"{type(backend.model).__name__}")
    vocab = tokenizer.get_vocab()
    new = sorted({p for p in train_pieces(texts, size) if p not in vocab and not p.isascii()})
    if not new:
        return {"added": 0}
    model = transformer.auto_model
    old_embeddings = model.get_input_embeddings().weight.detach().clone()
    seeds = [_seed_ids(tokenizer, piece) for piece in new]  # with the old tokenizer, before it changes

    extended = dict(vocab)
    for piece in new:
        extended[piece] = len(extended)
    backend.model = models.WordPiece(vocab=extended, unk_token=str(tokenizer.unk_token),
                                     max_input_chars_per_word=100, continuing_subword_prefix="##")
    backend.normalizer = normalizers.Sequence([
        normalizers.NFC(),
        normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=True)])
    # A BertTokenizer rebuilds its normaliser from its settings when it is loaded; a plain fast tokenizer
    # loads tokenizer.json as it is, so the saved student tokenizes exactly as it was trained.
    fast = PreTrainedTokenizerFast(
        tokenizer_object=backend, model_max_length=tokenizer.model_max_length,
        **{k: str(getattr(tokenizer, k)) for k in ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token")})
    if getattr(transformer, "processor", None) is tokenizer:  # sentence-transformers >= 6: the processor is it
        transformer.processor = fast
    else:
        transformer.tokenizer = fast
    model.resize_token_embeddings(len(extended))
    weight = model.get_input_embeddings().weight
    with torch.no_grad():
        for piece, ids in zip(new, seeds, strict=True):
            weight[extended[piece]] = old_embeddings[ids].mean(0) if ids else old_embeddings.mean(0)
    log.info("vocabulary extended by %d pieces with diacritics (%d → %d)", len(new), len(vocab), len(extended))
    return {"added": len(new), "vocab_size": len(extended), "examples": new[:10]}


def _seed_ids(tokenizer: Any, piece: str) -> list[int]:
    text = strip_diacritics(piece.removeprefix("##"))  # the spelling the old tokenizer understands
    return [i for i in tokenizer(text, add_special_tokens=False)["input_ids"] if i != tokenizer.unk_token_id]
