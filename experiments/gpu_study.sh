#!/usr/bin/env bash
# The GPU study session (see ../shared/GPU.md for getting the model there in two carries):
#   bash experiments/gpu_study.sh OUT_DIR STUDY.yaml [STUDY.yaml ...]
# Converts the GGUF once to /root/smol, then runs the studies and the no-training baselines side by side.
# BASELINES=SECONDS also runs benchmarks/eval_baselines.py (BASELINE_TASKS: its --tasks; default all);
# BASELINE_BATCH: its --batch-size (default 8). BENCH=1 first runs the speed benchmarks (train_step.py,
# zo_step.py) alone; PROFILE=1 first profiles the graphed OPT-1.3B ZO step (profile_step.py, both directions);
# ENGINE=1 first runs the ZO engine's tests and zo_step.py with and without evict-first copies;
# MEMORY=1 first runs memory_breakdown.py (FO-LoRA and Bilevel ZOFO on COPA, live memory by code and pool);
# META=1 first times a meta-training outer step by phase (meta_step_phases.py, default split, bfloat16 and float32)
# and a meta-test unit in the same two dtypes (meta_test_unit.py; META_TASKS: its task folders, default one
# held-out task), each with an op profile (--profile) and a Python one (--python-profile); META_VARIANTS / META_UNIT_DTYPES pick among them; everything
# comes back inside $OUT/bench.tar.gz;
# WORKERS="1 3 6" first times one meta-test (two held-out tasks, WORKERS_TASKS, x 3 seeds) with each worker count
# (benchmarks/meta_test_workers.py, utilisation sampled);
# SHAPE=1 first writes a random-init Qwen2.5-Coder-1.5B-shaped model (shape_model.py; the real tokenizer where
# .gpu-carry/q15-tok.tar.xz came along) and measures every method's memory on it (memory_breakdown.py, COPA, 5 steps).
# PARALLEL: training processes per study at once (default 12). Sharing adds no throughput once one run fills the GPU
# (fp32 on long rows: docs/RESULTS.md section 4); short bf16 runs of SmolLM2's shape kept an H100 busy about half the
# time alone, and six processes finished 2.7x of them an hour (section 27).
# START_UNTIL=SECONDS: the studies start no run after that (study.py --start-until; a session's last call).
# DEVICES="0 1": spread the runs over these GPUs (study.py --devices); TOGETHER=K: K runs per process, side by
# side on their own CUDA streams (study.py --together; PARALLEL then counts processes).
set -u
out=$1; shift
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
source "$(dirname "$0")/gpu_leftovers.sh"
end_leftover_gpu_processes
gguf=$(ls /root/m/smollm2*.gguf 2>/dev/null | head -n 1)  # the carry's name (smollm2-135m.gguf) or an older one
[ -d /root/smol ] || python3 -m zofo.cli convert "$gguf" /root/smol > /dev/null 2>&1
mkdir -p "$out" runs/bench
# runs/bench (the benchmarks' outputs) into one file of $OUT after each benchmark: a call's limit may come first,
# and only 8 files come back from a call
pack() { tar czf "$out/bench.tar.gz" runs/bench; }
if [ -n "${BENCH:-}" ]; then  # speed first, alone on the GPU; results travel back inside runs.tar.gz
  python3 benchmarks/train_step.py --model /root/smol --data .gpu-carry/data/sst2 --out runs/bench \
    > runs/bench/train_step.log 2>&1
  python3 benchmarks/zo_step.py --iters 15 --smollm2 /root/smol --out runs/bench > runs/bench/zo_step.log 2>&1
  tail -n 12 runs/bench/*.md
fi
if [ -n "${ENGINE:-}" ]; then  # the ZO engine: its kernel tests on the GPU, then the step with and without
  # evict-first copies (kernels.EVICT_FIRST), alone on the GPU
  python3 -m pytest -q -p no:cacheprovider tests/zo > runs/bench/engine-tests.log 2>&1
  tail -n 3 runs/bench/engine-tests.log
  for evict in "" --evict-first; do
    python3 benchmarks/zo_step.py --iters 15 --micro --smollm2 /root/smol $evict --out "runs/bench/zo-step$evict" \
      > "runs/bench/zo-step$evict.log" 2>&1
    tail -n 8 "runs/bench/zo-step$evict/zo_step.md"
  done
fi
if [ -n "${PROFILE:-}" ]; then  # where the graphed step's time goes, alone on the GPU
  for d in gaussian rademacher; do
    python3 benchmarks/profile_step.py --direction $d --out runs/bench/profile-$d > runs/bench/profile-$d.log 2>&1
    cat runs/bench/profile-$d/profile_step.md
  done
fi
if [ -n "${MEMORY:-}" ]; then  # where each method's step memory goes, alone on the GPU
  python3 benchmarks/memory_breakdown.py --model /root/smol --data-root .gpu-carry/data --task copa \
    --out runs/bench/memory > runs/bench/memory.log 2>&1
  cat runs/bench/memory/memory_breakdown.md; pack
fi
if [ -n "${META:-}" ]; then  # where meta-training's and meta-test's time goes, alone on the GPU, with op profiles
  # bfloat16-sdpa: the same with cuDNN out of torch's SDPA backends (on a B200, torch 2.11 tries it first for bf16
  # with a padding mask, and cuDNN builds a plan for every new shape; the suspect of bf16's slower step, section 23)
  for variant in ${META_VARIANTS:-bfloat16 bfloat16-sdpa float32}; do
    dtype=${variant%-sdpa}; sdpa=; [ "$variant" = bfloat16-sdpa ] && sdpa=--no-cudnn-attention
    python3 benchmarks/meta_step_phases.py /root/smol --bigbench-root .gpu-carry/data/bigbench --dtype $dtype $sdpa \
      --out "runs/bench/meta-phases-$variant.json" --profile "runs/bench/meta-phases-profile-$variant" \
      --python-profile "runs/bench/meta-phases-python-$variant.txt" > "runs/bench/meta-phases-$variant.log" 2>&1
    grep " | " "runs/bench/meta-phases-$variant.log"; pack
  done
  tasks=${META_TASKS:-.gpu-carry/data/bigbench/tracking_shuffled_objects/five_objects}
  for dtype in ${META_UNIT_DTYPES:-bfloat16 float32}; do
    python3 benchmarks/meta_test_unit.py /root/smol $tasks --dtype $dtype --out "runs/bench/meta-unit-$dtype.json" \
      --profile "runs/bench/meta-unit-profile-$dtype" --python-profile "runs/bench/meta-unit-python-$dtype.txt" \
      > "runs/bench/meta-unit-$dtype.log" 2>&1
    grep " | " "runs/bench/meta-unit-$dtype.log"; pack
  done
fi
if [ -n "${WORKERS:-}" ]; then  # how far meta-test's --workers share the card: one meta-test per worker count, alone
  bb=.gpu-carry/data/bigbench
  python3 benchmarks/meta_test_workers.py /root/smol ${WORKERS_TASKS:-$bb/tracking_shuffled_objects/five_objects \
    $bb/movie_recommendation} --workers ${WORKERS:-1 3 6} --seeds 0 1 2 --max-rows 64 \
    --out runs/bench/meta-test-workers.json > runs/bench/meta-test-workers.log 2>&1
  cat runs/bench/meta-test-workers.log; pack
fi
if [ -n "${SHAPE:-}" ]; then  # every method's memory at the 1.5B shape, alone on the GPU (random weights)
  # the real Qwen2.5-Coder tokenizer where a carry brought it (.gpu-carry/q15-tok.tar.xz, 1.4 MB: see
  # benchmarks/shape_model.py --tokenizer-only), else SmolLM2's (shorter sequences: say which in the report)
  [ -f .gpu-carry/q15-tok.tar.xz ] && tar xJf .gpu-carry/q15-tok.tar.xz -C /root
  tok=/root/smol; [ -d /root/q15-tok ] && tok=/root/q15-tok; echo "1.5B shape with the tokenizer of $tok"
  python3 benchmarks/shape_model.py qwen2.5-1.5b /root/q15-shape --tokenizer $tok
  python3 benchmarks/memory_breakdown.py --model /root/q15-shape --data-root .gpu-carry/data --task copa --steps 5 \
    --methods fo-peft bilevel-zofo mezo zo-peft fo-full --out runs/bench/memory-1.5b > runs/bench/memory-1.5b.log 2>&1
  grep -h -A2 "^## " runs/bench/memory-1.5b/memory_breakdown.md; pack
fi
for study in "$@"; do
  name=$(basename "$study" .yaml)
  python3 experiments/study.py "$study" --out "runs/$name" --parallel "${PARALLEL:-12}" --data-root .gpu-carry/data \
    ${DEVICES:+--devices $DEVICES} ${TOGETHER:+--together $TOGETHER} ${START_UNTIL:+--start-until $START_UNTIL} \
    > "$out/$name.log" 2>&1 &
done
if [ -n "${BASELINES:-}" ]; then
  timeout "${BASELINES}" python3 benchmarks/eval_baselines.py --model /root/smol --device cuda \
    --data-root .gpu-carry/data --batch-size "${BASELINE_BATCH:-8}" --out "$out" ${BASELINE_TASKS:+--tasks $BASELINE_TASKS} > "$out/baselines.log" 2>&1 &
fi
wait
for study in "$@"; do
  name=$(basename "$study" .yaml)
  python3 experiments/study.py --aggregate "runs/$name" --results "runs/agg-$name" >> "$out/$name.log" 2>&1
done
# weights stay behind: only configs, logs and results travel back
tar czf "$out/runs.tar.gz" --exclude='*.safetensors' --exclude=tensorboard --exclude=final --exclude=best \
  --exclude=checkpoint runs
