"""`distil-jobs pipeline`: a file's steps and links are checked before anything runs. Each bad
file is one line naming the problem, exit 2, and nothing is written; a good file's dry run shows
the links and the commands and writes nothing either."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from distil_jobs.cli import main

GOOD = """\
workdir: {work}
precompute-embeddings:
  input: {data}
  text_column: en
  teacher: minilm
  output: embeddings
  resources: {{shards: 2, memory: 8G, time: "1:00:00"}}
train-student:
  targets: embeddings
  student: minilm
  output: student
evaluate-mteb:
  models: [minilm, student/final]
  output: report
"""


def pipeline(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["pipeline", *args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"en": "hello", "yo": "bawo"}\n')
    return path


def write(tmp_path: Path, text: str, data: Path) -> Path:
    path = tmp_path / "pipe.yaml"
    path.write_text(text.format(work=tmp_path / "work", data=data))
    return path


def test_a_dry_run_shows_links_order_and_commands_and_writes_nothing(tmp_path, data):
    code, out, err = pipeline("run", str(write(tmp_path, GOOD, data)), "--dry-run")
    assert code == 0, err
    work = tmp_path / "work"
    assert f"link: precompute-embeddings -> train-student.targets ({work}/embeddings)" in out
    assert f"link: train-student -> evaluate-mteb.models ({work}/student/final)" in out
    order = [line.split(":")[1].strip() for line in out.splitlines() if line.startswith("pipeline:")]
    assert order == ["precompute-embeddings", "train-student", "evaluate-mteb"]
    assert "--num-shards 2 --shard-index 1" in out  # the step's shards, as parallel processes
    assert not work.exists()


def test_steps_run_in_link_order_whatever_the_file_order(tmp_path, data):
    text = GOOD.split("train-student:")[0].replace("precompute-embeddings:", "evaluate-mteb:\n  models: [student]\n"
                                                  "  output: report\ntrain-student:\n  targets: embeddings\n"
                                                  "  output: student\nprecompute-embeddings:")
    code, out, err = pipeline("run", str(write(tmp_path, text, data)), "--dry-run")
    assert code == 0, err
    order = [line.split(":")[1].strip() for line in out.splitlines() if line.startswith("pipeline:")]
    assert order == ["precompute-embeddings", "train-student", "evaluate-mteb"]


def test_a_job_twice_needs_a_steps_list_with_names(tmp_path, data):
    text = f"""\
workdir: {tmp_path / "work"}
steps:
  - {{name: teacher, job: precompute-embeddings, input: {data}, text_column: en, output: emb}}
  - {{name: small, job: train-student, targets: emb, student_layers: [0, 1], output: small}}
  - {{name: large, job: train-student, targets: emb, output: large}}
  - {{name: report, job: evaluate-mteb, models: [small, large], output: report}}
"""
    path = tmp_path / "two.yaml"
    path.write_text(text)
    code, out, err = pipeline("run", str(path), "--dry-run")
    assert code == 0, err
    assert "link: small -> report.models" in out and "link: large -> report.models" in out


BAD = {
    "unknown job": ("trian-student:\n  output: x\n", "'trian-student' is neither a job nor a pipeline key (did you "
                    "mean 'train-student'?)"),
    "unknown job in a list": ("steps:\n  - job: evaluate\n    output: x\n", "unknown job 'evaluate'"),
    "kind mismatch": (GOOD.replace("targets: embeddings", "targets: report"),
                      "is made by step 'evaluate-mteb' (evaluate-mteb, a mteb-report), but targets takes "
                      "teacher-embeddings"),
    "input nobody makes": (GOOD.replace("targets: embeddings", "targets: embedings"),
                           "targets: embedings: no step makes it and it does not exist"),
    "cycle": ("steps:\n  - {{name: a, job: precompute-embeddings, input: b-out, text_column: en, output: a-out}}\n"
              "  - {{name: b, job: precompute-embeddings, input: a-out, text_column: en, output: b-out}}\n",
              "the steps form a cycle"),
    "unknown option": (GOOD.replace("student: minilm", "studnet: minilm"), "unknown key 'studnet'"),
    "bad option value": (GOOD.replace("student: minilm", "student: minilm\n  lr: fast"), "lr"),
    "shards on a job that does not shard": (GOOD.replace("output: student", "output: student\n  resources: "
                                                         "{{shards: 2}}"), "resources.shards applies to sharded jobs"),
    "bad resource": (GOOD.replace('memory: 8G', 'memory: lots'), "resources.memory 'lots'"),
    "unknown resource": (GOOD.replace('memory: 8G', 'gpu: 1'), "unknown resource 'gpu' (did you mean 'gpus'?)"),
    "no output": (GOOD.replace("  output: report\n", ""), "[evaluate-mteb] has no output"),
    "two steps, one output": (GOOD.replace("output: report", "output: student"), "overlaps step 'train-student'"),
    "not a mapping": ("- a\n- b\n", "must be a mapping"),
}


@pytest.mark.parametrize("case", BAD.values(), ids=BAD.keys())
def test_bad_files_are_one_line_and_exit_2_before_anything_runs(case, tmp_path, data):
    text, expected = case
    code, out, err = pipeline("run", str(write(tmp_path, text, data)))
    assert code == 2, out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], err
    assert "pipeline:" not in out  # no step started
    assert not (tmp_path / "work").exists()


def test_from_and_only_need_the_steps_they_read(tmp_path, data):
    path = str(write(tmp_path, GOOD, data))
    code, _, err = pipeline("run", path, "--only", "train-student")
    assert code == 2 and "reads step precompute-embeddings's output, which is not made yet" in err
    code, _, err = pipeline("run", path, "--from", "trainstudent")
    assert code == 2 and "has no step 'trainstudent'" in err
    code, out, err = pipeline("run", path, "--from", "precompute-embeddings", "--dry-run")
    assert code == 0 and "pipeline: precompute-embeddings: run: not made yet" in out, err


def test_status_of_a_pipeline_not_run_yet(tmp_path, data):
    code, out, err = pipeline("status", str(write(tmp_path, GOOD, data)))
    assert code == 0, err
    assert [line.split()[:2] for line in out.splitlines()] == [
        ["precompute-embeddings", "missing"], ["train-student", "missing"], ["evaluate-mteb", "missing"]]


def test_k8s_renders_every_step_valid_and_each_linked_job_waits_for_its_input(tmp_path, data):
    import yaml

    from tests.unit.k8s_policy import check_all, container, env_of, jobs

    result = CliRunner().invoke(main, ["pipeline", "run", str(write(tmp_path, GOOD, data)), "--launcher", "k8s",
                                       "--image", "ghcr.io/distil-jobs/distil-jobs:0.1.0-cpu", "--dry-run"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    objects = [o for o in yaml.safe_load_all(result.stdout) if o]  # stdout is only the manifests
    check_all(objects)
    by_job = {container(j)["args"][0]: j for j in jobs(objects)}
    assert set(by_job) == {"precompute-embeddings", "train-student", "evaluate-mteb"}
    assert "DISTIL_WAIT_FOR_INPUTS" not in env_of(by_job["precompute-embeddings"])  # reads a dataset
    for job in ("train-student", "evaluate-mteb"):
        assert int(env_of(by_job[job])["DISTIL_WAIT_FOR_INPUTS"]["value"]) > 0
    assert by_job["precompute-embeddings"]["spec"]["completions"] == 2  # resources.shards
    assert "link: precompute-embeddings -> train-student.targets" in result.stderr
    assert not (tmp_path / "work").exists()


def test_slurm_dry_run_shows_arrays_resources_and_afterok_chains(tmp_path, data):
    code, out, err = pipeline("run", str(write(tmp_path, GOOD, data)), "--launcher", "slurm", "--dry-run")
    assert code == 0, err
    lines = [line.strip() for line in out.splitlines() if line.startswith("  ")]
    assert lines[0].startswith("distil-jobs submit --job precompute-embeddings --array 2 ")
    assert "--mem-gb 8 --time-min 60" in lines[0]
    assert "--dependency afterok:<precompute-embeddings>" in lines[1]
    assert "--dependency afterok:<train-student>" in lines[2]


def test_slurm_account_qos_and_a_private_env_file_reach_every_step(tmp_path, data):
    env = tmp_path / "secrets.env"
    env.write_text("HF_TOKEN=hf_secret_value\n")
    env.chmod(0o644)
    file = str(write(tmp_path, GOOD, data))
    code, out, err = pipeline("run", file, "--launcher", "slurm", "--dry-run", "--env-file", str(env))
    assert code == 2 and f"chmod 600 {env}" in err and len(err.strip().splitlines()) == 1
    env.chmod(0o600)
    code, out, err = pipeline("run", file, "--launcher", "slurm", "--dry-run", "--account", "proj", "--qos", "high",
                              "--env-file", str(env))
    submits = [line for line in out.splitlines() if "distil-jobs submit" in line]
    assert code == 0 and len(submits) == 3, err
    assert all(f"--account proj --qos high --env-file {env}" in line for line in submits)
    assert "hf_secret_value" not in out + err


@pytest.mark.parametrize(("text", "minutes"), [("90", 90), ("90:30", 91), ("1:30:00", 90), ("1-12", 2160),
                                               ("1-00:30", 1470), ("0:59:01", 60)])
def test_resources_time_reads_every_slurm_form(text, minutes):
    from distil_jobs.pipeline.spec import Resources

    assert Resources(time=text).time_minutes == minutes
