"""The scale controller (src/scale.c, src/autoscale.c, src/meter.c; docs/scaling.md) against
real parts: Gunicorn backends under a known load, sluice's /scale.json and /metrics, and
each sink (exec hook, webhook, the Gunicorn actuator) receiving exactly the decisions made.

Loads: `OpenLoop` sends at fixed times (an arrival rate that does not depend on latency);
`ClosedLoop` keeps N clients busy back to back. Every loop and wait here is bounded."""
import http.client
import json
import math
import os
import re
import stat
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import helpers
from test_admin import admin_extra, call, parse_metrics

pytestmark = pytest.mark.slow  # load and timing: skipped by `make sanitize`

SLOW = helpers.SLOW


# ---------------------------------------------------------------- documents

def scale_doc(admin_port):
    r, body = call(admin_port, "GET", "/scale.json")
    assert r.status == 200, (r.status, body)
    assert r.getheader("Content-Type", "").startswith("application/json"), r.getheaders()
    return json.loads(body)


def first_doc(admin_port, timeout=5.0):
    """/scale.json once the controller has ticked (it is null before the first tick)."""
    return helpers.wait_for(lambda: scale_doc(admin_port), timeout * SLOW, 0.1,
                            msg="the first scale tick")


def metrics(admin_port):
    r, body = call(admin_port, "GET", "/metrics")
    assert r.status == 200, (r.status, body)
    return parse_metrics(body)


def scale_log(sluice):
    """The controller's lines in sluice's error log."""
    return [l for l in sluice.errors().splitlines() if "scale" in l]


def decision_lines(sluice):
    return [l for l in sluice.errors().splitlines() if re.search(r"scale.*decision=", l)]


def evidence(sluice, admin_port=None):
    """What to show when an assertion about the controller fails."""
    out = "\n--- sluice scale log:\n" + "\n".join(scale_log(sluice)[-40:])
    if admin_port:
        try:
            out += "\n--- /scale.json:\n" + json.dumps(scale_doc(admin_port), indent=None)
        except Exception as e:  # the evidence must not hide the failure
            out += "\n--- /scale.json unavailable: %r" % e
    return out


def scale_extra(admin_port, **keys):
    """[scale] with these keys; mode = little unless given (these tests check the
    controller's rules on Little's figure, which is easy to follow); mode=None: no mode
    key, the default (model)."""
    keys.setdefault("mode", "little")
    body = "".join("%s = %s\n" % (k, v) for k, v in keys.items() if v is not None)
    return "[scale]\n" + body + admin_extra(admin_port)


# ---------------------------------------------------------------- loads

def _get(conn_box, port, path, timeout=30):
    """One GET on the thread's keep-alive connection (a new one after any error)."""
    c = conn_box[0]
    if c is None:
        c = conn_box[0] = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        r.read()
        if r.getheader("Connection", "").lower() == "close":
            c.close()
            conn_box[0] = None
        return r.status
    except Exception:
        c.close()
        conn_box[0] = None
        raise


class OpenLoop:
    """Open-loop load: request i is sent at t0 + i / rate, whatever the latency, by a pool of
    `threads` threads (each takes the next slot, sleeps until its time, sends, waits).
    Enough threads means no send waits for an answer; `lateness` shows whether it did."""

    def __init__(self, port, path, rate, seconds, threads=40):
        self.port, self.path, self.rate = port, path, rate
        self.total = int(round(rate * seconds))
        self.threads = threads
        self.lock = threading.Lock()
        self.next = 0
        self.sent = []       # (scheduled offset, sent offset, latency s, status or error)
        self.t0 = None
        self._ts = []

    def _run(self):
        box = [None]
        while True:
            with self.lock:
                i = self.next
                self.next += 1
            if i >= self.total:
                break
            due = self.t0 + i / self.rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            start = time.monotonic()
            try:
                st = _get(box, self.port, self.path)
            except Exception as e:
                st = repr(e)
            end = time.monotonic()
            with self.lock:
                self.sent.append((due - self.t0, start - self.t0, end - start, st))
        if box[0] is not None:
            box[0].close()

    def start(self):
        self.t0 = time.monotonic() + 0.2
        self._ts = [threading.Thread(target=self._run, daemon=True)
                    for _ in range(self.threads)]
        for t in self._ts:
            t.start()
        return self

    def join(self):
        deadline = time.monotonic() + self.total / self.rate + 60
        for t in self._ts:
            t.join(max(0.1, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in self._ts), "open-loop threads did not finish"
        return self

    def achieved_rate(self, lo, hi):
        """Sends per second between offsets lo and hi (s from t0)."""
        return sum(1 for _, s, _, _ in self.sent if lo <= s < hi) / float(hi - lo)

    def lateness(self):
        return sorted(s - d for d, s, _, _ in self.sent)

    def statuses(self):
        return [st for _, _, _, st in self.sent]


class ClosedLoop:
    """`clients` threads sending `path` back to back until stop()."""

    def __init__(self, port, path, clients):
        self.port, self.path, self.clients = port, path, clients
        self.statuses = []
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._ts = []

    def _run(self):
        box = [None]
        while not self._stop.is_set():
            try:
                st = _get(box, self.port, self.path)
            except Exception as e:
                st = repr(e)
                self._stop.wait(0.1)
            with self.lock:
                self.statuses.append(st)
        if box[0] is not None:
            box[0].close()

    def start(self):
        self._ts = [threading.Thread(target=self._run, daemon=True)
                    for _ in range(self.clients)]
        for t in self._ts:
            t.start()
        return self

    def stop(self):
        self._stop.set()
        for t in self._ts:
            t.join(40 * SLOW)
        assert not any(t.is_alive() for t in self._ts), "closed-loop clients did not finish"
        return self.statuses

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


# ---------------------------------------------------------------- Erlang C, as documented

def erlang_required(lam, service_s, target_s=0.5, epsilon=0.05, limit=100000):
    """The fewest c > a = lam x S with C(c, a) x exp(-(c - a) x target / S) <= epsilon,
    C from the Erlang B recursion (docs/scaling.md, "Erlang C")."""
    if lam <= 0 or service_s <= 0:
        return 0
    a = lam * service_s
    b = 1.0                                  # B(0, a)
    for c in range(1, limit):
        b = a * b / (c + a * b)              # B(c, a)
        if c > a:
            erlang_c = c * b / (c - a * (1.0 - b))
            if erlang_c * math.exp(-(c - a) * target_s / service_s) <= epsilon:
                return c
    return limit


# ---------------------------------------------------------------- 1, 2, 8: a known workload

RATE = 100.0        # req/s
SERVICE_MS = 200    # /slow?ms=200
LOAD_S = 14.0
READ_AT = 13.0      # s into the load: the 10 s window covers only loaded seconds
MARGIN = 1.2


def known_workload(backend, sluice_factory, admin_port, **keys):
    """100 req/s of /slow?ms=200 for 14 s through a fresh sluice (window 10s, margin 1.2);
    (the load, /scale.json read 13 s in, the sluice)."""
    conf = {"window": "10s", "margin": MARGIN, "max_workers": 200}
    conf.update(keys)
    s = sluice_factory([backend], backend_opts={"workers": "64"},
                       extra=scale_extra(admin_port, **conf))
    first_doc(admin_port)
    load = OpenLoop(s.port, "/slow?ms=%d" % SERVICE_MS, RATE, LOAD_S, threads=40).start()
    try:
        time.sleep(max(0.0, load.t0 + READ_AT - time.monotonic()))
        doc = scale_doc(admin_port)
        m = metrics(admin_port)
    finally:
        load.join()
    sts = load.statuses()
    assert len(sts) == load.total and all(st == 200 for st in sts), \
        "load failed: %r" % sorted(set(map(str, sts)))[:5]
    # The harness kept its schedule: the sluice figures are then checked against RATE.
    got = load.achieved_rate(1.0, READ_AT)
    assert abs(got - RATE) <= 0.03 * RATE, "the load generator sent %.1f/s, not %.0f" % (
        got, RATE)
    late = load.lateness()
    assert late[int(0.99 * len(late))] < 0.05, "sends ran late (p99 %.3fs)" % late[
        int(0.99 * len(late))]
    return load, doc, s, m


@pytest.fixture(scope="module")
def wide_backend(module_backend_factory):
    """One gthread process with 48 threads: 20 requests at once never queue in it."""
    return module_backend_factory("wide", workers=1, worker_class="gthread", threads=48)


@pytest.fixture(scope="module")
def little_run(wide_backend, module_sluice_factory):
    admin = helpers.free_port()
    load, doc, s, _ = known_workload(wide_backend, module_sluice_factory, admin)
    return {"doc": doc, "sluice": s, "admin": admin, "load": load}


def test_known_workload_gives_littles_answer(little_run):
    doc, s = little_run["doc"], little_run["sluice"]
    why = json.dumps(doc) + evidence(s)
    assert doc["mode"] == "little" and doc["margin"] == pytest.approx(MARGIN), why
    assert doc["lambda"] == pytest.approx(RATE, rel=0.10), why
    assert doc["wq_s"] == pytest.approx(SERVICE_MS / 1000.0, rel=0.10), why
    expected = math.ceil(RATE * SERVICE_MS / 1000.0 * MARGIN)    # 24
    assert expected == 24
    assert doc["required_little"] == pytest.approx(expected, rel=0.10), why
    # required_little is the documented product of the document's own figures ...
    assert doc["required_little"] == math.ceil(
        doc["lambda"] * doc["wq_s"] * doc["margin"] - 1e-6), why
    # ... and drives `required` (mode little, no cap, within [1, 200]).
    assert doc["required"] == doc["required_little"] and not doc["db_capped"], why
    assert doc["supply"] == 64 and doc["current"] == 64, why
    assert doc["queue"] == 0 and doc["decision"] == "hold" and doc["decisions"] == 0, why
    # Little's L measured directly: about 20 of the 64 slots busy.
    assert doc["utilisation"] == pytest.approx(20.0 / 64, rel=0.15), why


def test_the_default_sizes_by_replaying_the_window(wide_backend, module_sluice_factory):
    """No mode key: the window is replayed through a simulated pool (issue 14). 100 req/s
    of 200 ms (20 erlangs, service times that hardly vary): a few workers over 20 keep
    P(wait > 500 ms) <= 5 %; the rule of thumb (Little x p95 x 1.2) says 24 and stays on
    show beside it."""
    admin = helpers.free_port()
    _, doc, s, m = known_workload(wide_backend, module_sluice_factory, admin, mode=None)
    why = json.dumps(doc) + evidence(s)
    assert doc["mode"] == "model", why
    assert 21 <= doc["required_model"] <= 24, why
    assert doc["required"] == doc["required_model"], why
    assert doc["required_little"] == pytest.approx(24, rel=0.10), why
    assert m["sluice_scale_required_workers_model"][""] == doc["required_model"], why
    # what the status page's sentence says, each part checkable: the SLO, the requests of
    # the window, the stretch for its sampling error (200 ms that hardly vary: E[S^2] /
    # E[S]^2 ~ 1, so 1 + 1.645 x sqrt(2 / N))
    assert doc["slo_wait_s"] == 0.5 and doc["slo_quantile"] == 0.95, why
    n = doc["model_requests"]
    assert n == pytest.approx(doc["lambda"] * doc["window_s"], rel=0.15), why
    assert doc["model_headroom"] == pytest.approx(1 + 1.645 * math.sqrt(2.0 / n), abs=0.004), why


def test_known_workload_erlang_c_figure(little_run):
    doc, s = little_run["doc"], little_run["sluice"]
    why = json.dumps(doc) + evidence(s)
    assert doc["service_s"] == pytest.approx(SERVICE_MS / 1000.0, rel=0.10), why
    # 100/s x 0.2 s = 20 erlangs: Erlang C needs more than 20 workers.
    assert doc["required_erlang"] > 20, why
    # Exactly the documented definition, fed the document's lambda and S. They are printed
    # rounded (%.3f, %.4f): the answer must be the one for some value within that rounding
    # (normally all of them give the same answer).
    candidates = {erlang_required(lam, sv)
                  for lam in (doc["lambda"] - 5e-4, doc["lambda"], doc["lambda"] + 5e-4)
                  for sv in (doc["service_s"] - 5e-5, doc["service_s"],
                             doc["service_s"] + 5e-5)}
    assert doc["required_erlang"] in candidates, (candidates, why)
    assert doc["required_erlang"] == erlang_required(doc["lambda"], doc["service_s"]) or \
        len(candidates) > 1, why


def test_gunicorn_workers_is_minus_one_without_the_actuator(little_run):
    # docs/scaling.md, /scale.json: "gunicorn_workers: the workers the actuator counts, -1
    # when unknown or not configured". No gunicorn_pidfile here.
    doc = scale_doc(little_run["admin"])
    assert doc["gunicorn_workers"] == -1, json.dumps(doc)


def test_metrics_show_the_scale_gauges(little_run):
    admin = little_run["admin"]
    # A tick may land between the two reads: read until /scale.json agrees before and after.
    for _ in range(10):
        before = scale_doc(admin)
        m = metrics(admin)
        after = scale_doc(admin)
        keys = ("required", "supply", "desired", "decisions")
        if all(before[k] == after[k] for k in keys):
            break
    else:
        pytest.fail("/scale.json kept changing under /metrics")
    for name in ("sluice_scale_required_workers", "sluice_scale_supply_workers",
                 "sluice_scale_desired_workers", "sluice_scale_decisions_total",
                 "sluice_scale_required_workers_little", "sluice_scale_required_workers_erlang",
                 "sluice_scale_utilisation", "sluice_scale_db_capped"):
        assert name in m, "no %s in /metrics: %s" % (name, sorted(m))
    assert m["sluice_scale_required_workers"][""] == before["required"]
    assert m["sluice_scale_supply_workers"][""] == before["supply"] == 64
    assert m["sluice_scale_desired_workers"][""] == before["desired"]
    assert m["sluice_scale_decisions_total"][""] == before["decisions"] == 0
    assert m["sluice_scale_db_capped"][""] == 0
    lat = m.get("sluice_pool_latency_seconds", {})
    for part in ("total", "queue", "upstream"):
        for q in ("0.5", "0.95", "0.99"):
            assert 'part="%s",quantile="%s"' % (part, q) in lat, (part, q, sorted(lat))
    # The last minute was mostly the known workload: upstream p95 ~ 0.2 s, no queueing.
    up95 = lat['part="upstream",quantile="0.95"']
    assert up95 == pytest.approx(SERVICE_MS / 1000.0, rel=0.10), lat
    assert lat['part="queue",quantile="0.95"'] < 0.05, lat


# ---------------------------------------------------------------- 3: the database cap

def test_database_cap_cuts_required(wide_backend, sluice_factory):
    admin = helpers.free_port()
    load, doc, s, m = known_workload(wide_backend, sluice_factory, admin,
                                  db_max_connections=100, db_share=0.5, pool_size=5)
    why = json.dumps(doc) + evidence(s)
    assert doc["lambda"] == pytest.approx(RATE, rel=0.10), why
    assert doc["required_little"] == pytest.approx(24, rel=0.10), why  # before the cap
    assert doc["db_cap"] == 10 and doc["db_capped"] is True, why       # 100 x 0.5 / 5
    assert doc["required"] == 10, why
    assert "database cap" in doc["reason"] and "database cap 10" in doc["reason"], why
    assert m["sluice_scale_db_capped"][""] == 1, m.get("sluice_scale_db_capped")
    assert m["sluice_scale_required_workers"][""] == 10, m.get("sluice_scale_required_workers")


# ---------------------------------------------------------------- 4, 5: the sinks

HOOK = r"""#!/usr/bin/python3
import json, os
with open(%r, "a") as f:
    f.write(json.dumps(dict(os.environ), sort_keys=True) + "\n")
"""

SINK_LOAD_S = 8.0


def narrow_sluice(backend_factory, sluice_factory, admin, **keys):
    """A backend with 2 slots under a rule set that must step up exactly once."""
    b = backend_factory("a", workers=2)           # sync: sluice workers = 2
    conf = {"up_for": "2s", "cooldown": "600s", "window": "10s"}
    conf.update(keys)
    s = sluice_factory([b], extra=scale_extra(admin, **conf) +
                       "\n[queue]\nmax = 200\ntimeout = 30s\ntarget = off\n")
    first_doc(admin)  # (target = off: these tests want the queue deep, not shed)
    return s


def drive(s, clients=8, path="/slow?ms=200", seconds=SINK_LOAD_S):
    with ClosedLoop(s.port, path, clients) as load:
        time.sleep(seconds)
    assert load.statuses and all(st == 200 for st in load.statuses), \
        sorted(set(map(str, load.statuses)))[:5]


def test_exec_hook_runs_once_per_decision(backend_factory, sluice_factory, tmp_path):
    out = tmp_path / "hook.out"
    hook = tmp_path / "on_scale.py"
    hook.write_text(HOOK % str(out))
    hook.chmod(hook.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    admin = helpers.free_port()
    s = narrow_sluice(backend_factory, sluice_factory, admin, on_scale=str(hook))
    drive(s)
    helpers.wait_for(lambda: helpers.read_text(str(out)).strip(), 5 * SLOW,
                     msg="the hook's output" + evidence(s, admin))
    time.sleep(1.5)  # a second run (there must be none) would have shown by now
    doc = scale_doc(admin)
    why = evidence(s, admin)
    lines = helpers.read_text(str(out)).splitlines()
    assert len(lines) == 1, "the hook ran %d times:\n%s%s" % (len(lines), "\n".join(lines), why)
    env = json.loads(lines[0])
    sluice_vars = {k for k in env if k.startswith("SLUICE_")}
    assert sluice_vars == {"SLUICE_DESIRED_WORKERS", "SLUICE_CURRENT_WORKERS",
                           "SLUICE_REQUIRED_WORKERS", "SLUICE_SUPPLY", "SLUICE_DECISION",
                           "SLUICE_REASON"}, (env, why)
    assert env["SLUICE_DECISION"] == "up", (env, why)
    assert env["SLUICE_DESIRED_WORKERS"] == "3", (env, why)
    assert env["SLUICE_CURRENT_WORKERS"] == "2", (env, why)
    assert env["SLUICE_SUPPLY"] == "2" and int(env["SLUICE_REQUIRED_WORKERS"]) >= 1, (env, why)
    assert env["SLUICE_REASON"].strip(), (env, why)
    assert "HOME" not in env and not any(k.startswith("AWS_") for k in env), env
    assert doc["decisions"] == 1, why
    assert len(decision_lines(s)) == 1, why
    assert "decision=up desired=3 current=2" in decision_lines(s)[0], why
    assert not re.search(r"on_scale.*(failed|killed|cannot run)", s.errors()), why


class WebhookReceiver:
    """An HTTP server on 127.0.0.1 (a thread) recording each POST; answers the first
    `fail` of them with 500 and the rest with 200."""

    def __init__(self, fail=1):
        self.posts = []      # (monotonic time, path, headers dict, body bytes)
        self.lock = threading.Lock()
        rec = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                with rec.lock:
                    rec.posts.append((time.monotonic(), self.path,
                                      {k.lower(): v for k, v in self.headers.items()}, body))
                    code = 500 if len(rec.posts) <= fail else 200
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.send_header("Connection", "close")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.srv.daemon_threads = True
        self.port = self.srv.server_address[1]
        self._t = threading.Thread(target=self.srv.serve_forever, kwargs={"poll_interval": 0.1},
                                   daemon=True)
        self._t.start()

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()
        self._t.join(5)


@pytest.fixture
def receiver():
    r = WebhookReceiver(fail=1)
    yield r
    r.stop()


def test_webhook_posts_each_decision_and_retries(backend_factory, sluice_factory, receiver):
    admin = helpers.free_port()
    s = narrow_sluice(backend_factory, sluice_factory, admin,
                      webhook="http://127.0.0.1:%d/hook" % receiver.port)
    drive(s)
    helpers.wait_for(lambda: len(receiver.posts) >= 2, 6 * SLOW,
                     msg="the webhook and its retry" + evidence(s, admin))
    time.sleep(3)  # no third POST: the retry was answered 200, and cooldown is 600 s
    doc = scale_doc(admin)
    why = evidence(s, admin)
    posts = list(receiver.posts)
    assert len(posts) == 2, "%d POSTs: %r%s" % (len(posts), [p[3] for p in posts], why)
    (t1, path1, h1, b1), (t2, path2, h2, b2) = posts
    assert path1 == path2 == "/hook", (path1, path2)
    assert 0.7 <= t2 - t1 <= 2.5, "retry %.2fs after the failure" % (t2 - t1)
    for h in (h1, h2):
        assert h.get("content-type") == "application/json", h
        assert h.get("host", "").split(":")[0] == "127.0.0.1", h
    assert b1 == b2, (b1, b2)
    assert b1.count(b"\n") <= 1 and b"\n" not in b1.rstrip(b"\n"), b1
    body = json.loads(b1)
    assert set(body) == {"decision", "desired_workers", "current_workers", "required_workers",
                         "supply", "reason", "time"}, body
    assert body["decision"] == "up" and body["desired_workers"] == 3, body
    assert body["current_workers"] == 2 and body["supply"] == 2, body
    assert isinstance(body["required_workers"], int) and body["reason"], body
    assert abs(body["time"] - time.time()) < 60, body
    assert doc["decisions"] == 1 and len(decision_lines(s)) == 1, why
    assert "giving up" not in s.errors(), why


# ---------------------------------------------------------------- 6: hysteresis

def test_steady_load_below_supply_holds(backend_factory, sluice_factory):
    admin = helpers.free_port()
    b = backend_factory("a", workers=1, worker_class="gthread", threads=8)  # 8 slots
    s = sluice_factory([b], extra=scale_extra(admin, up_for="2s", down_for="600s",
                                              window="10s"))
    first_doc(admin)
    seen = []
    with ClosedLoop(s.port, "/slow?ms=200", 2) as load:
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            seen.append(scale_doc(admin))
            time.sleep(0.5)
    assert load.statuses and all(st == 200 for st in load.statuses), set(load.statuses)
    doc = scale_doc(admin)
    why = json.dumps(doc) + evidence(s)
    assert doc["decisions"] == 0 and doc["decision"] == "hold", why
    assert all(d["decision"] == "hold" and d["desired"] == d["current"] == 8 for d in seen), \
        [(d["decision"], d["desired"], d["reason"]) for d in seen]
    assert doc["supply"] == 8 and doc["required"] < 8, why
    assert not decision_lines(s), why


# ---------------------------------------------------------------- 7: the Gunicorn actuator

class WorkerCounter:
    """Counts the master's children (/proc/*/stat ppid) every 0.1 s in a thread; keeps
    the lowest and highest counts seen."""

    def __init__(self, master):
        self.master = master
        self.lo, self.hi, self.last = None, None, None
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def count(self):
        n = 0
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % d) as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            n += ppid == self.master
        return n

    def _run(self):
        while not self._stop.is_set():
            n = self.count()
            self.last = n
            self.lo = n if self.lo is None else min(self.lo, n)
            self.hi = n if self.hi is None else max(self.hi, n)
            self._stop.wait(0.1)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join(5)


def test_gunicorn_actuator_grows_and_shrinks_the_master(backend_factory, sluice_factory,
                                                        tmp_path):
    pidfile = str(tmp_path / "gunicorn.pid")
    # Started like every backend here (helpers.Backend: stopped by PID at teardown, SIGTERM
    # then SIGKILL for the master and every worker it had), with --pid for sluice to read.
    b = backend_factory("a", workers=2, extra_args=["--pid", pidfile])
    helpers.wait_for(lambda: helpers.read_text(pidfile).strip() == str(b.pid), 10,
                     msg="gunicorn's pid file")
    admin = helpers.free_port()
    s = sluice_factory([b], extra=scale_extra(
        admin, gunicorn_pidfile=pidfile, gunicorn_backend="a", min_workers=2, max_workers=4,
        up_for="2s", cooldown="3s", down_for="4s", window="10s") +
        "\n[queue]\nmax = 200\ntimeout = 30s\ntarget = off\n")  # deep, not shed
    with WorkerCounter(b.pid) as wc:
        doc = helpers.wait_for(lambda: (lambda d: d and d["gunicorn_workers"] == 2 and d)(
            scale_doc(admin)), 5 * SLOW, 0.1, msg="the actuator to count 2 workers")
        assert doc["current"] == 2 and doc["supply"] == 2, doc

        def agreed(at_least=None, exactly=None):
            n = wc.count()
            d = scale_doc(admin)
            if d["gunicorn_workers"] != n or wc.count() != n:
                return None
            ok = n >= at_least if at_least is not None else n == exactly
            return (n, d) if ok else None

        with ClosedLoop(s.port, "/slow?ms=300", 8):
            grown = helpers.wait_for(lambda: agreed(at_least=3), 25 * SLOW, 0.2,
                                     msg="3+ workers under the master" + evidence(s, admin))
            n, d = grown
            assert d["current"] == n and d["supply"] == n, (n, d)
            # Keep the load a little longer: it may take the second step, never a third.
            time.sleep(6)
        assert wc.hi <= 4, "the master ran %d workers (max_workers 4)%s" % (
            wc.hi, evidence(s, admin))
        shrunk = helpers.wait_for(lambda: agreed(exactly=2), 40 * SLOW, 0.2,
                                  msg="back to 2 workers" + evidence(s, admin))
        time.sleep(4)  # and it stays there: min_workers 2
        assert wc.count() == 2 and scale_doc(admin)["gunicorn_workers"] == 2, \
            evidence(s, admin)
    why = evidence(s, admin)
    assert wc.lo >= 2 and wc.hi <= 4, (wc.lo, wc.hi, why)
    d = shrunk[1]
    assert d["current"] == 2 and d["supply"] == 2, (d, why)
    log = s.errors()
    ups = re.findall(r"decision=up desired=(\d+) current=(\d+)", log)
    downs = re.findall(r"decision=down desired=(\d+) current=(\d+)", log)
    ttin = len(re.findall(r"gunicorn master \d+: .*sent SIGTTIN", log))
    ttou = len(re.findall(r"gunicorn master \d+: .*sent SIGTTOU", log))
    assert ups and downs, why
    # Every step is one worker here (ceil(2..4 x 0.25) = 1), and each signal moves one: the
    # signals sent match the workers added and removed.
    assert all(int(a) - int(c) == 1 for a, c in ups), (ups, why)
    assert all(int(c) - int(a) == 1 for a, c in downs), (downs, why)
    assert ttin == wc.hi - 2 and ttou == wc.hi - 2, (ttin, ttou, wc.hi, why)
    assert scale_doc(admin)["decisions"] == len(ups) + len(downs), why


# ---------------------------------------------------------------- 9: config errors

def _check(tmp_path, lines):
    """sluice -t on a config whose [scale] starts with an innocent key; (result, path,
    the line number of the last line)."""
    text = ("[proxy]\nlisten = 127.0.0.1:1\n[backend a]\naddress = 127.0.0.1:2\n"
            "[scale]\nmargin = 1.3\n" + "\n".join(lines) + "\n")
    path = tmp_path / "s.ini"
    path.write_text(text)
    p = subprocess.run([helpers.SLUICE_BIN, "-t", "-c", str(path)], capture_output=True,
                       text=True, timeout=20)
    return p, str(path), text.count("\n")


@pytest.mark.parametrize("lines, words", [
    (["mode = guess"], "model, erlang or little"),
    (["window = 20s"], "window"),
    (["webhook = ftp://x"], "http://"),
    (["on_scale = relative/path"], "absolute"),
    (["gunicorn_pidfile = /run/gunicorn.pid", "gunicorn_backend = nope"], "nope"),
    (["redis_publish = yes"], "redis"),
], ids=["mode", "window", "webhook", "on_scale", "gunicorn_backend", "redis_publish"])
def test_scale_config_errors_name_file_and_line(tmp_path, lines, words):
    p, path, bad_line = _check(tmp_path, lines)
    assert p.returncode == 1, (p.returncode, p.stderr)
    assert words in p.stderr, p.stderr
    # The offending key's line: [scale] is on 5, an innocent `margin = 1.3` on 6.
    assert "%s:%d:" % (path, bad_line) in p.stderr, (bad_line, p.stderr)


def test_scale_config_that_is_valid_passes(tmp_path):
    p, path, _ = _check(tmp_path, ["mode = erlang", "window = 5m", "webhook = http://x:1/h",
                                   "on_scale = /bin/true", "gunicorn_pidfile = /run/g.pid",
                                   "gunicorn_backend = a"])
    assert p.returncode == 0, p.stderr


def test_utilisation_is_busy_workers_over_capacity(backend_factory, sluice_factory):
    """Issue 18: the pool's utilisation was (queue + service time) / capacity, 45.6 for a
    pool 99.9 % busy. Two sync workers kept busy by six clients (four always queued): the
    pool's utilisation and the controller's read about 1, not 3."""
    b = backend_factory("a", workers=2)
    admin = helpers.free_port()
    s = sluice_factory([b], extra="[queue]\ntarget = off\n" + scale_extra(admin, window="10s"))
    end = time.monotonic() + 4

    def client():
        while time.monotonic() < end:
            assert helpers.request(s.port, "GET", "/slow?ms=100").status == 200
    ts = [threading.Thread(target=client) for _ in range(6)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    pool = helpers.status_json(admin)["pool"]["windows"]["10s"]
    why = json.dumps(pool) + evidence(s, admin)
    assert 0.6 <= pool["utilisation"] <= 1.05, why
    assert pool["queue_p95_ms"] > 100, why  # they did queue: the old figure would be ~3
    assert scale_doc(admin)["utilisation"] <= 1.0, why
