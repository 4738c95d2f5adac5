"""QA distillation end to end on real SQuAD articles and a real encoder (MiniLM-L6): prepare-teacher
fits a QA head, precompute-embeddings stores its logits, train-student distils them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.integration.train_helpers import losses

QA = ["--max-length", "64", "--doc-stride", "32"]
TRAIN = [*QA, "--batch-size", "16", "--eval-steps", "0", "--save-steps", "0"]
HELD_OUT = "Amazon_rainforest"


def _manifest(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text())


@pytest.fixture(scope="session")
def squad_small(data_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three whole articles' first questions: two to train on, one held out."""
    want = {"Warsaw": 120, "Normans": 100, HELD_OUT: 60}
    rows, seen = [], dict.fromkeys(want, 0)
    with open(data_path / "squad_v1.1_dev" / "dev.jsonl", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if seen.get(row["title"], 10**9) < want.get(row["title"], 0):
                rows.append(line)
                seen[row["title"]] += 1
    path = tmp_path_factory.mktemp("qa") / "squad.jsonl"
    path.write_text("".join(rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def qa_teacher(squad_small: Path) -> Path:
    out = squad_small.parent / "teacher"
    run_cli("prepare-teacher", "--task", "qa", "--model", "minilm", "--input", str(squad_small), "--eval-titles",
            HELD_OUT, "--output", str(out), *TRAIN, "--max-steps", "30", "--lr", "1e-4", check=True)
    return out


@pytest.fixture(scope="session")
def qa_logits(squad_small: Path, qa_teacher: Path) -> Path:
    out = squad_small.parent / "logits"
    run_cli("precompute-embeddings", "--output-type", "qa_logits", "--input", str(squad_small), "--teacher",
            str(qa_teacher), *QA, "--batch-size", "64", "--output", str(out), check=True)
    return out


def _train(out: Path, *args: str):
    return run_cli("train-student", "--method", "qa", "--output", str(out), *TRAIN, "--eval-titles", HELD_OUT, *args)


def test_prepare_teacher_fits_a_qa_head_that_lowers_the_held_out_loss(qa_teacher: Path) -> None:
    from transformers import AutoModelForQuestionAnswering

    manifest = _manifest(qa_teacher)
    extra = manifest["extra"]
    assert manifest["kind"] == "teacher-model" and extra["task"] == "qa"
    assert extra["final_metrics"]["dev_qa_loss"] < extra["untrained_metrics"]["dev_qa_loss"]
    assert extra["eval_articles"] == [HELD_OUT] and HELD_OUT not in extra["train_articles"]
    _, info = AutoModelForQuestionAnswering.from_pretrained(qa_teacher / "final", output_loading_info=True)
    assert not info["missing_keys"]


def test_distilling_stored_logits_lowers_the_held_out_loss_and_the_student_answers_questions(
        qa_logits: Path, qa_teacher: Path, squad_small: Path, tmp_path: Path) -> None:
    from distil_jobs.qa.answer import QuestionAnswerer

    out = tmp_path / "student"
    done = _train(out, "--targets", str(qa_logits), "--student", str(qa_teacher), "--student-layers", "0,2,4",
                  "--max-steps", "20")
    assert done.returncode == 0, done.stderr[-2000:]
    extra = _manifest(out)["extra"]
    assert extra["teacher_source"] == "stored logits"
    assert extra["final_metrics"]["dev_distill_loss"] < extra["untrained_metrics"]["dev_distill_loss"]
    assert set(extra["teacher_metrics"]) == {"dev_exact_match", "dev_f1"}  # from the stored held-out logits
    assert {"dev_exact_match", "dev_f1"} <= set(extra["final_metrics"])
    row = json.loads(squad_small.read_text(encoding="utf-8").splitlines()[-1])
    answer = QuestionAnswerer(str(out / "final"))(row["question"], row["context"])
    assert answer and answer in row["context"]
    _pipeline_answers(out / "final", row)


def _pipeline_answers(folder: Path, row: dict) -> None:
    """transformers' own QA pipeline loads the folder, where the installed transformers still has one."""
    from transformers import pipeline

    try:
        answerer = pipeline("question-answering", model=str(folder))
    except KeyError as e:  # transformers 5 removed the task
        assert "question-answering has been removed" in str(e)
        return
    answer = answerer(question=row["question"], context=row["context"])
    assert answer["answer"] in row["context"]


def test_online_and_stored_teacher_logits_give_the_same_first_step_loss(qa_logits: Path, qa_teacher: Path,
                                                                        squad_small: Path, tmp_path: Path) -> None:
    common = ["--student", str(qa_teacher), "--student-layers", "0,2", "--max-steps", "1", "--log-steps", "1"]
    stored, online = tmp_path / "stored", tmp_path / "online"
    for out, source in ((stored, ["--targets", str(qa_logits)]),
                        (online, ["--input", str(squad_small), "--teacher", str(qa_teacher)])):
        done = _train(out, *source, *common)
        assert done.returncode == 0, done.stderr[-2000:]
    assert losses(stored)[1] == pytest.approx(losses(online)[1], rel=2e-3)  # fp16 storage
    assert _manifest(online)["extra"]["teacher_metrics"] == pytest.approx(_manifest(stored)["extra"]["teacher_metrics"],
                                                                          abs=2.0)


def _refused(done, out: Path, *words: str) -> None:
    assert done.returncode == 2, done.stderr[-2000:]
    line = done.stderr.strip().splitlines()[-1]
    for word in words:
        assert word in line, line
    assert not (out / "manifest.json").exists() and not (out / "_run.json").exists()


def test_bad_inputs_are_one_line_errors_without_an_artifact(qa_logits: Path, qa_teacher: Path, squad_small: Path,
                                                            mpnet_path: str, tmp_path: Path) -> None:
    out = tmp_path / "refused"
    rows = [json.loads(line) for line in squad_small.read_text(encoding="utf-8").splitlines()]
    shifted, unanswered = tmp_path / "shifted.jsonl", tmp_path / "unanswered.jsonl"
    rows[5]["answers"]["answer_start"] = [s + 2 for s in rows[5]["answers"]["answer_start"]]
    shifted.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    del rows[5]["answers"]
    unanswered.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    online = ["--teacher", str(qa_teacher), "--student", str(qa_teacher), "--max-steps", "2"]
    _refused(_train(out, "--input", str(shifted), *online), out, "row 5", "not in its context")
    _refused(_train(out, "--input", str(unanswered), *online), out, "row 5", "no answers")
    _refused(run_cli("precompute-embeddings", "--output-type", "qa_logits", "--input", str(shifted), "--teacher",
                     str(qa_teacher), "--output", str(out)), out, "not in its context")
    # stored logits over MiniLM's tokens for an MPNet student
    _refused(_train(out, "--targets", str(qa_logits), "--student", "mpnet", "--max-steps", "2"), out, "tokenizer",
             "mpnet")
    # a held-out article that is also a training article
    _refused(run_cli("prepare-teacher", "--task", "qa", "--model", "minilm", "--input", str(squad_small),
                     "--output", str(out), "--eval-titles", HELD_OUT, "--train-titles", f"Warsaw,{HELD_OUT}"),
             out, "--eval-titles", HELD_OUT)
    # a teacher without a trained QA head (a sentence-transformers package)
    _refused(_train(out, "--input", str(squad_small), "--teacher", "minilm", "--student", "minilm"), out,
             "prepare-teacher --task qa")
    # stored logits cut with another --max-length
    _refused(_train(out, "--targets", str(qa_logits), "--student", str(qa_teacher), "--max-length", "96"), out,
             "--max-length 64")


@pytest.mark.slow
def test_zero3_over_two_ranks_distils_from_stored_logits(qa_logits: Path, qa_teacher: Path, tmp_path: Path) -> None:
    """The method plugs into the shared loop: DeepSpeed ZeRO-3 shards the student and gathers it to save."""
    from transformers import AutoModelForQuestionAnswering

    out = tmp_path / "zero3"
    done = _train(out, "--targets", str(qa_logits), "--student", str(qa_teacher), "--student-layers", "0,2,4",
                  "--max-steps", "8", "--nproc-per-node", "2", "--deepspeed-stage", "3")
    assert done.returncode == 0, done.stderr[-3000:]
    extra = _manifest(out)["extra"]
    assert extra["world_size"] == 2 and extra["deepspeed"]
    assert extra["final_metrics"]["dev_distill_loss"] < extra["untrained_metrics"]["dev_distill_loss"]
    _, info = AutoModelForQuestionAnswering.from_pretrained(out / "final", output_loading_info=True)
    assert not info["missing_keys"]
