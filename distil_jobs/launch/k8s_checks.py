"""Checks `distil-jobs k8s render` makes before printing anything: no secret inline, names and
counts Kubernetes accepts. Every problem is one DistilError line naming the fix (exit 2)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from typing import Any

from distil_jobs.config.fields import field_specs, is_secret_name
from distil_jobs.errors import DistilError

SECRET_NAME = "distil-secrets"
# The credentials the Jobs read from the Secret (secretKeyRef); a value for one of them in a
# ConfigMap, env literal or config key would be readable by anyone who can list ConfigMaps.
SECRET_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "HF_TOKEN", "WANDB_API_KEY")
# Values that are credentials whatever their key: Hub tokens, AWS key ids, "NAME=value" pairs.
_SECRET_VALUE = re.compile(r"(?P<hf>\bhf_[A-Za-z0-9]{30,}\b)|\b(?:AKIA|ASIA)[A-Z0-9]{16}\b|"
                           r"\b(?P<name>" + "|".join(SECRET_ENV) + r")\s*[=:]\s*[^\s$'\"]")
# A value that only names an env var (`${HF_TOKEN}`) is expanded inside the pod from the Secret.
_ENV_REF = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*\}$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# registry host (a dot, a port or localhost) / path : tag or @digest
_QUALIFIED_IMAGE = re.compile(r"^(localhost|[^/]*[.:][^/]*)/[^:@]+(:[\w][\w.-]{0,127}|@sha256:[0-9a-f]{64})$")


def _fix(name: str) -> str:
    return (f"keep it out of manifests: put it in the Secret {SECRET_NAME} "
            f"(kubectl create secret generic {SECRET_NAME} --from-literal={name}=...), which every Job reads")


def _walk(value: Any, path: str) -> Iterator[tuple[str, str, Any]]:
    """(path, key, value) of every leaf of a YAML value; a list item's key is its list's."""
    if isinstance(value, Mapping):
        for k, v in value.items():
            yield from _walk(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk(v, f"{path}[{i}]")
    else:
        yield path, path.rsplit(".", 1)[-1].split("[", 1)[0], value


def check_no_inline_secrets(config: Mapping[str, Any], env: Mapping[str, str], where: str,
                            options: type | None = None) -> None:
    """Refuse a config key that holds a credential (an option of the job's `options` class says
    whether it does; other keys are judged by their name), an env literal for one, or any value
    that is one (by its shape, or equal to a credential set in this shell). Never prints the value."""
    secret = {s.name: s.secret for s in field_specs(options)} if options else {}
    for path, key, value in _walk(config, ""):
        text = "" if value is None else str(value)
        if secret.get(key, is_secret_name(key)) and text and not _ENV_REF.match(text):
            raise DistilError(f"{where}: config key '{path}' holds a secret: {_fix(key.upper())}")
        _check_value(text, f"{where}: config key '{path}'")
    for name, value in env.items():
        if name.upper() in SECRET_ENV or is_secret_name(name):
            raise DistilError(f"--env {name}=...: a secret in the manifest's env: {_fix(name)}")
        _check_value(value, f"--env {name}")


def _check_value(text: str, where: str) -> None:
    m = _SECRET_VALUE.search(text)
    if m:
        name = m.group("name") or ("HF_TOKEN" if m.group("hf") else "AWS_ACCESS_KEY_ID")
        raise DistilError(f"{where} holds a secret value: {_fix(name)}")
    for name in SECRET_ENV:
        secret = os.environ.get(name, "")
        if len(secret) >= 8 and secret in text:
            raise DistilError(f"{where} holds the value of ${name}: {_fix(name)}")


def check_rendered_text(text: str) -> None:
    """Last line of defence: the credentials of this shell appear nowhere in the output."""
    for name in SECRET_ENV:
        secret = os.environ.get(name, "")
        if len(secret) >= 8 and secret in text:
            raise DistilError(f"the rendered manifests contain the value of ${name}: {_fix(name)}")


def check_image(image: str | None) -> str:
    if not image:
        raise DistilError("--image is required: pass the image the cluster pulls, e.g. "
                          "--image ghcr.io/ORG/distil-jobs:0.1.0-gpu")
    if not _QUALIFIED_IMAGE.match(image) or image.endswith(":latest"):
        raise DistilError(f"--image {image} is not fully qualified: give registry/repository:tag (not :latest) "
                          "or @sha256:digest, e.g. ghcr.io/ORG/distil-jobs:0.1.0-gpu (docker.io/library/NAME:TAG "
                          "for Docker Hub)")
    return image


def check_dns_label(value: str, flag: str, max_len: int = 63) -> str:
    if len(value) > max_len or not _DNS_LABEL.match(value):
        raise DistilError(f"{flag} {value!r} is not a valid Kubernetes name: use at most {max_len} lowercase "
                          "letters, digits and '-', starting and ending with a letter or digit")
    return value


def check_counts(job: str, nnodes: int, num_shards: int, gpus_per_node: int, sharded: bool) -> None:
    if nnodes < 1:
        raise DistilError(f"--nnodes {nnodes}: must be at least 1 (one pod per node)")
    if num_shards < 1:
        raise DistilError(f"--num-shards {num_shards}: must be at least 1 (one pod per shard)")
    if gpus_per_node < 0:
        raise DistilError(f"--gpus-per-node {gpus_per_node}: must be 0 (CPU) or more")
    if nnodes > 1 and job != "train-student":
        raise DistilError(f"--nnodes {nnodes}: only train-student runs on several nodes; "
                          + (f"split {job} with --num-shards instead" if sharded else "drop --nnodes"))
    if num_shards > 1 and not sharded:
        raise DistilError(f"--num-shards {num_shards}: {job} does not shard; drop --num-shards"
                          + (" (use --nnodes for more training nodes)" if job == "train-student" else ""))
    if num_shards > 1 and job == "evaluate-mteb":
        raise DistilError("--num-shards with evaluate-mteb needs a merge pod for the report, which render does "
                          "not write: render with --num-shards 1 (finished pairs are skipped on a retry)")


def parse_pairs(pairs: tuple[str, ...], flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise DistilError(f"{flag} {pair!r}: expected NAME=VALUE")
        out[name.strip()] = value
    return out
