#!/usr/bin/env bash
# Benchmark sluice against NGINX and HAProxy on this machine (`make bench`).
#
# One run: two nginx origin instances; sluice, nginx and haproxy each proxying to both
# with least-connections and upstream keep-alive; wrk throughput/latency for /small
# (~100 B) and /64k, interleaved rounds, median per metric; then memory per idle
# keep-alive client connection (10,000 idle connections per proxy, fewer if the open-file
# hard limit is below ~21,100: HAProxy needs 2 fds per connection). Everything binds
# 127.0.0.1 on free ports, lives in a temporary directory, and every process started
# here is stopped by its PID on exit. Method and results: docs/benchmarks.md.
#
# Options / environment (defaults in brackets):
#   --skip-sluice | SKIP_SLUICE=1    benchmark nginx and haproxy only
#   --quick                          smoke test: 3 s runs, 1 round, 2,000 idle connections
#   BENCH_DURATION [10]  seconds per wrk run      BENCH_ROUNDS [3]   interleaved rounds
#   BENCH_WARMUP   [3]   seconds of warm-up       BENCH_CONNS  [50]  wrk connections
#   BENCH_WRK_THREADS [1]                         BENCH_IDLE [10000] idle connections
#   BENCH_PATHS ["/small /64k"]                   BENCH_KEEP=1 keep the temp directory
#   SLUICE_BIN [build/sluice]   SLUICE_ARGS ["-c {config}"] ({config} is replaced)
# The Makefile runs this with `sh`; re-exec under bash.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BENCH_DIR=$ROOT/test/bench
PY=/usr/bin/python3
NGINX=${NGINX:-/usr/sbin/nginx}
HAPROXY=${HAPROXY:-/usr/sbin/haproxy}
WRK=${WRK:-wrk}
SLUICE_BIN=${SLUICE_BIN:-$ROOT/build/sluice}
SLUICE_ARGS=${SLUICE_ARGS:-"-c {config}"}
SKIP_SLUICE=${SKIP_SLUICE:-0}
DURATION=${BENCH_DURATION:-10}
ROUNDS=${BENCH_ROUNDS:-3}
WARMUP=${BENCH_WARMUP:-3}
CONNS=${BENCH_CONNS:-50}
WRK_THREADS=${BENCH_WRK_THREADS:-1}
IDLE=${BENCH_IDLE:-10000}
PATHS=${BENCH_PATHS:-"/small /64k"}
KEEP=${BENCH_KEEP:-0}

for arg in "$@"; do
  case $arg in
    --skip-sluice) SKIP_SLUICE=1 ;;
    --quick) DURATION=3; ROUNDS=1; WARMUP=1; IDLE=2000 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "bench: unknown argument $arg" >&2; exit 2 ;;
  esac
done

die() { echo "bench: $*" >&2; exit 1; }
log() { echo "bench: $*" >&2; }

for b in "$NGINX" "$HAPROXY" "$PY" curl; do
  command -v "$b" >/dev/null 2>&1 || die "$b not found (make deps)"
done
command -v "$WRK" >/dev/null 2>&1 || die "wrk not found (make deps)"
PROXIES="nginx haproxy"
if [ "$SKIP_SLUICE" != 1 ]; then
  [ -x "$SLUICE_BIN" ] || die "$SLUICE_BIN missing: build it (make) or run with SKIP_SLUICE=1"
  PROXIES="sluice nginx haproxy"
fi

# File descriptors: the proxy and the idle-connection client each hold IDLE sockets.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
# HAProxy refuses to start unless the limit covers 2 fds per maxconn (client + server side),
# so with a hard limit below ~21,100 the idle count is lowered to the largest multiple of
# 1,000 that fits, the same for all three proxies (docs/benchmarks.md).
NOFILE=$(ulimit -n)
[ "$NOFILE" = unlimited ] && NOFILE=1048576
if [ $((2 * (IDLE + 500) + 100)) -gt "$NOFILE" ]; then
  fit=$(( ((NOFILE - 100) / 2 - 500) / 1000 * 1000 ))
  log "open-file hard limit is $NOFILE: HAProxy needs 2 fds per connection; idle connections $IDLE -> $fit"
  IDLE=$fit
fi
MAXCONN=$((IDLE + 500))   # nginx worker_connections / haproxy maxconn

W=$(mktemp -d /tmp/sluice-bench.XXXXXX) || die "mktemp failed"
chmod 755 "$W"             # nginx workers run as nobody when started by root
STAMP=$(date +%Y%m%d-%H%M%S)
mkdir -p "$ROOT/test/artifacts"
ART=$ROOT/test/artifacts/bench-$STAMP.txt
RUNS=$W/runs.tsv
MEM=$W/mem.tsv
RAW=$W/raw.txt
: >"$RAW"

# ---------------------------------------------------------------- process bookkeeping
declare -A PID=()
STARTED=()

stop_pid() {   # stop one process we started (and, for an nginx master, its workers)
  local pid=$1 kids i
  kill -0 "$pid" 2>/dev/null || return 0
  kids=$(ps -o pid= --ppid "$pid" 2>/dev/null | tr -d ' ')
  kill -TERM "$pid" 2>/dev/null
  for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    log "pid $pid did not exit on SIGTERM; SIGKILL"
    kill -KILL "$pid" 2>/dev/null
  fi
  for i in $kids; do
    kill -0 "$i" 2>/dev/null && kill -KILL "$i" 2>/dev/null
  done
  wait "$pid" 2>/dev/null
  return 0
}

cleanup() {
  local i
  trap - EXIT INT TERM
  for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do stop_pid "${STARTED[$i]}"; done
  if [ "$KEEP" = 1 ]; then log "kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start() {      # start NAME CMD...: background, stdout/stderr to $W/NAME.out, remember PID
  local name=$1; shift
  "$@" >"$W/$name.out" 2>&1 &
  PID[$name]=$!
  STARTED+=("$!")
}

alive() { kill -0 "${PID[$1]}" 2>/dev/null; }

wait_http() {  # wait_http NAME URL: until URL answers 200 (10 s)
  local name=$1 url=$2 i
  for i in $(seq 1 100); do
    if ! alive "$name"; then
      log "$name exited during start-up:"; tail -n 30 "$W/$name.out" >&2
      for f in "$W/$name"/*.log; do [ -f "$f" ] && tail -n 30 "$f" >&2; done
      return 1
    fi
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url")" = 200 ] && return 0
    sleep 0.1
  done
  log "$name did not answer $url within 10 s"; return 1
}

pids_of() {    # the process and its direct children (nginx master + workers)
  echo "${PID[$1]}"
  ps -o pid= --ppid "${PID[$1]}" 2>/dev/null | tr -d ' '
}

rss_bytes() { # summed VmRSS of pids_of NAME, bytes
  local p sum=0 kb
  for p in $(pids_of "$1"); do
    kb=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null)
    sum=$((sum + ${kb:-0}))
  done
  echo $((sum * 1024))
}

cpu_ticks() {  # summed utime+stime (clock ticks) of pids_of NAME
  local p sum=0 t
  for p in $(pids_of "$1"); do
    t=$(awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$p/stat" 2>/dev/null)
    sum=$((sum + ${t:-0}))
  done
  echo "$sum"
}
CLK_TCK=$(getconf CLK_TCK)

fd_count() {
  local p sum=0 n
  for p in $(pids_of "$1"); do
    n=$(ls "/proc/$p/fd" 2>/dev/null | wc -l)
    sum=$((sum + n))
  done
  echo "$sum"
}

# ---------------------------------------------------------------- ports and content
read -r P_O1 P_O2 P_SLUICE P_NGINX P_HAPROXY < <("$PY" -c '
import socket
ss = [socket.socket() for _ in range(5)]
for s in ss:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])
for s in ss:
    s.close()')
declare -A PORT=([sluice]=$P_SLUICE [nginx]=$P_NGINX [haproxy]=$P_HAPROXY)

mkdir -p "$W/www"
# ~100-byte body for /small (99 characters + newline)
SMALL_BODY=$(printf 'sluice bench small response %071d' 0)
head -c 65536 /dev/urandom >"$W/www/64k"
SHA_64K=$(sha256sum "$W/www/64k" | cut -d' ' -f1)

LOAD0=$(cut -d' ' -f1 /proc/loadavg)
if awk -v l="$LOAD0" 'BEGIN {exit !(l > 0.5)}'; then
  log "warning: load average is $LOAD0 before starting; other work on this machine will skew the figures"
fi

# ---------------------------------------------------------------- origins
nginx_temp_paths() {
  local d=$1
  cat <<EOF
    client_body_temp_path $d/tmp/body;
    proxy_temp_path $d/tmp/proxy;
    fastcgi_temp_path $d/tmp/fastcgi;
    uwsgi_temp_path $d/tmp/uwsgi;
    scgi_temp_path $d/tmp/scgi;
EOF
}

for o in o1 o2; do
  d=$W/$o; mkdir -p "$d/tmp"; chmod 755 "$d" "$d/tmp"
  [ $o = o1 ] && port=$P_O1 || port=$P_O2
  cat >"$d/nginx.conf" <<EOF
daemon off;
worker_processes 1;
worker_rlimit_nofile 8192;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    default_type text/plain;
    sendfile on;
    log_not_found off;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
$(nginx_temp_paths "$d")
    server {
        listen 127.0.0.1:$port backlog=4096;
        location = /small { return 200 "$SMALL_BODY\n"; }
        location = /64k { root $W/www; }
        location = /nginx_status { stub_status; }
    }
}
EOF
  start $o "$NGINX" -p "$d" -e "$d/error.log" -c "$d/nginx.conf"
done
wait_http o1 "http://127.0.0.1:$P_O1/small" || exit 1
wait_http o2 "http://127.0.0.1:$P_O2/small" || exit 1

origin_requests() {  # total requests served by both origins (stub_status counter)
  local port n sum=0
  for port in "$P_O1" "$P_O2"; do
    n=$(curl -s --max-time 2 "http://127.0.0.1:$port/nginx_status" | awk 'NR == 3 {print $3}')
    sum=$((sum + ${n:-0} - 1))   # the status request counts itself
  done
  echo "$sum"
}
origin_split() {
  local port out=""
  for port in "$P_O1" "$P_O2"; do
    out="$out $(curl -s --max-time 2 "http://127.0.0.1:$port/nginx_status" | awk 'NR == 3 {print $3}')"
  done
  echo "$out"
}

# ---------------------------------------------------------------- proxies
if [[ " $PROXIES " == *" sluice "* ]]; then
  d=$W/sluice; mkdir -p "$d"
  cat >"$d/sluice.ini" <<EOF
[proxy]
listen = 127.0.0.1:$P_SLUICE
threads = 2
error_log = $d/error.log
keepalive_timeout = 75s

[backend o1]
address = 127.0.0.1:$P_O1
keepalive = 64
idle_timeout = 60s

[backend o2]
address = 127.0.0.1:$P_O2
keepalive = 64
idle_timeout = 60s
EOF
  # shellcheck disable=SC2086
  start sluice "$SLUICE_BIN" ${SLUICE_ARGS//\{config\}/$d/sluice.ini}
fi

d=$W/nginx; mkdir -p "$d/tmp"; chmod 755 "$d" "$d/tmp"
cat >"$d/nginx.conf" <<EOF
daemon off;
worker_processes 2;
worker_rlimit_nofile $NOFILE;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections $MAXCONN; }
http {
    access_log off;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
$(nginx_temp_paths "$d")
    upstream origins {
        least_conn;
        server 127.0.0.1:$P_O1;
        server 127.0.0.1:$P_O2;
        keepalive 64;
        keepalive_requests 1000000;
        keepalive_timeout 60s;
    }
    server {
        listen 127.0.0.1:$P_NGINX backlog=4096;
        location / {
            proxy_pass http://origins;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
start nginx "$NGINX" -p "$d" -e "$d/error.log" -c "$d/nginx.conf"

d=$W/haproxy; mkdir -p "$d"
cat >"$d/haproxy.cfg" <<EOF
global
    nbthread 2
    maxconn $MAXCONN

defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 75s
    timeout server 60s
    timeout http-request 10s
    timeout http-keep-alive 75s

frontend fe
    bind 127.0.0.1:$P_HAPROXY
    default_backend origins

backend origins
    balance leastconn
    server o1 127.0.0.1:$P_O1
    server o2 127.0.0.1:$P_O2
EOF
start haproxy "$HAPROXY" -db -f "$d/haproxy.cfg"

for p in $PROXIES; do
  wait_http "$p" "http://127.0.0.1:${PORT[$p]}/small" || exit 1
done

# ---------------------------------------------------------------- correctness pre-flight
for p in $PROXIES; do
  base=http://127.0.0.1:${PORT[$p]}
  body=$(curl -s --max-time 5 "$base/small")
  [ "$body" = "$SMALL_BODY" ] || die "$p: /small body differs: $(printf %s "$body" | head -c 200)"
  sha=$(curl -s --max-time 5 "$base/64k" | sha256sum | cut -d' ' -f1)
  [ "$sha" = "$SHA_64K" ] || die "$p: /64k body differs (sha256 $sha)"
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$base/nonexistent")
  [ "$code" = 404 ] || die "$p: /nonexistent returned $code, expected the origin's 404"
done
log "pre-flight ok: $PROXIES return the origin's bytes (small, 64k, 404)"

# ---------------------------------------------------------------- header of the raw file
{
  echo "# sluice benchmark $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "# command: ${BENCH_CMD:-sh test/bench/run.sh} $*"
  echo "# host: $(uname -srm); $(nproc) cores; $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo); $(free -m | awk '/Mem:/ {print $2}') MiB RAM"
  echo "# nginx: $("$NGINX" -v 2>&1)"
  echo "# haproxy: $("$HAPROXY" -v | head -1)"
  echo "# wrk: $("$WRK" -v 2>&1 | head -1)"
  if [[ " $PROXIES " == *" sluice "* ]]; then
    echo "# sluice: $("$SLUICE_BIN" -v 2>&1 | head -1); $SLUICE_BIN ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo no-commit); $(git -C "$ROOT" status --porcelain 2>/dev/null | wc -l) uncommitted paths; built $(date -r "$SLUICE_BIN" '+%F %T'))"
  fi
  echo "# load average at start: $(cut -d' ' -f1-3 /proc/loadavg) (anything else using the CPU skews the figures)"
  echo "# wrk -t$WRK_THREADS -c$CONNS -d${DURATION}s --latency; $ROUNDS interleaved rounds; ${WARMUP}s warm-up; paths $PATHS"
  echo "# idle connections: $IDLE; open-file limit $NOFILE; nginx worker_connections / haproxy maxconn $MAXCONN"
  echo
} >>"$RAW"

# ---------------------------------------------------------------- throughput / latency
printf 'proxy\tpath\tround\trps\tp50_us\tp99_us\trequests\tnon2xx\tsockerr\torigin_reqs\tcpu_us_per_req\n' >"$RUNS"
declare -A DEAD=()

wrk_parse() {  # wrk output on stdin -> "rps p50_us p99_us requests non2xx sockerr"
  awk '
    function us(v,   n, u) {
      n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
      if (u == "us") return n; if (u == "ms") return n * 1000
      if (u == "s") return n * 1000000; if (u == "m") return n * 60000000
      return n
    }
    /^Requests\/sec:/ { rps = $2 }
    /^ +50%/ { p50 = us($2) }
    /^ +99%/ { p99 = us($2) }
    / requests in / { req = $1 }
    /Non-2xx or 3xx responses:/ { non2xx = $NF }
    /Socket errors:/ { gsub(/,/, ""); serr = $4 + $6 + $8 + $10 }
    END {
      if (rps == "") { print "NA NA NA NA NA NA"; exit }
      printf "%s %s %s %s %d %d\n", rps, p50, p99, req, non2xx, serr
    }'
}

check_alive() {  # check_alive PROXY CONTEXT: record a crash once
  local p=$1
  if ! alive "$p" && [ -z "${DEAD[$p]:-}" ]; then
    DEAD[$p]=1
    wait "${PID[$p]}" 2>/dev/null; local rc=$?
    log "!!! $p (pid ${PID[$p]}) DIED during $2 (exit status $rc)"
    echo "!!! $p (pid ${PID[$p]}) died during $2 (exit status $rc)" >>"$RAW"
  fi
  [ -z "${DEAD[$p]:-}" ]
}

run_wrk() {   # run_wrk PROXY PATH SECONDS ROUND(0 = warm-up)
  local p=$1 path=$2 secs=$3 round=$4 out o0 o1 c0 c1 cpu
  check_alive "$p" "round $round $path" || {
    [ "$round" != 0 ] && printf '%s\t%s\t%s\tNA\tNA\tNA\tNA\tNA\tNA\tNA\tNA\n' "$p" "$path" "$round" >>"$RUNS"
    return; }
  o0=$(origin_requests); c0=$(cpu_ticks "$p")
  out=$(timeout $((secs + 30)) "$WRK" -t"$WRK_THREADS" -c"$CONNS" -d"${secs}s" --latency \
        "http://127.0.0.1:${PORT[$p]}$path" 2>&1)
  c1=$(cpu_ticks "$p"); o1=$(origin_requests)
  [ "$round" = 0 ] && { check_alive "$p" "warm-up $path"; return; }
  {
    echo "=== round $round $p $path (origin requests during run: $((o1 - o0)))"
    echo "$out"; echo
  } >>"$RAW"
  read -r rps p50 p99 req non2xx serr < <(echo "$out" | wrk_parse)
  cpu=$(awk -v t=$((c1 - c0)) -v hz="$CLK_TCK" -v n="$req" 'BEGIN {
    if (n + 0 > 0) printf "%.1f", t * 1000000 / hz / n; else print "NA" }')
  echo "proxy CPU time during the run: $((c1 - c0)) ticks of 1/$CLK_TCK s = $cpu us per request" >>"$RAW"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$p" "$path" "$round" \
    "$rps" "$p50" "$p99" "$req" "$non2xx" "$serr" "$((o1 - o0))" "$cpu" >>"$RUNS"
  printf 'bench: round %s %-6s %-7s %9s req/s  p50 %7sus  p99 %7sus  cpu %6sus/req  non-2xx %s  sock-err %s  origin/wrk %s/%s\n' \
    "$round" "$path" "$p" "$rps" "$p50" "$p99" "$cpu" "$non2xx" "$serr" "$((o1 - o0))" "$req" >&2
  check_alive "$p" "round $round $path" || true
}

for path in $PATHS; do
  for p in $PROXIES; do
    log "warm-up $p $path (${WARMUP}s)"
    run_wrk "$p" "$path" "$WARMUP" 0
  done
done
for round in $(seq 1 "$ROUNDS"); do
  for path in $PATHS; do
    for p in $PROXIES; do
      run_wrk "$p" "$path" "$DURATION" "$round"
      sleep 1
    done
  done
done
echo "# origin request split o1/o2 after the load runs:$(origin_split)" >>"$RAW"

# ---------------------------------------------------------------- memory per idle connection
printf 'proxy\tconns\tok\tfailed\tnon200\trss_before\trss_after\tfds_before\tfds_after\tclosed\tper_conn\n' >"$MEM"
for p in $PROXIES; do
  if ! check_alive "$p" "memory test"; then
    printf '%s\t%s\tNA\tNA\tNA\tNA\tNA\tNA\tNA\tNA\tNA\n' "$p" "$IDLE" >>"$MEM"; continue
  fi
  sleep 2
  before=$(rss_bytes "$p"); fds0=$(fd_count "$p")
  rm -f "$W/idle.ready" "$W/idle.done"
  "$PY" "$BENCH_DIR/idle_conns.py" 127.0.0.1 "${PORT[$p]}" -n "$IDLE" --path /small \
    --ready "$W/idle.ready" --done "$W/idle.done" --hold 180 >"$W/idle-$p.out" 2>&1 &
  ipid=$!; STARTED+=("$ipid")
  for i in $(seq 1 1200); do
    [ -f "$W/idle.ready" ] && break
    kill -0 "$ipid" 2>/dev/null || break
    sleep 0.1
  done
  if [ ! -f "$W/idle.ready" ]; then
    log "$p: idle-connection client did not get ready"; cat "$W/idle-$p.out" >&2
    stop_pid "$ipid"
    printf '%s\t%s\tNA\tNA\tNA\tNA\tNA\tNA\tNA\tNA\tNA\n' "$p" "$IDLE" >>"$MEM"; continue
  fi
  sleep 3   # let the proxy settle (deferred frees, idle upstream connections)
  after=$(rss_bytes "$p"); fds1=$(fd_count "$p")
  ready=$(cat "$W/idle.ready")
  stop_pid "$ipid"
  closed=$(sed -n 's/^closed_by_server=//p' "$W/idle.done" 2>/dev/null)
  ok=$(echo "$ready" | sed -n 's/.*ok=\([0-9]*\).*/\1/p')
  failed=$(echo "$ready" | sed -n 's/.*failed=\([0-9]*\).*/\1/p')
  non200=$(echo "$ready" | sed -n 's/.*non200=\([0-9]*\).*/\1/p')
  per=$([ "${ok:-0}" -gt 0 ] && echo $(((after - before) / ok)) || echo NA)
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$p" "$IDLE" "$ok" "$failed" "$non200" \
    "$before" "$after" "$fds0" "$fds1" "${closed:-NA}" "$per" >>"$MEM"
  echo "=== idle $p: $ready; RSS $before -> $after; fds $fds0 -> $fds1; closed_by_server=${closed:-NA}" >>"$RAW"
  log "idle $p: $ready; RSS $before -> $after bytes ($per B/conn); fds $fds0 -> $fds1; closed by server ${closed:-NA}"
  check_alive "$p" "memory test" || true
done

# ---------------------------------------------------------------- report
echo "# load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$RAW"
# Stop everything now (SIGTERM, by PID) so shutdown messages (sluice logs its totals) land
# in the logs copied below.
for p in $PROXIES o1 o2; do
  alive "$p" && stop_pid "${PID[$p]}"
done
log_problems() {  # warnings/errors a proxy logged, one count per proxy
  case $1 in
    sluice) grep -hE '^[^ ]+ (warn|error) ' "$W/sluice/error.log" "$W/sluice.out" 2>/dev/null ;;
    haproxy) grep -hE '\[(WARNING|ALERT)\]' "$W/haproxy.out" 2>/dev/null ;;
    *) grep -hE '\[(warn|error|crit|alert|emerg)\]' "$W/$1/error.log" "$W/$1.out" 2>/dev/null ;;
  esac
}
PROBLEMS=""
for p in $PROXIES o1 o2; do
  n=$(log_problems "$p" | wc -l)
  [ "$n" = 0 ] || PROBLEMS="$PROBLEMS$p logged $n warning/error lines, e.g.: $(log_problems "$p" | head -1)"$'\n'
done
SLUICE_TOTALS=$(grep -h ' stats: connections=' "$W/sluice/error.log" 2>/dev/null | tail -1 | sed 's/.* stats: //')
SUMMARY=$("$PY" "$BENCH_DIR/report.py" "$RUNS" "$MEM")

{
  [ -n "$SLUICE_TOTALS" ] && echo "sluice totals at exit: $SLUICE_TOTALS"
  [ -n "$PROBLEMS" ] && printf '%s' "$PROBLEMS"
} >"$W/extra.txt"
[ -s "$W/extra.txt" ] && SUMMARY="$SUMMARY"$'\n'"$(cat "$W/extra.txt")"
{
  echo; echo "##### summary"; echo "$SUMMARY"
  echo; echo "##### runs.tsv"; cat "$RUNS"
  echo; echo "##### mem.tsv"; cat "$MEM"
  for p in $PROXIES o1 o2; do
    echo; echo "##### $p: stdout/stderr and error log (last 40 lines)"
    tail -n 40 "$W/$p.out" 2>/dev/null
    for f in "$W/$p"/*.log; do [ -f "$f" ] && { echo "-- $f ($(wc -l <"$f") lines)"; tail -n 40 "$f"; }; done
  done
  for p in $PROXIES; do
    echo; echo "##### $p configuration"
    cat "$W/$p"/*.ini "$W/$p"/*.conf "$W/$p"/*.cfg 2>/dev/null
  done
} >>"$RAW"
cp "$RAW" "$ART"

echo
echo "$SUMMARY"
for p in $PROXIES; do
  [ -n "${DEAD[$p]:-}" ] && echo "WARNING: $p died during the benchmark (see $ART)"
done
if [ -f "$W/nginx/error.log" ] && grep -q 'buffered to a temporary file' "$W/nginx/error.log"; then
  echo "note: nginx buffered some upstream responses to temporary files (see $ART)"
fi
echo "raw results: $ART"
fails=$(awk -F'\t' 'NR > 1 && ($8 != 0 || $9 != 0) {n++} END {print n + 0}' "$RUNS")
[ "$fails" = 0 ] || echo "WARNING: $fails wrk runs saw non-2xx responses or socket errors (see $ART)"
exit 0
