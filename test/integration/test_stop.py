"""Graceful stop under load: on SIGTERM (or -s stop) every request sluice accepted completes
with 200, new connections are refused, and sluice exits 0."""
import http.client
import signal
import socket
import subprocess
import threading
import time

import helpers
from helpers import SLOW, wait_for


# What a client sees when sluice closed the connection before the request arrived: EOF
# without any response byte (or EPIPE while still sending). Like a refused connection, that
# request was never accepted; the client retries it on a new connection, which must then be
# served or refused. A reset (ECONNRESET) instead means sluice closed with the request unread
# in its socket buffer, i.e. it dropped a request it had received: a failure.
CLOSED_FIRST = (http.client.RemoteDisconnected, BrokenPipeError)


class Load:
    """Client threads sending requests until they meet a refused connection (after the stop)
    or their bound (time and count). A request whose connection was established and whose
    bytes were sent must get a 200 with the right body; anything else is a failure."""

    def __init__(self, port, plan, max_seconds=40.0, max_requests=2000):
        self.port = port
        self.plan = plan          # list of (keepalive, [targets...]) per thread
        self.deadline = time.monotonic() + max_seconds * SLOW
        self.max_requests = max_requests
        self.lock = threading.Lock()
        self.failures = []
        self.ok = 0
        self.ok_after_stop = 0
        self.slow_ok_after_stop = 0
        self.refused = 0
        self.stopped_at = None
        self.closed_first = []
        self.threads = [threading.Thread(target=self._client, args=(i, ka, targets), daemon=True)
                        for i, (ka, targets) in enumerate(plan)]

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def join(self):
        for t in self.threads:
            t.join(60 * SLOW)
        assert not any(t.is_alive() for t in self.threads), "load clients did not finish"

    @staticmethod
    def expected(target):
        if target.startswith("/slow?ms="):
            return b"slept %s\n" % target.split("=", 1)[1].encode()
        return b"hello from a\n"

    def _client(self, i, keepalive, targets):
        conn = None
        reused = False
        n = 0
        while n < self.max_requests and time.monotonic() < self.deadline:
            target = targets[n % len(targets)]
            n += 1
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30 * SLOW)
                try:
                    conn.connect()
                except (ConnectionRefusedError, ConnectionResetError) as e:
                    # a reset in connect() is a handshake the closing listener never completed
                    if isinstance(e, ConnectionResetError) and self.stopped_at is None:
                        self.failures.append("client %d: connect: %r" % (i, e))
                        return
                    with self.lock:
                        self.refused += 1
                    if self.stopped_at is None:
                        self.failures.append("client %d: refused before the stop" % i)
                    return
                except OSError as e:
                    self.failures.append("client %d: connect: %r" % (i, e))
                    return
                reused = False
            try:
                conn.request("GET", target)
                resp = conn.getresponse()
                body = resp.read()
                if resp.status != 200 or body != self.expected(target):
                    self.failures.append("client %d %s: status %d body %r"
                                         % (i, target, resp.status, body[:100]))
                else:
                    with self.lock:
                        self.ok += 1
                        if self.stopped_at is not None:
                            self.ok_after_stop += 1
                            if target.startswith("/slow"):
                                self.slow_ok_after_stop += 1
                if keepalive and not resp.will_close:
                    reused = True
                else:
                    conn.close()
                    conn = None
            except Exception as e:
                when = "after" if self.stopped_at is not None else "before"
                conn.close()
                conn = None
                if isinstance(e, CLOSED_FIRST) and self.stopped_at is not None:
                    with self.lock:
                        self.closed_first.append("client %d %s (%s connection): %r" % (
                            i, target, "reused keep-alive" if reused else "new", e))
                    n -= 1
                    continue
                self.failures.append("client %d %s (%s connection, %s the stop): %r"
                                     % (i, target, "reused keep-alive" if reused else "new",
                                        when, e))
        if conn is not None:
            conn.close()


def slow_in_flight(backend, since):
    return len([l for l in backend.log_lines()[since:] if l.startswith("GET /slow")])


def run_stop_under_load(backend_factory, sluice_factory, stop):
    a = backend_factory("a", workers=1, worker_class="gthread", threads=32)
    s = sluice_factory([a], proxy={"shutdown_grace": "20s", "keepalive_timeout": "75s"})
    slow = "/slow?ms=500"
    plan = [(True, ["/", slow]), (True, ["/"]), (True, [slow]),
            (False, [slow]), (False, ["/"]), (False, ["/", "/", slow]),
            (False, [slow]), (True, ["/", "/", "/", slow])]
    load = Load(s.port, plan).start()
    try:
        # let it run: enough requests done and several slow ones in flight
        wait_for(lambda: load.ok >= 30 and not load.failures or load.failures, 20 * SLOW,
                 msg="load to get going")
        assert not load.failures, load.failures[:5]
        n0 = len(a.log_lines())
        wait_for(lambda: slow_in_flight(a, n0) >= 3, 10 * SLOW, msg="slow requests in flight")
        load.stopped_at = time.monotonic()
        stop(s)
        rc = s.wait_exit(30 * SLOW)
    finally:
        load.deadline = time.monotonic()  # stop clients in any case
        load.join()
    assert rc == 0, "sluice exit %r after the stop\n%s" % (rc, s.diagnostics())
    assert not load.failures, (
        "%d failed requests (ok %d, ok after stop %d, closed before the request arrived %d);"
        " first: %s\n%s" % (len(load.failures), load.ok, load.ok_after_stop,
                            len(load.closed_first), load.failures[:6], s.diagnostics()))
    assert load.slow_ok_after_stop >= 1, "no in-flight slow request completed after the stop"
    assert load.refused >= 1, "no client saw the listener closed"
    assert not helpers.port_open(s.port)
    return load


def test_sigterm_under_load_completes_every_accepted_request_and_exits_0(backend_factory,
                                                                        sluice_factory):
    run_stop_under_load(backend_factory, sluice_factory, lambda s: s.signal(signal.SIGTERM))


def test_s_stop_under_load_completes_every_accepted_request_and_exits_0(backend_factory,
                                                                       sluice_factory):
    def stop(s):
        p = subprocess.run([helpers.SLUICE_BIN, "-c", s.config, "-s", "stop"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           env=helpers.sluice_env(), timeout=30 * SLOW)
        assert p.returncode == 0, p.stdout.decode()
    run_stop_under_load(backend_factory, sluice_factory, stop)


def test_sigterm_with_request_head_half_sent_still_answers_it(backend_factory, sluice_factory):
    # A client that was accepted and is in the middle of its request head is in flight too.
    a = backend_factory("a", workers=1, worker_class="gthread", threads=4)
    s = sluice_factory([a], proxy={"shutdown_grace": "10s"})
    c = socket.create_connection(("127.0.0.1", s.port), timeout=10 * SLOW)
    try:
        c.sendall(b"GET /slow?ms=300 HTTP/1.1\r\nHost: x\r\n")
        time.sleep(0.3)  # let sluice read the first part (not a readiness wait)
        s.signal(signal.SIGTERM)
        wait_for(lambda: "stopping" in s.errors(), 10 * SLOW, msg="stop logged")
        c.sendall(b"X-Late: 1\r\n\r\n")
        data = b""
        while True:
            d = c.recv(65536)
            if not d:
                break
            data += d
        assert data.startswith(b"HTTP/1.1 200"), data[:300]
        assert data.endswith(b"slept 300\n"), data[-300:]
    finally:
        c.close()
    assert s.wait_exit(15 * SLOW) == 0, s.diagnostics()


def test_sigterm_exits_after_shutdown_grace_even_with_a_stuck_request(backend_factory,
                                                                      sluice_factory):
    a = backend_factory("a", workers=1, worker_class="gthread", threads=4)
    s = sluice_factory([a], proxy={"shutdown_grace": "1s"})
    result = {}

    def client():
        try:
            result["r"] = helpers.request(s.port, "GET", "/slow?ms=20000", timeout=30)
        except Exception as e:
            result["e"] = e

    t = threading.Thread(target=client, daemon=True)
    t.start()
    a.wait_log("GET /slow?ms=20000", 10 * SLOW)
    t0 = time.monotonic()
    s.signal(signal.SIGTERM)
    rc = s.wait_exit(20 * SLOW)
    elapsed = time.monotonic() - t0
    t.join(30)
    assert rc == 0, "exit %r\n%s" % (rc, s.diagnostics())
    assert elapsed < 10 * SLOW, elapsed
    assert "r" not in result or result["r"].status != 200, result
    assert "shutdown grace expired" in s.errors(), s.errors()[-2000:]
    # the request cut is named, not lost silently
    cut = [l for l in s.errors().splitlines() if "closed at shutdown" in l]
    assert len(cut) == 1 and "state=waiting" in cut[0] and "target=/slow?ms=20000" in cut[0] \
        and "backend=a" in cut[0], s.errors()[-2000:]
