"""The learning-rate options every prepare-teacher task declares, one wording for all: each task
gives --lr its own default (compose applies the chosen task's), --head-lr-scale is the same."""

from __future__ import annotations

from typing import Any

from distil_jobs.config import setting


def lr(default: float) -> Any:
    return setting(default, "Peak learning rate (AdamW), each task its own default: mlm fits a head alone, from "
                            "scratch (with --train-encoder pass a fine-tuning rate such as 1e-4); qa fine-tunes the "
                            "encoder, its new head at --head-lr-scale times this.", fingerprint=True, min=0)


def head_lr_scale() -> Any:
    return setting(10.0, "The new head's learning rate as a multiple of --lr when the encoder trains too (mlm: with "
                         "--train-encoder; qa: always); 1 for DeepSpeed, which has one rate.", fingerprint=True, min=0)
