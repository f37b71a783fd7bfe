"""Fault injection under a bounded load: a few client threads for a few seconds against TWO
backends, one of which misbehaves. For every fault the client outcome must be the documented
one (docs/configuration.md, "read_timeout", and session_upstream.c):

  * the backend fails before its response head was complete: sluice answers 502 (504 for a
    read timeout) itself, with X-Sluice-Error;
  * the response had started (head sent to the client): the client connection is closed
    before the body's framing is complete (Content-Length not reached, or no last chunk), so
    the client sees an error; never a short body that looks complete (a 200 whose framing
    ends early, or that is followed by keep-alive).

and: sluice does not crash (it answers afterwards and exits 0), does not leak (its fd count
returns to its baseline once the load is over), and the OTHER backend is unaffected: every
request the healthy Gunicorn logged was answered completely and correctly.

Not repeated here: one request cut short by a raw backend (test_robustness.py), a garbage
status line and a close without answer (test_timeouts.py), conflicting framing in a
response (test_conformance.py). Redis killed and restarted under sluice:
test_redis.py (test_open_admits_when_redis_is_killed_and_limits_again_when_it_is_back,
test_closed_answers_503_limiter_down_when_redis_is_killed,
test_local_limits_on_the_instance_when_redis_is_killed,
test_sluice_starts_without_redis_and_shares_once_redis_is_up).
"""
import hashlib
import os
import re
import signal
import socket
import struct
import threading
import time

import pytest

from helpers import (SLOW, Conn, ConnectionClosed, child_pids, cpu_seconds, exit_totals,
                     fd_count, pattern_sha, request, wait_for)

LOAD_SECONDS = 3.0
THREADS = 4
N_GOOD = 256 * 1024


# ---------------------------------------------------------------- observation helpers

class Bad(Exception):
    pass


def read_body(c, r, sink):
    """Read r's body by its framing; ConnectionClosed/OSError if the peer closes early."""
    te, cl = r.header("Transfer-Encoding"), r.header("Content-Length")
    if te is not None:
        if te.lower() != "chunked" or cl is not None:
            raise Bad("framing TE %r CL %r" % (te, cl))
        while True:
            line = c._read_until(b"\r\n", 4096)
            size = int(line.split(b";")[0], 16)
            if size == 0:
                while c._read_until(b"\r\n", 8192):
                    pass
                return
            c._read_n(size, sink)
            if c._read_until(b"\r\n", 2) != b"":
                raise Bad("no CRLF after chunk data")
    if cl is not None:
        c._read_n(int(cl), sink)
        return
    raise Bad("a 200 to an HTTP/1.1 client without Content-Length or chunked framing")


class Result:
    def __init__(self, rid, target):
        self.rid, self.target = rid, target
        self.kind = None          # ok | gateway | truncated | bad
        self.status = None
        self.backend = None       # X-App-Name / X-Backend of a response
        self.length = 0
        self.sha = None
        self.detail = ""
        self.keep_alive = None

    def __repr__(self):
        return "<%s %s %s status=%s backend=%s len=%d%s %s>" % (
            self.rid, self.target, self.kind, self.status, self.backend, self.length,
            " keep-alive" if self.keep_alive else "", self.detail)


def one_request(c, rid, target, on_body=None):
    """Send one GET on c and classify what comes back. Returns (Result, connection usable)."""
    res = Result(rid, target)
    h = hashlib.sha256()
    try:
        c.request("GET", target, {"X-Request-ID": rid})
    except OSError as e:
        res.kind, res.detail = "bad", "send failed on a keep-alive connection: %r" % e
        return res, False
    try:
        r = c.read_head()
    except (ConnectionClosed, ConnectionResetError) as e:
        res.kind, res.detail = "bad", "closed without any response: %r" % e
        return res, False
    except socket.timeout:
        res.kind, res.detail = "bad", "no response head within %.0fs" % c.timeout
        return res, False
    res.status = r.status
    res.backend = r.header("X-App-Name") or r.header("X-Backend")
    res.keep_alive = r.header("Connection", "").lower() != "close"
    got = [0]

    def sink(piece):
        got[0] += len(piece)
        h.update(piece)
        if on_body:
            on_body(res, got[0])
    try:
        read_body(c, r, sink)
    except (ConnectionClosed, ConnectionResetError, BrokenPipeError) as e:
        res.length = got[0]
        if r.status == 200:
            res.kind, res.detail = "truncated", repr(e)
        else:
            res.kind, res.detail = "bad", "%d cut short: %r" % (r.status, e)
        return res, False
    except socket.timeout:
        res.kind, res.length = "bad", got[0]
        res.detail = "client left hanging mid-body for %.0fs" % c.timeout
        return res, False
    except (Bad, ValueError, AssertionError) as e:
        res.kind, res.length, res.detail = "bad", got[0], "bad framing: %r" % e
        return res, False
    res.length, res.sha = got[0], h.hexdigest()
    if r.status in (502, 504):
        if r.header("X-Sluice-Error"):
            res.kind = "gateway"
            if res.keep_alive:
                res.kind, res.detail = "bad", "a %d kept the connection open" % r.status
            return res, res.keep_alive
        res.kind, res.detail = "bad", "a %d that sluice did not make" % r.status
        return res, False
    res.kind = "ok" if r.status == 200 else "bad"
    return res, res.keep_alive


def run_load(port, target_of, seconds=LOAD_SECONDS, threads=THREADS, on_body=None):
    """`threads` keep-alive clients for `seconds`; a new connection after any error."""
    results, errors = [], []
    lock = threading.Lock()
    end = time.monotonic() + seconds

    def client(tid):
        c, i = None, 0
        try:
            while time.monotonic() < end:
                i += 1
                rid = "t%d-%d" % (tid, i)
                if c is None:
                    c = Conn(port, timeout=10)
                res, usable = one_request(c, rid, target_of(rid, i), on_body)
                with lock:
                    results.append(res)
                if not usable:
                    c.close()
                    c = None
        except Exception as e:  # a failure of the test client itself
            errors.append(repr(e))
        finally:
            if c is not None:
                c.close()

    ts = [threading.Thread(target=client, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(seconds + 40 * SLOW)
    assert not any(t.is_alive() for t in ts), "client threads hung"
    assert not errors, errors[:3]
    return results


def good_target(rid, i):
    # both framings from the healthy backend: chunked (no cl) and Content-Length
    return "/bytes?n=%d&id=%s%s" % (N_GOOD, rid, "&cl=1" if i % 2 else "")


def check_outcomes(results, good, faulty_ok, faulty_allowed, must_see, faulty_len=None):
    """good: the healthy gunicorn Backend. faulty_ok(res) says whether a complete 200 from
    the faulty backend is correct. faulty_allowed: outcome kinds allowed for it; must_see:
    kinds that must occur at least once (the fault was exercised)."""
    bad = [r for r in results if r.kind == "bad"]
    assert not bad, "%d of %d requests ended wrongly, e.g. %r" % (len(bad), len(results),
                                                                    bad[:5])
    logged = set()
    for line in good.log_lines():
        m = re.search(r"[?&]id=([\w-]+)", line)
        if m:
            logged.add(m.group(1))
    by_rid = {r.rid: r for r in results}
    good_reqs = [by_rid[rid] for rid in logged if rid in by_rid]
    assert len(good_reqs) >= 5, "the healthy backend got %d requests" % len(good_reqs)
    wrong = [r for r in good_reqs if not (r.kind == "ok" and r.backend == good.name and
                                          r.length == N_GOOD and r.sha == pattern_sha(N_GOOD))]
    assert not wrong, "requests to the healthy backend %s were affected: %r" % (good.name,
                                                                                 wrong[:5])
    faulty = [r for r in results if r.rid not in logged]
    kinds = {}
    for r in faulty:
        kinds[r.kind] = kinds.get(r.kind, 0) + 1
        if r.kind == "ok":
            assert faulty_ok(r), "a complete-looking 200 that is not the faulty backend's " \
                "full body (silent truncation?): %r" % r
        if r.kind == "gateway":
            assert r.status in (502, 504), r
    assert set(kinds) <= set(faulty_allowed), "outcomes %r, allowed %r; e.g. %r" % (
        kinds, faulty_allowed, [r for r in faulty if r.kind not in faulty_allowed][:5])
    for k in must_see:
        assert kinds.get(k), "the fault never produced %r: outcomes %r" % (k, kinds)
    return kinds


def settle_and_check(s, baseline, stop_faulty):
    """After the load: stop the faulty backend (connects to it are then refused and retried
    on the other), sluice answers, and its fd count returns to the baseline."""
    stop_faulty()
    for i in range(10):
        r = request(s.port, "GET", "/bytes?n=1000&after=%d" % i)
        assert r.status == 200 and len(r.body) == 1000, r
    assert s.proc.poll() is None, "sluice died:\n%s" % s.diagnostics()
    wait_for(lambda: fd_count(s.pid) <= baseline, 8 * SLOW,
             msg="sluice's fd count back to its baseline %d (now %d)" % (baseline,
                                                                         fd_count(s.pid)))


def start_pair(backend_factory, sluice_factory, faulty_address, faulty_opts=None, proxy=None,
               faulty_slots=4):
    """A healthy gthread Gunicorn 'good' and a faulty backend 'faulty' behind one sluice;
    passive health off for both (max_fails 0), so the fault keeps being exercised."""
    good = backend_factory("good", workers=2, worker_class="gthread", threads=4)
    opts = {"max_fails": "0"}
    opts.update(faulty_opts or {})
    s = sluice_factory([good, ("faulty", faulty_address, faulty_slots)], proxy=proxy,
                       backend_opts={"good": {"max_fails": "0"}, "faulty": opts})
    time.sleep(0.2)
    return good, s, fd_count(s.pid)


# ---------------------------------------------------------------- raw faulty backends

FULL = 200000


def reset(c):
    """Close with SO_LINGER 0: the peer gets a RST, not a FIN."""
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()


def cl_half_then_close(c, head, rest, be):
    c.sendall(b"HTTP/1.1 200 OK\r\nX-Backend: faulty\r\nContent-Length: %d\r\n\r\n" % FULL +
              b"f" * (FULL // 2))


def chunked_half_then_close(c, head, rest, be):
    c.sendall(b"HTTP/1.1 200 OK\r\nX-Backend: faulty\r\nTransfer-Encoding: chunked\r\n\r\n" +
              (b"4000\r\n" + b"f" * 0x4000 + b"\r\n") * 6)


def rst_before_head(c, head, rest, be):
    reset(c)


def rst_after_head_cl(c, head, rest, be):
    c.sendall(b"HTTP/1.1 200 OK\r\nX-Backend: faulty\r\nContent-Length: %d\r\n\r\n" % FULL +
              b"f" * 5000)
    time.sleep(0.05)
    reset(c)


def rst_after_head_close_delimited(c, head, rest, be):
    """HTTP/1.1 200 without Content-Length or chunked: the body ends at the close. A RST is
    not a close: the body is incomplete, and must not be passed on as complete."""
    c.sendall(b"HTTP/1.1 200 OK\r\nX-Backend: faulty\r\nConnection: close\r\n\r\n" +
              b"f" * 5000)
    time.sleep(0.05)
    reset(c)


def hang_after_head(c, head, rest, be):
    c.sendall(b"HTTP/1.1 200 OK\r\nX-Backend: faulty\r\nContent-Length: %d\r\n\r\n" % FULL +
              b"f" * 1000)
    c.settimeout(10)
    try:
        while c.recv(65536):   # until sluice gives up and closes
            pass
    except OSError:
        pass


GARBAGE = [
    b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)) + b"\r\n\r\n",
    b"HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nNo colon here\r\n\r\n",
    b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n folded\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length: -2\r\n\r\nok",
    b"<html>500 Internal Server Error</html>",
    b"HTTP/9.9 200 OK\r\n\r\n",
]


def garbage(c, head, rest, be):
    with be._lock:
        be.n = getattr(be, "n", 0) + 1
        n = be.n
    c.sendall(GARBAGE[n % len(GARBAGE)])
    time.sleep(0.05)


def _with_lock(be):
    be._lock = threading.Lock()
    return be


def full_body(r):
    return r.length == FULL and r.sha == hashlib.sha256(b"f" * FULL).hexdigest()


RAW_CASES = [
    # (id, handler, faulty backend opts, allowed faulty outcomes, must see, counter)
    ("content_length_longer_than_body_then_close", cl_half_then_close, {},
     {"truncated"}, {"truncated"}, "upstream_truncated"),
    ("chunked_body_cut_then_close", chunked_half_then_close, {},
     {"truncated"}, {"truncated"}, "upstream_truncated"),
    ("reset_before_response_head", rst_before_head, {},
     {"gateway"}, {"gateway"}, "err_502"),
    ("reset_after_head_content_length", rst_after_head_cl, {},
     {"truncated", "gateway"}, {"truncated"}, "upstream_truncated"),
    ("reset_after_head_close_delimited_body", rst_after_head_close_delimited, {},
     {"truncated", "gateway"}, {"truncated"}, "upstream_truncated"),
    ("hangs_after_head_read_timeout", hang_after_head, {"read_timeout": "1s"},
     {"truncated"}, {"truncated"}, "upstream_truncated"),
    ("garbage_instead_of_status_line", garbage, {},
     {"gateway"}, {"gateway"}, "err_502"),
]


@pytest.mark.parametrize("handler,opts,allowed,must,counter",
                         [c[1:] for c in RAW_CASES], ids=[c[0] for c in RAW_CASES])
def test_faulty_raw_backend_under_load(backend_factory, raw_backend_factory, sluice_factory,
                                       handler, opts, allowed, must, counter):
    be = _with_lock(raw_backend_factory(handler))
    good, s, baseline = start_pair(backend_factory, sluice_factory, be.address,
                                   faulty_opts=opts)
    results = run_load(s.port, good_target)
    kinds = check_outcomes(results, good, full_body, allowed, must)
    if "gateway" in must:
        gw = [r for r in results if r.kind == "gateway"]
        assert all(r.status == 502 for r in gw), gw[:5]
    if handler is hang_after_head:
        cut = [r for r in results if r.kind == "truncated"]
        assert all(r.length <= 1000 for r in cut), cut[:5]
    assert len(be.heads) >= sum(kinds.values()), (len(be.heads), kinds)
    settle_and_check(s, baseline, be.stop)
    assert s.stop() == 0, s.diagnostics()
    totals = exit_totals(s)
    assert totals[counter] >= kinds.get("truncated" if counter == "upstream_truncated"
                                        else "gateway", 0), (counter, totals, kinds)


# ---------------------------------------------------------------- SIGKILL mid-response

N_KILL = 64 << 20


def test_backend_worker_sigkilled_mid_response_under_load(backend_factory, sluice_factory):
    """Both backends serve /bytes (64 MiB, chunked or Content-Length). Whenever a client has
    read 1 MiB of a response from the 'bad' Gunicorn (and none was killed in the last
    0.3s), every worker of 'bad' is SIGKILLed: that response is certainly cut mid-body
    (it is far larger than the socket buffers), others of 'bad' may be cut before their
    head. Gunicorn's master starts new workers. The clients of 'bad' see a truncated body
    or a 502; 'good' is unaffected."""
    good = backend_factory("good", workers=2, worker_class="gthread", threads=4)
    bad = backend_factory("bad", workers=2, worker_class="sync")
    s = sluice_factory([good, bad], backend_opts={"good": {"max_fails": "0"},
                                                  "bad": {"max_fails": "0"}})
    time.sleep(0.2)
    baseline = fd_count(s.pid)
    lock = threading.Lock()
    kills = {"last": 0.0, "n": 0, "victims": set()}

    def on_body(res, got):
        if res.backend != "bad" or got < (1 << 20) or res.rid in kills["victims"]:
            return
        with lock:
            if time.monotonic() - kills["last"] < 0.3:
                return
            kills["last"] = time.monotonic()
            kills["n"] += 1
            kills["victims"].add(res.rid)
            pids = child_pids(bad.pid)
            bad.known_workers.update(pids)
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def target(rid, i):
        return "/bytes?n=%d&id=%s%s" % (N_KILL, rid, "&cl=1" if i % 2 else "")

    results = run_load(s.port, target, seconds=4, on_body=on_body)
    bad_cut = [r for r in results if r.kind == "bad"]
    assert not bad_cut, bad_cut[:5]
    assert kills["n"] >= 2, "only %d kills happened" % kills["n"]
    victims = [r for r in results if r.rid in kills["victims"]]
    # a victim's worker may have written all of it into the socket buffers before it died
    # (then it is complete and verified below); at least one must have been cut mid-body
    cut = [r for r in victims if r.kind == "truncated"]
    assert cut and all(r.length < N_KILL for r in cut), \
        "no response whose Gunicorn worker was SIGKILLed mid-body ended as an error: %r" \
        % victims[:5]
    logged_good = set(m.group(1) for m in (re.search(r"[?&]id=([\w-]+)", l)
                                           for l in good.log_lines()) if m)
    good_reqs = [r for r in results if r.rid in logged_good]
    assert len(good_reqs) >= 2  # the healthy backend kept serving (64 MiB each, loaded machine)
    wrong = [r for r in good_reqs if not (r.kind == "ok" and r.backend == "good" and
                                          r.length == N_KILL and r.sha == pattern_sha(N_KILL))]
    assert not wrong, "requests to the healthy backend were affected: %r" % wrong[:5]
    for r in results:
        if r.kind == "ok":
            assert r.length == N_KILL and r.sha == pattern_sha(N_KILL), r
        elif r.kind == "gateway":
            assert r.status == 502 and r.rid not in logged_good, r
    settle_and_check(s, baseline, bad.kill)
    assert s.stop() == 0, s.diagnostics()
    assert exit_totals(s)["upstream_truncated"] >= len(victims)


# ---------------------------------------------------------------- access log on a full disk

@pytest.fixture
def full_disk_proxy(backend_factory, sluice_factory):
    assert os.path.exists("/dev/full")
    a = backend_factory("good", workers=2, worker_class="gthread", threads=4)
    b = backend_factory("good2", workers=2, worker_class="gthread", threads=4)
    s = sluice_factory([a, b], proxy={"access_log": "/dev/full"})
    time.sleep(0.2)
    return s, a, b, fd_count(s.pid)


def test_access_log_on_a_full_disk_requests_still_succeed_without_spinning(full_disk_proxy):
    """access_log = /dev/full: every write(2) fails with ENOSPC. Requests are answered
    completely; sluice does not crash, does not spin (CPU while idle afterwards), keeps no
    extra descriptors."""
    s, a, b, baseline = full_disk_proxy
    results = run_load(s.port, good_target)
    assert len(results) >= 20
    wrong = [r for r in results if not (r.kind == "ok" and r.length == N_GOOD and
                                         r.sha == pattern_sha(N_GOOD))]
    assert not wrong, wrong[:5]
    assert {r.backend for r in results} == {"good", "good2"}
    wait_for(lambda: fd_count(s.pid) <= baseline, 8 * SLOW, msg="fd count back to baseline")
    cpu0, t0 = cpu_seconds(s.pid), time.monotonic()
    time.sleep(1.0)
    cpu = (cpu_seconds(s.pid) - cpu0) / (time.monotonic() - t0)
    assert cpu < 0.05, "sluice used %.0f%% CPU while idle with a failing access log" % (cpu * 100)
    assert s.proc.poll() is None
    assert s.stop() == 0, s.diagnostics()
    assert exit_totals(s)["responses"] >= len(results)


def test_access_log_write_failures_are_reported_in_the_error_log(full_disk_proxy):
    """An operator must learn that access logging is failing (NGINX logs
    `write() to "/var/log/nginx/access.log" failed (28: No space left on device)`): at
    least one warn/error line naming the access log and the error, and not one per request
    (the error log may be on the same full disk)."""
    s, a, b, baseline = full_disk_proxy
    n = 0
    for i in range(30):
        r = request(s.port, "GET", "/?i=%d" % i)
        assert r.status == 200, r
        n += 1
    assert s.stop() == 0, s.diagnostics()
    lines = [l for l in s.errors().splitlines()
             if re.search(r" (warn|error) ", l) and re.search(r"access", l, re.I)]
    assert lines, "nothing in the error log about %d failed access log writes (ENOSPC):\n%s" % (
        n, s.errors()[-1500:])
    assert any(re.search(r"No space left on device|ENOSPC|errno=28", l) for l in lines), lines
    assert len(lines) < n, "one error line per failed access log write: %d" % len(lines)
