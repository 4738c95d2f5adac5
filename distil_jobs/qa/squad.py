"""SQuAD-format data: the official nested JSON or flat rows (jsonl, parquet, an artifact, ...) with
`context`, `question` and `answers {text, answer_start}` (the Hugging Face `squad` layout), and the
split into training and held-out articles.

Every gold answer must sit at its `answer_start` in its context: a shifted offset would train the
model on the wrong span and score it against the wrong text, so it is refused with its row. The
held-out set is whole articles (`title`), never questions: paragraphs of one article share facts
and phrasing, and a question-level split would score memory, not reading.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import pyarrow as pa

from distil_jobs.errors import DistilError

REQUIRED = ("context", "question", "answers")


@dataclasses.dataclass(slots=True)
class QaExamples:
    ids: list[str]
    titles: list[str]
    contexts: list[str]
    questions: list[str]
    answers: list[list[str]]
    starts: list[list[int]]
    row_ids: np.ndarray  # each example's row number in its source (what stored teacher logits are keyed by)

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, idx: np.ndarray | list[int]) -> QaExamples:
        idx = np.asarray(idx, dtype=np.int64)
        pick = (lambda xs: [xs[i] for i in idx])  # noqa: E731
        return QaExamples(pick(self.ids), pick(self.titles), pick(self.contexts), pick(self.questions),
                          pick(self.answers), pick(self.starts), self.row_ids[idx])


def _nested(raw: bytes) -> list[dict[str, Any]] | None:
    """The official file's rows ({"version", "data": [{title, paragraphs: [{context, qas}]}]}), else None."""
    if not raw.lstrip().startswith(b"{"):
        return None
    try:
        doc = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        return None
    rows = []
    for article in doc["data"]:
        for paragraph in article.get("paragraphs", []):
            for qa in paragraph.get("qas", []):
                answers = qa.get("answers")
                rows.append({"id": qa.get("id"), "title": article.get("title"), "context": paragraph.get("context"),
                             "question": qa.get("question"),
                             "answers": None if answers is None else
                             {"text": [a.get("text") for a in answers],
                              "answer_start": [a.get("answer_start") for a in answers]}})
    return rows


def read_squad(uri: str) -> pa.Table:
    """A flat table (id, title, context, question, answers) from any SQuAD-format URI."""
    from distil_jobs.data import read_table

    if uri.endswith(".json"):
        from distil_jobs.artifacts.location import open_location

        loc = open_location(uri)
        rows = _nested(loc.read_bytes("")) if loc.exists() else None
        if rows is not None:
            if not rows:
                raise DistilError(f"{uri} holds no questions (an empty 'data' list)")
            return pa.Table.from_pylist(rows)
    return read_table(uri)


def examples_of(table: pa.Table, uri: str) -> QaExamples:
    """Checked examples: bad rows fail naming the first one and the fix."""
    missing = [c for c in REQUIRED if c not in table.column_names]
    if missing:
        raise DistilError(f"{uri} has no '{missing[0]}' field (columns: {', '.join(table.column_names)}): QA data "
                          "needs context, question and answers {text, answer_start} (SQuAD format)")
    n = table.num_rows
    if n == 0:
        raise DistilError(f"{uri} has no rows")
    contexts, questions = table.column("context").to_pylist(), table.column("question").to_pylist()
    answers = table.column("answers").to_pylist()
    ids = [str(x) for x in table.column("id").to_pylist()] if "id" in table.column_names else [str(i) for i in range(n)]
    titles = ([str(t) if t is not None else "" for t in table.column("title").to_pylist()]
              if "title" in table.column_names else [""] * n)
    texts: list[list[str]] = []
    starts: list[list[int]] = []
    for i in range(n):
        where = f"{uri} row {i} (id {ids[i]})"
        if not isinstance(contexts[i], str) or not contexts[i].strip():
            raise DistilError(f"{where} has an empty context: drop the row or fill it in")
        if not isinstance(questions[i], str) or not questions[i].strip():
            raise DistilError(f"{where} has an empty question: drop the row or fill it in")
        got = _answers(answers[i], where)
        for text, start in zip(*got, strict=True):
            if contexts[i][start:start + len(text)] != text:
                raise DistilError(f"{where}: answer {text[:60]!r} is not in its context at answer_start {start}: fix "
                                  "answer_start (a character offset into the context) or the answer text")
        texts.append(got[0])
        starts.append(got[1])
    row_ids = (table.column("row_idx").to_numpy().astype(np.int64) if "row_idx" in table.column_names
               else np.arange(n, dtype=np.int64))
    return QaExamples(ids, titles, contexts, questions, texts, starts, row_ids)


def _answers(value: Any, where: str) -> tuple[list[str], list[int]]:
    if not isinstance(value, dict) or value.get("text") is None or value.get("answer_start") is None:
        raise DistilError(f"{where} has no answers: give answers {{text: [...], answer_start: [...]}} (SQuAD format)")
    texts, starts = list(value["text"]), list(value["answer_start"])
    if not texts:
        raise DistilError(f"{where} has an empty answers list: unanswerable (SQuAD v2) questions are not supported; "
                          "drop them")
    if len(texts) != len(starts):
        raise DistilError(f"{where}: {len(texts)} answer texts but {len(starts)} answer_start values: give one "
                          "start per answer")
    if not all(isinstance(t, str) and t for t in texts) or not all(isinstance(s, int) and s >= 0 for s in starts):
        raise DistilError(f"{where}: answers must be non-empty texts with character offsets answer_start >= 0")
    return texts, starts


def load_examples(uri: str) -> QaExamples:
    return examples_of(read_squad(uri), uri)


def split_titles(titles: list[str], eval_titles: list[str], train_titles: list[str], eval_fraction: float,
                 seed: int, uri: str) -> tuple[set[str], set[str]]:
    """(training titles, held-out titles). Named titles must exist; the two sets never overlap."""
    known = list(dict.fromkeys(titles))  # in order of appearance
    if known == [""]:
        raise DistilError(f"{uri} has no 'title' field: the held-out set is whole articles; add titles, or pass "
                          "--dev-input with held-out data")
    for flag, named in (("--eval-titles", eval_titles), ("--train-titles", train_titles)):
        unknown = sorted(set(named) - set(known))
        if unknown:
            raise DistilError(f"{flag}: {unknown[0]!r} is not an article of {uri} (e.g. {known[0]!r}); titles are "
                              "the data's 'title' values")
    overlap = sorted(set(eval_titles) & set(train_titles))
    if overlap:
        raise DistilError(f"--eval-titles and --train-titles share {len(overlap)} article(s), e.g. {overlap[0]!r}: a "
                          "held-out article cannot be trained on; name each article once")
    if eval_titles:
        held = set(eval_titles)
    else:
        pool = [t for t in known if t not in set(train_titles)]
        count = max(1, round(eval_fraction * len(known)))
        if not pool or count > len(pool) or eval_fraction <= 0:
            raise DistilError(f"no articles of {uri} left to hold out (--eval-fraction {eval_fraction}, {len(known)} "
                              "articles): pass --eval-titles or a smaller --train-titles")
        order = np.random.default_rng(seed).permutation(len(pool))
        held = {pool[i] for i in sorted(order[:count])}
    train = set(train_titles) if train_titles else set(known) - held
    if not train:
        raise DistilError(f"every article of {uri} is held out: name fewer --eval-titles")
    return train, held
