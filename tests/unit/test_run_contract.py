"""The run contract on a real local store: claim, growable settings, kind checks, shard markers."""

from __future__ import annotations

import json

import pytest

from distil_jobs.artifacts import open_location
from distil_jobs.artifacts.manifest import new_manifest
from distil_jobs.artifacts.run import claim_output, completed, finish, mark_shard_done, missing_shards
from distil_jobs.errors import DistilError
from distil_jobs.shards import Shard


def test_a_claim_with_other_settings_is_refused_naming_them(tmp_path):
    out = open_location(str(tmp_path / "out"))
    claim_output(out, "job-a", {"lr": 1e-4, "seed": 1}, info={"total_rows": 10})
    assert claim_output(out, "job-a", {"lr": 1e-4, "seed": 1})["total_rows"] == 10  # a resume
    with pytest.raises(DistilError, match=r"different settings \(lr, seed\): use a new --output"):
        claim_output(out, "job-a", {"lr": 1e-3, "seed": 2})
    with pytest.raises(DistilError, match="holds a job-a run: use another --output for job-b"):
        claim_output(out, "job-b", {"lr": 1e-4, "seed": 1})


def test_growable_settings_may_gain_entries_but_not_change_them(tmp_path):
    out = open_location(str(tmp_path / "out"))
    claim_output(out, "eval", {"tasks": {"A": 1}}, growable=("tasks",))
    claim_output(out, "eval", {"tasks": {"B": 2}}, growable=("tasks",))
    assert json.loads((tmp_path / "out" / "_shards" / "run.json").read_text())["fingerprint"]["tasks"] == \
        {"A": 1, "B": 2}
    with pytest.raises(DistilError, match=r"different settings \(tasks A\)"):
        claim_output(out, "eval", {"tasks": {"A": 3}}, growable=("tasks",))


def test_completed_checks_kind_and_settings_not_just_the_presence_of_a_manifest(tmp_path):
    out = open_location(str(tmp_path / "out"))
    assert completed(out, "student-model") is None
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "final.bin").write_bytes(b"weights")
    assert finish(out, new_manifest("student-model", "train-student", {}, [], 1, fingerprint={"lr": 1}))
    assert completed(out, "student-model", {"lr": 1})["files"][0]["path"] == "final.bin"
    with pytest.raises(DistilError, match=r"already holds a 'student-model' artifact .* not 'teacher-embeddings'"):
        completed(out, "teacher-embeddings")
    with pytest.raises(DistilError, match=r"made with different settings \(lr\)"):
        completed(out, "student-model", {"lr": 2})
    assert not finish(out, new_manifest("student-model", "train-student", {}, [], 1))  # one writer wins


def test_missing_shards_are_named_until_every_marker_is_there(tmp_path):
    out = open_location(str(tmp_path / "out"))
    assert missing_shards(out, 3) == [0, 1, 2]
    mark_shard_done(out, Shard(1, 3, "flags"), {"rows": 5})
    assert missing_shards(out, 3) == [0, 2]
