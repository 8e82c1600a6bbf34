# Sourced by scripts/schemathesis.sh and scripts/soak.sh (not run by itself): starts the real
# server binary on a free loopback port over a throwaway data directory, waits until it is ready,
# and stops it again.
#
#   . scripts/lib/server.sh
#   server_start [EXTRA SERVE FLAGS...]   sets SERVER_PID, SERVER_URL, SERVER_DATA, SERVER_LOG
#   server_stop                           SIGTERM, then SIGKILL after $SERVER_STOP_GRACE s (10);
#                                         removes the data directory; safe to call twice
#
# The binary is ${OCR_SERVER_BIN:-target/debug/ocr-server}. `serve` gets `--port 0` (the kernel
# picks a free port; the server prints it as `ocr-server: listening on http://ADDR`), `--host
# 127.0.0.1` and a fresh `--data-dir` under ${TMPDIR:-/tmp}, so jobs are on (SQLite in
# DATA/jobs.db, documents in DATA/documents) and no key exists (`--auth auto`: open). Everything
# else is the binary's defaults (PP-OCRv6). The server's stderr goes to $SERVER_LOG (in the data
# directory, so copy it before server_stop if you want to keep it).
# Callers install `trap server_stop EXIT` before server_start, so no server outlives the script.

SERVER_BIN=${OCR_SERVER_BIN:-target/debug/ocr-server}
SERVER_READY_TIMEOUT=${SERVER_READY_TIMEOUT:-180}   # seconds for models to load and warm up
SERVER_STOP_GRACE=${SERVER_STOP_GRACE:-10}
SERVER_PID=
SERVER_URL=
SERVER_DATA=
SERVER_LOG=

# Status code of GET $1 (000 when nothing answered).
_server_get() {
  curl -s -o /dev/null -m 5 -w '%{http_code}' "$1" 2>/dev/null || true
}

_server_alive() { [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; }

server_start() {
  local deadline addr code
  if [ ! -x "$SERVER_BIN" ]; then
    echo "server: no executable $SERVER_BIN (build it: cargo build, or set OCR_SERVER_BIN)" >&2
    return 1
  fi
  command -v curl >/dev/null || { echo "server: curl is needed" >&2; return 1; }
  SERVER_DATA=$(mktemp -d "${TMPDIR:-/tmp}/ocr-server-data.XXXXXX")
  SERVER_LOG=$SERVER_DATA/server.log
  "$SERVER_BIN" serve --host 127.0.0.1 --port 0 --data-dir "$SERVER_DATA" "$@" \
    </dev/null >/dev/null 2>"$SERVER_LOG" &
  SERVER_PID=$!
  deadline=$(($(date +%s) + SERVER_READY_TIMEOUT))
  addr=
  while [ -z "$addr" ]; do
    addr=$(sed -n 's|^ocr-server: listening on http://\([^ ]*\).*|\1|p' "$SERVER_LOG" | head -n1)
    [ -n "$addr" ] && break
    if ! _server_alive; then
      tail -n 30 "$SERVER_LOG" >&2
      echo "server: $SERVER_BIN exited during start" >&2
      return 1
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      tail -n 30 "$SERVER_LOG" >&2
      echo "server: no 'listening on' line after ${SERVER_READY_TIMEOUT}s" >&2
      return 1
    fi
    sleep 0.1
  done
  SERVER_URL=http://$addr
  while :; do
    code=$(_server_get "$SERVER_URL/health/ready")
    [ "$code" = 200 ] && break
    if ! _server_alive; then
      tail -n 30 "$SERVER_LOG" >&2
      echo "server: exited before ready" >&2
      return 1
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      tail -n 30 "$SERVER_LOG" >&2
      echo "server: /health/ready still $code after ${SERVER_READY_TIMEOUT}s" >&2
      return 1
    fi
    sleep 0.2
  done
  echo "server: pid $SERVER_PID ready on $SERVER_URL (data $SERVER_DATA)" >&2
}

server_stop() {
  local i
  if _server_alive; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for ((i = 0; i < SERVER_STOP_GRACE * 10; i++)); do
      _server_alive || break
      sleep 0.1
    done
    if _server_alive; then
      echo "server: pid $SERVER_PID still running ${SERVER_STOP_GRACE}s after SIGTERM; SIGKILL" >&2
      kill -KILL "$SERVER_PID" 2>/dev/null || true
    fi
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  SERVER_PID=
  if [ -n "$SERVER_DATA" ] && [ -d "$SERVER_DATA" ]; then rm -rf "$SERVER_DATA"; fi
  SERVER_DATA=
}
