#!/usr/bin/env bash
# Run vllm-lab's rehearsal profile on a lent GPU machine, as the evidence in this folder was
# made. It expects vLLM unpacked to /tmp/site (../shared/gpu/README.md) and the tool's
# missing wheels in .whl/ (invoke, sqlite-utils and its two helpers, nvitop).
#
#   bash docs/evidence/rehearsal.sh day3 [extra invoke args...]
#
# Results are packed into $OUT/evidence-<day>.tgz: the rendered markdown, the database,
# the plots, and the server logs.
set -uo pipefail
day=${1:?day3 or day4}; shift
root=$(cd "$(dirname "$0")/../.." && pwd)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/tool "$root"/.whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:/tmp/tool:$root PATH=/tmp/tool/bin:$PATH
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 PIP_NO_INDEX=1 COLUMNS=160
export INVOKE_LAB_LOGBOOK_DIR=/tmp/lab-logbook INVOKE_LAB_DATA_DIR=/tmp/lab-data
cd "$root"
nvidia-smi --query-gpu=index,name,memory.total,memory.used --format=csv
python3 -m invoke "$day" --profile rehearsal --python python3 "$@"
rc=$?
echo "invoke $day exit code: $rc"
[ "$day" = day4 ] && { python3 -m invoke report; echo "invoke report exit code: $?"; }
tar -C /tmp/lab-logbook -czf "${OUT:-/tmp}/evidence-$day.tgz" . && ls -la "${OUT:-/tmp}"
exit $rc
