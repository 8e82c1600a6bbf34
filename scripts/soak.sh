#!/usr/bin/env bash
# Memory soak of the real server: scripts/soak.sh [REQUESTS] [CONCURRENCY]   (10000, 4)
#
# Starts the real server binary (${OCR_SERVER_BIN:-target/debug/ocr-server}; real models via
# scripts/setup.sh) on a free loopback port over a throwaway --data-dir, the same way as
# scripts/schemathesis.sh (scripts/lib/server.sh; extra serve flags from $SOAK_SERVE_FLAGS), then
# scripts/soak.py (Python standard library only) sends REQUESTS small real OCR requests
# (POST /v1/ocr, a 265x67 two-line crop of samples/phototest.png, or $SOAK_IMAGE as is) with
# CONCURRENCY in flight, samples the server's VmRSS every $SOAK_SAMPLE_EVERY completed requests
# (500; fewer when that would give under 10 samples), and prints the samples, the RSS slopes
# in KiB per 1,000 requests over the samples after the first 20 % (warm-up): least-squares, and
# the median of the slopes between consecutive samples (the one checked), the answers by status
# and the total time.
#
# $SOAK_MAX_SECONDS (default 0: none) bounds the whole run: past it no new request is sent and
# the soak fails, saying how many requests were done.
# Exit status non-zero when any answer was a 5xx, a request met a connection error, an OK answer
# had no text, or the median slope is over $SOAK_MAX_SLOPE_KIB (default 2048 KiB per 1,000
# requests, i.e. 2 KiB per request). Why 2048: every request allocates far more than 2 KiB that
# must all be freed: its body (~1 KiB PNG), the decoded page (265x67x3 = 52 KiB), detection's
# input and output tensors (hundreds of KiB at the model's input size), one recognition tensor
# per line and the JSON answer; leaking any one of those, or a per-request task, connection or
# job-store entry with its buffers, grows RSS by well over 2 KiB per request, in every interval.
# Why the median: a steady server's RSS also grows, but in a few steps of tens of MiB (allocator
# arenas, ONNX Runtime's arena taking a new batch shape) at unpredictable moments, then stays
# flat; one step in a short run is enough to push a least-squares slope far past any limit (CI,
# 2026-12-03: +74 MiB at request 1,350 of 1,500, slope 70,674 KiB per 1,000), while the median
# of the interval slopes ignores a minority of steps and still sees a leak, which grows every
# interval. CI runs it short (1500 requests, 7 intervals after the warm-up).
set -euo pipefail
cd "$(dirname "$0")/.."
REQUESTS=${1:-10000}
CONCURRENCY=${2:-4}
MAX_SLOPE=${SOAK_MAX_SLOPE_KIB:-2048}
EVERY=${SOAK_SAMPLE_EVERY:-500}
OUT=${SOAK_OUT:-target/soak}
if [ $((REQUESTS / EVERY)) -lt 10 ]; then
  EVERY=$((REQUESTS / 10))
  [ "$EVERY" -ge 1 ] || EVERY=1
fi

scripts/setup.sh
# shellcheck source=scripts/lib/server.sh
. scripts/lib/server.sh
mkdir -p "$OUT"
on_exit() {
  [ -z "$SERVER_LOG" ] || cp "$SERVER_LOG" "$OUT/server.log" 2>/dev/null || true
  server_stop
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
# The detector keeps the small page at its own size (`max` 960) instead of the model set's default
# (v6: `min` 736 upscales the 265x67 crop to 2908x736: ~1.9 s of detection per request in a
# debug build against ~0.25 s): the soak exercises the request path's memory (body, decode,
# tensors, answer, connection, job-store entries), and 10x more requests in the same time
# weigh more than an upscaled page does. $SOAK_SERVE_FLAGS replaces these flags.
# shellcheck disable=SC2086
server_start ${SOAK_SERVE_FLAGS:---det-limit-type max --det-limit-side 960}

start=$(date +%s.%N)
rc=0
python3 scripts/soak.py --url "$SERVER_URL" --pid "$SERVER_PID" --requests "$REQUESTS" \
  --concurrency "$CONCURRENCY" --sample-every "$EVERY" --max-slope-kib "$MAX_SLOPE" \
  --max-seconds "${SOAK_MAX_SECONDS:-0}" \
  ${SOAK_IMAGE:+--image "$SOAK_IMAGE"} --json "$OUT/soak.json" || rc=$?
end=$(date +%s.%N)
if grep -q 'panicked' "$SERVER_LOG"; then
  echo "soak: the server log has a panic:" >&2
  grep -m5 -A3 'panicked' "$SERVER_LOG" >&2 || true
  [ "$rc" != 0 ] || rc=1
fi
if ! kill -0 "$SERVER_PID" 2>/dev/null; then
  echo "soak: the server died during the soak" >&2
  [ "$rc" != 0 ] || rc=1
fi
echo "soak: total $(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }') s for $REQUESTS requests at concurrency $CONCURRENCY (samples every $EVERY); $([ "$rc" = 0 ] && echo PASSED || echo "FAILED (exit $rc)")" >&2
exit "$rc"
