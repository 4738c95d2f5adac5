"""Evaluate teachers and students on MTEB tasks and write a comparison report.

Each (model, task) pair runs through mteb (`mteb.evaluate`); its result lands in mteb's own
format under OUTPUT/results/<label>/. When every pair is done, the job writes summary.json,
report.md (tasks × models, with each model's ratio to the reference) and scores.png, then the
manifest. Pairs already evaluated are skipped, so a rerun (or a bigger model list) only runs
what is missing.

\b
Teacher vs student on local data folders:
  distil-jobs evaluate-mteb --model mpnet --model out/student --output out/eval \\
      --local-task kind=sts,path=$DISTIL_DATA_DIR/stsb,name=STSB \\
      --local-task kind=bitext,path=$DISTIL_DATA_DIR/menyo20k,name=MenyoBitext,columns=en:yo
The ready config (six local tasks, mpnet vs minilm):
  distil-jobs evaluate-mteb --config jobs/evaluate.yaml --output out/eval
Named MTEB tasks (data from the Hub, or the HF cache when offline):
  distil-jobs evaluate-mteb --models minilm,mpnet --tasks Banking77Classification,STSBenchmark --output out/eval
Slurm array over (model, task) pairs, then the report:
  sbatch --array=0-3 ... distil-jobs evaluate-mteb --config jobs/evaluate.yaml --output out/eval
  distil-jobs evaluate-mteb --config jobs/evaluate.yaml --output out/eval --merge
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from itertools import groupby
from typing import Any

from distil_jobs.artifacts import MANIFEST, Location, open_location
from distil_jobs.artifacts.manifest import input_ref, new_manifest
from distil_jobs.artifacts.run import claim_output, completed, finish
from distil_jobs.config import config_dict, fingerprint_of, setting
from distil_jobs.data import license_of
from distil_jobs.errors import DistilError
from distil_jobs.evaluation.models import EvalModel, load_eval_model, resolve_models
from distil_jobs.evaluation.report import (
    CHART,
    REPORT,
    RESULTS,
    SUMMARY,
    build_summary,
    read_score,
    render_chart,
    render_markdown,
    result_file,
)
from distil_jobs.evaluation.specs import check_local_task, parse_local_task
from distil_jobs.evaluation.tasks import EvalTask, load_task, local_tasks, named_tasks
from distil_jobs.jobs import MTEB_REPORT
from distil_jobs.log import get_logger, log_metrics
from distil_jobs.shards import resolve_shard

NAME = "evaluate-mteb"
KIND = MTEB_REPORT
log = get_logger(NAME)


@dataclasses.dataclass(kw_only=True, slots=True)
class Config:
    models: list[str] = setting([], "Models to evaluate, in report order: alias (minilm, mpnet), folder, "
                                    "train-student output, hf://org/model or hub id. Repeat --model or "
                                    "give a,b,c.", aliases=("--model",))
    labels: list[str] = setting([], "Report label per model, in order (default: from the model's manifest, "
                                    "else its alias or folder name).", aliases=("--label",))
    tasks: list[str] = setting([], "Named MTEB tasks, e.g. Banking77Classification,STSBenchmark.",
                               aliases=("--task",))
    local_tasks: list[dict[str, Any] | str] = setting(
        [], "Task from a data folder: kind=classification|sts|bitext,path=DIR,name=NAME[,columns=A:B]"
            "[,split=test][,langs=eng-Latn]. Repeatable; in YAML a list of mappings or strings.",
        aliases=("--local-task",))
    output: str | None = setting(None, "Report artifact URI: a folder, s3://bucket/prefix or hf://datasets/org/name.")
    reference: str | None = setting(None, "Label of the model the others are compared with (default: the first).")
    overwrite: bool = setting(False, "Re-evaluate pairs that already have results.")
    merge: bool = setting(False, "Only build the report and manifest from the results of all shards; "
                                 "names the (model, task) pairs still missing.")
    max_test_rows: int | None = setting(None, "Subsample each local task's evaluation split to N rows (seeded; "
                                              "stratified by label for classification, as MTEB does).",
                                        fingerprint=True, min=2)
    batch_size: int = setting(32, "Texts per forward pass.", min=1)
    max_length: int | None = setting(None, "Truncate texts to this many tokens (default: the model's limit).",
                                     fingerprint=True, min=1)
    device: str = setting("auto", "auto, cpu, cuda or cuda:N.")
    num_shards: int | None = setting(None, "Total shards over (model, task) pairs (default: SLURM_ARRAY_TASK_COUNT, "
                                           "else 1).", min=1)
    shard_index: int | None = setting(None, "This shard (default: SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX, "
                                            "else 0).", min=0)


def validate(cfg: Config) -> None:
    if not cfg.output:
        raise DistilError("--output is required: where to write the report (a folder, s3:// or hf:// URI)")
    if not cfg.models:
        raise DistilError("no model to evaluate: pass --model URI (repeatable) or --models a,b")
    if not cfg.tasks and not cfg.local_tasks:
        raise DistilError("no task to run: pass --tasks NAME[,NAME] and/or --local-task kind=...,path=DIR,name=NAME")
    specs = [parse_local_task(raw) for raw in cfg.local_tasks]
    names = [*cfg.tasks, *(s.name for s in specs)]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DistilError(f"task name '{dupes[0]}' is used twice: give each local task its own name=")
    for spec in specs:
        check_local_task(spec)


@dataclasses.dataclass(slots=True)
class Plan:
    models: list[EvalModel]
    tasks: list[EvalTask]
    reference: str

    @property
    def pairs(self) -> list[tuple[EvalModel, EvalTask]]:
        return [(m, t) for m in self.models for t in self.tasks]

    def pair_ids(self) -> list[str]:
        return [f"{m.label}/{t.name}" for m, t in self.pairs]


def plan(cfg: Config) -> Plan:
    models = resolve_models(cfg.models, cfg.labels)
    tasks = named_tasks(cfg.tasks) + local_tasks([parse_local_task(raw) for raw in cfg.local_tasks])
    labels = [m.label for m in models]
    reference = cfg.reference or labels[0]
    if reference not in labels:
        raise DistilError(f"--reference {reference} is not a model label (labels: {', '.join(labels)})")
    return Plan(models, tasks, reference)


def run(cfg: Config) -> None:
    assert cfg.output
    out = open_location(cfg.output)
    p = plan(cfg)
    if cfg.merge:
        finalize(out, cfg, p, required=True)
        return
    manifest = completed(out, KIND)
    if manifest and not cfg.overwrite and _covers(manifest, p):
        log.info("%s already holds this report (manifest present): nothing to do", out.uri)
        return

    shard = resolve_shard(cfg.shard_index, cfg.num_shards)
    start, end = shard.row_range(len(p.pairs))
    mine = p.pairs[start:end]
    pending = [(m, t) for m, t in mine if cfg.overwrite or result_file(out, m.label, t.name) is None]
    for m, t in mine:
        if (m, t) not in pending:
            log.info("skip %s × %s: already evaluated (pass --overwrite to rerun)", m.label, t.name)
    log.info("shard %d/%d (%s): %d of %d (model, task) pairs, %d to run", shard.index, shard.count, shard.source,
             len(mine), len(p.pairs), len(pending))

    # Everything that can fail on bad input happens before the first write.
    for t in {t.name: t for _, t in pending}.values():
        load_task(t, cfg.max_test_rows)
    out.ensure_writable()
    # Results are reused by (label, task name): refuse to mix in results computed on other data or caps.
    claim_output(out, NAME, fingerprint(cfg, p), growable=("tasks",), reset=cfg.overwrite, fix=", or --overwrite")
    if manifest:
        log.info("the request differs from the report in %s (or --overwrite): the report will be rebuilt", out.uri)
        out.delete(MANIFEST)

    t0 = time.perf_counter()
    for model, group in groupby(pending, key=lambda pair: pair[0]):
        group_tasks = [t for _, t in group]
        log.info("load model %s (%s)", model.label, model.uri)
        st = load_eval_model(model, cfg.device, cfg.max_length)
        for task in group_tasks:
            _evaluate_pair(out, cfg, st, model, task)
        del st
    log_metrics(log, "shard", shard=shard.tag, pairs=len(mine), evaluated=len(pending),
                seconds=round(time.perf_counter() - t0, 2))
    finalize(out, cfg, p, required=False)


def fingerprint(cfg: Config, p: Plan) -> dict[str, Any]:
    """What the results depend on: the caps, and each task's data (new tasks may join the report)."""
    return fingerprint_of(cfg) | {"tasks": {t.name: t.spec.as_dict() if t.spec else "mteb" for t in p.tasks}}


def _covers(manifest: dict[str, Any], p: Plan) -> bool:
    extra = manifest.get("extra") or {}
    return extra.get("pairs") == p.pair_ids() and extra.get("reference") == p.reference


def _evaluate_pair(out: Location, cfg: Config, st: Any, model: EvalModel, task: EvalTask) -> None:
    """Run one pair in a private mteb cache, then publish its result files atomically into the output."""
    from distil_jobs.evaluation import import_mteb

    mteb = import_mteb()
    mteb_task = load_task(task, cfg.max_test_rows)
    with tempfile.TemporaryDirectory(prefix="distil-mteb-") as stage:
        tc = time.perf_counter()
        result = mteb.evaluate(st, mteb_task, cache=mteb.ResultCache(stage),
                               overwrite_strategy="always" if cfg.overwrite else "only-missing",
                               encode_kwargs={"batch_size": cfg.batch_size, "show_progress_bar": True},
                               show_progress_bar=True)
        secs = time.perf_counter() - tc
        score = float(result.task_results[0].get_score())
        root = os.path.join(stage, RESULTS)
        files = []
        for dirpath, _, names in os.walk(root):
            for n in names:
                local = os.path.join(dirpath, n)
                files.append((local, os.path.relpath(local, stage).replace(os.sep, "/")))
        # The task's JSON last: its presence is what marks the pair as done.
        files.sort(key=lambda f: f[1].endswith(f"/{task.name}.json"))
        out.put_files(files, message=f"distil-jobs: mteb {model.label} {task.name}")
    log_metrics(log, "pair", model=model.label, task=task.name, main_score=task.main_score,
                score=round(score, 5), seconds=round(secs, 2))


def finalize(out: Location, cfg: Config, p: Plan, required: bool) -> None:
    """Write the report and then the manifest once every pair has a result."""
    files = {(m.label, t.name): result_file(out, m.label, t.name) for m, t in p.pairs}
    missing = [f"{label} × {task}" for (label, task), rel in files.items() if rel is None]
    if missing:
        if required:
            raise DistilError(f"{len(missing)} of {len(files)} (model, task) pair(s) have no result yet: "
                              f"{', '.join(missing[:10])}; run the shards (without --merge) first")
        log.info("waiting for %d pair(s) on other shards before the report is written", len(missing))
        return
    previous = completed(out, KIND)
    if previous and _covers(previous, p):
        log.info("%s already holds this report (manifest present)", out.uri)
        return
    if previous:  # e.g. --merge with another --reference: the old manifest no longer describes the report
        out.delete(MANIFEST)
    scores: dict[str, dict[str, Any]] = {t.name: {} for t in p.tasks}
    for (label, task), rel in files.items():
        assert rel is not None
        scores[task][label] = read_score(out, rel)
    models = [{"label": m.label, "uri": m.uri, "path": m.path} for m in p.models]
    summary = build_summary(models, [t.describe() for t in p.tasks], scores, p.reference)
    for label, mean in summary["mean"].items():
        log_metrics(log, "model", model=label, mean_score=round(mean, 5),
                    ratio_to_reference=round(summary["mean_ratio"][label], 4))
    licenses = sorted({lic for t in p.tasks if t.spec and (lic := license_of(t.spec.path))})
    inputs = [input_ref(m.uri, "model") for m in p.models]
    inputs += [input_ref(t.spec.path, "task-data") for t in p.tasks if t.spec]
    manifest = new_manifest(
        KIND, NAME, config_dict(cfg) | {"num_shards": None, "shard_index": None, "merge": False},
        inputs, len(files), license="; ".join(licenses) or None, fingerprint=fingerprint(cfg, p),
        pairs=p.pair_ids(), reference=p.reference, models=models, tasks=summary["tasks"],
        mean=summary["mean"], mean_ratio=summary["mean_ratio"], report=REPORT, chart=CHART, summary=SUMMARY,
    )
    with tempfile.TemporaryDirectory(prefix="distil-report-") as d:
        staged = []
        for rel, data in ((SUMMARY, json.dumps(summary, indent=2, sort_keys=True).encode()),
                          (REPORT, render_markdown(summary).encode()), (CHART, render_chart(summary))):
            path = os.path.join(d, rel)
            with open(path, "wb") as f:
                f.write(data)
            staged.append((path, rel))
        if finish(out, manifest, staged, message="distil-jobs: mteb report"):
            log.info("report written: %s/%s (%d pairs); manifest last", out.uri, REPORT, len(files))
