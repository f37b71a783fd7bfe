#!/usr/bin/env bash
# Admission-control benchmark: sluice, NGINX and HAProxy in front of a saturated Gunicorn
# pool (`make bench`, after run.sh and tls.sh).
#
# One Gunicorn pool (/usr/bin/gunicorn, W sync workers running test/app.py), restarted
# before every run so each run starts with an empty pool and an empty listen backlog.
# Every request is /slow?ms=S, so the pool's capacity is C = W x 1000/S req/s (8 x 20 =
# 160 req/s by default: issue 13's pool, two servers of 4 workers there, one of 8 here).
# sluice, NGINX and HAProxy all proxy to it, configured as equivalently as each allows
# (docs/benchmarks.md, "Admission control under overload"): the same per-tenant rate
# limits (tenant = X-Tenant header) in all three; sluice `workers = W` + [queue]
# max/timeout, HAProxy `maxconn W` + a queue bound + timeout queue, NGINX has neither
# (it forwards everything; optionally `max_conns`, see below).
# test/bench/loadgen.py sends open-loop Poisson traffic (the same arrival times for every
# proxy) with a hard client timeout, and records every request's status and latency.
# Scenarios, each run against each proxy (interleaved: scenario by scenario):
#   overload     tenant solo at 2 x C, no tenant rate limit: concurrency cap + queue only
#   overload10   the same at 10 x C
#   many         100 unnamed keys (flood-0..99) together at 4 x C beside quiet at 0.2 x C
#   mixed        tenant long (10 x S requests) and tenant short (S requests), each
#                offering the whole pool's worker time (2 x its half); reported: the share
#                of worker time each got (goal: 50 % +- 10 %)
#   overload-rl  tenant capped at 2 x C, rate-limited to C (burst C/2) in all three
#   quiet-alone  tenant quiet at 0.2 x C alone: the baseline for the next one
#   noisy        tenant noisy at 4 x C beside quiet at 0.2 x C; both limited to 0.8 x C
#                (burst 0.4 x C: half a second of their rate)
# Reported per run: goodput (2xx within 1 s, per second, and as % of C), p50/p99/max of
# 2xx latency, 429/503 (and whether they carried Retry-After), other 5xx, timeouts,
# errors; quiet's success rate and p99 beside noisy vs alone; ratios sluice/other.
# Everything binds 127.0.0.1 on free ports, lives in a temporary directory, and every
# process started here is stopped by its PID on exit; every load run is bounded by
# `timeout`. Raw results: test/artifacts/overload-<date>.txt.
#
# Options / environment (defaults in brackets):
#   --skip-sluice | SKIP_SLUICE=1    benchmark nginx and haproxy only
#   --quick                          smoke test (~1.5 min): 4 s runs, 5 s client timeout
#   BENCH_DURATION [20]  seconds of arrivals per run   BENCH_ROUNDS [1] interleaved rounds
#   BENCH_WORKERS  [8]   Gunicorn sync workers (W)     BENCH_SLOW_MS [50] service time (S)
#   BENCH_SLOW_SPREAD [0] service times drawn uniformly from S x (1 +- P/100), mean S
#                        (0: every request takes S, as issue 13 measured; a saturated pool
#                        of equal requests then completes in clusters, see docs/benchmarks.md)
#   BENCH_CLIENT_TIMEOUT [10] hard per-request client timeout, s
#   BENCH_GOOD_MS  [1000] a 2xx within this counts as goodput
#   BENCH_QUEUE_MAX [C/2] sluice [queue] max = HAProxy's bound on queue(app)
#   BENCH_QUEUE_TIMEOUT_MS [1000] sluice [queue] timeout = HAProxy timeout queue
#   BENCH_QUEUE_TARGET_MS [0] sluice [queue] target (CoDel-like shedding; 0 = off, as the
#                        default config; interval = BENCH_QUEUE_INTERVAL_MS [500])
#   BENCH_TENANT_QUEUE [QUEUE_MAX/2] sluice max_queue of noisy and quiet (0 = none)
#   BENCH_NOISY_MAX_INFLIGHT [0] sluice max_inflight of noisy (0 = none; W-1 keeps a
#                        slot for quiet, which no other proxy here can do)
#   BENCH_SHARE_PCT [80] noisy's and quiet's rate limit, % of C (burst: half a second of it)
#   BENCH_SCENARIOS ["overload overload10 overload-rl quiet-alone noisy many mixed"]
#   BENCH_SLUICE_CONFIG [plain]: sluice with only `workers = W`, `[tenants] key` and an
#                        empty `[tenant quiet]` (no [queue], no per-tenant numbers: what a
#                        new user writes; NGINX and
#                        HAProxy keep their tuned limits); `tuned`: the config described
#                        above, with the BENCH_QUEUE_* and tenant numbers
#   BENCH_ARRIVALS [poisson] or constant            BENCH_SEED [1]
#   BENCH_NGINX_MAX_CONNS [0] if > 0: NGINX `server ... max_conns=N` (free NGINX has no
#                        queue: beyond N in flight it answers 502 at once)
#   BENCH_HAPROXY_LIMITER [gpc]: gpc0_rate, counts admitted requests only; http_req_rate
#                        counts refused ones too (a tenant above its rate is refused entirely)
#   BENCH_RETRY_AFTER [1]: NGINX and HAProxy add "Retry-After: 1" to their 429/503
#                        (neither does by default); 0 = leave them as they are
#   BENCH_KEEP=1 keep the temp directory
#   SLUICE_BIN [build/sluice] (a copy is run)   GUNICORN [/usr/bin/gunicorn]
# The Makefile runs this with `sh`; re-exec under bash.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BENCH_DIR=$ROOT/test/bench
BENCH_NAME=bench-overload
# shellcheck source=test/bench/lib.sh
. "$BENCH_DIR/lib.sh"   # shared defaults and functions (PY, NGINX, HAPROXY, SLUICE_*, ...)
GUNICORN=${GUNICORN:-/usr/bin/gunicorn}
DURATION=${BENCH_DURATION:-20}
ROUNDS=${BENCH_ROUNDS:-1}
WORKERS=${BENCH_WORKERS:-8}
SLOW_MS=${BENCH_SLOW_MS:-50}
SLOW_SPREAD=${BENCH_SLOW_SPREAD:-0}
CLIENT_TIMEOUT=${BENCH_CLIENT_TIMEOUT:-10}
GOOD_MS=${BENCH_GOOD_MS:-1000}
QUEUE_TIMEOUT_MS=${BENCH_QUEUE_TIMEOUT_MS:-1000}
QUEUE_TARGET_MS=${BENCH_QUEUE_TARGET_MS:-0}
QUEUE_INTERVAL_MS=${BENCH_QUEUE_INTERVAL_MS:-500}
SHARE_PCT=${BENCH_SHARE_PCT:-80}
SCENARIOS=${BENCH_SCENARIOS:-"overload overload10 overload-rl quiet-alone noisy many mixed"}
SLUICE_CONFIG=${BENCH_SLUICE_CONFIG:-plain}
ARRIVALS=${BENCH_ARRIVALS:-poisson}
SEED=${BENCH_SEED:-1}
NGINX_MAX_CONNS=${BENCH_NGINX_MAX_CONNS:-0}
HAPROXY_LIMITER=${BENCH_HAPROXY_LIMITER:-gpc}
RETRY_AFTER=${BENCH_RETRY_AFTER:-1}
NOISY_MAX_INFLIGHT=${BENCH_NOISY_MAX_INFLIGHT:-0}

for arg in "$@"; do
  case $arg in
    --skip-sluice) SKIP_SLUICE=1 ;;
    --quick) DURATION=4; ROUNDS=1; CLIENT_TIMEOUT=5 ;;
    -h|--help) sed -n '2,/^# The Makefile/p' "$0"; exit 0 ;;
    *) echo "$BENCH_NAME: unknown argument $arg" >&2; exit 2 ;;
  esac
done
case $HAPROXY_LIMITER in gpc|http_req_rate) ;; *) die "BENCH_HAPROXY_LIMITER must be gpc or http_req_rate" ;; esac
for s in $SCENARIOS; do
  case $s in overload|overload10|overload-rl|quiet-alone|noisy|many|mixed) ;; *) die "unknown scenario $s" ;; esac
done

check_tools "$NGINX" "$HAPROXY" "$PY" "$GUNICORN" curl

# ---------------------------------------------------------------- the numbers
# Rates are whole requests per second (NGINX's limit_req takes r/s); bursts are half a
# second of the rate, which HAProxy expresses as "at most BURST per sliding 500 ms".
calc() { awk "BEGIN {v = $1; printf \"%d\", (v == int(v)) ? v : int(v + 0.5)}"; }
CAP=$(calc "$WORKERS * 1000 / $SLOW_MS")                  # C, req/s
[ "$CAP" -ge 2 ] || die "capacity $CAP req/s is too small (BENCH_WORKERS, BENCH_SLOW_MS)"
QUEUE_MAX=${BENCH_QUEUE_MAX:-$(calc "$CAP / 2")}
TENANT_QUEUE=${BENCH_TENANT_QUEUE:-$(calc "$QUEUE_MAX / 2")}
RATE_OVER=$((2 * CAP))                                    # overload offered rate
RATE_NOISY=$((4 * CAP))
RATE_QUIET=$(awk -v c="$CAP" 'BEGIN {printf "%g", c * 0.2}')
LIM_CAPPED=$CAP;                       BURST_CAPPED=$(calc "$CAP / 2")
LIM_SHARE=$(calc "$CAP * $SHARE_PCT / 100"); BURST_SHARE=$(calc "$LIM_SHARE / 2")
[ "$BURST_SHARE" -ge 1 ] || BURST_SHARE=1
QTO_S=$(awk -v m="$QUEUE_TIMEOUT_MS" 'BEGIN {printf "%g", m / 1000}')
URL_PATH="/slow?ms=$SLOW_MS&spread=$SLOW_SPREAD"
LIMITS="capped ${LIM_CAPPED} req/s burst ${BURST_CAPPED}; noisy and quiet ${LIM_SHARE} req/s burst ${BURST_SHARE} each; solo unlimited"

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
setup_workdir overload   # $W, $ART, $RUNS, $RAW; stops every started process on exit
mkdir -p "$W/res"

read -r P_G P_SLUICE P_NGINX P_HAPROXY < <(free_ports 4)
declare -A PORT=([sluice]=$P_SLUICE [nginx]=$P_NGINX [haproxy]=$P_HAPROXY)
warn_load

# ---------------------------------------------------------------- the Gunicorn pool
GUNI_N=0
start_pool() {  # (re)start the pool on $P_G; waits until all W workers have booted
  local i
  if [ -n "${PID[gunicorn]:-}" ]; then
    stop_all gunicorn
    { echo "--- gunicorn instance $GUNI_N"; cat "$W/gunicorn.out"; } >>"$W/gunicorn-all.log"
  fi
  GUNI_N=$((GUNI_N + 1))
  start gunicorn "$GUNICORN" --chdir "$ROOT/test" -b "127.0.0.1:$P_G" -w "$WORKERS" -k sync \
    --backlog 2048 --timeout 60 --graceful-timeout 1 --log-level info app:app
  for i in $(seq 1 150); do
    alive gunicorn || { log "gunicorn exited:"; tail -n 20 "$W/gunicorn.out" >&2; return 1; }
    [ "$(grep -c 'Booting worker' "$W/gunicorn.out")" -ge "$WORKERS" ] && break
    sleep 0.1
  done
  wait_http gunicorn "http://127.0.0.1:$P_G/slow?ms=0"
}

# ---------------------------------------------------------------- proxies
start_pool || die "gunicorn did not start"

if has_sluice; then
  d=$W/sluice; mkdir -p "$d"
  cat >"$d/sluice.ini" <<EOF
[proxy]
listen = 127.0.0.1:$P_SLUICE
threads = 2
error_log = $d/error.log
access_log = $d/access.log

[backend app]
address = 127.0.0.1:$P_G
workers = $WORKERS

[tenants]
key = header:X-Tenant
EOF
  if [ "$SLUICE_CONFIG" = plain ]; then
    # what a new user writes: the backend's workers and a tenant key, nothing else
    cat >>"$d/sluice.ini" <<EOF

; named, with no numbers: a class of its own in the queue (every unnamed key, flood-0..99
; included, is a flow in the default tenant's class)
[tenant quiet]
EOF
  else
    tq=""; [ "$TENANT_QUEUE" -gt 0 ] && tq="max_queue = $TENANT_QUEUE"
    nmi=""; [ "$NOISY_MAX_INFLIGHT" -gt 0 ] && nmi="max_inflight = $NOISY_MAX_INFLIGHT"
    cat >>"$d/sluice.ini" <<EOF

[tenant solo]
; no rate limit: only the backend's slots and the queue
weight = 1

[tenant capped]
rate = $LIM_CAPPED
burst = $BURST_CAPPED

[tenant noisy]
rate = $LIM_SHARE
burst = $BURST_SHARE
$tq
$nmi

[tenant quiet]
rate = $LIM_SHARE
burst = $BURST_SHARE
$tq

[queue]
max = $QUEUE_MAX
timeout = ${QUEUE_TIMEOUT_MS}ms
target = ${QUEUE_TARGET_MS}ms
interval = ${QUEUE_INTERVAL_MS}ms
EOF
  fi
  # Run a copy: a rebuild of build/sluice during the run must not change what is measured.
  SLUICE_BUILT=$(date -r "$SLUICE_BIN" '+%F %T')
  cp "$SLUICE_BIN" "$d/sluice" || die "cannot copy $SLUICE_BIN"
  "$d/sluice" -t -c "$d/sluice.ini" >"$W/sluice-t.out" 2>&1 || { cat "$W/sluice-t.out" >&2; die "sluice -t failed"; }
  start_sluice "$d/sluice" "$d/sluice.ini"
fi

d=$W/nginx; nginx_dir "$d"
ngx_zone=""; ngx_mc=""
if [ "$NGINX_MAX_CONNS" -gt 0 ]; then ngx_zone="        zone app 64k;"; ngx_mc=" max_conns=$NGINX_MAX_CONNS"; fi
ngx_err=""; ngx_ra=""
if [ "$RETRY_AFTER" = 1 ]; then
  ngx_err="        error_page 429 @r429;"
  ngx_ra="        location @r429 { add_header Retry-After 1 always; return 429 \"nginx: over the tenant's rate\\n\"; }"
fi
cat >"$d/nginx.conf" <<EOF
$(nginx_head "$d" 2 8192 4096)
http {
    access_log off;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
$(nginx_temp_paths "$d")
    # one zone per limit; an empty key is not limited
    map \$http_x_tenant \$lim_capped { capped \$http_x_tenant; default ""; }
    map \$http_x_tenant \$lim_share  { noisy \$http_x_tenant; quiet \$http_x_tenant; default ""; }
    limit_req_zone \$lim_capped zone=capped:1m rate=${LIM_CAPPED}r/s;
    limit_req_zone \$lim_share zone=share:1m rate=${LIM_SHARE}r/s;
    limit_req_status 429;
    limit_req_log_level info;   # not in the error log (level warn): one line per refusal
    upstream app {
$ngx_zone
        server 127.0.0.1:$P_G$ngx_mc;
        keepalive 16;
    }
    server {
        listen 127.0.0.1:$P_NGINX backlog=4096;
$ngx_err
$ngx_ra
        location / {
            limit_req zone=capped burst=$BURST_CAPPED nodelay;
            limit_req zone=share burst=$BURST_SHARE nodelay;
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
start_nginx nginx

d=$W/haproxy; mkdir -p "$d"
if [ "$HAPROXY_LIMITER" = gpc ]; then
  # gpc0 is incremented after the deny rules, so only admitted requests count: at most
  # BURST admitted per sliding 500 ms = the rate, with a burst of half a second of it.
  hap_store="gpc0,gpc0_rate(500ms)"; hap_cnt="sc_gpc0_rate(0) ge"
  hap_inc="    http-request sc-inc-gpc0(0) if { req.hdr(X-Tenant) -m found }"
else
  # what most HAProxy rate-limit examples do: http_req_rate counts every tracked request,
  # the refused ones too
  hap_store="http_req_rate(500ms)"; hap_cnt="sc_http_req_rate(0) gt"; hap_inc=""
fi
hap_ra=""
[ "$RETRY_AFTER" = 1 ] && hap_ra="    http-after-response set-header Retry-After 1 if { status 429 } || { status 503 }"
cat >"$d/haproxy.cfg" <<EOF
$(haproxy_head 4096)
    timeout queue ${QUEUE_TIMEOUT_MS}ms

frontend fe
    bind 127.0.0.1:$P_HAPROXY
    stick-table type string len 64 size 10k expire 30s store $hap_store
    http-request track-sc0 req.hdr(X-Tenant) if { req.hdr(X-Tenant) -m found }
    http-request deny deny_status 429 if { req.hdr(X-Tenant) -m str capped } { $hap_cnt $BURST_CAPPED }
    http-request deny deny_status 429 if { req.hdr(X-Tenant) -m str noisy quiet } { $hap_cnt $BURST_SHARE }
$hap_inc
    # the queue bound: server maxqueue would not do, it only counts requests bound to that
    # server (persistence); the others wait in the backend's queue, which queue() counts
    http-request deny deny_status 503 if { queue(app) ge $QUEUE_MAX }
$hap_ra
    default_backend app

backend app
    server g 127.0.0.1:$P_G maxconn $WORKERS
EOF
"$HAPROXY" -c -f "$d/haproxy.cfg" >"$W/haproxy-c.out" 2>&1 || { cat "$W/haproxy-c.out" >&2; die "haproxy -c failed"; }
start_haproxy

for p in $PROXIES; do
  wait_http "$p" "http://127.0.0.1:${PORT[$p]}/slow?ms=0" || exit 1
done

# ---------------------------------------------------------------- pre-flight
# Each proxy must pass the app's answer, and refuse a burst of one rate-limited tenant
# beyond its burst with 429 (proves the per-tenant limit is wired to X-Tenant).
for p in $PROXIES; do
  body=$(curl -s --max-time 5 -H 'X-Tenant: solo' "http://127.0.0.1:${PORT[$p]}/slow?ms=1")
  [ "$body" = "slept 1" ] || die "$p: /slow?ms=1 answered '$body'"
  # one curl, all at once: a curl process per request spawns slower than a limit of
  # 0.8 x C when C is 160 req/s, and the burst would never be seen
  codes=$(for _ in $(seq 1 $((BURST_SHARE * 3 + 5))); do
            echo "url = \"http://127.0.0.1:${PORT[$p]}/slow?ms=0\""
            echo "output = /dev/null"
          done | curl -s --no-progress-meter --parallel --parallel-immediate --parallel-max 300 --max-time 5 \
                   -H 'X-Tenant: quiet' -w '%{http_code}\n' -K -)
  n429=$(grep -c '^429$' <<<"$codes")
  # sluice's plain config has no rate limits: nothing to prove there
  [ "$n429" -gt 0 ] || { [ "$p" = sluice ] && [ "$SLUICE_CONFIG" = plain ]; } || die "$p: $((BURST_SHARE * 3 + 5)) parallel requests of tenant quiet got no 429 (limit $LIM_SHARE/s burst $BURST_SHARE): $(sort <<<"$codes" | uniq -c | tr '\n' ' ')"
done
log "pre-flight ok: $PROXIES answer /slow and rate-limit tenant quiet"
sleep 1

# ---------------------------------------------------------------- header of the raw file
{
  echo "# sluice admission-control benchmark $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "# command: ${BENCH_CMD:-sh test/bench/overload.sh} $*"
  echo "# host: $(host_desc)"
  echo "# nginx: $("$NGINX" -v 2>&1)"
  echo "# haproxy: $("$HAPROXY" -v | head -1)"
  echo "# gunicorn: $("$GUNICORN" --version 2>&1) on $("$PY" --version 2>&1)"
  if has_sluice; then
    echo "# sluice: $("$W/sluice/sluice" -v 2>&1 | head -1); copy of $SLUICE_BIN (HEAD $(sluice_git_desc); built $SLUICE_BUILT; sha256 $(sha256sum "$W/sluice/sluice" | cut -c1-16))"
  fi
  echo "# load average at start: $(cut -d' ' -f1-3 /proc/loadavg) (anything else using the CPU skews the figures)"
  echo "# pool: $WORKERS sync workers, $URL_PATH => C = $CAP req/s; restarted before every run"
  echo "# runs: ${DURATION}s of $ARRIVALS arrivals (seed $SEED + round), client timeout ${CLIENT_TIMEOUT}s, good = 2xx within ${GOOD_MS} ms; $ROUNDS round(s); scenarios: $SCENARIOS"
  echo "# per-tenant limits (all three proxies): $LIMITS"
  echo "# sluice config: $SLUICE_CONFIG$([ "$SLUICE_CONFIG" = plain ] && echo " (workers = $WORKERS, [tenants] key, an empty [tenant quiet]: the sluice numbers on the next line do not apply)")"
  echo "# queue: sluice workers=$WORKERS [queue] max=$QUEUE_MAX timeout=${QUEUE_TIMEOUT_MS}ms, max_queue=$TENANT_QUEUE for noisy and quiet, max_inflight=$NOISY_MAX_INFLIGHT for noisy; haproxy maxconn $WORKERS, deny 503 if queue(app) >= $QUEUE_MAX, timeout queue ${QUEUE_TIMEOUT_MS}ms (limiter $HAPROXY_LIMITER); nginx max_conns=${NGINX_MAX_CONNS} (0 = none), Retry-After added by nginx/haproxy: $RETRY_AFTER"
  echo
} >>"$RAW"

# ---------------------------------------------------------------- runs
printf 'scenario\tproxy\tround\tjson\tcpu_ticks\taccess_from\taccess_to\n' >"$RUNS"

streams_of() {  # streams_of SCENARIO: loadgen --stream arguments
  case $1 in
    overload)    echo "--stream solo:$RATE_OVER:$URL_PATH:X-Tenant=solo" ;;
    overload10)  echo "--stream solo:$((10 * CAP)):$URL_PATH:X-Tenant=solo" ;;
    overload-rl) echo "--stream capped:$RATE_OVER:$URL_PATH:X-Tenant=capped" ;;
    quiet-alone) echo "--stream quiet:$RATE_QUIET:$URL_PATH:X-Tenant=quiet" ;;
    noisy)       echo "--stream noisy:$RATE_NOISY:$URL_PATH:X-Tenant=noisy --stream quiet:$RATE_QUIET:$URL_PATH:X-Tenant=quiet" ;;
    many)        echo "--stream flood:$RATE_NOISY:$URL_PATH:X-Tenant=flood-{seq%100} --stream quiet:$RATE_QUIET:$URL_PATH:X-Tenant=quiet" ;;
    # long's 10 x S requests at C/10 req/s offer the whole pool's worker time, as short's S
    # requests at C do (c x s / 1000, as this was, is W: C/10 only when S = 100 ms)
    mixed)       echo "--stream long:$(awk -v c="$CAP" 'BEGIN {printf "%g", c / 10}'):/slow?ms=$((SLOW_MS * 10))&spread=$SLOW_SPREAD:X-Tenant=long --stream short:$CAP:$URL_PATH:X-Tenant=short" ;;
  esac
}

access_lines() { [ -f "$W/sluice/access.log" ] && wc -l <"$W/sluice/access.log" || echo 0; }

run_one() {  # run_one SCENARIO PROXY ROUND
  local sc=$1 p=$2 round=$3 out c0 c1 a0 a1 rc
  out=$W/res/$sc-$p-$round.json
  check_alive "$p" "$sc round $round" || {
    printf '%s\t%s\t%s\tNA\tNA\tNA\tNA\n' "$sc" "$p" "$round" >>"$RUNS"; return; }
  start_pool || { log "!!! gunicorn restart failed before $sc $p"; return; }
  wait_http "$p" "http://127.0.0.1:${PORT[$p]}/slow?ms=0" || true
  a0=$(access_lines); c0=$(cpu_ticks "$p")
  # shellcheck disable=SC2046
  timeout $((${DURATION%.*} + ${CLIENT_TIMEOUT%.*} + 30)) "$PY" "$BENCH_DIR/loadgen.py" \
    --port "${PORT[$p]}" --duration "$DURATION" --timeout "$CLIENT_TIMEOUT" --good-ms "$GOOD_MS" \
    --arrivals "$ARRIVALS" --seed $((SEED + round - 1)) $(streams_of "$sc") \
    --out "$out" --raw "$W/res/$sc-$p-$round.tsv" 2>"$W/res/$sc-$p-$round.err"
  rc=$?
  c1=$(cpu_ticks "$p")
  sleep 0.5; a1=$(access_lines)
  if [ "$rc" != 0 ] || [ ! -s "$out" ]; then
    log "!!! loadgen failed ($rc) for $sc $p:"; cat "$W/res/$sc-$p-$round.err" >&2
    printf '%s\t%s\t%s\tNA\tNA\tNA\tNA\n' "$sc" "$p" "$round" >>"$RUNS"; return
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$sc" "$p" "$round" "$out" "$((c1 - c0))" "$a0" "$a1" >>"$RUNS"
  "$PY" "$W/overload_report.py" line "$out" "$CAP" >&2
  check_alive "$p" "$sc round $round" || true
}

# The report (and the one-line summary after each run); standard library only.
cat >"$W/overload_report.py" <<'PYEOF'
import json
import os
import statistics
import sys

sys.dont_write_bytecode = True
PROXIES = ["sluice", "nginx", "haproxy"]
NAMES = {"sluice": "sluice", "nginx": "NGINX", "haproxy": "HAProxy"}


def load(path):
    with open(path) as f:
        return json.load(f)


def fnum(v, fmt="{:.0f}"):
    return "-" if v is None else fmt.format(v)


def fms(v):
    if v is None:
        return "-"
    return f"{v / 1000:.2f}s" if v >= 1000 else f"{v:.0f}ms"


def refusal(s, code):
    r = s["refusals"].get(code)
    if not r:
        return "0"
    return f"{r['n']}({r['retry_after']})"


def other5xx(s):
    return sum(n for c, n in s["status"].items() if c.startswith("5") and c != "503")


def errs(s):
    return sum(s["errors"].values())


def gen_ok(s):
    """The generator kept up: sent what it scheduled, on time."""
    lag = s["lag_ms"]["p99"] or 0
    return s["sent"] == s["scheduled"] and lag < 50


def line(path, cap):
    d = load(path)
    g = d["generator"]
    for name, s in d["streams"].items():
        l2 = s["latency_2xx_ms"]
        print(f"bench-overload:   {name:<7} sent {s['sent']:>5} "
              f"good {s['good_2xx']:>5} ({100 * s['goodput_rps'] / cap:5.1f}% of C) "
              f"2xx p50 {fms(l2['p50'])} p99 {fms(l2['p99'])} max {fms(l2['max'])} "
              f"429(RA) {refusal(s, '429')} 503(RA) {refusal(s, '503')} 5xx {other5xx(s)} "
              f"timeouts {s['timeouts']} errors {errs(s)} "
              f"rate {s['achieved_rate']}/{s['scheduled_rate']} lag p99 {s['lag_ms']['p99']}ms"
              f"{'' if gen_ok(s) else '  GENERATOR BEHIND'}", file=sys.stderr)
    print(f"bench-overload:   loadgen cpu {g['cpu_pct_of_one_core']}% of a core, wall {g['wall_s']}s",
          file=sys.stderr)


def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def access_digest(path, a, b):
    """sluice access log lines a+1..b, per tenant: statuses; total/upstream ms of the 200s."""
    T = {}
    with open(path) as f:
        lines = f.readlines()[a:b]
    for ln in lines:
        x = ln.split()
        if len(x) < 12:
            continue
        t = T.setdefault(x[2], {"st": {}, "tot": [], "ups": [], "qw": []})
        t["st"][x[5]] = t["st"].get(x[5], 0) + 1
        if x[5] == "200" and x[9] != "-" and x[10] != "-":
            t["tot"].append(int(x[9]))
            t["ups"].append(int(x[10]))
            t["qw"].append(int(x[9]) - int(x[10]))

    def p(v, q):
        return v[min(len(v) - 1, int(q * len(v)))] if v else None
    out = []
    for name, t in sorted(T.items()):
        for k in ("tot", "ups", "qw"):
            t[k].sort()
        out.append(f"  {name}: statuses {dict(sorted(t['st'].items()))}; 200s: total_ms p50 {p(t['tot'], .5)} "
                   f"p99 {p(t['tot'], .99)} max {t['tot'][-1] if t['tot'] else None}; upstream_ms p50 "
                   f"{p(t['ups'], .5)} p99 {p(t['ups'], .99)}; total-upstream (queue wait + proxy) p50 "
                   f"{p(t['qw'], .5)} p99 {p(t['qw'], .99)} max {t['qw'][-1] if t['qw'] else None}")
    return "\n".join(out)


def report(runs_tsv, cap, header):
    slow_ms = int(os.environ.get("SLOW_MS", "100"))
    rows = []
    with open(runs_tsv) as f:
        keys = f.readline().rstrip("\n").split("\t")
        for ln in f:
            rows.append(dict(zip(keys, ln.rstrip("\n").split("\t"))))
    R = {}  # (scenario, proxy) -> list of run dicts
    for r in rows:
        d = load(r["json"]) if r["json"] != "NA" else None
        R.setdefault((r["scenario"], r["proxy"]), []).append((r, d))
    present = [p for p in PROXIES if any(k[1] == p for k in R)]
    scen = []
    for r in rows:
        if r["scenario"] not in scen:
            scen.append(r["scenario"])
    print(header)

    def agg(sc, p, stream):
        """Median over rounds of the rates/latencies, sums of the counts."""
        ds = [d["streams"][stream] for _, d in R.get((sc, p), []) if d]
        if not ds:
            return None
        a = {"rounds": len(ds), "failed": len(R[(sc, p)]) - len(ds)}
        for k in ("sent", "scheduled", "good_2xx", "ok_2xx", "late_2xx", "timeouts"):
            a[k] = sum(s[k] for s in ds)
        a["errors"] = sum(errs(s) for s in ds)
        a["other5xx"] = sum(other5xx(s) for s in ds)
        a["goodput"] = med([s["goodput_rps"] for s in ds])
        a["success"] = 100.0 * a["ok_2xx"] / a["sent"] if a["sent"] else None
        for q in ("p50", "p99", "max"):
            a[q] = med([s["latency_2xx_ms"][q] for s in ds])
        for code in ("429", "503"):
            a[code] = sum(s["refusals"].get(code, {}).get("n", 0) for s in ds)
            a[code + "ra"] = sum(s["refusals"].get(code, {}).get("retry_after", 0) for s in ds)
            a[code + "lat"] = med([s["refusals"].get(code, {}).get("latency_p50_ms") for s in ds])
        a["status"] = {}
        a["reasons"] = {}
        for s in ds:
            for c, n in s["status"].items():
                a["status"][c] = a["status"].get(c, 0) + n
            for c, n in s["reject_reasons"].items():
                a["reasons"][c] = a["reasons"].get(c, 0) + n
        a["gen_ok"] = all(gen_ok(s) for s in ds)
        a["rate"] = med([s["achieved_rate"] for s in ds])
        a["sched_rate"] = med([s["scheduled_rate"] for s in ds])
        a["lag99"] = max(s["lag_ms"]["p99"] or 0 for s in ds)
        a["target"] = ds[0]["target_rate"]
        return a

    def ref(a, code):
        n = a[code]
        if not n:
            return "0"
        return f"{n} ({100 * a[code + 'ra'] / n:.0f}% RA, {fms(a[code + 'lat'])})"

    def load_table(sc, stream, title):
        print(title)
        hdr = (f"{'proxy':<8} {'sent':>5} {'good/s':>7} {'%C':>6} {'2xx p50':>8} {'2xx p99':>8} "
               f"{'2xx max':>8} {'2xx>1s':>6} {'429 (Retry-After, p50)':>24} {'503 (Retry-After, p50)':>24} "
               f"{'5xx':>4} {'t/o':>4} {'err':>4} {'send rate':>11}")
        print(hdr)
        print("-" * len(hdr))
        for p in present:
            a = agg(sc, p, stream)
            if a is None:
                print(f"{p:<8} FAILED")
                continue
            print(f"{p:<8} {a['sent']:>5} {fnum(a['goodput'], '{:.1f}'):>7} "
                  f"{fnum(100 * a['goodput'] / cap, '{:.1f}'):>6} {fms(a['p50']):>8} {fms(a['p99']):>8} "
                  f"{fms(a['max']):>8} {a['late_2xx']:>6} {ref(a, '429'):>24} {ref(a, '503'):>24} "
                  f"{a['other5xx']:>4} {a['timeouts']:>4} {a['errors']:>4} "
                  f"{fnum(a['rate'], '{:.1f}'):>5}/{fnum(a['sched_rate'], '{:.1f}'):<5}"
                  f"{'' if a['gen_ok'] else ' GENERATOR BEHIND'}")
        for p in present:
            a = agg(sc, p, stream)
            if a and (a["reasons"] or set(a["status"]) - {"200", "429", "503"}):
                print(f"  {p}: statuses {a['status']}" +
                      (f"; X-Sluice-Reject {a['reasons']}" if a["reasons"] else ""))
        print()

    S = {}
    if "overload" in scen:
        load_table("overload", "solo", f"(1) overload: tenant solo at {2 * cap} req/s (2 x C), no tenant rate limit")
    if "overload10" in scen:
        load_table("overload10", "solo", f"(1a) overload10: tenant solo at {10 * cap} req/s (10 x C), no tenant rate limit")
    if "overload-rl" in scen:
        load_table("overload-rl", "capped", f"(1b) overload-rl: tenant capped at {2 * cap} req/s (2 x C), rate-limited to C")
    if "quiet-alone" in scen:
        load_table("quiet-alone", "quiet", "(2a) quiet alone")
    if "noisy" in scen:
        load_table("noisy", "quiet", "(2b) noisy neighbour: quiet beside noisy")
        load_table("noisy", "noisy", "(2b) noisy neighbour: noisy beside quiet")
    if "many" in scen:
        load_table("many", "quiet", "(2c) 100 unnamed keys flooding: quiet beside them")
        load_table("many", "flood", "(2c) 100 unnamed keys flooding: the flood")
    if "mixed" in scen:
        load_table("mixed", "long", f"(3) mixed cost: long ({10 * slow_ms} ms requests)")
        load_table("mixed", "short", f"(3) mixed cost: short ({slow_ms} ms requests)")
        print("(3) worker time: each tenant offers the whole pool's; a fair split is 50 % each")
        for p in present:
            lg, sh = agg("mixed", p, "long"), agg("mixed", p, "short")
            if not lg or not sh:
                continue
            wl = lg["status"].get("200", 0) * 10 * slow_ms
            ws = sh["status"].get("200", 0) * slow_ms
            if wl + ws:
                print(f"  {p:<8} long {100 * wl / (wl + ws):5.1f} %   short {100 * ws / (wl + ws):5.1f} %"
                      f"   {'' if abs(wl - ws) <= 0.2 * (wl + ws) else '!'}")
        print()

    def mark(v, ok):  # v: a formatted number, "-" when the scenario did not run
        return v if v == "-" else f"{v}{'' if ok else '!'}"

    # goals
    print("Goals (issues 4, 13): overload goodput >= 90% of C at 2x and 10x; quiet success >= 99.9% and p99 <= 1.5 x alone")
    hdr = (f"{'proxy':<8} {'overload %C':>12} {'10x %C':>8} {'overload-rl %C':>15} {'quiet ok% alone':>16} "
           f"{'quiet ok% noisy':>16} {'p99 alone':>10} {'p99 noisy':>10} {'ratio':>6} {'noisy %C':>9}")
    print(hdr)
    print("-" * len(hdr))
    for p in present:
        o = agg("overload", p, "solo") if "overload" in scen else None
        o10 = agg("overload10", p, "solo") if "overload10" in scen else None
        o10g = 100 * o10["goodput"] / cap if o10 else None
        orl = agg("overload-rl", p, "capped") if "overload-rl" in scen else None
        qa = agg("quiet-alone", p, "quiet") if "quiet-alone" in scen else None
        qn = agg("noisy", p, "quiet") if "noisy" in scen else None
        nn = agg("noisy", p, "noisy") if "noisy" in scen else None
        ratio = qn["p99"] / qa["p99"] if qa and qn and qa["p99"] and qn["p99"] else None

        og = 100 * o["goodput"] / cap if o else None
        orlg = 100 * orl["goodput"] / cap if orl else None
        S[p] = dict(og=og, o10g=o10g, op99=o["p99"] if o else None, orlg=orlg, orlp99=orl["p99"] if orl else None,
                    qa=qa["success"] if qa else None, qn=qn["success"] if qn else None,
                    qap99=qa["p99"] if qa else None, qnp99=qn["p99"] if qn else None, ratio=ratio,
                    ng=100 * nn["goodput"] / cap if nn else None)
        print(f"{p:<8} {mark(fnum(og, '{:.1f}'), og is not None and og >= 90):>12} "
              f"{mark(fnum(o10g, '{:.1f}'), o10g is not None and o10g >= 90):>8} "
              f"{mark(fnum(orlg, '{:.1f}'), orlg is not None and orlg >= 90):>15} "
              f"{fnum(S[p]['qa'], '{:.2f}'):>16} "
              f"{mark(fnum(S[p]['qn'], '{:.2f}'), S[p]['qn'] is not None and S[p]['qn'] >= 99.9):>16} "
              f"{fms(S[p]['qap99']):>10} {fms(S[p]['qnp99']):>10} "
              f"{mark(fnum(ratio, '{:.2f}'), ratio is not None and ratio <= 1.5):>6} "
              f"{mark(fnum(S[p]['ng'], '{:.1f}'), S[p]['ng'] is not None and S[p]['ng'] >= 70):>9}")
    print("('!' = misses the goal; ok% = 2xx / sent, any latency up to the client timeout)")
    print()
    if "many" in scen:
        print("Goals (issue 13), 100 unnamed keys flooding at 4 x C beside quiet: quiet as beside noisy; "
              "the keys' goodput >= 70% of C, all >= 90%")
        hdr = f"{'proxy':<8} {'quiet ok%':>10} {'p99 alone':>10} {'p99 many':>10} {'ratio':>6} {'keys %C':>8} {'all %C':>7}"
        print(hdr)
        print("-" * len(hdr))
        for p in present:
            qa = agg("quiet-alone", p, "quiet") if "quiet-alone" in scen else None
            qm, fm = agg("many", p, "quiet"), agg("many", p, "flood")
            if not qm or not fm:
                continue
            r = qm["p99"] / qa["p99"] if qa and qa["p99"] and qm["p99"] else None
            kg = 100 * fm["goodput"] / cap
            ag = kg + 100 * qm["goodput"] / cap
            print(f"{p:<8} {mark(fnum(qm['success'], '{:.2f}'), qm['success'] >= 99.9):>10} "
                  f"{fms(qa['p99'] if qa else None):>10} {fms(qm['p99']):>10} "
                  f"{mark(fnum(r, '{:.2f}'), r is not None and r <= 1.5):>6} "
                  f"{mark(fnum(kg, '{:.1f}'), kg >= 70):>8} {mark(fnum(ag, '{:.1f}'), ag >= 90):>7}")
        print()
    if "sluice" in present:
        print("Ratios sluice / other: goodput >1 = sluice better; p99 and quiet's p99 ratio <1 = sluice better")
        cols = [("ovl good", "og"), ("ovl10 good", "o10g"), ("ovl p99", "op99"), ("ovl-rl good", "orlg"), ("ovl-rl p99", "orlp99"),
                ("quiet p99", "qnp99"), ("quiet ratio", "ratio"), ("noisy good", "ng")]
        print(f"{'':<17}" + "".join(f"{c[0]:>12}" for c in cols))
        for other in ("nginx", "haproxy"):
            if other not in S:
                continue
            cells = []
            for _, k in cols:
                a, b = S["sluice"][k], S[other][k]
                cells.append(f"{a / b:.2f}" if a is not None and b else "n/a")
            print(f"{'sluice / ' + NAMES[other]:<17}" + "".join(f"{c:>12}" for c in cells))
        print()


if __name__ == "__main__":
    if sys.argv[1] == "line":
        line(sys.argv[2], float(sys.argv[3]))
    elif sys.argv[1] == "access":
        print(access_digest(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
    else:
        report(sys.argv[2], float(sys.argv[3]), sys.argv[4])
PYEOF

T_START=$(date +%s)
for round in $(seq 1 "$ROUNDS"); do
  for sc in $SCENARIOS; do
    for p in $PROXIES; do
      log "round $round: $sc via $p (${DURATION}s)"
      run_one "$sc" "$p" "$round"
    done
  done
done
log "load runs took $(( $(date +%s) - T_START )) s"

# ---------------------------------------------------------------- report
echo "# load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$RAW"
stop_all $PROXIES gunicorn
{ echo "--- gunicorn instance $GUNI_N"; cat "$W/gunicorn.out"; } >>"$W/gunicorn-all.log"
PROBLEMS=$(collect_problems $PROXIES)
SLUICE_TOTALS=$(sluice_totals)
HEADER="Admission control: Gunicorn $WORKERS sync workers, $URL_PATH => C = $CAP req/s; ${DURATION}s of $ARRIVALS arrivals per run, $ROUNDS round(s); client timeout ${CLIENT_TIMEOUT}s; good = 2xx within ${GOOD_MS} ms
Per-tenant limits, the same in all three: $LIMITS
sluice: $([ "$SLUICE_CONFIG" = plain ] && echo "plain config: backend workers = $WORKERS, [tenants] key = header:X-Tenant and an empty [tenant quiet], nothing else; (tuned: " || echo "(")backend workers = $WORKERS, [queue] max $QUEUE_MAX timeout ${QTO_S}s, max_queue $TENANT_QUEUE for noisy and quiet$([ "$NOISY_MAX_INFLIGHT" -gt 0 ] && echo ", max_inflight $NOISY_MAX_INFLIGHT for noisy")). HAProxy: maxconn $WORKERS, 503 when queue(app) >= $QUEUE_MAX, timeout queue ${QTO_S}s, limiter $HAPROXY_LIMITER. NGINX: $([ "$NGINX_MAX_CONNS" -gt 0 ] && echo "max_conns=$NGINX_MAX_CONNS, no queue (free NGINX)" || echo "no concurrency cap, no queue (Gunicorn's listen backlog queues)"). Retry-After added to NGINX/HAProxy refusals: $([ "$RETRY_AFTER" = 1 ] && echo yes || echo no)
Columns: good/s = 2xx answered within ${GOOD_MS} ms and within the ${DURATION}s window, per second; %C = good/s / C; 429/503: count (share with Retry-After, median latency of the refusal); 5xx = other 5xx; t/o = client timeouts; send rate = achieved/scheduled req/s
"
SUMMARY=$(SLOW_MS=$SLOW_MS "$PY" "$W/overload_report.py" report "$RUNS" "$CAP" "$HEADER")
{
  if [ -n "$SLUICE_TOTALS" ]; then
    echo "sluice totals at exit: $SLUICE_TOTALS"
    grep -h ' stats: tenant=' "$W/sluice/error.log" 2>/dev/null | sed 's/^.* stats: /sluice at exit: /'
  fi
  [ -n "$PROBLEMS" ] && echo "$PROBLEMS"
} >"$W/extra.txt"
[ -s "$W/extra.txt" ] && SUMMARY="$SUMMARY"$'\n'"$(cat "$W/extra.txt")"
{
  echo; echo "##### summary"; echo "$SUMMARY"
  if has_sluice; then
    echo; echo "##### sluice access log, per run (columns: docs/logging.md)"
    awk -F'\t' 'NR > 1 && $2 == "sluice" && $6 != "NA" {print $1, $3, $6, $7}' "$RUNS" |
      while read -r sc round a b; do
        echo "$sc round $round:"; "$PY" "$W/overload_report.py" access "$W/sluice/access.log" "$a" "$b"
      done
  fi
  echo; echo "##### runs.tsv"; cat "$RUNS"
  echo; echo "##### per-run loadgen JSON"
  for f in "$W"/res/*.json; do echo "--- $(basename "$f")"; cat "$f"; done
  echo; echo "##### gunicorn (all instances; warnings and errors)"
  grep -E 'WARNING|ERROR|CRITICAL|Traceback' "$W/gunicorn-all.log" | head -40
  logs_and_configs "$PROXIES" ""
} >>"$RAW"
cp "$RAW" "$ART"

echo
echo "$SUMMARY"
warn_dead
echo "raw results: $ART"
exit 0
