#!/usr/bin/env bash
# Run every benchmark in sequence (about 40 minutes on 2 idle CPU cores; finetune_cisi.py, ~40+ min more, runs on its own); figures go to bench/out/*.json.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
export HF_HUB_OFFLINE=1
for bench in retrieval_quality ingest_throughput query_latency onnx_quality serving bulk_and_search chat_answers chat_follow_ups duplicate_chunks; do
    echo "=== bench/${bench}.py"
    "$PY" "bench/${bench}.py"
    echo
done
