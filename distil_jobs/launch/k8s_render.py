"""Render one job's Kubernetes manifests from the kustomize templates in k8s/.

The Job templates of k8s/base are read and patched here; the optional parts (the data PVC, the
Kueue queue) are the JSON patches of k8s/components, applied by the same small patcher. So there
is one copy of the manifests, and what `kubectl apply -k` creates is what `k8s render` prints.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import yaml

from distil_jobs.errors import DistilError, first_line
from distil_jobs.launch import k8s_checks as checks

# Job -> (template file in k8s/base, short name used in object and container names)
TEMPLATES = {"precompute-embeddings": ("precompute-job.yaml", "precompute"),
             "train-student": ("train-job.yaml", "train"),
             "evaluate-mteb": ("evaluate-job.yaml", "evaluate")}
SINGLE_POD, INDEXED = "evaluate-job.yaml", "precompute-job.yaml"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
# Jobs that read another job's artifact: they wait for its manifest (DISTIL_WAIT_FOR_INPUTS), so a
# whole pipeline can be applied at once. The others usually read raw data, which has no manifest
# (add --env DISTIL_WAIT_FOR_INPUTS=SECONDS where one of them reads an artifact).
WAIT_JOBS = {"train-student", "evaluate-mteb", "cluster"}


@dataclasses.dataclass(frozen=True)
class RenderSpec:
    job: str
    image: str
    namespace: str | None = None
    nnodes: int = 1
    num_shards: int = 1
    gpus_per_node: int = 0
    queue: str | None = None
    config: str | None = None  # a YAML file (flat or one section per job); default: k8s/base/config.yaml
    sets: tuple[str, ...] = ()  # key=value overrides of the job's config
    env: tuple[str, ...] = ()  # NAME=VALUE plain environment
    data_pvc: str | None = None
    run_id: str | None = None
    ttl_seconds: int = 86400
    wait_for_inputs: int = 21600
    cpus: str | None = None
    memory: str | None = None
    waits: bool | None = None  # wait for the inputs' manifests; None: the jobs in WAIT_JOBS do


def templates_dir() -> Path:
    """k8s/ of this checkout (DISTIL_K8S_DIR overrides, e.g. for an installed wheel)."""
    root = Path(os.environ.get("DISTIL_K8S_DIR") or Path(__file__).resolve().parents[2] / "k8s")
    if not (root / "base" / "kustomization.yaml").is_file():
        raise DistilError(f"Kubernetes templates not found in {root}: run from a distil-jobs checkout or set "
                          "DISTIL_K8S_DIR to its k8s/ folder")
    return root


def _load(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise DistilError(f"cannot read {path} ({first_line(e)}): fix the file") from None


def _digest(*parts: Any, n: int = 10) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:n]


# ------------------------------------------------------------------ JSON patch (RFC 6902 subset)


def _parts(path: str) -> list[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]


def apply_json_patch(obj: dict[str, Any], ops: list[dict[str, Any]]) -> None:
    """add / replace / remove, enough for the kustomize patches in k8s/. Missing parent mappings
    are created on add (kustomize's labels transformer has made them before a component runs)."""
    for op in ops:
        *head, last = _parts(op["path"])
        parent: Any = obj
        for key in head:
            parent = parent[int(key)] if isinstance(parent, list) else parent.setdefault(key, {})
        value = copy.deepcopy(op.get("value"))
        if isinstance(parent, list):
            if op["op"] == "add":
                parent.insert(len(parent) if last == "-" else int(last), value)
            elif op["op"] == "replace":
                parent[int(last)] = value
            else:
                del parent[int(last)]
        elif op["op"] in ("add", "replace"):
            parent[last] = value
        else:
            del parent[last]


def component_patches(root: Path, name: str, kind: str) -> list[dict[str, Any]]:
    """The JSON patch ops a kustomize component applies to objects of `kind`."""
    comp = _load(root / "components" / name / "kustomization.yaml")
    ops: list[dict[str, Any]] = []
    for patch in comp.get("patches", []):
        if patch.get("target", {}).get("kind") == kind:
            ops.extend(yaml.safe_load(patch["patch"]))
    return ops


def component_env(root: Path, name: str) -> dict[str, str]:
    comp = _load(root / "components" / name / "kustomization.yaml")
    return _literals(comp, "distil-env")


def _literals(kustomization: dict[str, Any], name: str) -> dict[str, str]:
    for gen in kustomization.get("configMapGenerator", []):
        if gen["name"] == name:
            return dict(lit.split("=", 1) for lit in gen.get("literals", []))
    return {}


# ------------------------------------------------------------------ config


def job_config(spec: RenderSpec, root: Path) -> dict[str, Any]:
    """The job's own options (its section of a pipeline file), with --set applied; ${VAR} stays
    as written: it is expanded inside the pod."""
    from distil_jobs.jobs import JOBS

    path = Path(spec.config) if spec.config else root / "base" / "config.yaml"
    if not path.is_file():
        raise DistilError(f"--config {path} not found: check the path")
    data = _load(path) or {}
    if not isinstance(data, dict):
        raise DistilError(f"--config {path} must hold a mapping of option: value")
    if set(data) & set(JOBS):
        if spec.job not in data and not spec.config:
            data = {spec.job: {}}  # the example config has no section for it: --set gives its options
        if spec.job not in data:
            raise DistilError(f"--config {path} has no '{spec.job}' section (it has: "
                              f"{', '.join(sorted(set(data) & set(JOBS)))}): add one or pass another file")
        data = data[spec.job] or {}
    config = {str(k).replace("-", "_"): v for k, v in data.items()}
    for key, raw in checks.parse_pairs(spec.sets, "--set").items():
        config[key.replace("-", "_")] = yaml.safe_load(raw) if raw else ""
    checks.check_no_inline_secrets(config, {}, f"--config {path}" if spec.config else "the config",
                                   JOBS[spec.job].load().Config)
    return config


# ------------------------------------------------------------------ render


def render(spec: RenderSpec, now: float | None = None) -> list[dict[str, Any]]:
    from distil_jobs.jobs import job as job_spec

    root = templates_dir()
    jspec = job_spec(spec.job)
    checks.check_image(spec.image)
    checks.check_counts(spec.job, spec.nnodes, spec.num_shards, spec.gpus_per_node, jspec.sharded)
    if spec.namespace:
        checks.check_dns_label(spec.namespace, "--namespace")
    if spec.queue:
        checks.check_dns_label(spec.queue, "--queue")
    if spec.data_pvc:
        checks.check_dns_label(spec.data_pvc, "--data-pvc", 253)
    extra_env = checks.parse_pairs(spec.env, "--env")
    checks.check_no_inline_secrets({}, extra_env, "--env")
    config = job_config(spec, root)

    base = _load(root / "base" / "kustomization.yaml")
    env = _literals(base, "distil-env") | (component_env(root, "data-pvc") if spec.data_pvc else {}) | extra_env
    config_text = yaml.safe_dump(config, sort_keys=False)
    config_map = _config_map(f"distil-config-{_digest(config_text)}", {"config.yaml": config_text})
    env_map = _config_map(f"distil-env-{_digest(env)}", env)

    file, short = TEMPLATES.get(spec.job, (INDEXED if jspec.sharded and spec.num_shards > 1 else SINGLE_POD,
                                           spec.job))
    run_id = spec.run_id or _digest(config_text, env, spec, n=6) + "-" + \
        time.strftime("%m%d%H%M%S", time.gmtime(now if now is not None else time.time()))
    # The pod hostname is <job>-<index> and must stay a DNS label too.
    name = checks.check_dns_label(f"distil-{short}-{run_id}", "--run-id (job name)", 56)

    job = _load(root / "base" / file)
    _patch_job(job, spec, name, short, config_map, env_map, root)
    objects = [config_map, env_map]
    if spec.job == "train-student":
        objects.append(_service(root, name))
    objects.append(job)
    labels = {"app.kubernetes.io/part-of": "distil-jobs", "app.kubernetes.io/instance": name}
    for obj in objects:
        meta = obj["metadata"]
        meta["labels"] = labels | meta.get("labels", {})
        if spec.namespace:
            meta["namespace"] = spec.namespace
    if spec.queue:  # after the labels: the component's patch adds to them
        apply_json_patch(job, component_patches(root, "kueue", "Job"))
        job["metadata"]["labels"][QUEUE_LABEL] = spec.queue
    return objects


def _config_map(name: str, data: dict[str, str]) -> dict[str, Any]:
    # Immutable: a new config gets a new name (content hash), so running pods never see an edit.
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "immutable": True,
            "data": {k: str(v) for k, v in data.items()}}


def _service(root: Path, name: str) -> dict[str, Any]:
    svc = _load(root / "base" / "train-service.yaml")
    svc["metadata"]["name"] = name
    svc["spec"]["selector"] = {"batch.kubernetes.io/job-name": name}
    return svc


def _set_env(container: dict[str, Any], name: str, value: str | None) -> None:
    """Set (or with None remove) a literal env entry, keeping its place in the list."""
    env = container.setdefault("env", [])
    for i, entry in enumerate(env):
        if entry["name"] == name:
            if value is None:
                del env[i]
            else:
                env[i] = {"name": name, "value": value}
            return
    if value is not None:
        env.append({"name": name, "value": value})


def _patch_job(job: dict[str, Any], spec: RenderSpec, name: str, short: str, config_map: dict[str, Any],
               env_map: dict[str, Any], root: Path) -> None:
    job["metadata"]["name"] = name
    js = job["spec"]
    pod_meta = js["template"].setdefault("metadata", {})
    pod_meta["labels"] = {"app.kubernetes.io/name": f"distil-{short}", "app.kubernetes.io/instance": name}
    pod = js["template"]["spec"]
    container = pod["containers"][0]
    old_container = container["name"]
    container["name"] = short
    for rule in js.get("podFailurePolicy", {}).get("rules", []):
        if rule.get("onExitCodes", {}).get("containerName") == old_container:
            rule["onExitCodes"]["containerName"] = short
    container["image"] = spec.image
    container["args"] = [spec.job]
    js["ttlSecondsAfterFinished"] = spec.ttl_seconds
    count = spec.nnodes if spec.job == "train-student" else spec.num_shards
    if js.get("completionMode") == "Indexed":
        js["completions"] = js["parallelism"] = count
        _set_env(container, "DISTIL_NNODES" if spec.job == "train-student" else "DISTIL_NUM_SHARDS", str(count))
    if spec.job == "train-student":
        pod["subdomain"] = name
        _set_env(container, "DISTIL_MASTER_ADDR", f"{name}-0.{name}")
        if spec.gpus_per_node:
            _set_env(container, "DISTIL_NPROC_PER_NODE", str(spec.gpus_per_node))
    waits = spec.job in WAIT_JOBS if spec.waits is None else spec.waits
    wait = spec.wait_for_inputs if waits and spec.wait_for_inputs > 0 else None
    _set_env(container, "DISTIL_WAIT_FOR_INPUTS", None if wait is None else str(wait))
    for ref in container.get("envFrom", []):
        if ref.get("configMapRef", {}).get("name") == "distil-env":
            ref["configMapRef"]["name"] = env_map["metadata"]["name"]
    for vol in pod["volumes"]:
        if vol.get("configMap", {}).get("name") == "distil-config":
            vol["configMap"]["name"] = config_map["metadata"]["name"]
    res = container.setdefault("resources", {})
    if spec.cpus:
        res.setdefault("requests", {})["cpu"] = spec.cpus
    if spec.memory:
        res.setdefault("requests", {})["memory"] = spec.memory
        res.setdefault("limits", {})["memory"] = spec.memory
    if spec.gpus_per_node:
        res.setdefault("limits", {})["nvidia.com/gpu"] = spec.gpus_per_node
    if spec.data_pvc:
        apply_json_patch(job, component_patches(root, "data-pvc", "Job"))
        for vol in pod["volumes"]:
            if "persistentVolumeClaim" in vol:
                vol["persistentVolumeClaim"]["claimName"] = spec.data_pvc


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the config file in its ConfigMap) as readable `|` blocks."""


_Dumper.add_representer(str, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s, style="|" if "\n" in s
                                                            else None))


def to_yaml(objects: list[dict[str, Any]]) -> str:
    text = yaml.dump_all(objects, Dumper=_Dumper, sort_keys=False, explicit_start=True)
    checks.check_rendered_text(text)
    return text
