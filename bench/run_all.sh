#!/usr/bin/env bash
# Run every benchmark in sequence (about 15-20 minutes on 2 CPU cores); figures go to bench/out/*.json.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
export HF_HUB_OFFLINE=1
for bench in retrieval_quality ingest_throughput query_latency; do
    echo "=== bench/${bench}.py"
    "$PY" "bench/${bench}.py"
    echo
done
