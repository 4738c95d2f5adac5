"""The `Method` protocol: what a distillation method owns, and the registry `--method` picks from.

A method owns everything that differs between distillation methods, and nothing else:
- `Options`: its own options (a dataclass of `setting(...)` fields), shown by
  `train-student --method NAME --help` beside the shared ones;
- `setup(ctx)`: its data (which artifacts or raw inputs it reads, the dev split) and its student;
- `loss(rows)`: a batch of those training rows made and scored, through `self.model`;
- `evaluate()`: dev metrics, with `headline` naming the one the progress bar, the curve, the
  manifest and the tracker show;
- `save(folder)`: the student in the format its users load.

The loop, the runner, checkpoints, preemption, DeepSpeed and the rendezvous know only this
protocol. The loop sets `model` (the student, or its DDP/DeepSpeed wrapper) before the first
`loss`: the method, not the loop, runs forward passes.

Adding a method: one module with a class like `EmbeddingMethod`, and one `register` line in
`distil_jobs/train/methods/__init__.py`. See docs/architecture.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch


@dataclasses.dataclass(frozen=True, slots=True)
class Metric:
    """A dev metric and which way is better, e.g. Metric("dev_cosine", higher_is_better=True)."""

    name: str
    higher_is_better: bool

    def describe(self) -> str:
        return f"{self.name} ({'higher' if self.higher_is_better else 'lower'} is better)"


@dataclasses.dataclass(slots=True)
class TrainContext:
    """What a method gets to set itself up: the resolved config and where it runs."""

    cfg: Any  # the whole train-student config: shared options and this method's
    options: Any  # this method's own options (an instance of its `Options`)
    device: torch.device
    autocast: torch.dtype | None  # bf16 autocast for forward passes, None for fp32 (DeepSpeed casts itself)
    attention: str  # flash_attention_2, sdpa or eager: what the student should load with


@dataclasses.dataclass(frozen=True, slots=True)
class LrGroup:
    """Student parameters (by name prefix) trained at their own learning rate, or frozen for a while,
    e.g. a new projection head at 10x the rate while the encoder waits 100 steps."""

    name: str
    prefixes: tuple[str, ...]
    lr_scale: float = 1.0  # times --lr
    frozen_steps: int = 0  # learning rate 0 for the first N optimizer steps


@dataclasses.dataclass(slots=True)
class MethodSetup:
    """What `setup` returns: the student to train and what the manifest should say about the data."""

    student: torch.nn.Module
    train_rows: int  # the loop draws row indices in [0, train_rows)
    dev_rows: int
    inputs: list[dict[str, Any]]  # manifest input references (data artifacts, teacher, student init)
    license: str | None  # licence of the training data, carried into the student's manifest
    manifest: dict[str, Any] = dataclasses.field(default_factory=dict)  # method facts (teacher, dims, columns)
    lr_groups: tuple[LrGroup, ...] = ()  # parameters that train at their own rate; the rest at --lr


@runtime_checkable
class Method(Protocol):
    name: ClassVar[str]
    Options: ClassVar[type]
    headline: Metric
    model: Any  # set by the loop: what forward passes go through
    # Optional: `watched: tuple[Metric, ...]`, the dev metrics besides the headline that the student
    # must not lose (the guard compares them with the untrained student; see train/guard.py).

    def __init__(self, ctx: TrainContext) -> None: ...

    def setup(self) -> MethodSetup:
        """Read the data and build the student. Bad input raises DistilError: nothing is claimed yet."""
        ...

    def loss(self, rows: list[int]) -> torch.Tensor:
        """The scalar loss of one micro-batch of training rows (indices into the training data)."""
        ...

    def evaluate(self) -> dict[str, float]:
        """Dev metrics (keys start with `dev_`), on every rank (ZeRO-3 gathers weights collectively)."""
        ...

    def save(self, folder: str) -> None:
        """Write the trained student to `folder` (rank 0, weights already gathered)."""
        ...


@contextlib.contextmanager
def evaluating(module: torch.nn.Module) -> Iterator[None]:
    """`module` in eval mode (no dropout) for a dev evaluation, back in its earlier mode afterwards."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def validate_options(method: type[Method], options: Any) -> None:
    """A method may check combinations of its options before anything runs (`check_options`)."""
    check = getattr(method, "check_options", None)
    if check is not None:
        check(options)


class MethodRegistry:
    """Methods by name; a second method under a taken name is refused."""

    def __init__(self) -> None:
        self._methods: dict[str, type[Method]] = {}

    def register(self, method: type[Method]) -> type[Method]:
        if method.name in self._methods and self._methods[method.name] is not method:
            raise ValueError(f"a method named '{method.name}' is already registered")
        if not dataclasses.is_dataclass(method.Options):
            raise TypeError(f"{method.__name__}.Options must be a dataclass of setting(...) fields")
        self._methods[method.name] = method
        return method

    def unregister(self, name: str) -> None:
        self._methods.pop(name, None)

    def __getitem__(self, name: str) -> type[Method]:
        from distil_jobs.errors import DistilError

        if name not in self._methods:
            raise DistilError(f"unknown --method '{name}': one of {', '.join(self._methods)}")
        return self._methods[name]

    def names(self) -> tuple[str, ...]:
        return tuple(self._methods)

    def items(self) -> list[tuple[str, type[Method]]]:
        return list(self._methods.items())
