"""distil-jobs: batch jobs for knowledge distillation of text-embedding and language models."""

from __future__ import annotations

__version__ = "0.1.0"
