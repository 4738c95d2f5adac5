"""`--method mlm`: DistilBERT-style distillation of a masked (or, with --causal, causal) LM.

The student starts from alternate teacher layers (`--student TEACHER --student-layers 0,2,4`),
which keeps the teacher's embeddings and LM head, and learns the teacher's distribution over the
vocabulary at temperature T, the data's labels, and the teacher's last hidden states
(mlm/losses.py; defaults T=2, α_ce=5, α_mlm=2, α_cos=1). The teacher runs beside the student
(`--input` with `--teacher`), or not at all: `--targets` from `precompute-embeddings --output-type
mlm_topk` holds its top-k log-probabilities at the masked positions. From stored top-k the KL is
over those positions (as --restrict-ce-to-mask) and the cosine and MSE terms, which need the
teacher's hidden states and full logits, are off; the manifest records the weights in effect.

Headline: dev masked-token accuracy; also perplexity and the KL to the teacher on held-out text,
and the teacher's own accuracy and perplexity once, in the manifest. The student is saved as an
AutoModelForMaskedLM (or ForCausalLM) folder with its tokenizer.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from distil_jobs.artifacts.manifest import input_ref
from distil_jobs.config import setting
from distil_jobs.errors import DistilError
from distil_jobs.mlm.batches import Batcher, LmBatch
from distil_jobs.mlm.counts import count_tokens, read_counts
from distil_jobs.mlm.evaluate import lm_metrics
from distil_jobs.mlm.losses import LossWeights, exact_kl, hidden_cosine, label_ce, logit_mse
from distil_jobs.mlm.masking import Masker
from distil_jobs.mlm.models import LmWithHead, check_same_vocabulary, load_lm, load_tokenizer
from distil_jobs.mlm.topk import topk_kl
from distil_jobs.senses.vocab import excluded_ids, tokenizer_fingerprint
from distil_jobs.train.methods.base import MethodSetup, Metric, TrainContext, evaluating
from distil_jobs.train.methods.lm_data import LmData, LmRows, load_lm_data

log = logging.getLogger("distil_jobs.train.mlm")


@dataclasses.dataclass(kw_only=True, slots=True)
class MaskingOptions:
    """How texts are masked: shared by train-student --method mlm and prepare-teacher --task mlm."""

    mlm_probability: float = setting(0.15, "Fraction of each text's tokens to predict (80/10/10 mask/keep/random).",
                                     fingerprint=True, min=1e-6, max=1)
    mask_seed: int = setting(0, "Seed of the masks (with each text's row number: the same masks in every run).",
                             fingerprint=True, min=0)
    token_counts: str | None = setting(None, "Token counts from distil-jobs count-tokens, for frequency-smoothed "
                                             "masking (default: counted over the training texts).", data=True)


@dataclasses.dataclass(kw_only=True, slots=True)
class MlmOptions(MaskingOptions):
    kd_temperature: float = setting(2.0, "Temperature T of the distillation KL.", fingerprint=True, min=1e-6)
    alpha_ce: float = setting(5.0, "Weight of T²·KL(teacher ‖ student).", fingerprint=True, min=0)
    alpha_mlm: float = setting(2.0, "Weight of the masked-label cross-entropy.", fingerprint=True, min=0)
    alpha_clm: float = setting(2.0, "With --causal: weight of the next-token cross-entropy.", fingerprint=True, min=0)
    alpha_cos: float = setting(1.0, "Weight of 1 − cos between last hidden states.", fingerprint=True, min=0)
    alpha_mse: float = setting(0.0, "Weight of the logit MSE.", fingerprint=True, min=0)
    restrict_ce_to_mask: bool = setting(False, "KL at the masked positions only (default: every real token).",
                                        fingerprint=True)
    causal: bool = setting(False, "Teacher and student are causal LMs: next-token labels, no masking.",
                           fingerprint=True)
    freeze_pos_embs: bool = setting(False, "Keep the student's position embeddings as the teacher's.",
                                    fingerprint=True)


def make_masker(opts: MaskingOptions, tokenizer: Any, texts: list[str], what: str) -> Masker:
    counts = (read_counts(opts.token_counts, tokenizer, what) if opts.token_counts
              else count_tokens(tokenizer, texts))
    return Masker(counts, excluded_ids(tokenizer), int(tokenizer.mask_token_id), opts.mask_seed, opts.mlm_probability)


def model_identity(ref: str) -> str:
    """What a teacher is, for comparing runs: its artifact's manifest hash, else its resolved location."""
    from distil_jobs.models.registry import resolve_model

    return input_ref(ref, "model").get("manifest_sha256") or resolve_model(ref)


def lm_batches(batcher: Batcher, rows: LmRows, size: int) -> Iterator[LmBatch]:
    for b in range(0, len(rows), size):
        idx = np.arange(b, min(b + size, len(rows)))
        part = rows.subset(idx)
        yield (batcher.from_stored(part.stored) if part.stored is not None
               else batcher.from_texts(part.texts, part.row_ids.tolist()))


class MlmMethod:
    name: ClassVar[str] = "mlm"
    Options: ClassVar[type] = MlmOptions

    def __init__(self, ctx: TrainContext) -> None:
        self.ctx = ctx
        self.opts: MlmOptions = ctx.options
        self.headline = Metric("dev_next_token_accuracy" if self.opts.causal else "dev_masked_accuracy", True)
        self.teacher: LmWithHead | None = None
        self.model: Any = None

    @staticmethod
    def check_options(opts: MlmOptions) -> None:
        if opts.causal and opts.restrict_ce_to_mask:
            raise DistilError("--restrict-ce-to-mask needs masking: a --causal LM predicts every next token")

    def setup(self) -> MethodSetup:
        from distil_jobs.train.student import keep_layers

        cfg, opts, device = self.ctx.cfg, self.opts, self.ctx.device
        data = load_lm_data(cfg)
        if cfg.teacher:  # the cheap check first: a teacher of another vocabulary fails before any model loads
            check_same_vocabulary(load_tokenizer(cfg.teacher, "teacher", opts.causal),
                                  load_tokenizer(cfg.student, "student", opts.causal), cfg.teacher, cfg.student)
        lm, self.tokenizer = load_lm(cfg.student, "student", opts.causal, self.ctx.attention)
        if cfg.student_layers:
            keep_layers(lm, cfg.student_layers)
        if opts.freeze_pos_embs:
            for name, p in lm.named_parameters():
                if "position_embeddings" in name or name.endswith(("wpe.weight", "embed_positions.weight")):
                    p.requires_grad_(False)
        if cfg.gradient_checkpointing:
            lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if cfg.teacher:
            teacher, _ = load_lm(cfg.teacher, "teacher", opts.causal, self.ctx.attention)
            teacher.eval().requires_grad_(False)
            self.teacher = LmWithHead(teacher).to(device)
        masker = None if opts.causal else make_masker(opts, self.tokenizer, data.all_texts, f"student {cfg.student}")
        stored = data.train.stored is not None
        if stored and opts.causal:
            raise DistilError(f"{cfg.targets} holds a masked LM's top-k logits: --causal distils from an online "
                              "teacher (--input with --teacher)")
        if stored:
            self._check_artifact(data, masker)
        self.weights = LossWeights(opts.kd_temperature, opts.alpha_ce, opts.alpha_clm if opts.causal else opts.alpha_mlm,
                                   0.0 if stored else opts.alpha_cos, 0.0 if stored else opts.alpha_mse)
        if stored and (opts.alpha_cos or opts.alpha_mse):
            log.info("stored top-k logits: the cosine and MSE terms need the teacher's hidden states and full "
                     "logits, and are off (the manifest records the weights in effect)")
        self.student = LmWithHead(lm).to(device)
        if self.teacher is not None and self.weights.cos and \
                self.teacher.lm.config.hidden_size != lm.config.hidden_size:
            raise DistilError(f"--alpha-cos needs equal widths: teacher {self.teacher.lm.config.hidden_size}, student "
                              f"{lm.config.hidden_size}; pass --alpha-cos 0 or a student of the teacher's width")
        self.batcher = Batcher(self.tokenizer, masker, cfg.max_length, causal=opts.causal,
                               restrict=opts.restrict_ce_to_mask or stored, device=device)
        self.dev_batcher = Batcher(self.tokenizer, masker.uniform() if masker else None, cfg.max_length,
                                   causal=opts.causal, restrict=self.batcher.restrict, device=device)
        self.train, self.dev = data.train, data.dev
        facts = self._facts(data, masker, stored)
        inputs = [*data.inputs, {"role": "teacher", "uri": cfg.teacher or data.artifact.get("teacher")},
                  {"role": "student_init", "uri": cfg.student}]
        return MethodSetup(self.student, len(self.train), len(self.dev) if self.dev else 0, inputs, data.license, facts)

    def _check_artifact(self, data: LmData, masker: Masker | None) -> None:
        """A stored top-k artifact is used only with the masking, temperature, vocabulary and teacher it was made with."""
        cfg, made, uri = self.ctx.cfg, data.artifact, self.ctx.cfg.targets
        if made.get("tokenizer_fingerprint") != tokenizer_fingerprint(self.tokenizer):
            raise DistilError(f"{uri} was made with the vocabulary of teacher {made.get('teacher')}, not that of "
                              f"student {cfg.student}: start the student from that teacher")
        if cfg.teacher and made.get("teacher_identity") != model_identity(cfg.teacher):
            raise DistilError(f"{uri} holds the top-k logits of teacher {made.get('teacher')}, not of --teacher "
                              f"{cfg.teacher}: pass that teacher, or precompute with this one")
        if made.get("kd_temperature") != self.opts.kd_temperature:
            raise DistilError(f"{uri} holds log-probabilities at temperature {made.get('kd_temperature')}, this run "
                              f"distils at --kd-temperature {self.opts.kd_temperature}: use the same, or precompute "
                              "again")
        assert masker is not None
        ours, theirs = masker.describe(), made.get("masking") or {}
        for key, value in ours.items():
            if theirs.get(key) != value:
                flag = {"seed": "--mask-seed", "probability": "--mlm-probability", "counts_sha256": "--token-counts"}
                raise DistilError(f"{uri} was masked with {key} {theirs.get(key)}, this run masks with {value} "
                                  f"({flag.get(key, key)}): pass the same, or precompute with these settings")

    def _facts(self, data: LmData, masker: Masker | None, stored: bool) -> dict[str, Any]:
        w = self.weights
        facts: dict[str, Any] = {
            "teacher": self.ctx.cfg.teacher or data.artifact.get("teacher"),
            "teacher_source": "stored top-k" if stored else "online",
            "loss_weights": {"temperature": w.temperature, "ce": w.ce, ("clm" if self.opts.causal else "mlm"): w.mlm,
                             "cos": w.cos, "mse": w.mse},
            "kl_positions": "masked" if self.batcher.restrict else ("all" if not self.opts.causal else "next-token"),
            "masking": masker.describe() if masker else None, "dev_masking": "uniform",
            "dropped_train_rows_in_dev": data.dropped_as_dev,
            "student_num_layers": self.student.lm.config.num_hidden_layers}
        if stored:
            facts["topk"] = data.artifact.get("topk")
        if self.teacher is not None and self.dev is not None:
            facts["teacher_metrics"] = self._metrics(self.teacher)  # once: the bar the student is held to
            log.info("teacher on the dev set: %s", facts["teacher_metrics"])
        return facts

    # ------------------------------------------------------------ training

    def _autocast(self) -> Any:
        dtype = self.ctx.autocast
        return lambda: torch.autocast(self.ctx.device.type, dtype=dtype, enabled=dtype is not None)

    def _run(self, module: nn.Module, batch: LmBatch) -> tuple[torch.Tensor, torch.Tensor]:
        return module(batch.input_ids, batch.attention_mask, batch.rows, batch.positions)

    def loss(self, rows: list[int]) -> torch.Tensor:
        part = self.train.subset(np.asarray(rows))
        batch = (self.batcher.from_stored(part.stored) if part.stored is not None
                 else self.batcher.from_texts(part.texts, part.row_ids.tolist()))
        with self._autocast()():
            s_logits, s_hidden = self._run(self.model, batch)
            t_logits = t_hidden = None
            if batch.topk is None:
                assert self.teacher is not None
                with torch.no_grad():
                    t_logits, t_hidden = self._run(self.teacher, batch)
        return self.combine(batch, s_logits, s_hidden, t_logits, t_hidden)

    def combine(self, batch: LmBatch, s_logits: torch.Tensor, s_hidden: torch.Tensor, t_logits: torch.Tensor | None,
                t_hidden: torch.Tensor | None) -> torch.Tensor:
        w = self.weights
        total = s_hidden.float().sum() * 0.0  # reaches every weight even when a batch has no position
        if not s_logits.shape[0]:
            return total
        if w.ce:
            kl = (topk_kl(s_logits, *batch.topk, w.temperature) if batch.topk is not None
                  else exact_kl(s_logits, t_logits, w.temperature))
            total = total + w.ce * kl
        if w.mlm and batch.scored.numel():
            total = total + w.mlm * label_ce(s_logits[batch.scored], batch.labels)
        if w.cos and t_hidden is not None:
            total = total + w.cos * hidden_cosine(s_hidden, t_hidden, batch.attention_mask)
        if w.mse and t_logits is not None:
            total = total + w.mse * logit_mse(s_logits, t_logits)
        return total

    # ------------------------------------------------------------ evaluation and saving

    def _metrics(self, module: nn.Module) -> dict[str, float]:
        assert self.dev is not None
        teacher = None
        if self.teacher is not None and module is not self.teacher:
            teacher = (lambda b: self._run(self.teacher, b))  # noqa: E731
        forward = (lambda b: self._run(module, b))  # noqa: E731
        return lm_metrics(forward, lm_batches(self.dev_batcher, self.dev, self.ctx.cfg.batch_size * 2),
                          self.headline.name, teacher=teacher, temperature=self.weights.temperature,
                          autocast=self._autocast())

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        if self.dev is None:
            return {}
        with evaluating(self.student):
            metrics = self._metrics(self.student)
        if not metrics:
            raise DistilError("no dev text has a masked token: give more or longer dev rows (--dev-fraction, "
                              "--dev-input)")
        return metrics

    def save(self, folder: str) -> None:
        save_lm(self.student.lm, self.tokenizer, folder)


def save_lm(lm: nn.Module, tokenizer: Any, folder: str) -> None:
    """An AutoModelFor*LM folder: config, safetensors and tokenizer, loadable by transformers as it is."""
    lm.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
