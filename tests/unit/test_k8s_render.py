"""`distil-jobs k8s render`: its output passes the same schema and admin checks as the kustomize
overlays, is built from the same templates, names its ConfigMaps by content and its Jobs by run,
and refuses bad input (an inline secret, no image, no nodes) with one line and exit 2."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from distil_jobs.cli import main
from tests.unit.k8s_policy import QUEUE_LABEL, REPO, check_all, container, env_of, jobs, kustomize, resolved_env

IMAGE = "ghcr.io/distil-jobs/distil-jobs:0.1.0-cpu"
FAKE_HF = "hf_" + "Ab1" * 12  # the shape of a Hub token


def render(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["k8s", "render", *args], env=env, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def objects_of(*args: str) -> list[dict[str, Any]]:
    code, out, err = render(*args)
    assert code == 0, err
    return [o for o in yaml.safe_load_all(out) if o]


CASES = {
    "train-2-nodes": ("train-student", "--nnodes", "2", "--namespace", "ml"),
    "train-4x8-gpu-queue-pvc": ("train-student", "--nnodes", "4", "--gpus-per-node", "8", "--queue", "gpu",
                                "--data-pvc", "corpora"),
    "precompute-3-shards": ("precompute-embeddings", "--num-shards", "3", "--gpus-per-node", "1"),
    "evaluate": ("evaluate-mteb", "--queue", "cpu", "--cpus", "2", "--memory", "8Gi"),
    "count-tokens": ("count-tokens", "--set", "input=s3://distil/data/x.jsonl", "--set", "output=s3://d/counts",
                     "--set", "model=minilm"),
    # Options named like credentials that are not one (the option says so, or its name's last word).
    "gather-2-shards": ("gather-senses", "--num-shards", "2", "--set", "max_per_token=50"),
    "train-token-counts": ("train-student", "--set", "token_counts=s3://distil/counts"),
}


@pytest.mark.parametrize("args", CASES.values(), ids=CASES.keys())
def test_rendered_manifests_pass_the_schema_and_the_admin_checks(args):
    objs = objects_of(*args, "--image", IMAGE)
    check_all(objs)
    (job,) = jobs(objs)
    assert container(job)["args"] == [args[0]]
    assert container(job)["image"] == IMAGE
    namespaces = {o["metadata"].get("namespace") for o in objs}
    assert namespaces == ({"ml"} if "--namespace" in args else {None})
    assert all(o.get("immutable") is True for o in objs if o["kind"] == "ConfigMap")


def test_counts_agree_with_the_flags():
    train = jobs(objects_of("train-student", "--image", IMAGE, "--nnodes", "3", "--gpus-per-node", "4"))[0]
    assert train["spec"]["completions"] == train["spec"]["parallelism"] == 3
    env = env_of(train)
    assert env["DISTIL_NNODES"]["value"] == "3" and env["DISTIL_NPROC_PER_NODE"]["value"] == "4"
    assert container(train)["resources"]["limits"]["nvidia.com/gpu"] == 4
    pre = jobs(objects_of("precompute-embeddings", "--image", IMAGE, "--num-shards", "5"))[0]
    assert pre["spec"]["completionMode"] == "Indexed"
    assert pre["spec"]["completions"] == pre["spec"]["parallelism"] == 5
    assert env_of(pre)["DISTIL_NUM_SHARDS"]["value"] == "5"
    assert "nvidia.com/gpu" not in container(pre)["resources"].get("limits", {})


def test_queue_adds_the_kueue_label_and_suspends():
    job = jobs(objects_of("train-student", "--image", IMAGE, "--queue", "team-a"))[0]
    assert job["metadata"]["labels"][QUEUE_LABEL] == "team-a" and job["spec"]["suspend"] is True
    job = jobs(objects_of("train-student", "--image", IMAGE))[0]
    assert QUEUE_LABEL not in job["metadata"]["labels"] and "suspend" not in job["spec"]


def test_render_uses_the_kustomize_templates():
    """One copy of the manifests: what render leaves alone equals what kustomize builds."""
    base = {container(j)["args"][0]: j for j in jobs(kustomize(REPO / "k8s" / "base"))}
    for job_name in ("train-student", "precompute-embeddings", "evaluate-mteb"):
        counts = {"train-student": ("--nnodes", "2"), "precompute-embeddings": ("--num-shards", "2")}
        rendered = jobs(objects_of(job_name, "--image", IMAGE, *counts.get(job_name, ())))[0]
        ours, theirs = rendered["spec"], base[job_name]["spec"]
        assert ours["podFailurePolicy"] == theirs["podFailurePolicy"]
        for key in ("securityContext", "restartPolicy", "volumes"):
            assert ours["template"]["spec"][key] != [] and \
                _strip(ours["template"]["spec"][key]) == _strip(theirs["template"]["spec"][key])
        for key in ("securityContext", "volumeMounts", "resources", "workingDir"):
            assert container(rendered)[key] == container(base[job_name])[key]


def _strip(value: Any) -> Any:
    """Volumes with the hashed ConfigMap names left out."""
    if isinstance(value, list):
        return [{k: v for k, v in vol.items() if k != "configMap"} for vol in value]
    return value


def test_configmap_and_job_names_follow_the_config(tmp_path: Path):
    """A changed config is a new ConfigMap (pods never see an edit) and a new Job (no immutable
    field errors on re-apply); the same config and run id render the same bytes."""
    config = tmp_path / "train.yaml"
    config.write_text("train-student:\n  targets: s3://distil/emb\n  output: s3://distil/run\n  epochs: 1\n")

    def names(*extra: str) -> tuple[str, str, str]:
        objs = objects_of("train-student", "--image", IMAGE, "--config", str(config), *extra)
        cm = next(o for o in objs if o["kind"] == "ConfigMap" and "config.yaml" in o["data"])
        assert yaml.safe_load(cm["data"]["config.yaml"])["output"] == "s3://distil/run"  # the job's own section
        return cm["metadata"]["name"], jobs(objs)[0]["metadata"]["name"], yaml.safe_dump_all(objs)

    cm1, job1, text1 = names("--run-id", "r1")
    assert names("--run-id", "r1") == (cm1, job1, text1)
    assert job1 == "distil-train-r1"
    cm2, _, _ = names("--run-id", "r1", "--set", "epochs=2")
    assert cm2 != cm1 and cm2.startswith("distil-config-")
    config.write_text(config.read_text().replace("epochs: 1", "epochs: 3"))
    cm3, job3, _ = names()
    assert cm3 not in (cm1, cm2)
    assert job3.startswith("distil-train-") and job3 != job1  # default run id: config hash + time


def test_data_pvc_and_env_go_where_the_pod_reads_them():
    objs = objects_of("evaluate-mteb", "--image", IMAGE, "--data-pvc", "corpora", "--env", "HF_HUB_OFFLINE=1")
    (job,) = jobs(objs)
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"] == {"claimName": "corpora", "readOnly": True}
    env = resolved_env(job, objs)
    assert env["DISTIL_DATA_DIR"] == "/data" and env["HF_HUB_OFFLINE"] == "1"
    assert int(env["DISTIL_WAIT_FOR_INPUTS"]) > 0  # evaluate reads train's student
    no_pvc = objects_of("evaluate-mteb", "--image", IMAGE, "--wait-for-inputs", "0")
    assert resolved_env(jobs(no_pvc)[0], no_pvc)["DISTIL_DATA_DIR"].startswith("s3://")
    assert "DISTIL_WAIT_FOR_INPUTS" not in env_of(jobs(no_pvc)[0])
    assert not any(o["kind"] == "PersistentVolumeClaim" for o in objs)  # the claim is the admin's


def _config_with(tmp_path: Path, text: str) -> str:
    path = tmp_path / "c.yaml"
    path.write_text("train-student:\n  targets: s3://distil/emb\n  output: s3://distil/run\n" + text)
    return str(path)


BAD = {
    "no-image": (lambda t: ["train-student"], "--image is required"),
    "unqualified-image": (lambda t: ["train-student", "--image", "distil-jobs:cpu"], "not fully qualified"),
    "latest-image": (lambda t: ["train-student", "--image", "ghcr.io/o/distil-jobs:latest"], "not fully qualified"),
    "nnodes-0": (lambda t: ["train-student", "--image", IMAGE, "--nnodes", "0"], "--nnodes 0"),
    "shards-0": (lambda t: ["precompute-embeddings", "--image", IMAGE, "--num-shards", "0"], "--num-shards 0"),
    "nnodes-for-precompute": (lambda t: ["precompute-embeddings", "--image", IMAGE, "--nnodes", "2"], "--num-shards"),
    "unknown-job": (lambda t: ["train-studnet", "--image", IMAGE], "train-studnet"),
    "bad-namespace": (lambda t: ["train-student", "--image", IMAGE, "--namespace", "ML_team"], "--namespace"),
    "secret-key-in-config": (lambda t: ["train-student", "--image", IMAGE, "--config",
                                        _config_with(t, f"  hub_token: {FAKE_HF}\n")], "hub_token"),
    "token-value-in-config": (lambda t: ["train-student", "--image", IMAGE, "--config",
                                         _config_with(t, f"  note: pushed with {FAKE_HF}\n")], "distil-secrets"),
    "secret-env": (lambda t: ["train-student", "--image", IMAGE, "--env", f"HF_TOKEN={FAKE_HF}"], "--env HF_TOKEN"),
    "secret-pair-in-env": (lambda t: ["train-student", "--image", IMAGE, "--env",
                                      "EXTRA=AWS_SECRET_ACCESS_KEY=abc123def456"], "distil-secrets"),
    "secret-set": (lambda t: ["train-student", "--image", IMAGE, "--set",
                              "aws_secret_access_key=abc123def456"], "aws_secret_access_key"),
    "aws-key-id-value": (lambda t: ["train-student", "--image", IMAGE, "--set",
                                    "note=AKIAABCDEFGHIJKLMNOP"], "distil-secrets"),
}


@pytest.mark.parametrize("case", BAD.values(), ids=BAD.keys())
def test_bad_input_is_one_line_and_exit_2(case, tmp_path: Path):
    make_args, expected = case
    code, out, err = render(*make_args(tmp_path))
    assert code == 2, err
    assert out == ""  # nothing rendered, nothing applied
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], err
    assert FAKE_HF not in err and "abc123def456" not in err and "AKIAABCDEFGHIJKLMNOP" not in err


def test_a_secret_of_this_shell_never_reaches_the_output(tmp_path: Path):
    """A WANDB key has no telling shape: it is refused because it equals $WANDB_API_KEY here."""
    key = "0123456789abcdef" * 2 + "01234567"
    code, out, err = render("train-student", "--image", IMAGE, "--config",
                            _config_with(tmp_path, f"  run_name: exp-{key}\n"), env={"WANDB_API_KEY": key})
    assert code == 2 and out == "" and "$WANDB_API_KEY" in err and key not in err
    # A reference is fine: it is expanded inside the pod from the Secret.
    code, out, err = render("train-student", "--image", IMAGE, "--config",
                            _config_with(tmp_path, "  hub_token: ${HF_TOKEN}\n"), env={"HF_TOKEN": FAKE_HF})
    assert code == 0, err
    assert FAKE_HF not in out and "${HF_TOKEN}" in out


def test_apply_without_kubectl_is_one_line(tmp_path: Path):
    code, out, err = render("train-student", "--image", IMAGE, "--apply", env={"PATH": str(tmp_path)})
    assert code == 2 and out == ""
    assert err.strip().count("\n") == 0 and "--apply needs kubectl" in err


def test_stdout_is_only_manifests_even_when_a_library_prints_on_import():
    """transformers prints "[INFO] Running in WANDB offline mode" on import when WANDB_MODE=offline
    (as the Makefile sets it): that must not land in the YAML piped to kubectl."""
    import os
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "distil_jobs.cli", "k8s", "render", "train-student", "--image", IMAGE],
                          capture_output=True, text=True, env={**os.environ, "WANDB_MODE": "offline"}, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(("apiVersion:", "---", "kind:")), done.stdout[:200]
    assert all(o["kind"] for o in yaml.safe_load_all(done.stdout) if o)
