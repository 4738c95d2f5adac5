"""Distillation methods, by `--method` name. A new method is one module and one `register` line below."""

from __future__ import annotations

from distil_jobs.train.methods.base import Method, MethodRegistry, MethodSetup, Metric, TrainContext
from distil_jobs.train.methods.embedding import EmbeddingMethod
from distil_jobs.train.methods.mlm import MlmMethod
from distil_jobs.train.methods.qa import QaMethod
from distil_jobs.train.methods.sense import SenseMethod

METHODS = MethodRegistry()
METHODS.register(EmbeddingMethod)
METHODS.register(SenseMethod)
METHODS.register(MlmMethod)
METHODS.register(QaMethod)

__all__ = ["METHODS", "Method", "MethodRegistry", "MethodSetup", "Metric", "TrainContext"]
