"""`--wait-for-inputs`: a job started before the job that makes its input waits for that input's
manifest, then runs on the finished artifact; a missing input times out with one line.

What one `kubectl apply -k` of a whole pipeline does: every Job starts at once."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest

COUNT = ["count-tokens", "--model", "minilm", "--text-column", "en"]


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "distil_jobs.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_a_job_waits_for_the_manifest_of_an_input_another_job_is_still_making(menyo_small, tmp_path):
    emb, counts = tmp_path / "emb", tmp_path / "counts"
    consumer = start(*COUNT, "--input", str(emb), "--output", str(counts), "--wait-for-inputs", "60")
    assert consumer.stderr is not None
    seen = []
    for line in consumer.stderr:  # the producer starts only once the consumer says it waits
        seen.append(line)
        if "waiting for 1 input(s)" in line:
            break
    assert seen and f"--input {emb} (does not exist yet)" in seen[-1], "".join(seen)
    producer = start("precompute-embeddings", "--input", str(menyo_small), "--output", str(emb),
                     "--teacher", "minilm", "--text-column", "en", "--max-rows", "48", "--max-length", "32")
    _, p_err = producer.communicate(timeout=120)
    assert producer.returncode == 0, p_err[-2000:]
    _, c_err = consumer.communicate(timeout=120)
    assert consumer.returncode == 0, "".join(seen) + c_err[-2000:]
    assert f"input --input {emb} is ready" in c_err
    # The counts were made from the finished artifact: its rows, and its manifest by hash.
    made = json.loads((counts / "manifest.json").read_text())
    assert made["extra"]["texts"] == 48
    emb_manifest = hashlib.sha256((emb / "manifest.json").read_bytes()).hexdigest()
    assert made["inputs"][0]["manifest_sha256"] == emb_manifest


@pytest.mark.parametrize("how", ["flag", "pipeline-file"])
def test_an_input_nobody_makes_times_out_with_one_line_naming_it(how, tmp_path, monkeypatch):
    missing, out = tmp_path / "never", tmp_path / "counts"
    args = [*COUNT, "--input", str(missing), "--output", str(out)]
    if how == "flag":
        args += ["--wait-for-inputs", "1"]
    else:  # the key in a job's section of a pipeline file, found through DISTIL_CONFIG
        pipeline = tmp_path / "pipeline.yaml"
        pipeline.write_text("count-tokens:\n  wait_for_inputs: 1\ntrain-student:\n  epochs: 1\n")
        monkeypatch.setenv("DISTIL_CONFIG", str(pipeline))
    done = subprocess.run([sys.executable, "-m", "distil_jobs.cli", *args], capture_output=True, text=True,
                          timeout=60, check=False)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 1, done.stderr  # retriable: the producer may only be queued
    assert errors == [f"error: input --input {missing} is not ready after --wait-for-inputs 1 s (does not exist yet): "
                      "check that the job producing it runs and succeeds, or raise --wait-for-inputs"]
    assert not out.exists()  # nothing claimed, nothing written


def test_dry_run_does_not_wait(tmp_path):
    done = subprocess.run([sys.executable, "-m", "distil_jobs.cli", *COUNT, "--input", str(tmp_path / "never"),
                           "--output", str(tmp_path / "out"), "--wait-for-inputs", "600", "--dry-run"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "wait_for_inputs: 600  # flag" in done.stdout
