"""gather-senses end to end: the real MiniLM teacher, real corpus sentences, the CLI as a user runs it.

One reference run (400 sentences, cap 8) is shared by the module; the other runs check that
sharding and a kill/resume reproduce it exactly."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.conftest import run_cli

CAP, MAX_LENGTH, ROWS = 8, 32, 400
COMMON = ["gather-senses", "--teacher", "minilm", "--max-length", str(MAX_LENGTH), "--max-per-token", str(CAP),
          "--chunk-rows", "100", "--device", "cpu", "--seed", "3"]


@pytest.fixture(scope="module")
def corpus(data_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dst = tmp_path_factory.mktemp("corpus") / "sentences_en.tsv"
    with open(data_path / "corpus" / "sentences_en.tsv", encoding="utf-8") as f:
        dst.write_text("".join(next(f) for _ in range(ROWS + 1)), encoding="utf-8")  # header + rows
    return dst


@pytest.fixture(scope="module")
def texts(corpus: Path) -> list[str]:
    from distil_jobs.data import read_table

    return read_table(str(corpus)).column("text").to_pylist()


@pytest.fixture(scope="module")
def reference(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("one") / "senses"
    run_cli(*COMMON, "--input", str(corpus), "--output", str(out), check=True)
    return out


def load(out: Path) -> tuple[dict[str, np.ndarray], dict[str, list[int]], dict]:
    manifest = json.loads((out / "manifest.json").read_text())
    files = [f["path"] for f in manifest["files"] if f["path"].startswith("samples/")]
    table = pq.read_table([str(out / f) for f in files])
    samples = {c: np.asarray(table.column(c).to_pylist()) for c in ("token_id", "row_idx", "position")}
    samples["vector"] = np.asarray(table.column("vector").to_pylist(), dtype=np.float32)
    return samples, pq.read_table(str(out / "counts.parquet")).to_pydict(), manifest


def assert_same(a: Path, b: Path) -> None:
    (sa, ca, ma), (sb, cb, mb) = load(a), load(b)
    for c in ("token_id", "row_idx", "position"):
        assert np.array_equal(sa[c], sb[c]), c
    np.testing.assert_allclose(sa["vector"], sb["vector"], atol=1e-2)  # other batch shapes, same float16 values
    assert ca == cb
    assert ma["fingerprint"] == mb["fingerprint"]
    assert [f["path"] for f in ma["files"]] == [f["path"] for f in mb["files"]]


def test_counts_are_the_tokenizers_and_kept_is_capped(reference, texts, minilm_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm_path)
    ids = tok(texts, truncation=True, max_length=MAX_LENGTH)["input_ids"]
    special = set(tok.all_special_ids)
    want = Counter(i for row in ids for i in row if i not in special)
    samples, counts, manifest = load(reference)
    assert dict(zip(counts["token_id"], counts["seen"], strict=True)) == dict(want)
    assert counts["kept"] == [min(s, CAP) for s in counts["seen"]]
    kept = Counter(samples["token_id"].tolist())
    assert [kept[t] for t in counts["token_id"]] == counts["kept"]
    # Every sample is an occurrence of its token, none twice, sorted by token id.
    assert all(ids[r][p] == t for t, r, p in zip(samples["token_id"], samples["row_idx"], samples["position"],
                                                strict=True))
    pairs = set(zip(samples["row_idx"].tolist(), samples["position"].tolist(), strict=True))
    assert len(pairs) == len(samples["row_idx"])
    assert (np.diff(samples["token_id"]) >= 0).all()

    extra = manifest["extra"]
    assert manifest["kind"] == "sense-samples" and manifest["rows"] == extra["total_vectors"] == sum(counts["kept"])
    assert extra["tokens_covered"] == len(want) and extra["dim"] == 384 and extra["vocab_size"] == 30522
    assert extra["layer"] == 6 and extra["max_per_token"] == CAP and extra["seed"] == 3
    from distil_jobs.senses.vocab import tokenizer_fingerprint

    assert extra["tokenizer_fingerprint"] == tokenizer_fingerprint(tok)
    assert {f["path"] for f in manifest["files"]} == {r[2] for r in extra["token_ranges"]} | {"counts.parquet"}
    check = run_cli("verify", str(reference))
    assert check.returncode == 0, check.stderr


def test_samples_are_the_teachers_hidden_states(reference, texts, minilm_path):
    import torch
    from transformers import AutoModel, AutoTokenizer

    samples, _, _ = load(reference)
    pick = np.random.default_rng(0).choice(len(samples["row_idx"]), 40, replace=False)
    rows = sorted({int(samples["row_idx"][i]) for i in pick})
    tok, model = AutoTokenizer.from_pretrained(minilm_path), AutoModel.from_pretrained(minilm_path).eval()
    with torch.inference_mode():
        feats = tok([texts[r] for r in rows], truncation=True, max_length=MAX_LENGTH, padding=True, return_tensors="pt")
        hidden = model(**feats).last_hidden_state.numpy()
    for i in pick:
        want = hidden[rows.index(int(samples["row_idx"][i])), samples["position"][i]]
        np.testing.assert_allclose(samples["vector"][i], want, atol=2e-2, rtol=1e-2)


def test_two_shards_merge_to_the_samples_of_one(reference, corpus, tmp_path):
    out = tmp_path / "two"
    for i in (1, 0):  # the order shards finish in does not matter
        run_cli(*COMMON, "--input", str(corpus), "--output", str(out), "--num-shards", "2", "--shard-index", str(i),
                check=True)
        assert (out / "manifest.json").exists() == (i == 0)
    assert_same(reference, out)
    assert json.loads((out / "manifest.json").read_text())["extra"]["shards"] == 2


def test_a_killed_shard_resumes_to_the_same_samples(reference, corpus, tmp_path):
    out = tmp_path / "killed"
    args = [*COMMON, "--input", str(corpus), "--output", str(out), "--batch-size", "8"]
    proc = subprocess.Popen([sys.executable, "-m", "distil_jobs.cli", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list((out / "data").glob("part-*.parquet")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert 1 <= len(list((out / "data").glob("part-*.parquet"))) < ROWS // 100, "the kill should land mid-run"
    assert not (out / "manifest.json").exists()
    run_cli(*args, check=True)
    assert_same(reference, out)
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]


def test_instruction_tokens_are_not_sampled(corpus, texts, minilm_path, tmp_path):
    from transformers import AutoTokenizer

    out, instruction = tmp_path / "instr", "Represent the meaning:"
    run_cli(*COMMON, "--input", str(corpus), "--output", str(out), "--max-rows", "60", "--instruction", instruction,
            check=True)
    tok = AutoTokenizer.from_pretrained(minilm_path)
    prefix = instruction + " "
    feats = tok([prefix + t for t in texts[:60]], truncation=True, max_length=MAX_LENGTH, return_offsets_mapping=True)
    special = set(tok.all_special_ids)
    want = Counter(i for ids, offs in zip(feats["input_ids"], feats["offset_mapping"], strict=True)
                   for i, (start, _) in zip(ids, offs, strict=True) if i not in special and start >= len(prefix))
    _, counts, manifest = load(out)
    assert dict(zip(counts["token_id"], counts["seen"], strict=True)) == dict(want)
    assert manifest["extra"]["instruction"] == instruction and manifest["extra"]["separator"] == " "


@pytest.mark.parametrize(("flags", "message"), [
    (["--layer", "7"], "--layer 7 is out of range for minilm: it has hidden states 0..6"),
    (["--max-per-token", "0"], "max-per-token"),
    (["--text-column", "sentence"], "column 'sentence' not in"),
    (["--tokens-per-file", "100000", "--max-memory", "1GiB"], "use --tokens-per-file"),
])
def test_bad_input_is_one_line_exit_2_and_no_claim(corpus, tmp_path, flags, message):
    out = tmp_path / "bad"
    done = run_cli(*COMMON, "--input", str(corpus), "--output", str(out), *flags)
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert not (out / "manifest.json").exists() and not (out / "_shards").exists()
