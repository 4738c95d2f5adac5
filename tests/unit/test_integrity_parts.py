"""The parts of the integrity guarantees, one at a time: content fingerprints, the sweep of stale
temporaries, the non-finite guard and the claim that yields when the earlier run left no work."""

from __future__ import annotations

import os
import time

import pytest
import torch

from distil_jobs.artifacts import fingerprint as fp
from distil_jobs.artifacts import open_location
from distil_jobs.artifacts.run import claim_output, sweep_temporaries
from distil_jobs.errors import DistilError, JobFault
from distil_jobs.train.nonfinite import NonFiniteGuard, require_finite_weights


def test_a_file_fingerprint_follows_its_bytes_not_its_name_or_mtime(tmp_path):
    a = tmp_path / "a.jsonl"
    a.write_text('{"text": "one"}\n')
    before = fp.content_fingerprint(str(a))
    os.utime(a, (time.time() + 50, time.time() + 50))
    assert fp.content_fingerprint(str(a)) == before
    a.write_text('{"text": "two"}\n')
    assert fp.content_fingerprint(str(a)) != before


def test_a_big_file_is_sampled_and_its_mtime_counts(tmp_path, monkeypatch):
    monkeypatch.setattr(fp, "FULL_HASH_BYTES", 1000)
    monkeypatch.setattr(fp, "SAMPLE_BYTES", 100)
    big = tmp_path / "big.tsv"
    big.write_bytes(b"x" * 5000)
    first = fp.content_fingerprint(str(big))
    assert first.startswith("file:sampled-")
    with open(big, "r+b") as f:  # an edit inside the middle sample
        f.seek(2500)
        f.write(b"y")
    assert fp.content_fingerprint(str(big)) != first


def test_a_folder_fingerprint_ignores_bookkeeping_and_temporaries(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "a.jsonl").write_text("{}\n")
    before = fp.content_fingerprint(str(folder))
    (folder / ".tmp-123-b.jsonl").write_text("{}\n")
    assert fp.content_fingerprint(str(folder)) == before
    (folder / "b.jsonl").write_text("{}\n")
    assert fp.content_fingerprint(str(folder)) != before


def test_stale_temporaries_are_swept_live_ones_kept(tmp_path):
    out = open_location(str(tmp_path / "out"))
    data = tmp_path / "out" / "data"
    data.mkdir(parents=True)
    stale, live, real = data / ".tmp-aa-part.parquet", data / ".tmp-bb-part.parquet", data / "part.parquet"
    for f in (stale, live, real):
        f.write_bytes(b"x")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    assert sweep_temporaries(out, time.time() - 900) == ["data/.tmp-aa-part.parquet"]
    assert live.exists() and real.exists() and not stale.exists()


def test_a_claim_yields_only_when_the_earlier_run_left_no_work(tmp_path):
    out = open_location(str(tmp_path / "out"))
    claim_output(out, "job", {"lr": -1, "content:input": "a"})
    fresh = {"lr": 1, "content:input": "a"}
    assert claim_output(out, "job", fresh, produced=lambda: False)["fingerprint"] == fresh
    with pytest.raises(DistilError, match=r"different settings \(lr\)"):
        claim_output(out, "job", {"lr": 2, "content:input": "b"}, produced=lambda: True)
    with pytest.raises(DistilError, match="the content of --input changed"):
        claim_output(out, "job", {"lr": 1, "content:input": "b"}, produced=lambda: True)


def test_the_guard_skips_up_to_its_limit_then_stops_naming_the_step():
    guard = NonFiniteGuard(limit=2)
    assert not guard.skip(1, 0.5, 1.0)
    assert guard.skip(2, float("nan"), 1.0) and guard.skip(3, 0.5, float("inf"))
    with pytest.raises(JobFault, match=r"training diverged at step 4: .* \(3 non-finite step"):
        guard.skip(4, float("nan"), float("nan"))
    with pytest.raises(JobFault):
        NonFiniteGuard(limit=5).skip(1, float("nan"), 0.0, can_skip=False)  # DeepSpeed: already applied


def test_a_nan_weight_is_never_saved():
    model = torch.nn.Linear(2, 2)
    require_finite_weights(model)
    with torch.no_grad():
        model.bias[0] = float("nan")
    with pytest.raises(JobFault, match=r"non-finite weights .* first bias"):
        require_finite_weights(model)
