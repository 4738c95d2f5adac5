"""What submitit runs on the node: `distil-jobs <job> <args>` as a child process, and its exit status.

The job runs as a child so that its exit code and signals behave exactly as when it is run by hand.
Preemption (submitit's USR2, sent `signal_delay_s` before the time limit or by `scancel --signal`)
reaches submitit's handler in this parent, which calls `JobCall.checkpoint()` and then requeues the
job and exits at once. So `checkpoint()` forwards the signal to the child and waits, within the
grace time, for it to save and exit 75 before it hands submitit the call to requeue. The child may
have received the signal from Slurm too: train-student's handler is idempotent.

submitit pickles only a failure's traceback text, so the child's exit code travels in the
message of `JobExitError` ("... exited with code N") and `exit_status` reads it back.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import time
from typing import Any

from distil_jobs.errors import DistilError, PreemptedError
from distil_jobs.launch.envfile import read_env_file

_log = logging.getLogger("distil_jobs.launch")
PREEMPTED = PreemptedError.exit_code  # the job saved its state and wants to be resumed
# Set in the child's environment (train-student's --no-requeue, as DISTIL_* env): submitit requeues
# the job, so the job must not `scontrol requeue` itself as well (two requeues of one job race).
NO_SELF_REQUEUE = {"DISTIL_REQUEUE": "0"}
_EXIT = re.compile(r"exited with code (-?\d+)")

try:  # submitit is an extra; without it the module still imports (for --help and rendering errors)
    from submitit.core.logger import get_logger as _submitit_logger
    from submitit.core.utils import DelayedSubmission, UncompletedJobError
    from submitit.helpers import Checkpointable as _Base

    # On the node only submitit's logger has a handler: its lines land in the task's log.
    log = _submitit_logger()
except ImportError:  # pragma: no cover - exercised only without the slurm extra
    _Base = object  # type: ignore[assignment,misc]
    DelayedSubmission = UncompletedJobError = None  # type: ignore[assignment,misc]
    log = _log


class JobExitError(DistilError):
    """A task's job ended with a non-zero code; `submit --wait` exits with that same code."""

    def __init__(self, job: str, code: int) -> None:
        what = {2: "bad input: fix the flags named in its log", PREEMPTED: "preempted after saving its state and not "
                "requeued: rerun the same command to resume"}.get(code, "failed: see its log")
        super().__init__(f"{job} exited with code {code} ({what})")
        self.exit_code = code if 0 < code < 256 else 1


def exit_status(failure: BaseException | str) -> int:
    """The job's exit code from a task failure as submitit returns it (the traceback text): 1 if
    the job never reported one (killed by Slurm, node lost, cancelled)."""
    found = _EXIT.findall(str(failure))
    code = int(found[-1]) if found else 1
    return code if 0 < code < 256 else 1


def overall_status(codes: list[int]) -> int:
    """One exit status for several tasks: 0 if all succeeded; else the first real failure, which a
    rerun will not fix by itself; 75 only if every failed task was preempted."""
    failed = [c for c in codes if c]
    return next((c for c in failed if c != PREEMPTED), PREEMPTED if failed else 0)


def _other_rank() -> bool:
    return os.environ.get("SUBMITIT_EXECUTOR") == "slurm" and os.environ.get("SLURM_PROCID", "0") != "0"


def _preempt_signal() -> int:
    # The signal submitit listens to (it reads the same variable); train-student saves on any of them.
    return int(getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), signal.SIGUSR2))


class JobCall(_Base):  # type: ignore[misc,valid-type]
    """`distil-jobs <job> <args>` as a picklable callable: what submitit runs on the node.

    `launcher` prefixes the command (e.g. `apptainer exec --nv image.sif`); the job then runs as
    `distil-jobs` inside it. `env_file` is a path read on the node, so secrets never enter the
    pickle, the script or the logs.
    """

    def __init__(self, job: str, args: tuple[str, ...], launcher: tuple[str, ...] = (),
                 env_file: str | None = None, grace_s: float = 100) -> None:
        self.job = job
        self.args = tuple(args)
        self.launcher = tuple(launcher)
        self.env_file = env_file
        self.grace_s = grace_s
        self._proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        if self.launcher:
            return [*self.launcher, "distil-jobs", self.job, *self.args]
        return [sys.executable, "-m", "distil_jobs.cli", self.job, *self.args]

    def fresh(self) -> JobCall:
        """The same call, without a running child: what is pickled for the requeued job."""
        return JobCall(self.job, self.args, self.launcher, self.env_file, self.grace_s)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_proc": None}  # a Popen is neither picklable nor meaningful elsewhere

    def __call__(self) -> str:
        env = {**os.environ, **NO_SELF_REQUEUE}
        if self.env_file:
            env.update(read_env_file(self.env_file))
        self._proc = subprocess.Popen(self.command(), env=env)
        try:
            code = self._wait()
        except Exception as e:
            # submitit's handler raises UncompletedJobError when checkpoint() declined the requeue:
            # the child had already ended by itself (done, or failed), so report what it did.
            if UncompletedJobError is None or not isinstance(e, UncompletedJobError) or self._proc.poll() is None:
                raise
            code = self._proc.returncode
        if code == PREEMPTED and _other_rank():
            # Rank 0's parent requeues the whole job, which ends this task; leave no failure behind.
            log.info("%s saved its state (exit %d): waiting for rank 0 to requeue the job", self.job, code)
            time.sleep(self.grace_s + 60)
        if code != 0:
            raise JobExitError(self.job, code)
        return f"{self.job}: done"

    def _wait(self) -> int:
        # Short waits, not one blocking wait(): the signal handler runs inside this loop and waits on
        # the same child, which a blocking Popen.wait() would hold locked.
        assert self._proc is not None
        while True:
            try:
                return self._proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                continue

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """Called by submitit's signal handler (rank 0): let the child save, then requeue the call."""
        proc = self._proc
        if proc is None:
            return DelayedSubmission(self.fresh())
        if proc.poll() is None:
            sig = _preempt_signal()
            log.info("preemption: forwarding %s to %s (pid %d); waiting up to %.0f s for it to save",
                     signal.Signals(sig).name, self.job, proc.pid, self.grace_s)
            proc.send_signal(sig)
            deadline = time.monotonic() + self.grace_s
            while proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            if proc.poll() is None:
                log.warning("%s did not exit within %.0f s: killing it; it resumes from its last checkpoint",
                            self.job, self.grace_s)
                proc.kill()
                proc.wait()
                return DelayedSubmission(self.fresh())
        if proc.returncode != PREEMPTED:
            # It finished (0) or failed on its own meanwhile: nothing to resume, so no requeue;
            # submitit then raises in __call__, which reports this exit code.
            log.info("%s exited %d before it could be preempted: not requeued", self.job, proc.returncode)
            return None
        log.info("%s saved its state and exited %d: requeueing", self.job, PREEMPTED)
        return DelayedSubmission(self.fresh())

    def __repr__(self) -> str:
        return f"JobCall({self.job!r}, {self.args!r})"
