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
#   --pinned                         per core (issue 16): each proxy with one thread/worker
#                                    pinned to CPU BENCH_PROXY_CPU [0]; wrk (64 connections)
#                                    and the origins pinned to BENCH_LOAD_CPU [1]; no memory
#                                    test (run.sh without --pinned measures it)
#   BENCH_PROXY_QUOTA [off]          with --pinned: each proxy's processes capped at this
#                                    percent of its CPU (cgroup cpu controller, 10 ms
#                                    periods), so that the proxy, not wrk and the origins
#                                    on the other CPU, sets req/s: req/s is then per-core
#                                    capacity; p99 includes the throttling (up to 10 ms)
#   BENCH_SLUICE_CONFIG [plain]      plain: sluice's backends have an address and nothing
#                                    else (keepalive = auto, idle_timeout = 1s); tuned: as
#                                    NGINX's upstream, keepalive = 64, idle_timeout = 60s
#   BENCH_BARE [0]                   1: NGINX and HAProxy proxy bare; by default they add
#                                    what sluice adds (X-Forwarded-For/-Proto/-Host, a
#                                    request id up and back: the same work, lib.sh)
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
BENCH_NAME=bench
# shellcheck source=test/bench/lib.sh
. "$BENCH_DIR/lib.sh"   # shared defaults and functions (PY, NGINX, HAPROXY, WRK, SLUICE_*, CONNS, ...)
DURATION=${BENCH_DURATION:-10}
ROUNDS=${BENCH_ROUNDS:-3}
WARMUP=${BENCH_WARMUP:-3}
IDLE=${BENCH_IDLE:-10000}
PATHS=${BENCH_PATHS:-"/small /64k"}

for arg in "$@"; do
  case $arg in
    --skip-sluice) SKIP_SLUICE=1 ;;
    --quick) DURATION=3; ROUNDS=1; WARMUP=1; IDLE=2000 ;;
    --pinned) PINNED=1 ;;
    -h|--help) sed -n '2,34p' "$0"; exit 0 ;;
    *) echo "bench: unknown argument $arg" >&2; exit 2 ;;
  esac
done

PINNED=${PINNED:-0}
PROXY_THREADS=2
if [ "$PINNED" = 1 ]; then
  PROXY_THREADS=1
  CONNS=${BENCH_CONNS:-64}
  PROXY_CPU=${BENCH_PROXY_CPU:-0}; LOAD_CPU=${BENCH_LOAD_CPU:-1}
  WRK_PREFIX="taskset -c $LOAD_CPU"
  WRK_NICE=""   # wrk shares its CPU with the origins only (lib.sh, wrk_nice)
  BENCH_NAME=bench-pinned
fi

check_tools "$NGINX" "$HAPROXY" "$PY" curl
[ "$PINNED" = 1 ] && { command -v taskset >/dev/null || die "--pinned needs taskset (util-linux)"; }

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

setup_workdir "$BENCH_NAME"   # $W, $ART, $RUNS, $RAW; stops every started process on exit
MEM=$W/mem.tsv

# ---------------------------------------------------------------- ports and content
read -r P_O1 P_O2 P_SLUICE P_NGINX P_HAPROXY < <(free_ports 5)
declare -A PORT=([sluice]=$P_SLUICE [nginx]=$P_NGINX [haproxy]=$P_HAPROXY)
ORIGIN_PORTS="$P_O1 $P_O2"

mkdir -p "$W/www"
head -c 65536 /dev/urandom >"$W/www/64k"
SHA_64K=$(sha256sum "$W/www/64k" | cut -d' ' -f1)

warn_load

# ---------------------------------------------------------------- origins
for o in o1 o2; do
  [ $o = o1 ] && port=$P_O1 || port=$P_O2
  start_origin $o "$port" "    sendfile on;" "        location = /64k { root $W/www; }"
done
wait_http o1 "http://127.0.0.1:$P_O1/small" || exit 1
wait_http o2 "http://127.0.0.1:$P_O2/small" || exit 1
if [ "$PINNED" = 1 ]; then pin o1 "$LOAD_CPU"; pin o2 "$LOAD_CPU"; fi

origin_split() {
  local port out=""
  for port in $ORIGIN_PORTS; do
    out="$out $(origin_count "$port")"
  done
  echo "$out"
}

# ---------------------------------------------------------------- proxies
if has_sluice; then
  d=$W/sluice; mkdir -p "$d"
  cat >"$d/sluice.ini" <<EOF
[proxy]
listen = 127.0.0.1:$P_SLUICE
threads = $PROXY_THREADS
error_log = $d/error.log
keepalive_timeout = 75s

[backend o1]
address = 127.0.0.1:$P_O1
$(sluice_backend_tuning)

[backend o2]
address = 127.0.0.1:$P_O2
$(sluice_backend_tuning)
EOF
  start_sluice "$SLUICE_BIN" "$d/sluice.ini"
fi

d=$W/nginx; nginx_dir "$d"
cat >"$d/nginx.conf" <<EOF
$(nginx_head "$d" "$PROXY_THREADS" "$NOFILE" "$MAXCONN")
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
$(nginx_proxy_location origins)
    }
}
EOF
start_nginx nginx

d=$W/haproxy; mkdir -p "$d"
cat >"$d/haproxy.cfg" <<EOF
$(haproxy_head "$MAXCONN" "$PROXY_THREADS")

frontend fe
    bind 127.0.0.1:$P_HAPROXY
$(haproxy_same_work)
    default_backend origins

backend origins
    balance leastconn
    server o1 127.0.0.1:$P_O1
    server o2 127.0.0.1:$P_O2
EOF
start_haproxy

for p in $PROXIES; do
  wait_http "$p" "http://127.0.0.1:${PORT[$p]}/small" || exit 1
  [ "$PINNED" = 1 ] && pin "$p" "$PROXY_CPU"
  [ "$PINNED" = 1 ] && [ -n "${BENCH_PROXY_QUOTA:-}" ] && cap "$p" "$BENCH_PROXY_QUOTA"
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
  check_same_work "$p" "$base" http
done
log "pre-flight ok: $PROXIES return the origin's bytes (small, 64k, 404)"

# ---------------------------------------------------------------- header of the raw file
{
  echo "# sluice benchmark $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "# command: ${BENCH_CMD:-sh test/bench/run.sh} $*"
  echo "# host: $(host_desc)"
  echo "# nginx: $("$NGINX" -v 2>&1)"
  echo "# haproxy: $("$HAPROXY" -v | head -1)"
  echo "# wrk: $("$WRK" -v 2>&1 | head -1)"
  if has_sluice; then
    echo "# sluice: $("$SLUICE_BIN" -v 2>&1 | head -1); $SLUICE_BIN ($(sluice_git_desc); built $(date -r "$SLUICE_BIN" '+%F %T'))"
  fi
  echo "# load average at start: $(cut -d' ' -f1-3 /proc/loadavg) (anything else using the CPU skews the figures)"
  echo "# wrk -t$WRK_THREADS -c$CONNS -d${DURATION}s --latency (${WRK_PREFIX:-} $WRK_NICE); $ROUNDS interleaved rounds; ${WARMUP}s warm-up; paths $PATHS"
  [ "$PINNED" = 1 ] && echo "# pinned: each proxy one thread/worker on CPU $PROXY_CPU; wrk and the origins on CPU $LOAD_CPU"
  [ "$PINNED" = 1 ] && [ -n "${BENCH_PROXY_QUOTA:-}" ] && echo "# capped: each proxy at ${BENCH_PROXY_QUOTA} % of its CPU (cgroup, 10 ms periods)"
  work_desc
  echo "# sluice configuration: $SLUICE_CONFIG (BENCH_SLUICE_CONFIG)"
  echo "# idle connections: $IDLE; open-file limit $NOFILE; nginx worker_connections / haproxy maxconn $MAXCONN"
  echo
} >>"$RAW"

# ---------------------------------------------------------------- throughput / latency
printf 'proxy\tpath\tround\trps\tp50_us\tp99_us\trequests\tnon2xx\tsockerr\torigin_reqs\tcpu_us_per_req\n' >"$RUNS"

run_wrk() {   # run_wrk PROXY PATH SECONDS ROUND(0 = warm-up)
  local p=$1 path=$2 secs=$3 round=$4 cpu
  check_alive "$p" "round $round $path" || {
    [ "$round" != 0 ] && printf '%s\t%s\t%s\tNA\tNA\tNA\tNA\tNA\tNA\tNA\tNA\n' "$p" "$path" "$round" >>"$RUNS"
    return; }
  wrk_run "$p" "http://127.0.0.1:${PORT[$p]}$path" "$secs"
  [ "$round" = 0 ] && { check_alive "$p" "warm-up $path"; return; }
  {
    echo "=== round $round $p $path (origin requests during run: $ORIGIN_DELTA)"
    echo "$WRK_OUT"; echo
  } >>"$RAW"
  read -r rps p50 p99 req non2xx serr < <(echo "$WRK_OUT" | wrk_parse)
  cpu=$(cpu_per_op "$CPU_DELTA" "$req")
  echo "proxy CPU time during the run: $CPU_DELTA ticks of 1/$CLK_TCK s = $cpu us per request" >>"$RAW"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$p" "$path" "$round" \
    "$rps" "$p50" "$p99" "$req" "$non2xx" "$serr" "$ORIGIN_DELTA" "$cpu" >>"$RUNS"
  printf 'bench: round %s %-6s %-7s %9s req/s  p50 %7sus  p99 %7sus  cpu %6sus/req  non-2xx %s  sock-err %s  origin/wrk %s/%s\n' \
    "$round" "$path" "$p" "$rps" "$p50" "$p99" "$cpu" "$non2xx" "$serr" "$ORIGIN_DELTA" "$req" >&2
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
MEM_PROXIES=$PROXIES
[ "$PINNED" = 1 ] && MEM_PROXIES=""   # per core only; memory is measured without --pinned
for p in $MEM_PROXIES; do
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
stop_all $PROXIES o1 o2
PROBLEMS=$(collect_problems $PROXIES o1 o2)
SLUICE_TOTALS=$(sluice_totals)
SUMMARY=$("$PY" "$BENCH_DIR/report.py" "$RUNS" "$MEM")

{
  [ -n "$SLUICE_TOTALS" ] && echo "sluice totals at exit: $SLUICE_TOTALS"
  [ -n "$PROBLEMS" ] && echo "$PROBLEMS"
} >"$W/extra.txt"
[ -s "$W/extra.txt" ] && SUMMARY="$SUMMARY"$'\n'"$(cat "$W/extra.txt")"
{
  echo; echo "##### summary"; echo "$SUMMARY"
  echo; echo "##### runs.tsv"; cat "$RUNS"
  echo; echo "##### mem.tsv"; cat "$MEM"
  logs_and_configs "$PROXIES" "o1 o2"
} >>"$RAW"
cp "$RAW" "$ART"

echo
echo "$SUMMARY"
warn_dead
if [ -f "$W/nginx/error.log" ] && grep -q 'buffered to a temporary file' "$W/nginx/error.log"; then
  echo "note: nginx buffered some upstream responses to temporary files (see $ART)"
fi
echo "raw results: $ART"
fails=$(awk -F'\t' 'NR > 1 && ($8 != 0 || $9 != 0) {n++} END {print n + 0}' "$RUNS")
[ "$fails" = 0 ] || echo "WARNING: $fails wrk runs saw non-2xx responses or socket errors (see $ART)"
exit 0
