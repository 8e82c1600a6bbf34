#!/usr/bin/env bash
# The server's answers for the dev set, for a before/after check of a refactor:
# scripts/dev_json.sh OUTDIR [QUERY]   (QUERY default: extract=auto)
#
# Starts the real server binary (${OCR_SERVER_BIN:-target/release/ocr-server}; scripts/lib/
# server.sh: a throwaway --data-dir, SQLite jobs, no keys) and, for every page image in
# ../shared/eval/dev (or $DEV_DIR), writes
#   OUTDIR/NAME.ocr.json   the body of POST /v1/ocr?QUERY, without `timings`
#   OUTDIR/NAME.job.json   the body of GET /v1/jobs/{id}/result of a job made with the same
#                          image and QUERY (POST /v1/jobs?QUERY&name=NAME), once completed
# then checks that each page's JSON is the same through both routes (the sync answer's `pages`
# and `extractions` against the job result's first document) and exits non-zero when one is not.
#
# Before/after a refactor: run it on the old binary into one directory and on the new one into
# another on the same machine, then `diff -r BEFORE AFTER` (byte-for-byte; the JSON is the
# server's own, only `timings` and the job's ids and dates removed). The figures depend on the
# CPU (AVX2, AVX-512 and AMX kernels round differently), so a directory is compared only with
# one written on the same machine, never kept as a snapshot.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: scripts/dev_json.sh OUTDIR [QUERY]}
QUERY=${2:-extract=auto}
DEV=${DEV_DIR:-../shared/eval/dev}
export OCR_SERVER_BIN=${OCR_SERVER_BIN:-target/release/ocr-server}
# shellcheck source=scripts/lib/server.sh
. scripts/lib/server.sh
trap server_stop EXIT
mkdir -p "$OUT"
server_start
strip='import json,sys
v=json.load(sys.stdin)
v.pop("timings",None)
for k in ("id","created_at","finished_at","updated_at"):
    v.pop(k,None)
json.dump(v,sys.stdout,ensure_ascii=False,sort_keys=False,indent=None)'
n=0
for f in "$DEV"/*.png "$DEV"/*.jpg; do
  [ -e "$f" ] || continue
  name=$(basename "${f%.*}")
  ctype=image/png
  case "$f" in *.jpg) ctype=image/jpeg ;; esac
  curl -sf -X POST -H "content-type: $ctype" --data-binary "@$f" \
    "$SERVER_URL/v1/ocr?$QUERY" | python3 -c "$strip" >"$OUT/$name.ocr.json"
  loc=$(curl -sf -D - -o /dev/null -X POST -H "content-type: $ctype" --data-binary "@$f" \
    "$SERVER_URL/v1/jobs?$QUERY&name=$name" | tr -d '\r' | sed -n 's/^location: //Ip')
  for _ in $(seq 1 600); do
    state=$(curl -sf "$SERVER_URL$loc" | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])')
    case "$state" in completed | needs_review | failed) break ;; esac
    sleep 0.2
  done
  curl -sf "$SERVER_URL$loc/result" | python3 -c "$strip" >"$OUT/$name.job.json"
  n=$((n + 1))
done
echo "dev_json: $n pages written to $OUT" >&2
python3 - "$OUT" <<'EOF'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
bad = 0
for ocr in sorted(out.glob("*.ocr.json")):
    job = ocr.with_name(ocr.name.replace(".ocr.json", ".job.json"))
    a, b = json.loads(ocr.read_text()), json.loads(job.read_text())
    doc = b["documents"][0]
    same = a["pages"] == doc["pages"] and a.get("extractions", []) == doc.get("extractions", [])
    if not same:
        bad += 1
        print(f"dev_json: {ocr.stem}: /v1/ocr and the job disagree", file=sys.stderr)
print(f"dev_json: {len(list(out.glob('*.ocr.json')))} pages, {bad} disagreeing", file=sys.stderr)
sys.exit(1 if bad else 0)
EOF
