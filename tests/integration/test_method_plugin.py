"""A method registered by a test trains through the real loop, checkpoints, tracking and publish.

`CosineOnly` below is a test fixture, not a shipped method: a cosine-only variant of embedding
distillation with one option of its own, written against the `Method` protocol alone. Nothing in
the loop, the runner, checkpoints, tracking or publishing changes for it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from train_helpers import STUDENT, make_targets

from distil_jobs.config import build_command, setting
from distil_jobs.errors import DistilError
from distil_jobs.jobs import JOBS
from distil_jobs.train.methods import METHODS, MethodSetup, Metric, TrainContext


@dataclasses.dataclass(kw_only=True, slots=True)
class CosineOptions:
    cosine_scale: float = setting(1.0, "Multiply the cosine loss by this.", fingerprint=True, min=0)


class CosineOnly:
    name: ClassVar[str] = "cosine-test"
    Options: ClassVar[type] = CosineOptions

    def __init__(self, ctx: TrainContext) -> None:
        self.ctx = ctx
        self.headline = Metric("dev_cos", higher_is_better=True)
        self.model: Any = None

    def setup(self) -> MethodSetup:
        from distil_jobs.train.methods.embedding_data import DataSpec, load_data
        from distil_jobs.train.student import build_student

        cfg = self.ctx.cfg
        data = load_data(DataSpec(cfg.targets, None, "final", None, None, True, cfg.max_rows, None, cfg.dev_fraction,
                                  cfg.seed))
        self.train, self.dev = data.train, data.dev
        self.student = build_student(cfg.student, target_dim=data.target_dim, layers=cfg.student_layers,
                                     projection=False, drop_normalize=False, max_length=cfg.max_length,
                                     device=self.ctx.device, attention=self.ctx.attention)
        return MethodSetup(self.student, len(self.train), len(self.dev), data.inputs, data.license,
                           {"note": "a test fixture"})

    def _embed(self, model: Any, texts: list[str]) -> torch.Tensor:
        feats = self.student.preprocess(texts) if hasattr(self.student, "preprocess") else self.student.tokenize(texts)
        return model(feats)["sentence_embedding"]

    def loss(self, rows: list[int]) -> torch.Tensor:
        target = torch.from_numpy(self.train.targets[rows])
        cos = F.cosine_similarity(self._embed(self.model, [self.train.texts[i] for i in rows]), target, dim=-1)
        return self.ctx.options.cosine_scale * (1 - cos).mean()

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        self.student.eval()
        try:
            emb = self._embed(self.student, self.dev.texts)
            return {"dev_cos": float(F.cosine_similarity(emb, torch.from_numpy(self.dev.targets), dim=-1).mean())}
        finally:
            self.student.train()

    def save(self, folder: str) -> None:
        self.student.save(folder)


@pytest.fixture()
def command():
    from distil_jobs.jobs import train

    METHODS.register(CosineOnly)
    try:
        # The command a user gets once a method module is registered: built from the registry.
        yield build_command("train-student", train.build_config(), train.run, train.__doc__ or "", set(JOBS),
                            train.validate)
    finally:
        METHODS.unregister(CosineOnly.name)


@pytest.fixture(scope="module")
def targets(tmp_path_factory, data_path) -> Path:
    from tests.conftest import run_cli

    return make_targets(run_cli, data_path, tmp_path_factory.mktemp("targets"), rows=120)


def test_a_method_registered_in_a_test_trains_checkpoints_tracks_and_publishes(command, targets, tmp_path):
    out = tmp_path / "student"
    args = ["--method", "cosine-test", "--targets", str(targets), *STUDENT, "--lr", "5e-4", "--max-steps", "4",
            "--save-steps", "2", "--dev-fraction", "0.2", "--cosine-scale", "2", "--output", str(out)]
    result = CliRunner().invoke(command, args)
    assert result.exit_code == 0, result.output + repr(result.exception)

    written = (out / "manifest.json").read_bytes()
    manifest = json.loads(written)
    extra = manifest["extra"]
    assert manifest["kind"] == "student-model" and extra["method"] == "cosine-test" and extra["note"] == "a test fixture"
    assert manifest["fingerprint"]["cosine_scale"] == 2.0 and "loss" not in manifest["config"]
    assert extra["headline"]["metric"] == "dev_cos"
    assert extra["headline"]["final"] > extra["headline"]["untrained"]  # the student learned
    assert (out / "checkpoints" / "step-2" / "complete.json").exists()  # the loop's checkpoints
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4]
    assert [r["step"] for r in rows if "dev_cos" in r] == [0, 4]
    assert (out / "training_curve.png").read_bytes()[:4] == b"\x89PNG"
    from sentence_transformers import SentenceTransformer

    assert SentenceTransformer(str(out / "final"), device="cpu").encode(["ẹ kú àárọ̀"]).shape == (1, 384)

    again = CliRunner().invoke(command, args)  # the run contract: a finished output is recognised
    assert again.exit_code == 0 and (out / "manifest.json").read_bytes() == written


@pytest.mark.parametrize(("method", "option", "owner"), [("cosine-test", ["--loss", "cosine"], "embedding"),
                                                         ("embedding", ["--cosine-scale", "3"], "cosine-test")])
def test_an_option_of_another_method_is_refused_naming_its_method(command, targets, tmp_path, method, option, owner):
    result = CliRunner().invoke(command, ["--method", method, "--targets", str(targets), *option,
                                          "--output", str(tmp_path / "s")])
    assert isinstance(result.exception, DistilError)
    assert f"belongs to --method {owner}, not --method {method}" in str(result.exception)
    assert not (tmp_path / "s").exists()


def test_method_help_shows_its_options_beside_the_shared_ones(command):
    shown = CliRunner().invoke(command, ["--method", "cosine-test", "--help"]).output
    assert "Options of --method cosine-test" in shown and "--cosine-scale" in shown
    assert "--batch-size" in shown and "--loss" not in shown
    every = CliRunner().invoke(command, ["--help"]).output
    assert "Options of --method embedding" in every and "Options of --method cosine-test" in every
