#!/usr/bin/env bash
# PDF speed through the CLI: scripts/bench_pdf.sh [OUT_DIR] (default target/bench-pdf).
#   1. builds a 50-page "scanned" PDF from the dev page images (one image per A4 page, JPEGs
#      embedded as they are) with img2pdf, in a throwaway venv (PyPI: img2pdf, Pillow);
#   2. OCRs it with `ocr-server ocr --stats` (one document: one worker) at --threads 1 and 2,
#      and prints pages/s from the CLI's own --stats line.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-target/bench-pdf}
EVAL=${OCR_EVAL_DIR:-../shared/eval}
PAGES=${PAGES:-50}
mkdir -p "$OUT"
cargo build --release --quiet
BIN=target/release/ocr-server
if ! "$OUT/venv/bin/python" -c 'import img2pdf, PIL' 2>/dev/null; then
  python3 -m venv "$OUT/venv"
  "$OUT/venv/bin/pip" install -q --disable-pip-version-check img2pdf==0.6.3 pillow
fi
"$OUT/venv/bin/python" - "$EVAL/dev" "$OUT/scanned-$PAGES.pdf" "$PAGES" <<'PY'
import glob, io, os, sys
import img2pdf
from PIL import Image
dev, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
srcs = sorted(p for p in glob.glob(f"{dev}/*.png") + glob.glob(f"{dev}/*.jpg")
              if "_p-" not in os.path.basename(p))  # not the renders of the dev PDF
blobs = []
for p in srcs:
    data = open(p, "rb").read()
    im = Image.open(io.BytesIO(data))
    if im.mode in ("RGBA", "LA", "P"):
        buf = io.BytesIO()
        im.convert("RGB").save(buf, "PNG")
        data = buf.getvalue()
    blobs.append(data)
a4 = (img2pdf.mm_to_pt(210), img2pdf.mm_to_pt(297))
layout = img2pdf.get_layout_fun(a4, fit=img2pdf.FitMode.into, auto_orient=True)
with open(out, "wb") as f:
    f.write(img2pdf.convert([blobs[i % len(blobs)] for i in range(n)], layout_fun=layout))
print(f"{out}: {n} pages from {len(srcs)} images, {os.path.getsize(out)} bytes", file=sys.stderr)
PY
echo "| threads | pages | seconds | pages/s |"
echo "|---|---|---|---|"
for t in 1 2; do
  "$BIN" ocr --threads "$t" --stats --format jsonl "$OUT/scanned-$PAGES.pdf" \
    > "$OUT/out-t$t.jsonl" 2> "$OUT/stats-t$t.txt"
  python3 - "$OUT/stats-t$t.txt" "$t" <<'PY'
import re, sys
line = [l for l in open(sys.argv[1]) if "pages/s" in l][-1]
m = re.search(r"(\d+) pages in ([\d.]+) s \(([\d.]+) pages/s", line)
print(f"| {sys.argv[2]} | {m.group(1)} | {m.group(2)} | {m.group(3)} |")
PY
done
