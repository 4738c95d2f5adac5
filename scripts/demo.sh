#!/usr/bin/env bash
# The embedded default, end to end on CPU with local folders: MENYO-20k English-Yoruba pairs →
# MiniLM teacher embeddings → MiniLM learns Yoruba and keeps its English → MTEB report.
# Run through `make demo` (which sets up the venv first). A rerun skips what is already done.
set -euo pipefail
DATA="${DISTIL_DATA_DIR:-../shared/data}"
ROWS="${DEMO_ROWS:-3000}"
OUT="${DEMO_OUT:-out/demo}"
if [ ! -f "$DATA/menyo20k/train.jsonl" ]; then
  cat >&2 <<MSG
error: the demo data is not at $DATA/menyo20k/train.jsonl.
Set DISTIL_DATA_DIR to the shared data folder, or get MENYO-20k yourself:
  git clone https://github.com/uds-lsv/menyo-20k_MT  (data/train.tsv; CC BY-NC 4.0)
and convert it to jsonl with the fields id, en, yo (one JSON object per line).
The README's "Data" section lists every dataset the tests and benchmarks use, with its source.
MSG
  exit 2
fi
export DEMO_ROWS="$ROWS" DEMO_OUT="$OUT"
# One pipeline file (jobs/demo.yaml): the steps are linked by their outputs, checked before anything
# runs, and skipped on a rerun when done with the same settings.
distil-jobs pipeline run jobs/demo.yaml --launcher local
echo
distil-jobs pipeline status jobs/demo.yaml
echo
distil-jobs inspect --summary "$OUT/student"
echo
cat "$OUT/report/report.md"
echo
echo "Artifacts: $OUT/embeddings (teacher embeddings), $OUT/student/final (SentenceTransformer student,"
echo "training curve $OUT/student/training_curve.png), $OUT/report (MTEB report, chart $OUT/report/scores.png)."
