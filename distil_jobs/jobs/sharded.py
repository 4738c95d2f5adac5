"""The start and the end every sharded job shares (precompute-embeddings, gather-senses, cluster).

Start: `--finalize` only merges; an output that already holds this result (same kind, settings and
input content) is left alone; otherwise this shard is resolved (flags, Slurm array, Indexed Job)
and the output must be writable. End: the shard that finds every shard done reads the run's claim
back to write the manifest from what the run was started with.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from distil_jobs.artifacts import Location, open_location
from distil_jobs.artifacts.run import completed, read_claim
from distil_jobs.config import content_of, fingerprint_of
from distil_jobs.errors import DistilError
from distil_jobs.shards import Shard, resolve_shard

log = logging.getLogger("distil_jobs.jobs.sharded")


def start(cfg: Any, kind: str, finalize: Callable[[Location, Any, bool], None]
          ) -> tuple[Location, dict[str, Any], Shard] | None:
    """(output, settings with the inputs' content, this shard), or None when there is nothing to do."""
    assert cfg.output
    out = open_location(cfg.output)
    if cfg.finalize:
        finalize(out, cfg, True)
        return None
    settings = fingerprint_of(cfg) | content_of(cfg)  # the inputs' content included, not only their names
    if completed(out, kind, settings):
        log.info("%s is already complete (manifest present, same settings and inputs): nothing to do", out.uri)
        return None
    shard = resolve_shard(cfg.shard_index, cfg.num_shards)
    cfg.num_shards, cfg.shard_index = shard.count, shard.index
    out.ensure_writable()
    return out, settings, shard


def finished_claim(out: Location, kind: str, job: str) -> dict[str, Any] | None:
    """The run's claim, for the manifest; None when the manifest is already there."""
    if completed(out, kind):
        log.info("%s already has a manifest", out.uri)
        return None
    claim = read_claim(out)
    if not claim or claim.get("job") != job:
        raise DistilError(f"{out.uri} holds no {job} run: run {job} with this --output first")
    return claim


def manifest_fingerprints(claim_fingerprint: dict[str, Any], layout: dict[str, Any]) -> tuple[dict[str, Any],
                                                                                          dict[str, Any]]:
    """From the claim's fingerprint: what the manifest records as the result's fingerprint (without the
    shard layout, which a finished artifact does not depend on), and the plain settings for its config
    (without the inputs' content fingerprints)."""
    result = {k: v for k, v in claim_fingerprint.items() if k not in layout}
    settings = {k: v for k, v in claim_fingerprint.items() if not k.startswith("content:")}
    return result, settings
