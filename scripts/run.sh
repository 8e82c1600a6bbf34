#!/usr/bin/env bash
# Sets everything up on a fresh machine and runs the server: scripts/run.sh [SERVE FLAGS...]
# Installs the runtime and models (scripts/setup.sh), builds the release binary and starts
# `ocr-server serve` on its embedded defaults: http://127.0.0.1:8080, PP-OCRv6. Extra
# arguments go to `serve` (see `target/release/ocr-server serve --help`). Stop it with Ctrl-C:
# it finishes the requests it admitted, then exits.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --quiet
exec target/release/ocr-server serve --host 127.0.0.1 --port 8080 "$@"
