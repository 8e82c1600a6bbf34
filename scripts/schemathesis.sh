#!/usr/bin/env bash
# Property-based API tests of the real server from its own OpenAPI document:
# scripts/schemathesis.sh [MAX_EXAMPLES [SCHEMATHESIS RUN ARGS...]]   (default 20)
#
#   1. installs schemathesis (PyPI, pinned below) into the private venv .venv-schemathesis when
#      missing;
#   2. starts the real server binary (${OCR_SERVER_BIN:-target/debug/ocr-server}, real models via
#      scripts/setup.sh) on a free loopback port over a throwaway --data-dir (scripts/lib/server.sh):
#      jobs on (SQLite), no API keys (open), webhooks to private addresses refused (422); waits
#      for /health/ready; makes two real jobs whose ids schemathesis reuses (see below);
#   3. runs `schemathesis run` against http://127.0.0.1:PORT/openapi.json: every operation, all
#      phases (examples, coverage, fuzzing, stateful), positive and negative data, at most
#      MAX_EXAMPLES test cases per operation in each phase, with the checks in
#      $SCHEMATHESIS_CHECKS:
#        not_a_server_error            no 5xx, whatever the input
#        response_schema_conformance   every documented response body matches its schema
#        content_type_conformance      every response's Content-Type is the documented one
#      Nothing is excluded. Unknown options (422 invalid_option) and bad bodies (4xx
#      application/problem+json) are correct answers to negative data;
#      --continue-on-failure: every failure of a run is reported, not only each operation's first;
#   4. stops the server however the script exits (trap), and exits non-zero when schemathesis
#      reports a failure or an error, times out, or the server log shows a panic.
# Deterministic enough for CI: Hypothesis' derandomized generation (the same cases every run for
# the same schema; no example database, so nothing from an earlier run is replayed), one worker.
# SCHEMATHESIS_SEED=N draws random cases from seed N instead, to explore beyond the fixed set.
# Bounded: MAX_EXAMPLES, a 60 s per-request timeout, and the whole run under
# $SCHEMATHESIS_TIMEOUT seconds (900).
# Reports (junit.xml, events.ndjson, the config, the server's log) land in
# ${SCHEMATHESIS_OUT:-target/schemathesis}.
set -euo pipefail
cd "$(dirname "$0")/.."
MAX_EXAMPLES=${1:-20}
shift || true
SCHEMATHESIS_VERSION=4.32.5
VENV=.venv-schemathesis
OUT=${SCHEMATHESIS_OUT:-target/schemathesis}
CHECKS=${SCHEMATHESIS_CHECKS:-not_a_server_error,response_schema_conformance,content_type_conformance}
SEED=${SCHEMATHESIS_SEED:-}
RUN_TIMEOUT=${SCHEMATHESIS_TIMEOUT:-900}   # seconds for the whole schemathesis run

if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -q "version $SCHEMATHESIS_VERSION\$"; then
  echo "schemathesis: installing schemathesis==$SCHEMATHESIS_VERSION into $VENV" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

scripts/setup.sh
# shellcheck source=scripts/lib/server.sh
. scripts/lib/server.sh
rm -rf "$OUT"
mkdir -p "$OUT"
on_exit() {
  [ -z "$SERVER_LOG" ] || cp "$SERVER_LOG" "$OUT/server.log" 2>/dev/null || true
  server_stop
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
server_start

# Known job ids and a real image, so that the operations on /v1/jobs/{id} reach their real logic
# (not only 404) and some OCR requests and jobs carry an image the models really read: two jobs
# made here from a two-line crop of samples/phototest.png (scripts/soak.py's crop), one waited to
# `completed`, one to `needs_review` (review_threshold 1.0). schemathesis draws `id` from them
# 70 % of the time (else its own strings: 404), and the JSON `image` / `documents[].data` fields
# from the crop's base64 half the time (else its own strings: 400/415/422).
python3 - "$SERVER_URL" "$OUT/schemathesis.toml" <<'PY'
import base64, json, os, sys, time, urllib.request
sys.path.insert(0, "scripts")
from soak import png_crop
url, out = sys.argv[1], sys.argv[2]
cache = os.path.join(os.path.dirname(os.path.abspath(out)), "cache")
with open("samples/phototest.png", "rb") as f:
    png = png_crop(f.read(), (25, 85, 290, 152))
def job(query):
    req = urllib.request.Request(f"{url}/v1/jobs?name=crop.png&{query}", data=png,
                                 headers={"Content-Type": "image/png"}, method="POST")
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.load(r)["id"]
def wait(jid, state):
    for _ in range(600):
        with urllib.request.urlopen(f"{url}/v1/jobs/{jid}", timeout=60) as r:
            got = json.load(r)["state"]
        if got == state:
            return
        if got not in ("queued", "processing"):
            sys.exit(f"schemathesis: seed job {jid} ended {got}, not {state}")
        time.sleep(0.1)
    sys.exit(f"schemathesis: seed job {jid} not {state} after 60 s")
done, review = job("tag=seed"), job("tag=seed&review_threshold=1.0")
wait(done, "completed")
wait(review, "needs_review")
b64 = base64.b64encode(png).decode()
with open(out, "w") as f:
    f.write(f'''# Written by scripts/schemathesis.sh for one run.
# schemathesis' state across runs (crash files for `st replay`) stays in this run's report
# directory, which every run starts afresh: no run replays an earlier one.
[cache]
directory = "{cache}"

[dictionaries.job_ids]
values = ["{done}", "{review}"]

[dictionaries.image]
values = ["{b64}"]

[parameters]
"path.id" = {{ dictionary = "job_ids", probability = 0.7 }}
"body.image" = {{ dictionary = "image", probability = 0.5 }}
"body.documents[*].data" = {{ dictionary = "image", probability = 0.5 }}
''')
print(f"schemathesis: seed jobs {done} (completed), {review} (needs_review)", file=sys.stderr)
PY

start=$(date +%s.%N)
rc=0
if [ -n "$SEED" ]; then
  GENERATION=(--seed "$SEED" --generation-database none)
  MODE="seed $SEED"
else
  GENERATION=(--generation-deterministic)
  MODE=deterministic
fi
timeout --signal=INT --kill-after=30 "$RUN_TIMEOUT" \
  "$VENV/bin/schemathesis" --config-file "$OUT/schemathesis.toml" \
  run "$SERVER_URL/openapi.json" \
  --checks "$CHECKS" \
  --max-examples "$MAX_EXAMPLES" \
  "${GENERATION[@]}" \
  --workers 1 \
  --request-timeout 60 \
  --no-color \
  --continue-on-failure \
  --report junit,ndjson --report-junit-path "$OUT/junit.xml" \
  --report-ndjson-path "$OUT/events.ndjson" \
  "$@" 2>&1 | tee "$OUT/schemathesis.log" || rc=$?
# pipefail is set: rc is schemathesis' own status (or timeout's 124), not tee's.
end=$(date +%s.%N)
elapsed=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')

# The totals, from schemathesis' summary ("Tested: N", "Test cases: N generated, ...").
cases=$(sed -n 's/^ *\([0-9][0-9]*\) generated.*/\1/p' "$OUT/schemathesis.log" | tail -n1)
ops=$(sed -n 's/^ *Tested: *\([0-9][0-9]*\).*/\1/p' "$OUT/schemathesis.log" | tail -n1)
if [ "$rc" = 124 ]; then
  echo "schemathesis: TIMED OUT after ${RUN_TIMEOUT}s" >&2
fi
if grep -q 'panicked' "$SERVER_LOG" 2>/dev/null; then
  echo "schemathesis: the server log has a panic:" >&2
  grep -m5 -A3 'panicked' "$SERVER_LOG" >&2 || true
  [ "$rc" != 0 ] || rc=1
fi
if [ "$rc" = 0 ]; then outcome=PASSED; else outcome="FAILED (exit $rc)"; fi
echo "schemathesis: ${cases:-?} test cases generated over ${ops:-?} operations (at most $MAX_EXAMPLES per operation and phase, $MODE), checks $CHECKS, ${elapsed}s: $outcome" >&2
exit "$rc"
