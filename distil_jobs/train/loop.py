"""The training loop: DDP (or one process) or DeepSpeed ZeRO, AdamW with linear warmup and decay,
gradient accumulation and clipping, periodic dev evaluation, checkpoints and preemption.

It knows a distillation method only through the `Method` protocol: the method turns row indices
into a loss and evaluates itself; the loop owns the optimizer, the wrapped model (handed to the
method as `method.model`), the data order, checkpoints and signals.

Data order is a pure function of (seed, epoch): each epoch is a fixed permutation, split across
ranks by stride. The position in the data is therefore just the optimizer step, and a checkpoint
(weights, optimizer, scheduler, step, per-rank RNG) resumes to the same weights bit for bit on CPU.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import shutil
import signal
import time
import uuid
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from distil_jobs.distributed import Rendezvous, io_barrier
from distil_jobs.errors import DistilError, PreemptedError
from distil_jobs.log import log_metrics
from distil_jobs.train import checkpoints
from distil_jobs.train.checkpoint_store import CheckpointStore
from distil_jobs.train.guard import BestTracker
from distil_jobs.train.methods.base import Method, MethodSetup
from distil_jobs.train.nonfinite import NonFiniteGuard
from distil_jobs.train.optim import deepspeed_config, param_groups, schedules, uses_deepspeed
from distil_jobs.train.preemption import PreemptionFlag, requeue_under_slurm
from distil_jobs.train.tracking import Tracker

log = logging.getLogger("distil_jobs.train.loop")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def steps_per_epoch(train_rows: int, world: int, cfg: Any) -> int:
    """Optimizer steps per epoch; fewer than one is the user's to fix."""
    steps = (train_rows // world) // cfg.batch_size // cfg.grad_accum
    if steps < 1:
        raise DistilError(f"{train_rows} training rows are too few for --batch-size {cfg.batch_size} × "
                          f"--grad-accum {cfg.grad_accum} × {world} process(es): lower them or add data")
    return steps


class Trainer:
    def __init__(self, cfg: Any, rdzv: Rendezvous, method: Method, setup: MethodSetup, ckpt_root: str,
                 tracker: Tracker, device: torch.device, bf16: bool, best: BestTracker | None = None,
                 stores: dict[str, CheckpointStore] | None = None) -> None:
        self.cfg, self.rdzv, self.method, self.student = cfg, rdzv, method, setup.student
        self.train_rows, self.lr_groups = setup.train_rows, setup.lr_groups
        self.ckpt_root, self.tracker, self.device, self.bf16 = ckpt_root, tracker, device, bf16
        self.rank = rdzv.rank or 0
        self.world = rdzv.world_size
        self.is_main = self.rank == 0
        self.micro_per_epoch = (self.train_rows // self.world) // cfg.batch_size
        self.steps_per_epoch = steps_per_epoch(self.train_rows, self.world, cfg)
        self.total_steps = cfg.max_steps or cfg.epochs * self.steps_per_epoch
        self.warmup = math.ceil(cfg.warmup_ratio * self.total_steps)
        self.use_deepspeed = uses_deepspeed(cfg)
        self.step = 0
        self.bar: Any = None
        self.best = best  # --keep-best: the evaluation step to publish instead of the last
        self.nonfinite = NonFiniteGuard(cfg.skip_nonfinite)
        # An object-store output: each checkpoint root (local folder) is mirrored to its store.
        self.stores = stores or {}
        self.restarts = 0  # times this run resumed from a checkpoint (kept in the checkpoints, in the manifest)
        self._build()

    # ------------------------------------------------------------ setup

    def _build(self) -> None:
        """The optimizer and schedule, and the wrapped model the method runs its forward passes through."""
        cfg = self.cfg
        if self.use_deepspeed:
            import deepspeed

            ds = deepspeed_config(cfg, self.total_steps, self.warmup, self.bf16)
            groups = [{k: g[k] for k in ("params", "weight_decay")}
                      for g in param_groups(self.student, cfg.weight_decay, cfg.lr)]
            self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
                model=self.student, model_parameters=groups, config=ds, dist_init_required=False)
            self.method.model = self.engine
            return
        groups = param_groups(self.student, cfg.weight_decay, cfg.lr, self.lr_groups)
        self.optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer,
                                                           schedules(groups, self.warmup, self.total_steps))
        model: Any = self.student
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            model = DDP(self.student, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if cfg.compile:
            model = torch.compile(model, dynamic=True)
        self.method.model = model

    # ------------------------------------------------------------ data order

    def micro_batches(self, epoch: int) -> list[list[int]]:
        """This rank's micro-batches of `epoch`: a fixed permutation, strided over ranks, tail dropped."""
        order = np.random.default_rng(self.cfg.seed + epoch).permutation(self.train_rows)
        bs = self.cfg.batch_size
        mine = order[self.rank::self.world][: self.micro_per_epoch * bs]
        return [mine[i:i + bs].tolist() for i in range(0, len(mine), bs)]

    # ------------------------------------------------------------ checkpoints

    def save(self, root: str | None = None, keep: int | None = None, extra: dict[str, Any] | None = None) -> None:
        """A complete checkpoint of this step under `root` (default: the run's checkpoints), every rank;
        with an object-store output also on the store (checkpoint_store)."""
        root = root or self.ckpt_root
        keep = keep or self.cfg.keep_checkpoints
        store = self.stores.get(root)
        tmp = checkpoints.tmp_dir(root, self.step)
        if self.is_main:
            checkpoints.prepare(root, self.step)
        self.barrier()
        os.makedirs(tmp, exist_ok=True)  # a node that does not share rank 0's folder writes into its own
        if self.use_deepspeed:
            self.engine.save_checkpoint(tmp, tag="state", client_state={"step": self.step})
        elif self.is_main:
            torch.save({"model": self.student.state_dict(), "optimizer": self.optimizer.state_dict(),
                        "scheduler": self.scheduler.state_dict(), "step": self.step}, os.path.join(tmp, "state.pt"))
        if self.is_main and store is not None and root == self.ckpt_root and os.path.exists(self.tracker.path):
            # The curve so far travels with the checkpoint: a restart on an empty cache keeps it.
            shutil.copyfile(self.tracker.path, os.path.join(tmp, "metrics.jsonl"))
        checkpoints.save_rng(tmp, self.rank)
        self.barrier()
        info = {"step": self.step, "world_size": self.world, "deepspeed": self.use_deepspeed,
                "nonfinite_steps": self.nonfinite.count, "epoch": self.step // self.steps_per_epoch,
                "restarts": self.restarts, "save_id": uuid.uuid4().hex} | (extra or {})
        if store is not None:
            store.upload(tmp, self.step, self.rank)  # every rank its own files
            self.barrier()
            if self.is_main:
                store.mark_done(self.step, info)  # last: only now may a reader use this step
                store.prune(keep)
                log.info("checkpoint saved: %s/step-%d", store.uri, self.step)
        if store is not None and self.rdzv.nnodes > 1:
            # Each node holds only its own ranks' files: not a usable cache; the store has the whole step.
            if (self.rdzv.local_rank or 0) == 0:
                shutil.rmtree(tmp, ignore_errors=True)
        elif self.is_main:
            final = checkpoints.publish(root, self.step, info, keep)
            if store is None:
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
        self.nonfinite.count = int(info.get("nonfinite_steps", 0))
        self.restarts = int(info.get("restarts", 0)) + 1
        log.info("resumed from %s at step %d/%d (restart %d of this run)", folder, self.step, self.total_steps,
                 self.restarts)
        return True

    def load_weights(self, folder: str) -> None:
        """Only the student's weights of a checkpoint (the best step, to publish it)."""
        if self.use_deepspeed:
            self.engine.load_checkpoint(folder, tag="state", load_optimizer_states=False,
                                        load_lr_scheduler_states=False, load_module_only=True)
        else:
            state = torch.load(os.path.join(folder, "state.pt"), map_location=self.device, weights_only=False)
            self.student.load_state_dict(state["model"])

    # ------------------------------------------------------------ collectives

    def barrier(self) -> None:
        """Around checkpoints: a rank may be writing or uploading for longer than --dist-timeout."""
        if self.world > 1:
            io_barrier()

    def rank0_says(self, flag: bool) -> bool:
        """Rank 0's decision, on every rank (their metrics agree, but a decision must be one)."""
        if self.world == 1:
            return flag
        t = torch.tensor([float(flag)], dtype=torch.float64, device=self.device)
        dist.broadcast(t, src=0)
        return bool(t[0] > 0)

    def agree(self, loss: float, stop: int) -> tuple[float, bool]:
        """Mean loss over ranks and whether any rank was signalled: one all-reduce per step."""
        if self.world == 1:
            return loss, bool(stop)
        t = torch.tensor([loss, float(stop)], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return float(t[0]) / self.world, bool(t[1] > 0)

    # ------------------------------------------------------------ one step

    def _micro_step(self, rows: list[int], boundary: bool) -> float:
        """Forward and backward of one micro-batch; DDP syncs gradients only at the step's last one."""
        cfg = self.cfg
        if self.use_deepspeed:
            loss = self.method.loss(rows)
            self.engine.backward(loss)
            self.engine.step()  # DeepSpeed knows the accumulation boundary itself
            return float(loss.detach())
        model = self.method.model
        sync = boundary or self.world == 1 or not hasattr(model, "no_sync")
        with contextlib.nullcontext() if sync else model.no_sync():
            loss = self.method.loss(rows)
            (loss / cfg.grad_accum).backward()
        return float(loss.detach())

    def _optimizer_step(self, loss: float) -> float:
        """Clip, step, schedule; returns the gradient norm before clipping. A non-finite loss or norm
        drops the step's gradients instead (`NonFiniteGuard`), or stops the run."""
        if self.use_deepspeed:  # the engine has stepped already: a bad step can only stop the run
            norm = self.engine.get_global_grad_norm()
            norm = float(norm) if norm is not None else 0.0
            self.nonfinite.skip(self.step + 1, loss, norm, can_skip=False)
            return norm
        params = [p for p in self.student.parameters() if p.grad is not None]
        norm = float(torch.nn.utils.clip_grad_norm_(params, self.cfg.max_grad_norm) if self.cfg.max_grad_norm > 0
                     else torch.nn.utils.get_total_norm([p.grad for p in params]))
        if not self.nonfinite.skip(self.step + 1, loss, norm):
            self.optimizer.step()
        else:
            log.warning("step %d: non-finite loss %s or gradient norm %s: step skipped (%d of --skip-nonfinite %d)",
                        self.step + 1, loss, norm, self.nonfinite.count, self.nonfinite.limit)
        self.scheduler.step()  # the schedule follows the step count, skipped steps included (resume relies on it)
        self.optimizer.zero_grad(set_to_none=True)
        return norm

    def current_lr(self) -> float:
        if self.use_deepspeed:
            return float(self.engine.get_lr()[0])
        return float(self.optimizer.param_groups[0]["lr"])

    def train_step(self, micro: list[list[int]], signum: int) -> tuple[dict[str, float], bool]:
        """One optimizer step over `micro` micro-batches: its metrics row, and whether any rank must stop."""
        t0 = time.perf_counter()
        losses = [self._micro_step(rows, j == len(micro) - 1) for j, rows in enumerate(micro)]
        lr = self.current_lr()
        mean_loss, stop = self.agree(sum(losses) / len(losses), signum)  # one decision for every rank
        grad_norm = self._optimizer_step(mean_loss)
        self.step += 1
        secs = time.perf_counter() - t0
        samples = sum(len(rows) for rows in micro) * self.world
        return {"loss": mean_loss, "lr": lr, "grad_norm": grad_norm, "samples_per_s": samples / max(secs, 1e-9),
                "step_seconds": secs}, stop

    # ------------------------------------------------------------ evaluation, logging, decisions

    def evaluate(self) -> dict[str, float]:
        metrics = self.method.evaluate()
        if metrics and self.is_main:
            self.tracker.log(self.step, metrics)
            log_metrics(log, "eval", step=self.step, **{k: round(v, 6) for k, v in metrics.items()})
            headline = self.method.headline.name
            if self.bar is not None and headline in metrics:
                self.bar.set_postfix_str(f"{headline}={metrics[headline]:.4g}", refresh=False)
        self._consider_best(metrics)
        return metrics

    def _consider_best(self, metrics: dict[str, float]) -> None:
        """--keep-best: save this step's weights when the metric improved (not for the last step:
        those weights are in memory when the run publishes)."""
        if self.best is None or not self.rank0_says(self.best.improves(metrics)):
            return
        if self.step < self.total_steps:
            best = {"metric": self.best.metric.name, "step": self.step,
                    "value": float(metrics[self.best.metric.name]), "metrics": metrics}
            self.save(root=self.best.root, keep=1, extra={"best": best})  # on a store, the marker says it
        self.best.record(self.step, metrics, write=self.is_main)

    def _published_metrics(self, final: dict[str, float]) -> dict[str, float]:
        """The last step's metrics, or with --keep-best the best step's, whose weights are loaded back."""
        best = self.best
        if best is None or best.step is None or best.step == self.step:
            return final
        store = self.stores.get(best.root)
        if store is not None:  # several nodes keep no whole checkpoint locally: every node pulls it
            if (self.rdzv.local_rank or 0) == 0:
                store.sync_cache(best.root, best.step)
            self.barrier()
        folder = checkpoints.latest(best.root)
        if folder is None or checkpoints.read_info(folder)["step"] != best.step:
            raise DistilError(f"the best checkpoint (step {best.step}) is missing under {best.root}: rerun with a "
                              "new --output, or without --keep-best")
        self.load_weights(folder)
        log.info("publishing step %d, best by %s (%.5f), instead of the last step %d", best.step, best.metric.name,
                 best.value, self.step)
        return dict(best.metrics)

    def _log_step(self, row: dict[str, float]) -> None:
        if not self.is_main:
            return
        self.tracker.log(self.step, row)
        if self.step % self.cfg.log_steps == 0 or self.step == 1:
            log_metrics(log, "train", step=self.step, **{k: round(v, 6) for k, v in row.items()})

    def _after_step(self, stop: bool, flag: PreemptionFlag) -> None:
        """Preemption first (save, requeue, exit 75), then the periodic evaluation and checkpoint."""
        cfg = self.cfg
        if stop:
            self.save()
            if self.is_main and cfg.requeue:
                requeue_under_slurm()
            raise PreemptedError(f"stopped by {signal.Signals(flag.signum or signal.SIGTERM).name} "
                                 f"at step {self.step}; checkpoint saved")
        if self.step >= self.total_steps:
            return  # the final evaluation follows; the student is published instead of checkpointed
        if cfg.eval_steps and self.step % cfg.eval_steps == 0:
            self.evaluate()
        if cfg.save_steps and self.step % cfg.save_steps == 0:
            self.save()

    # ------------------------------------------------------------ the loop

    def run(self) -> dict[str, float]:
        """Train from the newest checkpoint (or the start) to `total_steps`; returns the final dev metrics."""
        from tqdm.auto import tqdm

        accum = self.cfg.grad_accum
        flag = PreemptionFlag()
        try:
            if not self.resume():
                seed_everything(self.cfg.seed + self.rank)  # dropout masks differ per rank, repeat per run
            self.bar = tqdm(total=self.total_steps, initial=self.step, desc="train", unit="step",
                            disable=not self.is_main)
            if self.step == 0:
                untrained = self.evaluate()  # on every rank: ZeRO-3 gathers weights collectively
                if self.is_main and untrained:
                    log.info("untrained student: %s", untrained)
            train_seconds = 0.0
            while self.step < self.total_steps:
                epoch = self.step // self.steps_per_epoch
                batches = self.micro_batches(epoch)
                first = (self.step % self.steps_per_epoch) * accum
                for m in range(first, self.steps_per_epoch * accum, accum):
                    row, stop = self.train_step(batches[m:m + accum], flag.signum)
                    train_seconds += row.pop("step_seconds")  # without eval and checkpoint time
                    self._log_step(row | {"epoch": epoch, "train_seconds": train_seconds})
                    self.bar.update(1)
                    self._after_step(stop, flag)
                    if self.step >= self.total_steps:
                        break
            self.bar.close()
            return self._published_metrics(self.evaluate())
        finally:
            if self.bar is not None:
                self.bar.close()  # before any error line: the bar must not redraw after it
            flag.restore()
