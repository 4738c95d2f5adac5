"""Optimisation settings shared by every method: AdamW groups, the warmup/decay schedule, the DeepSpeed config."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import torch

from distil_jobs.errors import DistilError
from distil_jobs.train.methods.base import LrGroup


def uses_deepspeed(cfg: Any) -> bool:
    return cfg.deepspeed_stage is not None or bool(cfg.deepspeed_config)


def linear_schedule(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / max(1, warmup)  # never 0 at step 0: the first step must move the weights
    return max(0.0, (total - step) / max(1, total - warmup))


def param_groups(model: torch.nn.Module, weight_decay: float, lr: float,
                 lr_groups: list[LrGroup] | tuple[LrGroup, ...] = ()) -> list[dict[str, Any]]:
    """AdamW groups: no weight decay on biases and norm weights (the usual BERT recipe), and each of the
    method's `lr_groups` (parameters by name prefix) at its own learning rate and freeze period."""
    buckets: dict[tuple[int, bool], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        group = next((i for i, g in enumerate(lr_groups) if name.startswith(g.prefixes)), -1)
        buckets.setdefault((group, p.ndim < 2 or "norm" in name.lower()), []).append(p)
    groups = []
    for (i, no_decay), params in sorted(buckets.items()):
        spec = lr_groups[i] if i >= 0 else None
        groups.append({"params": params, "weight_decay": 0.0 if no_decay else weight_decay,
                       "lr": lr * (spec.lr_scale if spec else 1.0), "frozen_steps": spec.frozen_steps if spec else 0,
                       "name": spec.name if spec else "rest"})
    return groups


def schedules(groups: list[dict[str, Any]], warmup: int, total: int) -> list[Callable[[int], float]]:
    """One LambdaLR factor per group: 0 while the group is frozen, else linear warmup and decay."""
    def factor(frozen: int) -> Callable[[int], float]:
        return lambda step: 0.0 if step < frozen else linear_schedule(step, warmup, total)

    return [factor(int(g.get("frozen_steps", 0))) for g in groups]


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
