"""`workers = auto`: sluice learns how many requests a Gunicorn backend serves at once from
its latency (a gradient controller, src/adaptive.c) and keeps the rest in its own queue.
Against real sync workers (one request each) the learned limit settles near the worker
count: the knee beyond which latency only grows."""
import json
import re
import threading
import time

import http.client

import pytest

pytestmark = pytest.mark.slow  # load and timing: skipped by `make sanitize`


def closed_loop(port, path, clients, seconds):
    """`clients` threads, each sending `path` back to back for `seconds`; the statuses."""
    statuses = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def run():
        while time.monotonic() < deadline:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            c.request("GET", path)
            r = c.getresponse()
            r.read()
            c.close()
            with lock:
                statuses.append(r.status)
    ts = [threading.Thread(target=run) for _ in range(clients)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(seconds + 60)
    return statuses


def learned(sluice):
    """The learned limits logged so far (backend a), oldest first."""
    return [int(m) for m in re.findall(r"backend a: learned limit \d+ -> (\d+)",
                                       sluice.errors())]


def test_learned_limit_converges_near_the_worker_count(backend_factory, sluice_factory):
    workers = 3
    b = backend_factory("a", workers=workers)  # sync: exactly 3 requests at once
    s = sluice_factory([b], backend_opts={"workers": "auto", "workers_max": "32"},
                       extra="[queue]\nmax = 200\ntimeout = 30s\ntarget = off\n")
    # (target = off: 12 closed-loop clients keep a standing queue, which would be shed)
    statuses = closed_loop(s.port, "/slow?ms=40", clients=12, seconds=10)
    assert statuses and all(st == 200 for st in statuses), set(statuses)
    limits = learned(s)
    assert limits, "the learned limit never moved: %s" % s.errors()[-2000:]
    assert max(limits) < 12, "it ran up past the knee (%s): %s" % (workers, limits)
    last = limits[-1]
    assert workers <= last <= workers + 2, "settled at %d for %d workers: %s" % (
        last, workers, limits)


def test_an_app_limited_backend_is_not_given_a_limit_it_never_used(backend_factory,
                                                                   sluice_factory, free_port):
    """One client at a time: the controller measures (min_rtt near the 20 ms the app takes)
    but never had more than one request in flight, so it has no evidence for a higher
    limit and must not grant one."""
    b = backend_factory("a", workers=4)
    admin = free_port()
    s = sluice_factory([b], backend_opts={"workers": "auto", "workers_max": "32"},
                       extra="[admin]\nlisten = 127.0.0.1:%d\n" % admin)
    statuses = closed_loop(s.port, "/slow?ms=20", clients=1, seconds=4)
    assert len(statuses) > 50 and set(statuses) == {200}, (len(statuses), set(statuses))
    c = http.client.HTTPConnection("127.0.0.1", admin, timeout=10)
    c.request("GET", "/status.json")
    (a,) = json.loads(c.getresponse().read())["backends"]
    c.close()
    assert a["capacity_mode"] == "auto", a
    assert 15 <= a["learned_min_rtt_ms"] <= 200, "it did not measure the backend: %r" % a
    assert 1 <= a["capacity"] <= 3, "a limit it never used: %r (log: %s)" % (a, learned(s))
