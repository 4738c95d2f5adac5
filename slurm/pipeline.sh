#!/bin/bash
# precompute (array) -> train -> evaluate on Slurm, chained with afterok: each stage starts only
# when the one before succeeded (a failed stage cancels the rest: --kill-on-invalid-dep=yes).
#
#   slurm/pipeline.sh jobs/yoruba.yaml
#   SHARDS=8 TRAIN_SBATCH="--nodes=4" SBATCH_ARGS="-p gpu -A proj" RUNS=s3://distil/runs slurm/pipeline.sh jobs/yoruba.yaml
#
# CONFIG is one pipeline file with a section per job (precompute-embeddings, train-student,
# evaluate-mteb), as jobs/yoruba.yaml; each job reads its own section. Prints one line per stage,
# "<stage> <job id>", and nothing else on stdout.
#
# Variables read (all optional):
#   SHARDS              precompute array tasks = shards (default 4; sbatch --array=0-(SHARDS-1), --num-shards)
#   SBATCH_ARGS         sbatch options for every stage, e.g. "-p gpu -A proj --qos high"
#   PRECOMPUTE_SBATCH, TRAIN_SBATCH, EVALUATE_SBATCH   sbatch options for one stage (e.g. "--nodes=4")
#   PRECOMPUTE_ARGS, TRAIN_ARGS, EVALUATE_ARGS         extra job flags for one stage (after --config)
#   anything else the jobs or slurm/*.sbatch read (RUNS, DISTIL_*, DISTIL_ENV_FILE, DISTIL_CONTAINER_IMAGE,
#   DISTIL_APPTAINER_SIF, ...): sbatch passes this shell's environment to every stage.
set -euo pipefail
if [ $# -ne 1 ] || [ ! -f "$1" ]; then
  echo "usage: slurm/pipeline.sh CONFIG   (a pipeline file such as jobs/yoruba.yaml; got: ${*:-nothing})" >&2
  exit 2
fi
config=$1
here=$(cd "$(dirname "$0")" && pwd)
shards=${SHARDS:-4}
case $shards in ''|*[!0-9]*|0) echo "error: SHARDS=$shards: must be a whole number, at least 1" >&2; exit 2 ;; esac
read -r -a common <<< "${SBATCH_ARGS:-}"
read -r -a pre_sb <<< "${PRECOMPUTE_SBATCH:-}"
read -r -a train_sb <<< "${TRAIN_SBATCH:-}"
read -r -a eval_sb <<< "${EVALUATE_SBATCH:-}"
read -r -a pre_args <<< "${PRECOMPUTE_ARGS:-}"
read -r -a train_args <<< "${TRAIN_ARGS:-}"
read -r -a eval_args <<< "${EVALUATE_ARGS:-}"

pre=$(sbatch --parsable --array="0-$((shards - 1))" "${common[@]}" "${pre_sb[@]}" "$here/precompute.sbatch" \
  --config "$config" --num-shards "$shards" "${pre_args[@]}")
pre=${pre%%;*}
echo "precompute $pre"
train=$(sbatch --parsable --dependency="afterok:$pre" --kill-on-invalid-dep=yes "${common[@]}" "${train_sb[@]}" \
  "$here/train.sbatch" --config "$config" "${train_args[@]}")
train=${train%%;*}
echo "train $train"
evaluate=$(sbatch --parsable --dependency="afterok:$train" --kill-on-invalid-dep=yes "${common[@]}" "${eval_sb[@]}" \
  "$here/evaluate.sbatch" --config "$config" "${eval_args[@]}")
echo "evaluate ${evaluate%%;*}"
