"""`--method embedding`: the student learns to reproduce the teacher's sentence embeddings.

Monolingual: loss(student(text), teacher(text)). Parallel (`--pair-column`): both sides of a
translation pair are pulled toward the teacher's embedding of the source sentence (Reimers &
Gurevych 2020), so the student learns the other language in the teacher's space.

Targets are precomputed (`--targets`, a teacher-embeddings artifact) or computed online by
`--teacher` from raw text (`--input`). The student is saved as a SentenceTransformer folder.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from distil_jobs.config import setting
from distil_jobs.errors import DistilError
from distil_jobs.train.methods import projection, vocab
from distil_jobs.train.methods.base import LrGroup, MethodSetup, Metric, TrainContext, evaluating
from distil_jobs.train.methods.embedding_data import (
    DataSpec,
    DistilData,
    StsPairs,
    load_data,
    load_sts,
    strip_diacritics,
)
from distil_jobs.train.methods.losses import LOSSES, in_batch_ranking, make_loss, mse, parallel_loss, similarity
from distil_jobs.train.methods.projection import INITS
from distil_jobs.train.student import features

log = logging.getLogger("distil_jobs.train.embedding")


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
    similarity_weight: float = setting(0.0, "Weight of a relational term: the student's in-batch cosine similarities "
                                            "must match the teacher's (MSE; what STS and retrieval read). Values near "
                                            "30 balance it with a cosine loss (0: off).", fingerprint=True, min=0)
    contrastive_weight: float = setting(0.0, "Parallel data: weight of an in-batch ranking loss (InfoNCE) that "
                                             "makes each translation find its own source among the batch (0: off).",
                                        fingerprint=True, min=0)
    contrastive_temperature: float = setting(0.05, "Temperature of the ranking loss (cosine similarities / T).",
                                             fingerprint=True, min=1e-4)
    contrastive_anchor: str = setting("student", "What a translation must find: the student's own embedding of its "
                                                 "source (measured better for retrieval), or the teacher's.",
                                      choices=("student", "teacher"),
                                      fingerprint=True)
    augment_undiacritized: bool = setting(False, "Parallel data: also learn each translation with its diacritics "
                                                 "(tone marks, underdots) removed, toward the same target.",
                                          fingerprint=True)
    projection_init: str = setting("random", "Start of the Dense projection to a wider teacher: random, or fitted in "
                                             "closed form on the untrained student (lstsq, ridge, procrustes).",
                                   choices=INITS, fingerprint=True)
    projection_init_rows: int = setting(2000, "Training rows the projection is fitted on.", fingerprint=True, min=2)
    projection_lr_scale: float = setting(1.0, "The projection's learning rate, as a multiple of --lr.",
                                         fingerprint=True, min=0)
    projection_warmup_steps: int = setting(0, "Train only the projection for the first N steps (the encoder waits).",
                                           fingerprint=True, min=0)
    freeze_word_embeddings: bool = setting(False, "Keep the student's word embeddings as they are.", fingerprint=True)
    dropout: float | None = setting(None, "Set the student's dropout (hidden and attention) to this, e.g. 0 "
                                          "(default: the model's own).", fingerprint=True, min=0, max=0.9)
    extend_vocab: int = setting(0, "Parallel data: learn a WordPiece vocabulary of N pieces on the translations "
                                   "(and --vocab-corpus), and add to the student the new ones that keep diacritics "
                                   "(0: off). English text tokenizes as before.", fingerprint=True, min=0)
    vocab_corpus: str | None = setting(None, "More text of the new language for --extend-vocab (column 'text'), "
                                             "e.g. $DISTIL_DATA_DIR/corpus/sentences_yo.tsv.", data=True)
    watch_sts: str | None = setting(None, "STS pairs (sentence1, sentence2, score) the student must not get worse on, "
                                          "e.g. $DISTIL_DATA_DIR/stsb/dev.jsonl: their Spearman is the dev metric "
                                          "dev_sts_spearman, watched against the untrained student.", data=True)
    watch_rows: int = setting(500, "Rows of --watch-sts to use (the first N).", fingerprint=True, min=10)


class EmbeddingMethod:
    name: ClassVar[str] = "embedding"
    Options: ClassVar[type] = EmbeddingOptions

    def __init__(self, ctx: TrainContext) -> None:
        self.ctx = ctx
        self.opts: EmbeddingOptions = ctx.options
        self.loss_fn = make_loss(self.opts.loss, self.opts.temperature, self.opts.alpha)
        self.teacher: Any = None  # a TextEncoder, only when some targets are computed online
        self.headline = Metric("dev_cosine", higher_is_better=True)
        self.watched: tuple[Metric, ...] = ()  # besides the headline: what the student must not lose
        self.sts: StsPairs | None = None
        self.vocab: dict[str, Any] = {}  # what --extend-vocab added
        self.model: Any = None

    @staticmethod
    def check_options(opts: EmbeddingOptions) -> None:
        if opts.monolingual and (opts.contrastive_weight or opts.augment_undiacritized):
            raise DistilError("--contrastive-weight and --augment-undiacritized need parallel data: drop --monolingual")

    # ------------------------------------------------------------ data and student

    def setup(self) -> MethodSetup:
        cfg, opts = self.ctx.cfg, self.opts
        data = load_data(DataSpec(cfg.targets, cfg.input, opts.target_type, cfg.text_column, opts.pair_column,
                                  opts.monolingual, cfg.max_rows, cfg.dev_input, cfg.dev_fraction, cfg.seed,
                                  cfg.cast_text))
        self.train, self.dev = data.train, data.dev
        if self.train.pairs is None and (opts.contrastive_weight or opts.augment_undiacritized):
            raise DistilError("--contrastive-weight and --augment-undiacritized need parallel data: give --pair-column")
        if opts.watch_sts:
            self.sts = load_sts(opts.watch_sts, opts.watch_rows)
            self.watched = (Metric("dev_sts_spearman", True),)
        if self.train.targets is None or (self.dev is not None and self.dev.targets is None):
            self.teacher = self._load_teacher()
        target_dim = data.target_dim or self.teacher.dims(opts.target_type, [])[f"teacher_embedding_{opts.target_type}"]
        self.student = self._build_student(target_dim)
        if self.dev is not None and self.dev.targets is None:
            self.dev.targets = self._teacher_targets(self.dev.texts)  # once, up front
        if self.train.pairs:
            # Parallel data: what the user wants is the other language found where the teacher puts the source.
            # Closeness to the teacher (dev_cosine) is then a means, not a promise: the ranking term trades it.
            self.headline = Metric("dev_retrieval_top1", higher_is_better=True)
        facts = {"teacher": cfg.teacher or data.teacher, "target_dim": target_dim, "target_type": opts.target_type,
                 "text_column": data.text_column, "pair_column": data.pair_column}
        facts |= self._init_projection()
        if self.vocab:
            facts["vocab_extension"] = self.vocab
        inputs = [*data.inputs, {"role": "teacher", "uri": facts["teacher"]}, {"role": "student_init", "uri": cfg.student}]
        if opts.watch_sts:
            inputs.append({"role": "watch", "uri": opts.watch_sts})
        return MethodSetup(self.student, len(self.train), len(self.dev) if self.dev else 0, inputs, data.license, facts,
                           self._lr_groups())

    def _load_teacher(self) -> Any:
        from distil_jobs.models.encoder import TextEncoder

        if not self.ctx.cfg.teacher:
            raise DistilError("targets must come from a teacher here: pass --teacher MODEL (or --targets from "
                              "precompute-embeddings)")
        return TextEncoder(self.ctx.cfg.teacher, str(self.ctx.device), max_length=self.opts.teacher_max_length)

    def _teacher_targets(self, texts: list[str]) -> np.ndarray:
        out = self.teacher.encode(texts, self.opts.target_type, batch_size=64, progress=False)
        return next(iter(out.values()))

    def _build_student(self, target_dim: int) -> Any:
        from distil_jobs.train.student import build_student, set_dropout

        cfg, opts = self.ctx.cfg, self.opts
        student = build_student(cfg.student, target_dim=target_dim, layers=cfg.student_layers,
                                projection=opts.projection, drop_normalize=opts.target_type == "pre_dense",
                                max_length=cfg.max_length, device=self.ctx.device, attention=self.ctx.attention,
                                gradient_checkpointing=cfg.gradient_checkpointing)
        if opts.dropout is not None:
            set_dropout(student[0].auto_model, opts.dropout)
        if opts.extend_vocab:
            self.vocab = vocab.extend(student[0], self._vocab_texts(), opts.extend_vocab)
        if opts.freeze_word_embeddings:
            student[0].auto_model.get_input_embeddings().weight.requires_grad_(False)
        return student

    def _vocab_texts(self) -> list[str]:
        if self.train.pairs is None:
            raise DistilError("--extend-vocab learns the translations' vocabulary: give parallel data (--pair-column)")
        texts = list(self.train.pairs)
        if self.opts.vocab_corpus:
            from distil_jobs.data import read_table, text_column

            texts += [str(t) for t in text_column(read_table(self.opts.vocab_corpus), "text", self.opts.vocab_corpus,
                                                  "--vocab-corpus a file with a 'text' column") if t]
        return texts

    def _dense_index(self) -> int | None:
        return next((i for i, m in enumerate(self.student) if type(m).__name__ == "Dense"), None)

    def _init_projection(self) -> dict[str, Any]:
        """A closed-form start for an added projection (see projection.py); a no-op without one."""
        at = self._dense_index()
        if at is None or self.opts.projection_init == "random":
            return {}
        rows = projection.sample_rows(len(self.train), self.opts.projection_init_rows, self.ctx.cfg.seed)
        texts = [self.train.texts[i] for i in rows]
        y = self.train.targets[rows] if self.train.targets is not None else self._teacher_targets(texts)
        x = projection.pooled(self.student, at, texts, self.ctx.device)
        cos = projection.init_dense(self.student[at], x, torch.from_numpy(np.asarray(y, dtype=np.float32)),
                                    self.opts.projection_init)
        log.info("projection fitted (%s) on %d rows: mean cosine to the teacher %.4f", self.opts.projection_init,
                 len(rows), cos)
        return {"projection_fit": {"mode": self.opts.projection_init, "rows": len(rows), "cosine": round(cos, 5)}}

    def _lr_groups(self) -> tuple[LrGroup, ...]:
        at = self._dense_index()
        if at is None:
            return ()
        head = LrGroup("projection", (f"{at}.",), lr_scale=self.opts.projection_lr_scale)
        encoder = LrGroup("encoder", ("0.",), frozen_steps=self.opts.projection_warmup_steps)
        return (head, encoder) if head.lr_scale != 1.0 or encoder.frozen_steps else ()

    # ------------------------------------------------------------ training

    def embed(self, model: Any, texts: list[str]) -> torch.Tensor:
        """Student embeddings through `model` (the DDP/DeepSpeed wrapper, or the bare student)."""
        feats = features(self.student, texts, self.ctx.device)
        device, dtype = self.ctx.device, self.ctx.autocast
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            out = model(feats)["sentence_embedding"]
        return out.float()

    def loss(self, rows: list[int]) -> torch.Tensor:
        texts = [self.train.texts[i] for i in rows]
        targets = self._teacher_targets(texts) if self.train.targets is None else self.train.targets[rows]
        target = torch.from_numpy(np.ascontiguousarray(targets, dtype=np.float32)).to(self.ctx.device)
        if self.train.pairs is None:
            out = self.embed(self.model, texts)
            return self.loss_fn(out, target) + self._relational([out], target)
        opts = self.opts
        sides = [texts, [self.train.pairs[i] for i in rows]]
        if opts.augment_undiacritized:
            sides.append([strip_diacritics(t) for t in sides[1]])
        # One forward over every side: DDP and ZeRO-3 expect one forward per backward.
        out = self.embed(self.model, [t for side in sides for t in side]).split(len(texts))
        loss = parallel_loss(out[0], out[1], target, self.loss_fn, opts.pair_student_weight)
        for extra in out[2:]:
            loss = loss + self.loss_fn(extra, target)
        loss = loss + self._relational(out, target)
        if opts.contrastive_weight:
            anchor = target if opts.contrastive_anchor == "teacher" else out[0]
            for translation in out[1:]:
                loss = loss + opts.contrastive_weight * in_batch_ranking(translation, anchor,
                                                                         opts.contrastive_temperature)
        return loss

    def _relational(self, outs: list[torch.Tensor] | tuple[torch.Tensor, ...], target: torch.Tensor) -> torch.Tensor:
        w = self.opts.similarity_weight
        zero = torch.zeros((), device=target.device)
        return sum((w * similarity(o, target) for o in outs), zero) if w else zero

    # ------------------------------------------------------------ evaluation and saving

    def _embed_all(self, texts: list[str]) -> torch.Tensor:
        bs = self.ctx.cfg.batch_size * 2
        return torch.cat([self.embed(self.student, texts[i:i + bs]) for i in range(0, len(texts), bs)])

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Dev MSE and cosine to the teacher; for parallel data also source→translation top-1 retrieval
        between the student's embeddings of the two sides (TranslationEvaluator's idea); with --watch-sts
        the Spearman correlation of the student's cosine similarities with the STS scores."""
        dev: DistilData | None = self.dev
        metrics: dict[str, float] = {}
        with evaluating(self.student):
            if dev is not None:
                assert dev.targets is not None
                src = self._embed_all(dev.texts)
                target = torch.from_numpy(dev.targets).to(src.device)
                metrics |= {"dev_mse": float(mse(src, target)),
                            "dev_cosine": float(F.cosine_similarity(src, target, dim=-1).mean())}
                if dev.pairs:
                    sim = F.normalize(src, dim=-1) @ F.normalize(self._embed_all(dev.pairs), dim=-1).T
                    hits = (sim.argmax(dim=1) == torch.arange(len(dev), device=sim.device)).float().mean()
                    metrics["dev_retrieval_top1"] = float(hits)
            if self.sts is not None:
                metrics["dev_sts_spearman"] = self._sts_spearman(self.sts)
        return metrics

    def _sts_spearman(self, sts: StsPairs) -> float:
        from scipy.stats import spearmanr

        cos = F.cosine_similarity(self._embed_all(sts.first), self._embed_all(sts.second), dim=-1)
        return float(spearmanr(cos.cpu().numpy(), sts.scores).statistic)

    def save(self, folder: str) -> None:
        """A SentenceTransformer folder: `SentenceTransformer(folder)` loads it anywhere."""
        self.student.save(folder)
