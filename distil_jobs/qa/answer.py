"""Answer questions with a published QA student (or a prepared teacher): the same features and
n-best search as evaluation, in a few lines of Python.

transformers 5 removed `pipeline("question-answering")`; the published folder is a plain
AutoModelForQuestionAnswering with its tokenizer, so on transformers 4 that pipeline loads it too.

    from distil_jobs.qa.answer import QuestionAnswerer
    qa = QuestionAnswerer("out/qa-student/final")
    qa("Who won Super Bowl 50?", context)   # -> "Denver Broncos"
"""

from __future__ import annotations

import numpy as np

from distil_jobs.qa.features import make_features
from distil_jobs.qa.postprocess import best_answers
from distil_jobs.qa.squad import QaExamples


class QuestionAnswerer:
    def __init__(self, model: str, max_length: int = 384, doc_stride: int = 128, device: str = "cpu") -> None:
        import torch

        from distil_jobs.qa.models import load_qa

        self.device = torch.device(device)
        model_, self.tokenizer = load_qa(model, "model")
        self.model = model_.eval().to(self.device)
        self.max_length, self.doc_stride = max_length, doc_stride

    def __call__(self, question: str, context: str, max_answer_length: int = 30) -> str:
        return self.answer_all([question], [context], max_answer_length)[0]

    def answer_all(self, questions: list[str], contexts: list[str], max_answer_length: int = 30) -> list[str]:
        from distil_jobs.qa.models import feature_logits

        n = len(questions)
        examples = QaExamples([str(i) for i in range(n)], [""] * n, list(contexts), list(questions), [[]] * n,
                              [[]] * n, np.arange(n))
        features = make_features(self.tokenizer, examples, self.max_length, self.doc_stride)
        logits = feature_logits(self.model, features, int(self.tokenizer.pad_token_id or 0), 32, self.device)
        return best_answers(examples, features, *logits, max_answer_length=max_answer_length)
