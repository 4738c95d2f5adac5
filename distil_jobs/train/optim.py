"""Optimisation settings shared by every method: AdamW groups, the warmup/decay schedule, the DeepSpeed config."""

from __future__ import annotations

import json
from typing import Any

import torch

from distil_jobs.errors import DistilError


def uses_deepspeed(cfg: Any) -> bool:
    return cfg.deepspeed_stage is not None or bool(cfg.deepspeed_config)


def linear_schedule(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / max(1, warmup)  # never 0 at step 0: the first step must move the weights
    return max(0.0, (total - step) / max(1, total - warmup))


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on biases and norm weights (the usual BERT recipe)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def deepspeed_config(cfg: Any, total_steps: int, warmup: int, bf16: bool) -> dict[str, Any]:
    """Our config (ZeRO stage, offload, optimizer, schedule), or the user's file with gaps filled."""
    if cfg.deepspeed_config:
        try:
            with open(cfg.deepspeed_config) as f:
                ds = json.load(f)
        except (OSError, ValueError) as e:
            raise DistilError(f"--deepspeed-config {cfg.deepspeed_config}: cannot read it as JSON ({e})") from None
    else:
        ds = {"zero_optimization": {"stage": cfg.deepspeed_stage}}
    zero = ds.setdefault("zero_optimization", {})
    offload = cfg.offload_optimizer != "none" or "offload_optimizer" in zero
    if cfg.offload_optimizer != "none":
        zero["offload_optimizer"] = {"device": cfg.offload_optimizer}
    ours = {"train_micro_batch_size_per_gpu": cfg.batch_size, "gradient_accumulation_steps": cfg.grad_accum,
            "gradient_clipping": cfg.max_grad_norm, "steps_per_print": 10**9, "wall_clock_breakdown": False}
    for k, v in ours.items():
        if ds.get(k) in (None, "auto"):
            ds[k] = v
    ds.pop("train_batch_size", None)  # derived by DeepSpeed from the two above and the world size
    # torch_adam: no cpu_adam extension to compile; with offload DeepSpeed needs its own CPU Adam.
    ds.setdefault("optimizer", {"type": "AdamW", "params": {"lr": cfg.lr, "betas": [0.9, 0.999], "eps": 1e-8,
                                                            "torch_adam": not offload}})
    ds.setdefault("scheduler", {"type": "WarmupDecayLR", "params": {
        "warmup_min_lr": 0.0, "warmup_max_lr": cfg.lr, "warmup_num_steps": warmup,
        "total_num_steps": total_steps, "warmup_type": "linear"}})
    if bf16:
        ds.setdefault("bf16", {"enabled": True})
    return ds
