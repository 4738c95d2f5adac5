"""Train a student from a teacher with a distillation method (--method; default embedding).

embedding: the student learns the teacher's sentence embeddings, from a precompute-embeddings
artifact (--targets) or an online teacher (--input with --teacher); with --pair-column (English +
translation) it learns the other language too. `train-student --method NAME --help` lists the
method's own options. DDP by default, DeepSpeed ZeRO with --deepspeed-stage; checkpoints every
--save-steps; SIGTERM/SIGUSR1/SIGUSR2 save and exit 75, and the same command resumes. The
student lands in <output>/final/ (in its method's format), the manifest is written last.

\b
One process:
  distil-jobs train-student --targets out/menyo-mpnet --student minilm \\
      --output out/student --epochs 1 --batch-size 32
Online teacher, 2 local ranks (CPU: gloo, GPU: NCCL), ZeRO-2:
  distil-jobs train-student --input $DISTIL_DATA_DIR/menyo20k/train.jsonl --text-column en \\
      --pair-column yo --teacher mpnet --student minilm --nproc-per-node 2 --deepspeed-stage 2 --output out/s
Two nodes (run one command on each; the output on storage both see, or s3:// / hf://):
  node0$ distil-jobs train-student ... --nnodes 2 --node-rank 0 --nproc-per-node 8 --master-addr node0
  node1$ distil-jobs train-student ... --nnodes 2 --node-rank 1 --nproc-per-node 8 --master-addr node0
torchrun, Slurm (srun, one task per GPU or one per node) and Kubernetes Indexed Jobs are read
from their environment; see docs/train-student.md.
"""

from __future__ import annotations

import dataclasses

from distil_jobs.config import compose, group_options, setting
from distil_jobs.errors import DistilError
from distil_jobs.train.methods import METHODS
from distil_jobs.train.methods.base import validate_options

NAME = "train-student"


@dataclasses.dataclass(kw_only=True, slots=True)
class TrainOptions:
    """The options every method shares: data, student, optimisation, checkpoints, tracking, DeepSpeed, rendezvous."""

    output: str | None = setting(None, "Where the run lives: checkpoints/, metrics.jsonl, final/ (the student) and "
                                       "manifest.json. A folder, s3://... or hf://...; rerun with the same output "
                                       "to resume.")
    method: str = setting("embedding", "Distillation method; `--method NAME --help` shows its options.",
                          fingerprint=True)
    # data
    targets: str | None = setting(None, "An artifact with the teacher's outputs, e.g. from precompute-embeddings.",
                                  data=True)
    input: str | None = setting(None, "Raw text dataset URI; --teacher computes the targets on the fly.",
                                data=True)
    text_column: str | None = setting(None, "Text column (default: the targets artifact's, else 'text').",
                                      fingerprint=True)
    max_rows: int | None = setting(None, "Use only the first N training rows.", fingerprint=True, min=1)
    cast_text: bool = setting(False, "Train on the string form of a non-text column (numbers, lists) instead of "
                                     "refusing it.", fingerprint=True)
    dev_input: str | None = setting(None, "Dev set URI (a targets artifact, or raw text for the teacher).",
                                    data=True)
    dev_fraction: float = setting(0.02, "Without --dev-input, hold out this fraction of rows (fixed by --seed).",
                                  fingerprint=True, min=0)
    # models
    teacher: str | None = setting(None, "Online teacher: alias (minilm, mpnet), folder or hub id. Needed "
                                        "without --targets.", fingerprint=True)
    student: str = setting("minilm", "Student model: alias, folder, hf://org/model or hub id.", fingerprint=True)
    student_layers: list[int] = setting([], "Keep only these layers of the student, e.g. 0,2,4.", fingerprint=True,
                                        min=0)
    # optimisation
    batch_size: int = setting(32, "Rows per micro-batch per process (parallel data: pairs).", fingerprint=True,
                              min=1)
    grad_accum: int = setting(1, "Micro-batches per optimizer step.", fingerprint=True, min=1)
    lr: float = setting(5e-5, "Peak learning rate (AdamW).", fingerprint=True, min=0)
    weight_decay: float = setting(0.01, "AdamW weight decay (not on biases and norms).", fingerprint=True, min=0)
    warmup_ratio: float = setting(0.1, "Fraction of steps with linear warmup; linear decay after.",
                                  fingerprint=True, min=0, max=1)
    max_grad_norm: float = setting(1.0, "Clip gradients to this norm (0: off).", fingerprint=True, min=0)
    epochs: int = setting(1, "Passes over the training rows.", fingerprint=True, min=1)
    max_steps: int | None = setting(None, "Stop after this many optimizer steps (overrides --epochs).",
                                    fingerprint=True, min=1)
    max_length: int = setting(128, "Student's max tokens per text.", fingerprint=True, min=1)
    seed: int = setting(42, "Seed for shuffling, the dev split and initialisation.", fingerprint=True, min=0)
    precision: str = setting("auto", "auto: bf16 on GPUs that support it, else fp32.",
                             choices=("auto", "fp32", "bf16"), fingerprint=True)
    skip_nonfinite: int = setting(0, "Drop up to N optimizer steps whose loss or gradient norm is NaN/inf (counted in "
                                     "the manifest); one more stops the run without publishing. 0: the first stops it.",
                                  min=0)
    gradient_checkpointing: bool = setting(False, "Recompute activations in backward to save memory.")
    compile: bool = setting(False, "torch.compile the student (DDP path).")
    device: str = setting("auto", "auto, cpu or cuda (each rank takes cuda:LOCAL_RANK).")
    # evaluation, checkpoints, tracking
    eval_steps: int = setting(100, "Evaluate on the dev split every N steps (0: only at start and end).", min=0)
    keep_best: str | None = setting(None, "Publish the evaluation step with the best value of this dev metric "
                                          "('headline', or a metric the method reports, e.g. dev_sts_spearman) "
                                          "instead of the last step.", fingerprint=True)
    fail_on_regression: bool = setting(False, "Fail, publishing nothing, when the student ends worse than the "
                                              "untrained one on any watched dev metric (the manifest says so "
                                              "either way).")
    save_steps: int = setting(500, "Checkpoint every N steps (0: only on preemption).", min=0)
    keep_checkpoints: int = setting(2, "Keep the newest N checkpoints (the newest is needed to resume).", min=1)
    checkpoint_dir: str | None = setting(None, "Local/shared folder for checkpoints (default: <output>/checkpoints; "
                                               "with an s3:// or hf:// output, <output>/checkpoints/ on the store, "
                                               "through a local cache). Several nodes need one that all of them "
                                               "see.")
    log_steps: int = setting(10, "Log a metrics line every N steps.", min=1)
    requeue: bool = setting(True, "On preemption under Slurm, `scontrol requeue` the job when it allows requeue.")
    wandb: bool = setting(False, "Log to wandb; only this turns it on (WANDB_API_KEY alone does not). Mode: "
                                 "WANDB_MODE if set, else online with WANDB_API_KEY, else offline.")
    wandb_project: str = setting("distil-jobs", "wandb project.")
    wandb_run_name: str | None = setting(None, "wandb run name.")
    push_to: str | None = setting(None, "Also upload the student to hf://org/name (token from HF_TOKEN).")
    # DeepSpeed
    deepspeed_stage: int | None = setting(None, "Use DeepSpeed ZeRO at this stage (0-3); default: plain DDP.",
                                          fingerprint=True, min=0, max=3)
    offload_optimizer: str = setting("none", "ZeRO optimizer offload.", choices=("none", "cpu"), fingerprint=True)
    deepspeed_config: str | None = setting(None, "A DeepSpeed JSON config to use instead (gaps are filled).",
                                           fingerprint=True)
    # rendezvous
    nproc_per_node: int | None = setting(None, "Ranks to start on this node (default: 1, or the GPU count).", min=1)
    nnodes: int | None = setting(None, "Number of nodes.", min=1)
    node_rank: int | None = setting(None, "This node's index, 0..nnodes-1.", min=0)
    master_addr: str | None = setting(None, "Host of rank 0.")
    master_port: int | None = setting(None, "Port of rank 0 (default 29500; under Slurm derived from the job id).",
                                      min=1, max=65535)
    backend: str = setting("auto", "torch.distributed backend (auto: nccl on GPUs, gloo on CPU).",
                           choices=("auto", "gloo", "nccl"))
    k8s_job: str | None = setting(None, "Kubernetes Indexed Job name (default: from the pod's hostname).")
    k8s_service: str | None = setting(None, "Headless service of the Kubernetes Indexed Job (rank 0 is "
                                            "<job>-0.<service>).")
    dist_timeout: int = setting(300, "Seconds a collective may wait for the other ranks: a rank that died or "
                                     "hangs ends the others with exit 75 (restart from the last checkpoint).", min=1)


def build_config() -> type:
    """The flat train-student config: the shared options, then each registered method's own."""
    return compose("Config", TrainOptions, {name: method.Options for name, method in METHODS.items()}, "method")


Config = build_config()


def validate(cfg: TrainOptions) -> None:
    if not cfg.output:
        raise DistilError("--output is required: where to write checkpoints and the student")
    if not cfg.targets and not cfg.input:
        raise DistilError("give --targets (an artifact of teacher outputs) or --input with --teacher")
    if cfg.targets and cfg.input:
        raise DistilError("give either --targets or --input, not both")
    if cfg.input and not cfg.teacher:
        raise DistilError("--input needs --teacher MODEL to compute targets online (or use --targets)")
    validate_loop(cfg)
    method = METHODS[cfg.method]
    validate_options(method, group_options(cfg, method.Options))


def validate_loop(cfg: TrainOptions) -> None:
    """The checks of the options every training job shares (prepare-teacher reuses them)."""
    if cfg.dev_fraction >= 1:
        raise DistilError(f"--dev-fraction {cfg.dev_fraction}: use a value in [0, 1)")
    if cfg.offload_optimizer != "none" and cfg.deepspeed_stage not in (1, 2, 3) and not cfg.deepspeed_config:
        raise DistilError("--offload-optimizer needs --deepspeed-stage 1, 2 or 3")
    if cfg.skip_nonfinite and (cfg.deepspeed_stage is not None or cfg.deepspeed_config):
        raise DistilError("--skip-nonfinite needs the plain DDP path: DeepSpeed applies a step before its norm is "
                          "known (its fp16 loss scaler skips overflow steps itself); drop one of them")
    if cfg.push_to and not cfg.push_to.startswith("hf://"):
        raise DistilError(f"--push-to {cfg.push_to}: expected hf://org/name")


def method_class(cfg: TrainOptions) -> type:
    """The method the training runner runs (train/runner.py)."""
    return METHODS[cfg.method]


def run(cfg: TrainOptions) -> None:
    from distil_jobs.train.runner import run_training

    run_training(cfg, NAME)
