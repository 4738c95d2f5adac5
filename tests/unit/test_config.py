"""Config resolution: flag > DISTIL_* env > YAML file > default, with one-line errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from distil_jobs.config import build_command, resolve, setting
from distil_jobs.errors import DistilError


@dataclasses.dataclass(kw_only=True, slots=True)
class DemoConfig:
    input: str | None = setting(None, "in")
    batch_size: int = setting(64, "bs")
    lr: float = setting(1e-4, "lr")
    layers: list[int] = setting([], "layers")
    normalize: bool = setting(False, "norm")
    loss: str = setting("mse", "loss", choices=("mse", "cosine"))
    hf_token: str | None = setting(None, "token", secret=True)


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_flag_beats_env_beats_file_beats_default():
    file_values = {"batch_size": 8, "lr": 0.5, "loss": "cosine"}
    env = {"DISTIL_BATCH_SIZE": "16", "DISTIL_LR": "0.25"}
    r = resolve(DemoConfig, {"batch_size": "32"}, file_values, "c.yaml", env)
    assert r.values["batch_size"] == 32 and r.sources["batch_size"] == "flag"
    assert r.values["lr"] == 0.25 and r.sources["lr"] == "env"
    assert r.values["loss"] == "cosine" and r.sources["loss"] == "file"
    assert r.values["normalize"] is False and r.sources["normalize"] == "default"


def test_lists_parse_from_commas_and_yaml_lists():
    assert resolve(DemoConfig, {"layers": "0,6,12"}, {}, None, {}).values["layers"] == [0, 6, 12]
    assert resolve(DemoConfig, {}, {"layers": [1, 2]}, "c.yaml", {}).values["layers"] == [1, 2]


def test_unknown_yaml_key_lists_valid_keys():
    with pytest.raises(DistilError, match=r"unknown key 'batchsize'.*did you mean 'batch_size'.*valid keys: "):
        resolve(DemoConfig, {}, {"batchsize": 3}, "c.yaml", {})


def test_unknown_distil_env_is_ignored_but_bad_known_value_is_an_error():
    r = resolve(DemoConfig, {}, {}, None, {"DISTIL_SOMETHING_ELSE": "x"})
    assert r.values["batch_size"] == 64
    with pytest.raises(DistilError, match="DISTIL_BATCH_SIZE='abc': expected an integer"):
        resolve(DemoConfig, {}, {}, None, {"DISTIL_BATCH_SIZE": "abc"})
    with pytest.raises(DistilError, match="must be one of mse, cosine"):
        resolve(DemoConfig, {}, {}, None, {"DISTIL_LOSS": "l1"})


def test_yaml_expands_environment_variables(tmp_path, monkeypatch):
    from distil_jobs.config import load_config_file

    monkeypatch.setenv("DISTIL_DATA_DIR", "/data")
    p = write(tmp_path, "input: ${DISTIL_DATA_DIR}/menyo20k/train.jsonl\nbatch_size: ${BS:-7}\n")
    values = load_config_file(str(p), "demo", {"demo"})
    assert values == {"input": "/data/menyo20k/train.jsonl", "batch_size": "7"}
    p = write(tmp_path, "input: ${NOT_SET_ANYWHERE}/x\n")
    with pytest.raises(DistilError, match=r"uses \$\{NOT_SET_ANYWHERE\} but it is not set"):
        load_config_file(str(p), "demo", {"demo"})


def test_pipeline_file_gives_each_job_its_section(tmp_path):
    from distil_jobs.config import load_config_file

    p = write(tmp_path, "demo:\n  batch_size: 3\nother-job:\n  epochs: 1\n")
    assert load_config_file(str(p), "demo", {"demo", "other-job"}) == {"batch_size": 3}
    with pytest.raises(DistilError, match="has no 'third' section"):
        load_config_file(str(p), "third", {"demo", "other-job", "third"})


def test_one_job_of_a_pipeline_file_reads_its_outputs_and_links_under_the_workdir(tmp_path):
    from distil_jobs.config import load_config_file
    from distil_jobs.jobs import JOBS

    p = write(tmp_path, "workdir: /runs\n"
                        "precompute-embeddings: {input: /data/x.tsv, teacher: mpnet, output: emb}\n"
                        "train-student: {targets: emb/chunks, dev_input: /abs/dev, student: minilm, output: st}\n")
    values = load_config_file(str(p), "train-student", set(JOBS))
    assert values == {"targets": "/runs/emb/chunks", "dev_input": "/abs/dev", "student": "minilm", "output": "/runs/st"}
    steps = write(tmp_path, "steps:\n  - {name: a, job: train-student, output: st}\n")
    with pytest.raises(DistilError, match=r"pipeline with a steps: list.*distil-jobs pipeline run .* --only STEP"):
        load_config_file(str(steps), "train-student", set(JOBS))


def test_dry_run_prints_sources_and_redacts_secrets(tmp_path, monkeypatch):
    from click.testing import CliRunner

    seen = []
    cmd = build_command("demo", DemoConfig, seen.append, "Demo job.", {"demo"})
    monkeypatch.setenv("DISTIL_HF_TOKEN", "hf_supersecret")
    monkeypatch.setenv("DISTIL_LR", "0.1")
    p = write(tmp_path, "batch_size: 4\n")
    result = CliRunner().invoke(cmd, ["--config", str(p), "--loss", "cosine", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "hf_supersecret" not in result.output
    assert "hf_token: '***'  # env" in result.output
    assert "batch_size: 4  # file" in result.output
    assert "lr: 0.1  # env" in result.output
    assert "loss: cosine  # flag" in result.output
    assert seen == []  # dry run does not run the job


def test_a_credential_is_told_by_the_option_or_its_last_word():
    from distil_jobs.config.fields import redact
    from distil_jobs.jobs import JOBS

    shown = redact({"token_counts": "s3://b/counts", "max_per_token": 50, "tokenizer": "bert", "hf_token": "hf_x",
                    "aws_secret_access_key": "k", "wandb_api_key": "w", "aws_access_key": "a"},
                   JOBS["gather-senses"].load().Config)
    assert shown == {"token_counts": "s3://b/counts", "max_per_token": 50, "tokenizer": "bert", "hf_token": "***",
                     "aws_secret_access_key": "***", "wandb_api_key": "***", "aws_access_key": "***"}


# ---------------------------------------------------------------- per-method options, bounds, fingerprints


@dataclasses.dataclass(kw_only=True, slots=True)
class SharedOpts:
    method: str = setting("a", "which method")
    batch_size: int = setting(8, "bs", fingerprint=True, min=1)
    workers: int = setting(2, "not in the result")


@dataclasses.dataclass(kw_only=True, slots=True)
class AOpts:
    temperature: float = setting(1.0, "T", fingerprint=True, min=0.1, max=10)


@dataclasses.dataclass(kw_only=True, slots=True)
class BOpts:
    layers: list[int] = setting([], "layers", fingerprint=True, min=0)


def test_a_composed_config_refuses_the_option_of_another_method():
    from distil_jobs.config import compose

    cls = compose("Composed", SharedOpts, {"a": AOpts, "b": BOpts}, "method")
    assert resolve(cls, {"temperature": "2"}, {}, None, {}).values["temperature"] == 2.0
    with pytest.raises(DistilError, match=r"--temperature belongs to --method a, not --method b: remove it \(from the "
                                          r"file\) or pass --method a"):
        resolve(cls, {"method": "b"}, {"temperature": 2}, "c.yaml", {})
    with pytest.raises(DistilError, match="--method 'c': must be one of a, b"):
        resolve(cls, {"method": "c"}, {}, None, {})


def test_two_methods_share_an_option_of_one_type_each_with_its_own_default():
    from distil_jobs.config import compose, field_specs

    both = compose("Both", SharedOpts, {"a": AOpts, "a2": AOpts}, "method")
    assert next(s for s in field_specs(both) if s.name == "temperature").owners == ("a", "a2")

    @dataclasses.dataclass(kw_only=True, slots=True)
    class OwnDefault:
        temperature: float = setting(2.0, "another default")

    cls = compose("Own", SharedOpts, {"a": AOpts, "c": OwnDefault}, "method")
    assert resolve(cls, {}, {}, None, {}).values["temperature"] == 1.0
    assert resolve(cls, {"method": "c"}, {}, None, {}).values["temperature"] == 2.0
    assert resolve(cls, {}, {}, None, {"DISTIL_METHOD": "c"}).values["temperature"] == 2.0
    assert resolve(cls, {"method": "c", "temperature": "3"}, {}, None, {}).values["temperature"] == 3.0

    @dataclasses.dataclass(kw_only=True, slots=True)
    class Clash:
        temperature: int = setting(2, "another type")

    with pytest.raises(TypeError, match="declares 'temperature'"):
        compose("Bad", SharedOpts, {"a": AOpts, "c": Clash}, "method")


def test_train_student_applies_each_methods_own_alpha_ce():
    from distil_jobs.jobs.train import Config

    assert resolve(Config, {"method": "qa"}, {}, None, {}).values["alpha_ce"] == 0.5
    assert resolve(Config, {"method": "mlm"}, {}, None, {}).values["alpha_ce"] == 5.0


def test_bounds_are_checked_wherever_the_value_comes_from():
    from distil_jobs.config import compose

    cls = compose("Composed", SharedOpts, {"a": AOpts, "b": BOpts}, "method")
    with pytest.raises(DistilError, match=r"--batch-size=0: must be at least 1"):
        resolve(cls, {"batch_size": "0"}, {}, None, {})
    with pytest.raises(DistilError, match=r"DISTIL_TEMPERATURE=20.0: must be at most 10"):
        resolve(cls, {}, {}, None, {"DISTIL_TEMPERATURE": "20"})
    with pytest.raises(DistilError, match=r"layers in c.yaml=-1: must be at least 0"):
        resolve(cls, {"method": "b"}, {"layers": [0, -1]}, "c.yaml", {})


def test_the_fingerprint_holds_the_declared_options_of_the_active_method_only():
    from distil_jobs.config import compose, config_dict, fingerprint_of

    cls = compose("Composed", SharedOpts, {"a": AOpts, "b": BOpts}, "method")
    cfg = cls(**resolve(cls, {"method": "b", "layers": "1,2"}, {}, None, {}).values)
    assert fingerprint_of(cfg) == {"batch_size": 8, "layers": [1, 2]}
    assert "temperature" not in config_dict(cfg) and config_dict(cfg)["workers"] == 2
