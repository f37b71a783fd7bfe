"""HTTP/2 to clients (issue 15): over TLS by ALPN (h2, with http/1.1 fallback) and h2c with
prior knowledge on plain listeners ([proxy] h2c); each stream a request through the same
admission as HTTP/1.1, to HTTP/1.1 Gunicorn backends; refusals per stream; flow control;
the abuse defences; GOAWAY on stop. Independent clients: curl --http2, nghttp
(nghttp2-client), python3-h2 driving frames directly, and headless Chromium."""
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

import helpers
from h2client import (CONTINUATION, END_HEADERS, END_STREAM, H2, HEADERS, PING, PREFACE,
                      RST_STREAM, SETTINGS, frame)
from helpers import SLOW, wait_for, wait_port
from test_tls import make_cert, start_tls_sluice

NGHTTP = shutil.which("nghttp") or "/usr/bin/nghttp"


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    return make_cert(str(tmp_path_factory.mktemp("h2certs")), "alpha.test", "ec", ["alpha.test"])


class Site:
    def __init__(self, s, b, tls_port):
        self.s, self.b, self.port, self.tls_port = s, b, s.port, tls_port


def start_site(factory, backends, cert, proxy=None, extra=None):
    p = {"h2c": "yes"}
    p.update(proxy or {})
    return start_tls_sluice(factory, backends, [cert], proxy=p, extra=extra)


@pytest.fixture(scope="module")
def site(module_backend_factory, module_sluice_factory, cert):
    a = module_backend_factory("h2-a", workers=1, worker_class="gthread", threads=40)
    admin = helpers.free_port()
    s, tls_port = start_site(module_sluice_factory, [a], cert,
                             proxy={"send_timeout": "3s", "keepalive_timeout": "3s",
                                    "client_header_timeout": "3s"},
                             extra="[admin]\nlisten = 127.0.0.1:%d\n" % admin)
    site = Site(s, a, tls_port)
    site.admin = admin
    wait_port(admin, 15 * SLOW, s.proc, "sluice admin listener")
    return site


def curl(*args):
    argv = [helpers.CURL, "-sk", "--max-time", str(int(20 * SLOW))] + list(args)
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=40 * SLOW)


def tls_url(site, path):
    return ["--resolve", "alpha.test:%d:127.0.0.1" % site.tls_port,
            "https://alpha.test:%d%s" % (site.tls_port, path)]


def admin_doc(site):
    return helpers.status_json(site.admin)


def backend_inflight(site):
    return admin_doc(site)["backends"][0]["inflight"]


def total(site, name):
    return admin_doc(site)["totals"][name]


# ---------------------------------------------------------------- protocols

def test_curl_speaks_http2_over_tls_by_alpn(site):
    p = curl("--http2", "-w", "\n%{http_version}", *tls_url(site, "/echo?x=1"))
    assert p.returncode == 0, p.stderr.decode()
    body, version = p.stdout.rsplit(b"\n", 1)
    assert version == b"2"
    j = json.loads(body)
    assert j["headers"]["x-forwarded-proto"] == "https"
    assert j["headers"]["host"] == "alpha.test:%d" % site.tls_port  # from :authority
    assert j["query"] == "x=1" and j["version"] == "HTTP/1.1"  # HTTP/1.1 to the backend
    line = site.s.wait_access_lines(1)[-1]
    assert [l for l in site.s.access_lines() if "/echo?x=1" in l][-1].split()[-1] == "HTTP/2", line


def test_response_fields_reach_the_client_lowercased_and_repeated(site):
    """Superset's login sets several cookies: every Set-Cookie arrives, as its own field."""
    with H2(site.tls_port, tls=True) as c:
        sid = c.get("/cookie")
        assert c.wait([sid])
        hs = c.responses[sid]["headers"]
        assert [v for k, v in hs if k == "set-cookie"] == ["a=1; Path=/", "b=2; Path=/; HttpOnly"]
        assert ("x-app-name", "h2-a") in hs and all(k == k.lower() for k, _ in hs)
        assert c.header(sid, "x-request-id") and c.responses[sid]["body"] == b"cookies\n"


def test_a_client_without_h2_gets_http11_on_the_same_listener(site):
    p = curl("--http1.1", "-w", "\n%{http_version}", *tls_url(site, "/"))
    assert p.returncode == 0 and p.stdout == b"hello from h2-a\n\n1.1", p


def test_h2c_with_prior_knowledge_on_a_plain_listener(site):
    p = curl("--http2-prior-knowledge", "-w", "\n%{http_version}",
             "http://127.0.0.1:%d/" % site.port)
    assert p.returncode == 0 and p.stdout == b"hello from h2-a\n\n2", p
    # and HTTP/1.1 on the same listener as before
    r = helpers.request(site.port, "GET", "/", {"Host": "x"})
    assert r.status == 200 and r.body == b"hello from h2-a\n"


def test_h2c_is_off_unless_configured(backend_factory, sluice_factory):
    s = sluice_factory([backend_factory("plain")])
    p = curl("--http2-prior-knowledge", "-w", "%{http_code}", "http://127.0.0.1:%d/" % s.port)
    assert b"hello" not in p.stdout, p
    assert helpers.request(s.port, "GET", "/", {"Host": "x"}).status == 200


def test_nghttp_fetches_many_streams_on_one_connection(site):
    urls = ["http://127.0.0.1:%d/echo?n=%d" % (site.port, i) for i in range(20)]
    p = subprocess.run([NGHTTP, "-n", "-s"] + urls, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=40 * SLOW)
    assert p.returncode == 0, p.stderr.decode()
    # -s prints one line per stream with its status; all 20 on one connection
    rows = [l for l in p.stdout.decode().splitlines() if "/echo?n=" in l]
    assert len(rows) == 20 and all(" 200 " in r for r in rows), p.stdout.decode()


def test_streams_run_in_parallel_on_one_connection(site):
    """30 streams of 1 s each on one connection are at the backend together."""
    helpers.request(site.port, "GET", "/peak?reset=1", {"Host": "x"})
    urls = ["https://127.0.0.1:%d/concurrent?ms=1000&i=%d" % (site.tls_port, i)
            for i in range(30)]
    p = subprocess.run([NGHTTP, "-n", "-s"] + urls, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=40 * SLOW)
    assert p.returncode == 0, p.stderr.decode()
    rows = [l for l in p.stdout.decode().splitlines() if "/concurrent?ms=1000" in l]
    assert len(rows) == 30 and all(" 200 " in r for r in rows), p.stdout.decode()
    peak = int(helpers.request(site.port, "GET", "/peak", {"Host": "x"}).body)
    assert peak >= 30, peak


def test_chromium_loads_30_charts_in_one_wave_over_http2(site):
    """A dashboard of 30 charts: over HTTP/1.1 a browser keeps 6 requests in flight per
    origin; over HTTP/2 (ALPN) the backend sees all 30 at once."""
    from test_status_page import chromium
    helpers.request(site.port, "GET", "/peak?reset=1", {"Host": "x"})
    page = chromium("https://alpha.test:%d/fetches?n=30&ms=1500" % site.tls_port,
                    budget_ms=30000, timeout=90,
                    extra_args=["--ignore-certificate-errors",
                                "--host-resolver-rules=MAP alpha.test 127.0.0.1"])
    out = page.text(page.element("p", "out")).split()
    assert out[:2] == ["done", "30"], (out, page.console)
    peak = int(helpers.request(site.port, "GET", "/peak", {"Host": "x"}).body)
    assert peak >= 30, peak  # all 30 at the backend at once
    # the 30 fetches came over HTTP/2: sluice's access log says so (the page's Resource
    # Timing is only shown: its nextHopProtocol was seen empty in a run beside other tests)
    lines = [l for l in site.s.access_lines() if "/concurrent?ms=1500&i=" in l]
    assert len(lines) >= 30 and all(l.split()[-1] == "HTTP/2" for l in lines), lines[:3]


# ---------------------------------------------------------------- bodies and flow control

def test_request_bodies_stream_up_with_and_without_a_length(site):
    body = os.urandom(700 * 1024)
    with H2(site.tls_port, tls=True) as c:
        a = c.headers("/upload", "POST", [("content-length", str(len(body)))], end_stream=False)
        b = c.headers("/upload", "POST", end_stream=False)  # no length: chunked upstream
        for i in range(0, len(body), 16384):  # within the windows sluice gives back
            for sid in (a, b):
                c.data(sid, body[i:i + 16384])
                c.pump(lambda: c.conn.local_flow_control_window(sid) > 16384 and
                       c.conn.outbound_flow_control_window > 16384, timeout=10 * SLOW)
        c.data(a, b"", end_stream=True)
        c.data(b, b"", end_stream=True)
        assert c.wait([a, b], 20 * SLOW)
        for sid in (a, b):
            assert c.responses[sid]["status"] == 200, c.responses[sid]
            j = json.loads(c.responses[sid]["body"])
            assert j["length"] == len(body) and j["sha256"] == hashlib.sha256(body).hexdigest()


def test_a_large_response_follows_the_clients_window(site):
    n = 3 * 1024 * 1024
    with H2(site.tls_port, tls=True) as c:
        sid = c.get("/bytes?n=%d&cl=1" % n)
        assert c.wait([sid], 30 * SLOW)
        r = c.responses[sid]
        assert r["status"] == 200 and len(r["body"]) == n
        assert c.header(sid, "content-length") == str(n)


def test_a_client_that_never_reads_is_closed_and_its_slot_freed(site):
    """Window exhaustion: the client's windows stay at 0; after send_timeout (3 s here) the
    connection is closed and the backend slot is back."""
    with H2(site.tls_port, tls=True, settings={4: 0}) as c:  # INITIAL_WINDOW_SIZE 0
        sid = c.get("/bytes?n=%d" % (4 * 1024 * 1024))
        c.pump(lambda: c.responses[sid]["status"] is not None, timeout=10 * SLOW)
        assert c.responses[sid]["status"] == 200
        assert c.wait_closed(15 * SLOW), "sluice kept a connection that takes nothing"
    assert wait_for(lambda: backend_inflight(site) == 0, 10 * SLOW)
    p = curl("--http2", *tls_url(site, "/"))
    assert p.stdout == b"hello from h2-a\n"


# ---------------------------------------------------------------- validation

@pytest.mark.parametrize("extra,what", [
    ([("Connection", "keep-alive")], "a connection-specific field"),
    ([("transfer-encoding", "chunked")], "transfer-encoding"),
    ([("X-Upper", "1")], "an uppercase name"),
    ([("x-bad", "a\r\nx-injected: 1")], "CR LF in a value"),
    ([(":foo", "1")], "an unknown pseudo-header"),
])
def test_malformed_requests_never_reach_the_backend(site, extra, what):
    with H2(site.tls_port, tls=True) as c:
        sid = c.get("/echo?bad=%d" % abs(hash(what)), extra=extra)
        c.pump(lambda: c.responses[sid]["ended"], timeout=10 * SLOW)
        r = c.responses[sid]
        assert r["reset"] is not None or (r["status"] or 0) >= 400, (what, r)
        ok = c.get("/")  # the connection serves on
        assert c.wait([ok]) and c.responses[ok]["status"] == 200, what
    assert not any("bad=%d" % abs(hash(what)) in l for l in site.s.access_lines()
                   if " 200 " in l), what


def test_content_length_must_match_the_data(site):
    with H2(site.tls_port, tls=True) as c:
        sid = c.headers("/echo?cl=short", "POST", [("content-length", "10")], end_stream=False)
        c.data(sid, b"12345", end_stream=True)
        c.pump(lambda: c.responses[sid]["ended"], timeout=10 * SLOW)
        r = c.responses[sid]
        assert r["reset"] is not None or r["status"] == 400, r
        assert r["status"] != 200


def test_an_oversized_header_list_gets_431_and_the_connection_goes_on(site):
    with H2(site.tls_port, tls=True) as c:
        sid = c.get("/echo", extra=[("x-big", "a" * 20000)])
        ok = c.get("/")
        assert c.wait([sid, ok], 10 * SLOW)
        assert c.responses[sid]["status"] == 431, c.responses[sid]
        assert c.responses[ok]["status"] == 200


def test_an_hpack_bomb_is_counted_decoded(site):
    """One 4 KB field, then referenced from the dynamic table 100 times: a few hundred bytes
    on the wire, 400 KB decoded: refused by its decoded size."""
    import hpack
    assert len(hpack.Encoder().encode([("x-bomb", "b" * 4000)] * 100)) < 5000  # a bomb
    with H2(site.tls_port, tls=True) as c:
        sid = c.get("/echo", extra=[("x-bomb", "b" * 4000)] * 100)
        ok = c.get("/")
        assert c.wait([sid, ok], 10 * SLOW)
        r = c.responses[sid]
        assert r["status"] == 431, r
        assert c.responses[ok]["status"] == 200


# ---------------------------------------------------------------- floods

def test_rapid_reset_is_cut_off(site):
    """CVE-2023-44487: streams opened and reset at once, thousands: after nghttp2's burst
    (1000 resets) the connection gets GOAWAY and is closed."""
    before = total(site, "h2_protocol_errors")
    with H2(site.port) as c:
        for i in range(3000):
            sid = c.conn.get_next_available_stream_id()
            c.conn.send_headers(sid, [(":method", "GET"), (":scheme", "http"),
                                      (":authority", "x"), (":path", "/slow?ms=50")])
            c.conn.reset_stream(sid)
            if i % 100 == 0:
                try:
                    c.flush()
                except OSError:
                    break
        try:
            c.flush()
        except OSError:
            pass
        assert c.wait_closed(15 * SLOW)
        assert c.goaway is not None, "closed without GOAWAY"
        # cut at the burst: stream ids are odd, 1000 resets are ids up to ~2000
        assert c.goaway.last_stream_id < 2 * 1100, c.goaway
    assert wait_for(lambda: total(site, "h2_protocol_errors") > before, 5 * SLOW)
    assert wait_for(lambda: backend_inflight(site) == 0, 10 * SLOW)
    assert curl("--http2-prior-knowledge", "http://127.0.0.1:%d/" % site.port).stdout == \
        b"hello from h2-a\n"


def test_continuation_flood_is_cut_off(site):
    """CVE-2024-28182: a HEADERS frame followed by endless CONTINUATION frames: the
    connection is closed after a few (nghttp2's limit: 8), long before the head's size or
    time limits."""
    import hpack
    enc = hpack.Encoder()
    block = enc.encode([(":method", "GET"), (":scheme", "http"), (":authority", "x"),
                        (":path", "/")])
    sock = raw_h2(site.port)
    try:
        sock.sendall(frame(HEADERS, 0, 1, block))
        try:
            for i in range(2000):
                sock.sendall(frame(CONTINUATION, 0, 1, enc.encode([("x-c", "1")])))
        except OSError:
            pass
        took = closed_within(sock, 10 * SLOW)
        assert took is not None and took < 2.5, took
    finally:
        sock.close()


@pytest.mark.parametrize("kind", ["ping", "settings"])
def test_a_flood_of_frames_to_acknowledge_from_a_client_that_does_not_read(site, kind):
    """Each PING and SETTINGS asks for an acknowledgement; a client that sends them and
    reads nothing is cut off once 1000 are queued (nghttp2's max_outbound_ack)."""
    before = total(site, "h2_protocol_errors")
    with H2(site.port) as c:
        f = frame(PING, 0, 0, b"12345678") if kind == "ping" else frame(SETTINGS, 0, 0, b"")
        sent = 0
        try:
            c.sock.settimeout(5 * SLOW)
            for i in range(200):
                c.send_raw(f * 500)
                sent += 500
        except OSError:
            pass
        assert c.wait_closed(15 * SLOW), "sluice still reads a flood after %d frames" % sent
    assert wait_for(lambda: total(site, "h2_protocol_errors") > before, 5 * SLOW)


def raw_h2(port):
    """A plain socket that has sent the client preface and an empty SETTINGS, and will send
    nothing else unless told (no SETTINGS ACK: a frame between a HEADERS without END_HEADERS
    and its CONTINUATION is itself a protocol error)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(PREFACE + frame(SETTINGS, 0, 0))
    return sock


def closed_within(sock, timeout):
    """Read and drop until the peer closes; the seconds it took, or None."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        sock.settimeout(max(0.05, timeout - (time.monotonic() - t0)))
        try:
            if not sock.recv(65536):
                return time.monotonic() - t0
        except socket.timeout:
            return None
        except OSError:
            return time.monotonic() - t0
    return None


def test_a_head_that_never_ends_times_out(site):
    """HEADERS without END_HEADERS and nothing after: closed after client_header_timeout
    (3 s here)."""
    import hpack
    block = hpack.Encoder().encode([(":method", "GET"), (":scheme", "http"),
                                    (":authority", "x"), (":path", "/")])
    sock = raw_h2(site.port)
    try:
        sock.sendall(frame(HEADERS, 0, 1, block))
        took = closed_within(sock, 15 * SLOW)
        assert took is not None and took >= 2.5, took
    finally:
        sock.close()


def test_an_idle_connection_is_closed_with_goaway(site):
    with H2(site.port) as c:
        sid = c.get("/")
        assert c.wait([sid])
        t0 = time.monotonic()
        assert c.wait_closed(15 * SLOW)
        assert c.goaway is not None and time.monotonic() - t0 >= 2.0


# ---------------------------------------------------------------- admission per stream

TENANTS = """
[tenants]
key = header:X-Tenant
[tenant acme]
rate = 0.01
burst = 3
"""


def test_refusals_are_per_stream(backend_factory, sluice_factory, cert):
    b = backend_factory("h2-t", workers=1, worker_class="gthread", threads=8)
    s, tls_port = start_site(sluice_factory, [b], cert, extra=TENANTS)
    with H2(tls_port, tls=True) as c:
        sids = [c.get("/", extra=[("x-tenant", "acme")]) for _ in range(6)]
        other = c.get("/", extra=[("x-tenant", "zeta")])
        assert c.wait(sids + [other], 15 * SLOW)
        statuses = sorted(c.responses[s_]["status"] for s_ in sids)
        assert statuses == [200, 200, 200, 429, 429, 429], statuses
        assert c.header(sids[-1], "retry-after") or any(
            c.header(x, "retry-after") for x in sids)
        assert c.responses[other]["status"] == 200
        assert not c.closed  # the connection goes on
        again = c.get("/", extra=[("x-tenant", "zeta")])
        assert c.wait([again]) and c.responses[again]["status"] == 200


def test_a_body_that_stops_coming_gets_408_and_frees_the_backend(backend_factory,
                                                                  sluice_factory, cert):
    """A slow upload must not hold a Gunicorn worker: with request_buffer 0 the body streams
    to the backend at once; when it stops for client_body_timeout (2 s here), 408."""
    b = backend_factory("h2-b", workers=1, worker_class="gthread", threads=2)
    s, tls_port = start_site(sluice_factory, [b], cert,
                             proxy={"client_body_timeout": "2s", "request_buffer": "0"})
    with H2(tls_port, tls=True) as c:
        sid = c.headers("/upload", "POST", [("content-length", "100000")], end_stream=False)
        c.data(sid, b"x" * 1000)
        t0 = time.monotonic()
        assert c.pump(lambda: c.responses[sid]["ended"], timeout=15 * SLOW)
        took = time.monotonic() - t0
        r = c.responses[sid]
        assert r["status"] == 408, r
        assert 1.5 <= took <= 8 * SLOW, took
        ok = c.get("/")  # the connection serves on
        assert c.wait([ok]) and c.responses[ok]["status"] == 200


def test_streams_wait_in_the_fair_queue_and_are_refused_per_stream(backend_factory,
                                                                   sluice_factory, cert):
    """One backend slot: of 6 streams on one connection, 1 runs, 3 wait in the queue
    ([queue] max = 3) and are served in turn, 2 get 503 queue-full at once."""
    b = backend_factory("h2-q", workers=1)
    s, tls_port = start_site(sluice_factory, [b], cert,
                             extra="[queue]\nmax = 3\ntimeout = 30s\ntarget = off\n")
    with H2(tls_port, tls=True) as c:
        sids = [c.get("/slow?ms=300&i=%d" % i) for i in range(6)]
        assert c.wait(sids, 20 * SLOW)
        st = [c.responses[x]["status"] for x in sids]
        assert sorted(st) == [200, 200, 200, 200, 503, 503], st
        refused = [x for x in sids if c.responses[x]["status"] == 503]
        assert all(c.header(x, "x-sluice-reject") == "queue-full" for x in refused)
        assert all(c.header(x, "retry-after") for x in refused)
        assert not c.closed


def test_max_concurrent_streams_is_configurable(backend_factory, sluice_factory, cert):
    s, tls_port = start_site(sluice_factory, [backend_factory("h2-m")], cert,
                             proxy={"http2_max_streams": "5"})
    with H2(tls_port, tls=True) as c:
        c.pump(lambda: c.conn.remote_settings.max_concurrent_streams == 5, timeout=5)
        assert c.conn.remote_settings.max_concurrent_streams == 5


def test_a_reload_keeps_the_connection_and_its_next_streams_use_the_new_config(
        backend_factory, sluice_factory, cert):
    """sluice reloads in place: an HTTP/2 connection (as an HTTP/1.1 keep-alive one) is not
    closed; its next streams run on the new generation; a bad config keeps the old one."""
    from test_reload import reload
    b = backend_factory("h2-r", workers=1, worker_class="gthread", threads=4)
    s, tls_port = start_site(sluice_factory, [b], cert)
    with H2(tls_port, tls=True) as c:
        first = c.get("/", extra=[("x-tenant", "acme")])
        assert c.wait([first]) and c.responses[first]["status"] == 200
        with open(s.config, "a") as f:
            f.write(TENANTS.replace("rate = 0.01\nburst = 3", "rate = 0.01\nburst = 1"))
        reload(s)
        sids = [c.get("/", extra=[("x-tenant", "acme")]) for _ in range(3)]
        assert c.wait(sids, 15 * SLOW)
        assert sorted(c.responses[x]["status"] for x in sids) == [200, 429, 429]
        with open(s.config, "a") as f:
            f.write("\n[proxy]\nnot_a_key = 1\n")
        reload(s, expect="fail")
        again = c.get("/")
        assert c.wait([again]) and c.responses[again]["status"] == 200
        assert not c.closed and c.goaway is None


# ---------------------------------------------------------------- stop

def test_stop_sends_goaway_and_finishes_the_streams_in_flight(backend_factory, sluice_factory,
                                                              cert):
    b = backend_factory("h2-s", workers=1, worker_class="gthread", threads=4)
    s, tls_port = start_site(sluice_factory, [b], cert)
    direct = int(b.address.rsplit(":", 1)[1])
    helpers.request(direct, "GET", "/peak?reset=1", {"Host": "x"})
    # nghttp, not python-h2: python-h2 takes a GOAWAY as the end of everything and drops
    # the frames of the streams that the GOAWAY lets finish
    p = subprocess.Popen([NGHTTP, "-v", "https://127.0.0.1:%d/concurrent?ms=1500" % tls_port],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert wait_for(lambda: helpers.request(direct, "GET", "/peak", {"Host": "x"}).body ==
                        b"1\n", 10 * SLOW)  # it is at the backend
        s.proc.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=20 * SLOW)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    out = out.decode()
    assert p.returncode == 0, out + err.decode()
    assert "recv GOAWAY frame" in out and "error_code=NO_ERROR" in out, out
    assert ":status: 200" in out, out
    assert out.index("recv GOAWAY frame") < out.index(":status: 200"), out
    assert s.wait_exit(20 * SLOW) == 0
