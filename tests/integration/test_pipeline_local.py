"""`distil-jobs pipeline run jobs/demo.yaml --launcher local` on a few hundred rows, as `make demo`
runs it: every step in link order, a report with every model and task; a rerun skips every step;
changing one option of the train step reruns train and evaluate but not precompute; a SIGTERM to the
pipeline stops the running step with its state saved, and the same command resumes it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def pipeline(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "distil_jobs.cli", "pipeline", *args], capture_output=True,
                          text=True, env=env, timeout=900, check=False)


def actions(stdout: str) -> dict[str, str]:
    """step -> 'run: reason' or 'skip: reason', from the runner's lines."""
    found = {}
    for line in stdout.splitlines():
        if line.startswith("pipeline: ") and (": run: " in line or ": skip: " in line):
            step, rest = line.removeprefix("pipeline: ").split(": ", 1)
            found[step] = rest
    return found


@pytest.mark.slow
def test_demo_pipeline_runs_skips_when_done_and_reruns_what_an_option_changes(tmp_path, data_path):
    import os

    work = tmp_path / "demo"
    env = {**os.environ, "DEMO_OUT": str(work), "DEMO_ROWS": "200", "DEMO_TEST_ROWS": "150",
           "DISTIL_DATA_DIR": str(data_path), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    file = tmp_path / "demo.yaml"
    file.write_text((REPO / "jobs" / "demo.yaml").read_text().replace("watch_rows: 300", "watch_rows: 100"))

    first = pipeline("run", str(file), env=env)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-3000:]
    assert list(actions(first.stdout)) == ["precompute-embeddings", "train-student", "evaluate-mteb"]
    summary = json.loads((work / "report" / "summary.json").read_text())
    assert set(summary["scores"]) == {"Menyo20kBitext", "STSB"}
    for task in summary["scores"].values():
        assert set(task) == {"teacher-minilm", "student-yoruba"}
    embeddings = (work / "embeddings" / "manifest.json").read_bytes()
    student = (work / "student" / "manifest.json").read_bytes()

    again = pipeline("run", str(file), env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert all(a.startswith("skip: done with the same settings") for a in actions(again.stdout).values()), again.stdout
    assert len(actions(again.stdout)) == 3

    file.write_text(file.read_text().replace("lr: 1e-4", "lr: 2e-4"))
    # Stopped while the changed train step runs (a scheduler's SIGTERM to the pipeline): the step
    # saves and exits 75, the pipeline waits for it and exits 75, and no process is left behind.
    stopped = subprocess.Popen([sys.executable, "-m", "distil_jobs.cli", "pipeline", "run", str(file)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    while (work / "student" / "manifest.json").exists() or not (work / "student" / "metrics.jsonl").exists():
        assert stopped.poll() is None and time.time() < deadline, "the changed train step never started"
        time.sleep(0.5)
    stopped.send_signal(signal.SIGTERM)
    out, err = stopped.communicate(timeout=300)
    assert stopped.returncode == 75, out[-2000:] + err[-3000:]
    assert actions(out)["train-student"].startswith("run: settings changed (lr 0.0001 → 0.0002)")
    assert "train-student stopped by a signal after saving its state (exit 75)" in out
    step_config = str(work / ".distil-pipeline" / "demo" / "train-student.yaml")
    assert subprocess.run(["pgrep", "-f", step_config], capture_output=True).returncode == 1, "a step outlived it"

    changed = pipeline("run", str(file), env=env)
    assert changed.returncode == 0, changed.stderr[-3000:]
    done = actions(changed.stdout)
    assert done["precompute-embeddings"].startswith("skip: done with the same settings")
    assert done["train-student"] == "run: partial: resuming"
    assert done["evaluate-mteb"] == "run: its input step train-student reruns"
    assert (work / "embeddings" / "manifest.json").read_bytes() == embeddings
    assert (work / "student" / "manifest.json").read_bytes() != student
    assert json.loads((work / "student" / "manifest.json").read_text())["config"]["lr"] == 2e-4

    status = pipeline("status", str(file), env=env)
    assert [line.split()[:2] for line in status.stdout.splitlines()] == [
        ["precompute-embeddings", "done"], ["train-student", "done"], ["evaluate-mteb", "done"]]
    assert "mean " in status.stdout and "teacher-minilm" in status.stdout  # the report's headline


def test_a_step_that_waits_for_a_missing_input_times_out_with_one_line(tmp_path, data_path):
    import os

    file = tmp_path / "p.yaml"
    file.write_text(f"""\
workdir: {tmp_path / "work"}
precompute-embeddings:
  input: {data_path / "menyo20k" / "train.jsonl"}
  text_column: en
  output: embeddings
train-student:
  targets: embeddings
  wait_for_inputs: 1
  output: student
""")
    done = pipeline("run", str(file), "--only", "train-student", env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 1, done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and str(tmp_path / "work" / "embeddings") in errors[0], done.stderr
    assert "pipeline: train-student failed (exit 1)" in done.stdout
    assert not (tmp_path / "work" / "student" / "manifest.json").exists()
