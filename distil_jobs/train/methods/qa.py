"""`--method qa`: extractive question answering distilled from a teacher's start/end logits
(DistilBERT's SQuAD recipe): α_ce·T²·½(KL_start + KL_end) + α_qa·½(CE_start + CE_end), defaults
T=2, α_ce=α_qa=0.5 (qa/losses.py).

Teacher and student are AutoModelForQuestionAnswering models with one tokenizer: the KL compares
the two token by token, so the student is typically the teacher's alternate layers (`--student
TEACHER --student-layers 0,2,4,...`). The teacher runs beside the student (`--input` with
`--teacher`), or not at all: `--targets` from `precompute-embeddings --output-type qa_logits`. A
teacher whose QA head is untrained is refused, pointing to `prepare-teacher --task qa`.

Headline: SQuAD F1 on held-out articles (also exact match, the gold-span loss and the KL to the
teacher); the teacher's EM/F1 on the same articles go into the manifest once. The student is saved
as an AutoModelForQuestionAnswering folder with its tokenizer, ready for
`transformers.pipeline("question-answering", model=...)`.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, ClassVar

import numpy as np
import torch

from distil_jobs.config import setting
from distil_jobs.errors import DistilError
from distil_jobs.mlm.models import check_same_vocabulary
from distil_jobs.qa.evaluate import Logits, answer_scores, dev_losses
from distil_jobs.qa.features import collate, pad_logits
from distil_jobs.qa.losses import qa_kd_loss
from distil_jobs.qa.models import feature_logits, forward, load_qa, load_qa_tokenizer
from distil_jobs.train.methods.base import MethodSetup, Metric, TrainContext, evaluating
from distil_jobs.train.methods.qa_data import QaData, QaDataOptions, load_qa_data

log = logging.getLogger("distil_jobs.train.qa")


@dataclasses.dataclass(kw_only=True, slots=True)
class QaOptions(QaDataOptions):
    kd_temperature: float = setting(2.0, "Temperature T of the start/end KL.", fingerprint=True, min=1e-6)
    alpha_ce: float = setting(0.5, "Weight of T²·½(KL_start + KL_end) to the teacher.", fingerprint=True, min=0)
    alpha_qa: float = setting(0.5, "Weight of ½(CE_start + CE_end) on the gold answer span.", fingerprint=True, min=0)


class QaTraining:
    """What QA distillation and prepare-teacher's QA head share: data, the loss, evaluation, saving."""

    name: ClassVar[str] = "qa"
    Options: ClassVar[type] = QaOptions
    watched: ClassVar[tuple[Metric, ...]] = (Metric("dev_exact_match", higher_is_better=True),)

    def __init__(self, ctx: TrainContext) -> None:
        self.ctx = ctx
        self.opts: Any = ctx.options
        self.headline = Metric("dev_f1", higher_is_better=True)
        self.teacher: Any = None
        self.dev_teacher: Logits | None = None  # the teacher's logits on the held-out features, computed once
        self.temperature, self.alpha_ce, self.alpha_qa = 1.0, 0.0, 1.0
        self.model: Any = None

    def _autocast(self) -> Any:
        dtype = self.ctx.autocast
        return lambda: torch.autocast(self.ctx.device.type, dtype=dtype, enabled=dtype is not None)

    def _load_data(self, student_ref: str) -> QaData:
        data = load_qa_data(self.ctx.cfg, self.opts, self.tokenizer, student_ref)
        self.train, self.dev = data.train, data.dev
        self.pad_id = int(self.tokenizer.pad_token_id or 0)
        return data

    def _scores(self, logits: Logits) -> dict[str, float]:
        return answer_scores(self.dev.examples, self.dev.features, logits, self.opts.n_best, self.opts.max_answer_length)

    def _logits(self, module: torch.nn.Module) -> Logits:
        return feature_logits(module, self.dev.features, self.pad_id, self.ctx.cfg.batch_size * 2, self.ctx.device,
                              self._autocast())

    def loss(self, rows: list[int]) -> torch.Tensor:
        idx = np.asarray(rows)
        batch = collate(self.train.features, idx, self.pad_id, self.ctx.device)
        t_start = t_end = None
        with self._autocast()():
            s_start, s_end = forward(self.model, batch.inputs)
            if self.alpha_ce and self.teacher is not None:
                with torch.no_grad():
                    t_start, t_end = forward(self.teacher, batch.inputs)
        if self.alpha_ce and self.teacher is None:
            width = batch.mask.shape[1]
            t_start = pad_logits(self.train.rows(idx, "start"), width, self.ctx.device)
            t_end = pad_logits(self.train.rows(idx, "end"), width, self.ctx.device)
        return qa_kd_loss(s_start, s_end, t_start, t_end, batch.start, batch.end, batch.mask, self.temperature,
                          self.alpha_ce, self.alpha_qa)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        with evaluating(self.student):
            logits = self._logits(self.student)
        metrics = self._scores(logits) | dev_losses(self.dev.features, logits, self.dev_teacher, self.temperature)
        if "dev_kl" in metrics:
            metrics["dev_distill_loss"] = self.alpha_ce * metrics["dev_kl"] + self.alpha_qa * metrics["dev_qa_loss"]
        return metrics

    def save(self, folder: str) -> None:
        """An AutoModelForQuestionAnswering folder with its tokenizer: `pipeline("question-answering")` loads it."""
        self.student.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)

    def _data_facts(self, data: QaData) -> dict[str, Any]:
        cfg, opts = self.ctx.cfg, self.opts
        return {"max_length": cfg.max_length, "doc_stride": opts.doc_stride, "n_best": opts.n_best,
                "max_answer_length": opts.max_answer_length,
                "train_questions": len(data.train.examples), "train_features": len(data.train.features),
                "train_articles": sorted(set(data.train.examples.titles)),
                "eval_questions": len(data.dev.examples), "eval_articles": sorted(set(data.dev.examples.titles))}


class QaMethod(QaTraining):
    @staticmethod
    def check_options(opts: QaOptions) -> None:
        if not opts.alpha_ce and not opts.alpha_qa:
            raise DistilError("--alpha-ce 0 and --alpha-qa 0 leave nothing to learn: give one of them a weight")

    def setup(self) -> MethodSetup:
        from distil_jobs.train.student import keep_layers

        cfg, opts, device = self.ctx.cfg, self.opts, self.ctx.device
        if cfg.teacher:  # the cheap check first: another vocabulary fails before any model loads
            check_same_vocabulary(load_qa_tokenizer(cfg.teacher, "teacher"), load_qa_tokenizer(cfg.student, "student"),
                                  cfg.teacher, cfg.student)
        self.tokenizer = load_qa_tokenizer(cfg.student, "student")
        data = self._load_data(cfg.student)  # bad data fails before any model loads
        model, _ = load_qa(cfg.student, "student", self.ctx.attention, head="new")
        if cfg.student_layers:
            keep_layers(model, cfg.student_layers)
        if cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.student = model.to(device)
        self.temperature, self.alpha_ce, self.alpha_qa = opts.kd_temperature, opts.alpha_ce, opts.alpha_qa
        stored = data.train.start_logits is not None
        if stored and cfg.teacher:
            self._check_teacher(data)
        if cfg.teacher:
            teacher, _ = load_qa(cfg.teacher, "teacher", self.ctx.attention)
            self.teacher = teacher.eval().requires_grad_(False).to(device)
        teacher_metrics = self._teacher_on_dev(data)
        facts = {"teacher": cfg.teacher or data.artifact.get("teacher"),
                 "teacher_source": "stored logits" if stored else "online",
                 "loss_weights": {"temperature": self.temperature, "ce": self.alpha_ce, "qa": self.alpha_qa},
                 "student_num_layers": model.config.num_hidden_layers, "teacher_metrics": teacher_metrics,
                 **self._data_facts(data)}
        inputs = [*data.inputs, {"role": "teacher", "uri": facts["teacher"]}, {"role": "student_init", "uri": cfg.student}]
        return MethodSetup(self.student, len(self.train.features), len(self.dev.examples), inputs, data.license, facts)

    def _check_teacher(self, data: QaData) -> None:
        from distil_jobs.train.methods.mlm import model_identity

        cfg = self.ctx.cfg
        if data.artifact.get("teacher_identity") != model_identity(cfg.teacher):
            raise DistilError(f"{cfg.targets} holds the logits of teacher {data.artifact.get('teacher')}, not of "
                              f"--teacher {cfg.teacher}: pass that teacher, or precompute with this one")

    def _teacher_on_dev(self, data: QaData) -> dict[str, float] | None:
        """The teacher's logits on the held-out features (stored, or one pass), and its EM/F1 there."""
        if self.dev.start_logits is not None:
            self.dev_teacher = (self.dev.start_logits, self.dev.end_logits)
        elif self.teacher is not None:
            self.dev_teacher = self._logits(self.teacher)
        else:
            log.info("no teacher logits for the held-out articles (pass --dev-input with stored qa_logits, or "
                     "--teacher): the manifest has no teacher metrics")
            return None
        metrics = self._scores(self.dev_teacher)
        log.info("teacher on the held-out articles: %s", metrics)
        return metrics


