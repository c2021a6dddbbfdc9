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

# Ask the chatbot (offline extractive answerer, cited).
$UR ask "how long does the old key keep working after a rotation?" --index sample
$UR ask "what is the capital of France?" --index sample

# Fine-tune the embedder and reranker on the sample corpus alone (pseudo-queries mined from its
# passages; a short run of 20 steps, about a minute), then search with the tuned embedder. An index
# holds one model's vectors, so the tuned model gets its own index, and searches of it use that model.
TRAIN_LOG=$UNIRANK_DATA_DIR/quickstart-train.log
TUNED=$($UR train --index sample --name sample --min-steps 20 --json 2> "$TRAIN_LOG" \
  | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["embedder"])') \
  || { tail -n 20 "$TRAIN_LOG"; exit 1; }
$UR models show "$TUNED"
$UR ingest examples/sample-docs --index sample-tuned --model "$TUNED" --prune
$UR search "how long do old API keys keep working after rotation" \
  --index sample-tuned --top-k 3

# Serve the model over HTTP and call it the way OpenAI and TEI clients do.
PORT=${UNIRANK_QUICKSTART_PORT:-18080}
$UR serve models --model base --port "$PORT" > "$UNIRANK_DATA_DIR/quickstart-server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 120); do
  curl -sf "http://127.0.0.1:$PORT/ready" > /dev/null && break
  sleep 1
done
curl -sf "http://127.0.0.1:$PORT/v1/embeddings" -H 'Content-Type: application/json' \
  -d '{"model": "base", "input": ["rotate API keys"]}' \
  | .venv/bin/python -c 'import json,sys; r=json.load(sys.stdin); print("served embedding:", r["model"], len(r["data"][0]["embedding"]), "dims")'
curl -sf "http://127.0.0.1:$PORT/rerank" -H 'Content-Type: application/json' \
  -d '{"query": "who updates the status page", "texts": ["The communications lead updates the status page.", "Backups run nightly."]}'
echo
