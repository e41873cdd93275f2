#!/usr/bin/env bash
# The meta-learning pilot on one GPU (docs/RESULTS.md, "Meta-training pilot"; issue 28):
#
#   experiments/meta_study.sh measure OUT        each method alone for 8 outer steps: peak memory, seconds a step
#   experiments/meta_study.sh train OUT SECONDS  every method x seed, TRAIN_PARALLEL at once (default 4, the first
#                                                pass's sharing), each stopped after SECONDS
#   experiments/meta_study.sh test OUT [N_TEST]  meta-test the base model and every trained backbone, TEST_PARALLEL
#                                                at once (default all), each stopped after TEST_SECONDS (default no
#                                                limit; a stopped meta-test keeps its finished units and the same
#                                                command continues it)
#   experiments/meta_study.sh ablate OUT SECONDS Bilevel ZOFO's ablations (ABLATION below; ABLATE: which, default
#                                                all) x SEEDS, TRAIN_PARALLEL at once, each stopped after SECONDS,
#                                                into OUT/train so that `test` meta-tests them beside the methods
#   experiments/meta_study.sh pack OUT FILE      the records (no weights) in one .tar.gz
#
# MODEL (default /root/smol), DTYPE (meta-training's, default float32: tf32 measured no faster, docs/RESULTS.md section
# 21, and a bf16 meta step 1.57x slower, section 23), TEST_DTYPE (meta-test's, default DTYPE; bfloat16 made a
# meta-test unit 1.73x cheaper, section 28),
# SPLIT (default configs/meta/bigbench_split.yaml), BIGBENCH (where bigbench:NAME
# resolves; default the split file's root), SEEDS (default "0 1 2"), BATCH (examples a batch, default 4),
# METHODS (the methods trained; default "bilevel-zofo fo-lora fo-full mezo"), MEASURE_STEPS (8), MEASURED (the
# methods measured alone; default METHODS), MEASURE_FLAGS (more `zofo meta-train` flags
# for the measurement), TEST_FLAGS (more `zofo meta-test` flags; the protocol's defaults otherwise), TEST_PARALLEL,
# TEST_WORKERS (each meta-test's `--workers`: its units in that many processes; default 1) and TEST_SECONDS may be set
# in the environment. In float32 one worker's units keep a kernel running 59% of the time on an H100, and the card's
# kernel time bounds all processes together (3 workers 1.22x, 6 workers 1.30x: docs/RESULTS.md section 26), so
# TEST_PARALLEL x TEST_WORKERS beyond about 3 gains little, and each process takes about 7 GB.
# On a GPU in float32 give TEST_FLAGS="--max-rows 64": the k-shot runs then step eagerly in pieces that fit five
# meta-tests on one card, and eager pieces share each example's prompt across its candidates
# (benchmarks/shared_prompts.py). In bf16 those eager pieces are 1.7x slower than float32's, and the graphed whole
# batches 2.3x faster (docs/RESULTS.md section 28): there leave --max-rows unset where the batch fits.
# A batch of B examples is B x (the task's candidates) rows of up to 256 tokens: 16 examples of a 10-choice task
# are 160 rows, whose float32 activations took 45 GB in one meta-training step; hence 4 by default.
# Learning rates were fixed before any run, from the single-task study's chosen points on SmolLM2-135M
# (experiments/results: FO-LoRA 3e-4, FO full 1e-5, MeZO 1e-5..3e-5 in float32); none was tuned here. The first
# pass (experiments/results/gpu-2026-12-06/meta-study-1) ran DTYPE=tf32, which proved no faster than float32.
set -euo pipefail

MODEL=${MODEL:-/root/smol}
SPLIT=${SPLIT:-configs/meta/bigbench_split.yaml}
SEEDS=${SEEDS:-0 1 2}
ROOT=()
[[ -n "${BIGBENCH:-}" ]] && ROOT=(--bigbench-root "$BIGBENCH")

declare -A METHOD=(
  [bilevel-zofo]="--method bilevel-zofo --lr 5e-6 --lr-upper 1e-4 --lr-lower 1e-4"
  [fo-lora]="--method fo-peft --lr-upper 3e-4"
  [fo-full]="--method fo-full --lr 1e-5"
  [mezo]="--method mezo --lr 2e-5"
)
# Issue 28's ablations of Bilevel ZOFO, each one change to its flags above. ZO off (theta's lr 0) is not among them:
# its backbone stays the base model, whose meta-test is the base row.
declare -A ABLATION=(
  [t1]="--tasks-per-step 1" [t8]="--tasks-per-step 8"
  [k1]="--lower-steps 1" [k20]="--lower-steps 20"
  [lam1e2]="--lam 1e2" [lam1e6]="--lam 1e6"
  [split-128-640]="--upper 128 --lower 640"
)
# shellcheck disable=SC2206  # METHODS is a list of names
ORDER=(${METHODS:-bilevel-zofo fo-lora fo-full mezo})

meta_train() {  # OUT_DIR, then extra flags
  local out=$1
  shift
  python3 -m zofo.cli meta-train --split "$SPLIT" "${ROOT[@]}" --model "$MODEL" --out "$out" --no-progress \
    --batch-size "${BATCH:-4}" --dtype "${DTYPE:-float32}" "$@" \
    >"$out.log" 2>&1
}

measure() {
  mkdir -p "$1/measure"
  for m in ${MEASURED:-${ORDER[@]}}; do
    # shellcheck disable=SC2086  # METHOD holds several flags
    meta_train "$1/measure/$m" ${METHOD[$m]} --steps ${MEASURE_STEPS:-8} --n-dev 1 --log-every 1 ${MEASURE_FLAGS:-} \
      || echo "measure $m failed"
  done
}

start_run() {  # OUT NAME SECONDS FLAGS...: one meta-training run in the background once fewer than TRAIN_PARALLEL
  # run, into OUT/train/NAME, stopped after SECONDS; a failure names its log
  local out=$1/train/$2 name=$2 seconds=$3
  shift 3
  while (( $(jobs -rp | wc -l) >= ${TRAIN_PARALLEL:-4} )); do wait -n || true; done
  meta_train "$out" "$@" --steps 100000 --max-seconds "$seconds" || echo "meta-train $name failed ($?): $out.log" &
}

train() {
  mkdir -p "$1/train"
  for m in "${ORDER[@]}"; do
    for s in $SEEDS; do
      # shellcheck disable=SC2086  # METHOD holds several flags
      start_run "$1" "$m-s$s" "$2" ${METHOD[$m]} --seed "$s"
    done
  done
  wait
}

ablate() {
  local v s
  for v in ${ABLATE:-${!ABLATION[@]}}; do  # every name checked before anything starts
    [[ -n "${ABLATION[$v]:-}" ]] || { echo "unknown ablation $v (known: ${!ABLATION[*]})"; exit 2; }
  done
  mkdir -p "$1/train"
  for v in ${ABLATE:-${!ABLATION[@]}}; do
    for s in $SEEDS; do
      # shellcheck disable=SC2086  # both hold several flags; the ablation's come last and win
      start_run "$1" "bilevel-zofo-$v-s$s" "$2" ${METHOD[bilevel-zofo]} ${ABLATION[$v]} --seed "$s"
    done
  done
  wait
}

meta_test() {  # NAME BACKBONE OUT N_TEST: one meta-test, stopped by SIGTERM after TEST_SECONDS (it keeps its units)
  local limit=()
  [[ -n "${TEST_SECONDS:-}" ]] && limit=(timeout --signal TERM --kill-after 60 "$TEST_SECONDS")
  # shellcheck disable=SC2086  # TEST_FLAGS holds several flags
  "${limit[@]}" python3 -m zofo.cli meta-test --split "$SPLIT" "${ROOT[@]}" --model "$2" --out "$3/test/$1" \
    --n-test "$4" --dtype "${TEST_DTYPE:-${DTYPE:-float32}}" --workers "${TEST_WORKERS:-1}" --no-progress ${TEST_FLAGS:-} \
    >>"$3/test/$1.log" 2>&1 || echo "meta-test $1 stopped ($?)"
}

test_all() {
  mkdir -p "$1/test"
  local n_test=${2:-300} names=(base) models=("$MODEL")
  for run in "$1"/train/*/; do
    names+=("$(basename "$run")")
    models+=("$run")
  done
  for i in "${!names[@]}"; do
    while (( $(jobs -rp | wc -l) >= ${TEST_PARALLEL:-${#names[@]}} )); do wait -n || true; done
    meta_test "${names[$i]}" "${models[$i]}" "$1" "$n_test" &
  done
  wait
}

pack() {  # every json, jsonl and log under OUT except model folders and weights
  (cd "$1" && find . \( -name '*.json' -o -name '*.jsonl' -o -name '*.log' -o -name '*.md' \) \
      -not -path '*/backbone/*' -not -path '*/checkpoint/*' -not -name 'config.json' -not -name 'tokenizer*' \
      -print0 | tar czf "$2" --null -T -)
}

source "$(dirname "$0")/gpu_leftovers.sh"
[[ ${1:-} =~ ^(measure|train|ablate|test)$ ]] && end_leftover_gpu_processes
case ${1:-} in
  measure) measure "$2" ;;
  train) train "$2" "$3" ;;
  ablate) ablate "$2" "$3" ;;
  test) test_all "$2" "${3:-300}" ;;
  pack) pack "$2" "$3" ;;
  *) sed -n '2,30p' "$0"; exit 2 ;;
esac
