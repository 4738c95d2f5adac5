"""prepare-teacher --task qa: fine-tune an encoder and a new QA head on SQuAD-format data.

No SQuAD-tuned model with real weights ships on PyPI. This loads an encoder (e.g. mpnet) as an
AutoModelForQuestionAnswering (the `qa_outputs` head starts new) and trains the encoder and the
head on the gold spans of the training articles; the held-out articles score it (SQuAD EM/F1,
the headline F1). The head, starting from scratch, takes --head-lr-scale times --lr. The model is
saved as an AutoModelForQuestionAnswering folder: train-student --method qa's --teacher, and
precompute-embeddings --output-type qa_logits's.
"""

from __future__ import annotations

import dataclasses
import logging

from distil_jobs.qa.models import load_qa, load_qa_tokenizer
from distil_jobs.train.methods import head_options
from distil_jobs.train.methods.base import LrGroup, MethodSetup
from distil_jobs.train.methods.qa import QaTraining
from distil_jobs.train.methods.qa_data import QaDataOptions

log = logging.getLogger("distil_jobs.prepare.qa")


@dataclasses.dataclass(kw_only=True, slots=True)
class QaHeadOptions(QaDataOptions):
    lr: float = head_options.lr(5e-5)
    head_lr_scale: float = head_options.head_lr_scale()


class QaHeadMethod(QaTraining):
    Options = QaHeadOptions

    def setup(self) -> MethodSetup:
        cfg = self.ctx.cfg
        self.tokenizer = load_qa_tokenizer(cfg.model, "--model")
        data = self._load_data(cfg.model)  # bad data fails before the model loads
        model, _ = load_qa(cfg.model, "--model", self.ctx.attention, head="new")
        if cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.student = model.to(self.ctx.device)
        groups = ()
        if self.opts.head_lr_scale != 1:
            groups = (LrGroup("head", ("qa_outputs.",), lr_scale=self.opts.head_lr_scale),)
        facts = {"task": "qa", "encoder": cfg.model, **self._data_facts(data)}
        inputs = [*data.inputs, {"role": "encoder", "uri": cfg.model}]
        return MethodSetup(self.student, len(self.train.features), len(self.dev.examples), inputs, data.license, facts,
                           lr_groups=groups)
