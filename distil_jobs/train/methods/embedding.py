"""`--method embedding`: the student learns to reproduce the teacher's sentence embeddings.

Monolingual: loss(student(text), teacher(text)). Parallel (`--pair-column`): both sides of a
translation pair are pulled toward the teacher's embedding of the source sentence.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from distil_jobs.train.data import DistilData
from distil_jobs.train.methods.losses import LossFn, mse, parallel_loss


@dataclasses.dataclass(slots=True)
class Batch:
    texts: list[str]
    pairs: list[str] | None
    targets: torch.Tensor  # teacher embeddings of `texts`


class EmbeddingMethod:
    def __init__(self, loss_fn: LossFn, teacher: Any | None, target_type: str, device: torch.device,
                 pair_student_weight: float = 0.0, autocast_dtype: torch.dtype | None = None) -> None:
        self.loss_fn = loss_fn
        self.teacher = teacher  # a TextEncoder, or None when every target is precomputed
        self.target_type = target_type
        self.device = device
        self.pair_student_weight = pair_student_weight
        self.autocast_dtype = autocast_dtype

    def teacher_targets(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        assert self.teacher is not None, "online targets need a teacher"
        out = self.teacher.encode(texts, self.target_type, batch_size=batch_size, progress=False)
        return next(iter(out.values()))

    def fill_targets(self, data: DistilData, batch_size: int = 64) -> None:
        """Embed a (small, e.g. dev) dataset with the online teacher once, up front."""
        if data.targets is None:
            data.targets = self.teacher_targets(data.texts, batch_size)

    def make_batch(self, data: DistilData, idx: list[int]) -> Batch:
        texts = [data.texts[i] for i in idx]
        online = data.targets is None
        targets = self.teacher_targets(texts, batch_size=len(texts)) if online else data.targets[idx]
        return Batch(texts, [data.pairs[i] for i in idx] if data.pairs else None,
                     torch.from_numpy(np.ascontiguousarray(targets, dtype=np.float32)).to(self.device))

    def embed(self, model: Any, tokenizer_owner: Any, texts: list[str]) -> torch.Tensor:
        """Student embeddings through `model` (the DDP/DeepSpeed wrapper, or the bare student)."""
        # sentence-transformers >= 6 renamed tokenize to preprocess.
        prep = getattr(tokenizer_owner, "preprocess", None) or tokenizer_owner.tokenize
        feats = prep(texts)
        feats = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in feats.items()}
        with torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
            out = model(feats)["sentence_embedding"]
        return out.float()

    def loss(self, model: Any, student: Any, batch: Batch) -> torch.Tensor:
        if batch.pairs is None:
            return self.loss_fn(self.embed(model, student, batch.texts), batch.targets)
        # One forward over both sides: DDP and ZeRO-3 expect one forward per backward.
        both = self.embed(model, student, batch.texts + batch.pairs)
        n = len(batch.texts)
        return parallel_loss(both[:n], both[n:], batch.targets, self.loss_fn, self.pair_student_weight)

    @torch.no_grad()
    def evaluate(self, student: Any, dev: DistilData, batch_size: int = 64) -> dict[str, float]:
        """Dev MSE (and cosine) to the teacher; for parallel data also source→target top-1 retrieval
        accuracy between the student's embeddings of the two sides (TranslationEvaluator's idea).
        Every rank runs it on the whole dev set, since ZeRO-3 gathers weights collectively."""
        assert dev.targets is not None
        was_training = student.training
        student.eval()
        try:
            src = torch.cat([self.embed(student, student, dev.texts[i:i + batch_size])
                             for i in range(0, len(dev), batch_size)])
            target = torch.from_numpy(dev.targets).to(src.device)
            metrics = {"dev_mse": float(mse(src, target)),
                       "dev_cosine": float(F.cosine_similarity(src, target, dim=-1).mean())}
            if dev.pairs:
                tgt = torch.cat([self.embed(student, student, dev.pairs[i:i + batch_size])
                                 for i in range(0, len(dev), batch_size)])
                sim = F.normalize(src, dim=-1) @ F.normalize(tgt, dim=-1).T
                hits = (sim.argmax(dim=1) == torch.arange(len(dev), device=sim.device)).float().mean()
                metrics["dev_retrieval_top1"] = float(hits)
        finally:
            student.train(was_training)
        return metrics
