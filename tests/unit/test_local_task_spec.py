"""--local-task strings and YAML entries become task specs, and bad ones fail with the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from distil_jobs.config import field_specs, load_config_file, parse_value, resolve
from distil_jobs.errors import DistilError
from distil_jobs.evaluation.specs import check_local_task, parse_local_task


def test_bitext_string_with_columns_parses_both_columns_and_languages():
    spec = parse_local_task("kind=bitext,path=/data/menyo20k,name=Menyo,columns=en:yo,langs=eng-Latn:yor-Latn")
    assert (spec.kind, spec.path, spec.name, spec.columns, spec.split) == (
        "bitext", "/data/menyo20k", "Menyo", ("en", "yo"), "test")
    assert spec.langs == ("eng-Latn", "yor-Latn")


def test_classification_and_sts_default_to_the_standard_columns():
    assert parse_local_task("kind=classification,path=/d/banking77,name=B").columns == ("text", "label")
    sts = parse_local_task("kind=STS,path=/d/stsb/,name=S,split=dev")
    assert (sts.kind, sts.columns, sts.split) == ("sts", ("sentence1", "sentence2"), "dev")


def test_name_defaults_to_the_folder_name():
    assert parse_local_task("kind=sts,path=/d/stsb/").name == "stsb"


def test_yaml_mapping_accepts_a_list_for_columns():
    spec = parse_local_task({"kind": "bitext", "path": "/d/m", "name": "M", "columns": ["en", "yo"]})
    assert spec.columns == ("en", "yo")


def test_classification_can_set_mtebs_samples_per_label():
    spec = parse_local_task("kind=classification,path=/d/emotion,name=E,samples_per_label=16")
    assert spec.samples_per_label == 16 and spec.as_dict()["samples_per_label"] == 16
    assert parse_local_task("kind=classification,path=/d/b,name=B").samples_per_label is None


@pytest.mark.parametrize(("raw", "message"), [
    ("kind=regression,path=/d,name=X", "use kind=classification|sts|bitext"),
    ("path=/d,name=X", "no kind"),
    ("kind=sts,name=X", "path=DIR is missing"),
    ("kind=bitext,path=/d,name=X", "needs columns=SRC:TGT"),
    ("kind=bitext,path=/d,name=X,columns=en", "two different columns"),
    ("kind=sts,path=/d,name=X,colums=a:b", "unknown key 'colums'"),
    ("kind=sts,path=/d,name=bad name!", "must be letters"),
    ("kind=sts,/d", "is not key=value"),
    ("kind=sts,path=/d,samples_per_label=8", "only applies to kind=classification"),
    ("kind=classification,path=/d,samples_per_label=many", "positive integer"),
])
def test_bad_spec_fails_with_one_line_naming_the_fix(raw, message):
    with pytest.raises(DistilError, match=message.replace("|", r"\|").replace("(", r"\(")):
        parse_local_task(raw)


def test_folder_without_a_test_split_is_refused(tmp_path: Path):
    (tmp_path / "train.jsonl").write_text('{"text": "a", "label": 0}\n')
    spec = parse_local_task(f"kind=classification,path={tmp_path},name=T")
    with pytest.raises(DistilError, match=r"has no test split .*found: train.jsonl"):
        check_local_task(spec)


def test_classification_folder_without_train_split_is_refused(tmp_path: Path):
    (tmp_path / "test.jsonl").write_text('{"text": "a", "label": 0}\n')
    with pytest.raises(DistilError, match="has no train split"):
        check_local_task(parse_local_task(f"kind=classification,path={tmp_path},name=T"))


def _local_task_field():
    from distil_jobs.jobs.evaluate import Config

    return next(s for s in field_specs(Config) if s.name == "local_tasks")


def test_repeated_flag_keeps_commas_inside_each_local_task():
    spec = _local_task_field()
    raw = ("kind=sts,path=/d/stsb,name=S", "kind=bitext,path=/d/m,name=M,columns=en:yo")
    assert parse_value(spec, raw, "--local-task") == list(raw)
    # env / single-string form: ';' separates tasks
    assert parse_value(spec, ";".join(raw), "DISTIL_LOCAL_TASKS") == list(raw)


def test_yaml_list_of_mappings_and_strings_resolves(tmp_path: Path):
    from distil_jobs.jobs.evaluate import Config

    cfg_file = tmp_path / "eval.yaml"
    cfg_file.write_text(
        "models: [minilm]\n"
        "local_tasks:\n"
        "  - {kind: sts, path: /d/stsb, name: S}\n"
        "  - kind=bitext,path=/d/m,name=M,columns=en:yo\n"
    )
    values = load_config_file(str(cfg_file), "evaluate-mteb", {"evaluate-mteb"})
    resolved = resolve(Config, {}, values, str(cfg_file), env={})
    specs = [parse_local_task(r) for r in resolved.values["local_tasks"]]
    assert [(s.kind, s.name, s.columns) for s in specs] == [
        ("sts", "S", ("sentence1", "sentence2")), ("bitext", "M", ("en", "yo"))]


def test_repeatable_model_flag_and_comma_list_combine():
    from distil_jobs.jobs.evaluate import Config

    resolved = resolve(Config, {"models": ("mpnet", "minilm,out/student")}, {}, None, env={})
    assert resolved.values["models"] == ["mpnet", "minilm", "out/student"]
