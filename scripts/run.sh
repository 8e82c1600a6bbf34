#!/usr/bin/env bash
# Sets everything up on a fresh machine and runs the main job: scripts/run.sh [FILES...]
# Installs the runtime and models (scripts/setup.sh), builds the release binary and OCRs the
# given files, or the sample page samples/phototest.png, with the default model.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --quiet
if [ $# -eq 0 ]; then set -- samples/phototest.png; fi
exec target/release/ocr-server ocr "$@"
