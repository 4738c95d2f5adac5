"""submitit's own preemption path, run for real with its local executor (no Slurm needed): USR2
reaches submitit's handler in the parent, which calls `JobCall.checkpoint()`, requeues and exits.
The child must get the signal and the time to save first (defect A: it was SIGKILLed before)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from distil_jobs.launch.jobcall import JobCall, JobExitError, exit_status, overall_status

submitit = pytest.importorskip("submitit")

# A stand-in for train-student that needs 2 s to save: on USR2 it saves, then exits 75; run again
# after a save, it resumes and finishes (exit 0).
STAND_IN = """
import pathlib, signal, sys, time
state = pathlib.Path(sys.argv[1])
if (state / "saved").exists():
    (state / "resumed").write_text("ok")
    sys.exit(0)
def save(signum, frame):
    time.sleep(2)
    (state / "saved").write_text(signal.Signals(signum).name)
    sys.exit(75)
signal.signal(signal.SIGUSR2, save)
(state / "started").write_text("ok")
while True:
    time.sleep(0.1)
"""


def stand_in_call(tmp_path: Path, body: str = STAND_IN, grace_s: float = 30) -> JobCall:
    script = tmp_path / "stand_in.py"
    script.write_text(body)
    # The launcher prefixes the command as `apptainer exec SIF` would: python stand_in.py STATE distil-jobs ...
    return JobCall("train-student", (), launcher=(sys.executable, str(script), str(tmp_path)), grace_s=grace_s)


def wait_for(path: Path, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.1)


def test_usr2_lets_the_child_save_before_submitit_requeues_and_the_requeued_call_resumes(tmp_path):
    ex = submitit.LocalExecutor(folder=str(tmp_path / "logs"))
    # submitit's local controller sends USR2 to the task signal_delay_s before the time limit, as
    # Slurm does: here 3 s after the start.
    ex.update_parameters(timeout_min=1, signal_delay_s=57)
    job = ex.submit(stand_in_call(tmp_path))
    assert job.result() == "train-student: done"
    assert (tmp_path / "saved").read_text() == "SIGUSR2"  # forwarded, and saved before the parent exited
    assert (tmp_path / "resumed").exists()
    assert "Requeued job" in job.stderr() or "Requeued job" in (job.stdout() or "")


def test_a_child_that_exits_75_by_itself_is_not_a_success(tmp_path):
    call = stand_in_call(tmp_path, "import sys; sys.exit(75)")
    with pytest.raises(JobExitError, match=r"exited with code 75 \(preempted") as e:
        call()
    assert e.value.exit_code == 75


def test_the_job_exit_status_survives_submitits_failure_text(tmp_path):
    ex = submitit.LocalExecutor(folder=str(tmp_path / "logs"))
    ex.update_parameters(timeout_min=5)
    job = ex.submit(stand_in_call(tmp_path, "import sys; sys.exit(2)"))
    with pytest.raises(Exception) as e:  # submitit's FailedJobError carries only the traceback text
        job.result()
    assert exit_status(e.value) == 2
    assert exit_status("killed by the node, no code") == 1
    assert overall_status([0, 0]) == 0 and overall_status([0, 75]) == 75 and overall_status([75, 2, 1]) == 2


def test_the_requeued_call_carries_no_process_and_no_secret(tmp_path):
    import cloudpickle

    call = JobCall("train-student", ("--x",), env_file=str(tmp_path / "secrets.env"))
    again = cloudpickle.loads(cloudpickle.dumps(call.checkpoint().function))
    assert again.args == ("--x",) and again.env_file == call.env_file and again._proc is None
