#!/usr/bin/env bash
# Bulk throughput of jobs vs the same pages through POST /v1/ocr, in one run, on one server:
# scripts/bench_jobs.sh [OUT_DIR] (default target/bench-jobs).
#   1. builds the release binary and starts `ocr-server serve` on its defaults with a fresh data
#      directory (extra serve flags from $SERVE_FLAGS);
#   2. A/B/A: the dev page images through /v1/ocr (scripts/load.py, concurrency $SYNC_C, default
#      8), then the same images as jobs with `ocr-server submit` (one job per file, default
#      concurrency 16, timed from the first submission to the last result written), then /v1/ocr
#      again, so drift on the machine shows as a difference between the two sync runs;
#   3. prints pages/s for each and the ratio jobs / sync (mean of the two sync runs).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-target/bench-jobs}
PORT=${PORT:-18081}
SYNC_C=${SYNC_C:-8}
rm -rf "$OUT"
mkdir -p "$OUT/pages" "$OUT/results"
cargo build --release --quiet
BIN=$PWD/target/release/ocr-server
EVAL=${OCR_EVAL_DIR:-../shared/eval}
mapfile -t IMAGES < <(ls "$EVAL"/dev/*.png "$EVAL"/dev/*.jpg | sort)
for f in "${IMAGES[@]}"; do ln -s "$(realpath "$f")" "$OUT/pages/"; done
echo "pages: ${#IMAGES[@]}" >&2

# shellcheck disable=SC2086
$BIN serve --host 127.0.0.1 --port "$PORT" --data-dir "$OUT/data" ${SERVE_FLAGS:-} \
  2> "$OUT/server.log" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 600); do
  curl -sf "http://127.0.0.1:$PORT/health/ready" > /dev/null && break
  sleep 0.2
done
curl -sf "http://127.0.0.1:$PORT/health/ready" > /dev/null

sync_run() {
  python3 scripts/load.py --url "http://127.0.0.1:$PORT" --images "${IMAGES[@]}" \
    --concurrency "$SYNC_C" --warmup 1 --out "$OUT/sync-$1.json" > "$OUT/sync-$1.md"
}
sync_run a
start=$(date +%s.%N)
$BIN submit "$OUT/pages" --server "http://127.0.0.1:$PORT" --out "$OUT/results" --quiet \
  2> "$OUT/submit.log"
end=$(date +%s.%N)
echo "$start $end" > "$OUT/jobs.time"
sync_run b
kill -TERM $SERVER
wait $SERVER || true
trap - EXIT
cat "$OUT/submit.log" >&2

python3 - "$OUT" "${#IMAGES[@]}" "$SYNC_C" <<'PY'
import json, sys
out, pages, c = sys.argv[1], int(sys.argv[2]), sys.argv[3]
a, b = map(float, open(f"{out}/jobs.time").read().split())
jobs = pages / (b - a)
s = [json.load(open(f"{out}/sync-{r}.json"))["levels"][0]["throughput_rps"] for r in "ab"]
mean = sum(s) / 2
print(f"| mode | pages/s |\n|---|---|")
print(f"| /v1/ocr, concurrency {c} (before) | {s[0]:.3f} |")
print(f"| jobs (`ocr-server submit`, {pages} files) | {jobs:.3f} |")
print(f"| /v1/ocr, concurrency {c} (after) | {s[1]:.3f} |")
print(f"\njobs / sync (mean of before and after): {jobs / mean:.2f}")
PY
