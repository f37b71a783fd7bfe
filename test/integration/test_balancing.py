"""Least connections, rotation on ties, retry on connect failure, passive health, and a
backend dying mid-response."""
import threading
import time

import helpers
from helpers import ChunkedDecoder, Conn, free_port, request


def name_of(r):
    assert r.status == 200, r
    return r.body.decode().strip().rsplit(" ", 1)[-1]


def test_least_connections_sends_more_to_the_fast_backend(backend_factory, sluice_factory):
    slow = backend_factory("slow", workers=1, worker_class="gthread", threads=8,
                           env={"APP_DELAY_MS": "300"})
    fast = backend_factory("fast", workers=1, worker_class="gthread", threads=8)
    s = sluice_factory([slow, fast])
    counts = {"slow": 0, "fast": 0}
    errors = []
    lock = threading.Lock()
    stop_at = time.monotonic() + 3.0

    def client():
        n = 0
        while time.monotonic() < stop_at and n < 400:
            n += 1
            try:
                who = name_of(request(s.port, "GET", "/"))
            except Exception as e:  # reported below
                errors.append(repr(e))
                return
            with lock:
                counts[who] += 1

    threads = [threading.Thread(target=client) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors[:3]
    assert counts["slow"] >= 1, counts
    assert counts["fast"] >= 3 * counts["slow"], counts


def test_ties_rotate_between_idle_backends(backend_factory, sluice_factory):
    a = backend_factory("a", workers=1)
    b = backend_factory("b", workers=1)
    s = sluice_factory([a, b])
    seen = [name_of(request(s.port, "GET", "/")) for _ in range(10)]
    assert seen.count("a") >= 3 and seen.count("b") >= 3, seen


def hello_a_handler(c, head, rest, backend):
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nConnection: close\r\n\r\n"
              b"hello from a\n")


def test_dead_backend_is_retried_on_the_other_and_marked_down(backend_factory,
                                                              raw_backend_factory,
                                                              sluice_factory):
    dead_port = free_port()
    b = backend_factory("b", workers=2)
    s = sluice_factory([("a", "127.0.0.1:%d" % dead_port, 2), b],
                       backend_opts={"a": {"max_fails": "1", "fail_timeout": "3s"}, "b": {}})
    t0 = time.monotonic()
    seen = [name_of(request(s.port, "GET", "/")) for _ in range(6)]
    assert seen == ["b"] * 6, seen
    # Bring "a" to life on its address: while it is marked down it must get nothing.
    a = raw_backend_factory(hello_a_handler, port=dead_port)
    checked = 0
    while time.monotonic() - t0 < 2.5 and checked < 20:
        assert name_of(request(s.port, "GET", "/")) == "b"
        checked += 1
    assert checked, "too slow to check the down period"
    assert a.heads == [], "a got requests while it should be marked down"
    # After fail_timeout it is tried again.
    time.sleep(max(0.0, t0 + 3.5 - time.monotonic()))
    later = [name_of(request(s.port, "GET", "/")) for _ in range(8)]
    assert "a" in later, "a never came back after fail_timeout: %r" % later


def test_all_backends_dead_gives_502(sluice_factory):
    s = sluice_factory([("a", "127.0.0.1:%d" % free_port(), 1),
                        ("b", "127.0.0.1:%d" % free_port(), 1)])
    r = request(s.port, "GET", "/")
    assert helpers.is_sluice_error(r, 502), r


def test_backend_killed_mid_download_truncates_response_and_later_requests_use_other(
        backend_factory, sluice_factory):
    a = backend_factory("a", workers=1)
    b = backend_factory("b", workers=1)
    s = sluice_factory([a, b])
    n = 1 << 30
    with Conn(s.port, timeout=15) as c:
        c.request("GET", "/bytes?n=%d" % n)
        r = c.read_head()
        assert r.status == 200, r
        victim = a if r.header("X-App-Name") == "a" else b
        other = b if victim is a else a
        assert r.header("Transfer-Encoding", "").lower() == "chunked", r
        dec = ChunkedDecoder()
        dec.feed(bytes(c.buf))
        c.buf.clear()
        while dec.data < (1 << 20):
            d = c.sock.recv(65536)
            assert d, "connection closed before the backend was killed"
            dec.feed(d)
        assert not dec.error, dec.error
        victim.kill()
        # The rest of the response must end (EOF or reset) without a last chunk, and must
        # not hang: the socket has a timeout.
        t0 = time.monotonic()
        try:
            while True:
                d = c.sock.recv(262144)
                if not d:
                    break
                dec.feed(d)
                assert not dec.done, "sluice completed the chunked body of a dead backend"
                assert dec.data < n, "got the whole body from a killed backend?"
        except ConnectionResetError:
            pass
        except OSError as e:  # socket.timeout: a hang
            raise AssertionError("client hung %.1fs after the backend died (%d bytes): %r"
                                 % (time.monotonic() - t0, dec.data, e))
    for _ in range(4):
        assert name_of(request(s.port, "GET", "/")) == other.name
