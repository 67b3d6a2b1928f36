#!/usr/bin/env bash
# On a lent GPU machine (after ../../shared/gpu/README.md's unpack, wheels in .whl/): serve the
# rehearsal model with `invoke serve`, run bench/fidelity.py against it (this project's client
# against `vllm bench serve`), then start `invoke bench` and SIGKILL the server's EngineCore
# KILL_AFTER_S seconds into it, to see the step fail with the watcher's diagnosis. Ends with
# `invoke stop` and nvidia-smi. Everything lands in one logbook, packed into $OUT/logbook-serve-check.tgz.
# KILL_AFTER_S=0 skips the kill. Budget (one H100, 2026-12-07): a fresh machine's first serve
# ~260 s; fidelity's 12 runs ~400 s (each `vllm bench serve` imports vLLM, ~30 s there), so
# FIDELITY_LIMIT_S=230 after a cold serve kept 7 of them.
#
#   bash docs/evidence/gpu-serve-check.sh
set -uo pipefail
# shellcheck source=docs/evidence/gpu-env.sh
source "$(dirname "$0")/gpu-env.sh"
out=${OUT:-/tmp}
cd "$root"
stamp() { echo "=== $(date -u +%H:%M:%S.%N | cut -c1-12) $*"; }
stamp "invoke serve"
timeout --kill-after=20 "${SERVE_LIMIT_S:-330}" python3 -m invoke serve --profile rehearsal --python python3
echo "serve exit $?"
stamp "bench/fidelity.py"
timeout --kill-after=10 "${FIDELITY_LIMIT_S:-200}" python3 bench/fidelity.py --model Qwen/Qwen2.5-7B-Instruct \
  --tokenizer "$INVOKE_LAB_DATA_DIR/models/rehearsal-qwen2.5-7b" --python python3 \
  --concurrency 1,16,64 --input-len 128 --output-len 64 --num-prompts 64 --rounds 2 \
  --json-out "$out/fidelity.json"
echo "fidelity exit $?"
if [ "${KILL_AFTER_S:-20}" != 0 ]; then
  stamp "invoke bench (EngineCore killed after ${KILL_AFTER_S:-20} s)"
  timeout --kill-after=10 120 python3 -m invoke bench --profile rehearsal --concurrency 16 \
    --num-requests 2000 --warmup 0 --latency-runs 1 &
  bench=$!
  sleep "${KILL_AFTER_S:-20}"
  pgrep -af 'VLLM::EngineCore' | head -3
  stamp "kill -9 EngineCore"
  pkill -9 -f 'VLLM::EngineCore'
  wait $bench
  echo "bench exit $?"
  stamp "bench ended"
  nvidia-smi --query-gpu=index,memory.used,utilization.gpu --format=csv,noheader
fi
python3 -m invoke stop
stamp "stopped"
nvidia-smi --query-gpu=index,memory.used,utilization.gpu --format=csv,noheader
pgrep -af 'vllm|VLLM' | grep -v pgrep | head -5
tar -C "$INVOKE_LAB_LOGBOOK_DIR" -czf "$out/logbook-serve-check.tgz" . 2>/dev/null
ls -la "$out"
