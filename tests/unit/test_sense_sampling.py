"""Bottom-k sampling and the range merge of gather-senses, without a model: split any way, the
sample is the same, and the merge reads chunk files by row group and still gets every row."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq

from distil_jobs.artifacts import open_location
from distil_jobs.senses.merge import COUNTS, merge_chunks
from distil_jobs.senses.sampling import Candidates, bottom_k, chunk_table, concat, occurrence_keys

DIM, CAP = 4, 3


def occurrences(rows: range, rng: np.random.Generator) -> Candidates:
    """Five positions per row, token ids drawn from 40 (some frequent, some rare)."""
    row = np.repeat(np.asarray(rows, np.int64), 5)
    pos = np.tile(np.arange(5, dtype=np.int32), len(rows))
    token = (rng.zipf(1.5, len(row)) % 40).astype(np.int32)
    vec = np.stack([row, pos, token, row * 0], axis=1).astype(np.float16)  # vectors say where they came from
    return Candidates(token, occurrence_keys(7, row, pos), row, pos, vec)


def test_keys_depend_on_row_and_position_and_seed_only():
    rows, pos = np.array([0, 1, 2, 3]), np.array([1, 0, 3, 2])
    a = occurrence_keys(1, rows, pos)
    assert len(set(a.tolist())) == 4  # (0, 1) and (1, 0) differ
    assert (occurrence_keys(1, rows[::-1], pos[::-1]) == a[::-1]).all()
    assert (occurrence_keys(2, rows, pos) != a).all()


def test_bottom_k_of_parts_equals_bottom_k_of_the_whole():
    rng = np.random.default_rng(0)
    whole = occurrences(range(200), rng)
    want = bottom_k(whole, CAP)
    parts = [bottom_k(whole.take(np.flatnonzero((whole.row >= lo) & (whole.row < lo + 30))), CAP)
             for lo in range(0, 200, 30)]
    got = bottom_k(concat(parts[::-1], DIM), CAP)  # the order of the parts does not matter
    for field in ("token", "key", "row", "pos", "vec"):
        assert (getattr(got, field) == getattr(want, field)).all(), field
    per_token = np.bincount(want.token)
    seen = np.bincount(whole.token, minlength=len(per_token))
    assert (per_token == np.minimum(seen, CAP)).all()


def test_merge_reads_ranges_by_row_group_and_sums_the_counts(tmp_path):
    rng = np.random.default_rng(1)
    whole = occurrences(range(300), rng)
    out = open_location(str(tmp_path / "out"))
    files = []
    for lo in range(0, 300, 100):
        part = whole.take(np.flatnonzero((whole.row >= lo) & (whole.row < lo + 100)))
        rel = f"data/part-{lo:010d}-{lo + 100:010d}.parquet"
        (tmp_path / "out" / "data").mkdir(parents=True, exist_ok=True)
        # Row groups of 4 rows: a token range spans several, and most lie outside any one range.
        pq.write_table(chunk_table(bottom_k(part, CAP), part.token, DIM), str(tmp_path / "out" / rel),
                       row_group_size=4, write_page_checksum=True)
        files.append(rel)
    merged = merge_chunks(out, files, DIM, CAP, vocab_size=40, tokens_per_file=7, progress=False)
    want = bottom_k(whole, CAP)
    samples = pq.read_table([str(tmp_path / "out" / f) for f in merged.files[:-1]]).to_pydict()
    assert samples["token_id"] == want.token.tolist()
    assert samples["row_idx"] == want.row.tolist() and samples["position"] == want.pos.tolist()
    assert np.array_equal(np.asarray(samples["vector"], np.float16), want.vec)
    counts = pq.read_table(str(tmp_path / "out" / COUNTS)).to_pydict()
    ids, seen = np.unique(whole.token, return_counts=True)
    assert counts["token_id"] == ids.tolist() and counts["seen"] == seen.tolist()
    assert counts["kept"] == np.minimum(seen, CAP).tolist()
    assert merged.tokens_covered == len(ids) and merged.total_vectors == len(want)
    assert all(lo < hi and rel.endswith(f"{lo:08d}-{hi:08d}.parquet") for lo, hi, rel in merged.token_ranges)
