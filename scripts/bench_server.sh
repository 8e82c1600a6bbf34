#!/usr/bin/env bash
# Server throughput and latency over the dev pages, against the CLI on the same pages, in one
# run: scripts/bench_server.sh [OUT_DIR] (default target/bench-server).
#   1. builds the release binary, starts `ocr-server serve` on a free port with its defaults
#      (extra serve flags from $SERVE_FLAGS);
#   2. for each concurrency in $LEVELS (default "1 2 4 8 16"): scripts/load.py over every dev
#      page image, one pass, and the scheduler's counters (/v1/queue) before and after, from
#      which the mean recognition batch size, padding waste and mixed batches are computed;
#   3. stops the server (SIGTERM) and OCRs the same pages with the CLI one file at a time
#      (`--jobs 1`), with 1 and with 2 ONNX Runtime threads, timing each.
# Prints a Markdown summary; raw JSON lands in OUT_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-target/bench-server}
LEVELS=${LEVELS:-"1 2 4 8 16"}
PORT=${PORT:-18080}
mkdir -p "$OUT"
cargo build --release --quiet
BIN=target/release/ocr-server
EVAL=${OCR_EVAL_DIR:-../shared/eval}
mapfile -t IMAGES < <(ls "$EVAL"/dev/*.png "$EVAL"/dev/*.jpg | sort)
echo "pages: ${#IMAGES[@]}" >&2

# shellcheck disable=SC2086
$BIN serve --host 127.0.0.1 --port "$PORT" ${SERVE_FLAGS:-} 2> "$OUT/server.log" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 600); do
  curl -sf "http://127.0.0.1:$PORT/health/ready" > /dev/null && break
  sleep 0.2
done
curl -sf "http://127.0.0.1:$PORT/health/ready" > /dev/null

for c in $LEVELS; do
  curl -sf "http://127.0.0.1:$PORT/v1/queue" > "$OUT/queue-before-$c.json"
  python3 scripts/load.py --url "http://127.0.0.1:$PORT" --images "${IMAGES[@]}" \
    --concurrency "$c" --warmup 1 --out "$OUT/load-$c.json" > "$OUT/load-$c.md"
  curl -sf "http://127.0.0.1:$PORT/v1/queue" > "$OUT/queue-after-$c.json"
done
kill -TERM $SERVER
wait $SERVER || true
trap - EXIT

# SKIP_CLI=1 reuses the CLI timings already in OUT_DIR (for exploring server flags only).
for t in 1 2; do
  [ "${SKIP_CLI:-0}" = 1 ] && [ -f "$OUT/cli-t$t.time" ] && continue
  start=$(date +%s.%N)
  $BIN ocr --jobs 1 --threads "$t" --format jsonl "${IMAGES[@]}" > "$OUT/cli-t$t.jsonl"
  end=$(date +%s.%N)
  echo "$start $end" > "$OUT/cli-t$t.time"
done

python3 - "$OUT" "$LEVELS" "${#IMAGES[@]}" <<'PY'
import json, sys
out, levels, pages = sys.argv[1], sys.argv[2].split(), int(sys.argv[3])
cli = {}
for t in ("1", "2"):
    a, b = map(float, open(f"{out}/cli-t{t}.time").read().split())
    cli[t] = pages / (b - a)
print(f"CLI one file at a time (--jobs 1): {cli['1']:.3f} pages/s with 1 thread, "
      f"{cli['2']:.3f} pages/s with 2 threads\n")
print("| concurrency | pages/s | p50 ms | p99 ms | server/CLI(1 thr) | server/CLI(2 thr) "
      "| rec batch (mean lines) | padding waste | mixed rec batches | det pages/batch |")
print("|---|---|---|---|---|---|---|---|---|---|")
for c in levels:
    lv = json.load(open(f"{out}/load-{c}.json"))["levels"][0]
    b = json.load(open(f"{out}/queue-before-{c}.json"))["stats"]
    a = json.load(open(f"{out}/queue-after-{c}.json"))["stats"]
    d = {k: a[k] - b[k] for k in a}
    rps = lv["throughput_rps"]
    lat = lv["latency_ms"]
    batch = d["rec_lines"] / max(d["rec_batches"], 1)
    waste = 1 - d["rec_content_px"] / max(d["rec_padded_px"], 1)
    mixed = d["rec_mixed_batches"] / max(d["rec_batches"], 1)
    detb = d["det_pages"] / max(d["det_batches"], 1)
    print(f"| {c} | {rps:.3f} | {lat['p50']:.0f} | {lat['p99']:.0f} | {rps/cli['1']:.2f} "
          f"| {rps/cli['2']:.2f} | {batch:.1f} | {waste:.1%} | {mixed:.0%} | {detb:.2f} |")
PY
