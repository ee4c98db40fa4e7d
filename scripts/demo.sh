#!/usr/bin/env bash
# The README's main job on the embedded defaults: `qocr run` over the sample invoices (three
# images and a two-page PDF), against
# a local Qwen-OCR emulator, results in a SQLite file (./qocr.db). No Redis, no cloud account.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin

port=$("$BIN/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$BIN/qocr" emulator --port "$port" > .demo-emulator.log 2>&1 &
emulator=$!
trap 'kill "$emulator" 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do
    grep -q "listening" .demo-emulator.log 2>/dev/null && break
    sleep 0.2
done

# The emulator accepts any key unless started with --api-key; a real run needs your own.
export DASHSCOPE_API_KEY="${DASHSCOPE_API_KEY:-sk-local-emulator}"
export QOCR_BASE_URL="http://127.0.0.1:$port"

"$BIN/qocr" run samples/ --name "sample invoices" --schema samples/invoice-schema.json
batch=$("$BIN/qocr" status --json --limit 1 | "$BIN/python" -c 'import json, sys; print(json.load(sys.stdin)["batches"][0]["id"])')
"$BIN/qocr" status "$batch"
# One record per document: the three invoice images, and the two-page PDF whose pages were
# read one by one and merged (text joined, fields merged, tokens summed).
"$BIN/qocr" results "$batch" --by document --format csv
pdf=$("$BIN/qocr" results "$batch" --by document | "$BIN/python" -c 'import json, sys; print(next(d["document_id"] for d in map(json.loads, sys.stdin) if d["page_count"] > 1))')
"$BIN/qocr" show "$pdf"
