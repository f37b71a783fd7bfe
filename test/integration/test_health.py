"""Active health checks: health_check / health_interval / health_timeout / rise / fall /
health_status, slow_start after recovery, drain, and health state across reloads.

A backend's /health is switched by its APP_HEALTH_FILE (test/app.py answers 503 while the
file exists)."""
import os
import signal
import threading
import time

import pytest

from helpers import SLOW, concurrent_names, request, wait_for, write_config

INTERVAL_MS = 300
FALL = 2
RISE = 2


def name_of(r):
    assert r.status == 200, r
    return r.body.decode().strip().rsplit(" ", 1)[-1]


def names(port, n):
    return [name_of(request(port, "GET", "/")) for _ in range(n)]


def health_opts(**over):
    o = {"health_check": "/health", "health_interval": "%dms" % INTERVAL_MS,
         "health_timeout": "1s", "rise": str(RISE), "fall": str(FALL), "health_status": "200",
         "max_fails": "0"}  # passive health off: only the active checks decide
    o.update(over)
    return o


class Pair:
    def __init__(self, d, backend_factory, threads=24):
        self.flag = {}
        self.b = {}
        for n in ("a", "b"):
            self.flag[n] = os.path.join(d, "%s.down" % n)
            self.b[n] = backend_factory(n, workers=1, worker_class="gthread", threads=threads,
                                        env={"APP_HEALTH_FILE": self.flag[n]})

    def reset(self):
        for f in self.flag.values():
            if os.path.exists(f):
                os.unlink(f)

    def down(self, n):
        open(self.flag[n], "w").close()

    def up(self, n):
        os.unlink(self.flag[n])


@pytest.fixture(scope="module")
def _pair(tmp_path_factory, module_backend_factory):
    # shared by the module (gunicorn start/stop costs ~1 s each); each test gets its own sluice
    return Pair(str(tmp_path_factory.mktemp("health")), module_backend_factory)


@pytest.fixture
def pair(_pair):
    _pair.reset()
    yield _pair
    _pair.reset()


def wait_out(port, name, timeout):
    """Poll until a round of 6 requests gets no answer from `name`; the elapsed seconds."""
    t0 = time.monotonic()

    def out():
        return name not in names(port, 6)

    wait_for(out, timeout, interval=0.02, msg="backend %s taken out" % name)
    return time.monotonic() - t0


def wait_back(port, name, timeout):
    t0 = time.monotonic()
    wait_for(lambda: name in names(port, 4), timeout, interval=0.02,
             msg="backend %s back in" % name)
    return time.monotonic() - t0


def reload(s):
    n0 = s.errors().count("reloaded generation=")
    s.signal(signal.SIGHUP)
    wait_for(lambda: s.errors().count("reloaded generation=") > n0 or
             "reload failed" in s.errors() or s.proc.poll() is not None, 15 * SLOW, msg="reload")
    assert s.proc.poll() is None, "sluice exited with %r during the reload" % s.proc.returncode
    assert "reload failed" not in s.errors(), s.errors()[-2000:]


# ---------------------------------------------------------------- tests

def test_failing_backend_is_taken_out_within_fall_intervals_and_returns_after_rise(
        pair, sluice_factory):
    p = pair
    s = sluice_factory([p.b["a"], p.b["b"]], backend_opts=health_opts())
    seen = names(s.port, 8)
    assert "a" in seen and "b" in seen, seen
    p.down("a")
    # fall failed probes, one interval of phase, the probe time itself, and a margin
    limit = (FALL + 1) * INTERVAL_MS / 1000.0 + 2.0 * SLOW
    took = wait_out(s.port, "a", limit + 5 * SLOW)
    assert took <= limit, "backend a taken out after %.2fs, want <= %.2fs" % (took, limit)
    assert set(names(s.port, 20)) == {"b"}
    assert "backend=a down" in s.errors(), s.errors()[-2000:]
    p.up("a")
    t0 = time.monotonic()
    wait_back(s.port, "a", 10 * SLOW)
    took = time.monotonic() - t0
    assert took <= (RISE + 1) * INTERVAL_MS / 1000.0 + 2.0 * SLOW, took
    seen = names(s.port, 10)
    assert seen.count("a") >= 3 and seen.count("b") >= 3, seen


def test_backend_coming_back_needs_rise_consecutive_passes(pair, sluice_factory):
    # rise = 5 at 300 ms: back no sooner than 4 intervals after the first passing probe.
    p = pair
    s = sluice_factory([p.b["a"], p.b["b"]], backend_opts=health_opts(rise="5"))
    p.down("a")
    wait_out(s.port, "a", 10 * SLOW)
    p.up("a")
    t0 = time.monotonic()
    wait_back(s.port, "a", 15 * SLOW)
    took = time.monotonic() - t0
    assert took >= 4 * INTERVAL_MS / 1000.0 - 0.1, "back after %.2fs with rise=5" % took


def test_unexpected_health_status_takes_backend_out_and_configured_status_keeps_it(
        pair, sluice_factory):
    p = pair
    s = sluice_factory([p.b["a"], p.b["b"]], backend_opts={
        "a": health_opts(health_status="204"),                            # /health is 200
        "b": health_opts(health_check="/status/204", health_status="204")})
    wait_out(s.port, "a", 10 * SLOW)
    time.sleep(FALL * INTERVAL_MS / 1000.0 * 2)  # b's probes keep passing meanwhile
    assert set(names(s.port, 12)) == {"b"}


def test_health_probe_slower_than_health_timeout_counts_as_failed(pair, sluice_factory):
    p = pair
    s = sluice_factory([p.b["a"], p.b["b"]], backend_opts={
        "a": health_opts(health_check="/slow?ms=3000", health_timeout="200ms"),
        "b": health_opts()})
    wait_out(s.port, "a", 15 * SLOW)
    assert set(names(s.port, 12)) == {"b"}


def test_backend_in_slow_start_gets_fewer_requests_than_its_peer_at_first(
        pair, sluice_factory):
    p = pair
    s = sluice_factory([p.b["a"], p.b["b"]], backend_opts=health_opts(slow_start="20s"))
    p.down("a")
    wait_out(s.port, "a", 10 * SLOW)
    p.up("a")
    wait_back(s.port, "a", 10 * SLOW)
    # within the first seconds of a 20 s ramp a's weight is a small fraction of b's;
    # least connections then gives a far fewer of concurrent requests
    got = concurrent_names(s.port, 20, "/slow?ms=%d" % int(700 * SLOW))
    assert got.count("a") >= 1 and got.count("b") > 2 * got.count("a"), got


def test_without_slow_start_recovered_backend_gets_an_even_share_at_once(
        pair, sluice_factory):
    p = pair
    s = sluice_factory([p.b["a"], p.b["b"]], backend_opts=health_opts())
    p.down("a")
    wait_out(s.port, "a", 10 * SLOW)
    p.up("a")
    wait_back(s.port, "a", 10 * SLOW)
    got = concurrent_names(s.port, 20, "/slow?ms=%d" % int(700 * SLOW))
    assert got.count("a") >= 7 and got.count("b") >= 7, got


def test_backend_down_by_health_check_stays_down_across_reload_until_rise(
        pair, sluice_factory):
    p = pair
    s = sluice_factory([p.b["a"], p.b["b"]], backend_opts=health_opts(rise="3"))
    p.down("a")
    wait_out(s.port, "a", 10 * SLOW)
    # same backend names, something else changed: a must not come back just by reloading
    write_config(s.config, ["127.0.0.1:%d" % s.port], [p.b["a"], p.b["b"]],
                 {"keepalive_timeout": "70s"},
                 {"a": health_opts(rise="3"), "b": health_opts(rise="3", weight="2")},
                 log_dir=s.dir)
    reload(s)
    assert set(names(s.port, 12)) == {"b"}
    time.sleep(2 * INTERVAL_MS / 1000.0)  # checks of the new generation run and keep failing
    assert set(names(s.port, 12)) == {"b"}
    p.up("a")
    wait_back(s.port, "a", 10 * SLOW)


def test_drain_on_reload_sends_no_new_requests_while_in_flight_request_completes(
        pair, sluice_factory):
    p = pair
    s = sluice_factory([p.b["a"], p.b["b"]])
    ms = int(2500 * SLOW)
    results = []

    def slow():
        try:
            r = request(s.port, "GET", "/slow?ms=%d" % ms, timeout=30 * SLOW)
            results.append((r.status, r.header("X-App-Name"), r.body))
        except Exception as e:
            results.append(("error", repr(e), b""))

    def slow_seen():
        return sum(1 for b in p.b.values() for l in b.log_lines() if l.startswith("GET /slow"))

    base = slow_seen()
    ts = []
    # least connections: with one slow request in flight on one backend the next goes to
    # the other, so both have one in flight
    for _ in range(2):
        t = threading.Thread(target=slow)
        t.start()
        ts.append(t)
        wait_for(lambda: slow_seen() - base >= len(ts), 10 * SLOW,
                 msg="slow request at a backend")
    p.b["a"].wait_log("GET /slow?ms=%d" % ms, 5 * SLOW)
    write_config(s.config, ["127.0.0.1:%d" % s.port], [p.b["a"], p.b["b"]], None,
                 {"a": {"drain": "yes"}, "b": {}}, log_dir=s.dir)
    reload(s)
    n_a = len(p.b["a"].log_lines())
    assert set(names(s.port, 12)) == {"b"}
    assert len(p.b["a"].log_lines()) == n_a, p.b["a"].log_lines()[n_a:]
    for t in ts:
        t.join(30 * SLOW)
    body = b"slept %d\n" % ms
    assert sorted(results) == [(200, "a", body), (200, "b", body)], results
    # undrained by the next reload: a gets requests again
    write_config(s.config, ["127.0.0.1:%d" % s.port], [p.b["a"], p.b["b"]], None, None,
                 log_dir=s.dir)
    reload(s)
    assert "a" in names(s.port, 6)


def test_drain_set_at_start_never_sends_to_that_backend(pair, sluice_factory):
    p = pair
    s = sluice_factory([p.b["a"], p.b["b"]], backend_opts={"a": {"drain": "yes"}, "b": {}})
    n_a = len(p.b["a"].log_lines())
    assert set(names(s.port, 12)) == {"b"}
    assert len(p.b["a"].log_lines()) == n_a


def test_no_health_check_key_means_no_probes(pair, sluice_factory):
    p = pair
    s = sluice_factory([p.b["a"], p.b["b"]])
    n_a = len(p.b["a"].log_lines())
    p.down("a")  # /health fails, but nobody asks
    time.sleep(1.0)
    seen = names(s.port, 8)
    assert "a" in seen and "b" in seen, seen
    assert not any("/health" in l for l in p.b["a"].log_lines()[n_a:])
