"""`--method sense`: the student learns to pick, for every token, the sense its teacher means there.

Sense distillation (Wang et al., Findings of ACL 2025): a cluster job's dictionary holds a few
senses per token id (teacher vectors at one layer). For each token j of a text the logits are
S_t · P(h_s[j]) over its token's senses, with h_s the student's last hidden state and P a
trainable projection when the student is narrower than the teacher; the label is the teacher's
nearest sense (argmax of the same dot product with the teacher's vector), and the loss is
cross-entropy averaged over the tokens that have a choice (two senses or more: a token with one
sense always scores it, and would only dilute the mean). Dev sense accuracy over those tokens is
the headline.

Labels come precomputed (`--targets`, from `precompute-embeddings --output-type sense_ids`), so no
teacher is in memory, or from an online teacher (`--input` with `--teacher`). Either way the
student reads exactly the labelled token ids, so both give the same loss.

The student is saved twice: `final/` is the plain student (its own mean-pooled vectors), and
`final/sense-replace/` the sense-replace encoder (senses/replace.py; it ships its code, so
`SentenceTransformer(path, trust_remote_code=True)` loads it, and evaluate-mteb as it is).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from distil_jobs.config import setting
from distil_jobs.errors import DistilError
from distil_jobs.senses.labels import SenseDictionary, SenseLabeler
from distil_jobs.senses.replace import SenseReplace, make_portable, sense_logits
from distil_jobs.senses.vocab import tokenizer_fingerprint
from distil_jobs.train.methods.base import MethodSetup, Metric, TrainContext, evaluating
from distil_jobs.train.methods.sense_data import SenseRows, load_senses

SENSE_REPLACE = "sense-replace"  # the sense-replace encoder's folder inside the student folder


@dataclasses.dataclass(kw_only=True, slots=True)
class SenseOptions:
    sense_dict: str | None = setting(None, "The cluster job's sense dictionary (--method sense): the senses the "
                                           "student learns to pick.", data=True)


class SenseStudent(nn.Module):
    """A sentence-transformers student and the projection P of its token vectors into the teacher's space."""

    def __init__(self, st: Any, teacher_dim: int) -> None:
        super().__init__()
        self.st = st
        width = st[0].auto_model.config.hidden_size
        self.proj: nn.Module = nn.Linear(width, teacher_dim) if width != teacher_dim else nn.Identity()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.st[0].auto_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.proj(hidden)


@dataclasses.dataclass(slots=True)
class Batch:
    input_ids: torch.Tensor  # [rows, length]
    attention_mask: torch.Tensor
    where: tuple[torch.Tensor, torch.Tensor]  # (row, position) of each scored token
    tokens: torch.Tensor  # its token id
    labels: torch.Tensor  # the teacher's sense


def special_frame(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The special tokens a tokenizer puts before and after one text, e.g. ([CLS], [SEP]) or ([<s>], [])."""
    empty = tokenizer("", add_special_tokens=True)["input_ids"]
    probe = tokenizer("a", add_special_tokens=True)["input_ids"]
    cut = next((i for i, (x, y) in enumerate(zip(empty, probe, strict=False)) if x != y), len(empty))
    return list(empty[:cut]), list(empty[cut:])


class SenseMethod:
    name: ClassVar[str] = "sense"
    Options: ClassVar[type] = SenseOptions

    def __init__(self, ctx: TrainContext) -> None:
        self.ctx = ctx
        self.opts: SenseOptions = ctx.options
        self.headline = Metric("dev_sense_accuracy", higher_is_better=True)
        self.labeler: SenseLabeler | None = None  # only with an online teacher
        self.model: Any = None

    @staticmethod
    def check_options(opts: SenseOptions) -> None:
        if not opts.sense_dict:
            raise DistilError("--method sense needs --sense-dict URI: the dictionary from distil-jobs cluster")

    # ------------------------------------------------------------ data and student

    def setup(self) -> MethodSetup:
        from distil_jobs.train.student import build_student

        cfg, device = self.ctx.cfg, self.ctx.device
        assert self.opts.sense_dict
        self.dictionary = SenseDictionary(self.opts.sense_dict)
        data = load_senses(cfg, self.dictionary)
        self.train, self.dev = data.train, data.dev
        if self.train.labels is None or (self.dev is not None and self.dev.labels is None):
            if not cfg.teacher:
                raise DistilError(f"--dev-input {cfg.dev_input} is raw text: its sense labels need --teacher, or "
                                  "label it with precompute-embeddings --output-type sense_ids")
            self.labeler = SenseLabeler(self.dictionary, cfg.teacher, str(device), cfg.max_length)
        st = build_student(cfg.student, target_dim=None, layers=cfg.student_layers, projection=False,
                           drop_normalize=False, max_length=cfg.max_length, device=device,
                           attention=self.ctx.attention, gradient_checkpointing=cfg.gradient_checkpointing)
        self.tokenizer = st[0].tokenizer
        self.frame = special_frame(self.tokenizer)
        specials = len(self.frame[0]) + len(self.frame[1])
        if cfg.max_length <= specials:
            raise DistilError(f"--max-length {cfg.max_length} leaves no room for text after the student's {specials} "
                              f"special tokens: use at least {specials + 1}")
        if tokenizer_fingerprint(self.tokenizer) != self.dictionary.extra.get("tokenizer_fingerprint"):
            raise DistilError(f"student {cfg.student} has another vocabulary than the teacher of --sense-dict "
                              f"{self.dictionary.uri} ({self.dictionary.extra.get('teacher')}): a sense is keyed by "
                              "token id, so start the student from that teacher (e.g. --student-layers 0,1,2,3)")
        teacher_dim = int(self.dictionary.centroids.shape[1])
        self.student = SenseStudent(st, teacher_dim).to(device)
        self.centroids = torch.from_numpy(self.dictionary.centroids).to(device)
        self.offsets = torch.from_numpy(self.dictionary.offsets).to(device)
        self.counts = np.diff(self.dictionary.offsets)  # senses per token id
        if self.dev is not None and self.dev.labels is None:
            self.dev.tokens, self.dev.labels = self._label(self.dev.texts)  # once, up front
        width = st[0].auto_model.config.hidden_size
        facts = {"teacher": cfg.teacher or data.teacher, "sense_dict": self.dictionary.uri,
                 "layer": self.dictionary.extra.get("layer"), "teacher_dim": teacher_dim, "student_dim": width,
                 "projection": width != teacher_dim, "labels": "online" if self.labeler else "precomputed",
                 "sense_replace": SENSE_REPLACE}
        inputs = [*data.inputs, {"role": "teacher", "uri": facts["teacher"]}, {"role": "student_init", "uri": cfg.student}]
        return MethodSetup(self.student, len(self.train), len(self.dev) if self.dev else 0, inputs, data.license, facts)

    def _label(self, texts: list[str]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        assert self.labeler is not None
        return self.labeler.label(texts, self.ctx.cfg.batch_size)

    def _rows(self, data: SenseRows, rows: list[int]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        if data.labels is None:
            return self._label([data.texts[i] for i in rows])
        assert data.tokens is not None
        return [data.tokens[i] for i in rows], [data.labels[i] for i in rows]

    def _batch(self, tokens: list[np.ndarray], labels: list[np.ndarray]) -> Batch:
        """The student's input: each row's labelled token ids between the tokenizer's special tokens, cut to
        --max-length; and which positions are scored (tokens with two senses or more)."""
        before, after = self.frame
        room = self.ctx.cfg.max_length - len(before) - len(after)  # > 0: checked in setup
        ids, where_r, where_p, scored_t, scored_l = [], [], [], [], []
        for r, (row, senses) in enumerate(zip(tokens, labels, strict=True)):
            row, senses = row[:room], senses[:room]
            ids.append(before + row.tolist() + after)
            choice = np.flatnonzero(self.counts[row] > 1)
            where_r += [r] * len(choice)
            where_p += (choice + len(before)).tolist()
            scored_t += row[choice].tolist()
            scored_l += senses[choice].tolist()
        length = max(len(x) for x in ids)
        pad = self.tokenizer.pad_token_id or 0
        device = self.ctx.device
        input_ids = torch.tensor([x + [pad] * (length - len(x)) for x in ids], device=device)
        mask = torch.tensor([[1] * len(x) + [0] * (length - len(x)) for x in ids], device=device)
        where_r, where_p, scored_t, scored_l = (torch.tensor(xs, dtype=torch.long, device=device)
                                                for xs in (where_r, where_p, scored_t, scored_l))
        return Batch(input_ids, mask, (where_r, where_p), scored_t, scored_l)

    def _logits(self, model: Any, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Sense logits of the scored tokens, and the output (for a zero loss that still reaches every weight)."""
        dtype = self.ctx.autocast
        with torch.autocast(self.ctx.device.type, dtype=dtype, enabled=dtype is not None):
            out = model(batch.input_ids, batch.attention_mask)
        logits, _ = sense_logits(self.centroids, self.offsets, batch.tokens, out[batch.where].float())
        return logits, out

    # ------------------------------------------------------------ training

    def loss(self, rows: list[int]) -> torch.Tensor:
        batch = self._batch(*self._rows(self.train, rows))
        logits, out = self._logits(self.model, batch)
        if not batch.tokens.numel():  # no token with a choice in this batch
            return out.float().sum() * 0.0
        return F.cross_entropy(logits, batch.labels)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Dev sense accuracy (the teacher's sense picked) and cross-entropy, over tokens with a choice."""
        if self.dev is None:
            return {}
        right = total = 0
        loss = 0.0
        with evaluating(self.student):
            step = self.ctx.cfg.batch_size * 2
            for b in range(0, len(self.dev), step):
                batch = self._batch(*self._rows(self.dev, list(range(b, min(b + step, len(self.dev))))))
                if not batch.tokens.numel():
                    continue
                logits, _ = self._logits(self.student, batch)
                right += int((logits.argmax(-1) == batch.labels).sum())
                loss += float(F.cross_entropy(logits, batch.labels, reduction="sum"))
                total += int(batch.tokens.numel())
        if not total:
            raise DistilError("no dev token has two senses or more: give more dev rows (--dev-fraction, --dev-input)")
        return {"dev_sense_accuracy": right / total, "dev_sense_loss": loss / total}

    # ------------------------------------------------------------ saving

    def save(self, folder: str) -> None:
        """The plain student in `folder`, the sense-replace encoder in `folder/sense-replace`."""
        from distil_jobs.train.student import mean_pooling

        st = self.student.st
        st.save(folder)
        replace = SenseReplace.build(self.student.proj, self.centroids.cpu(), self.offsets.cpu())
        normalize = [m for m in list(st)[1:] if type(m).__name__ == "Normalize"]  # as the plain student has it
        modules = [st[0], replace, mean_pooling(self.centroids.shape[1]), *normalize]
        target = os.path.join(folder, SENSE_REPLACE)
        type(st)(modules=modules, device=str(self.ctx.device)).save(target)
        make_portable(target)
