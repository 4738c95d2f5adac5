"""One rank of a training job (`train-student`, `prepare-teacher`): the story of a run from config to
published model.

join the group → the method reads its data and builds its student → claim the output →
train (resuming from the newest checkpoint) → the method saves the student → manifest → leave.
Nothing here knows which method runs: the job module's `method_class(cfg)` names it
(`--method` of train-student, `--task` of prepare-teacher).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import warnings
from typing import Any

import torch

from distil_jobs.artifacts import Location, open_location
from distil_jobs.artifacts.location import ensure_writable_dir
from distil_jobs.artifacts.manifest import new_manifest
from distil_jobs.artifacts.run import claim_output, completed
from distil_jobs.config import config_dict, content_of, fingerprint_of, group_options
from distil_jobs.distributed import (
    Rendezvous,
    backend_for,
    destroy_process_group,
    init_process_group,
    io_barrier,
    lost_peer,
    resolve_rendezvous,
)
from distil_jobs.errors import DistilError, PreemptedError, first_line
from distil_jobs.jobs import JobSpec, job
from distil_jobs.models.encoder import pick_attention, pick_device
from distil_jobs.models.registry import cache_dir
from distil_jobs.train.checkpoint_sync import drop_store_checkpoints, restore_from_stores
from distil_jobs.train.cpu import keep_freed_memory, share_cores
from distil_jobs.train.optim import uses_deepspeed

log = logging.getLogger("distil_jobs.train")


def rendezvous_of(cfg: Any) -> Rendezvous:
    return resolve_rendezvous(cfg.master_addr, cfg.master_port, cfg.nnodes, cfg.node_rank, cfg.nproc_per_node,
                              cfg.k8s_job, cfg.k8s_service)


def run_training(cfg: Any, job_name: str) -> None:
    """A training job's `run`: this process trains, or starts one rank per local process."""
    from distil_jobs.distributed import spawn_local

    rdzv = rendezvous_of(cfg)
    if rdzv.needs_spawn:
        log.info("%s", rdzv.describe())
        spawn_local(rdzv, train_worker, (cfg, job_name))
    else:
        train_worker(cfg, job_name)


def work_dir(out: Location) -> str:
    """Where checkpoints and metrics live while training: the output itself when it is a local folder,
    else a local cache folder named after the output (only a cache: the checkpoints are mirrored on the
    output's store, see checkpoint_store)."""
    if out.is_local:
        return out.root
    return str(cache_dir() / "runs" / hashlib.sha256(out.uri.encode()).hexdigest()[:16])


def precision(cfg: Any, device: torch.device) -> bool:
    """True for bf16: asked for, or `auto` on a device with fast bf16 (CUDA Ampere+)."""
    if cfg.precision == "bf16":
        return True
    return cfg.precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported()


def train_worker(cfg: Any, job_name: str) -> None:
    """Entry point of every rank (the job's own process, or one spawned per local rank)."""
    rdzv = rendezvous_of(cfg)
    device = pick_device(cfg.device)
    if uses_deepspeed(cfg):
        # DeepSpeed calls a torch.distributed function that torch has renamed: one warning per call.
        warnings.filterwarnings("ignore", message=".*all_gather_into_tensor.*", category=FutureWarning)
        # Compiled ops (the shm comm op on CPU, ~40 s once) are cached across runs, not rebuilt per job.
        os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(cache_dir() / "torch_extensions"))
        if device.type == "cpu":
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
    if device.type == "cuda" and rdzv.local_rank is not None:
        device = torch.device("cuda", rdzv.local_rank)
        torch.cuda.set_device(device)
    if device.type == "cpu":
        keep_freed_memory()
        share_cores(rdzv.nproc_per_node)
    log.info("%s", rdzv.describe())
    if os.environ.get("SLURM_RESTART_COUNT") and (rdzv.rank or 0) == 0:
        # Slurm's count of requeues of this job; the manifest's `restarts` counts resumes from a checkpoint.
        log.info("Slurm job %s restart count: %s", os.environ.get("SLURM_JOB_ID", "?"),
                 os.environ["SLURM_RESTART_COUNT"])
    init_process_group(rdzv, backend_for(device.type, cfg.backend), cfg.dist_timeout)
    clean = False
    try:
        _train(cfg, rdzv, device, job(job_name))
        clean = True
    except PreemptedError:
        clean = True
        raise
    except Exception as e:
        if rdzv.distributed and lost_peer(e):
            # A rank died (its connection closed) or stopped answering (--dist-timeout): waiting longer
            # cannot help. Exit 75 so the launcher restarts the whole group from the newest checkpoint.
            log.error("a peer rank was lost (%s): exiting 75 so the whole group restarts from the last "
                      "checkpoint", first_line(e))
            raise PreemptedError(f"a peer rank was lost ({first_line(e)})") from None
        raise
    finally:
        if clean:
            destroy_process_group()
        else:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def _barrier(rdzv: Rendezvous) -> None:
    if rdzv.distributed:
        io_barrier()  # rank 0 may have spent long claiming the output


def _checkpoint_root(cfg: Any, folder: str) -> str:
    return cfg.checkpoint_dir or os.path.join(folder, "checkpoints")


def _stores(cfg: Any, out: Location, ckpt_root: str) -> dict[str, Any]:
    """An object-store output without --checkpoint-dir keeps its checkpoints on the store (and the
    --keep-best checkpoint under checkpoints/best/): local folder → store."""
    from distil_jobs.train.checkpoint_store import CheckpointStore
    from distil_jobs.train.guard import BEST

    if out.is_local or cfg.checkpoint_dir:
        return {}
    return {ckpt_root: CheckpointStore.of_output(out), os.path.join(ckpt_root, BEST):
            CheckpointStore.of_output(out, BEST)}


def _method(cfg: Any, device: torch.device, bf16: bool, spec: JobSpec) -> Any:
    from distil_jobs.train.loop import seed_everything
    from distil_jobs.train.methods import TrainContext

    method_cls = spec.load().method_class(cfg)
    seed_everything(cfg.seed)  # a new head's initial weights are the same on every rank and rerun
    autocast = torch.bfloat16 if bf16 and not uses_deepspeed(cfg) else None  # DeepSpeed runs bf16 weights itself
    return method_cls(TrainContext(cfg, group_options(cfg, method_cls.Options), device, autocast,
                                   pick_attention(device)))


def _tracker(cfg: Any, folder: str, out: Location, is_main: bool, ckpt_root: str, headline: str) -> Any:
    from distil_jobs.train import checkpoints
    from distil_jobs.train.tracking import Tracker

    newest = checkpoints.latest(ckpt_root)
    resume_step = checkpoints.read_info(newest)["step"] if newest else 0
    # Only --wandb turns wandb on: a WANDB_API_KEY in the environment (a shared cluster profile) alone
    # must not send a run anywhere. The key only picks the mode (tracking.wandb_mode).
    use_wandb = bool(cfg.wandb)
    return Tracker(folder, is_main, use_wandb, cfg.wandb_project, cfg.wandb_run_name, config_dict(cfg), out.uri,
                   resume_step, headline=headline)


def _train(cfg: Any, rdzv: Rendezvous, device: torch.device, spec: JobSpec) -> None:
    from distil_jobs.train import checkpoints
    from distil_jobs.train.guard import BestTracker, metric_named
    from distil_jobs.train.loop import Trainer, steps_per_epoch

    is_main = (rdzv.rank or 0) == 0
    out = open_location(cfg.output)
    fingerprint = fingerprint_of(cfg) | content_of(cfg)  # the inputs' content included, not only their names
    if completed(out, spec.output_kind, fingerprint):
        log.info("%s is already complete (manifest present): nothing to do", out.uri)
        if is_main and not out.is_local and not cfg.checkpoint_dir:
            drop_store_checkpoints(out)  # left by a run stopped between its manifest and the clean-up
        return
    folder = work_dir(out)
    ensure_writable_dir(folder, out.uri)
    ckpt_root = _checkpoint_root(cfg, folder)
    stores = _stores(cfg, out, ckpt_root)

    bf16 = precision(cfg, device)
    method = _method(cfg, device, bf16, spec)
    setup = method.setup()  # data and student: bad input fails here, before anything is claimed
    if setup.lr_groups and uses_deepspeed(cfg):
        raise DistilError("per-group learning rates (" + ", ".join(g.name for g in setup.lr_groups) + ") are not "
                          "supported with DeepSpeed: drop them, or train without --deepspeed-stage")
    best = BestTracker(metric_named(method, cfg.keep_best), ckpt_root) if cfg.keep_best else None
    steps_per_epoch(setup.train_rows, rdzv.world_size, cfg)  # too few rows: said before anything is claimed
    if is_main:
        claim_output(out, spec.name, fingerprint, produced=lambda: bool(
            checkpoints.complete_steps(ckpt_root) or any(s.complete_steps() for s in stores.values())))
    _barrier(rdzv)
    if stores:
        restore_from_stores(stores, rdzv, folder)
        if best is not None:
            best = BestTracker(best.metric, ckpt_root)  # as restored from the store

    tracker = _tracker(cfg, folder, out, is_main, ckpt_root, method.headline.name)
    trainer = Trainer(cfg, rdzv, method, setup, ckpt_root, tracker, device, bf16, best, stores)
    final_metrics = trainer.run()
    _publish(cfg, rdzv, out, folder, method, setup, trainer, tracker, final_metrics, fingerprint, spec)
    if stores:
        if is_main:
            drop_store_checkpoints(out)  # the manifest is written: the output keeps only the run's result
        if (rdzv.local_rank or 0) == 0:
            shutil.rmtree(ckpt_root, ignore_errors=True)  # the cache of a finished run


def _publish(cfg: Any, rdzv: Rendezvous, out: Location, folder: str, method: Any, setup: Any, trainer: Any,
             tracker: Any, final_metrics: dict[str, float], fingerprint: dict[str, Any], spec: JobSpec) -> None:
    """The student (gathered on every rank under ZeRO-3), the curve and metrics, then the manifest."""
    from distil_jobs.train.publish import save_student

    is_main = (rdzv.rank or 0) == 0
    zero3 = trainer.use_deepspeed and trainer.engine.zero_optimization_stage() == 3
    stage = save_student(method, setup.student, zero3, is_main)
    if not is_main:
        return
    try:
        _write_run(cfg, rdzv, out, folder, method, setup, trainer, tracker, final_metrics, stage, fingerprint, spec)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _write_run(cfg: Any, rdzv: Rendezvous, out: Location, folder: str, method: Any, setup: Any, trainer: Any,
               tracker: Any, final_metrics: dict[str, float], stage: str, fingerprint: dict[str, Any],
               spec: JobSpec) -> None:
    """Rank 0: the regression check, the curve, the manifest, the optional push."""
    from distil_jobs.train import guard
    from distil_jobs.train.nonfinite import require_finite_metrics
    from distil_jobs.train.publish import publish_run, push_to_hub

    require_finite_metrics(final_metrics)
    untrained = tracker.untrained_metrics()
    watched = guard.watched_metrics(method)
    worse = guard.check(watched, untrained, final_metrics, cfg.fail_on_regression)
    png = tracker.plot(os.path.join(folder, "training_curve.png"))
    extras = [(tracker.path, "metrics.jsonl")] + ([(png, "training_curve.png")] if png else [])
    headline = method.headline
    manifest = new_manifest(
        spec.output_kind, spec.name, config_dict(cfg), setup.inputs, setup.train_rows, license=setup.license,
        fingerprint=fingerprint, method=method.name, **setup.manifest, steps=trainer.total_steps,
        world_size=rdzv.world_size, deepspeed=trainer.use_deepspeed, final_metrics=final_metrics,
        untrained_metrics=untrained, dev_rows=setup.dev_rows, nonfinite_steps=trainer.nonfinite.count,
        restarts=trainer.restarts,
        watched=[m.name for m in watched], regressions=worse,
        published_step=trainer.best.step if trainer.best and trainer.best.step is not None else trainer.step,
        headline={"metric": headline.name, "higher_is_better": headline.higher_is_better,
                  "untrained": untrained.get(headline.name), "final": final_metrics.get(headline.name)})
    publish_run(out, stage, extras, manifest)
    if cfg.push_to:
        push_to_hub(cfg.push_to, stage, extras)
    tracker.finish({"final_" + k: v for k, v in final_metrics.items()})
