#!/usr/bin/env bash
# Soak test: N minutes of mixed load against a sanitized sluice (ASan + UBSan + LSan), or a
# shorter run under valgrind, with every feature in use; then it judges leaks, memory and
# file-descriptor growth, and a clean exit. docs/soak.md explains what runs and how to read
# the result.
#
#   test/soak/soak.sh [--minutes N] [--valgrind | --plain] [--no-build]
#
#   --minutes N   length of the load phase (default 10; 3 with --valgrind)
#   --valgrind    a non-sanitized build (build-soak-vg) under valgrind memcheck, lighter load
#   --plain       the release build (-O2, glibc malloc; build-soak-plain): RSS is the figure
#                 there, as in production (no leak check: ASan's and valgrind's runs do that)
#   --no-build    use the existing binary (SLUICE_BIN, or build-soak[-vg]/sluice)
#
# Environment: SLUICE_BIN (binary to use with --no-build), SOAK_RSS_MAX_PCT (default 10),
# SOAK_FD_SLACK (default 0), SOAK_STRICT=1 (missing coverage fails the run too),
# SOAK_RELOAD_EVERY (seconds between SIGHUPs, default 60). For isolating a problem:
# SOAK_WRK=0 (no wrk), SOAK_EVENTS=0 (no reloads, no restarts), SOAK_DRIVER_ARGS (extra
# driver arguments, e.g. "--only abort:abort_download" or "--tls-aborts no"),
# SOAK_QUEUE_TARGET ([queue] target in both configs; 0 turns shedding off),
# SOAK_ASAN_OPTIONS (appended to ASAN_OPTIONS, e.g. fast_unwind_on_malloc=0 for leak
# stacks that go through libevent, which has no frame pointers; slower).
#
# Exit status 0 when every check passes, 1 when one fails, 2 on a set-up error.
# Artifacts: test/artifacts/soak-STAMP/ (git-ignored), verdict in verdict.txt there.
#
# Rules kept: everything binds 127.0.0.1 on free ports; every process started here is
# remembered by PID and stopped by that PID (never by name); every load generator and every
# wait is bounded in time.
set -u
set -o pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SOAK_DIR=$ROOT/test/soak
PY=/usr/bin/python3
GUNICORN=/usr/bin/gunicorn
REDIS=/usr/bin/redis-server
WRK=${WRK:-wrk}
CURL=curl

MODE=asan
MINUTES=
BUILD_IT=1
while [ $# -gt 0 ]; do
  case $1 in
    --minutes) MINUTES=${2:?--minutes needs a number}; shift 2 ;;
    --minutes=*) MINUTES=${1#*=}; shift ;;
    --valgrind) MODE=valgrind; shift ;;
    --plain) MODE=plain; shift ;;
    --no-build) BUILD_IT=0; shift ;;
    -h|--help) sed -n '2,/^set -u/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "soak: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ -z "$MINUTES" ]; then
  if [ $MODE = valgrind ]; then MINUTES=3; else MINUTES=10; fi
fi
case $MINUTES in ''|*[!0-9]*) echo "soak: --minutes takes a whole number" >&2; exit 2 ;; esac
[ "$MINUTES" -ge 1 ] || { echo "soak: --minutes must be at least 1" >&2; exit 2; }

LOAD=$((MINUTES * 60))                 # seconds of load
if [ $LOAD -ge 300 ]; then WARMUP=120; else WARMUP=$((LOAD / 3)); fi
RSS_MAX_PCT=${SOAK_RSS_MAX_PCT:-10}
FD_SLACK=${SOAK_FD_SLACK:-0}
SAMPLE_EVERY=10
TOKEN=soak-admin-token-0123456789
if [ $MODE = valgrind ]; then
  BUILD=build-soak-vg
  START_WAIT=180; STOP_WAIT=900; SETTLE=20; FD_WAIT=180
  WRK_C_KA=3; WRK_C_TLS=2; WRK_C_CLOSE=1; WRK_C_TLS_CLOSE=1
  DRIVER_LIGHT=--light
else
  BUILD=build-soak
  [ $MODE = plain ] && BUILD=build-soak-plain
  START_WAIT=60; STOP_WAIT=240; SETTLE=5; FD_WAIT=90
  WRK_C_KA=16; WRK_C_TLS=8; WRK_C_CLOSE=4; WRK_C_TLS_CLOSE=2
  DRIVER_LIGHT=
fi
SLUICE_BIN=${SLUICE_BIN:-$ROOT/$BUILD/sluice}

STAMP=$(date +%Y%m%d-%H%M%S)-$MODE
W=$ROOT/test/artifacts/soak-$STAMP
mkdir -p "$W"/sluice "$W"/certs "$W"/redis || exit 2
EVENTS=$W/events.tsv
RSS=$W/rss.tsv
T0=$(date +%s)

log() { printf '%s soak: %s\n' "$(date +%H:%M:%S)" "$*" >&2; printf '%s\t%s\n' "$(elapsed)" "$*" >>"$EVENTS"; }
die() { log "ERROR: $*"; echo "soak: set-up failed, artifacts in $W" >&2; exit 2; }
elapsed() { echo $(($(date +%s) - T0)); }

for b in "$PY" "$GUNICORN" "$REDIS" openssl "$CURL" "$WRK" make; do
  command -v "$b" >/dev/null 2>&1 || die "$b not found (make deps)"
done
[ $MODE = valgrind ] && { command -v valgrind >/dev/null 2>&1 || die "valgrind not found"; }
printf 't_s\tevent\n' >"$EVENTS"

# ---------------------------------------------------------------- processes (by PID)
declare -A PID=()
STARTED=()
SLUICE_STOPPED=0

start() {  # start NAME CMD...: in the background, output to $OUT or $W/NAME.out
  local name=$1 out=${OUT:-$W/$1.out}; shift
  "$@" >"$out" 2>&1 </dev/null &
  PID[$name]=$!
  STARTED+=("$!")
}

alive() { [ -n "${PID[$1]:-}" ] && kill -0 "${PID[$1]}" 2>/dev/null; }

kids_of() { ps -o pid= --ppid "$1" 2>/dev/null | tr -d ' '; }

stop_pid() {  # stop_pid PID [WAIT_S]: SIGTERM, then SIGKILL it and its children
  local pid=$1 wait_s=${2:-10} kids i
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 0; }
  kids=$(kids_of "$pid")
  kill -TERM "$pid" 2>/dev/null
  for ((i = 0; i < wait_s * 10; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    log "pid $pid did not exit on SIGTERM within ${wait_s}s; SIGKILL"
    kill -KILL "$pid" 2>/dev/null
  fi
  for i in $kids; do kill -0 "$i" 2>/dev/null && kill -KILL "$i" 2>/dev/null; done
  wait "$pid" 2>/dev/null
  return 0
}

cleanup() {
  local i
  trap - EXIT INT TERM
  for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do
    if [ "${STARTED[$i]}" = "${PID[sluice]:-x}" ] && [ "$SLUICE_STOPPED" = 0 ]; then
      stop_pid "${STARTED[$i]}" 30
    else
      stop_pid "${STARTED[$i]}" 10
    fi
  done
  [ -f "$W/sluice/access.log" ] && gzip -f "$W/sluice/access.log"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

free_ports() {  # free_ports N: N distinct free TCP ports on 127.0.0.1
  "$PY" -c '
import socket, sys
ss = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in ss:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])
for s in ss:
    s.close()' "$1"
}

wait_port() {  # wait_port NAME PORT SECONDS
  local i
  for ((i = 0; i < $3 * 10; i++)); do
    alive "$1" || { tail -n 20 "$W/$1.out" >&2; die "$1 exited during start-up"; }
    (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && return 0
    sleep 0.1
  done
  die "$1 did not listen on port $2 within $3 s"
}

# ---------------------------------------------------------------- build
cd "$ROOT" || exit 2
if [ $BUILD_IT = 1 ]; then
  log "building $BUILD ($MODE)"
  if [ $MODE = valgrind ]; then
    make --no-print-directory BUILD=$BUILD CFLAGS="-O1 -g" "$BUILD/sluice" >"$W/build.out" 2>&1
  elif [ $MODE = plain ]; then
    make --no-print-directory BUILD=$BUILD "$BUILD/sluice" >"$W/build.out" 2>&1
  else
    make --no-print-directory BUILD=$BUILD SANITIZER=address,undefined CFLAGS="-O1 -g -DSLUICE_QUEUE_CHECK" \
      "$BUILD/sluice" >"$W/build.out" 2>&1
  fi || { tail -n 30 "$W/build.out" >&2; die "build failed (see $W/build.out)"; }
  SLUICE_BIN=$ROOT/$BUILD/sluice
fi
[ -x "$SLUICE_BIN" ] || die "$SLUICE_BIN missing"
{
  echo "mode=$MODE minutes=$MINUTES load_s=$LOAD warmup_s=$WARMUP rss_max_pct=$RSS_MAX_PCT fd_slack=$FD_SLACK"
  echo "binary=$SLUICE_BIN ($(stat -c '%y' "$SLUICE_BIN"))"
  echo "commit=$(git rev-parse --short HEAD 2>/dev/null || echo none) uncommitted_paths=$(git status --porcelain 2>/dev/null | wc -l)"
  echo "uncommitted in src/ include/: $(git status --porcelain -- src include 2>/dev/null | tr '\n' ' ')"
  echo "host=$(uname -srm); $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
} >"$W/run-info.txt"

# ---------------------------------------------------------------- certificates
for name in soak alt; do
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3 \
    -subj "/CN=$name.test" -addext "subjectAltName=DNS:$name.test,IP:127.0.0.1" \
    -keyout "$W/certs/$name.key" -out "$W/certs/$name.pem" >"$W/certs/openssl.out" 2>&1 ||
    die "openssl could not make a certificate (see $W/certs/openssl.out)"
done

# ---------------------------------------------------------------- ports, configs
read -r P_HTTP P_TLS P_ADMIN P_REDIS P_SYNC P_GTHREAD P_WS <<<"$(free_ports 7)"
[ -n "$P_WS" ] || die "could not find free ports"

cat >"$W/scale-hook.sh" <<EOF
#!/bin/sh
echo "\$(date +%s) \$SLUICE_DECISION desired=\$SLUICE_DESIRED_WORKERS current=\$SLUICE_CURRENT_WORKERS" >>"$W/scale-hook.log"
EOF
chmod 755 "$W/scale-hook.sh"

# write_config A|B: two configurations that differ in almost every section; SIGHUP
# alternates between them. Listeners, log paths, threads and [admin] stay the same (those
# change only on restart).
write_config() {
  local v=$1
  cat <<EOF
; soak configuration $v, written by test/soak/soak.sh
[proxy]
listen = 127.0.0.1:$P_HTTP
tls_listen = 127.0.0.1:$P_TLS
tls_cert = $W/certs/soak.pem
tls_key = $W/certs/soak.key
EOF
  [ "$v" = B ] && printf 'tls_cert = %s\ntls_key = %s\n' "$W/certs/alt.pem" "$W/certs/alt.key"
  cat <<EOF
threads = 2
access_log = $W/sluice/access.log
error_log = $W/sluice/error.log
pid_file = $W/sluice/sluice.pid
log_level = info
client_header_timeout = 4s
client_body_timeout = 10s
keepalive_timeout = 10s
send_timeout = 20s
shutdown_grace = 10s
max_header_size = 16k
max_line_size = 8k
max_headers = 100
max_body_size = 64m
request_buffer = $([ "$v" = A ] && echo 256k || echo 64k)
retries = $([ "$v" = A ] && echo 1 || echo 2)

[backend sync]
address = 127.0.0.1:$P_SYNC
workers = 3
weight = 1
max_fails = $([ "$v" = A ] && echo 2 || echo 1)
fail_timeout = 3s
connect_timeout = 2s
read_timeout = 30s
keepalive = 16
idle_timeout = 1s
health_check = /health
health_interval = 1s
health_timeout = 1s
rise = 2
fall = 2

[backend gthread]
address = 127.0.0.1:$P_GTHREAD
workers = 8
weight = $([ "$v" = A ] && echo 2 || echo 3)
max_fails = 2
fail_timeout = 3s
connect_timeout = 2s
read_timeout = 30s
keepalive = 16
idle_timeout = 1s
health_check = /health
health_interval = 1s
health_timeout = 1s
rise = 2
fall = 2
slow_start = 5s

[backend ws]
address = 127.0.0.1:$P_WS
workers = $([ "$v" = A ] && echo 4 || echo 3)
weight = 1
max_fails = 2
fail_timeout = 3s
connect_timeout = 2s
read_timeout = 30s
keepalive = 8
idle_timeout = 1s
health_check = /health
health_interval = 2s

[tenants]
key = header:X-Tenant
max_tracked = $([ "$v" = A ] && echo 500 || echo 300)

[tenant gold]
rate = $([ "$v" = A ] && echo 300 || echo 200)
burst = $([ "$v" = A ] && echo 150 || echo 100)
weight = 4

[tenant bronze]
rate = $([ "$v" = A ] && echo 20 || echo 10)
burst = $([ "$v" = A ] && echo 10 || echo 5)
weight = 1
max_queue = $([ "$v" = A ] && echo 5 || echo 3)
max_inflight = 2

[tenant hog]
weight = 1
max_queue = $([ "$v" = A ] && echo 40 || echo 30)
$([ "$v" = B ] && echo "max_inflight = 6")

[tenant default]
rate = $([ "$v" = A ] && echo 50 || echo 40)
burst = $([ "$v" = A ] && echo 25 || echo 20)
weight = 2
EOF
  [ "$v" = B ] && printf '\n[tenant silver]\nrate = 40\nburst = 20\nweight = 2\n'
  cat <<EOF

[route health]
prefix = /health
bypass = yes

[route slow]
prefix = /slow
max_inflight = $([ "$v" = A ] && echo 2 || echo 3)
EOF
  [ "$v" = B ] && printf '\n[route upload]\nprefix = /upload\nmax_inflight = 4\n\n[route static]\nprefix = /static\nbypass = yes\n'
  cat <<EOF

[queue]
max = $([ "$v" = A ] && echo 300 || echo 200)
timeout = $([ "$v" = A ] && echo 4s || echo 3s)
target = ${SOAK_QUEUE_TARGET:-$([ "$v" = A ] && echo 150ms || echo 200ms)}
interval = $([ "$v" = A ] && echo 500ms || echo 1s)

[redis]
url = redis://127.0.0.1:$P_REDIS/0
timeout = $([ "$v" = A ] && echo 50ms || echo 80ms)
on_failure = $([ "$v" = A ] && echo local || echo open)
prefix = soak:

[admin]
listen = 127.0.0.1:$P_ADMIN
token = $TOKEN

[scale]
mode = $([ "$v" = A ] && echo little || echo erlang)
margin = $([ "$v" = A ] && echo 1.3 || echo 1.5)
up_for = 10s
down_for = 30s
cooldown = 20s
queue_threshold = 5
max_workers = 64
on_scale = $W/scale-hook.sh
webhook = http://127.0.0.1:$P_WS/echo
redis_publish = yes
EOF
}
write_config A >"$W/config-A.ini"
write_config B >"$W/config-B.ini"
cp "$W/config-A.ini" "$W/sluice/sluice.ini"
"$SLUICE_BIN" -t -c "$W/config-A.ini" >"$W/config-check.out" 2>&1 || { cat "$W/config-check.out" >&2; die "config A invalid"; }
"$SLUICE_BIN" -t -c "$W/config-B.ini" >>"$W/config-check.out" 2>&1 || { cat "$W/config-check.out" >&2; die "config B invalid"; }

# ---------------------------------------------------------------- backends and Redis
start_redis() {
  start redis "$REDIS" --bind 127.0.0.1 --port "$P_REDIS" --save '' --appendonly no \
    --dir "$W/redis" --logfile "$W/redis/redis.log" --daemonize no
  wait_port redis "$P_REDIS" 20
}

start_gunicorn() {  # start_gunicorn NAME PORT CLASS WORKERS THREADS
  start "$1" env APP_NAME="$1" "$GUNICORN" --chdir "$ROOT/test" -b "127.0.0.1:$2" \
    -w "$4" -k "$3" --threads "$5" --timeout 120 --graceful-timeout 3 --keep-alive 5 \
    --backlog 512 --limit-request-line 8190 --limit-request-fields 300 \
    --limit-request-field_size 16380 --log-level warning app:app
  wait_port "$1" "$2" 30
}

start_redis
start_gunicorn sync "$P_SYNC" sync 3 1
start_gunicorn gthread "$P_GTHREAD" gthread 2 4
start ws "$PY" "$SOAK_DIR/upgrade_backend.py" "$P_WS" ws
wait_port ws "$P_WS" 20

# ---------------------------------------------------------------- sluice
if [ $MODE = valgrind ]; then
  log "starting sluice under valgrind ($SLUICE_BIN)"
  OUT=$W/sluice/stderr.log start sluice valgrind --leak-check=full --error-exitcode=99 \
    --errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect \
    --num-callers=30 --fair-sched=yes --log-file="$W/sluice/valgrind.log" \
    "$SLUICE_BIN" -c "$W/sluice/sluice.ini"
elif [ $MODE = plain ]; then
  log "starting sluice, release build ($SLUICE_BIN)"
  OUT=$W/sluice/stderr.log start sluice "$SLUICE_BIN" -c "$W/sluice/sluice.ini"
else
  log "starting sluice with ASan+UBSan+LSan ($SLUICE_BIN)"
  # quarantine_size_mb=16: ASan's quarantine of freed memory (256 MiB by default) would
  # otherwise fill for minutes and read as RSS growth. allocator_release_to_os_interval_ms:
  # freed pages go back to the OS, so RSS follows live memory rather than the high-water
  # mark of the allocator.
  # Live heap from ASan's allocator every 10 s (test/soak/heapstat.c): under ASan, RSS
  # follows the allocator's mapped memory, which creeps even when nothing is retained.
  PRELOAD=
  LIBASAN=$(ldd "$SLUICE_BIN" 2>/dev/null | awk '/libasan/ {print $3; exit}')
  if [ -n "$LIBASAN" ] && cc -shared -fPIC -O1 -o "$W/heapstat.so" "$SOAK_DIR/heapstat.c" \
       -lasan -lpthread >"$W/heapstat-build.out" 2>&1; then
    PRELOAD="$LIBASAN:$W/heapstat.so"
  else
    log "heapstat.so not built (see heapstat-build.out): judging RSS only"
  fi
  OUT=$W/sluice/stderr.log start sluice env ${PRELOAD:+LD_PRELOAD="$PRELOAD"} \
    SOAK_HEAPSTAT_FILE="$W/heap.tsv" SOAK_HEAPSTAT_EVERY=10 \
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:quarantine_size_mb=16:allocator_release_to_os_interval_ms=5000:malloc_context_size=30:print_summary=1${SOAK_ASAN_OPTIONS:+:$SOAK_ASAN_OPTIONS} \
    LSAN_OPTIONS=report_objects=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=0:report_error_type=1 \
    "$SLUICE_BIN" -c "$W/sluice/sluice.ini"
fi
SPID=${PID[sluice]}
ready=0
for ((i = 0; i < START_WAIT * 5; i++)); do
  alive sluice || break
  if [ "$($CURL -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$P_HTTP/health")" = 200 ]; then
    ready=1; break
  fi
  sleep 0.2
done
if [ $ready = 0 ]; then
  tail -n 30 "$W/sluice/stderr.log" "$W/sluice/error.log" >&2
  die "sluice did not answer /health within ${START_WAIT}s"
fi
log "sluice ready (pid $SPID); http $P_HTTP, https $P_TLS, admin $P_ADMIN, redis $P_REDIS, backends sync $P_SYNC gthread $P_GTHREAD ws $P_WS"

# ---------------------------------------------------------------- sampling
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$SPID/status" 2>/dev/null; }
threads_n() { awk '/^Threads:/ {print $2}' "/proc/$SPID/status" 2>/dev/null; }
fd_n() { ls "/proc/$SPID/fd" 2>/dev/null | wc -l; }
sample() {  # sample PHASE
  printf '%s\t%s\t%s\t%s\t%s\n' "$(elapsed)" "$1" "$(rss_kb)" "$(fd_n)" "$(threads_n)" >>"$RSS"
}
min_fds() {  # min_fds N: the least fd count over N samples 0.37 s apart (transient health checks)
  local i n m=999999
  for ((i = 0; i < $1; i++)); do
    n=$(fd_n); [ "$n" -lt "$m" ] && m=$n
    sleep 0.37
  done
  echo "$m"
}
printf 't_s\tphase\trss_kb\tfds\tthreads\n' >"$RSS"

sleep "$SETTLE"
sample idle
FD_BASE=$(min_fds 12)
ls -l "/proc/$SPID/fd" >"$W/fds-baseline.txt" 2>&1
sockets_of() { ss -tanpi 2>/dev/null | grep -A1 "pid=$SPID," ; }
sockets_of >"$W/sockets-baseline.txt"
RSS_BASE=$(rss_kb)
log "baseline: rss ${RSS_BASE} kB, fds $FD_BASE (least of 12 samples)"

# ---------------------------------------------------------------- load
LOAD_T0=$(elapsed)
LOAD_EPOCH=$(date +%s)
wrk_start() {  # wrk_start NAME CONNS URL [close]
  start "wrk-$1" timeout -k 10 $((LOAD + 60)) "$WRK" -t1 -c"$2" -d"${LOAD}s" --timeout 10s \
    --latency -s "$SOAK_DIR/mixed.lua" "$3" ${4:+-- "$4"}
}
WRKS=
if [ "${SOAK_WRK:-1}" != 0 ]; then
  wrk_start plain-ka "$WRK_C_KA" "http://127.0.0.1:$P_HTTP/"
  wrk_start tls-ka "$WRK_C_TLS" "https://127.0.0.1:$P_TLS/"
  wrk_start plain-close "$WRK_C_CLOSE" "http://127.0.0.1:$P_HTTP/" close
  wrk_start tls-close "$WRK_C_TLS_CLOSE" "https://127.0.0.1:$P_TLS/" close
  WRKS="wrk-plain-ka wrk-tls-ka wrk-plain-close wrk-tls-close"
fi
# shellcheck disable=SC2086
start driver timeout -k 10 $((LOAD + 300)) "$PY" "$SOAK_DIR/driver.py" --port "$P_HTTP" \
  --tls-port "$P_TLS" --admin-port "$P_ADMIN" --token "$TOKEN" --seconds "$LOAD" \
  --out "$W/driver.json" --header-timeout 4 --keepalive-timeout 10 $DRIVER_LIGHT \
  ${SOAK_DRIVER_ARGS:-}
log "load started for ${LOAD}s: wrk keep-alive c=$WRK_C_KA, TLS c=$WRK_C_TLS, close c=$WRK_C_CLOSE, TLS close c=$WRK_C_TLS_CLOSE; driver $DRIVER_LIGHT"

BACKEND_RESTART_AT=$((LOAD * 3 / 10 + 15))
REDIS_RESTART_AT=$((LOAD / 2 + 25))
RELOAD_EVERY=${SOAK_RELOAD_EVERY:-60}
if [ "${SOAK_EVENTS:-1}" = 0 ]; then BACKEND_RESTART_AT=; REDIS_RESTART_AT=; RELOAD_EVERY=999999; fi
NEXT_RELOAD=$RELOAD_EVERY
NEXT_SAMPLE=0
RELOADS=0
CONF=A
DIED=0
while :; do
  t=$(($(elapsed) - LOAD_T0))
  [ $t -ge $LOAD ] && break
  if ! alive sluice; then DIED=1; log "!!! sluice (pid $SPID) DIED at load t=${t}s"; break; fi
  if [ $t -ge $NEXT_SAMPLE ]; then sample load; NEXT_SAMPLE=$((NEXT_SAMPLE + SAMPLE_EVERY)); fi
  if [ $t -ge $NEXT_RELOAD ] && [ $((LOAD - t)) -ge 20 ]; then
    if [ $CONF = A ]; then CONF=B; else CONF=A; fi
    cp "$W/config-$CONF.ini" "$W/sluice/sluice.ini.tmp" && mv "$W/sluice/sluice.ini.tmp" "$W/sluice/sluice.ini"
    kill -HUP "$SPID" && RELOADS=$((RELOADS + 1))
    log "SIGHUP: reload to config $CONF (#$RELOADS) at t=${t}s"
    NEXT_RELOAD=$((NEXT_RELOAD + RELOAD_EVERY))
  fi
  if [ -n "$BACKEND_RESTART_AT" ] && [ $t -ge "$BACKEND_RESTART_AT" ]; then
    BACKEND_RESTART_AT=
    log "backend restart: stopping gthread (pid ${PID[gthread]}) at t=${t}s"
    stop_pid "${PID[gthread]}" 10
    sleep 3
    mv "$W/gthread.out" "$W/gthread-1.out"
    start_gunicorn gthread "$P_GTHREAD" gthread 2 4
    log "backend restart: gthread back (pid ${PID[gthread]})"
  fi
  if [ -n "$REDIS_RESTART_AT" ] && [ $t -ge "$REDIS_RESTART_AT" ]; then
    REDIS_RESTART_AT=
    log "redis restart: stopping redis (pid ${PID[redis]}) at t=${t}s"
    stop_pid "${PID[redis]}" 10
    sleep 5
    mv "$W/redis.out" "$W/redis-1.out"
    start_redis
    log "redis restart: redis back (pid ${PID[redis]})"
  fi
  sleep 1
done
[ $DIED = 0 ] && sample load
if [ $DIED = 1 ]; then  # nothing left to load: stop the generators now
  for n in $WRKS driver; do stop_pid "${PID[$n]}" 5; done
fi
log "load phase over; waiting for the load generators"
for n in $WRKS driver; do
  wait "${PID[$n]}" 2>/dev/null
  echo "$n exit status $?" >>"$W/load-exit.txt"
done
log "load generators finished"

# ---------------------------------------------------------------- after the load: fds
FD_AFTER=NA
FD_AFTER_S=NA
if alive sluice; then
  sample after
  sleep 5
  $CURL -s --max-time 20 "http://127.0.0.1:$P_ADMIN/status.json" >"$W/status-after-load.json"
  t_end=$(($(elapsed) + FD_WAIT))
  while [ "$(elapsed)" -lt $t_end ]; do
    n=$(min_fds 8)
    FD_AFTER=$n
    if [ "$n" -le $((FD_BASE + FD_SLACK)) ]; then break; fi
  done
  FD_AFTER_S=$(($(elapsed) - LOAD_T0 - LOAD))
  ls -l "/proc/$SPID/fd" >"$W/fds-after.txt" 2>&1
  sockets_of >"$W/sockets-after.txt"
  sample after
  log "after the load: fds $FD_AFTER (baseline $FD_BASE) ${FD_AFTER_S}s after the load ended; rss $(rss_kb) kB"
  $CURL -s --max-time 20 "http://127.0.0.1:$P_ADMIN/metrics" >"$W/metrics-final.txt"
  $CURL -s --max-time 20 "http://127.0.0.1:$P_ADMIN/status.json" >"$W/status-final.json"
  sample after
else
  DIED=1
fi

# ---------------------------------------------------------------- stop, judge
STOP_RC=NA
STOP_S=NA
if alive sluice; then
  log "SIGTERM to sluice (pid $SPID); waiting up to ${STOP_WAIT}s (leak check at exit)"
  ts=$(date +%s)
  kill -TERM "$SPID"
  for ((i = 0; i < STOP_WAIT * 5; i++)); do alive sluice || break; sleep 0.2; done
  if alive sluice; then
    log "!!! sluice did not exit within ${STOP_WAIT}s of SIGTERM; SIGKILL"
    kill -KILL "$SPID"
  fi
  wait "$SPID"; STOP_RC=$?
  STOP_S=$(($(date +%s) - ts))
  SLUICE_STOPPED=1
  log "sluice exited with status $STOP_RC after ${STOP_S}s"
else
  wait "$SPID"; STOP_RC=$?
  SLUICE_STOPPED=1
  log "sluice had already exited with status $STOP_RC"
fi

# backends and Redis are not needed any more
for n in ws gthread sync redis; do alive "$n" && stop_pid "${PID[$n]}" 10; done
[ -f "$W/sluice/access.log" ] && gzip -f "$W/sluice/access.log"

"$PY" "$SOAK_DIR/analyze.py" --dir "$W" --mode "$MODE" --load "$LOAD" --warmup "$WARMUP" \
  --load-t0 "$LOAD_T0" --load-epoch "$LOAD_EPOCH" --rss-max-pct "$RSS_MAX_PCT" --fd-base "$FD_BASE" \
  --fd-after "$FD_AFTER" --fd-after-s "$FD_AFTER_S" --fd-slack "$FD_SLACK" \
  --reloads "$RELOADS" --died "$DIED" --stop-rc "$STOP_RC" --stop-s "$STOP_S" \
  --strict "${SOAK_STRICT:-0}"
RC=$?
echo "soak: artifacts in ${W#"$ROOT"/}" >&2
exit $RC
