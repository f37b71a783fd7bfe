"""Timeouts and backend failures: 408 for slow clients, 504 for slow backends, 502 for bad
backend responses."""
import select
import time

from helpers import SLOW, Conn, is_sluice_error, request


def test_slow_client_header_gets_408_then_connection_closed(backend_factory, sluice_factory):
    a = backend_factory("a", workers=1)
    s = sluice_factory([a], proxy={"client_header_timeout": "1s"})
    with Conn(s.port) as c:
        c.send(b"GET / HTTP/1.1\r\nHost: example.test\r\nX-Partial: yes\r\n")
        t0 = time.monotonic()
        r = c.read_response()
        elapsed = time.monotonic() - t0
        closed, extra = c.wait_closed(3 * SLOW)
    assert is_sluice_error(r, 408), r
    assert 0.5 <= elapsed <= 4 * SLOW, "408 after %.2fs, client_header_timeout is 1s" % elapsed
    assert closed and extra == b"", (closed, extra[:100])
    assert a.log_lines() == []


def test_header_trickled_in_slowly_still_times_out(backend_factory, sluice_factory):
    """The header timeout bounds the whole head, not the gap between bytes."""
    a = backend_factory("a", workers=1)
    s = sluice_factory([a], proxy={"client_header_timeout": "1s"})
    data = b"GET / HTTP/1.1\r\nHost: example.test\r\n" + b"X-Slow: " + b"a" * 400
    got = b""
    closed = False
    with Conn(s.port) as c:
        t0 = time.monotonic()
        for i in range(len(data)):
            try:
                c.send(data[i:i + 1])
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            readable, _, _ = select.select([c.sock], [], [], 0.02)
            if readable:
                try:
                    d = c.sock.recv(65536)
                except ConnectionResetError:
                    d = b""
                got += d
                if not d:
                    closed = True
                    break
                if got.count(b"\r\n\r\n"):
                    break
        elapsed = time.monotonic() - t0
    assert closed or got, "a head trickled in over %.1fs was never timed out" % elapsed
    assert elapsed < 4.5, "a head trickled in over %.1fs before sluice reacted" % elapsed
    if got:
        assert got.startswith(b"HTTP/1.1 408"), got[:200]
    assert a.log_lines() == []


def test_slow_client_body_times_out(backend_factory, sluice_factory):
    a = backend_factory("a", workers=1, worker_class="gthread", threads=2)
    s = sluice_factory([a], proxy={"client_body_timeout": "1s"})
    with Conn(s.port) as c:
        c.request("POST", "/upload", {"Content-Length": "100"})
        c.send(b"x" * 10)
        t0 = time.monotonic()
        closed, got = c.wait_closed(6 * SLOW)
        elapsed = time.monotonic() - t0
    assert closed, "connection with a stalled body still open after %.1fs" % elapsed
    assert elapsed <= 4 * SLOW
    if got:
        assert got.startswith(b"HTTP/1.1 408"), got[:200]


def test_a_whole_body_is_not_timed_out_while_the_backend_works(backend_factory, sluice_factory):
    """client_body_timeout is for a body that stops coming, not for the backend's time: a
    POST whose body arrived whole waits for a backend slower than that timeout (before the
    session rebuild it was cut at client_body_timeout as a client abort)."""
    a = backend_factory("a", workers=1, worker_class="gthread", threads=2)
    s = sluice_factory([a], proxy={"client_body_timeout": "1s"})
    r = request(s.port, "POST", "/slow?ms=2500", {"Host": "x", "Content-Length": "7"},
                b"hello=1", timeout=15 * SLOW)
    assert r.status == 200 and r.body == b"slept 2500\n", r


def test_backend_read_timeout_gives_504(backend_factory, sluice_factory):
    a = backend_factory("a", workers=1, worker_class="gthread", threads=4)
    s = sluice_factory([a], backend_opts={"read_timeout": "1s", "max_fails": "0"})
    t0 = time.monotonic()
    r = request(s.port, "GET", "/slow?ms=3000")
    elapsed = time.monotonic() - t0
    assert is_sluice_error(r, 504), r
    assert elapsed < 2.8, "504 after %.2fs, read_timeout is 1s" % elapsed
    # a fast request still works afterwards
    r = request(s.port, "GET", "/")
    assert r.status == 200, r


def test_post_is_not_retried_after_backend_read_timeout(backend_factory, sluice_factory):
    a = backend_factory("a", workers=1, worker_class="gthread", threads=4)
    b = backend_factory("b", workers=1, worker_class="gthread", threads=4)
    s = sluice_factory([a, b], backend_opts={"read_timeout": "1s", "max_fails": "0"})
    r = request(s.port, "POST", "/slow?ms=2000", body=b"once")
    assert is_sluice_error(r, 504), r
    time.sleep(1.5)
    seen = [l for l in a.log_lines() + b.log_lines() if l.startswith("POST /slow")]
    assert len(seen) == 1, "a non-idempotent request was sent %d times: %r" % (len(seen), seen)


def garbage_handler(c, head, rest, backend):
    c.sendall(b"THIS IS NOT HTTP\r\n\r\n")


def close_handler(c, head, rest, backend):
    return  # close without a byte


def test_garbage_backend_response_gives_502(raw_backend_factory, sluice_factory):
    be = raw_backend_factory(garbage_handler)
    s = sluice_factory([("raw", be.address, 1)])
    r = request(s.port, "GET", "/")
    assert is_sluice_error(r, 502), r
    assert len(be.heads) >= 1


def test_backend_closing_without_response_gives_502(raw_backend_factory, sluice_factory):
    be = raw_backend_factory(close_handler)
    s = sluice_factory([("raw", be.address, 1)])
    r = request(s.port, "POST", "/", body=b"x")
    assert is_sluice_error(r, 502), r
