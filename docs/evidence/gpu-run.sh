#!/usr/bin/env bash
# Run vllm-lab commands on a lent GPU machine (rehearsal profile), as the evidence in this
# folder was made. Expects vLLM unpacked to /tmp/site (../shared/gpu/README.md) and the tool's
# missing wheels in .whl/. Each argument is one `invoke` command line, run in order under its
# own time limit (GPU_RUN_LIMIT_S, default 420 s), all in one logbook:
#
#   bash docs/evidence/gpu-run.sh "experiment prefix-caching" "experiment cuda-graphs"
#
# After each command: nvidia-smi (to see that no memory is left held). At the end the logbook
# folder (rendered markdown, plots, database, server logs) is packed into $OUT/logbook.tgz.
set -uo pipefail
# shellcheck source=docs/evidence/gpu-env.sh
source "$(dirname "$0")/gpu-env.sh"
limit=${GPU_RUN_LIMIT_S:-420}
cd "$root"
nvidia-smi --query-gpu=index,name,memory.total,memory.used --format=csv
python3 -c "import vllm; print('vllm', vllm.__version__)" 2>/dev/null | tail -1
worst=0
for line in "$@"; do
  echo "=== $(date -u +%H:%M:%S) invoke $line"
  # shellcheck disable=SC2086 # each argument is a command line of invoke flags
  timeout --kill-after=20 "$limit" python3 -m invoke $line
  rc=$?
  echo "=== invoke $line: exit $rc"
  [ $rc -gt $worst ] && worst=$rc
  nvidia-smi --query-gpu=index,memory.used,utilization.gpu --format=csv,noheader
  pgrep -af 'vllm|VLLM' | grep -v pgrep | head -5
done
tar -C "$INVOKE_LAB_LOGBOOK_DIR" -czf "${OUT:-/tmp}/logbook.tgz" . 2>/dev/null && ls -la "${OUT:-/tmp}"
exit $worst
