"""Keep-alive on both sides: pooled upstream connections, sync backends that close every
response, idle client connections, and pipelining."""
import threading
import time

from helpers import SLOW, Conn, request, status_json, wait_port


def test_upstream_connections_are_reused_with_a_gthread_backend(backend_factory, sluice_factory):
    a = backend_factory("a", workers=1, worker_class="gthread", threads=4)
    s = sluice_factory([a])
    seen = []
    with Conn(s.port) as c:
        for i in range(50):
            c.request("GET", "/conn?i=%d" % i)
            r = c.read_response()
            assert r.status == 200, r
            j = r.json()
            seen.append((j["pid"], j["peer_port"]))
    distinct = set(seen)
    assert len(distinct) <= 5, "50 sequential requests used %d upstream connections" % len(
        distinct)


def test_upstream_reuse_holds_across_client_connections(backend_factory, sluice_factory):
    a = backend_factory("a", workers=1, worker_class="gthread", threads=4)
    s = sluice_factory([a], proxy={"threads": "1"})
    seen = set()
    for i in range(20):
        with Conn(s.port) as c:
            c.request("GET", "/conn", {"Connection": "close"})
            r = c.read_response()
            assert r.status == 200, r
            j = r.json()
            seen.add((j["pid"], j["peer_port"]))
    assert len(seen) <= 4, "20 requests on 20 client connections used %d upstream connections" \
        % len(seen)


def test_sync_backend_that_closes_each_response_still_serves_a_keepalive_client(
        backend_factory, sluice_factory):
    a = backend_factory("a", workers=2, worker_class="sync")
    s = sluice_factory([a])
    with Conn(s.port) as c:
        for i in range(10):
            c.request("GET", "/conn?i=%d" % i)
            r = c.read_response()
            assert r.status == 200, (i, r)
            assert "close" not in r.header("Connection", "").lower(), \
                "backend's Connection: close leaked to the client: %r" % r
        c.request("POST", "/echo", body=b"x" * 1000)
        r = c.read_response()
        assert r.status == 200 and r.json()["body_length"] == 1000


def idle_close_after_one_request(s, wait):
    """One request on a connection, then the seconds until sluice closes it, idle; it must
    close within wait and send nothing."""
    with Conn(s.port) as c:
        c.request("GET", "/")
        assert c.read_response().status == 200
        t0 = time.monotonic()
        closed, extra = c.wait_closed(wait)
        elapsed = time.monotonic() - t0
    assert closed, "idle keep-alive connection still open after %.1fs" % elapsed
    assert extra == b"", "sluice sent bytes on an idle connection: %r" % extra[:200]
    return elapsed


def test_idle_client_connection_is_closed_quietly_after_keepalive_timeout(
        backend_factory, sluice_factory):
    a = backend_factory("a", workers=1)
    s = sluice_factory([a], proxy={"keepalive_timeout": "1s", "client_header_timeout": "10s"})
    elapsed = idle_close_after_one_request(s, 6 * SLOW)
    assert 0.5 <= elapsed <= 4 * SLOW, "closed after %.2fs, keepalive_timeout is 1s" % elapsed


def test_a_keepalive_timeout_longer_than_the_header_timeout_holds(backend_factory,
                                                                sluice_factory):
    # the connection's timer is armed lazily: the header deadline's timer (1 s, armed at
    # accept) fires while the keep-alive deadline (2.5 s) stands and must wait on for it
    a = backend_factory("a", workers=1)
    s = sluice_factory([a], proxy={"keepalive_timeout": "2500ms",
                                   "client_header_timeout": "1s"})
    elapsed = idle_close_after_one_request(s, 10 * SLOW)
    assert 2.0 <= elapsed <= 2.5 + 4 * SLOW, "closed after %.2fs, keepalive_timeout is 2.5s" % elapsed


def test_backend_connections_are_kept_for_as_many_requests_as_were_in_flight(
        backend_factory, sluice_factory, free_port):
    """keepalive = auto (the default): a wave of 100 requests in flight at once (more than
    the 32 a thread kept before, as HTTP/2 clients send) leaves their backend connections
    open, and the next wave uses them instead of connecting again (with keepalive = 32 it
    opened 68)."""
    a = backend_factory("a", workers=2, worker_class="gthread", threads=64)
    admin = free_port()
    # one thread: with two, the kernel shares the waves' connections out between the
    # threads' listeners anew each time, and each thread keeps its own pool
    s = sluice_factory([a], proxy={"threads": "1"},
                       backend_opts={"keepalive": None},  # the default: auto
                       extra="[admin]\nlisten = 127.0.0.1:%d\n" % admin)
    wait_port(admin, 15 * SLOW, s.proc, "sluice admin listener")

    def wave():
        out = []
        ths = [threading.Thread(target=lambda: out.append(
            request(s.port, "GET", "/slow?ms=300", timeout=30 * SLOW).status)) for _ in range(100)]
        for t in ths:
            t.start()
        for t in ths:
            t.join(60)
        assert out == [200] * 100, out
        return status_json(admin)["totals"]["upstream_connects"]
    first = wave()
    assert first >= 90, first  # the first wave had to open its connections
    second = wave() - first
    assert second <= 5, "the second wave opened %d backend connections" % second


def test_pipelined_requests_are_answered_in_order(backend_factory, sluice_factory):
    a = backend_factory("a", workers=1, worker_class="gthread", threads=4)
    s = sluice_factory([a])
    with Conn(s.port) as c:
        data = c.request("GET", "/slow?ms=300", send=False)
        data += c.request("GET", "/", send=False)
        data += c.request("POST", "/echo?third", body=b"12345", send=False)
        data += c.request("HEAD", "/bytes?n=10&cl=1", send=False)
        data += c.request("GET", "/status/204", send=False)
        data += c.request("GET", "/echo?last", send=False)
        c.send(data)
        r1 = c.read_response()
        r2 = c.read_response()
        r3 = c.read_response()
        r4 = c.read_response("HEAD")
        r5 = c.read_response()
        r6 = c.read_response()
    assert (r1.status, r1.body) == (200, b"slept 300\n")
    assert (r2.status, r2.body) == (200, b"hello from a\n")
    assert r3.status == 200 and r3.json()["query"] == "third"
    assert r3.json()["body_length"] == 5
    assert r4.status == 200 and r4.header("Content-Length") == "10" and r4.body == b""
    assert r5.status == 204
    assert r6.status == 200 and r6.json()["query"] == "last"
