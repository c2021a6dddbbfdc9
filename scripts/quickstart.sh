#!/usr/bin/env bash
# The main job end to end on the embedded default: set up, ingest the sample corpus, search it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1
export UNIRANK_DATA_DIR=${UNIRANK_DATA_DIR:-.unirank}
UR=.venv/bin/unirank

# The repository ships Markdown, HTML, text and JSONL samples; PDF and DOCX are generated.
.venv/bin/python examples/make_office_docs.py examples/sample-docs

$UR ingest examples/sample-docs --index sample --prune
$UR index info sample
$UR search "how long do old API keys keep working after rotation" --index sample --top-k 3
$UR search "who updates the status page during an outage" --index sample --top-k 3 --rerank
$UR search "what does SEV2 mean" --index sample --top-k 3 --mode bm25 --no-rerank
$UR search "where is customer data kept" --index sample --top-k 3 --filter category=data
$UR search "recovery point objective" --index sample --top-k 2 --json
