"""Prepare a teacher for a task: fit the head that no package ships, on a real encoder.

--task mlm fits a masked-LM head (the transform and output bias; the decoder is tied to the
input embeddings) on an encoder such as minilm or mpnet, so train-student --method mlm has a
teacher to distil. --train-encoder also tunes the encoder: a teacher adapted to the user's
domain, as DistilBERT's seed pipeline distilled a RoBERTa fine-tuned on tweets. The run is
train-student's: the same loop, checkpoints, preemption, tracking, DeepSpeed and publish; the
model lands in <output>/final/ as an AutoModelForMaskedLM folder.

--task qa fine-tunes the encoder and a new QA head on the gold spans of SQuAD-format data, scored
by SQuAD EM/F1 on held-out articles (--eval-titles, --eval-fraction or --dev-input): the teacher
of train-student --method qa, saved as an AutoModelForQuestionAnswering folder.

\b
  distil-jobs prepare-teacher --task mlm --model minilm \\
      --input $DISTIL_DATA_DIR/corpus/sentences_en.tsv --output out/minilm-mlm --epochs 1
  distil-jobs prepare-teacher --task qa --model mpnet --input $DISTIL_DATA_DIR/squad_v1.1_dev/dev.jsonl \\
      --eval-titles Super_Bowl_50,Warsaw --epochs 2 --output out/mpnet-qa
"""

from __future__ import annotations

import dataclasses
import typing

from distil_jobs.config import compose, setting
from distil_jobs.errors import DistilError
from distil_jobs.jobs.train import TrainOptions, validate_loop
from distil_jobs.train.methods import MethodRegistry
from distil_jobs.train.methods.base import validate_options
from distil_jobs.train.methods.mlm_head import MlmHeadMethod
from distil_jobs.train.methods.qa_head import QaHeadMethod

NAME = "prepare-teacher"

TASKS = MethodRegistry()
TASKS.register(MlmHeadMethod)
TASKS.register(QaHeadMethod)


@dataclasses.dataclass(kw_only=True, slots=True)
class PrepareData:
    output: str | None = setting(None, "Where the run lives: checkpoints/, metrics.jsonl, final/ (the model) and "
                                       "manifest.json; rerun with the same output to resume.")
    task: str = setting("mlm", "The head to fit; `--task NAME --help` shows its options.", fingerprint=True)
    model: str = setting("minilm", "The encoder: alias (minilm, mpnet), folder, hf://org/model or hub id.",
                         fingerprint=True)
    input: str | None = setting(None, "Training data: dataset URI (jsonl/csv/tsv/txt/parquet, s3://, hf://; qa: "
                                      "SQuAD format).",
                                data=True)
    text_column: str | None = setting(None, "Text column (default 'text').", fingerprint=True)
    max_rows: int | None = setting(None, "Use only the first N rows.", fingerprint=True, min=1)
    cast_text: bool = setting(False, "Train on the string form of a non-text column.", fingerprint=True)
    dev_input: str | None = setting(None, "Held-out texts (default: --dev-fraction of --input).", data=True)
    dev_fraction: float = setting(0.02, "Without --dev-input, hold out this fraction of rows.", fingerprint=True,
                                  min=0)


# train-student's options that name its method, data and models: prepare-teacher has its own. Each
# task declares --lr itself: a head alone learns from scratch at a larger step than fine-tuning takes.
_TRAIN_ONLY = {"method", "targets", "teacher", "student", "student_layers", "lr"}


def _options() -> type:
    """prepare-teacher's data and model options, then train-student's optimisation, checkpoint,
    tracking, DeepSpeed and rendezvous options (one definition: the loop reads them)."""
    own = {f.name for f in dataclasses.fields(PrepareData)}
    hints = typing.get_type_hints(TrainOptions)
    made = [(f.name, typing.get_type_hints(PrepareData)[f.name], _copy(f)) for f in dataclasses.fields(PrepareData)]
    made += [(f.name, hints[f.name], _copy(f))
             for f in dataclasses.fields(TrainOptions)
             if f.name not in own and f.name not in _TRAIN_ONLY]
    cls = dataclasses.make_dataclass("PrepareOptions", made, kw_only=True, slots=True)
    cls.__module__ = __name__
    return cls


def _copy(f: dataclasses.Field) -> typing.Any:
    if f.default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=f.default_factory, metadata=f.metadata)
    return dataclasses.field(default=f.default, metadata=f.metadata)


PrepareOptions = _options()
Config = compose("Config", PrepareOptions, {name: task.Options for name, task in TASKS.items()}, "task")


def validate(cfg: typing.Any) -> None:
    from distil_jobs.config import group_options

    if not cfg.output:
        raise DistilError("--output is required: where to write checkpoints and the prepared teacher")
    if not cfg.input:
        raise DistilError("--input is required: the data to fit the head on (e.g. "
                          "$DISTIL_DATA_DIR/corpus/sentences_en.tsv for mlm, $DISTIL_DATA_DIR/squad_v1.1_dev/dev.jsonl "
                          "for qa)")
    validate_loop(cfg)
    task = TASKS[cfg.task]
    validate_options(task, group_options(cfg, task.Options))


def method_class(cfg: typing.Any) -> type:
    """The task's method, run by the training runner (train/runner.py)."""
    return TASKS[cfg.task]


def run(cfg: typing.Any) -> None:
    from distil_jobs.train.runner import run_training

    run_training(cfg, NAME)
