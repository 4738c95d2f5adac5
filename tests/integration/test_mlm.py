"""Masked-LM distillation end to end, on a real encoder (MiniLM-L6) with a head fitted by prepare-teacher."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import run_cli

LM = ["--max-length", "32", "--batch-size", "16"]


def _manifest(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text())


@pytest.fixture(scope="session")
def mlm_corpus(data_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 English corpus sentences (not WikiText: the held-out text below is)."""
    lines = (data_path / "corpus" / "sentences_en.tsv").read_text(encoding="utf-8").splitlines()
    rows = [line for line in lines[1:] if not line.startswith("wikitext2_test")][:300]
    path = tmp_path_factory.mktemp("mlm") / "corpus.tsv"
    path.write_text("\n".join([lines[0], *rows]) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def mlm_teacher(mlm_corpus: Path) -> Path:
    """MiniLM-L6 with a masked-LM head fitted by prepare-teacher (a few steps: enough to be a trained head)."""
    out = mlm_corpus.parent / "teacher"
    run_cli("prepare-teacher", "--task", "mlm", "--model", "minilm", "--input", str(mlm_corpus), "--output", str(out),
            *LM, "--max-steps", "15", "--eval-steps", "0", "--save-steps", "0", check=True)
    return out


@pytest.fixture(scope="session")
def topk_targets(mlm_corpus: Path, mlm_teacher: Path) -> Path:
    out = mlm_corpus.parent / "topk"
    run_cli("precompute-embeddings", "--input", str(mlm_corpus), "--teacher", str(mlm_teacher), "--output-type",
            "mlm_topk", "--topk", "16", "--max-length", "32", "--batch-size", "32", "--output", str(out), check=True)
    return out


def test_prepare_teacher_publishes_a_masked_lm_that_transformers_loads_and_beats_its_untrained_head(
        mlm_teacher: Path) -> None:
    from transformers import AutoModelForMaskedLM

    extra = _manifest(mlm_teacher)["extra"]
    assert _manifest(mlm_teacher)["kind"] == "teacher-model" and extra["task"] == "mlm"
    assert extra["final_metrics"]["dev_perplexity"] < extra["untrained_metrics"]["dev_perplexity"]
    _, info = AutoModelForMaskedLM.from_pretrained(mlm_teacher / "final", output_loading_info=True)
    assert not info["missing_keys"]


def test_mlm_topk_artifact_records_what_readers_must_match(topk_targets: Path) -> None:
    extra = _manifest(topk_targets)["extra"]
    assert extra["output_type"] == "mlm_topk" and extra["topk"] == 16 and extra["kd_temperature"] == 2.0
    assert extra["masking"]["seed"] == 0 and len(extra["masking"]["counts_sha256"]) == 64
    # 16 × (2-byte id + 2-byte log-probability) + 4-byte rest, against 2 bytes per vocabulary entry.
    assert extra["stored_bytes_per_position"] == 16 * 4 + 4
    assert extra["full_logits_bytes_per_position"] == 2 * 30522


def test_stored_topk_kl_against_the_exact_kl_on_a_dev_batch(mlm_corpus: Path, mlm_teacher: Path,
                                                            topk_targets: Path) -> None:
    """The KL a student minimises from the stored artifact is the KL of the teacher's K+1 buckets computed
    from its full logits (within 1 %: float16 storage), and never more than the exact KL: bucketing the
    tail only loses information. How much it loses depends on K, T and the teacher (docs/mlm.md measures it)."""
    from distil_jobs.data import read_table
    from distil_jobs.mlm.batches import Batcher
    from distil_jobs.mlm.losses import exact_kl
    from distil_jobs.mlm.models import LmWithHead, load_lm
    from distil_jobs.mlm.topk import topk_kl, topk_of
    from distil_jobs.train.methods.lm_data import _stored
    from distil_jobs.train.student import keep_layers

    stored_rows = _stored(read_table(str(topk_targets)).slice(0, 32), 16)
    teacher, tokenizer = load_lm(str(mlm_teacher), "teacher", causal=False)
    batch = Batcher(tokenizer, None, 32, causal=False, restrict=True, device=torch.device("cpu")).from_stored(stored_rows)
    student, _ = load_lm(str(mlm_teacher), "student", causal=False)
    keep_layers(student, [0, 5])  # a student that disagrees with the teacher
    where = (batch.input_ids, batch.attention_mask, batch.rows, batch.positions)
    with torch.no_grad():
        t_logits, _ = LmWithHead(teacher.eval())(*where)
        s_logits, _ = LmWithHead(student.eval())(*where)
    assert np.array_equal(batch.topk[0].numpy(), t_logits.topk(16, dim=-1).indices.numpy())  # the same teacher
    stored = float(topk_kl(s_logits, *batch.topk, 2.0))
    assert stored == pytest.approx(float(topk_kl(s_logits, *topk_of(t_logits, 16, 2.0), 2.0)), rel=0.01)
    assert 0 < stored <= float(exact_kl(s_logits, t_logits, 2.0))


def test_student_init_copies_exactly_the_chosen_teacher_layers(mlm_teacher: Path) -> None:
    from distil_jobs.mlm.models import load_lm
    from distil_jobs.train.student import keep_layers

    teacher, _ = load_lm(str(mlm_teacher), "teacher", causal=False)
    student, _ = load_lm(str(mlm_teacher), "student", causal=False)
    keep_layers(student, [0, 2, 4])
    t, s = teacher.state_dict(), student.state_dict()
    assert student.config.num_hidden_layers == 3
    for new, old in enumerate([0, 2, 4]):
        for key, value in s.items():
            if f"encoder.layer.{new}." in key:
                assert torch.equal(value, t[key.replace(f"layer.{new}.", f"layer.{old}.")]), key
    for key in s:  # embeddings and the LM head come along unchanged
        if "encoder.layer." not in key:
            assert torch.equal(s[key], t[key]), key


def _train(out: Path, *args: str) -> object:
    return run_cli("train-student", "--method", "mlm", "--output", str(out), *LM, "--lr", "1e-4",
                   "--eval-steps", "0", "--save-steps", "0", *args)


def test_a_short_online_run_lowers_the_kl_on_held_out_text(mlm_corpus: Path, mlm_teacher: Path, data_path: Path,
                                                           tmp_path: Path) -> None:
    from transformers import AutoModelForMaskedLM

    dev = tmp_path / "wiki.txt"  # one text per line, as wikitext2_raw_test/sentences.txt
    dev.write_text("\n".join((data_path / "wikitext2_raw_test" / "sentences.txt").read_text(
        encoding="utf-8").splitlines()[:48]) + "\n\n", encoding="utf-8")
    out = tmp_path / "student"
    done = _train(out, "--input", str(mlm_corpus), "--teacher", str(mlm_teacher), "--student", str(mlm_teacher),
                  "--student-layers", "0,5", "--dev-input", str(dev), "--max-steps", "15", "--freeze-pos-embs")
    assert done.returncode == 0, done.stderr[-2000:]
    extra = _manifest(out)["extra"]
    assert extra["final_metrics"]["dev_kl"] < extra["untrained_metrics"]["dev_kl"]
    assert set(extra["teacher_metrics"]) >= {"dev_masked_accuracy", "dev_perplexity"}
    assert extra["dev_rows"] == 48  # the blank last line is no text
    assert extra["loss_weights"] == {"temperature": 2.0, "ce": 5.0, "mlm": 2.0, "cos": 1.0, "mse": 0.0}
    model = AutoModelForMaskedLM.from_pretrained(out / "final")
    assert model.config.num_hidden_layers == 2
    teacher = AutoModelForMaskedLM.from_pretrained(mlm_teacher / "final")
    assert torch.equal(model.bert.embeddings.position_embeddings.weight,  # --freeze-pos-embs
                       teacher.bert.embeddings.position_embeddings.weight)


def test_training_from_stored_topk_needs_no_teacher(topk_targets: Path, mlm_teacher: Path, tmp_path: Path) -> None:
    out = tmp_path / "offline"
    done = _train(out, "--targets", str(topk_targets), "--student", str(mlm_teacher), "--student-layers", "0,5",
                  "--dev-fraction", "0.2", "--max-steps", "15")
    assert done.returncode == 0, done.stderr[-2000:]
    extra = _manifest(out)["extra"]
    assert extra["teacher_source"] == "stored top-k" and extra["kl_positions"] == "masked"
    assert extra["loss_weights"]["cos"] == 0.0  # no teacher hidden states in the artifact
    assert extra["final_metrics"]["dev_kl"] < extra["untrained_metrics"]["dev_kl"]


def _refused(done: object, out: Path, *words: str) -> None:
    assert done.returncode == 2, done.stderr[-2000:]
    line = done.stderr.strip().splitlines()[-1]
    for word in words:
        assert word in line, line
    assert not (out / "manifest.json").exists() and not (out / "_run.json").exists()


def test_bad_inputs_are_one_line_errors_without_an_artifact(mlm_corpus: Path, mlm_teacher: Path,
                                                            topk_targets: Path, mpnet_path: str,
                                                            tmp_path: Path) -> None:
    out = tmp_path / "refused"
    online = ["--input", str(mlm_corpus), "--max-steps", "2"]
    # the vocabularies differ (MPNet's tokenizer against MiniLM's)
    _refused(_train(out, *online, "--teacher", str(mlm_teacher), "--student", "mpnet"), out, "vocabulary", "mpnet")
    # the teacher has no masked-LM head: a sentence-transformers package
    _refused(_train(out, *online, "--teacher", "minilm", "--student", str(mlm_teacher)), out, "prepare-teacher")
    # the top-k artifact was masked with another seed
    stored = ["--targets", str(topk_targets), "--student", str(mlm_teacher), "--student-layers", "0,5"]
    _refused(_train(out, *stored, "--mask-seed", "1"), out, "--mask-seed")
    # ... or made with another teacher
    other = tmp_path / "other-teacher"
    run_cli("prepare-teacher", "--model", "minilm", "--input", str(mlm_corpus), "--output", str(other), *LM,
            "--max-steps", "2", "--eval-steps", "0", "--save-steps", "0", "--dev-fraction", "0", check=True)
    _refused(_train(out, *stored, "--teacher", str(other)), out, "teacher", str(other))


def test_token_counts_of_another_vocabulary_are_refused(mlm_corpus: Path, mlm_teacher: Path, mpnet_path: str,
                                                        tmp_path: Path) -> None:
    counts = tmp_path / "counts-mpnet"
    run_cli("count-tokens", "--input", str(mlm_corpus), "--model", "mpnet", "--output", str(counts), check=True)
    out = tmp_path / "refused"
    _refused(_train(out, "--input", str(mlm_corpus), "--teacher", str(mlm_teacher), "--student", str(mlm_teacher),
                    "--token-counts", str(counts), "--max-steps", "2"), out, "--token-counts", "vocabulary")


@pytest.mark.slow
def test_zero3_over_two_ranks_distils_from_stored_topk(topk_targets: Path, mlm_teacher: Path, tmp_path: Path) -> None:
    """The method plugs into the shared loop: DeepSpeed ZeRO-3 shards the student (tied head included)."""
    from transformers import AutoModelForMaskedLM

    out = tmp_path / "zero3"
    done = _train(out, "--targets", str(topk_targets), "--student", str(mlm_teacher), "--student-layers", "0,5",
                  "--dev-fraction", "0.2", "--max-steps", "8", "--nproc-per-node", "2", "--deepspeed-stage", "3")
    assert done.returncode == 0, done.stderr[-3000:]
    extra = _manifest(out)["extra"]
    assert extra["world_size"] == 2 and extra["deepspeed"]
    assert extra["final_metrics"]["dev_kl"] < extra["untrained_metrics"]["dev_kl"]
    model = AutoModelForMaskedLM.from_pretrained(out / "final")
    assert model.config.num_hidden_layers == 2
    assert model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()


def test_train_encoder_adapts_the_encoder_too(mlm_corpus: Path, tmp_path: Path) -> None:
    from transformers import AutoModel, AutoModelForMaskedLM

    from distil_jobs.models.registry import resolve_model

    out = tmp_path / "adapted"
    run_cli("prepare-teacher", "--model", "minilm", "--input", str(mlm_corpus), "--output", str(out), *LM,
            "--train-encoder", "--lr", "1e-4", "--max-steps", "3", "--eval-steps", "0", "--save-steps", "0", check=True)
    extra = _manifest(out)["extra"]
    assert extra["train_encoder"] and extra["trainable_parameters"] > 20_000_000
    adapted = AutoModelForMaskedLM.from_pretrained(out / "final").bert.encoder.layer[0].attention.self.query.weight
    original = AutoModel.from_pretrained(resolve_model("minilm")).encoder.layer[0].attention.self.query.weight
    assert not torch.equal(adapted, original)
