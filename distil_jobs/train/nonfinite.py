"""Non-finite steps: a NaN or inf loss or gradient norm must never reach the published student.

The loop asks `NonFiniteGuard.skip` before each optimizer step, with the loss averaged over ranks
and the gradient norm after DDP's all-reduce, so every rank decides the same. A bad step is
skipped (gradients dropped, as a mixed-precision loss scaler does) up to `--skip-nonfinite` times
in the whole run; the next one stops the run with one line naming the step, and nothing is
published: the last good checkpoint stays for a rerun. With DeepSpeed the step is already applied
when its norm is known, so the first bad step stops the run. `require_finite_weights` is the last
check before a student is saved, whatever happened in between.
"""

from __future__ import annotations

import math

import torch

from distil_jobs.errors import JobFault

FIX = "lower --lr, check the targets for NaN, or allow a few with --skip-nonfinite N"


class NonFiniteGuard:
    def __init__(self, limit: int, count: int = 0) -> None:
        self.limit = limit
        self.count = count  # bad steps so far, kept across a resume (in the checkpoint)

    def skip(self, step: int, loss: float, grad_norm: float, can_skip: bool = True) -> bool:
        """True when this step must be dropped; raises when the run must stop."""
        if math.isfinite(loss) and math.isfinite(grad_norm):
            return False
        self.count += 1
        if not can_skip or self.count > self.limit:
            raise JobFault(f"training diverged at step {step}: loss {loss}, gradient norm {grad_norm} "
                           f"({self.count} non-finite step(s), --skip-nonfinite {self.limit}); nothing was "
                           f"published, checkpoints of earlier steps are kept: {FIX}")
        return True


def require_finite_weights(model: torch.nn.Module) -> None:
    bad = [name for name, p in model.named_parameters() if p.numel() and not bool(torch.isfinite(p).all())]
    if bad:
        raise JobFault(f"the student has non-finite weights ({len(bad)} tensor(s), first {bad[0]}): nothing was "
                       f"published: {FIX}")


def require_finite_metrics(metrics: dict[str, float]) -> None:
    bad = [k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        raise JobFault(f"the final dev metrics are not finite ({', '.join(bad)}): nothing was published: {FIX}")
