#!/usr/bin/env bash
# The embedded default, end to end: MENYO-20k English-Yoruba pairs → MiniLM teacher embeddings
# on CPU into a local folder artifact. Run through `make demo` (which sets up the venv first).
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
echo "== precompute-embeddings: $ROWS MENYO-20k pairs, teacher minilm, CPU → $OUT/embeddings"
distil-jobs precompute-embeddings --input "$DATA/menyo20k/train.jsonl" --text-column en --pair-column yo \
  --max-rows "$ROWS" --teacher minilm --chunk-rows 1000 --output "$OUT/embeddings"
echo
distil-jobs inspect --summary "$OUT/embeddings"
