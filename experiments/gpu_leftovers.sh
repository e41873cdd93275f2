# Sourced by the GPU session scripts (gpu_study.sh, meta_study.sh) at a call's start: end the GPU processes an earlier
# call left running. A call's time limit ends the call's own processes, but a study's runs have sessions of their own
# (so that a Ctrl-C reaches the study, which passes it on once), and on a warm machine such a run outlives its call,
# holding the card's memory and time: one held 55 GB for nine minutes (docs/RESULTS.md section 27). zofo's processes
# are first asked for their threads' stacks (SIGUSR1, into their logs). KEEP_GPU_PROCESSES=1 leaves them running (a
# study started in the background by an earlier call on purpose).
end_leftover_gpu_processes() {  # safe under `set -euo pipefail`, and where there is no nvidia-smi
  local pids _
  if [ -n "${KEEP_GPU_PROCESSES:-}" ]; then return 0; fi
  pids=$(gpu_process_ids)
  if [ -z "$pids" ]; then return 0; fi
  echo "ending the GPU processes an earlier call left running: $pids" >&2
  kill -USR1 $pids 2>/dev/null || true
  sleep 1
  kill -9 $pids 2>/dev/null || true
  for _ in $(seq 30); do  # the driver frees their memory once they are gone
    if [ -z "$(gpu_process_ids)" ]; then return 0; fi
    sleep 1
  done
  echo "GPU processes still listed after 30 s: $(gpu_process_ids)" >&2
}

gpu_process_ids() {  # the PIDs of the processes using a GPU, on one line: only numbers that name a live process
  # here and not this shell or one of its callers (nvidia-smi prints its errors on stdout; in a container it may list
  # the host's PIDs)
  local p ids=""
  for p in $({ nvidia-smi --query-compute-apps=pid --format=csv,noheader 2>/dev/null || true; } | tr -d ' '); do
    if [[ $p =~ ^[0-9]+$ ]] && [ -d "/proc/$p" ] && ! is_this_shell_or_a_caller "$p"; then ids+="$p "; fi
  done
  echo "${ids% }"
}

is_this_shell_or_a_caller() {  # whether PID $1 is this shell or one of its ancestors
  local p=$$
  while [ -n "$p" ] && [ "$p" -gt 1 ]; do
    if [ "$p" = "$1" ]; then return 0; fi
    p=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | cut -d' ' -f2) || return 1  # after "(comm) ": state, ppid
  done
  return 1
}
