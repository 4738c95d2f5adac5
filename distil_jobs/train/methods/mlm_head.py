"""prepare-teacher --task mlm: fit a masked-LM head on a real encoder.

Sentence-transformers packages ship encoders without their LM head. This loads the encoder as
an AutoModelForMaskedLM (the head starts new), ties the decoder to the input embeddings as the
architecture does, and trains the head's transform and output bias on masked-token
cross-entropy; the encoder stays frozen unless --train-encoder. The masking is train-student's
(mlm/masking.py), so the teacher is fitted on the task it will teach. Headline: dev
masked-token accuracy; the model is saved as an AutoModelForMaskedLM folder.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, ClassVar

import numpy as np
import torch

from distil_jobs.config import setting
from distil_jobs.mlm.batches import Batcher
from distil_jobs.mlm.losses import label_ce
from distil_jobs.mlm.models import LmWithHead, lm_head, load_lm
from distil_jobs.train.methods import head_options
from distil_jobs.train.methods.base import LrGroup, MethodSetup, Metric, TrainContext, evaluating
from distil_jobs.train.methods.lm_data import load_lm_data
from distil_jobs.train.methods.mlm import MaskingOptions, lm_batches, make_masker, save_lm

log = logging.getLogger("distil_jobs.prepare.mlm")


@dataclasses.dataclass(kw_only=True, slots=True)
class MlmHeadOptions(MaskingOptions):
    lr: float = head_options.lr(1e-3)
    train_encoder: bool = setting(False, "Also tune the encoder (domain adaptation), not only the head.",
                                  fingerprint=True)
    head_lr_scale: float = head_options.head_lr_scale()


class MlmHeadMethod:
    name: ClassVar[str] = "mlm"
    Options: ClassVar[type] = MlmHeadOptions

    def __init__(self, ctx: TrainContext) -> None:
        self.ctx = ctx
        self.opts: MlmHeadOptions = ctx.options
        self.headline = Metric("dev_masked_accuracy", higher_is_better=True)
        self.model: Any = None

    def setup(self) -> MethodSetup:
        cfg, opts, device = self.ctx.cfg, self.opts, self.ctx.device
        data = load_lm_data(cfg)
        lm, self.tokenizer = load_lm(cfg.model, "--model", causal=False, attention=self.ctx.attention, head="new")
        lm.tie_weights()  # the decoder is the input embeddings, as the architecture was pretrained
        embeddings = lm.get_input_embeddings().weight
        lm.requires_grad_(opts.train_encoder)
        head = [p for p in lm_head(lm).parameters() if p is not embeddings]
        for p in head:
            p.requires_grad_(True)
        trainable = sum(p.numel() for p in lm.parameters() if p.requires_grad)
        log.info("%s: training %d parameters (%s)", cfg.model, trainable,
                 "encoder and head" if opts.train_encoder else "the head's transform and bias")
        masker = make_masker(opts, self.tokenizer, data.all_texts, f"--model {cfg.model}")
        self.batcher = Batcher(self.tokenizer, masker, cfg.max_length, causal=False, restrict=True, device=device)
        self.dev_batcher = Batcher(self.tokenizer, masker.uniform(), cfg.max_length, causal=False, restrict=True,
                                   device=device)
        self.student = LmWithHead(lm).to(device)
        self.train, self.dev = data.train, data.dev
        facts = {"task": "mlm", "encoder": cfg.model, "train_encoder": opts.train_encoder,
                 "trainable_parameters": trainable, "masking": masker.describe(), "dev_masking": "uniform",
                 "dropped_train_rows_in_dev": data.dropped_as_dev}
        inputs = [*data.inputs, {"role": "encoder", "uri": cfg.model}]
        groups = ()
        if opts.train_encoder and opts.head_lr_scale != 1:
            head_names = tuple(f"lm.{n}." for n in ("cls", "lm_head", "vocab_transform", "vocab_layer_norm")
                               if hasattr(lm, n))
            groups = (LrGroup("head", head_names, lr_scale=opts.head_lr_scale),)
        return MethodSetup(self.student, len(self.train), len(self.dev) if self.dev else 0, inputs, data.license, facts,
                           lr_groups=groups)

    def loss(self, rows: list[int]) -> torch.Tensor:
        part = self.train.subset(np.asarray(rows))
        batch = self.batcher.from_texts(part.texts, part.row_ids.tolist())
        dtype = self.ctx.autocast
        with torch.autocast(self.ctx.device.type, dtype=dtype, enabled=dtype is not None):
            logits, hidden = self.model(batch.input_ids, batch.attention_mask, batch.rows, batch.positions)
        if not batch.scored.numel():
            return hidden.float().sum() * 0.0
        return label_ce(logits[batch.scored], batch.labels)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        from distil_jobs.mlm.evaluate import lm_metrics

        if self.dev is None:
            return {}
        with evaluating(self.student):
            return lm_metrics(lambda b: self.student(b.input_ids, b.attention_mask, b.rows, b.positions),
                              lm_batches(self.dev_batcher, self.dev, self.ctx.cfg.batch_size * 2), self.headline.name)

    def save(self, folder: str) -> None:
        save_lm(self.student.lm, self.tokenizer, folder)
