#!/usr/bin/env bash
# Fuzzes the parsers that hostile input reaches, with cargo-fuzz (libFuzzer):
#   scripts/fuzz.sh SECONDS [TARGET...]
# runs each target (default: all of image_decode document body prefer pages options; the
# targets are fuzz/fuzz_targets/*.rs over src/fuzzing.rs) for SECONDS:
#   1. cargo-fuzz, pinned, is installed when missing; the nightly toolchain must already be
#      there (sanitizer coverage needs it, and rustup cannot download one here): without it the
#      script stops with an error saying so;
#   2. every target is built once, optimised, with debug assertions and overflow checks, without
#      AddressSanitizer (the crate is safe Rust; FUZZ_SANITIZER=address builds with it);
#   3. each target's corpus, fuzz/corpus/TARGET/, is seeded: the images and PDF of
#      ../shared/eval (dev and receipts; up to FUZZ_SEED_MAX_KB each, default 256) and
#      samples/, generated PNGs, BMPs, TIFFs and PDFs (fuzz/seeds.py, python3 standard library
#      only), and handwritten bodies, Prefer headers, page selections and option strings. The
#      corpus is kept between runs (.gitignore'd), so later runs start from what earlier ones found;
#   4. each target runs for SECONDS (-rss_limit_mb=2048 -timeout=10, a -max_len per target) and
#      prints `fuzz TARGET: N executions in S s, crashes: K`. A crash (panic, out-of-memory,
#      timeout) stops that target, saves its input under fuzz/artifacts/TARGET/ and prints the
#      path and the end of the log (full log: fuzz/target/logs/TARGET.log); the script then
#      exits 1 once every target has run. Replay a crash with
#      fuzz/target/x86_64-unknown-linux-gnu/release/TARGET ARTIFACT.
# A panic inside the PDF library that the crate catches (its documented defence) is counted and
# reported, not a crash; FUZZ_CAUGHT_PANICS=abort makes it one.
set -euo pipefail
cd "$(dirname "$0")/.."

ALL_TARGETS=(image_decode document body prefer pages options)
CARGO_FUZZ_VERSION=0.13.2
SANITIZER=${FUZZ_SANITIZER:-none}
SEED_MAX_KB=${FUZZ_SEED_MAX_KB:-256}
TRIPLE=x86_64-unknown-linux-gnu

if [ $# -lt 1 ] || ! [[ $1 =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: scripts/fuzz.sh SECONDS [TARGET...]   (targets: ${ALL_TARGETS[*]})" >&2
  exit 2
fi
SECONDS_EACH=$1
shift
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=("${ALL_TARGETS[@]}")
for t in "${TARGETS[@]}"; do
  if [ ! -f "fuzz/fuzz_targets/$t.rs" ]; then
    echo "fuzz.sh: no target $t (targets: ${ALL_TARGETS[*]})" >&2
    exit 2
  fi
done

# The nightly toolchain: cargo-fuzz's instrumentation needs it, and nothing can download it.
if ! rustup toolchain list 2>/dev/null | grep -q "^nightly-$TRIPLE"; then
  echo "fuzz.sh: ERROR: the Rust nightly toolchain (nightly-$TRIPLE) is not installed;" >&2
  echo "fuzz.sh: cargo-fuzz needs it and rustup cannot download it on this machine." >&2
  echo "fuzz.sh: installed toolchains: $(rustup toolchain list 2>/dev/null | tr '\n' ' ')" >&2
  exit 1
fi
if ! cargo +nightly fuzz --version 2>/dev/null | grep -q " $CARGO_FUZZ_VERSION\$"; then
  echo "fuzz.sh: installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi

# Build every target once (cargo fuzz run would rebuild with its own flags: the binaries are
# run directly below).
# (16 codegen units and opt-level 1 instead of cargo-fuzz's 1 and 3 built no faster here: 1071 s
# against 1104 s from scratch, NOTES.md session 6; the build is dominated by the ~360 crates.)
build_flags=(-O --debug-assertions --sanitizer "$SANITIZER")
start=$(date +%s)
cargo +nightly fuzz build "${build_flags[@]}"
echo "fuzz.sh: built the targets in $(($(date +%s) - start)) s"
BIN_DIR=fuzz/target/$TRIPLE/release

# Seeds.
for t in "${ALL_TARGETS[@]}"; do mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"; done
# A real JPEG gets EXIF orientation segments spliced in.
exif_base=../shared/eval/dev/ic15_img_1.jpg
[ -f "$exif_base" ] || exif_base=
python3 fuzz/seeds.py fuzz/corpus ${exif_base:+"$exif_base"}
real_seeds=(samples/*.png)
if [ -d ../shared/eval ]; then
  real_seeds+=(../shared/eval/dev/*.pdf)
  while IFS= read -r f; do real_seeds+=("$f"); done < <(
    find ../shared/eval/dev ../shared/eval/receipts -maxdepth 1 -type f \
      \( -name '*.png' -o -name '*.jpg' -o -name '*.jpeg' \) -size -"$((SEED_MAX_KB + 1))"k | sort
  )
else
  echo "fuzz.sh: ../shared/eval is missing: seeding from samples/ and generated files only" >&2
fi
for f in "${real_seeds[@]}"; do
  [ -f "$f" ] || continue
  cp "$f" "fuzz/corpus/document/seed-$(basename "$f")"
  case $f in *.pdf) ;; *) cp "$f" "fuzz/corpus/image_decode/seed-$(basename "$f")" ;; esac
done

max_len() {
  case $1 in
    image_decode | document | body) echo $((1 << 20)) ;;
    pages | prefer | options) echo 4096 ;;
  esac
}

mkdir -p fuzz/target/logs
failed=()
for t in "${TARGETS[@]}"; do
  log=fuzz/target/logs/$t.log
  start=$(date +%s)
  rc=0
  "$BIN_DIR/$t" "fuzz/corpus/$t" \
    -artifact_prefix="fuzz/artifacts/$t/" \
    -max_total_time="$SECONDS_EACH" \
    -max_len="$(max_len "$t")" \
    -rss_limit_mb=2048 \
    -timeout=10 \
    -print_final_stats=1 >"$log" 2>&1 || rc=$?
  took=$(($(date +%s) - start))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  if [ -z "$execs" ]; then
    execs=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#')
  fi
  artifacts=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | grep -vE '/slow-unit-' || true)
  crashes=$(printf '%s' "$artifacts" | grep -c . || true)
  if [ "$rc" -ne 0 ] && [ "$crashes" -eq 0 ]; then
    crashes=1
  fi
  caught=$(grep -c '^fuzz: panic caught inside the crate' "$log" || true)
  echo "fuzz $t: ${execs:-0} executions in $took s, crashes: $crashes"
  if [ "$caught" -gt 0 ]; then
    echo "fuzz $t: $caught distinct panic(s) caught inside the crate (not crashes):"
    grep '^fuzz: panic caught inside the crate' "$log" | sed 's/^/  /'
  fi
  if [ "$crashes" -gt 0 ]; then
    failed+=("$t")
    echo "fuzz $t: FAILED (libFuzzer exit $rc); log $log; its end:"
    grep -vE '^#[0-9]+' "$log" | tail -40 | sed 's/^/  | /'
    if [ -n "$artifacts" ]; then
      printf '%s\n' "$artifacts" | sed "s|^|fuzz $t: crash input: |"
      printf '%s\n' "$artifacts" | sed "s|^|fuzz $t: replay: $BIN_DIR/$t |"
    fi
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz.sh: crashes in: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz.sh: no crashes in ${TARGETS[*]}"
