#!/usr/bin/env bash
# Scores the release CLI on the dev set: scripts/eval_dev.sh [OCR FLAGS...]
# e.g. scripts/eval_dev.sh --model v4 --det-limit-type max --det-limit-side 960
# Env: OCR_BIN, the binary (default target/release/ocr-server, built if missing).
# Prints score.py's table and the CLI's pages/s. Rendered PDF pages (*_p-N.png) stand in for the
# PDF entry (its pages' texts joined), as the peers in BASELINES.md were scored.
set -euo pipefail
cd "$(dirname "$0")/.."
eval_dir=${OCR_EVAL_DIR:-../shared/eval}
out=${OUT_DIR:-target/eval}
mkdir -p "$out"
bin=${OCR_BIN:-target/release/ocr-server}
[ -x "$bin" ] || cargo build --release --quiet
files=$(ls "$eval_dir"/dev/*.png "$eval_dir"/dev/*.jpg | sort)
# shellcheck disable=SC2086
"$bin" ocr --format jsonl --stats "$@" $files > "$out/cli.jsonl"
python3 scripts/dev_preds.py "$out/cli.jsonl" > "$out/preds.jsonl"
"${SCORE_PYTHON:-python3}" "$eval_dir/score.py" --manifest "$eval_dir/dev/manifest.jsonl" --pred "$out/preds.jsonl" --categories --out "$out/scores.json"
