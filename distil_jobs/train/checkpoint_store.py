"""Checkpoints of an object-store output (`s3://`, `hf://`) kept on that store, under
`<output>/checkpoints/step-N/`, so a pod or node that restarts anywhere resumes from there.

Saving, for every rank: write into the local cache's `.tmp-step-N/` → barrier → upload the files
this rank wrote (`owner`) → barrier → rank 0 writes `step-N/done` LAST, then prunes to the newest
--keep-checkpoints (an old step loses its marker first, so a half-deleted step is never read).
A reader only trusts a step with `done`: a save killed half-way is invisible.

Nodes need no shared filesystem. Each node keeps its own local folder, holding only the files its
ranks wrote; with one node that folder is whole and kept as a cache (`checkpoints.publish`), with
several it is dropped after the upload. Before training, each node's local rank 0 makes its cache
agree with the store: the newest complete step is pulled whole when the cache lacks it, and any
other local step is removed (the store, not the cache, says what the run has done).
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import re
import shutil
import uuid
from typing import Any

from distil_jobs.artifacts import Location
from distil_jobs.train import checkpoints

log = logging.getLogger("distil_jobs.train.checkpoint_store")

DONE = "done"  # the marker, written last; its content is the checkpoint's info (checkpoints.COMPLETE)
FOLDER = "checkpoints"
# Files one rank writes: our per-rank RNG state, DeepSpeed's per-data-parallel-rank ZeRO states
# (optimizer, and under ZeRO-3 the model shards). Everything else (state.pt, DeepSpeed's model
# states and `latest`, metrics.jsonl) is rank 0's.
_RANKED = re.compile(r"^(?:rng-rank|(?:bf16_)?zero_pp_rank_)(\d+)[_.]")


def owner(rel: str) -> int:
    """The rank that wrote the checkpoint file `rel` (and so uploads it)."""
    m = _RANKED.match(posixpath.basename(rel))
    return int(m.group(1)) if m else 0


def local_files(folder: str) -> list[str]:
    """Every file under `folder`, '/'-separated and relative to it, sorted."""
    found = []
    for dirpath, _, names in os.walk(folder):
        for name in names:
            found.append(os.path.relpath(os.path.join(dirpath, name), folder).replace(os.sep, "/"))
    return sorted(found)


class CheckpointStore:
    """The checkpoints of one run on its output's store: `<loc>/step-N/...` and `<loc>/step-N/done`."""

    def __init__(self, loc: Location) -> None:
        self.loc = loc

    @classmethod
    def of_output(cls, out: Location, sub: str = "") -> CheckpointStore:
        return cls(out.child(posixpath.join(FOLDER, sub) if sub else FOLDER))

    @property
    def uri(self) -> str:
        return self.loc.uri

    # ------------------------------------------------------------ reading

    def steps(self) -> list[int]:
        """Every step folder on the store, complete or not, oldest first."""
        return sorted(int(m.group(1)) for m in map(checkpoints.STEP_NAME.match, self.loc.listdir()) if m)

    def complete_steps(self) -> list[int]:
        """Steps whose `done` marker exists, oldest first: the only ones a reader may use."""
        return [s for s in self.steps() if self.loc.exists(f"step-{s}/{DONE}")]

    def info(self, step: int) -> dict[str, Any]:
        return dict(self.loc.read_json(f"step-{step}/{DONE}"))

    def _remote_files(self, step: int) -> list[str]:
        """Files of step `step`, relative to its folder (the marker and upload leftovers excluded)."""
        self.loc._forget(f"step-{step}")
        # The store may spell the root differently from `loc.path` (the Hub drops `@main`): cut at the step folder.
        key = f"/{posixpath.basename(self.loc.root)}/step-{step}/"
        rels = [("/" + str(p)).split(key, 1)[1] for p in self.loc.fs.find(self.loc.path(f"step-{step}"))
                if key in "/" + str(p)]
        return sorted(r for r in rels if r and r != DONE and not r.startswith("_tmp/"))

    # ------------------------------------------------------------ writing (save)

    def upload(self, folder: str, step: int, rank: int) -> int:
        """Upload the files of `folder` (a checkpoint being written) that `rank` wrote; returns how many."""
        mine = [rel for rel in local_files(folder) if owner(rel) == rank]
        self.loc.put_files([(os.path.join(folder, rel), f"step-{step}/{rel}") for rel in mine],
                           message=f"distil-jobs: checkpoint step {step} (rank {rank})")
        return len(mine)

    def mark_done(self, step: int, info: dict[str, Any]) -> None:
        """Rank 0, after every rank uploaded: the step becomes visible to readers."""
        self.loc.put_bytes(f"step-{step}/{DONE}", json.dumps(info, indent=2, sort_keys=True).encode(),
                           message=f"distil-jobs: checkpoint step {step} complete")

    def prune(self, keep: int) -> list[int]:
        """Keep the newest `keep` complete steps; older steps (and unfinished leftovers older than the
        newest kept one) are deleted, marker first. Returns the deleted steps."""
        complete = self.complete_steps()
        kept = complete[-keep:] if keep > 0 else complete
        if not kept:
            return []
        dropped = [s for s in self.steps() if s < kept[0] or (s not in kept and s < kept[-1])]
        for step in dropped:
            if self.loc.exists(f"step-{step}/{DONE}"):
                self.loc.delete(f"step-{step}/{DONE}")
            self.loc.delete(f"step-{step}")
        return dropped

    def delete_all(self) -> None:
        """Once the run is published: its checkpoints are no longer needed (markers first)."""
        for step in reversed(self.steps()):
            if self.loc.exists(f"step-{step}/{DONE}"):
                self.loc.delete(f"step-{step}/{DONE}")
        if self.loc.exists():
            self.loc.delete("")

    # ------------------------------------------------------------ reading (resume)

    def pull(self, step: int, root: str) -> str:
        """Download step `step` whole into `root/step-N` (via a temporary folder, renamed into place),
        with `checkpoints.COMPLETE` holding the marker's info. Returns the folder."""
        info = self.info(step)
        final = checkpoints.step_dir(root, step)
        tmp = os.path.join(root, f".pull-step-{step}-{uuid.uuid4().hex[:8]}")
        os.makedirs(tmp)
        try:
            for rel in self._remote_files(step):
                target = os.path.join(tmp, *rel.split("/"))
                os.makedirs(os.path.dirname(target), exist_ok=True)
                self.loc.fs.get_file(self.loc.path(f"step-{step}/{rel}"), target)
            with open(os.path.join(tmp, checkpoints.COMPLETE), "w") as f:
                json.dump(info, f, indent=2, sort_keys=True)
            shutil.rmtree(final, ignore_errors=True)
            try:
                os.replace(tmp, final)
            except OSError:  # another node on a shared cache renamed the same step first
                if not os.path.exists(os.path.join(final, checkpoints.COMPLETE)):
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return final

    def sync_cache(self, root: str, step: int | None) -> tuple[str | None, bool]:
        """Make the local cache `root` hold exactly the store's step `step` (None: no checkpoint).
        A local copy is used only if its info equals the marker's (same save); else it is pulled.
        Returns the local folder of the step and whether it was pulled."""
        os.makedirs(root, exist_ok=True)
        wanted = checkpoints.step_dir(root, step) if step is not None else None
        for name in os.listdir(root):
            path = os.path.join(root, name)
            if path != wanted and (checkpoints.STEP_NAME.match(name) or name.startswith((".tmp-step-", ".pull-step-"))):
                shutil.rmtree(path, ignore_errors=True)
        if step is None or wanted is None:
            return None, False
        local = os.path.join(wanted, checkpoints.COMPLETE)
        if os.path.exists(local):
            with open(local) as f:
                if json.load(f) == self.info(step):
                    log.info("checkpoint step %d: the local cache %s matches %s", step, wanted, self.uri)
                    return wanted, False
        log.info("pulling checkpoint step %d from %s into %s", step, self.uri, root)
        return self.pull(step, root), True
