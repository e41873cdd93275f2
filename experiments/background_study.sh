#!/usr/bin/env bash
# A study that outlives the call that starts it. A lent GPU's calls end at their time limit, and a study cut into
# one study per call loses the card's time at every boundary (the last runs of a call hold it alone). Started in its
# own session, the study goes on between calls, and each later call only waits and reports:
#
#   bash experiments/background_study.sh start NAME STUDY.yaml [study.py flags ...]   start it, then as `poll`
#   bash experiments/background_study.sh poll NAME                                   wait, then report
#
# POLL=SECONDS (default 540): how long a call waits for the study to end before it reports; keep it inside the
# call's limit. RUNS (default /root/runs): the study's folder is RUNS/NAME, its log RUNS/NAME.log. PYTHON (default
# python3): the interpreter. A report: whether the study still runs, how many runs it finished, its last lines, and,
# where $OUT is set (the device's folder that comes back), $OUT/NAME.tar.gz: the run folders without weights, the
# log and nvidia-smi's samples (every 15 s).
# Give study.py --start-until SECONDS so that the last runs end before the machine does. Calls that poll must not
# end the GPU's processes (gpu_leftovers.sh would end the study).
set -euo pipefail
usage="usage: background_study.sh start NAME STUDY.yaml [study.py flags ...] | poll NAME"
if [ $# -lt 2 ] || { [ "$1" != start ] && [ "$1" != poll ]; }; then
  echo "background_study.sh: the first argument is start or poll, then the study's NAME ($usage)" >&2
  exit 2
fi
mode=$1 name=$2
shift 2
runs=${RUNS:-/root/runs}
study=$runs/$name
if [ "$mode" = start ]; then
  mkdir -p "$study"
  : > "$study.log"  # there before the study writes to it: a poll may read it at once
  setsid nohup "${PYTHON:-python3}" "$(dirname "$0")/study.py" "$@" --out "$study" > "$study.log" 2>&1 < /dev/null &
  echo $! > "$study.pid"
  if command -v nvidia-smi > /dev/null; then
    setsid nohup nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader -l 15 \
      > "$study-smi.csv" 2>&1 < /dev/null &
    echo $! > "$study-smi.pid"
  fi
elif [ ! -f "$study.pid" ]; then
  echo "background_study.sh: no study $name was started under $runs (no $study.pid)" >&2
  exit 2
fi
pid=$(cat "$study.pid")
end=$((SECONDS + ${POLL:-540}))
while kill -0 "$pid" 2> /dev/null && [ "$SECONDS" -lt "$end" ]; do sleep 2; done
if kill -0 "$pid" 2> /dev/null; then
  echo "study $name still running"
else
  echo "study $name ended"
  [ -f "$study-smi.pid" ] && kill "$(cat "$study-smi.pid")" 2> /dev/null || true
fi
echo "$(grep -c '"status": "ok"' "$study.log" || true) runs finished"
tail -n 5 "$study.log" || true
if [ -n "${OUT:-}" ]; then  # a running study's files change as they are read: tar's exit 1 says only that
  smi=(); [ -f "$study-smi.csv" ] && smi=("$name-smi.csv")
  tar czf "$OUT/$name.tar.gz" --warn=no-file-changed --ignore-failed-read --exclude='*.safetensors' \
    --exclude=tensorboard --exclude='final' --exclude='final.*' --exclude='best' --exclude='best.*' \
    --exclude='checkpoint' --exclude='checkpoint.*' -C "$runs" "$name" "$name.log" "${smi[@]}" || [ $? -eq 1 ]
fi
