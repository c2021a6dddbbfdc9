#!/usr/bin/env bash
# Run every benchmark in sequence (about 40 minutes on 2 idle CPU cores; finetune_cisi.py, ~40+ min more, runs on its own); figures go to bench/out/*.json.
# A bench that fails does not stop the others: the failed ones are listed at the end, and the exit status is 1.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
export HF_HUB_OFFLINE=1
failed=()
for bench in retrieval_quality ingest_throughput query_latency onnx_quality serving bulk_and_search chat_answers chat_follow_ups duplicate_chunks; do
    echo "=== bench/${bench}.py"
    "$PY" "bench/${bench}.py"
    status=$?
    if ((status == 130)); then  # Ctrl-C: stop here, not just this bench
        exit 130
    elif ((status != 0)); then
        failed+=("bench/${bench}.py (exit ${status})")
        echo "=== bench/${bench}.py failed with exit status ${status}; going on with the rest" >&2
    fi
    echo
done
if ((${#failed[@]} > 0)); then
    echo "${#failed[@]} benchmark(s) failed:" >&2
    printf '  %s\n' "${failed[@]}" >&2
    exit 1
fi
