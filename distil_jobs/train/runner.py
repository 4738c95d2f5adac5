"""One rank of `train-student`: the story of a run from config to published student.

join the group → read data → load teacher (if online) and student → claim the output →
train (resuming from the newest checkpoint) → save the student → manifest → leave the group.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import warnings
from typing import Any

import torch

from distil_jobs.artifacts import MANIFEST, Location, open_location
from distil_jobs.artifacts.location import ensure_writable_dir
from distil_jobs.config import config_dict
from distil_jobs.distributed import (
    Rendezvous,
    backend_for,
    destroy_process_group,
    init_process_group,
    resolve_rendezvous,
)
from distil_jobs.errors import DistilError, PreemptedError
from distil_jobs.models.encoder import pick_attention, pick_device
from distil_jobs.models.registry import cache_dir

log = logging.getLogger("distil_jobs.train")

# Settings that change the result: resuming into an output made with other values is refused.
FINGERPRINT = ("method", "targets", "input", "target_type", "text_column", "pair_column", "monolingual", "teacher",
               "student", "student_layers", "projection", "loss", "temperature", "alpha", "pair_student_weight",
               "max_rows", "batch_size", "lr", "weight_decay", "max_length", "epochs", "max_steps", "dev_input",
               "dev_fraction", "warmup_ratio", "max_grad_norm", "grad_accum", "seed", "deepspeed_stage",
               "deepspeed_config", "offload_optimizer", "precision")


def rendezvous_of(cfg: Any) -> Rendezvous:
    return resolve_rendezvous(cfg.master_addr, cfg.master_port, cfg.nnodes, cfg.node_rank, cfg.nproc_per_node,
                              cfg.k8s_job, cfg.k8s_service)


def work_dir(out: Location) -> str:
    """Where checkpoints and metrics live while training: the output itself when it is a local folder,
    else a local cache folder named after the output (checkpoints stay off object stores)."""
    if out.is_local:
        return out.root
    return str(cache_dir() / "runs" / hashlib.sha256(out.uri.encode()).hexdigest()[:16])


def claim(folder: str, cfg: Any) -> None:
    """Record the run's settings; a resume with different ones would mix two trainings."""
    path = os.path.join(folder, "run.json")
    fingerprint = {k: getattr(cfg, k) for k in FINGERPRINT}
    if os.path.exists(path):
        with open(path) as f:
            previous = json.load(f)
        diff = [k for k in fingerprint if previous.get(k) != fingerprint[k]]
        if diff:
            raise DistilError(f"{cfg.output} holds a run with different settings ({', '.join(diff)}): use a new "
                              "--output, or the same settings to resume")
        return
    with open(path + ".tmp", "w") as f:
        json.dump(fingerprint, f, indent=2, sort_keys=True)
    os.replace(path + ".tmp", path)


def precision(cfg: Any, device: torch.device) -> bool:
    """True for bf16: asked for, or `auto` on a device with fast bf16 (CUDA Ampere+)."""
    if cfg.precision == "bf16":
        return True
    return cfg.precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported()


def train_worker(cfg: Any) -> None:
    """Entry point of every rank (the job's own process, or one spawned per local rank)."""
    rdzv = rendezvous_of(cfg)
    device = pick_device(cfg.device)
    if cfg.deepspeed_stage is not None or cfg.deepspeed_config:
        # DeepSpeed calls a torch.distributed function that torch has renamed: one warning per call.
        warnings.filterwarnings("ignore", message=".*all_gather_into_tensor.*", category=FutureWarning)
        # Compiled ops (the shm comm op on CPU, ~40 s once) are cached across runs, not rebuilt per job.
        os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(cache_dir() / "torch_extensions"))
        if device.type == "cpu":
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
    if device.type == "cuda" and rdzv.local_rank is not None:
        device = torch.device("cuda", rdzv.local_rank)
        torch.cuda.set_device(device)
    if device.type == "cpu" and rdzv.nproc_per_node > 1:
        # Ranks sharing a CPU node share its cores; oversubscription makes every rank slower.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // rdzv.nproc_per_node))
    log.info("%s", rdzv.describe())
    init_process_group(rdzv, backend_for(device.type, cfg.backend))
    clean = False
    try:
        _train(cfg, rdzv, device)
        clean = True
    except PreemptedError:
        clean = True
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
        import torch.distributed as dist

        dist.barrier()


def _train(cfg: Any, rdzv: Rendezvous, device: torch.device) -> None:
    from distil_jobs.models.encoder import TextEncoder
    from distil_jobs.train.data import DataSpec, load_data
    from distil_jobs.train.loop import Trainer, seed_everything
    from distil_jobs.train.methods.embedding import EmbeddingMethod
    from distil_jobs.train.methods.losses import make_loss
    from distil_jobs.train.publish import publish_run, push_to_hub, save_student, staging_dir
    from distil_jobs.train.student import build_student
    from distil_jobs.train.tracking import Tracker

    is_main = (rdzv.rank or 0) == 0
    out = open_location(cfg.output)
    if out.exists(MANIFEST):
        log.info("%s is already complete (manifest present): nothing to do", out.uri)
        return
    folder = work_dir(out)
    ensure_writable_dir(folder, out.uri)

    data = load_data(DataSpec(cfg.targets, cfg.input, cfg.target_type, cfg.text_column, cfg.pair_column,
                              cfg.monolingual, cfg.max_rows, cfg.dev_input, cfg.dev_fraction, cfg.seed))
    needs_teacher = data.train.targets is None or (data.dev is not None and data.dev.targets is None)
    teacher = None
    if needs_teacher:
        if not cfg.teacher:
            raise DistilError("targets must come from a teacher here: pass --teacher MODEL (or --targets from "
                              "precompute-embeddings)")
        teacher = TextEncoder(cfg.teacher, str(device), max_length=cfg.teacher_max_length)
    target_dim = data.target_dim or teacher.dims(cfg.target_type, [])[f"teacher_embedding_{cfg.target_type}"]

    seed_everything(cfg.seed)  # the projection's initial weights are the same on every rank and rerun
    bf16 = precision(cfg, device)
    student = build_student(cfg.student, target_dim=target_dim, layers=cfg.student_layers,
                            projection=cfg.projection, drop_normalize=cfg.target_type == "pre_dense",
                            max_length=cfg.max_length, device=device, attention=pick_attention(device),
                            gradient_checkpointing=cfg.gradient_checkpointing)
    use_ds = cfg.deepspeed_stage is not None or bool(cfg.deepspeed_config)
    autocast = torch.bfloat16 if bf16 and not use_ds else None  # DeepSpeed runs bf16 weights itself
    method = EmbeddingMethod(make_loss(cfg.loss, cfg.temperature, cfg.alpha), teacher, cfg.target_type, device,
                             cfg.pair_student_weight, autocast)
    if data.dev is not None:
        method.fill_targets(data.dev)

    if is_main:
        claim(folder, cfg)
    _barrier(rdzv)
    ckpt_root = cfg.checkpoint_dir or os.path.join(folder, "checkpoints")
    if rdzv.nnodes > 1 and not out.is_local and not cfg.checkpoint_dir:
        raise DistilError(f"{rdzv.nnodes} nodes with --output {out.uri}: checkpoints need a folder every node "
                          "sees; pass --checkpoint-dir on shared storage")
    from distil_jobs.train import checkpoints

    resume_step = checkpoints.read_info(checkpoints.latest(ckpt_root))["step"] if checkpoints.latest(ckpt_root) else 0
    use_wandb = bool(cfg.wandb or os.environ.get("WANDB_API_KEY"))
    tracker = Tracker(folder, is_main, use_wandb, cfg.wandb_project, cfg.wandb_run_name, config_dict(cfg),
                      out.uri, resume_step)
    trainer = Trainer(cfg, rdzv, student, method, data.train, data.dev, ckpt_root, tracker, device, bf16)
    final_metrics = trainer.run()

    stage = staging_dir() if is_main else ""
    zero3 = use_ds and trainer.engine.zero_optimization_stage() == 3
    save_student(student, stage, zero3, is_main)
    if is_main:
        png = tracker.plot(os.path.join(folder, "training_curve.png"))
        extras = [(tracker.path, "metrics.jsonl")] + ([(png, "training_curve.png")] if png else [])
        teacher_ref = cfg.teacher or data.teacher
        inputs = [*data.inputs, {"role": "teacher", "uri": teacher_ref}, {"role": "student_init", "uri": cfg.student}]
        publish_run(out, stage, extras, "train-student", config_dict(cfg), inputs,
            len(data.train), data.license, method=cfg.method, teacher=teacher_ref, target_dim=target_dim,
            target_type=cfg.target_type, text_column=data.text_column, pair_column=data.pair_column,
            steps=trainer.total_steps, world_size=rdzv.world_size, deepspeed=use_ds,
            final_metrics=final_metrics, untrained_metrics=tracker.untrained_metrics(),
            dev_rows=len(data.dev) if data.dev else 0)
        if cfg.push_to:
            push_to_hub(cfg.push_to, stage, extras)
        tracker.finish({"final_" + k: v for k, v in final_metrics.items()})
        shutil.rmtree(stage, ignore_errors=True)
