#!/usr/bin/env bash
# Bulk job throughput by store and replica count, in one run on one machine:
# scripts/bench_replicas.sh [OUT_DIR] (default target/bench-replicas).
#   1. starts PostgreSQL and S3 (scripts/services.sh) and builds the release binary;
#   2. runs `ocr-server bench --mode bulk` (each dev page image once as a one-page job) against
#      (a) one replica on SQLite, (b) one replica on PostgreSQL, (c) two replicas on one
#      PostgreSQL database sharing one document store, the bench talking to the first (the
#      second claims from the same queue), then (a) again, so drift on the machine shows;
#   3. prints bulk pages/s of each and the ratios PostgreSQL / SQLite and 2 / 1 replicas.
# The replicas share the machine's cores, so 2 replicas ≈ 1 replica is the expectation: the
# shared queue must cost nothing measurable.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-target/bench-replicas}
rm -rf "$OUT"
mkdir -p "$OUT"
cargo build --release --quiet
BIN=$PWD/target/release/ocr-server
PAGES=${OCR_EVAL_DIR:-../shared/eval}/dev
N=$(find "$PAGES" -maxdepth 1 \( -name '*.png' -o -name '*.jpg' \) | wc -l)
trap 'kill $(jobs -p) 2>/dev/null || true; scripts/services.sh stop' EXIT
scripts/services.sh start
# shellcheck disable=SC1091
. target/services/env

serve() { # NAME PORT FLAGS...
  local name=$1 port=$2
  shift 2
  "$BIN" serve --host 127.0.0.1 --port "$port" "$@" 2> "$OUT/$name.log" &
  for _ in $(seq 600); do
    curl -sf "http://127.0.0.1:$port/health/ready" > /dev/null && return 0
    sleep 0.2
  done
  echo "server $name never ready" >&2
  return 1
}

bulk() { # NAME PORT
  "$BIN" bench --server "http://127.0.0.1:$2" --mode bulk --bulk-pages "$N" \
    --pages "$PAGES" --out "$OUT/$1" > "$OUT/$1.md" 2> "$OUT/$1.err"
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["bulk"]["pages_per_s"])' \
    "$OUT/$1/summary.json"
}

stop_all() {
  kill $(jobs -p) 2>/dev/null || true
  wait 2>/dev/null || true
}

run_sqlite() {
  serve sqlite-$1 18201 --data-dir "$OUT/sqlite-$1-data"
  bulk sqlite-$1 18201
  stop_all
}

docs_pg1="file://$PWD/$OUT/pg1-docs"
docs_pg2="file://$PWD/$OUT/pg2-docs"
sqlite_a=$(run_sqlite a)
serve pg1 18202 --data-dir "$OUT/pg1-data" --database-url "$OCR_TEST_DATABASE_URL" \
  --object-store-url "$docs_pg1"
pg1=$(bulk pg1 18202)
stop_all
psql "$OCR_TEST_DATABASE_URL" -q -c 'TRUNCATE jobs, documents, pages, idempotency, events, deliveries, pauses'
serve pg2-a 18203 --data-dir "$OUT/pg2-a-data" --database-url "$OCR_TEST_DATABASE_URL" \
  --object-store-url "$docs_pg2"
serve pg2-b 18204 --data-dir "$OUT/pg2-b-data" --database-url "$OCR_TEST_DATABASE_URL" \
  --object-store-url "$docs_pg2"
pg2=$(bulk pg2 18203)
stop_all
sqlite_b=$(run_sqlite b)

python3 - "$sqlite_a" "$pg1" "$pg2" "$sqlite_b" "$N" <<'EOF' | tee "$OUT/summary.md"
import sys
a, p1, p2, b, n = map(float, sys.argv[1:])
s = (a + b) / 2
print(f"bulk pages/s over {int(n)} dev pages (one-page jobs), one run:")
print(f"| store | replicas | pages/s |\n|---|---|---|")
print(f"| SQLite (first) | 1 | {a:.3f} |\n| PostgreSQL | 1 | {p1:.3f} |")
print(f"| PostgreSQL | 2 | {p2:.3f} |\n| SQLite (last) | 1 | {b:.3f} |")
print(f"PostgreSQL / SQLite (mean of both SQLite runs): {p1 / s:.2f}")
print(f"2 replicas / 1 replica (PostgreSQL): {p2 / p1:.2f}")
EOF
