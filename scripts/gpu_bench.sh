#!/usr/bin/env bash
# This project's GPU figures, in one command, on a machine with an NVIDIA GPU:
#   scripts/gpu_bench.sh
# Env: OUT (default target/gpu-bench); PAGES, page images (default ${OCR_EVAL_DIR:-../shared/eval}/dev);
# MODEL (default v6); WHEELS, a directory of wheels to install from instead of PyPI (a machine
# without internet: `pip download` them elsewhere); VENV (default .venv-gpu); RAW_REC_BATCH
# (default 1,16,64); RAW_WORKERS, sessions of the raw limit (default 2, as the server's
# recognition workers on CUDA); CONCURRENCY, the sync sweep (default 1,4,16,32); BULK_PAGES (default 4× the
# set); SKIP_INSTALL=1 uses what VENV already has.
#
# What it does, in order:
#   1. checks `nvidia-smi` sees a GPU (exit 2 otherwise: this script measures nothing on CPU);
#   2. scripts/setup.sh (models, checksummed), then onnxruntime-gpu 1.31.1 (built for CUDA 13 and
#      cuDNN 9) and the nvidia-* wheels it needs (cudart, nvrtc, cublas, cufft, curand, cudnn-cu13,
#      about 1.6 GB) into VENV; their lib directories go on LD_LIBRARY_PATH (FACTS.md, "GPU");
#   3. `cargo build --release --features cuda`;
#   4. one `ocr-server bench` run with `--device cuda --backend ort`: the raw-model limit
#      (`--raw`, the GPU sessions alone over the prepared pages, at each RAW_REC_BATCH), bulk
#      (one-page jobs to completion) and a closed-loop sync sweep, the server started by the
#      bench with the CUDA defaults (detection batches of 4, recognition batches of 16 lines of one
#      pad width, every bucket shape warmed, no core gate); the server's log is checked for the
#      CPU-fallback error, which fails the run (a number measured on CPU is not a GPU number);
#   5. `nvidia-smi` samples utilisation and memory every 500 ms during step 4; their mean and
#      peak, with the GPU's name, driver and memory, are added to OUT/summary.json as `gpu`.
# Prints the bench's tables and the GPU line; everything lands in OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-target/gpu-bench}
PAGES=${PAGES:-${OCR_EVAL_DIR:-../shared/eval}/dev}
MODEL=${MODEL:-v6}
VENV=${VENV:-.venv-gpu}
RAW_REC_BATCH=${RAW_REC_BATCH:-1,16,64}
RAW_WORKERS=${RAW_WORKERS:-2}
CONCURRENCY=${CONCURRENCY:-1,4,16,32}
ORT_VERSION=1.31.1

if ! command -v nvidia-smi > /dev/null || ! nvidia-smi -L > /dev/null 2>&1; then
  echo "gpu_bench: no NVIDIA GPU here (nvidia-smi missing or sees none); nothing measured" >&2
  exit 2
fi
nvidia-smi -L >&2
mkdir -p "$OUT"

scripts/setup.sh >&2
if [ "${SKIP_INSTALL:-0}" != 1 ]; then
  [ -x "$VENV/bin/pip" ] || python3 -m venv "$VENV"
  PIP=("$VENV/bin/pip" install --disable-pip-version-check --quiet)
  [ -n "${WHEELS:-}" ] && PIP+=(--no-index --find-links "$WHEELS")
  # --no-deps for onnxruntime-gpu: only its shared libraries are used, not its Python module.
  "${PIP[@]}" --no-deps "onnxruntime-gpu==$ORT_VERSION"
  "${PIP[@]}" nvidia-cuda-runtime nvidia-cuda-nvrtc nvidia-cublas nvidia-cufft nvidia-curand \
    nvidia-cudnn-cu13
fi
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
ORT_LIB="$SITE/onnxruntime/capi/libonnxruntime.so.$ORT_VERSION"
[ -f "$ORT_LIB" ] || { echo "gpu_bench: $ORT_LIB missing (onnxruntime-gpu not installed?)" >&2; exit 1; }
LIBS=$(find "$SITE/nvidia" -type d -name lib 2> /dev/null | sort | paste -sd: -)
export LD_LIBRARY_PATH="${LIBS}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
missing=$(ldd "$(dirname "$ORT_LIB")/libonnxruntime_providers_cuda.so" | grep 'not found' || true)
[ -z "$missing" ] || { echo "gpu_bench: the CUDA provider cannot load: $missing" >&2; exit 1; }

cargo build --release --features cuda >&2
BIN=target/release/ocr-server

nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits -lms 500 \
  > "$OUT/gpu-samples.csv" &
SAMPLER=$!
trap 'kill $SAMPLER 2> /dev/null || true' EXIT
BULK=()
[ -n "${BULK_PAGES:-}" ] && BULK=(--bulk-pages "$BULK_PAGES")
# The started server's log (stderr) goes to a file, so a silent CPU fallback cannot pass.
OCR_LOG=info "$BIN" bench --device cuda --backend ort --ort-lib "$ORT_LIB" --model "$MODEL" \
  --raw --raw-workers "$RAW_WORKERS" --raw-rec-batch "$RAW_REC_BATCH" --mode bulk --mode sync --concurrency "$CONCURRENCY" \
  "${BULK[@]}" --pages "$PAGES" --out "$OUT" --quiet 2> "$OUT/bench.log" | tee "$OUT/tables.md"
kill $SAMPLER 2> /dev/null || true
if grep -q 'RUNNING ON CPU' "$OUT/bench.log"; then
  grep 'RUNNING ON CPU' "$OUT/bench.log" | head -3 >&2
  echo "gpu_bench: CUDA was not used (above); these are CPU numbers, not GPU ones" >&2
  exit 1
fi

python3 - "$OUT" << 'EOF'
import csv, json, subprocess, sys
out = sys.argv[1]
util, mem = [], []
with open(f"{out}/gpu-samples.csv") as f:
    for row in csv.reader(f):
        try:
            util.append(float(row[0])); mem.append(float(row[1]))
        except (ValueError, IndexError):
            pass
info = subprocess.run(
    ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
    capture_output=True, text=True, check=True).stdout.strip().splitlines()
gpu = {
    "gpus": info,
    "samples": len(util),
    "utilization_mean_pct": round(sum(util) / len(util), 1) if util else None,
    "utilization_max_pct": max(util) if util else None,
    "memory_used_max_mib": max(mem) if mem else None,
}
path = f"{out}/summary.json"
summary = json.load(open(path))
summary["gpu"] = gpu
json.dump(summary, open(path, "w"), indent=2)
print(f"gpu: {info[0] if info else '?'}; utilisation mean {gpu['utilization_mean_pct']} %, "
      f"max {gpu['utilization_max_pct']} %; memory used max {gpu['memory_used_max_mib']} MiB "
      f"({len(util)} samples)")
EOF
