"""Sense labels: precompute-embeddings --output-type sense_ids with a real dictionary (gather-senses →
cluster, MiniLM) gives, for every token, the teacher's nearest sense; another vocabulary is refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from tests.integration.sense_helpers import corpus_head

RARE = "Quokkas photobombed the xylophonist."  # tokens the 300 gathered sentences never saw


@pytest.fixture(scope="module")
def texts(data_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("texts")
    src = corpus_head(data_path, folder / "head.tsv", 20)
    lines = src.read_text(encoding="utf-8").splitlines()
    (folder / "texts.tsv").write_text("\n".join([*lines, f"rare\t{RARE}"]) + "\n", encoding="utf-8")
    return folder / "texts.tsv"


def label(cli, texts: Path, dictionary: Path, out: Path):
    return cli("precompute-embeddings", "--input", str(texts), "--teacher", "minilm", "--output-type", "sense_ids",
               "--sense-dict", str(dictionary), "--max-length", "64", "--output", str(out))


def test_labels_are_the_teacher_s_nearest_sense_of_each_token(cli, texts, sense_dictionary, minilm_path, tmp_path):
    from safetensors.numpy import load_file
    from transformers import AutoModel, AutoTokenizer

    out = tmp_path / "labels"
    done = label(cli, texts, sense_dictionary, out)
    assert done.returncode == 0, done.stderr[-2000:]
    table = pq.read_table(sorted((out / "data").glob("*.parquet"))).to_pydict()
    d = load_file(str(sense_dictionary / "sense_dict.safetensors"))
    tok, model = AutoTokenizer.from_pretrained(minilm_path), AutoModel.from_pretrained(minilm_path).eval()
    for text, ids, senses in zip(table["text"], table["sense_token_ids"], table["sense_ids"], strict=True):
        feats = tok(text, truncation=True, max_length=64, return_tensors="pt")
        with torch.inference_mode():
            hidden = model(**feats).last_hidden_state[0].to(torch.float16).float().numpy()
        real = [j for j, t in enumerate(feats["input_ids"][0].tolist()) if t not in tok.all_special_ids]
        assert ids == feats["input_ids"][0][real].tolist() and len(senses) == len(ids)
        for j, t, s in zip(real, ids, senses, strict=True):
            lo, hi = d["offsets"][t], d["offsets"][t + 1]
            assert s == (int(np.argmax(d["centroids"][lo:hi] @ hidden[j])) if hi > lo else -1)
    assert -1 in table["sense_ids"][-1]  # the rare sentence: some of its tokens have no senses
    assert all(s >= 0 for row in table["sense_ids"][:-1] for s in row)  # gathered sentences: every token has some
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["extra"]["output_type"] == "sense_ids"
    ref = next(i for i in manifest["inputs"] if i["role"] == "sense_dict")
    assert ref["kind"] == "sense-dict" and ref["manifest_sha256"]  # training checks labels against this


@pytest.mark.parametrize("case", ["other_vocabulary", "no_dictionary"])
def test_a_dictionary_that_does_not_fit_is_one_line_and_no_artifact(cli, texts, sense_dictionary, tmp_path, case):
    source = sense_dictionary
    if case == "other_vocabulary":
        source = tmp_path / "dict"
        shutil.copytree(sense_dictionary, source)
        manifest = json.loads((source / "manifest.json").read_text())
        manifest["extra"]["tokenizer_fingerprint"] = "0" * 64  # as from a teacher with another tokenizer
        (source / "manifest.json").write_text(json.dumps(manifest))
        done, expected = label(cli, texts, source, tmp_path / "out"), "another vocabulary"
    else:
        done = cli("precompute-embeddings", "--input", str(texts), "--output-type", "sense_ids", "--output",
                   str(tmp_path / "out"))
        expected = "--output-type sense_ids and --sense-dict go together"
    assert done.returncode == 2, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and expected in last and "Traceback" not in done.stderr
    assert not (tmp_path / "out" / "manifest.json").exists() and not (tmp_path / "out" / "_shards").exists()
