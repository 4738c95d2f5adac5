"""The training loop: DDP (or one process) or DeepSpeed ZeRO, AdamW with linear warmup and decay,
gradient accumulation and clipping, periodic dev evaluation, checkpoints and preemption.

Data order is a pure function of (seed, epoch): each epoch is a fixed permutation, split across
ranks by stride. The position in the data is therefore just the optimizer step, and a checkpoint
(weights, optimizer, scheduler, step, per-rank RNG) resumes to the same weights bit for bit on CPU.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import signal
import subprocess
import time
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from distil_jobs.distributed import Rendezvous
from distil_jobs.errors import DistilError, PreemptedError
from distil_jobs.log import log_metrics
from distil_jobs.train import checkpoints
from distil_jobs.train.data import DistilData
from distil_jobs.train.methods.embedding import EmbeddingMethod
from distil_jobs.train.tracking import Tracker

log = logging.getLogger("distil_jobs.train.loop")
PREEMPT_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class PreemptionFlag:
    """Remembers a preemption signal; the loop acts on it at the next step, on every rank at once."""

    def __init__(self) -> None:
        self.signum = 0
        self._previous = {s: signal.signal(s, self._handle) for s in PREEMPT_SIGNALS}

    def _handle(self, signum: int, _frame: Any) -> None:
        if not self.signum:
            log.info("received %s: saving a checkpoint at the next step, then exiting 75",
                     signal.Signals(signum).name)
        self.signum = signum

    def restore(self) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)


def requeue_under_slurm() -> None:
    """Put this Slurm job back in the queue when it may be requeued (rank 0 only)."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return
    try:
        shown = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True, timeout=30)
        if "Requeue=1" not in shown.stdout:
            log.info("Slurm job %s does not allow requeue (sbatch --requeue): not requeued", job)
            return
        done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=30)
        log.info("scontrol requeue %s: %s", job, "ok" if done.returncode == 0 else done.stderr.strip())
    except (OSError, subprocess.SubprocessError) as e:
        log.info("could not requeue Slurm job %s (%s)", job, e)


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


class Trainer:
    def __init__(self, cfg: Any, rdzv: Rendezvous, student: Any, method: EmbeddingMethod, train: DistilData,
                 dev: DistilData | None, ckpt_root: str, tracker: Tracker, device: torch.device,
                 bf16: bool) -> None:
        self.cfg, self.rdzv, self.student, self.method = cfg, rdzv, student, method
        self.train_data, self.dev = train, dev
        self.ckpt_root, self.tracker, self.device, self.bf16 = ckpt_root, tracker, device, bf16
        self.rank = rdzv.rank or 0
        self.world = rdzv.world_size
        self.is_main = self.rank == 0
        per_rank = len(train) // self.world
        self.micro_per_epoch = per_rank // cfg.batch_size
        self.steps_per_epoch = self.micro_per_epoch // cfg.grad_accum
        if self.steps_per_epoch < 1:
            raise DistilError(f"{len(train)} training rows are too few for --batch-size {cfg.batch_size} × "
                              f"--grad-accum {cfg.grad_accum} × {self.world} process(es): lower them or add data")
        self.total_steps = cfg.max_steps or cfg.epochs * self.steps_per_epoch
        self.warmup = math.ceil(cfg.warmup_ratio * self.total_steps)
        self.use_deepspeed = cfg.deepspeed_stage is not None or bool(cfg.deepspeed_config)
        self.step = 0
        self._build()

    # ------------------------------------------------------------ setup

    def _build(self) -> None:
        cfg = self.cfg
        if self.use_deepspeed:
            import deepspeed

            ds = deepspeed_config(cfg, self.total_steps, self.warmup, self.bf16)
            self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
                model=self.student, model_parameters=param_groups(self.student, cfg.weight_decay), config=ds,
                dist_init_required=False)
            self.model: Any = self.engine
            return
        self.optimizer = torch.optim.AdamW(param_groups(self.student, cfg.weight_decay), lr=cfg.lr,
                                           betas=(0.9, 0.999), eps=1e-8)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: linear_schedule(s, self.warmup, self.total_steps))
        self.model = self.student
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DDP(self.student, device_ids=ids)
        if cfg.compile:
            self.model = torch.compile(self.model, dynamic=True)

    # ------------------------------------------------------------ data order

    def micro_batches(self, epoch: int) -> list[list[int]]:
        """This rank's micro-batches of `epoch`: a fixed permutation, strided over ranks, tail dropped."""
        order = np.random.default_rng(self.cfg.seed + epoch).permutation(len(self.train_data))
        mine = order[self.rank::self.world][: self.micro_per_epoch * self.cfg.batch_size]
        bs = self.cfg.batch_size
        return [mine[i:i + bs].tolist() for i in range(0, len(mine), bs)]

    # ------------------------------------------------------------ checkpoints

    def save(self) -> None:
        root = self.ckpt_root
        tmp = checkpoints.tmp_dir(root, self.step)
        if self.is_main:
            checkpoints.prepare(root, self.step)
        self.barrier()
        if self.use_deepspeed:
            self.engine.save_checkpoint(tmp, tag="state", client_state={"step": self.step})
        elif self.is_main:
            torch.save({"model": self.student.state_dict(), "optimizer": self.optimizer.state_dict(),
                        "scheduler": self.scheduler.state_dict(), "step": self.step}, os.path.join(tmp, "state.pt"))
        checkpoints.save_rng(tmp, self.rank)
        self.barrier()
        if self.is_main:
            final = checkpoints.publish(root, self.step, {"step": self.step, "world_size": self.world,
                                                          "deepspeed": self.use_deepspeed,
                                                          "epoch": self.step // self.steps_per_epoch},
                                        self.cfg.keep_checkpoints)
            log.info("checkpoint saved: %s", final)
        self.barrier()

    def resume(self) -> bool:
        folder = checkpoints.latest(self.ckpt_root)
        if folder is None:
            return False
        info = checkpoints.read_info(folder)
        if info.get("world_size") != self.world or info.get("deepspeed") != self.use_deepspeed:
            raise DistilError(f"checkpoint {folder} was written by {info.get('world_size')} process(es) "
                              f"(deepspeed={info.get('deepspeed')}): resume with the same setup or use a new --output")
        if self.use_deepspeed:
            path, client = self.engine.load_checkpoint(folder, tag="state")
            if path is None:
                raise DistilError(f"cannot load DeepSpeed checkpoint {folder}: delete it to start over")
            self.step = int(client["step"])
        else:
            state = torch.load(os.path.join(folder, "state.pt"), map_location=self.device, weights_only=False)
            self.student.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.step = int(state["step"])
        checkpoints.load_rng(folder, self.rank)
        log.info("resumed from %s at step %d/%d", folder, self.step, self.total_steps)
        return True

    # ------------------------------------------------------------ collectives

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def agree(self, loss: float, stop: int) -> tuple[float, bool]:
        """Mean loss over ranks and whether any rank was signalled: one all-reduce per step."""
        if self.world == 1:
            return loss, bool(stop)
        t = torch.tensor([loss, float(stop)], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return float(t[0]) / self.world, bool(t[1] > 0)

    # ------------------------------------------------------------ the loop

    def evaluate(self) -> dict[str, float]:
        if self.dev is None:
            return {}
        metrics = self.method.evaluate(self.student, self.dev, self.cfg.batch_size * 2)
        if self.is_main:
            self.tracker.log(self.step, metrics)
            log_metrics(log, "eval", step=self.step, **{k: round(v, 6) for k, v in metrics.items()})
        return metrics

    def current_lr(self) -> float:
        if self.use_deepspeed:
            return float(self.engine.get_lr()[0])
        return float(self.optimizer.param_groups[0]["lr"])

    def _optimizer_step(self) -> float:
        if self.use_deepspeed:
            norm = self.engine.get_global_grad_norm()
            return float(norm) if norm is not None else float("nan")
        norm = torch.nn.utils.clip_grad_norm_(self.student.parameters(), self.cfg.max_grad_norm) \
            if self.cfg.max_grad_norm > 0 else torch.tensor(float("nan"))
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(norm)

    def run(self) -> dict[str, float]:
        from tqdm.auto import tqdm

        cfg = self.cfg
        flag = PreemptionFlag()
        try:
            if not self.resume():
                seed_everything(cfg.seed + self.rank)  # dropout masks differ per rank, repeat per run
            initial = self.evaluate() if self.step == 0 else {}
            if initial and self.is_main:
                log.info("untrained student: %s", initial)
            bar = tqdm(total=self.total_steps, initial=self.step, desc="train", unit="step", disable=not self.is_main)
            t_last, samples, train_seconds = time.perf_counter(), 0, 0.0
            while self.step < self.total_steps:
                epoch = self.step // self.steps_per_epoch
                batches = self.micro_batches(epoch)
                start = (self.step % self.steps_per_epoch) * cfg.grad_accum
                for m in range(start, self.steps_per_epoch * cfg.grad_accum, cfg.grad_accum):
                    t_step = time.perf_counter()
                    loss_sum = 0.0
                    for j in range(cfg.grad_accum):
                        batch = self.method.make_batch(self.train_data, batches[m + j])
                        boundary = j == cfg.grad_accum - 1
                        if self.use_deepspeed:
                            loss = self.method.loss(self.engine, self.student, batch)
                            self.engine.backward(loss)
                            self.engine.step()
                        else:
                            sync = boundary or self.world == 1 or not hasattr(self.model, "no_sync")
                            ctx = self.model.no_sync() if not sync else contextlib.nullcontext()
                            with ctx:
                                loss = self.method.loss(self.model, self.student, batch)
                                (loss / cfg.grad_accum).backward()
                        loss_sum += float(loss.detach())
                        samples += len(batch.texts) * self.world
                    lr = self.current_lr()
                    grad_norm = self._optimizer_step()
                    self.step += 1
                    mean_loss, stop = self.agree(loss_sum / cfg.grad_accum, flag.signum)
                    train_seconds += time.perf_counter() - t_step  # without eval and checkpoint time
                    bar.update(1)
                    if self.is_main:
                        now = time.perf_counter()
                        row = {"loss": mean_loss, "lr": lr, "grad_norm": grad_norm, "epoch": epoch,
                               "samples_per_s": samples / max(now - t_last, 1e-9), "train_seconds": train_seconds}
                        self.tracker.log(self.step, row)
                        bar.set_postfix(loss=f"{mean_loss:.4g}")
                        if self.step % cfg.log_steps == 0 or self.step == 1:
                            log_metrics(log, "train", step=self.step, **{k: round(v, 6) for k, v in row.items()})
                        t_last, samples = now, 0
                    if stop:
                        self.save()
                        if self.is_main and cfg.requeue:
                            requeue_under_slurm()
                        raise PreemptedError(f"stopped by {signal.Signals(flag.signum or signal.SIGTERM).name} "
                                             f"at step {self.step}; checkpoint saved")
                    if cfg.eval_steps and self.step % cfg.eval_steps == 0 and self.step < self.total_steps:
                        self.evaluate()
                    if cfg.save_steps and self.step % cfg.save_steps == 0 and self.step < self.total_steps:
                        self.save()
                    if self.step >= self.total_steps:
                        break
            bar.close()
            return self.evaluate()
        finally:
            flag.restore()
