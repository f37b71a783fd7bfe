#!/bin/sh
# sluice demo (`make demo`): two Gunicorn backends running test/app.py on 127.0.0.1:8001 and
# 127.0.0.1:8002, and build/sluice in front of them on 127.0.0.1:8080 with etc/sluice.ini.
# Ctrl-C stops everything this script started (by PID).
set -u

cd "$(dirname "$0")/.." || exit 1
ROOT=$(pwd)
SLUICE=${SLUICE_BIN:-$ROOT/build/sluice}
CONFIG=$ROOT/etc/sluice.ini
GUNICORN=/usr/bin/gunicorn
[ -x "$GUNICORN" ] || GUNICORN=gunicorn
LOGDIR=/tmp/sluice          # where etc/sluice.ini puts sluice's logs and pid file
PIDS=""

say() { printf 'demo: %s\n' "$*"; }

cleanup() {
    trap - INT TERM EXIT
    [ -n "$PIDS" ] || exit 0
    say "stopping (pids$PIDS)"
    for p in $PIDS; do kill -TERM "$p" 2>/dev/null; done
    # give them up to 5 seconds, then SIGKILL what is left
    n=0
    while [ $n -lt 50 ]; do
        alive=""
        for p in $PIDS; do kill -0 "$p" 2>/dev/null && alive="$alive $p"; done
        [ -z "$alive" ] && break
        sleep 0.1
        n=$((n + 1))
    done
    for p in $PIDS; do kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null; done
    exit 0
}
trap cleanup INT TERM EXIT

port_busy() {
    # true if something accepts connections on 127.0.0.1:$1
    curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$1/" 2>/dev/null
    [ $? -ne 7 ]
}

wait_http() { # url what pid: poll until the URL answers, at most 15 s
    n=0
    while [ $n -lt 150 ]; do
        if ! kill -0 "$3" 2>/dev/null; then say "$2 exited during startup"; return 1; fi
        curl -s -o /dev/null --max-time 1 "$1" && return 0
        sleep 0.1
        n=$((n + 1))
    done
    say "$2 did not come up at $1"
    return 1
}

[ -x "$SLUICE" ] || { say "no sluice binary at $SLUICE (run make)"; exit 1; }
for port in 8001 8002 8080 9901; do
    if port_busy $port; then say "port $port on 127.0.0.1 is in use; stop what uses it first"; exit 1; fi
done
mkdir -p "$LOGDIR" || exit 1

"$SLUICE" -t -c "$CONFIG" || { say "config check failed: $CONFIG"; exit 1; }

for i in 1 2; do
    APP_NAME=app$i APP_LOG=$LOGDIR/app$i.requests "$GUNICORN" --chdir "$ROOT/test" \
        -b 127.0.0.1:800$i -w 2 -k gthread --threads 4 --log-level warning \
        --error-logfile "$LOGDIR/gunicorn-app$i.log" app:app &
    PIDS="$PIDS $!"
    wait_http "http://127.0.0.1:800$i/health" "gunicorn app$i" "$!" || exit 1
    say "backend app$i (test/app.py) on http://127.0.0.1:800$i, pid $!"
done

"$SLUICE" -c "$CONFIG" &
SLUICE_PID=$!
PIDS="$PIDS $SLUICE_PID"
wait_http "http://127.0.0.1:8080/health" "sluice" "$SLUICE_PID" || exit 1

cat <<EOF

  sluice is proxying on   http://127.0.0.1:8080/   (pid $SLUICE_PID)
  backends                http://127.0.0.1:8001/ (app1), http://127.0.0.1:8002/ (app2)
  config                  $CONFIG
  logs                    $LOGDIR/access.log, $LOGDIR/error.log

  status page             http://127.0.0.1:9901/status   (also /status.json, /metrics)

  Try:
    curl -i http://127.0.0.1:8080/
    curl -i -H 'X-Tenant: acme' http://127.0.0.1:8080/   (tenant acme: 20 req/s, burst 40)
    curl -s http://127.0.0.1:8080/echo -d 'hello'
    curl -s 'http://127.0.0.1:8080/bytes?n=100000000' -o /dev/null -w '%{size_download} bytes\n'
    tail -f $LOGDIR/access.log

  Ctrl-C stops sluice and both backends.

EOF

# Wait for sluice; Ctrl-C runs cleanup.
while kill -0 "$SLUICE_PID" 2>/dev/null; do
    wait "$SLUICE_PID"
done
say "sluice exited"
