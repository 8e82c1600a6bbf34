#!/usr/bin/env bash
# Memory bombs against the real server: scripts/bombs.sh [COUNT] [INFLATE_MIB]   (16, 1024)
#
# Starts ${OCR_SERVER_BIN:-target/debug/ocr-server} (scripts/lib/server.sh; extra serve flags
# from $BOMBS_SERVE_FLAGS, none by default: the binary's own limits), warms it with one real
# page, then scripts/bombs.py sends COUNT flate-bomb PDFs (about 1 MB each, one content stream
# inflating to INFLATE_MIB MiB) to POST /v1/ocr at once and prints the answers, the server's
# idle VmRSS and its peak (VmHWM). The same command measures any build: point OCR_SERVER_BIN at
# an older binary to compare (NOTES.md, session 6: main before the memory budget against after).
# Not part of scripts/test.sh: tests/hostile.rs checks the budget in CI.
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${1:-16}
INFLATE=${2:-1024}
scripts/setup.sh
# shellcheck source=scripts/lib/server.sh
. scripts/lib/server.sh
trap server_stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
# shellcheck disable=SC2086
server_start ${BOMBS_SERVE_FLAGS:-}
code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: image/png' \
  --data-binary @samples/phototest.png "$SERVER_URL/v1/ocr")
echo "bombs: warm-up page answered $code" >&2
python3 scripts/bombs.py --url "$SERVER_URL" --pid "$SERVER_PID" --count "$COUNT" \
  --inflate-mib "$INFLATE"
