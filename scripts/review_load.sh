#!/usr/bin/env bash
# Times the review desk with N jobs waiting (default 100): starts the server (real models, a fresh
# data folder), submits N jobs of one SROIE receipt with review_sample_rate=1 (so each waits for
# review), waits until all are in needs_review, then tests/review/load.mjs opens /review in
# Chromium RUNS times (default 3) and prints the time until the whole queue is drawn, the time to
# open a job until its page and boxes are drawn, and the page image's bytes.
#   scripts/review_load.sh [N] [RUNS]
# Needs what scripts/test.sh installs (models, Chromium, tests/review/node_modules).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100}
RUNS=${2:-3}
cargo build -q --bin ocr-server
DATA=$(mktemp -d)
LOG=$DATA/server.log
target/debug/ocr-server serve --host 127.0.0.1 --port 0 --profile accurate --data-dir "$DATA" \
  2> "$LOG" &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$DATA"' EXIT
for _ in $(seq 600); do
  ADDR=$(sed -n 's|^ocr-server: listening on http://\([^ ]*\).*|\1|p' "$LOG")
  [ -n "$ADDR" ] && curl -fs "http://$ADDR/health/ready" >/dev/null && break
  sleep 0.2
done
[ -n "${ADDR:-}" ] || { echo "review_load.sh: the server did not start" >&2; cat "$LOG" >&2; exit 1; }
IMG=../shared/eval/receipts/$(ls ../shared/eval/receipts | grep -m1 '\.jpg$')
for _ in $(seq "$N"); do
  curl -fs -X POST -H 'Content-Type: image/jpeg' --data-binary @"$IMG" \
    "http://$ADDR/v1/jobs?review_sample_rate=1" >/dev/null
done
for _ in $(seq 1200); do
  W=$(curl -fs "http://$ADDR/v1/review/queue" | python3 -c 'import json,sys; print(json.load(sys.stdin)["waiting"])')
  [ "$W" -ge "$N" ] && break
  sleep 1
done
echo "review_load.sh: $W jobs waiting" >&2
START=$(date +%s%N)
curl -fs "http://$ADDR/v1/review/queue" >/dev/null
echo "review_load.sh: GET /v1/review/queue alone: $(( ($(date +%s%N) - START) / 1000000 )) ms" >&2
BASE_URL=http://$ADDR WAITING=$N RUNS=$RUNS node tests/review/load.mjs
