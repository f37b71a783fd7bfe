"""A pooled backend connection is reused only when nothing beyond the last response's framing
can arrive on it: one client's bytes must never become another client's response.

Found as an attacker would: a WSGI app that sends a body for HEAD (Gunicorn passes it on)
left that body on the backend connection, sluice pooled it, and the next request from
another client read it as its response."""
import threading
import time
import urllib.parse

from helpers import SLOW, Conn, exit_totals, keepalive_loop, request

# A body shaped like a whole response: what a victim would receive if it were misread.
SMUGGLED = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nX-Evil: 1\r\n\r\nSMUGGLED!"
HELLO = b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nhello from a\n"


def _loops(port, attack, seconds, victims=2, attackers=2, max_each=3000):
    """attack(conn) in `attackers` loops beside `victims` loops of GET / on their own
    connections; returns (victim responses, the bad ones)."""
    stop = time.monotonic() + seconds
    lock = threading.Lock()
    got, bad, errors = [0], [], []

    def victim():
        c = None
        for _ in range(max_each):
            if time.monotonic() > stop:
                break
            try:
                c = c or Conn(port)
                c.request("GET", "/")
                r = c.read_response()
            except Exception as e:  # noqa: BLE001 - a cut or garbled answer is a wrong one
                r = e
                c.close()
                c = None
            with lock:
                got[0] += 1
                if not hasattr(r, "body") or r.status != 200 or r.body != b"hello from a\n":
                    bad.append(r)
        if c:
            c.close()

    def attacker():
        try:
            with Conn(port) as c:
                for _ in range(max_each):
                    if time.monotonic() > stop:
                        return
                    attack(c)
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    ts = [threading.Thread(target=victim) for _ in range(victims)] + \
        [threading.Thread(target=attacker) for _ in range(attackers)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(seconds + 30 * SLOW)
    assert not errors, errors[:5]
    return got[0], bad


def test_head_answered_with_a_body_by_gunicorn_never_reaches_another_client(
        backend_factory, sluice_factory):
    a = backend_factory("a", workers=1, worker_class="gthread", threads=4, keepalive=30)
    s = sluice_factory([a], proxy={"threads": "1"}, backend_opts={"idle_timeout": "30s"})
    target = "/headbody?body=" + urllib.parse.quote(SMUGGLED)

    def attack(c):
        c.request("HEAD", target)
        r = c.read_response("HEAD")
        assert r.status == 200, r

    n, bad = _loops(s.port, attack, 3.0)
    assert n > 100, "the victims got only %d responses" % n
    assert not bad, "%d of %d victim responses were not theirs, e.g. %r" % (len(bad), n, bad[0])
    s.stop()
    t = exit_totals(s)
    # not one HEAD left its connection for reuse: each answered a body it must not send
    assert t["upstream_reuses"] > 0, t  # the victims' connections were pooled as usual


def _late_bytes_backend(raw_backend_factory, delay):
    """A keep-alive backend that answers HEAD with a head announcing 31 bytes and, `delay`
    seconds later, sends response-shaped bytes; GET / gets "hello from a\\n"."""
    conns = []

    def respond(c, head):
        if head.startswith(b"HEAD"):
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(SMUGGLED))
            time.sleep(delay)
            c.sendall(SMUGGLED)
        else:
            c.sendall(HELLO)

    def handler(c, head, rest, b):
        conns.append(c)
        keepalive_loop(c, head, rest, respond)

    return raw_backend_factory(handler), conns


def test_bytes_sent_late_after_a_head_answer_never_reach_the_next_client(
        raw_backend_factory, sluice_factory):
    raw, _ = _late_bytes_backend(raw_backend_factory, 0.1)
    s = sluice_factory([("a", raw.address, 4)], proxy={"threads": "1"},
                       backend_opts={"idle_timeout": "30s"})
    for i in range(5):
        with Conn(s.port) as a, Conn(s.port) as b:
            a.request("HEAD", "/x?i=%d" % i)
            assert a.read_response("HEAD").status == 200
            time.sleep(0.02)  # B comes while A's late bytes are still on their way
            b.request("GET", "/")
            r = b.read_response()
            assert r.status == 200 and r.body == b"hello from a\n", (i, r, r.body)


def test_late_bytes_beside_other_clients_in_loops(raw_backend_factory, sluice_factory):
    raw, _ = _late_bytes_backend(raw_backend_factory, 0.005)
    s = sluice_factory([("a", raw.address, 8)], proxy={"threads": "1"},
                       backend_opts={"idle_timeout": "30s"})

    def attack(c):
        c.request("HEAD", "/x")
        assert c.read_response("HEAD").status == 200

    n, bad = _loops(s.port, attack, 2.0)
    assert n > 100, n
    assert not bad, "%d of %d victim responses were not theirs, e.g. %r" % (len(bad), n, bad[0])


def test_a_pooled_connection_that_talks_while_idle_is_closed_and_counted(
        raw_backend_factory, sluice_factory):
    sent, closed = threading.Event(), threading.Event()
    accepted = []

    def handler(c, head, rest, b):
        accepted.append(c)
        first = len(accepted) == 1

        def respond(c, head):
            c.sendall(HELLO)
            if first and not sent.is_set():  # the first connection talks while it idles
                time.sleep(0.05)
                c.sendall(SMUGGLED)
                sent.set()

        keepalive_loop(c, head, rest, respond)
        if first:
            closed.set()

    raw = raw_backend_factory(handler)
    s = sluice_factory([("a", raw.address, 4)], proxy={"threads": "1"},
                       backend_opts={"idle_timeout": "30s"})
    assert request(s.port, "GET", "/").body == b"hello from a\n"
    assert sent.wait(5 * SLOW)
    # sluice closes it while it idles (its idle timeout is 30 s), before any request comes
    assert closed.wait(5 * SLOW), "the pooled connection that talked was kept"
    for _ in range(3):
        r = request(s.port, "GET", "/")
        assert r.status == 200 and r.body == b"hello from a\n", (r, r.body)
    assert len(accepted) == 2, "expected one new connection, %d accepted" % len(accepted)
    s.stop()
    t = exit_totals(s)
    assert t["upstream_dirty"] == 1, t


def test_a_connection_whose_idle_timeout_is_due_is_not_reused(raw_backend_factory,
                                                               sluice_factory):
    """Requests that come just as a pooled connection's idle timeout runs out: the one that
    took it must be answered (found by the pipeline flood test: a connection taken in the
    loop turn its idle timeout was due in never delivered its response; 504 after
    read_timeout)."""
    def handler(c, head, rest, b):
        keepalive_loop(c, head, rest, lambda c, head: c.sendall(HELLO))

    raw = raw_backend_factory(handler)
    s = sluice_factory([("a", raw.address, 4)], proxy={"threads": "1"},
                       backend_opts={"idle_timeout": "50ms", "read_timeout": "3s"})
    slow = []
    with Conn(s.port) as c:
        for i in range(150):
            # come back after about the idle timeout: 45 to 55 ms, in 0.1 ms steps
            time.sleep(0.045 + (i % 100) * 0.0001)
            t0 = time.monotonic()
            c.request("GET", "/?i=%d" % i)
            r = c.read_response()
            assert r.status == 200, (i, r)
            if time.monotonic() - t0 > 1:
                slow.append(i)
    assert not slow, "requests %r waited for read_timeout" % slow


def test_idle_backend_connections_close_after_their_own_idle_timeout(raw_backend_factory,
                                                                     sluice_factory):
    """One timer closes the idle connections of every pool, oldest first: a connection
    pooled after one whose idle_timeout is longer (30 s) still closes after its own
    (300 ms), and the 30 s one stays open meanwhile."""
    served, closed = [], {"long": [], "short": []}

    def backend(name):
        def handler(c, head, rest, b):
            gone = threading.Event()
            closed[name].append(gone)

            def respond(c, head):
                served.append(name)
                c.sendall(HELLO)
            keepalive_loop(c, head, rest, respond)
            gone.set()  # sluice closed it (the raw backend's own timeout is 10 s)
        return raw_backend_factory(handler)
    lg, sh = backend("long"), backend("short")
    s = sluice_factory([("long", lg.address, 4), ("short", sh.address, 4)],
                       proxy={"threads": "1"},
                       backend_opts={"long": {"idle_timeout": "30s"},
                                     "short": {"idle_timeout": "300ms"}})
    with Conn(s.port) as c:
        for i in range(20):  # until the 30 s one was pooled just before the 300 ms one
            c.request("GET", "/?i=%d" % i)
            assert c.read_response().status == 200
            if served[-2:] == ["long", "short"]:
                break
    assert served[-2:] == ["long", "short"], served
    assert closed["short"][-1].wait(3 * SLOW), "the 300 ms connection was kept"
    assert not any(e.is_set() for e in closed["long"]), "the 30 s connection was closed"
