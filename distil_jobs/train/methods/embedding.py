"""`--method embedding`: the student learns to reproduce the teacher's sentence embeddings.

Monolingual: loss(student(text), teacher(text)). Parallel (`--pair-column`): both sides of a
translation pair are pulled toward the teacher's embedding of the source sentence (Reimers &
Gurevych 2020), so the student learns the other language in the teacher's space.

Targets are precomputed (`--targets`, a teacher-embeddings artifact) or computed online by
`--teacher` from raw text (`--input`). The student is saved as a SentenceTransformer folder.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from distil_jobs.config import setting
from distil_jobs.errors import DistilError
from distil_jobs.train.methods.base import MethodSetup, Metric, TrainContext
from distil_jobs.train.methods.embedding_data import DataSpec, DistilData, load_data
from distil_jobs.train.methods.losses import LOSSES, make_loss, mse, parallel_loss


@dataclasses.dataclass(kw_only=True, slots=True)
class EmbeddingOptions:
    target_type: str = setting("final", "Which teacher embedding to learn: the final one or the one before "
                                        "Dense/Normalize.", choices=("final", "pre_dense"), fingerprint=True)
    pair_column: str | None = setting(None, "Translation column for parallel distillation (default: the targets "
                                            "artifact's pair column, if any).", fingerprint=True)
    monolingual: bool = setting(False, "Ignore the targets artifact's pair column.", fingerprint=True)
    teacher_max_length: int | None = setting(None, "Online teacher's max tokens (default: its limit, as "
                                                   "precompute-embeddings).", fingerprint=True, min=1)
    projection: bool = setting(True, "Add a trainable Dense projection when student and teacher widths differ.",
                               fingerprint=True)
    loss: str = setting("mse", "mse, cosine (1-cos), kld (softmax over dimensions) or mse+kld.", choices=LOSSES,
                        fingerprint=True)
    temperature: float = setting(1.0, "Temperature of the kld loss.", fingerprint=True, min=1e-6)
    alpha: float = setting(0.5, "Weight of KLD in mse+kld: alpha*KLD + (1-alpha)*MSE.", fingerprint=True,
                           min=0, max=1)
    pair_student_weight: float = setting(0.0, "Parallel data: weight of an extra MSE between the student's "
                                              "source and translation embeddings.", fingerprint=True, min=0)


class EmbeddingMethod:
    name: ClassVar[str] = "embedding"
    Options: ClassVar[type] = EmbeddingOptions

    def __init__(self, ctx: TrainContext) -> None:
        self.ctx = ctx
        self.opts: EmbeddingOptions = ctx.options
        self.loss_fn = make_loss(self.opts.loss, self.opts.temperature, self.opts.alpha)
        self.teacher: Any = None  # a TextEncoder, only when some targets are computed online
        self.headline = Metric("dev_cosine", higher_is_better=True)
        self.model: Any = None

    # ------------------------------------------------------------ data and student

    def setup(self) -> MethodSetup:
        from distil_jobs.train.student import build_student

        cfg, opts = self.ctx.cfg, self.opts
        data = load_data(DataSpec(cfg.targets, cfg.input, opts.target_type, cfg.text_column, opts.pair_column,
                                  opts.monolingual, cfg.max_rows, cfg.dev_input, cfg.dev_fraction, cfg.seed))
        self.train, self.dev = data.train, data.dev
        if self.train.targets is None or (self.dev is not None and self.dev.targets is None):
            self.teacher = self._load_teacher()
        target_dim = data.target_dim or self.teacher.dims(opts.target_type, [])[f"teacher_embedding_{opts.target_type}"]
        self.student = build_student(cfg.student, target_dim=target_dim, layers=cfg.student_layers,
                                     projection=opts.projection, drop_normalize=opts.target_type == "pre_dense",
                                     max_length=cfg.max_length, device=self.ctx.device, attention=self.ctx.attention,
                                     gradient_checkpointing=cfg.gradient_checkpointing)
        if self.dev is not None and self.dev.targets is None:
            self.dev.targets = self._teacher_targets(self.dev.texts)  # once, up front
        if self.train.pairs:
            # Parallel data: what the user wants is the other language found where the teacher puts the source.
            self.headline = Metric("dev_retrieval_top1", higher_is_better=True)
        teacher = cfg.teacher or data.teacher
        inputs = [*data.inputs, {"role": "teacher", "uri": teacher}, {"role": "student_init", "uri": cfg.student}]
        return MethodSetup(self.student, len(self.train), len(self.dev) if self.dev else 0, inputs, data.license,
                           {"teacher": teacher, "target_dim": target_dim, "target_type": opts.target_type,
                            "text_column": data.text_column, "pair_column": data.pair_column})

    def _load_teacher(self) -> Any:
        from distil_jobs.models.encoder import TextEncoder

        if not self.ctx.cfg.teacher:
            raise DistilError("targets must come from a teacher here: pass --teacher MODEL (or --targets from "
                              "precompute-embeddings)")
        return TextEncoder(self.ctx.cfg.teacher, str(self.ctx.device), max_length=self.opts.teacher_max_length)

    def _teacher_targets(self, texts: list[str]) -> np.ndarray:
        out = self.teacher.encode(texts, self.opts.target_type, batch_size=64, progress=False)
        return next(iter(out.values()))

    # ------------------------------------------------------------ training

    def embed(self, model: Any, texts: list[str]) -> torch.Tensor:
        """Student embeddings through `model` (the DDP/DeepSpeed wrapper, or the bare student)."""
        # sentence-transformers >= 6 renamed tokenize to preprocess.
        prep = getattr(self.student, "preprocess", None) or self.student.tokenize
        feats = prep(texts)
        device = self.ctx.device
        feats = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in feats.items()}
        dtype = self.ctx.autocast
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            out = model(feats)["sentence_embedding"]
        return out.float()

    def loss(self, rows: list[int]) -> torch.Tensor:
        texts = [self.train.texts[i] for i in rows]
        targets = self._teacher_targets(texts) if self.train.targets is None else self.train.targets[rows]
        target = torch.from_numpy(np.ascontiguousarray(targets, dtype=np.float32)).to(self.ctx.device)
        if self.train.pairs is None:
            return self.loss_fn(self.embed(self.model, texts), target)
        # One forward over both sides: DDP and ZeRO-3 expect one forward per backward.
        both = self.embed(self.model, texts + [self.train.pairs[i] for i in rows])
        n = len(texts)
        return parallel_loss(both[:n], both[n:], target, self.loss_fn, self.opts.pair_student_weight)

    # ------------------------------------------------------------ evaluation and saving

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Dev MSE and cosine to the teacher; for parallel data also source→translation top-1 retrieval
        between the student's embeddings of the two sides (TranslationEvaluator's idea)."""
        dev: DistilData | None = self.dev
        if dev is None:
            return {}
        assert dev.targets is not None
        bs = self.ctx.cfg.batch_size * 2
        was_training = self.student.training
        self.student.eval()
        try:
            src = torch.cat([self.embed(self.student, dev.texts[i:i + bs]) for i in range(0, len(dev), bs)])
            target = torch.from_numpy(dev.targets).to(src.device)
            metrics = {"dev_mse": float(mse(src, target)),
                       "dev_cosine": float(F.cosine_similarity(src, target, dim=-1).mean())}
            if dev.pairs:
                tgt = torch.cat([self.embed(self.student, dev.pairs[i:i + bs]) for i in range(0, len(dev), bs)])
                sim = F.normalize(src, dim=-1) @ F.normalize(tgt, dim=-1).T
                hits = (sim.argmax(dim=1) == torch.arange(len(dev), device=sim.device)).float().mean()
                metrics["dev_retrieval_top1"] = float(hits)
        finally:
            self.student.train(was_training)
        return metrics

    def save(self, folder: str) -> None:
        """A SentenceTransformer folder: `SentenceTransformer(folder)` loads it anywhere."""
        self.student.save(folder)
