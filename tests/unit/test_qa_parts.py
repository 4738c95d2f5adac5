"""QA building blocks on real SQuAD rows and a real tokenizer: the span round trip, the official
metric's normalisation, post-processing, the loss and the article split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from distil_jobs.errors import DistilError
from distil_jobs.qa.features import make_features
from distil_jobs.qa.losses import qa_kd_loss, span_kl
from distil_jobs.qa.metrics import normalize_answer, squad_scores
from distil_jobs.qa.postprocess import best_answers
from distil_jobs.qa.squad import examples_of, load_examples, read_squad, split_titles


@pytest.fixture(scope="module")
def squad200(data_path: Path):
    return load_examples(str(data_path / "squad_v1.1_dev" / "dev.jsonl")).subset(np.arange(0, 2000, 10))


@pytest.fixture(scope="module")
def tokenizer(minilm_path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path)


def _one_hot(features, which: np.ndarray) -> list[np.ndarray]:
    return [np.where(np.arange(len(ids)) == w, 10.0, 0.0) for ids, w in zip(features.input_ids, which, strict=True)]


def test_token_spans_recover_every_gold_answer_of_200_examples(squad200, tokenizer) -> None:
    """Long contexts become several 64-token features; every answer lies in some feature's gold span,
    and decoding the gold spans back through the offsets gives the answers."""
    features = make_features(tokenizer, squad200, max_length=64, doc_stride=24)
    assert len(features) > 2 * len(squad200)  # the windows overlap: many features per example
    assert features.lengths().max() <= 64
    has_answer = features.start != 0
    assert set(features.example[has_answer]) == set(range(len(squad200)))
    for f in np.flatnonzero(has_answer):
        ex, span = features.example[f], features.offsets[f]
        text = squad200.contexts[ex][span[features.start[f], 0]:span[features.end[f], 1]]
        gold = squad200.answers[ex][0]
        assert gold in text  # the smallest token span around the answer
        # wider only where the annotator cut a word: "gold" inside "golden", "8" inside "18"
        assert text == gold or len(text.split()) == len(gold.split())
    decoded = best_answers(squad200, features, _one_hot(features, features.start), _one_hot(features, features.end))
    assert squad_scores(decoded, squad200.answers)["exact_match"] >= 90.0
    assert sum(d == a[0] for d, a in zip(decoded, squad200.answers, strict=True)) >= 0.9 * len(squad200)


def test_gold_answers_score_100_and_normalisation_follows_the_official_script(squad200) -> None:
    assert squad_scores([a[0] for a in squad200.answers], squad200.answers) == {"exact_match": 100.0, "f1": 100.0}
    assert normalize_answer("The  Denver Broncos!") == "denver broncos"
    assert normalize_answer("an apple, a pear") == "apple pear"
    assert normalize_answer("theatre") == "theatre"  # articles are whole words only
    assert normalize_answer("  Santa\tClara,\nCalifornia. ") == "santa clara california"
    scores = squad_scores(["Denver", "the Broncos"], [["Denver Broncos"], ["Broncos", "Denver Broncos"]])
    assert scores["exact_match"] == 50.0 and scores["f1"] == pytest.approx(100 * (2 / 3 + 1) / 2)


def test_post_processing_respects_the_max_answer_length_and_the_context(squad200, tokenizer) -> None:
    sub = squad200.subset(np.arange(5))
    features = make_features(tokenizer, sub, max_length=128, doc_stride=32)
    question_token = [int(np.flatnonzero(span[:, 0] < 0)[1]) for span in features.offsets]  # after CLS
    starts = [np.where(np.arange(len(s)) == q, 50.0, 0.0) for s, q in zip(features.offsets, question_token,
                                                                          strict=True)]
    answers = best_answers(sub, features, starts, starts, n_best=20, max_answer_length=3)
    for answer, context in zip(answers, sub.contexts, strict=True):
        assert answer and answer in context and len(answer.split()) <= 3  # never the question


def test_kl_is_zero_against_itself_and_scaled_by_t_squared() -> None:
    torch.manual_seed(0)
    s, t = torch.randn(4, 10), torch.randn(4, 10)
    mask = torch.ones(4, 10, dtype=torch.bool)
    mask[:, 7:] = False
    assert float(span_kl(s, s, mask, 2.0)) == pytest.approx(0.0, abs=1e-6)
    t_padded = t.clone()
    t_padded[:, 7:] = 99.0  # padding never counts
    assert float(span_kl(s, t_padded, mask, 2.0)) == pytest.approx(float(span_kl(s, t, mask, 2.0)), rel=1e-5)
    gold = torch.tensor([1, 2, 3, 0])
    both = qa_kd_loss(s, s, t, t, gold, gold, mask, 2.0, 0.5, 0.5)
    kl_only = qa_kd_loss(s, s, t, t, gold, gold, mask, 2.0, 1.0, 0.0)
    ce_only = qa_kd_loss(s, s, t, t, gold, gold, mask, 2.0, 0.0, 1.0)
    assert float(both) == pytest.approx(0.5 * float(kl_only) + 0.5 * float(ce_only), rel=1e-5)


def _rows(data_path: Path, n: int) -> list[dict]:
    with open(data_path / "squad_v1.1_dev" / "dev.jsonl", encoding="utf-8") as f:
        return [json.loads(next(f)) for _ in range(n)]


def test_the_official_nested_json_reads_as_the_flat_rows(data_path: Path) -> None:
    nested = load_examples(str(data_path / "squad_v1.1_dev" / "orig" / "dev-v1.1.json"))
    flat = _rows(data_path, 3)
    assert len(nested) == 10570
    assert nested.ids[:3] == [r["id"] for r in flat] and nested.titles[0] == flat[0]["title"]
    assert nested.answers[2] == flat[2]["answers"]["text"]


@pytest.mark.parametrize("change, words", [
    (lambda r: r["answers"].update(answer_start=[s + 3 for s in r["answers"]["answer_start"]]),
     ["is not in its context", "answer_start", "row 1"]),
    (lambda r: r.pop("answers"), ["no answers", "row 1"]),
    (lambda r: r["answers"].update(text=[], answer_start=[]), ["empty answers list", "SQuAD v2"]),
    (lambda r: r.update(context=""), ["empty context"]),
])
def test_bad_rows_are_named_with_their_fix(data_path: Path, tmp_path: Path, change, words) -> None:
    rows = _rows(data_path, 3)
    change(rows[1])
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with pytest.raises(DistilError) as e:
        examples_of(read_squad(str(path)), str(path))
    for word in words:
        assert word in str(e.value)


def test_a_missing_answers_column_is_named(data_path: Path, tmp_path: Path) -> None:
    path = tmp_path / "noanswers.jsonl"
    path.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "answers"}) + "\n"
                            for r in _rows(data_path, 3)), encoding="utf-8")
    with pytest.raises(DistilError, match="no 'answers' field"):
        examples_of(read_squad(str(path)), str(path))


def test_articles_split_whole_and_never_overlap() -> None:
    titles = ["a"] * 3 + ["b"] * 2 + ["c"] * 4 + ["d"]
    train, held = split_titles(titles, [], [], 0.25, seed=0, uri="x")
    assert len(held) == 1 and not train & held and train | held == set("abcd")
    assert split_titles(titles, [], [], 0.25, seed=0, uri="x") == (train, held)  # fixed by the seed
    assert split_titles(titles, ["b"], ["a", "c"], 0.25, 0, "x") == ({"a", "c"}, {"b"})
    with pytest.raises(DistilError, match="share 1 article"):
        split_titles(titles, ["b"], ["a", "b"], 0.25, 0, "x")
    with pytest.raises(DistilError, match="'z' is not an article"):
        split_titles(titles, ["z"], [], 0.25, 0, "x")
