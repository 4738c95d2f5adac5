"""The readiness rule of `--wait-for-inputs` on a real local store, and its timeout, with a fake clock."""

from __future__ import annotations

import types

import pytest

from distil_jobs.artifacts import open_location
from distil_jobs.artifacts.manifest import new_manifest
from distil_jobs.artifacts.run import claim_output, finish
from distil_jobs.artifacts.wait import InputNotReady, job_inputs, not_ready, parse_wait, wait_for_inputs
from distil_jobs.errors import DistilError
from distil_jobs.jobs import DATASET, MODEL, STUDENT_MODEL, TEACHER_EMBEDDINGS


def inp(uri, kinds=(TEACHER_EMBEDDINGS,), option="targets"):
    from distil_jobs.artifacts.wait import Input

    return Input(option, str(uri), kinds)


def produce(folder, kind=TEACHER_EMBEDDINGS, done=False, sub="data/part-00000.parquet"):
    """A real output under the run contract: claimed, one file published, the manifest if `done`."""
    out = open_location(str(folder))
    claim_output(out, "precompute-embeddings", {"seed": 1})
    (folder / sub).parent.mkdir(parents=True, exist_ok=True)
    (folder / sub).write_bytes(b"rows")
    if done:
        assert finish(out, new_manifest(kind, "precompute-embeddings", {}, [], 1))
    return out


def test_aliases_hub_ids_and_plain_datasets_are_ready_at_once(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text('{"text": "a"}\n')
    assert not_ready(inp("minilm", (MODEL, STUDENT_MODEL), "teacher")) is None
    assert not_ready(inp("sentence-transformers/all-MiniLM-L6-v2", (MODEL,), "teacher")) is None
    assert not_ready(inp(data, (DATASET,), "input")) is None
    # The same org/name form is a path for an option that takes no model: it is waited for.
    assert not_ready(inp("org/not-here", (DATASET,), "input")) == "does not exist yet"
    assert not_ready(inp("./org/not-here", (MODEL,), "teacher")) == "does not exist yet"


def test_a_missing_path_or_an_empty_folder_is_waited_for(tmp_path):
    assert not_ready(inp(tmp_path / "emb")) == "does not exist yet"
    (tmp_path / "emb").mkdir()
    assert not_ready(inp(tmp_path / "emb")) == "an empty folder"


def test_a_claim_without_manifest_waits_and_the_manifest_makes_it_ready(tmp_path):
    produce(tmp_path / "emb")
    assert not_ready(inp(tmp_path / "emb")) == "being produced: a run claim, no manifest.json yet"
    # A path inside an unfinished output (a file it published already) waits for the same manifest.
    reason = not_ready(inp(tmp_path / "emb" / "data" / "part-00000.parquet", (DATASET,), "input"))
    assert reason is not None and "has a run claim" in reason
    produce(tmp_path / "emb", done=True)
    assert not_ready(inp(tmp_path / "emb")) is None
    assert not_ready(inp(tmp_path / "emb" / "data" / "part-00000.parquet", (DATASET,), "input")) is None


def test_a_students_final_folder_waits_for_the_training_runs_manifest(tmp_path):
    produce(tmp_path / "student", STUDENT_MODEL, sub="final/config.json")
    assert not_ready(inp(tmp_path / "student" / "final", (MODEL, STUDENT_MODEL), "models")) is not None
    produce(tmp_path / "student", STUDENT_MODEL, done=True, sub="final/config.json")
    assert not_ready(inp(tmp_path / "student" / "final", (MODEL, STUDENT_MODEL), "models")) is None


def test_every_value_of_a_list_option_is_an_input():
    cfg = types.SimpleNamespace(models=["minilm", "/out/student", ""], output="/out/eval")
    assert [(i.flag, i.uri) for i in job_inputs("evaluate-mteb", cfg)] == \
        [("--models", "minilm"), ("--models", "/out/student")]
    cfg = types.SimpleNamespace(targets="s3://b/emb", input=None, dev_input="", teacher=None, student="minilm",
                                sense_dict=None, token_counts=None)
    assert [str(i) for i in job_inputs("train-student", cfg)] == ["--targets s3://b/emb", "--student minilm"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s


def test_timeout_is_one_line_naming_the_input_and_the_fix_and_a_retriable_exit(tmp_path):
    clock = FakeClock()
    cfg = types.SimpleNamespace(input=str(tmp_path / "emb"), model="minilm")
    with pytest.raises(InputNotReady) as err:
        wait_for_inputs("count-tokens", cfg, 120, clock=clock, sleep=clock.sleep)
    message = str(err.value)
    assert "\n" not in message
    assert f"--input {tmp_path / 'emb'} is not ready after --wait-for-inputs 120 s (does not exist yet)" in message
    assert "raise --wait-for-inputs" in message
    assert err.value.exit_code == 1  # not 2: the k8s podFailurePolicy would make that fatal
    assert clock.now == pytest.approx(120)
    assert max(clock.sleeps) <= 15 and clock.sleeps[0] < clock.sleeps[3]  # backoff, capped


def test_waiting_ends_when_the_manifest_appears(tmp_path):
    clock = FakeClock()
    produce(tmp_path / "emb")
    cfg = types.SimpleNamespace(input=str(tmp_path / "emb"), model="minilm")

    def sleep(s: float) -> None:
        clock.sleep(s)
        if clock.now > 10:
            produce(tmp_path / "emb", done=True)

    wait_for_inputs("count-tokens", cfg, 600, clock=clock, sleep=sleep)
    assert 10 < clock.now < 30


def test_zero_never_looks_at_the_inputs(tmp_path):
    cfg = types.SimpleNamespace(input=str(tmp_path / "nothing"), model="minilm")
    wait_for_inputs("count-tokens", cfg, 0, clock=lambda: pytest.fail("polled"), sleep=lambda s: pytest.fail("slept"))


@pytest.mark.parametrize("bad", ["soon", "-1", "nan", "inf"])
def test_a_bad_timeout_is_a_usage_error(bad):
    with pytest.raises(DistilError, match="expected a number of seconds") as err:
        parse_wait(bad, "--wait-for-inputs")
    assert err.value.exit_code == 2
    assert parse_wait("90", "--wait-for-inputs") == 90.0 and parse_wait(None, "x") == 0.0


def test_a_store_that_is_not_up_yet_is_polled_again_but_a_usage_error_ends_the_wait(monkeypatch):
    from distil_jobs.artifacts import wait
    from distil_jobs.errors import JobFault

    clock = FakeClock()
    answers = iter([JobFault("S3 at http://127.0.0.1:1 unreachable for 60 s"), None])

    def flaky(_inp):
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(wait, "not_ready", flaky)
    cfg = types.SimpleNamespace(input="s3://distil/emb", model=None)
    wait_for_inputs("count-tokens", cfg, 60, clock=clock, sleep=clock.sleep)
    assert clock.sleeps  # it polled again instead of failing

    def bad(_inp):
        raise DistilError("s3://: no bucket")

    monkeypatch.setattr(wait, "not_ready", bad)
    with pytest.raises(DistilError, match="no bucket"):
        wait_for_inputs("count-tokens", cfg, 60, clock=clock, sleep=clock.sleep)
