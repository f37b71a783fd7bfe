#!/usr/bin/env bash
# HTTP/2 benchmark: sluice against NGINX and HAProxy speaking h2 to clients (`make bench`, after tls.sh).
#
# One run: one self-signed ECDSA P-256 certificate; one nginx origin serving /small
# (~100 B); sluice, nginx and haproxy each terminating TLS with that certificate and
# offering HTTP/2 by ALPN (h2, http/1.1; TLS 1.2 and 1.3; h2load offers only the TLS 1.3
# suite TLS_AES_128_GCM_SHA256, so all three negotiate it), 2 threads/workers each, proxying HTTP/1.1 to the origin with upstream
# keep-alive. For each proxy, interleaved rounds, median per metric:
#   - requests/s and mean/max request time over h2 (h2load -D: C connections, each with
#     up to M concurrent streams, GET /small; a run whose ALPN is not h2 fails the benchmark);
#   - failed / errored / timed-out requests and non-2xx responses (h2load's counts);
#   - proxy CPU time (utime+stime of its processes) per request, over the whole h2load run.
# Each proxy first gets one unmeasured h2load run of BENCH_WARMUP seconds (as tls.sh's
# warm-up). h2load's own --warm-up-time is not used: the measured window would start under
# full load, where the origin's request counter (stub_status) answers late, so the origin
# check (origin requests / h2load requests, ~1) could not be sampled at its start.
# Everything binds 127.0.0.1 on free ports, lives in a temporary directory, and every
# process started here is stopped by its PID on exit. Raw results:
# test/artifacts/bench-h2-<date>.txt.
#
# Options / environment (defaults in brackets):
#   --skip-sluice | SKIP_SLUICE=1    benchmark nginx and haproxy only
#   --quick                          smoke test: 3 s runs, 1 round
#   BENCH_DURATION    [10] seconds per h2load run
#   BENCH_ROUNDS      [3]  interleaved rounds    BENCH_WARMUP      [2] seconds of warm-up
#   BENCH_H2_CONNS    [32] h2load connections    BENCH_H2_STREAMS  [10] concurrent streams each
#   BENCH_H2_THREADS  [1]  h2load threads
#   BENCH_KEEP=1 keep the temp directory
#   BENCH_SLUICE_CONFIG [plain] | tuned, BENCH_BARE=1: as in run.sh (lib.sh)
#   SLUICE_BIN [build/sluice]   SLUICE_ARGS ["-c {config}"] ({config} is replaced)
#   H2LOAD [h2load] (Debian nghttp2-client)
# The Makefile runs this with `sh`; re-exec under bash.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BENCH_DIR=$ROOT/test/bench
BENCH_NAME=bench-h2
# shellcheck source=test/bench/lib.sh
. "$BENCH_DIR/lib.sh"   # shared defaults and functions (PY, NGINX, HAPROXY, SLUICE_*, ...)
OPENSSL=${OPENSSL:-openssl}
H2LOAD=${H2LOAD:-h2load}
DURATION=${BENCH_DURATION:-10}
ROUNDS=${BENCH_ROUNDS:-3}
WARMUP=${BENCH_WARMUP:-2}
H2_CONNS=${BENCH_H2_CONNS:-32}
H2_STREAMS=${BENCH_H2_STREAMS:-10}
H2_THREADS=${BENCH_H2_THREADS:-1}
TLS13_SUITE=TLS_AES_128_GCM_SHA256

for arg in "$@"; do
  case $arg in
    --skip-sluice) SKIP_SLUICE=1 ;;
    --quick) DURATION=3; ROUNDS=1; WARMUP=1 ;;
    -h|--help) sed -n '2,32p' "$0"; exit 0 ;;
    *) echo "bench-h2: unknown argument $arg" >&2; exit 2 ;;
  esac
done

check_tools "$NGINX" "$HAPROXY" "$PY" "$OPENSSL" "$H2LOAD" curl
# (help texts captured first: grep -q would close the pipe early, and pipefail is set)
H2HELP=$("$H2LOAD" --help 2>&1)
grep -q -- '--tls13-ciphers' <<<"$H2HELP" && grep -q -- '--duration' <<<"$H2HELP" \
  || die "$H2LOAD lacks -D/--duration or --tls13-ciphers"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

setup_workdir bench-h2   # $W, $ART, $RUNS, $RAW; stops every started process on exit

# ---------------------------------------------------------------- certificate, ports, origin
mkdir -p "$W/tls"
"$OPENSSL" req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=localhost -addext 'subjectAltName=DNS:localhost,IP:127.0.0.1' \
  -keyout "$W/tls/key.pem" -out "$W/tls/cert.pem" >"$W/openssl-req.out" 2>&1 \
  || { cat "$W/openssl-req.out" >&2; die "certificate generation failed"; }
cat "$W/tls/cert.pem" "$W/tls/key.pem" >"$W/tls/haproxy.pem"   # haproxy: cert + key in one file
CERT=$W/tls/cert.pem KEY=$W/tls/key.pem

read -r P_O P_SLUICE P_NGINX P_HAPROXY < <(free_ports 4)
declare -A PORT=([sluice]=$P_SLUICE [nginx]=$P_NGINX [haproxy]=$P_HAPROXY)
ORIGIN_PORTS=$P_O

warn_load

start_origin origin "$P_O"
wait_http origin "http://127.0.0.1:$P_O/small" || exit 1

# ---------------------------------------------------------------- proxies
declare -A CMDLINE=()
if has_sluice; then
  d=$W/sluice; mkdir -p "$d"
  cat >"$d/sluice.ini" <<EOF
[proxy]
tls_listen = 127.0.0.1:$P_SLUICE
tls_cert = $CERT
tls_key = $KEY
http2 = yes
threads = 2
error_log = $d/error.log
keepalive_timeout = 75s

[backend o]
address = 127.0.0.1:$P_O
$(sluice_backend_tuning)
EOF
  # Run a copy: a rebuild of build/sluice during the run must not change what is measured
  # (the header records the original's build time and the copy's sha256).
  SLUICE_BUILT=$(date -r "$SLUICE_BIN" '+%F %T')
  cp "$SLUICE_BIN" "$d/sluice" || die "cannot copy $SLUICE_BIN"
  start_sluice "$d/sluice" "$d/sluice.ini"
  CMDLINE[sluice]="$d/sluice ${SLUICE_ARGS//\{config\}/$d/sluice.ini}"
fi

# nginx 1.22: TLS 1.3 is not in its default ssl_protocols; keepalive_requests also bounds
# the streams of one h2 connection (default 1000, then GOAWAY, and h2load does not reconnect).
d=$W/nginx; nginx_dir "$d"
cat >"$d/nginx.conf" <<EOF
$(nginx_head "$d" 2 8192 4096)
http {
    access_log off;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
$(nginx_temp_paths "$d")
    upstream origin {
        server 127.0.0.1:$P_O;
        keepalive 64;
        keepalive_requests 1000000;
        keepalive_timeout 60s;
    }
    server {
        listen 127.0.0.1:$P_NGINX ssl http2 backlog=4096;
        ssl_certificate $CERT;
        ssl_certificate_key $KEY;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:SSL:10m;
$(nginx_proxy_location origin)
    }
}
EOF
start_nginx nginx
CMDLINE[nginx]="$NGINX -p $d -e $d/error.log -c $d/nginx.conf"

d=$W/haproxy; mkdir -p "$d"
cat >"$d/haproxy.cfg" <<EOF
$(haproxy_head 4096)

frontend fe
    bind 127.0.0.1:$P_HAPROXY ssl crt $W/tls/haproxy.pem alpn h2,http/1.1 ssl-min-ver TLSv1.2
$(haproxy_same_work)
    default_backend origin

backend origin
    server o 127.0.0.1:$P_O
EOF
start_haproxy
CMDLINE[haproxy]="$HAPROXY -db -f $d/haproxy.cfg"

for p in $PROXIES; do
  wait_http "$p" "https://127.0.0.1:${PORT[$p]}/small" || exit 1
done

# ---------------------------------------------------------------- correctness pre-flight
# curl over h2 (ALPN) must get 200 and the origin's body; a short h2load run must
# negotiate h2 and see only 2xx. The TLS parameters h2load negotiated are compared.
# One TLS 1.3 suite offered: sluice and haproxy pick by server preference (AES-256 first),
# nginx by the client's order (AES-128 first); all three negotiate the same suite this way.
H2_TLS="--tls13-ciphers=$TLS13_SUITE"
H2_ARGS="-c $H2_CONNS -m $H2_STREAMS -t $H2_THREADS $H2_TLS"
declare -A NEGOTIATED=()
grep -qw HTTP2 <<<"$(curl -V)" || die "curl lacks HTTP/2 support"
h2_field() { awk -F': ' -v k="$1" '$1 == k {print $2; exit}' "$2"; }
for p in $PROXIES; do
  url=https://127.0.0.1:${PORT[$p]}/small
  out=$(curl -sk --http2 --max-time 5 -w '\n%{http_version} %{http_code}' "$url")
  code=${out##*$'\n'}; body=${out%$'\n'*}; body=${body%$'\n'}
  [ "$code" = "2 200" ] && [ "$body" = "$SMALL_BODY" ] \
    || die "$p: curl --http2 /small returned HTTP version/status '$code': $(printf %s "$body" | head -c 200)"
  check_same_work "$p" "https://127.0.0.1:${PORT[$p]}" https -k --http2
  f=$W/pre-$p.h2load
  timeout 30 "$H2LOAD" -n 200 -c 2 -m "$H2_STREAMS" "$H2_TLS" "$url" >"$f" 2>&1
  alpn=$(h2_field "Application protocol" "$f")
  [ "$alpn" = h2 ] || { cat "$f" >&2; die "$p: h2load negotiated application protocol '$alpn', not h2"; }
  grep -q '^status codes: 200 2xx, 0 3xx, 0 4xx, 0 5xx' "$f" && grep -q ' 200 succeeded, 0 failed, 0 errored' "$f" \
    || { cat "$f" >&2; die "$p: h2load pre-flight (200 requests) did not see 200 x 2xx"; }
  NEGOTIATED[$p]="$(h2_field "TLS Protocol" "$f"), $(h2_field Cipher "$f"), key exchange $(h2_field "Server Temp Key" "$f"), ALPN $alpn"
done
first=""
for p in $PROXIES; do
  [ -z "$first" ] && first=${NEGOTIATED[$p]}
  [ "${NEGOTIATED[$p]}" = "$first" ] \
    || log "warning: TLS parameters differ: $p negotiated ${NEGOTIATED[$p]}, not $first"
done
log "pre-flight: $first"
log "pre-flight ok: $PROXIES answer 200 with the origin's body over h2 (curl --http2, and 200 requests of h2load)"

# ---------------------------------------------------------------- header of the raw file
{
  echo "# sluice HTTP/2 benchmark $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "# command: ${BENCH_CMD:-sh test/bench/h2.sh} $*"
  work_desc
  echo "# sluice configuration: $SLUICE_CONFIG (BENCH_SLUICE_CONFIG)"
  echo "# host: $(host_desc)"
  echo "# openssl: $("$OPENSSL" version)"
  echo "# nginx: $("$NGINX" -V 2>&1 | grep -E 'nginx version|built with OpenSSL' | tr '\n' ' ')"
  echo "# haproxy: $("$HAPROXY" -vv 2>&1 | grep -E '^HAProxy version|Running on OpenSSL' | tr '\n' ' ')"
  echo "# h2load: $("$H2LOAD" --version 2>&1 | head -1)"
  if has_sluice; then
    echo "# sluice: $("$W/sluice/sluice" -v 2>&1 | head -1); copy of $SLUICE_BIN (HEAD $(sluice_git_desc); built $SLUICE_BUILT; sha256 $(sha256sum "$W/sluice/sluice" | cut -c1-16)); libssl: $(ldd "$W/sluice/sluice" | awk '/libssl/ {print $3}'); libnghttp2: $(ldd "$W/sluice/sluice" | awk '/libnghttp2/ {print $3}')"
  fi
  echo "# certificate: self-signed ECDSA P-256; proxies accept TLS 1.2 and 1.3; h2load offers TLS 1.3 suite $TLS13_SUITE only; ALPN h2, http/1.1"
  for p in $PROXIES; do
    echo "# $p: ${CMDLINE[$p]}"
    echo "# negotiated by $p (h2load): ${NEGOTIATED[$p]}"
  done
  echo "# origin: $NGINX -p $W/origin -e $W/origin/error.log -c $W/origin/nginx.conf"
  echo "# load average at start: $(cut -d' ' -f1-3 /proc/loadavg) (anything else using the CPU skews the figures)"
  echo "# load: $H2LOAD $H2_ARGS -D $DURATION https://127.0.0.1:PORT/small"
  echo "# $ROUNDS interleaved rounds; ${WARMUP}s warm-up per proxy (same command, -D $WARMUP, not recorded)"
  echo
} >>"$RAW"

# ---------------------------------------------------------------- measurements
# One line per run. rps: h2load's req/s; mean/max: "time for request"; done: requests
# completed within -D; failed (includes errored), errored, timeout: h2load's
# counts; non2xx: 3xx + 4xx + 5xx statuses.
printf 'proxy\tround\trps\tmean_us\tmax_us\tdone\tsucceeded\tfailed\terrored\ttimeout\tnon2xx\torigin_reqs\tcpu_us_per_req\talpn\n' >"$RUNS"
ALPN_FAIL=0

h2load_parse() {  # h2load output on stdin -> "rps mean_us max_us done succeeded failed errored timeout non2xx alpn"
  awk '
    function us(v,   n, u) {
      n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
      if (u == "us") return n; if (u == "ms") return n * 1000
      if (u == "s") return n * 1000000
      return n
    }
    /^Application protocol:/ { if (alpn == "" || alpn == $3) alpn = $3; else alpn = "mixed" }
    /^finished in / { rps = $4 }
    /^requests: / { done = $6; ok = $8; failed = $10; errored = $12; tmo = $14 }
    /^status codes: / { non2xx = $5 + $7 + $9 }
    /^time for request:/ { max = us($5); mean = us($6) }
    END {
      if (rps == "" || done == "") { print "NA NA NA NA NA NA NA NA NA " (alpn == "" ? "none" : alpn); exit }
      printf "%s %s %s %s %s %s %s %s %d %s\n", rps, mean, max, done, ok, failed, errored, tmo, non2xx,
        (alpn == "" ? "none" : alpn)
    }'
}

run_h2load() {  # run_h2load PROXY SECONDS ROUND(0 = warm-up)
  local p=$1 secs=$2 round=$3 out=$W/h2load.out rc o0 o1 c0 c1 cpu errs
  check_alive "$p" "round $round" || {
    [ "$round" != 0 ] && printf '%s\t%s\tNA\tNA\tNA\tNA\tNA\tNA\tNA\tNA\tNA\tNA\tNA\tNA\n' "$p" "$round" >>"$RUNS"
    return; }
  o0=$(origin_requests); c0=$(cpu_ticks "$p")
  # shellcheck disable=SC2086
  timeout $((secs + 30)) "$H2LOAD" $H2_ARGS -D "$secs" "https://127.0.0.1:${PORT[$p]}/small" >"$out" 2>&1
  rc=$?
  c1=$(cpu_ticks "$p"); o1=$(origin_requests)
  [ "$round" = 0 ] && { check_alive "$p" "warm-up"; return; }
  read -r rps mean max ndone ok failed errored tmo non2xx alpn < <(h2load_parse <"$out")
  cpu=$(cpu_per_op "$((c1 - c0))" "$ndone")
  if [ "$alpn" != h2 ]; then
    log "!!! $p round $round: application protocol '$alpn', not h2: run not counted"
    ALPN_FAIL=1; rps=NA
  fi
  {
    echo "=== round $round $p (h2load exit status $rc; origin requests during run: $((o1 - o0)))"
    grep -v '^progress: ' "$out"
    echo "proxy CPU time during the run: $((c1 - c0)) ticks of 1/$CLK_TCK s = $cpu us per request"
    echo
  } >>"$RAW"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$p" "$round" "$rps" "$mean" "$max" \
    "$ndone" "$ok" "$failed" "$errored" "$tmo" "$non2xx" "$((o1 - o0))" "$cpu" "$alpn" >>"$RUNS"
  [ "$failed" = NA ] && errs=NA || errs=$((failed + tmo + non2xx))
  printf 'bench-h2: round %s %-7s %10s req/s  mean %8s us  max %8s us  cpu %6sus/req  failed %s errored %s timeout %s non-2xx %s  origin/done %s/%s\n' \
    "$round" "$p" "$rps" "$mean" "$max" "$cpu" "$failed" "$errored" "$tmo" "$non2xx" "$((o1 - o0))" "$ndone" >&2
  [ "$errs" = 0 ] || log "!!! $p round $round: errors (failed + timeout + non-2xx) = $errs; see $ART"
  [ "$rc" = 0 ] || log "!!! $p round $round: h2load exit status $rc"
  check_alive "$p" "round $round" || true
}

for p in $PROXIES; do
  log "warm-up $p (${WARMUP}s)"
  run_h2load "$p" "$WARMUP" 0
done
for round in $(seq 1 "$ROUNDS"); do
  for p in $PROXIES; do
    run_h2load "$p" "$DURATION" "$round"
    sleep 0.5
  done
done

# ---------------------------------------------------------------- report
echo "# load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$RAW"
stop_all $PROXIES origin
PROBLEMS=$(collect_problems $PROXIES origin)
SLUICE_TOTALS=$(sluice_totals)

cat >"$W/h2_report.py" <<'PYEOF'
import sys

sys.dont_write_bytecode = True          # no __pycache__ in test/bench
sys.path.insert(0, sys.argv[2])         # test/bench: run.sh's report.py and its helpers
from report import fmt_us as us, med, num, read_tsv  # noqa: E402

PROXIES = ["sluice", "nginx", "haproxy"]
NAMES = {"sluice": "sluice", "nginx": "NGINX", "haproxy": "HAProxy"}
runs = read_tsv(sys.argv[1])
load = sys.argv[3]

present = [p for p in PROXIES if any(r["proxy"] == p for r in runs)]
S = {}
for p in present:
    rs = [r for r in runs if r["proxy"] == p]
    ok = [r for r in rs if num(r["rps"]) is not None]
    S[p] = dict(
        n=f"{len(ok)}/{len(rs)}",
        rate=med([num(r["rps"]) for r in ok]),
        mean=med([num(r["mean_us"]) for r in ok]),
        max=med([num(r["max_us"]) for r in ok]),
        cpu=med([num(r["cpu_us_per_req"]) for r in ok]),
        failed=sum(int(num(r["failed"]) or 0) for r in ok) + (len(rs) - len(ok)),
        errored=sum(int(num(r["errored"]) or 0) for r in ok),
        timeout=sum(int(num(r["timeout"]) or 0) for r in ok),
        non2xx=sum(int(num(r["non2xx"]) or 0) for r in ok),
        done=sum(num(r["done"]) or 0 for r in ok),
        origin=sum(num(r["origin_reqs"]) or 0 for r in ok))


def f0(v):
    return f"{v:,.0f}" if v is not None else "FAILED"


def f1(v):
    return f"{v:.1f}us" if v is not None else "-"


print(f"HTTP/2 over TLS, /small ({load}): median over rounds;")
print("failed (includes errored; a run not counted counts 1), errored, timeout, non-2xx: totals")
hdr = (f"{'proxy':<8} {'rounds':>6} {'req/s':>9} {'mean':>8} {'max':>8} {'CPU/req':>9} "
       f"{'failed':>6} {'errored':>7} {'timeout':>7} {'non-2xx':>7} {'origin/h2load':>13}")
print(hdr)
print("-" * len(hdr))
for p in present:
    s = S[p]
    ratio = f"{s['origin'] / s['done']:.4f}" if s["done"] else "-"
    print(f"{p:<8} {s['n']:>6} {f0(s['rate']):>9} {us(s['mean']):>8} {us(s['max']):>8} "
          f"{f1(s['cpu']):>9} {s['failed']:>6} {s['errored']:>7} {s['timeout']:>7} "
          f"{s['non2xx']:>7} {ratio:>13}")
print()
if "sluice" in present:
    print("Ratios sluice / other: req/s >1 = sluice faster; mean, CPU/req <1 = sluice better")
    cols = [("req/s", "rate"), ("mean", "mean"), ("CPU/req", "cpu")]
    hdr = f"{'':<17}" + "".join(f"{c[0]:>11}" for c in cols)
    print(hdr)
    for other in ("nginx", "haproxy"):
        if other not in present:
            continue
        cells = []
        for _, key in cols:
            a, b = S["sluice"][key], S[other][key]
            cells.append(f"{a / b:.2f}" if a is not None and b else "n/a")
        print(f"{'sluice / ' + NAMES[other]:<17}" + "".join(f"{c:>11}" for c in cells))
    print()
PYEOF
SUMMARY=$("$PY" "$W/h2_report.py" "$RUNS" "$BENCH_DIR" "h2load $H2_ARGS -D $DURATION")
{
  [ -n "$SLUICE_TOTALS" ] && echo "sluice totals at exit: $SLUICE_TOTALS"
  [ -n "$PROBLEMS" ] && echo "$PROBLEMS"
} >"$W/extra.txt"
[ -s "$W/extra.txt" ] && SUMMARY="$SUMMARY"$'\n'"$(cat "$W/extra.txt")"
{
  echo; echo "##### summary"; echo "$SUMMARY"
  echo; echo "##### runs.tsv"; cat "$RUNS"
  logs_and_configs "$PROXIES" origin
} >>"$RAW"
cat "$RAW" >>"$ART"

echo
echo "$SUMMARY"
warn_dead
echo "raw results: $ART"
fails=$(awk -F'\t' 'NR > 1 && ($3 == "NA" || $8 != 0 || $10 != 0 || $11 != 0) {n++} END {print n + 0}' "$RUNS")
[ "$fails" = 0 ] || echo "WARNING: $fails runs saw errors (failed/errored/timed-out requests, non-2xx, or not counted; see $ART)"
if [ "$ALPN_FAIL" != 0 ]; then
  echo "FAILED: some h2load runs did not negotiate h2 (see $ART)"
  exit 1
fi
exit 0
