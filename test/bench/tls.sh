#!/usr/bin/env bash
# TLS benchmark: sluice against NGINX and HAProxy terminating TLS (`make bench`, after run.sh).
#
# One run: one self-signed ECDSA P-256 certificate; one nginx origin serving /small
# (~100 B); sluice, nginx and haproxy each terminating TLS with that certificate (TLS 1.2
# and 1.3; TLS 1.2 limited to ECDHE-ECDSA-AES128-GCM-SHA256, TLS 1.3 OpenSSL's default
# suites), 2 threads/workers each, proxying to the origin with upstream keep-alive. For
# each proxy, interleaved rounds, median per metric:
#   - requests/s, p50, p99 over TLS keep-alive connections (wrk https, /small);
#   - full handshakes/s without resumption, TLS 1.3 then TLS 1.2 (openssl s_time -new:
#     sequential new connections, each a full handshake + one HTTP/1.0 request for /small);
#   - proxy CPU time (utime+stime of its processes) per request / per handshake.
# Everything binds 127.0.0.1 on free ports, lives in a temporary directory, and every
# process started here is stopped by its PID on exit. Method and results:
# docs/benchmarks.md, section "TLS". Raw results: test/artifacts/bench-tls-<date>.txt.
#
# Options / environment (defaults in brackets):
#   --skip-sluice | SKIP_SLUICE=1    benchmark nginx and haproxy only
#   --quick                          smoke test: 3 s runs, 1 round
#   BENCH_DURATION    [10] seconds per wrk run   BENCH_HS_DURATION [5] seconds per s_time run
#   BENCH_ROUNDS      [3]  interleaved rounds    BENCH_WARMUP      [2] seconds of warm-up
#   BENCH_CONNS       [50] wrk connections       BENCH_WRK_THREADS [1]
#   BENCH_HS_CLIENTS  [1]  parallel s_time processes per handshake run
#   BENCH_KEEP=1 keep the temp directory
#   BENCH_SLUICE_CONFIG [plain] | tuned, BENCH_BARE=1: as in run.sh (lib.sh)
#   SLUICE_BIN [build/sluice]   SLUICE_ARGS ["-c {config}"] ({config} is replaced)
# The Makefile runs this with `sh`; re-exec under bash.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BENCH_DIR=$ROOT/test/bench
BENCH_NAME=bench-tls
# shellcheck source=test/bench/lib.sh
. "$BENCH_DIR/lib.sh"   # shared defaults and functions (PY, NGINX, HAPROXY, WRK, SLUICE_*, CONNS, ...)
OPENSSL=${OPENSSL:-openssl}
DURATION=${BENCH_DURATION:-10}
HS_DURATION=${BENCH_HS_DURATION:-5}
ROUNDS=${BENCH_ROUNDS:-3}
WARMUP=${BENCH_WARMUP:-2}
HS_CLIENTS=${BENCH_HS_CLIENTS:-1}
CIPHER12=ECDHE-ECDSA-AES128-GCM-SHA256

for arg in "$@"; do
  case $arg in
    --skip-sluice) SKIP_SLUICE=1 ;;
    --quick) DURATION=3; HS_DURATION=3; ROUNDS=1; WARMUP=1 ;;
    -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
    *) echo "bench-tls: unknown argument $arg" >&2; exit 2 ;;
  esac
done

check_tools "$NGINX" "$HAPROXY" "$PY" "$OPENSSL" curl
"$OPENSSL" s_time -help 2>&1 | grep -q -- '-tls1_2' || die "openssl s_time lacks -tls1_2"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

setup_workdir bench-tls   # $W, $ART, $RUNS, $RAW; stops every started process on exit

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
if has_sluice; then
  d=$W/sluice; mkdir -p "$d"
  cat >"$d/sluice.ini" <<EOF
[proxy]
tls_listen = 127.0.0.1:$P_SLUICE
tls_cert = $CERT
tls_key = $KEY
tls_ciphers = $CIPHER12
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
fi

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
        listen 127.0.0.1:$P_NGINX ssl backlog=4096;
        ssl_certificate $CERT;
        ssl_certificate_key $KEY;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ciphers $CIPHER12;
        ssl_prefer_server_ciphers on;
        ssl_session_cache shared:SSL:10m;
$(nginx_proxy_location origin)
    }
}
EOF
start_nginx nginx

d=$W/haproxy; mkdir -p "$d"
cat >"$d/haproxy.cfg" <<EOF
$(haproxy_head 4096)

frontend fe
    bind 127.0.0.1:$P_HAPROXY ssl crt $W/tls/haproxy.pem ssl-min-ver TLSv1.2 ciphers $CIPHER12
$(haproxy_same_work)
    default_backend origin

backend origin
    server o 127.0.0.1:$P_O
EOF
start_haproxy

for p in $PROXIES; do
  wait_http "$p" "https://127.0.0.1:${PORT[$p]}/small" || exit 1
done

# ---------------------------------------------------------------- correctness pre-flight
# s_time sends "GET <www> HTTP/1.0\r\n\r\n": no Host field. To give every proxy a request
# it forwards as is, the -www argument carries a Host line (and ends in a dummy field that
# absorbs s_time's " HTTP/1.0"). The proxies answer HTTP/1.0 and close, so each connection
# is one full handshake + one proxied request. s_time does not look at the status: the
# exact request is checked here over both versions (status, body, response size), and each
# s_time run's "bytes read per connection" is compared with that size.
HS_WWW=$'/small HTTP/1.0\r\nHost: localhost\r\nX-Bench: s_time'
HS_REQ="GET $HS_WWW HTTP/1.0"$'\r\n\r\n'
declare -A NEGOTIATED=() HS_BYTES=() NOHOST=()
tls_request() {  # tls_request PORT VERSION REQUEST OUTFILE: one request via s_client; stderr in OUTFILE.err
  printf '%s' "$3" | timeout 10 "$OPENSSL" s_client -connect "127.0.0.1:$1" "-tls1_${2#1.}" \
    -brief -ign_eof >"$4" 2>"$4.err"
}
for p in $PROXIES; do
  base=https://127.0.0.1:${PORT[$p]}
  check_same_work "$p" "$base" https -k
  for v in 1.3 1.2; do
    out=$(curl -sk --max-time 5 --tlsv$v --tls-max $v -w '\n%{http_code}' "$base/small")
    code=${out##*$'\n'}; body=${out%$'\n'*}; body=${body%$'\n'}
    [ "$code" = 200 ] && [ "$body" = "$SMALL_BODY" ] \
      || die "$p: curl TLS $v /small returned $code: $(printf %s "$body" | head -c 200)"
    f=$W/pre-$p-$v
    tls_request "${PORT[$p]}" "$v" "$HS_REQ" "$f"
    status=$(head -1 "$f" | tr -d '\r')
    [[ $status == "HTTP/1."[01]" 200"* ]] \
      || { cat "$f.err" >&2; die "$p: s_time request over TLS $v got '$status'"; }
    grep -qx "$SMALL_BODY" "$f" || die "$p: s_time request over TLS $v: body differs"
    HS_BYTES[$p,$v]=$(wc -c <"$f")
    NEGOTIATED[$p,$v]=$(awk -F': ' '/^Protocol version/ {v=$2} /^Ciphersuite/ {c=$2} /^Server Temp Key/ {k=$2}
                      END {print v ", " c ", key exchange " k}' "$f.err")
  done
  # For the record: s_time's own request, HTTP/1.0 without Host.
  tls_request "${PORT[$p]}" 1.3 $'GET /small HTTP/1.0\r\n\r\n' "$W/nohost-$p"
  NOHOST[$p]=$(head -1 "$W/nohost-$p" | tr -d '\r')
  [[ ${NOHOST[$p]} == *" 200"* ]] \
    || log "note: $p answers 'GET /small HTTP/1.0' without Host with '${NOHOST[$p]}' (hence the Host line in s_time's -www)"
done
for v in 1.3 1.2; do
  first=""
  for p in $PROXIES; do
    [ -z "$first" ] && first=${NEGOTIATED[$p,$v]}
    [ "${NEGOTIATED[$p,$v]}" = "$first" ] \
      || log "warning: TLS $v parameters differ: $p negotiated ${NEGOTIATED[$p,$v]}, not $first"
  done
  log "pre-flight TLS $v: $first"
done
log "pre-flight ok: $PROXIES answer 200 with the origin's body over TLS 1.3 and 1.2 (curl, and s_time's request via s_client)"

# ---------------------------------------------------------------- header of the raw file
{
  echo "# sluice TLS benchmark $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "# command: ${BENCH_CMD:-sh test/bench/tls.sh} $*"
  work_desc
  echo "# sluice configuration: $SLUICE_CONFIG (BENCH_SLUICE_CONFIG)"
  echo "# host: $(host_desc)"
  echo "# openssl: $("$OPENSSL" version)"
  echo "# nginx: $("$NGINX" -V 2>&1 | grep -E 'nginx version|built with OpenSSL' | tr '\n' ' ')"
  echo "# haproxy: $("$HAPROXY" -vv 2>&1 | grep -E '^HAProxy version|Running on OpenSSL' | tr '\n' ' ')"
  echo "# wrk: $("$WRK" -v 2>&1 | head -1)"
  if has_sluice; then
    echo "# sluice: $("$W/sluice/sluice" -v 2>&1 | head -1); copy of $SLUICE_BIN (HEAD $(sluice_git_desc); built $SLUICE_BUILT; sha256 $(sha256sum "$W/sluice/sluice" | cut -c1-16)); libssl: $(ldd "$W/sluice/sluice" | awk '/libssl/ {print $3}')"
  fi
  echo "# certificate: self-signed ECDSA P-256; TLS 1.2 cipher $CIPHER12; TLS 1.3 default suites"
  for p in $PROXIES; do
    echo "# negotiated by $p: TLS 1.3: ${NEGOTIATED[$p,1.3]}; TLS 1.2: ${NEGOTIATED[$p,1.2]}"
    echo "# $p: s_time request answered with ${HS_BYTES[$p,1.3]} bytes (TLS 1.3), ${HS_BYTES[$p,1.2]} (TLS 1.2); HTTP/1.0 without Host: ${NOHOST[$p]}"
  done
  echo "# load average at start: $(cut -d' ' -f1-3 /proc/loadavg) (anything else using the CPU skews the figures)"
  echo "# keep-alive: wrk -t$WRK_THREADS -c$CONNS -d${DURATION}s --latency https://.../small"
  echo "# handshakes: $HS_CLIENTS x openssl s_time -connect 127.0.0.1:PORT -new -time $HS_DURATION -www \$'${HS_WWW//$'\r\n'/\\r\\n}' [-tls1_3|-tls1_2]; rate = connections / measured wall time"
  echo "# $ROUNDS interleaved rounds; ${WARMUP}s warm-up per proxy"
  echo
} >>"$RAW"

# ---------------------------------------------------------------- measurements
# One line per run. test: "keepalive", "hs-tls1.3", "hs-tls1.2". rate: req/s or handshakes/s;
# ops: requests or handshakes; errors: non-2xx + socket errors (wrk) or failed s_time
# processes (s_time stops at the first failed connection).
printf 'proxy\ttest\tround\trate\tp50_us\tp99_us\tops\terrors\torigin_reqs\tcpu_us_per_op\n' >"$RUNS"
declare -A WRK_RUNS=()

record() {    # record PROXY TEST ROUND RATE P50 P99 OPS ERRORS ORIGIN TICKS
  local cpu
  cpu=$(cpu_per_op "${10}" "$7")
  echo "proxy CPU time during the run: ${10} ticks of 1/$CLK_TCK s = $cpu us per op" >>"$RAW"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "$6" "$7" "$8" "$9" "$cpu" >>"$RUNS"
  printf 'bench-tls: round %s %-9s %-7s %9s /s  p50 %7s  p99 %7s  cpu %6sus/op  errors %s  origin/ops %s/%s\n' \
    "$3" "$2" "$1" "$4" "$5" "$6" "$cpu" "$8" "$9" "$7" >&2
}

run_wrk() {   # run_wrk PROXY SECONDS ROUND(0 = warm-up)
  local p=$1 secs=$2 round=$3 errs
  check_alive "$p" "round $round keepalive" || {
    [ "$round" != 0 ] && printf '%s\tkeepalive\t%s\tNA\tNA\tNA\tNA\tNA\tNA\tNA\n' "$p" "$round" >>"$RUNS"
    return; }
  WRK_RUNS[$p]=$(( ${WRK_RUNS[$p]:-0} + 1 ))
  wrk_run "$p" "https://127.0.0.1:${PORT[$p]}/small" "$secs"
  [ "$round" = 0 ] && { check_alive "$p" "warm-up keepalive"; return; }
  { echo "=== round $round $p keepalive (origin requests during run: $ORIGIN_DELTA)"; echo "$WRK_OUT"; echo; } >>"$RAW"
  read -r rps p50 p99 req non2xx serr < <(echo "$WRK_OUT" | wrk_parse)
  [ "$non2xx" = NA ] && errs=NA || errs=$((non2xx + serr))   # errors = non-2xx + socket errors
  record "$p" keepalive "$round" "$rps" "$p50" "$p99" "$req" "$errs" "$ORIGIN_DELTA" "$CPU_DELTA"
  check_alive "$p" "round $round keepalive" || true
}

run_stime() {  # run_stime PROXY VERSION(1.3|1.2) SECONDS ROUND(0 = warm-up)
  local p=$1 v=$2 secs=$3 round=$4 test=hs-tls$2 o0 o1 c0 c1 t0 t1 i conns=0 fails=0 n rc per
  local -a spids=()
  check_alive "$p" "round $round $test" || {
    [ "$round" != 0 ] && printf '%s\t%s\t%s\tNA\tNA\tNA\tNA\tNA\tNA\tNA\n' "$p" "$test" "$round" >>"$RUNS"
    return; }
  o0=$(origin_requests); c0=$(cpu_ticks "$p"); t0=$(now)
  for ((i = 0; i < HS_CLIENTS; i++)); do
    timeout $((secs + 30)) "$OPENSSL" s_time -connect "127.0.0.1:${PORT[$p]}" -new -time "$secs" \
      -www "$HS_WWW" "-tls1_${v#1.}" >"$W/stime.$i" 2>&1 &
    spids+=("$!"); STARTED+=("$!")
  done
  for i in "${!spids[@]}"; do
    wait "${spids[$i]}"; rc=$?
    n=$(awk '/connections in .* real seconds/ {print $1}' "$W/stime.$i")
    per=$(awk '/connections in .* real seconds/ {print $(NF - 4)}' "$W/stime.$i")
    conns=$((conns + ${n:-0}))
    if [ "$rc" != 0 ] || [ -z "$n" ]; then
      fails=$((fails + 1))
    elif [ "${n:-0}" -gt 0 ] && [ "$per" != "${HS_BYTES[$p,$v]}" ]; then
      # every response has the size seen in the pre-flight; another average means some differed
      log "!!! $p $test: s_time read $per bytes per connection, expected ${HS_BYTES[$p,$v]}"
      fails=$((fails + 1))
    fi
  done
  t1=$(now); c1=$(cpu_ticks "$p"); o1=$(origin_requests)
  [ "$round" = 0 ] && { check_alive "$p" "warm-up $test"; return; }
  rate=$(awk -v n="$conns" -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", n / (b - a)}')
  {
    echo "=== round $round $p $test (origin requests during run: $((o1 - o0)); wall time $(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", b - a}') s; $conns connections = $rate/s)"
    for i in "${!spids[@]}"; do echo "-- s_time $i"; grep -v '^\*' "$W/stime.$i"; done
    echo "failed s_time processes or unexpected response sizes: $fails"
    echo
  } >>"$RAW"
  if [ "$fails" != 0 ]; then
    log "!!! $p $test: $fails s_time process(es) failed; output:"; cat "$W"/stime.* >&2
  fi
  record "$p" "$test" "$round" "$rate" NA NA "$conns" "$fails" "$((o1 - o0))" "$((c1 - c0))"
  check_alive "$p" "round $round $test" || true
}

for p in $PROXIES; do
  log "warm-up $p (${WARMUP}s keep-alive, ${WARMUP}s handshakes)"
  run_wrk "$p" "$WARMUP" 0
  run_stime "$p" 1.3 "$WARMUP" 0
done
for round in $(seq 1 "$ROUNDS"); do
  for test in keepalive 1.3 1.2; do
    for p in $PROXIES; do
      if [ "$test" = keepalive ]; then run_wrk "$p" "$DURATION" "$round"
      else run_stime "$p" "$test" "$HS_DURATION" "$round"; fi
      sleep 0.5
    done
  done
done

# ---------------------------------------------------------------- report
echo "# load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$RAW"
stop_all $PROXIES origin
PROBLEMS=$(collect_problems $PROXIES origin)
SLUICE_TOTALS=$(sluice_totals)

cat >"$W/tls_report.py" <<'PYEOF'
import sys

sys.dont_write_bytecode = True          # no __pycache__ in test/bench
sys.path.insert(0, sys.argv[2])         # test/bench: run.sh's report.py and its helpers
from report import fmt_us as us, med, num, read_tsv  # noqa: E402

PROXIES = ["sluice", "nginx", "haproxy"]
NAMES = {"sluice": "sluice", "nginx": "NGINX", "haproxy": "HAProxy"}
runs = read_tsv(sys.argv[1])


present = [p for p in PROXIES if any(r["proxy"] == p for r in runs)]
S = {}
for p in present:
    for test in ("keepalive", "hs-tls1.3", "hs-tls1.2"):
        rs = [r for r in runs if r["proxy"] == p and r["test"] == test]
        ok = [r for r in rs if num(r["rate"]) is not None]
        S[p, test] = dict(
            n=f"{len(ok)}/{len(rs)}",
            rate=med([num(r["rate"]) for r in ok]),
            p50=med([num(r["p50_us"]) for r in ok]),
            p99=med([num(r["p99_us"]) for r in ok]),
            cpu=med([num(r["cpu_us_per_op"]) for r in ok]),
            errors=sum(int(num(r["errors"]) or 0) for r in ok) + (len(rs) - len(ok)),
            ops=sum(num(r["ops"]) or 0 for r in ok),
            origin=sum(num(r["origin_reqs"]) or 0 for r in ok))


def f0(v):
    return f"{v:,.0f}" if v is not None else "FAILED"


def f1(v):
    return f"{v:.1f}us" if v is not None else "-"


print("TLS keep-alive, /small (wrk): median over rounds; errors = non-2xx + socket errors, total")
hdr = f"{'proxy':<8} {'rounds':>6} {'req/s':>9} {'p50':>8} {'p99':>8} {'CPU/req':>9} {'errors':>6} {'origin/wrk':>10}"
print(hdr)
print("-" * len(hdr))
for p in present:
    s = S[p, "keepalive"]
    ratio = f"{s['origin'] / s['ops']:.4f}" if s["ops"] else "-"
    print(f"{p:<8} {s['n']:>6} {f0(s['rate']):>9} {us(s['p50']):>8} {us(s['p99']):>8} "
          f"{f1(s['cpu']):>9} {s['errors']:>6} {ratio:>10}")
print()
print("Full handshakes without resumption (openssl s_time -new, one request each): median over rounds;")
print("errors = failed s_time runs (s_time stops at the first failed connection)")
hdr = f"{'proxy':<8} {'version':<7} {'rounds':>6} {'hs/s':>7} {'CPU/hs':>9} {'errors':>6} {'origin/hs':>9}"
print(hdr)
print("-" * len(hdr))
for p in present:
    for test in ("hs-tls1.3", "hs-tls1.2"):
        s = S[p, test]
        ratio = f"{s['origin'] / s['ops']:.4f}" if s["ops"] else "-"
        print(f"{p:<8} {test[3:]:<7} {s['n']:>6} {f0(s['rate']):>7} {f1(s['cpu']):>9} "
              f"{s['errors']:>6} {ratio:>9}")
print()
if "sluice" in present:
    print("Ratios sluice / other: req/s, hs/s >1 = sluice faster; p99, CPU <1 = sluice better")
    cols = [("req/s", "keepalive", "rate"), ("p99", "keepalive", "p99"),
            ("CPU/req", "keepalive", "cpu"), ("hs/s 1.3", "hs-tls1.3", "rate"),
            ("CPU/hs 1.3", "hs-tls1.3", "cpu"), ("hs/s 1.2", "hs-tls1.2", "rate"),
            ("CPU/hs 1.2", "hs-tls1.2", "cpu")]
    hdr = f"{'':<17}" + "".join(f"{c[0]:>11}" for c in cols)
    print(hdr)
    for other in ("nginx", "haproxy"):
        if other not in present:
            continue
        cells = []
        for _, test, key in cols:
            a, b = S["sluice", test][key], S[other, test][key]
            cells.append(f"{a / b:.2f}" if a is not None and b else "n/a")
        print(f"{'sluice / ' + NAMES[other]:<17}" + "".join(f"{c:>11}" for c in cells))
    print()
PYEOF
SUMMARY=$("$PY" "$W/tls_report.py" "$RUNS" "$BENCH_DIR")
{
  if [ -n "$SLUICE_TOTALS" ]; then
    echo "sluice totals at exit: $SLUICE_TOTALS"
    # wrk first checks the address with a plain TCP connect that it closes at once: one
    # connection per wrk run that ends before any TLS byte, which sluice counts here.
    echo "(tls_handshake_errors: ${WRK_RUNS[sluice]:-0} expected, one per wrk run: wrk's connect-and-close address probe)"
  fi
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
fails=$(awk -F'\t' 'NR > 1 && $8 != 0 {n++} END {print n + 0}' "$RUNS")
[ "$fails" = 0 ] || echo "WARNING: $fails runs saw errors (non-2xx, socket errors or failed handshakes; see $ART)"
exit 0
