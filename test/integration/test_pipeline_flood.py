"""One connection that pipelines 100,000 requests, refused by sluice or proxied, is answered
in order, request by request, without crashing sluice or stalling the other clients of its
thread (found as an attacker would: 10,000 pipelined requests refused with 429 overflowed
the stack, since each refusal answered the next request by recursion)."""
import re
import socket
import subprocess
import threading
import time

from helpers import PYTHON, SLOW, keepalive_loop, request

N = 100_000
TENANTS = "[tenants]\nkey = header:X-Tenant\n\n[tenant t]\nrate = 1\nburst = 1\n"
RID = re.compile(rb"\r\nX-Request-ID: (\d+)\r\n", re.I)
CL = re.compile(rb"\r\nContent-Length: (\d+)\r\n", re.I)


def _flood(port, n, extra_header=b""):
    """Send n pipelined GETs (X-Request-ID 0..n-1) on one connection while reading;
    returns the statuses in order. Fails if an answer is out of order or missing."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=60 * SLOW)
    # as short as they come: the more pile up in sluice's input, the deeper a recursion
    # would go; the first is answered after 0.3 s (see _fast_backend), the rest pile up
    reqs = b"".join(b"GET %s HTTP/1.1\r\nHost:x\r\n%sX-Request-ID:%d\r\n\r\n"
                    % (b"/slow" if i == 0 else b"/", extra_header, i) for i in range(n))
    sender = threading.Thread(target=sock.sendall, args=(reqs,), daemon=True)
    sender.start()
    statuses, buf, pos = [], bytearray(), 0
    deadline = time.monotonic() + 120 * SLOW
    try:
        while len(statuses) < n:
            assert time.monotonic() < deadline, "only %d of %d answered" % (len(statuses), n)
            d = sock.recv(1 << 20)
            assert d, "connection closed after %d of %d answers" % (len(statuses), n)
            buf += d
            while True:
                end = buf.find(b"\r\n\r\n", pos)
                if end < 0:
                    break
                head = bytes(buf[pos:end + 2])
                m = CL.search(head)
                blen = int(m.group(1)) if m else 0
                if len(buf) < end + 4 + blen:
                    break
                rid = RID.search(head)
                want = b"%d" % len(statuses)
                assert rid and rid.group(1) == want, \
                    "answer %d is for %r: %r" % (len(statuses), rid and rid.group(1), head[:300])
                statuses.append(int(head[9:12]))
                pos = end + 4 + blen
            if pos > (1 << 20):
                del buf[:pos]
                pos = 0
    finally:
        sock.close()
        sender.join(10)
    return statuses


PROBE = r"""
import select, socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
req = b"GET /probe HTTP/1.1\r\nHost: x\r\nX-Tenant: other\r\n\r\n"
lat, bad = [], 0
while not select.select([sys.stdin], [], [], 0.002)[0]:
    t0 = time.monotonic()
    s.sendall(req)
    buf = b""
    while b"\r\n\r\nok\n" not in buf:
        d = s.recv(65536)
        if not d:
            sys.exit("closed")
        buf += d
    lat.append(time.monotonic() - t0)
    bad += not buf.startswith(b"HTTP/1.1 200 ")
print(bad, " ".join("%.6f" % x for x in lat))
"""


class _Probe:
    """Another client on the same sluice thread, in its own process (not slowed by this
    one's threads): GET /probe over and over on its own connection, each answer's latency
    recorded."""

    def __init__(self, port):
        self.port, self.lat, self.bad = port, [], 0

    def __enter__(self):
        self.proc = subprocess.Popen([PYTHON, "-c", PROBE, str(self.port)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        return self

    def __exit__(self, *exc):
        out, _ = self.proc.communicate(b"stop\n", timeout=30)
        assert self.proc.returncode == 0, "probe failed (%r): %r" % (self.proc.returncode, out[-300:])
        bad, *lat = out.split()
        self.bad, self.lat = int(bad), [float(x) for x in lat]


def _fast_backend(raw_backend_factory):
    """A keep-alive raw backend answering every request with a tiny 200, GET /slow after
    0.3 s (so that a flood piles up in sluice's input meanwhile)."""
    def respond(c, head):
        if head.startswith(b"GET /slow "):
            time.sleep(0.3)
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")

    def handler(c, head, rest, b):
        keepalive_loop(c, head, rest, respond)
    return raw_backend_factory(handler)


def _check_probe(p):
    assert not p.bad, "%d of the other client's answers were not 200" % p.bad
    assert len(p.lat) >= 20, "the other client got only %d answers meanwhile" % len(p.lat)
    lat = sorted(p.lat)
    print("other client: %d answers, median %.2f ms, max %.2f ms" % (
        len(lat), lat[len(lat) // 2] * 1000, lat[-1] * 1000))
    # answered all along, never stalled behind the flood (typical: a few ms)
    assert lat[-1] < 0.5 * SLOW, "other client's slowest answer %.0f ms (median %.1f ms)" % (
        lat[-1] * 1000, lat[len(lat) // 2] * 1000)


def test_100k_pipelined_requests_refused_429_are_answered_in_order(
        raw_backend_factory, sluice_factory):
    raw = _fast_backend(raw_backend_factory)
    s = sluice_factory([("a", raw.address, 4)], proxy={"threads": "1"}, extra=TENANTS)
    with _Probe(s.port) as p:
        statuses = _flood(s.port, N, b"X-Tenant:t\r\n")
    assert statuses.count(429) >= N - 200, {k: statuses.count(k) for k in set(statuses)}
    assert set(statuses) <= {200, 429}
    _check_probe(p)
    assert request(s.port, "GET", "/after").status == 200  # still alive and serving


def test_100k_pipelined_requests_proxied_are_answered_in_order(raw_backend_factory,
                                                               sluice_factory):
    raw = _fast_backend(raw_backend_factory)
    s = sluice_factory([("a", raw.address, 4)], proxy={"threads": "1"})
    with _Probe(s.port) as p:
        statuses = _flood(s.port, N)
    assert statuses == [200] * N
    _check_probe(p)
