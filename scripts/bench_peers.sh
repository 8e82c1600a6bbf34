#!/usr/bin/env bash
# Ours against the peer engines on the same pages, the same cores and the same thread budget:
#   scripts/bench_peers.sh [MODEL] [THREADS]     (MODEL: v6 | v4, default v6; THREADS default 2)
# Env: OUT (default target/bench-peers); PAGES, a directory of page images (default
# ${OCR_EVAL_DIR:-../shared/eval}/dev; its *.png and *.jpg are used, other files ignored);
# SKIP_OURS=1 measures the peers only; TESSERACT=0 skips Tesseract; OCR_BIN, the binary (default
# target/release/ocr-server, built with `cargo build --release` if missing).
#
# Every measurement runs under `taskset -c 0-$((THREADS-1))`, one after the other:
#   1. RapidOCR (1.4.4 for v4, 3.10.0 for v6; .venv-peers from scripts/setup_peers.sh) with
#      THREADS ONNX Runtime intra-op threads, through scripts/peer_bench.py: one untimed warm-up
#      call, then one pass over the pages, each read from disk inside its call -> bulk pages/s,
#      and each call's wall time -> single-call latency p50/p90/p99 (nearest rank);
#   2. Tesseract (Debian's tesseract-ocr, installed here if missing and we are root with apt;
#      skipped with a message otherwise): bulk = THREADS single-threaded `tesseract IMG -`
#      processes at a time (OMP_THREAD_LIMIT=1, xargs -P THREADS) -> pages/s; latency = one
#      process at a time over the pages (process start and model load included: that is what a
#      Tesseract CLI call costs);
#   3. ours: `ocr-server bench --mode bulk --mode sync --concurrency 1` (bulk: each page once) with
#      --rec-workers=THREADS (the bench spawns its own server) -> $OUT/ours/summary.json.
# Prints a Markdown table (ratios: ours/peer for throughput, peer/ours for latency, so > 1
# means ours is better) and writes it to $OUT/peers.md; raw JSON lands in $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-v6}
THREADS=${2:-2}
OUT=${OUT:-target/bench-peers}
PAGES=${PAGES:-${OCR_EVAL_DIR:-../shared/eval}/dev}
case $MODEL in
  v4) ENGINE=rapidocr-v4 PEER_NAME="RapidOCR 1.4.4" ;;
  v6) ENGINE=rapidocr-v6 PEER_NAME="RapidOCR 3.10.0" ;;
  *) echo "bench_peers: MODEL must be v6 or v4, not '$MODEL'" >&2; exit 2 ;;
esac
if ! [[ $THREADS =~ ^[1-9][0-9]*$ ]] || [ "$THREADS" -gt "$(nproc)" ]; then
  echo "bench_peers: THREADS must be 1..$(nproc) (this machine's cores), not '$THREADS'" >&2
  exit 2
fi
CPUS=0-$((THREADS - 1))
PIN=(taskset -c "$CPUS")
BIN=${OCR_BIN:-target/release/ocr-server}

# The page set, as symlinks in one directory, so every engine (ours takes a directory) sees
# exactly the same files.
[ -d "$PAGES" ] || { echo "bench_peers: PAGES=$PAGES is not a directory" >&2; exit 2; }
# only what this script writes, so a stray OUT=. cannot remove anything else
rm -rf "$OUT/pages" "$OUT/ours" "$OUT/tesseract" "$OUT/tesseract.json" "$OUT/peers.md" \
  "$OUT/peers.json" "$OUT"/rapidocr-*
mkdir -p "$OUT/pages"
mapfile -t IMAGES < <(find -L "$PAGES" -maxdepth 1 -type f \( -name '*.png' -o -name '*.jpg' \) | sort)
[ ${#IMAGES[@]} -gt 0 ] || { echo "bench_peers: no *.png or *.jpg in $PAGES" >&2; exit 2; }
for f in "${IMAGES[@]}"; do ln -s "$(realpath "$f")" "$OUT/pages/"; done
mapfile -t IMAGES < <(find "$OUT/pages" -mindepth 1 | sort)
echo "bench_peers: ${#IMAGES[@]} pages from $PAGES, model $MODEL, $THREADS thread(s) on cpus $CPUS" >&2

# Setup first, so a failure costs no measuring time.
scripts/setup_peers.sh >&2
if [ "${SKIP_OURS:-0}" != 1 ] && [ ! -x "$BIN" ]; then
  cargo build --release --quiet
fi

have_tesseract() {
  [ "${TESSERACT:-1}" != 0 ] || { echo "bench_peers: TESSERACT=0, skipping Tesseract" >&2; return 1; }
  command -v tesseract > /dev/null && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
    echo "bench_peers: installing tesseract-ocr from Debian" >&2
    local apt=(env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends tesseract-ocr)
    "${apt[@]}" > /dev/null 2>&1 || { apt-get update -q > /dev/null 2>&1 && "${apt[@]}" > /dev/null 2>&1; } || true
  fi
  command -v tesseract > /dev/null && return 0
  echo "bench_peers: no tesseract and cannot install it (needs root and a working apt-get);" \
    "skipping the Tesseract column" >&2
  return 1
}

# 1. RapidOCR.
echo "bench_peers: $PEER_NAME, $THREADS intra-op thread(s)" >&2
"${PIN[@]}" .venv-peers/bin/python scripts/peer_bench.py --engine "$ENGINE" --threads "$THREADS" \
  --out "$OUT/$ENGINE.jsonl" "${IMAGES[@]}" 2> "$OUT/$ENGINE.log" | tail -n1 > "$OUT/$ENGINE.json" \
  || { echo "bench_peers: $ENGINE failed, see $OUT/$ENGINE.log" >&2; exit 1; }

# 2. Tesseract. Failures here only drop the Tesseract column.
tesseract_bench() {
  local dir=$OUT/tesseract t0 t1 f
  mkdir -p "$dir/text"
  tesseract --version 2>&1 | head -n1 > "$dir/version"
  # untimed warm-up: page cache for the binary and traineddata
  OMP_THREAD_LIMIT=1 "${PIN[@]}" tesseract "${IMAGES[0]}" - > /dev/null 2>&1 || return 1
  t0=$EPOCHREALTIME
  # shellcheck disable=SC2016  # $1 and $TESS_DIR are the inner sh's
  printf '%s\0' "${IMAGES[@]}" | OMP_THREAD_LIMIT=1 TESS_DIR=$dir/text "${PIN[@]}" \
    xargs -0 -n1 -P "$THREADS" sh -c 'tesseract "$1" - 2>/dev/null > "$TESS_DIR/${1##*/}.txt"' sh \
    || return 1
  t1=$EPOCHREALTIME
  echo "$t0 $t1" > "$dir/bulk.time"
  : > "$dir/latency.txt"
  for f in "${IMAGES[@]}"; do
    t0=$EPOCHREALTIME
    OMP_THREAD_LIMIT=1 "${PIN[@]}" tesseract "$f" - > /dev/null 2>&1 || return 1
    t1=$EPOCHREALTIME
    echo "$t0 $t1" >> "$dir/latency.txt"
  done
  python3 - "$dir" "${#IMAGES[@]}" "$THREADS" > "$OUT/tesseract.json" <<'PY'
import json, math, statistics, sys
d, pages, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
a, b = map(float, open(f"{d}/bulk.time").read().split())
ms = sorted((float(y) - float(x)) * 1000 for x, y in (l.split() for l in open(f"{d}/latency.txt")))
rank = lambda p: ms[max(1, math.ceil(p / 100 * len(ms))) - 1]
print(json.dumps({
    "engine": "tesseract", "version": open(f"{d}/version").read().strip(), "processes": threads,
    "bulk": {"pages": pages, "seconds": round(b - a, 3), "pages_per_s": round(pages / (b - a), 4)},
    "latency_ms": {"n": len(ms), "p50": round(rank(50), 1), "p90": round(rank(90), 1),
                   "p99": round(rank(99), 1), "mean": round(statistics.fmean(ms), 1),
                   "max": round(ms[-1], 1)}}))
PY
}
if have_tesseract; then
  echo "bench_peers: Tesseract, $THREADS single-threaded process(es)" >&2
  tesseract_bench || { echo "bench_peers: Tesseract failed; dropping its column" >&2; rm -f "$OUT/tesseract.json"; }
fi

# 3. Ours.
ours_status=0
if [ "${SKIP_OURS:-0}" = 1 ]; then
  echo "bench_peers: SKIP_OURS=1, not measuring ocr-server" >&2
else
  echo "bench_peers: ocr-server bench, --rec-workers=$THREADS" >&2
  # --bulk-pages: the same pages as the peers' one pass, each once.
  "${PIN[@]}" "$BIN" bench --mode bulk --mode sync --concurrency 1 --pages "$OUT/pages" \
    --bulk-pages "${#IMAGES[@]}" \
    --out "$OUT/ours" --model "$MODEL" --serve-arg=--rec-workers="$THREADS" >&2 || ours_status=$?
  if [ ! -s "$OUT/ours/summary.json" ]; then
    echo "bench_peers: ocr-server bench exited with status $ours_status and wrote no" \
      "$OUT/ours/summary.json; the table below has the peers only" >&2
    ours_status=1
  elif [ "$ours_status" != 0 ]; then
    echo "bench_peers: ocr-server bench exited with status $ours_status (summary.json written)" >&2
  fi
fi

python3 - "$OUT" "$ENGINE" "$PEER_NAME" "$MODEL" "$THREADS" "$CPUS" "${#IMAGES[@]}" "$PAGES" <<'PY' | tee "$OUT/peers.md"
import json, os, sys, time
out, engine, peer_name, model, threads, cpus, pages, src = sys.argv[1:]

def load(path):
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None

rapid = load(f"{out}/{engine}.json")
tess = load(f"{out}/tesseract.json")
summary = load(f"{out}/ours/summary.json")
ours = None
if summary:
    sync1 = next((s for s in summary.get("sync", []) if s.get("concurrency") == 1), None)
    bulk = summary.get("bulk") or {}
    ours = {"bulk": {"pages": bulk.get("pages"), "pages_per_s": bulk.get("pages_per_s")},
            "latency_ms": {k: sync1.get(f"{k}_ms") for k in ("p50", "p90", "p99")} if sync1 else {}}
    if bulk.get("pages") not in (None, int(pages)):
        print(f"warning: ours bulk ran {bulk.get('pages')} pages, the peers {pages}", file=sys.stderr)

cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
nproc = os.cpu_count()
date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
tess_name = tess["version"].replace("tesseract ", "Tesseract ") if tess else "Tesseract"

def get(r, sect, key):
    return (r or {}).get(sect, {}).get(key)

def fmt(v, nd):
    return "n/a" if v is None else f"{v:.{nd}f}"

def ratio(a, b):
    return "n/a" if a is None or b is None or b == 0 else f"{a / b:.2f}x"

rows = [("bulk pages/s", "bulk", "pages_per_s", 3, True)] + [
    (f"single-call {k} ms", "latency_ms", k, 0, False) for k in ("p50", "p90", "p99")]
print(f"Peers vs ocr-server: model {model}, {threads} thread(s) pinned to cpus {cpus}, "
      f"{pages} pages from {src}")
print(f"Machine: {nproc} cores, {cpu}; {date}\n")
print(f"| measure | ours | {peer_name} | ours vs RapidOCR | {tess_name} | ours vs Tesseract |")
print("|---|---|---|---|---|---|")
for label, sect, key, nd, higher_better in rows:
    o, r, t = get(ours, sect, key), get(rapid, sect, key), get(tess, sect, key)
    vr, vt = (ratio(o, r), ratio(o, t)) if higher_better else (ratio(r, o), ratio(t, o))
    print(f"| {label} | {fmt(o, nd)} | {fmt(r, nd)} | {vr} | {fmt(t, nd)} | {vt} |")
print("\nours: `ocr-server bench` bulk mode, and sync mode at concurrency 1 (one request at a "
      f"time); {peer_name}: {threads} intra-op threads, one pass, one call per page; "
      f"Tesseract: {threads} single-threaded processes for bulk, one process per call for "
      "latency (start-up included). Ratios > 1 mean ours is better (throughput ours/peer, "
      "latency peer/ours).")
with open(f"{out}/peers.json", "w") as fh:
    json.dump({"model": model, "threads": threads, "cpus": cpus, "pages": int(pages),
               "machine": {"nproc": nproc, "cpu": cpu}, "date": date,
               "ours": summary, engine: rapid, "tesseract": tess}, fh, indent=1)
PY
exit $ours_status
