"""train-student --method sense on a real dictionary (gather-senses → cluster, MiniLM) and real labels
(precompute-embeddings --output-type sense_ids): a 2-layer MiniLM student learns to pick the teacher's
senses, precomputed labels and an online teacher train alike, the sense-replace encoder loads with
sentence-transformers and does what it says, and labels or students that do not fit are refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.integration.sense_helpers import SENSE_CORPUS_ROWS, corpus_head

STUDENT = ["--student", "minilm", "--student-layers", "0,1", "--max-length", "32", "--batch-size", "16",
           "--dev-fraction", "0.15", "--seed", "7"]


@pytest.fixture(scope="module")
def corpus(data_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return corpus_head(data_path, tmp_path_factory.mktemp("sense-corpus") / "corpus.tsv", SENSE_CORPUS_ROWS)


@pytest.fixture(scope="module")
def labels(corpus: Path, sense_dictionary: Path) -> Path:
    from tests.conftest import run_cli

    out = corpus.parent / "labels"
    run_cli("precompute-embeddings", "--input", str(corpus), "--teacher", "minilm", "--output-type", "sense_ids",
            "--sense-dict", str(sense_dictionary), "--max-length", "32", "--output", str(out), check=True)
    return out


def train(cli, out: Path, *args: str):
    return cli("train-student", "--method", "sense", *STUDENT, *args, "--output", str(out))


def test_sense_training_beats_the_untrained_student_and_saves_a_sense_replace_encoder(cli, labels, sense_dictionary,
                                                                                       tmp_path):
    from safetensors.numpy import load_file
    from sentence_transformers import SentenceTransformer

    out = tmp_path / "student"
    done = train(cli, out, "--targets", str(labels), "--sense-dict", str(sense_dictionary), "--max-steps", "30",
                 "--lr", "2e-4", "--eval-steps", "0")
    assert done.returncode == 0, done.stderr[-3000:]
    extra = json.loads((out / "manifest.json").read_text())["extra"]
    before, after = extra["untrained_metrics"]["dev_sense_accuracy"], extra["final_metrics"]["dev_sense_accuracy"]
    assert after > before + 0.03, (before, after)
    assert extra["headline"]["metric"] == "dev_sense_accuracy" and extra["labels"] == "precomputed"

    # The sense-replace encoder: each token vector becomes its token's sense nearest to it (as in training),
    # tokens without senses keep theirs, then mean pooling and the student's Normalize.
    text = "The bank raised interest rates after the river flooded its bank."
    replace = SentenceTransformer(str(out / "final" / "sense-replace"), device="cpu", trust_remote_code=True)
    plain = SentenceTransformer(str(out / "final"), device="cpu")
    feats = plain.preprocess([text])
    with torch.no_grad():
        tokens = plain[0](dict(feats))["token_embeddings"][0].numpy()
    d = load_file(str(sense_dictionary / "sense_dict.safetensors"))
    centroids = d["centroids"].astype(np.float16).astype(np.float32)  # the encoder keeps senses in half precision
    chosen = []
    for t, v in zip(feats["input_ids"][0].tolist(), tokens, strict=True):
        lo, hi = d["offsets"][t], d["offsets"][t + 1]
        chosen.append(centroids[lo + int(np.argmax(centroids[lo:hi] @ v))] if hi > lo else v)
    expected = np.mean(chosen, axis=0)
    expected /= np.linalg.norm(expected)
    got = replace.encode([text])[0]
    assert np.allclose(got, expected, atol=2e-3), np.abs(got - expected).max()
    assert not np.allclose(got, plain.encode([text])[0], atol=1e-2)  # it is not the plain student
    saved = load_file(str(out / "final" / "sense-replace" / "1_SenseReplace" / "model.safetensors"))
    assert saved["centroids"].dtype == np.float16  # the dictionary ships in half precision


def test_precomputed_labels_and_an_online_teacher_train_alike(cli, corpus, labels, sense_dictionary, tmp_path):
    runs = {}
    for name, data in {"precomputed": ["--targets", str(labels)],
                       "online": ["--input", str(corpus), "--teacher", "minilm"]}.items():
        out = tmp_path / name
        done = train(cli, out, *data, "--sense-dict", str(sense_dictionary), "--max-steps", "1", "--log-steps", "1",
                     "--eval-steps", "0")
        assert done.returncode == 0, done.stderr[-3000:]
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        runs[name] = (next(r["loss"] for r in rows if r.get("step") == 1 and "loss" in r),
                      json.loads((out / "manifest.json").read_text())["extra"]["untrained_metrics"])
    (loss_a, dev_a), (loss_b, dev_b) = runs["precomputed"], runs["online"]
    assert loss_a == pytest.approx(loss_b, rel=1e-4)
    assert dev_a == pytest.approx(dev_b, rel=1e-6)  # the same dev labels too


def _other_vocabulary_student(minilm_path: str, dest: Path) -> Path:
    from transformers import AutoTokenizer

    shutil.copytree(minilm_path, dest)
    tok = AutoTokenizer.from_pretrained(str(dest))
    tok.add_tokens(["quokkaesque"])  # one more token: another vocabulary, as any other model family has
    tok.save_pretrained(str(dest))
    return dest


def _other_dictionary(sense_dictionary: Path, dest: Path) -> Path:
    from tests.conftest import run_cli

    run_cli("cluster", "--samples", str(sense_dictionary.parent / "samples"), "--output", str(dest), "--k", "3",
            check=True)
    return dest


CASES = {
    "labels_from_another_dictionary": (lambda ctx: ["--targets", str(ctx["labels"]), "--sense-dict",
                                                    str(_other_dictionary(ctx["dict"], ctx["tmp"] / "k3"))],
                                       "holds sense labels made from another dictionary"),
    "student_of_another_vocabulary": (lambda ctx: ["--targets", str(ctx["labels"]), "--sense-dict", str(ctx["dict"]),
                                                   "--student",
                                                   str(_other_vocabulary_student(ctx["minilm"], ctx["tmp"] / "m"))],
                                      "has another vocabulary than the teacher of --sense-dict"),
    "no_dictionary": (lambda ctx: ["--targets", str(ctx["labels"])], "--method sense needs --sense-dict"),
    "no_room_for_text": (lambda ctx: ["--targets", str(ctx["labels"]), "--sense-dict", str(ctx["dict"]),
                                      "--max-length", "2"], "--max-length 2 leaves no room for text"),
    "another_kind_of_artifact": (lambda ctx: ["--targets", str(ctx["dict"]), "--sense-dict", str(ctx["dict"])],
                                 "is a 'sense-dict' artifact, not 'teacher-embeddings'"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_labels_or_students_that_do_not_fit_are_one_line_and_no_artifact(cli, labels, sense_dictionary, minilm_path,
                                                                          tmp_path, case):
    make_args, expected = CASES[case]
    args = make_args({"labels": labels, "dict": sense_dictionary, "minilm": minilm_path, "tmp": tmp_path})
    out = tmp_path / "student"
    done = train(cli, out, *args, "--max-steps", "1")
    assert done.returncode == 2, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and expected in last and "Traceback" not in done.stderr, last
    assert not (out / "manifest.json").exists() and not (out / "final").exists()


@pytest.mark.slow
def test_zero3_over_two_ranks_trains_the_sense_student(cli, labels, sense_dictionary, tmp_path):
    """The method plugs into the shared loop: DeepSpeed ZeRO-3 shards the student (and P) over two ranks."""
    from sentence_transformers import SentenceTransformer

    out = tmp_path / "student"
    done = train(cli, out, "--targets", str(labels), "--sense-dict", str(sense_dictionary), "--max-steps", "8",
                 "--lr", "2e-4", "--eval-steps", "0", "--nproc-per-node", "2", "--deepspeed-stage", "3")
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    extra = manifest["extra"]
    assert extra["world_size"] == 2 and extra["deepspeed"] and manifest["config"]["deepspeed_stage"] == 3
    assert extra["final_metrics"]["dev_sense_accuracy"] > extra["untrained_metrics"]["dev_sense_accuracy"]
    model = SentenceTransformer(str(out / "final" / "sense-replace"), device="cpu", trust_remote_code=True)
    assert np.isfinite(model.encode(["A bank by the river."])).all()
