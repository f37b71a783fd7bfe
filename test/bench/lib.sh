# Shared code of the benchmark scripts test/bench/run.sh and test/bench/tls.sh, sourced by
# both (bash only) after they set ROOT, BENCH_DIR and BENCH_NAME (the prefix of their log
# lines). It defines common defaults and functions and no global state beyond the
# variables named below; nothing runs on sourcing except setting those defaults.
#
# Rules both scripts keep: everything binds 127.0.0.1 on free ports and lives in one
# temporary directory ($W); every process started goes through `start` (or is added to
# STARTED) and is stopped by its PID on exit, never by name; every load run is bounded
# by `timeout`.
# shellcheck shell=bash disable=SC2034  # globals set here are used by the sourcing scripts

# ---------------------------------------------------------------- defaults (environment)
PY=/usr/bin/python3
NGINX=${NGINX:-/usr/sbin/nginx}
HAPROXY=${HAPROXY:-/usr/sbin/haproxy}
WRK=${WRK:-wrk}
SLUICE_BIN=${SLUICE_BIN:-$ROOT/build/sluice}
SLUICE_ARGS=${SLUICE_ARGS:-"-c {config}"}
SKIP_SLUICE=${SKIP_SLUICE:-0}
CONNS=${BENCH_CONNS:-50}
WRK_THREADS=${BENCH_WRK_THREADS:-1}
KEEP=${BENCH_KEEP:-0}

# ~100-byte body for /small (99 characters + newline), served by the origins
SMALL_BODY=$(printf 'sluice bench small response %071d' 0)
CLK_TCK=$(getconf CLK_TCK)

die() { echo "$BENCH_NAME: $*" >&2; exit 1; }
log() { echo "$BENCH_NAME: $*" >&2; }

check_tools() {  # check_tools TOOL...: each must be on PATH (and wrk); sets PROXIES
  local b
  for b in "$@"; do
    command -v "$b" >/dev/null 2>&1 || die "$b not found (make deps)"
  done
  command -v "$WRK" >/dev/null 2>&1 || die "wrk not found (make deps)"
  PROXIES="nginx haproxy"
  if [ "$SKIP_SLUICE" != 1 ]; then
    [ -x "$SLUICE_BIN" ] || die "$SLUICE_BIN missing: build it (make) or run with SKIP_SLUICE=1"
    PROXIES="sluice nginx haproxy"
  fi
}

has_sluice() { [[ " $PROXIES " == *" sluice "* ]]; }

# ---------------------------------------------------------------- work directory, traps
setup_workdir() {  # setup_workdir NAME: $W (temp dir), $ART (test/artifacts/NAME-STAMP.txt), $RUNS, $RAW; traps
  W=$(mktemp -d "/tmp/sluice-$1.XXXXXX") || die "mktemp failed"
  chmod 755 "$W"             # nginx workers run as nobody when started by root
  STAMP=$(date +%Y%m%d-%H%M%S)
  mkdir -p "$ROOT/test/artifacts"
  ART=$ROOT/test/artifacts/$1-$STAMP.txt
  RUNS=$W/runs.tsv
  RAW=$W/raw.txt
  : >"$RAW"
  trap cleanup EXIT
  trap 'exit 130' INT TERM
}

# ---------------------------------------------------------------- process bookkeeping
declare -A PID=() DEAD=()
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
  uncap_all
  if [ "$KEEP" = 1 ]; then log "kept $W"; else rm -rf "$W"; fi
}

start() {      # start NAME CMD...: background, stdout/stderr to $W/NAME.out, remember PID
  local name=$1; shift
  "$@" >"$W/$name.out" 2>&1 &
  PID[$name]=$!
  STARTED+=("$!")
}

alive() { kill -0 "${PID[$1]}" 2>/dev/null; }

pin() {        # pin NAME CPU: every thread of NAME's processes (pids_of) to one CPU
  local p
  for p in $(pids_of "$1"); do taskset -a -p -c "$2" "$p" >/dev/null 2>&1 || log "cannot pin $1 ($p)"; done
}

# A CPU cap for one proxy's processes (--pinned with BENCH_PROXY_QUOTA): a cgroup of the
# cpu controller, v2 (cpu.max) or v1 (cpu.cfs_quota_us), that allows PERCENT of one CPU in
# every 10 ms period. Removed by cleanup once the processes are stopped.
CAPS=()
cap_root() {
  if grep -qw cpu /sys/fs/cgroup/cgroup.controllers 2>/dev/null; then echo "v2 /sys/fs/cgroup"
  elif [ -w /sys/fs/cgroup/cpu ]; then echo "v1 /sys/fs/cgroup/cpu"
  fi
}

cap() {        # cap NAME PERCENT: every process of NAME (pids_of) limited to PERCENT of a CPU
  local ver root dir p quota=$(( $2 * 100 ))
  read -r ver root < <(cap_root)
  [ -n "${root:-}" ] || die "BENCH_PROXY_QUOTA needs the cgroup cpu controller (v2 or v1) writable"
  dir=$root/sluice-bench-$$-$1
  mkdir -p "$dir" || die "cannot make cgroup $dir"
  CAPS+=("$dir")
  if [ "$ver" = v2 ]; then
    grep -qw cpu "$root/cgroup.subtree_control" || echo +cpu >"$root/cgroup.subtree_control"
    echo "$quota 10000" >"$dir/cpu.max" || die "cannot set $dir/cpu.max"
  else
    echo 10000 >"$dir/cpu.cfs_period_us" && echo "$quota" >"$dir/cpu.cfs_quota_us" ||
      die "cannot set the quota of $dir"
  fi
  for p in $(pids_of "$1"); do echo "$p" >"$dir/cgroup.procs" || log "cannot cap $1 ($p)"; done
}

uncap_all() {  # remove the cgroups cap made (their processes are gone by then)
  local d
  for d in "${CAPS[@]}"; do rmdir "$d" 2>/dev/null || log "cannot remove cgroup $d"; done
  CAPS=()
}

stop_all() {   # stop_all NAME...: stop the named processes (SIGTERM, by PID) if still running
  local n
  for n in "$@"; do
    alive "$n" && stop_pid "${PID[$n]}"
  done
  return 0
}

wait_http() {  # wait_http NAME URL: until URL answers 200 (10 s); -k: self-signed cert for https
  local name=$1 url=$2 i
  for i in $(seq 1 100); do
    if ! alive "$name"; then
      log "$name exited during start-up:"; tail -n 30 "$W/$name.out" >&2
      for f in "$W/$name"/*.log; do [ -f "$f" ] && tail -n 30 "$f" >&2; done
      return 1
    fi
    [ "$(curl -sk -o /dev/null -w '%{http_code}' --max-time 1 "$url")" = 200 ] && return 0
    sleep 0.1
  done
  log "$name did not answer $url within 10 s"; return 1
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

# ---------------------------------------------------------------- /proc accounting
pids_of() {    # the process and its direct children (nginx master + workers)
  echo "${PID[$1]}"
  ps -o pid= --ppid "${PID[$1]}" 2>/dev/null | tr -d ' '
}

cpu_ticks() {  # summed utime+stime (clock ticks) of pids_of NAME
  local p sum=0 t
  for p in $(pids_of "$1"); do
    t=$(awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$p/stat" 2>/dev/null)
    sum=$((sum + ${t:-0}))
  done
  echo "$sum"
}

cpu_per_op() {  # cpu_per_op TICKS OPS: microseconds of CPU per op, 1 decimal, or NA
  awk -v t="$1" -v hz="$CLK_TCK" -v n="$2" 'BEGIN {
    if (n + 0 > 0) printf "%.1f", t * 1000000 / hz / n; else print "NA" }'
}

rss_bytes() { # summed VmRSS of pids_of NAME, bytes
  local p sum=0 kb
  for p in $(pids_of "$1"); do
    kb=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null)
    sum=$((sum + ${kb:-0}))
  done
  echo $((sum * 1024))
}

fd_count() {
  local p sum=0 n
  for p in $(pids_of "$1"); do
    n=$(ls "/proc/$p/fd" 2>/dev/null | wc -l)
    sum=$((sum + n))
  done
  echo "$sum"
}

now() { date +%s.%N; }

# ---------------------------------------------------------------- ports, machine
free_ports() {  # free_ports N: N distinct free TCP ports on 127.0.0.1, one line
  "$PY" -c '
import socket, sys
ss = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in ss:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])
for s in ss:
    s.close()' "$1"
}

warn_load() {
  local LOAD0
  LOAD0=$(cut -d' ' -f1 /proc/loadavg)
  if awk -v l="$LOAD0" 'BEGIN {exit !(l > 0.5)}'; then
    log "warning: load average is $LOAD0 before starting; other work on this machine will skew the figures"
  fi
}

host_desc() {  # one line: kernel, cores, CPU model, RAM
  echo "$(uname -srm); $(nproc) cores; $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo); $(free -m | awk '/Mem:/ {print $2}') MiB RAM"
}

sluice_git_desc() {  # HEAD and number of uncommitted paths of the source tree
  echo "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo no-commit); $(git -C "$ROOT" status --porcelain 2>/dev/null | wc -l) uncommitted paths"
}

# ---------------------------------------------------------------- nginx and haproxy configuration
nginx_dir() {  # nginx_dir DIR: DIR and DIR/tmp, readable by nginx workers running as nobody
  mkdir -p "$1/tmp"; chmod 755 "$1" "$1/tmp"
}

nginx_head() {  # nginx_head DIR WORKERS RLIMIT_NOFILE WORKER_CONNECTIONS: main + events contexts
  cat <<EOF
daemon off;
worker_processes $2;
worker_rlimit_nofile $3;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections $4; }
EOF
}

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

start_origin() {  # start_origin NAME PORT [HTTP_LINES [LOCATION_LINES]]: nginx origin serving /small
  local name=$1 port=$2 http_extra=${3:+$3$'\n'} loc_extra=${4:+$4$'\n'} d=$W/$1
  nginx_dir "$d"
  cat >"$d/nginx.conf" <<EOF
$(nginx_head "$d" 1 8192 4096)
http {
    access_log off;
    default_type text/plain;
${http_extra}    log_not_found off;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
$(nginx_temp_paths "$d")
    server {
        listen 127.0.0.1:$port backlog=4096;
        location = /small { return 200 "$SMALL_BODY\n"; }
        location = /fwd { return 200 "for=\$http_x_forwarded_for proto=\$http_x_forwarded_proto host=\$http_x_forwarded_host id=\$http_x_request_id\n"; }
${loc_extra}        location = /nginx_status { stub_status; }
    }
}
EOF
  start_nginx "$name"
}

start_nginx() {  # start_nginx NAME: nginx in the foreground with $W/NAME/nginx.conf
  local d=$W/$1
  start "$1" "$NGINX" -p "$d" -e "$d/error.log" -c "$d/nginx.conf"
}

# The same work for the three proxies. sluice always sends X-Forwarded-For, -Proto and -Host
# and a request id upstream and returns the id to the client; an NGINX or HAProxy in front of
# Superset is configured to send the same (Superset's ProxyFix reads them), and without them
# NGINX and HAProxy do less work a request and their origins parse less (measured: NGINX's
# CPU a request +15 %, the origins' +30 %, docs/benchmarks.md "Session 13").
# BENCH_BARE=1: NGINX and HAProxy proxy bare, as the runs before 2026-12-06 20:00 UTC did.
same_work() { [ "${BENCH_BARE:-0}" != 1 ]; }

nginx_proxy_location() {  # nginx_proxy_location UPSTREAM: location / to UPSTREAM, upstream keep-alive
  cat <<EOF
        location / {
            proxy_pass http://$1;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
EOF
  same_work && cat <<'EOF'
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $http_host;
            proxy_set_header X-Request-ID $request_id;
            add_header X-Request-ID $request_id;
EOF
  echo "        }"
}

check_same_work() {  # check_same_work NAME URL_BASE PROTO [CURL_ARGS...]: the origin saw the forwarded fields, the client the id
  same_work || return 0
  local name=$1 base=$2 proto=$3 out; shift 3
  out=$(curl -si --max-time 5 "$@" "$base/fwd" | tr -d '\r')
  case $out in
    *"for=127.0.0.1 proto=$proto host=127.0.0.1:"*" id="[0-9a-f]*) ;;
    *) die "$name: does not do the same work as sluice (BENCH_BARE=1 to skip): $out" ;;
  esac
  printf '%s' "$out" | grep -qi '^x-request-id: ..*' || die "$name: no X-Request-ID in the response: $out"
}

work_desc() {  # the raw file's line saying which work the proxies do
  if same_work; then echo "# same work: NGINX and HAProxy add X-Forwarded-For/-Proto/-Host and a request id, as sluice does"
  else echo "# bare (BENCH_BARE=1): NGINX and HAProxy add no forwarded fields or request id; sluice does"; fi
}

haproxy_same_work() {  # frontend lines: what sluice adds to every request (same_work)
  same_work || return 0
  cat <<'EOF'
    option forwardfor
    http-request set-header X-Forwarded-Proto %[ssl_fc,iif(https,http)]
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    unique-id-format %[uuid()]
    unique-id-header X-Request-ID
    http-response set-header X-Request-ID %[unique-id]
EOF
}

origin_count() {  # origin_count PORT: the origin's stub_status request counter (empty on failure)
  curl -s --max-time 2 "http://127.0.0.1:$1/nginx_status" | awk 'NR == 3 {print $3}'
}

origin_requests() {  # total requests served by the origins on $ORIGIN_PORTS (each status request counts itself)
  local port n sum=0
  for port in $ORIGIN_PORTS; do
    n=$(origin_count "$port")
    sum=$((sum + ${n:-0} - 1))
  done
  echo "$sum"
}

start_haproxy() {  # start_haproxy: haproxy in the foreground with $W/haproxy/haproxy.cfg
  start haproxy "$HAPROXY" -db -f "$W/haproxy/haproxy.cfg"
}

haproxy_head() {  # haproxy_head MAXCONN [THREADS]: global and defaults sections
  cat <<EOF
global
    nbthread ${2:-2}
    maxconn $1

defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 75s
    timeout server 60s
    timeout http-request 10s
    timeout http-keep-alive 75s
EOF
}

# sluice's backends: the plainest config by default (an address, nothing else: keepalive =
# auto, idle_timeout = 1s); BENCH_SLUICE_CONFIG=tuned sets NGINX's upstream figures.
SLUICE_CONFIG=${BENCH_SLUICE_CONFIG:-plain}
case $SLUICE_CONFIG in plain|tuned) ;; *) die "BENCH_SLUICE_CONFIG is plain or tuned, not $SLUICE_CONFIG" ;; esac
sluice_backend_tuning() {  # the lines a backend section gets beyond its address
  [ "$SLUICE_CONFIG" = tuned ] && printf 'keepalive = 64\nidle_timeout = 60s\n'
  return 0
}

start_sluice() {  # start_sluice BIN CONFIG: SLUICE_ARGS with {config} replaced
  # shellcheck disable=SC2086
  start sluice "$1" ${SLUICE_ARGS//\{config\}/$2}
}

# ---------------------------------------------------------------- wrk
# wrk runs at nice BENCH_WRK_NICE [-10] where it may (root). On this two-core machine it
# shares the cores with the proxy and the origins, and a proxy thread waking from a short
# sleep preempts it: the time wrk then waits is counted in every latency it has in flight.
# Measured (session 13, sluice unpinned, /64k, -c50): p99 32.5 and 19.0 ms at nice 0, 4.4
# and 5.9 ms at -10, the same req/s. The same for every proxy; not in run.sh --pinned,
# where wrk has a core of its own with the origins.
wrk_nice() {  # the prefix that runs wrk at BENCH_WRK_NICE, or nothing where it cannot
  local n=${BENCH_WRK_NICE:--10}
  [ "$(nice -n "$n" nice 2>/dev/null)" = "$n" ] && echo "nice -n $n"
}
WRK_NICE=$(wrk_nice)   # run.sh --pinned empties it

wrk_run() {  # wrk_run PROXY URL SECONDS: bounded wrk run; sets WRK_OUT, ORIGIN_DELTA, CPU_DELTA
  local p=$1 o0 o1 c0 c1
  o0=$(origin_requests); c0=$(cpu_ticks "$p")
  # shellcheck disable=SC2086
  WRK_OUT=$(timeout $(($3 + 30)) ${WRK_PREFIX:-} $WRK_NICE "$WRK" -t"$WRK_THREADS" -c"$CONNS" -d"$3s" --latency "$2" 2>&1)
  c1=$(cpu_ticks "$p"); o1=$(origin_requests)
  ORIGIN_DELTA=$((o1 - o0)); CPU_DELTA=$((c1 - c0))
}

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

# ---------------------------------------------------------------- report
log_problems() {  # warnings/errors a process logged
  case $1 in
    sluice) grep -hE '^[^ ]+ (warn|error) ' "$W/sluice/error.log" "$W/sluice.out" 2>/dev/null ;;
    haproxy) grep -hE '\[(WARNING|ALERT)\]' "$W/haproxy.out" 2>/dev/null ;;
    *) grep -hE '\[(warn|error|crit|alert|emerg)\]' "$W/$1/error.log" "$W/$1.out" 2>/dev/null ;;
  esac
}

collect_problems() {  # collect_problems NAME...: one line per process that logged warnings/errors
  local p n out=""
  for p in "$@"; do
    n=$(log_problems "$p" | wc -l)
    [ "$n" = 0 ] || out="$out$p logged $n warning/error lines, e.g.: $(log_problems "$p" | head -1)"$'\n'
  done
  printf '%s' "$out"
}

sluice_totals() {  # the last totals line sluice logged (at exit)
  grep -h ' stats: connections=' "$W/sluice/error.log" 2>/dev/null | tail -1 | sed 's/.* stats: //'
}

logs_and_configs() {  # logs_and_configs "PROXIES" "OTHERS": raw-file appendix, logs then configs
  local p f
  for p in $1 $2; do
    echo; echo "##### $p: stdout/stderr and error log (last 40 lines)"
    tail -n 40 "$W/$p.out" 2>/dev/null
    for f in "$W/$p"/*.log; do [ -f "$f" ] && { echo "-- $f ($(wc -l <"$f") lines)"; tail -n 40 "$f"; }; done
  done
  for p in $1; do
    echo; echo "##### $p configuration"
    cat "$W/$p"/*.ini "$W/$p"/*.conf "$W/$p"/*.cfg 2>/dev/null
  done
}

warn_dead() {  # one warning per proxy that died
  local p
  for p in $PROXIES; do
    [ -n "${DEAD[$p]:-}" ] && echo "WARNING: $p died during the benchmark (see $ART)"
  done
  return 0
}
