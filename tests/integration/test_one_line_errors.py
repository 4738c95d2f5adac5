"""Bad input ends in one line, every time: `error: <problem and fix>`, exit 2, no traceback, no manifest.

Each case runs the real CLI three times at once (the exit-code race of `distil_jobs.exits` shows
under load). Every case fails before a model loads, so the file runs in about a minute.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from train_helpers import STUDENT

from tests.conftest import head_jsonl

RUNS = 3
Args = Callable[[Path], list[str]]  # the CLI arguments of one run, given that run's output folder


@pytest.fixture(scope="module")
def bad(tmp_path_factory, data_path: Path) -> dict[str, Path]:
    """Small real inputs, each broken in one way."""
    root = tmp_path_factory.mktemp("bad")
    paths = {"good": head_jsonl(data_path / "menyo20k" / "train.jsonl", root / "good.jsonl", 30)}

    good = (root / "good.jsonl").read_bytes()
    paths["latin1"] = root / "latin1.jsonl"  # one row saved as Latin-1 ("é" is the byte 0xe9)
    paths["latin1"].write_bytes(good + '{"id": "x", "en": "café", "yo": "kafe"}\n'.encode("latin-1"))
    paths["mixed"] = root / "mixed.json"
    paths["mixed"].write_text('[{"text": "a"}, {"text": 3}]')

    for name, text in {"section_list": "train-student:\n  - max_steps: 1\n", "top_list": "- a\n- b\n",
                       "scalar": "just a sentence\n"}.items():
        paths[name] = root / f"{name}.yaml"
        paths[name].write_text(text)

    # A targets artifact whose manifest was cut off mid-write.
    damaged = root / "damaged"
    (damaged / "data").mkdir(parents=True)
    (damaged / "manifest.json").write_text('{"kind": "teacher-embeddings", "files": [{"path": "da')
    paths["damaged"] = damaged

    def task(name: str, split: str, src: Path, n: int, broken: Callable[[list[dict]], None] | None = None) -> None:
        rows = [json.loads(line) for line in src.read_text().splitlines()[:n]]
        if broken:
            broken(rows)
        (root / name).mkdir(exist_ok=True)
        (root / name / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        paths[name] = root / name

    def set_value(row: int, key: str, value: object) -> Callable[[list[dict]], None]:
        return lambda rows: rows[row].update({key: value})

    emotion, stsb = data_path / "emotion", data_path / "stsb" / "test.jsonl"
    task("cls_null", "train", emotion / "train.jsonl", 40)
    task("cls_null", "test", emotion / "test.jsonl", 20, set_value(3, "label", None))
    task("sts_null", "test", stsb, 20, set_value(2, "score", None))
    task("sts_mixed", "test", stsb, 20, set_value(2, "score", "high"))  # numbers, then a string

    def all_strings(rows: list[dict]) -> None:
        for r in rows:
            r["score"] = str(r["score"])
        rows[2]["score"] = "high"

    task("sts_words", "test", stsb, 20, all_strings)  # a string column: "4.2" is fine, "high" is not
    return paths


Run = tuple[Path, subprocess.CompletedProcess[str]]  # one run's output folder and its process


def _run_three(args: Args, tmp_path: Path, env: dict[str, str] | None = None) -> list[Run]:
    from tests.conftest import run_cli

    outputs = [tmp_path / f"out{i}" for i in range(RUNS)]
    with ThreadPoolExecutor(max_workers=RUNS) as pool:
        done = list(pool.map(lambda out: run_cli(*args(out), env=env, timeout=120), outputs))
    return list(zip(outputs, done, strict=True))


def assert_one_line(args: Args, tmp_path: Path, *words: str, code: int = 2, env: dict[str, str] | None = None) -> None:
    for out, run in _run_three(args, tmp_path, env):
        lines = run.stderr.strip().splitlines()
        assert run.returncode == code, f"exit {run.returncode}, want {code}:\n{run.stderr[-2000:]}"
        assert lines and lines[-1].startswith("error: "), run.stderr[-2000:]
        for word in words:
            assert word in lines[-1], f"{word!r} not in {lines[-1]!r}"
        assert "Traceback" not in run.stderr and "terminate called" not in run.stderr, run.stderr[-2000:]
        assert not (out / "manifest.json").exists()


# 1, 2: unreadable input files, named with their line or column -------------------------------------

def test_non_utf8_jsonl_to_precompute(bad, tmp_path):
    assert_one_line(lambda out: ["precompute-embeddings", "--input", str(bad["latin1"]), "--text-column", "en",
                                 "--output", str(out)], tmp_path, str(bad["latin1"]), "not UTF-8", "line 31")


def test_non_utf8_jsonl_to_train_student(bad, tmp_path):
    assert_one_line(lambda out: ["train-student", *STUDENT, "--input", str(bad["latin1"]), "--text-column", "en",
                                 "--teacher", "minilm", "--max-steps", "1", "--output", str(out)],
                    tmp_path, str(bad["latin1"]), "not UTF-8", "re-encode")


def test_json_array_with_mixed_types(bad, tmp_path):
    assert_one_line(lambda out: ["precompute-embeddings", "--input", str(bad["mixed"]), "--output", str(out)],
                    tmp_path, str(bad["mixed"]), "column 'text' mixes text and number")


# 3: hf:// URIs -----------------------------------------------------------------------------------

MALFORMED = {"hf://justone": "org and a name", "hf://datasets/": "org and a name",
             "hf://a/b@": "without a revision", "hf://org/na me": "not a valid Hub"}


@pytest.mark.parametrize("uri", MALFORMED, ids=["no_name", "datasets_only", "empty_revision", "space"])
def test_malformed_hub_uri_as_input(bad, tmp_path, uri):
    # Online as far as the settings go: the parser, not the offline check, must refuse it.
    assert_one_line(lambda out: ["precompute-embeddings", "--input", uri, "--output", str(out)], tmp_path,
                    uri, MALFORMED[uri], env={"HF_HUB_OFFLINE": "0"})


@pytest.mark.parametrize("uri", ["hf://a/b@", "hf://org/na me"], ids=["empty_revision", "space"])
def test_malformed_hub_uri_as_output(bad, tmp_path, uri):
    # The same parser as for inputs: two of the four URIs keep the file's runtime down.
    assert_one_line(lambda out: ["train-student", *STUDENT, "--input", str(bad["good"]), "--text-column", "en",
                                 "--teacher", "minilm", "--max-steps", "1", "--output", uri], tmp_path,
                    uri, MALFORMED[uri], env={"HF_HUB_OFFLINE": "0"})


@pytest.mark.parametrize("job", ["precompute-embeddings", "train-student"])
def test_hub_output_while_offline(bad, tmp_path, job):
    extra = [*STUDENT, "--teacher", "minilm", "--max-steps", "1"] if job == "train-student" else []
    assert_one_line(lambda out: [job, *extra, "--input", str(bad["good"]), "--text-column", "en",
                                 "--output", "hf://datasets/org/name"], tmp_path,
                    "hf://datasets/org/name", "offline", "unset HF_HUB_OFFLINE", "local path",
                    env={"HF_HUB_OFFLINE": "1"})


# 4: config files that are not a mapping ---------------------------------------------------------

@pytest.mark.parametrize(("name", "words"), [
    ("section_list", ("section 'train-student'", "is a list", "indent its options")),
    ("top_list", ("must hold a mapping",)),
    ("scalar", ("must hold a mapping",)),
])
def test_config_that_is_not_a_mapping(bad, tmp_path, name, words):
    assert_one_line(lambda out: ["train-student", "--config", str(bad[name]), "--output", str(out)], tmp_path,
                    str(bad[name]), *words)


# 5: a torn manifest -------------------------------------------------------------------------------

DAMAGED = ("manifest.json is not valid JSON", "damaged artifact", "rerun the job")


def test_damaged_manifest_in_targets(bad, tmp_path):
    assert_one_line(lambda out: ["train-student", *STUDENT, "--targets", str(bad["damaged"]), "--max-steps", "1",
                                 "--output", str(out)], tmp_path, str(bad["damaged"]), *DAMAGED)


@pytest.mark.parametrize("summary", [[], ["--summary"]], ids=["full", "summary"])
def test_damaged_manifest_to_inspect(bad, tmp_path, summary):
    assert_one_line(lambda out: ["inspect", *summary, str(bad["damaged"])], tmp_path, *DAMAGED)


# 6: local MTEB tasks with missing or non-numeric gold values ----------------------------------------

@pytest.mark.parametrize(("task", "words"), [
    ("kind=classification,path={cls_null},name=Cls", ("missing value", "'label'", "row 3")),
    ("kind=sts,path={sts_null},name=Sts", ("missing value", "'score'", "row 2")),
    ("kind=sts,path={sts_mixed},name=Sts", ("cannot parse", "score")),
    ("kind=sts,path={sts_words},name=Sts", ("score 'high'", "row 2", "not a number")),
], ids=["label_null", "score_null", "score_mixed", "score_word"])
def test_local_task_with_bad_gold_values(bad, tmp_path, task, words):
    spec = task.format(**bad)
    env = {"MTEB_CACHE": str(tmp_path / "mteb"), "HF_HOME": str(tmp_path / "hf")}
    assert_one_line(lambda out: ["evaluate-mteb", "--model", "minilm", "--local-task", spec, "--output", str(out)],
                    tmp_path, *words, env=env)


# 8: out-of-range numbers ------------------------------------------------------------------------

@pytest.mark.parametrize(("job", "flag", "value", "words"), [
    ("train-student", "--seed", "-1", ("--seed", "at least 0")),
    ("train-student", "--max-length", "0", ("--max-length", "at least 1")),
    ("train-student", "--max-length", "-5", ("--max-length", "at least 1")),
    ("precompute-embeddings", "--max-length", "0", ("--max-length", "at least 1")),
    ("precompute-embeddings", "--max-length", "-5", ("--max-length", "at least 1")),
])
def test_out_of_range_number(bad, tmp_path, job, flag, value, words):
    data = ["--targets", str(bad["damaged"])] if job == "train-student" else ["--input", str(bad["good"])]
    assert_one_line(lambda out: [job, *data, flag, value, "--output", str(out)], tmp_path, *words)
