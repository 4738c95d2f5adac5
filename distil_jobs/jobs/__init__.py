"""The job registry: every `distil-jobs <job>` is one module here plus one line in `JOBS`.

The CLI builds its commands from it, the launchers read which jobs shard, and a pipeline
runner checks that a step's output kind is what the next step's input accepts. Importing
this package is cheap: job modules (and torch) load only when their job is used.

A job module defines `Config` (a dataclass of `setting(...)` fields), `run(cfg)`, optionally
`validate(cfg)`, and its docstring, which is the command's --help.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from dataclasses import dataclass
from types import ModuleType

# Artifact kinds: what a manifest's "kind" says, and what inputs accept.
TEACHER_EMBEDDINGS = "teacher-embeddings"
STUDENT_MODEL = "student-model"
MTEB_REPORT = "mteb-report"
SENSE_SAMPLES = "sense-samples"  # gather-senses: per-token samples of teacher vectors
SENSE_DICT = "sense-dict"  # cluster: per-token sense vectors (centroids, offsets, counts)
TOKEN_COUNTS = "token-counts"  # count-tokens: how often each token id occurs in a corpus
TEACHER_MODEL = "teacher-model"  # prepare-teacher: a model with a head fitted for a task
DATASET = "dataset"  # plain data files (jsonl, csv, parquet, save_to_disk), no manifest needed
MODEL = "model"  # a model folder, alias or hub id


@dataclass(frozen=True, slots=True)
class JobSpec:
    name: str
    module: str
    output_kind: str
    inputs: dict[str, tuple[str, ...]]  # option name -> the kinds it accepts
    sharded: bool  # split by --num-shards/--shard-index (Slurm arrays, Indexed Jobs)

    def load(self) -> ModuleType:
        # Some libraries print on import (transformers: "[INFO] Running in WANDB offline mode"); stdout
        # is the command's output (k8s render's manifests, pipeline status), so that goes to stderr.
        with contextlib.redirect_stdout(sys.stderr):
            return importlib.import_module(self.module)


JOBS: dict[str, JobSpec] = {spec.name: spec for spec in (
    JobSpec("precompute-embeddings", "distil_jobs.jobs.precompute", TEACHER_EMBEDDINGS,
            {"input": (DATASET, TEACHER_EMBEDDINGS), "teacher": (MODEL, STUDENT_MODEL, TEACHER_MODEL),
             "sense_dict": (SENSE_DICT,), "token_counts": (TOKEN_COUNTS,)}, sharded=True),
    JobSpec("train-student", "distil_jobs.jobs.train", STUDENT_MODEL,
            {"targets": (TEACHER_EMBEDDINGS,), "input": (DATASET,), "dev_input": (TEACHER_EMBEDDINGS, DATASET),
             "teacher": (MODEL, STUDENT_MODEL, TEACHER_MODEL), "student": (MODEL, STUDENT_MODEL, TEACHER_MODEL),
             "sense_dict": (SENSE_DICT,), "token_counts": (TOKEN_COUNTS,)}, sharded=False),
    JobSpec("evaluate-mteb", "distil_jobs.jobs.evaluate", MTEB_REPORT,
            {"models": (MODEL, STUDENT_MODEL)}, sharded=True),
    JobSpec("gather-senses", "distil_jobs.jobs.gather", SENSE_SAMPLES,
            {"input": (DATASET,), "teacher": (MODEL, STUDENT_MODEL)}, sharded=True),
    JobSpec("cluster", "distil_jobs.jobs.cluster", SENSE_DICT, {"samples": (SENSE_SAMPLES,)}, sharded=True),
    JobSpec("count-tokens", "distil_jobs.jobs.count_tokens", TOKEN_COUNTS,
            {"input": (DATASET, TEACHER_EMBEDDINGS), "model": (MODEL, STUDENT_MODEL, TEACHER_MODEL)}, sharded=False),
    JobSpec("prepare-teacher", "distil_jobs.jobs.prepare", TEACHER_MODEL,
            {"input": (DATASET,), "dev_input": (DATASET,), "model": (MODEL, STUDENT_MODEL, TEACHER_MODEL),
             "token_counts": (TOKEN_COUNTS,)}, sharded=False),
)}


def job(name: str) -> JobSpec:
    from distil_jobs.errors import DistilError

    if name not in JOBS:
        raise DistilError(f"unknown job '{name}': one of {', '.join(sorted(JOBS))}")
    return JOBS[name]


def sharded_jobs() -> tuple[str, ...]:
    return tuple(name for name, spec in JOBS.items() if spec.sharded)
