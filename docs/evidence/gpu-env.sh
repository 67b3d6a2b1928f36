# Sourced by gpu-run.sh and gpu-serve-check.sh on a lent GPU machine: the tool's missing
# wheels (from .whl/) into /tmp/tool, vLLM from /tmp/site (../../shared/gpu/README.md's
# unpack), and one logbook and data dir for every command of the session. Sets $root.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/tool "$root"/.whl/*.whl >/dev/null 2>&1 || true
export PYTHONPATH=/tmp/site:/tmp/tool:$root PATH=/tmp/tool/bin:$PATH
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 PIP_NO_INDEX=1 COLUMNS=160
export INVOKE_LAB_LOGBOOK_DIR=${INVOKE_LAB_LOGBOOK_DIR:-/tmp/lab-logbook}
export INVOKE_LAB_DATA_DIR=${INVOKE_LAB_DATA_DIR:-/tmp/lab-data}
