#!/usr/bin/python3
"""Sizing benchmark (`make bench-sizing`, issue 14): the fewest workers real Gunicorn pools
need for a wait SLO, found by sweeping the pool size, beside what sluice recommends.

For each workload (issue 14's three, at RATE req/s):
  W1  lognormal service, median 100 ms, sigma 0.5, Poisson arrivals
  W2  75 % at 5 ms, 25 % at 400 ms, Poisson arrivals
  W3  W1's service, on/off arrivals: 5 s at 1.6 x RATE, 5 s at 0.4 x RATE
the sweep runs one Gunicorn server with c sync workers behind sluice (`workers = c`, a
queue that never refuses) for RUN_S seconds of open-loop arrivals (test/bench/loadgen.py,
fixed seed), from c = the offered load upward until both SLOs hold, and reads every
request's wait (total - upstream time) from sluice's access log. Then, per SLO, one run
of REC_S seconds at a pool large enough not to queue, with `[scale] slo_wait` set to the
SLO, and sluice's `required_model` (and the rule of thumb, and Erlang C) read from
/scale.json at its end. SLOs: P(wait > 500 ms) <= 5 % and P(wait > 100 ms) <= 5 %.

Printed: per workload and SLO, the true minimum, sluice's figures, and whether the model is
within 10 % (or 1 worker below 10) and never below. Everything binds 127.0.0.1 on free
ports in a temporary directory; every process is stopped by its PID.

Environment: BENCH_RATE [40], BENCH_RUN_S [40], BENCH_REC_S [75], BENCH_SEED [1],
BENCH_WORKLOADS ["W1 W2 W3"], SLUICE_BIN [build/sluice], GUNICORN [/usr/bin/gunicorn].
Raw results: test/artifacts/sizing-<date>.txt."""
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PY = "/usr/bin/python3"
SLUICE = os.environ.get("SLUICE_BIN", os.path.join(ROOT, "build", "sluice"))
GUNICORN = os.environ.get("GUNICORN", "/usr/bin/gunicorn")
RATE = float(os.environ.get("BENCH_RATE", "40"))
RUN_S = float(os.environ.get("BENCH_RUN_S", "40"))
REC_S = float(os.environ.get("BENCH_REC_S", "75"))
SEED = int(os.environ.get("BENCH_SEED", "1"))
WORKLOADS = {
    "W1": ("/slow?ms=100&sigma=0.5", "poisson", 0.113),
    "W2": ("/slow?ms=5&alt=400&p=0.25", "poisson", 0.104),
    "W3": ("/slow?ms=100&sigma=0.5", "onoff", 0.113),
}
SLOS = [(0.5, 0.95), (0.1, 0.95)]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_http(url, proc, what, seconds=20):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if proc.poll() is not None:
            sys.exit("sizing: %s exited (%s)" % (what, proc.returncode))
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit("sizing: %s did not answer %s" % (what, url))


def stop(proc):
    if proc and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run(d, workload, c, seconds, slo_wait=None):
    """One run: c workers, `seconds` of arrivals. (waits in s of the 2xx, /scale.json)."""
    path, arrivals, _ = WORKLOADS[workload]
    pg, ps, pa = free_port(), free_port(), free_port()
    log = os.path.join(d, "access-%s-%d.log" % (workload, c))
    if os.path.exists(log):
        os.unlink(log)
    g = subprocess.Popen([GUNICORN, "--chdir", os.path.join(ROOT, "test"), "-w", str(c),
                          "-k", "sync", "--backlog", "2048", "-b", "127.0.0.1:%d" % pg,
                          "app:app"], stdout=open(os.path.join(d, "gunicorn.out"), "a"),
                         stderr=subprocess.STDOUT)
    ini = os.path.join(d, "sluice.ini")
    with open(ini, "w") as f:
        f.write("[proxy]\nlisten = 127.0.0.1:%d\nthreads = 2\naccess_log = %s\n"
                "error_log = %s\n[backend app]\naddress = 127.0.0.1:%d\nworkers = %d\n"
                "[queue]\nmax = 100000\ntimeout = 120s\ntarget = off\n"
                "[scale]\nwindow = 1m\nmax_workers = 64\nslo_wait = %dms\nslo_quantile = 0.95\n"
                "[admin]\nlisten = 127.0.0.1:%d\n"
                % (ps, log, os.path.join(d, "error.log"), pg, c,
                   int((slo_wait or 0.5) * 1000), pa))
    s = subprocess.Popen([SLUICE, "-c", ini])
    try:
        wait_http("http://127.0.0.1:%d/slow?ms=0" % pg, g, "gunicorn")
        wait_http("http://127.0.0.1:%d/slow?ms=0" % ps, s, "sluice")
        out = os.path.join(d, "load.json")
        subprocess.run([PY, os.path.join(ROOT, "test", "bench", "loadgen.py"), "--port", str(ps),
                        "--duration", str(seconds), "--stream", "w:%g:%s" % (RATE, path),
                        "--arrivals", arrivals, "--seed", str(SEED), "--timeout", "120",
                        "--out", out], check=True, timeout=seconds + 300)
        doc = json.load(urllib.request.urlopen("http://127.0.0.1:%d/scale.json" % pa,
                                               timeout=5))
    finally:
        stop(s)
        stop(g)
    waits = []
    with open(log) as f:
        for line in f:
            x = line.split()
            if len(x) > 10 and x[5] == "200" and "/slow?ms=0" not in x[4] and x[10] != "-":
                waits.append((int(x[9]) - int(x[10])) / 1000.0)
    return waits, doc


def late(waits, t):
    return sum(w > t for w in waits) / len(waits) if waits else 1.0


def sweep(d, workload, out):
    a = RATE * WORKLOADS[workload][2]
    c, mins = max(1, math.ceil(a)), {}
    while len(mins) < len(SLOS) and c <= 64:
        waits, _ = run(d, workload, c, RUN_S)
        shares = [late(waits, t) for t, _ in SLOS]
        out.write("%s c=%d requests=%d %s\n" % (workload, c, len(waits), " ".join(
            "P(wait>%gs)=%.4f" % (t, sh) for (t, _), sh in zip(SLOS, shares))))
        out.flush()
        for i, ((t, q), sh) in enumerate(zip(SLOS, shares)):
            if i not in mins and sh <= 1 - q:
                mins[i] = c
        c += 1
    return mins


def main():
    names = os.environ.get("BENCH_WORKLOADS", "W1 W2 W3").split()
    os.makedirs(os.path.join(ROOT, "test", "artifacts"), exist_ok=True)
    raw = os.path.join(ROOT, "test", "artifacts",
                       time.strftime("sizing-%Y%m%d-%H%M%S.txt", time.gmtime()))
    rows = []
    with tempfile.TemporaryDirectory(prefix="sluice-sizing.") as d, open(raw, "w") as out:
        out.write("# sizing bench: rate %g/s, runs %gs, recommendation runs %gs, seed %d\n"
                  % (RATE, RUN_S, REC_S, SEED))
        for w in names:
            mins = sweep(d, w, out)
            for i, (t, q) in enumerate(SLOS):
                ample = mins.get(i, 64) + 3
                _, doc = run(d, w, ample, REC_S, slo_wait=t)
                out.write("%s slo %gs recommendation at c=%d: %s\n" % (w, t, ample, json.dumps(doc)))
                rows.append((w, t, q, mins.get(i), doc.get("required_model"),
                             doc.get("required_little"), doc.get("required_erlang")))
    print("Sizing: fewest workers real pools needed (sweep) and sluice's figures at %g req/s" % RATE)
    print("%-4s %-22s %8s %7s %14s %9s %s" % ("load", "SLO", "minimum", "model", "rule of thumb",
                                          "Erlang C", "model ok"))
    for w, t, q, need, model, little, erlang in rows:
        ok = need is not None and model is not None and model >= need and (
            model - need <= (1 if need < 10 else math.ceil(0.1 * need)))
        print("%-4s P(wait > %3d ms) <= %2d%% %8s %7s %14s %9s %s" % (
            w, t * 1000, round((1 - q) * 100), need, model, little, erlang, "yes" if ok else "NO"))
    print("raw results: %s" % raw)


if __name__ == "__main__":
    main()
