#!/usr/bin/env bash
# The dev-set PDF through the CLI at several rendering resolutions, scored by the eval scorer:
# scripts/eval_pdf.sh [DPI...] (default 150 200 300). Prints one Markdown row per DPI with CER,
# WER, alnum F1 and the CLI's pages/s (one worker, --threads 2).
set -euo pipefail
cd "$(dirname "$0")/.."
EVAL=${OCR_EVAL_DIR:-../shared/eval}
OUT=${OUT_DIR:-target/eval-pdf}
mkdir -p "$OUT"
cargo build --release --quiet
BIN=target/release/ocr-server
PDF=$EVAL/dev/pdf_pdflatex-4-pages.pdf
grep '"pdf_pdflatex-4-pages.pdf"' "$EVAL/dev/manifest.jsonl" > "$OUT/manifest.jsonl"
echo "| dpi | CER | WER | alnum F1 | pages/s |"
echo "|---|---|---|---|---|"
for dpi in "${@:-150 200 300}"; do
  for d in $dpi; do
    start=$(date +%s.%N)
    "$BIN" ocr --threads 2 --format jsonl --pdf-dpi "$d" "$PDF" > "$OUT/cli-$d.jsonl"
    end=$(date +%s.%N)
    python3 - "$OUT/cli-$d.jsonl" > "$OUT/preds-$d.jsonl" <<'PY'
import json, os, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    print(json.dumps({"file": os.path.basename(r["file"]), "text": r.get("text", "")}))
PY
    "${SCORE_PYTHON:-python3}" "$EVAL/score.py" --manifest "$OUT/manifest.jsonl" \
      --pred "$OUT/preds-$d.jsonl" --out "$OUT/scores-$d.json" > /dev/null
    python3 - "$OUT/scores-$d.json" "$d" "$start" "$end" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
m = s["overall"]["micro"]
secs = float(sys.argv[4]) - float(sys.argv[3])
print(f"| {sys.argv[2]} | {m['cer']:.4f} | {m['wer']:.4f} | {m['bow_alnum_f1']:.4f} | {4/secs:.3f} |")
PY
  done
done
