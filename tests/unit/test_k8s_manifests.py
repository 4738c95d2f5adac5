"""The Kubernetes manifests: every kustomization renders, every object passes the 1.33 schema
(strict: unknown fields fail), and what the schema cannot check (the restricted Pod Security
Standard, writable paths, TTL, qualified images, enums, counts that agree, secrets) is checked
by tests/unit/k8s_policy.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.k8s_policy import (
    QUEUE_LABEL,
    REPO,
    check_all,
    container,
    env_of,
    jobs,
    kustomize,
    resolved_env,
)

# Overlays and the base (components are not built on their own).
KUSTOMIZATIONS = sorted(p.parent for p in (REPO / "k8s").rglob("kustomization.yaml")
                        if yaml.safe_load(p.read_text())["kind"] == "Kustomization")


@pytest.fixture(scope="module", params=KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(REPO / "k8s")))
def objects(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return kustomize(request.param)


def by_name(objects: list[dict[str, Any]], kind: str, prefix: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"].startswith(prefix)]
    assert len(found) == 1, f"expected one {kind} {prefix}*"
    return found[0]


def test_kustomizations_exist():
    names = {str(p.relative_to(REPO / "k8s")) for p in KUSTOMIZATIONS}
    assert {"base", "overlays/cpu-demo", "overlays/gpu", "overlays/kueue"} <= names


def test_every_overlay_passes_the_schema_and_the_admin_checks(objects):
    """Schema (strict) + restricted PSS + TTL + qualified image + counts + secrets by reference."""
    check_all(objects)
    assert [container(j)["args"] for j in jobs(objects)] == [["evaluate-mteb"], ["precompute-embeddings"],
                                                             ["train-student"]]


def test_jobs_that_read_another_jobs_output_wait_for_it(objects):
    """One `kubectl apply -k` creates all three Jobs: train and evaluate wait for their inputs'
    manifests instead of failing with exit 2 (which the pod failure policy makes fatal)."""
    for prefix in ("distil-train", "distil-evaluate"):
        wait = env_of(by_name(objects, "Job", prefix))["DISTIL_WAIT_FOR_INPUTS"]["value"]
        assert int(wait) >= 3600
    assert "DISTIL_WAIT_FOR_INPUTS" not in env_of(by_name(objects, "Job", "distil-precompute"))


def test_the_data_volume_is_optional():
    """Base and gpu read datasets from S3 (no claim); cpu-demo adds the claim through the component."""
    for overlay, pvc in (("base", False), ("overlays/gpu", False), ("overlays/cpu-demo", True)):
        objs = kustomize(REPO / "k8s" / overlay)
        assert any(o["kind"] == "PersistentVolumeClaim" for o in objs) is pvc, overlay
        for job in jobs(objs):
            volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
            mounts = {m["name"]: m for m in container(job)["volumeMounts"]}
            assert ("data" in volumes) is pvc and ("data" in mounts) is pvc
            data_dir = resolved_env(job, objs)["DISTIL_DATA_DIR"]
            if pvc:
                assert volumes["data"]["persistentVolumeClaim"] == {"claimName": "distil-data", "readOnly": True}
                assert mounts["data"]["mountPath"] == data_dir and mounts["data"]["readOnly"] is True
            else:
                assert data_dir.startswith("s3://")


def test_images_are_fully_qualified_and_each_overlay_picks_its_own():
    def images(overlay: str) -> set[str]:
        return {container(j)["image"] for j in jobs(kustomize(REPO / "k8s" / overlay))}

    assert images("base") == images("overlays/cpu-demo") == {"ghcr.io/distil-jobs/distil-jobs:0.1.0-cpu"}
    assert images("overlays/gpu") == images("overlays/kueue") == {"ghcr.io/distil-jobs/distil-jobs:0.1.0-gpu"}


def test_kueue_overlay_labels_and_suspends_every_job():
    objs = kustomize(REPO / "k8s" / "overlays" / "kueue")
    for job in jobs(objs):
        assert job["metadata"]["labels"][QUEUE_LABEL] == "distil"
        assert job["spec"]["suspend"] is True
    for overlay in ("base", "overlays/gpu"):
        for job in jobs(kustomize(REPO / "k8s" / overlay)):
            assert QUEUE_LABEL not in job["metadata"].get("labels", {}) and "suspend" not in job["spec"]


def test_multinode_training_with_an_s3_output_needs_no_shared_folder(objects):
    """Defect C: nnodes > 1 with an s3:// output and no --checkpoint-dir must be a valid setup
    (checkpoints go to <output>/checkpoints/), not an exit 2 at start-up."""
    train = by_name(objects, "Job", "distil-train")
    config = yaml.safe_load(next(o for o in objects if o["kind"] == "ConfigMap"
                                 and "config.yaml" in o["data"])["data"]["config.yaml"])["train-student"]
    assert config["output"].startswith("s3://") and "checkpoint_dir" not in config
    volumes = train["spec"]["template"]["spec"]["volumes"]
    assert not [v for v in volumes if v.get("persistentVolumeClaim") and not v["persistentVolumeClaim"].get("readOnly")]


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


def test_components_patch_only_what_render_can_apply():
    """render applies the components' JSON patches itself: keep them to add/replace/remove."""
    for comp in (REPO / "k8s" / "components").glob("*/kustomization.yaml"):
        for patch in yaml.safe_load(comp.read_text()).get("patches", []):
            assert patch["target"] == {"kind": "Job"}
            assert {op["op"] for op in yaml.safe_load(patch["patch"])} <= {"add", "replace", "remove"}


def test_multinode_comment_promises_only_what_the_code_does():
    text = (REPO / "k8s" / "base" / "train-job.yaml").read_text()
    assert "<output>/checkpoints/" in text and "resumes from the newest checkpoint in --output" not in text
    assert Path(REPO / "k8s" / "base" / "storage.yaml").exists() is False
