"""Route classes, bypass, caps and path_prefix tenant keys decide on one normalized path
(percent-decoded unreserved characters, merged slashes, resolved dot segments, whole-segment
prefixes), so that how a path is written cannot move a request out of its route; what is
forwarded is the target as the client sent it. Encoded slashes, NULs, malformed escapes,
".." above the root and fragments are refused with 400 and never reach a backend."""
import threading

import pytest

from helpers import SLOW, Conn, keepalive_loop, request

ROUTES = """
[tenants]
key = header:X-Tenant

[tenant default]
rate = 1
burst = 1

[tenant t]
weight = 1

[route sql]
prefix = /api/v1/sqllab
max_inflight = 1

[route health]
prefix = /health/
bypass = yes

; nine 300 ms requests of a route capped at 1 wait up to 2.4 s: past the auto interval (10 x
; tenant t's mean cost, which the fast /peak requests pull under 300 ms) its standing queue
; sheds the last one (test_fair_queue.py tests that); here only the cap is under test
[queue]
target = off
"""

# every way of writing a path under /api/v1/sqllab that a WSGI app reads as that path
SQL_FORMS = ["/api/v1/sqllab/run", "/api/v1/%73qllab/run", "/api/v1/sqll%61b/run",
             "//api/v1/sqllab/run", "///api/v1/sqllab/run", "/api/v1/./sqllab/run",
             "/api/x/../v1/sqllab/run", "/api/v1/sqllab/%2e/run", "/API/../api/v1/sqllab/run"]


@pytest.fixture(scope="module")
def routed(module_backend_factory, module_sluice_factory):
    a = module_backend_factory("a", workers=1, worker_class="gthread", threads=16)
    s = module_sluice_factory([a], backend_opts={"workers": "16"}, extra=ROUTES)
    return s, a


def test_every_spelling_of_a_capped_route_counts_against_its_cap(routed):
    s, _ = routed
    assert request(s.port, "GET", "/peak?reset=1", {"X-Tenant": "t"}).status == 200
    results = []

    def one(target):
        results.append(request(s.port, "GET", target + "?ms=300", {"X-Tenant": "t"},
                               timeout=30).status)

    ts = [threading.Thread(target=one, args=(f,)) for f in SQL_FORMS]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60 * SLOW)
    assert results == [200] * len(SQL_FORMS), results
    peak = request(s.port, "GET", "/peak", {"X-Tenant": "t"}).body.strip()
    assert peak == b"1", "%s requests of route sql (max_inflight = 1) ran at once" % peak


@pytest.mark.parametrize("target,bypassed", [
    ("/health", True), ("/health/", True), ("/health/deep", True), ("//health", True),
    ("/%68ealth", True), ("/healthX", False), ("/health/../x", False), ("/healthcheck", False),
])
def test_bypass_is_decided_on_whole_segments_of_the_normalized_path(routed, target, bypassed):
    s, _ = routed
    # tenant default may send one request a second: a bypassed request is never limited
    statuses = [request(s.port, "GET", target).status for _ in range(3)]
    if bypassed:
        assert 429 not in statuses, (target, statuses)
    else:
        assert 429 in statuses, (target, statuses)


@pytest.mark.parametrize("target,why", [
    ("/api/v1%2Fsqllab/run", "encoded slash"),
    ("/api/v1%2fsqllab/run", "encoded slash"),
    ("/x%00y", "malformed percent-escape"),
    ("/x%zz", "malformed percent-escape"),
    ("/x%4", "malformed percent-escape"),
    ("/..", "climbs above the root"),
    ("/a/../../etc/passwd", "climbs above the root"),
    ("/%2e%2e/etc/passwd", "climbs above the root"),
    ("/x#frag", None),
    ("/x?a=1#frag", None),
])
def test_bad_paths_are_refused_with_400_and_never_forwarded(routed, target, why):
    s, a = routed
    before = len(a.log_lines())
    r = request(s.port, "GET", target, {"X-Tenant": "t"})
    assert r.status == 400, (target, r)
    if why:
        assert why in r.body.decode(), r.body
    assert len(a.log_lines()) == before, "it reached the backend: %r" % a.log_lines()[before:]


def test_the_target_is_forwarded_as_the_client_wrote_it(raw_backend_factory, sluice_factory):
    seen = []

    def respond(c, head):
        seen.append(head.split(b"\r\n")[0])
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    raw_b = raw_backend_factory(lambda c, head, rest, b: keepalive_loop(c, head, rest, respond))
    s = sluice_factory([("a", raw_b.address, 2)],
                       extra=ROUTES.replace("rate = 1\nburst = 1", "rate = 1000\nburst = 1000"))
    cases = [
        ("GET /api/v1/%73qllab//run?x=%2F HTTP/1.1\r\nHost: h\r\n\r\n",
         b"GET /api/v1/%73qllab//run?x=%2F HTTP/1.1"),
        # RFC 9112 3.2.2 / 3.2.4: an absolute-form target with an empty path is sent as "/"
        # ("/?query" with a query), and as "*" for OPTIONS
        ("GET http://example.test HTTP/1.1\r\nHost: example.test\r\n\r\n", b"GET / HTTP/1.1"),
        ("GET http://example.test:1234?x=1 HTTP/1.1\r\nHost: example.test:1234\r\n\r\n",
         b"GET /?x=1 HTTP/1.1"),
        ("OPTIONS http://example.test HTTP/1.1\r\nHost: example.test\r\n\r\n",
         b"OPTIONS * HTTP/1.1"),
        ("OPTIONS http://example.test?x HTTP/1.1\r\nHost: example.test\r\n\r\n",
         b"OPTIONS /?x HTTP/1.1"),
    ]
    for req, line in cases:
        with Conn(s.port) as c:
            c.send(req)
            r = c.read_response("OPTIONS" if req.startswith("OPTIONS") else "GET")
            assert r.status == 200, (req, r)
        assert seen[-1] == line, (req, seen[-1])
    # the access log names the target as forwarded (lines from two threads, in any order)
    lines = s.wait_access_lines(len(cases))
    assert any(" GET /?x=1 " in l for l in lines), lines


def test_a_route_prefix_that_is_not_a_clean_path_is_refused_at_load(tmp_path):
    import subprocess
    from helpers import SLUICE_BIN
    conf = tmp_path / "bad.ini"
    conf.write_text("[proxy]\nlisten = 127.0.0.1:1\n\n[backend a]\naddress = 127.0.0.1:2\n\n"
                    "[route r]\nprefix = /a/%2Fb\n")
    p = subprocess.run([SLUICE_BIN, "-t", "-c", str(conf)], capture_output=True, text=True,
                       timeout=10)
    assert p.returncode != 0
    assert "bad.ini:7: [route r]" in p.stderr and "encoded slash" in p.stderr, p.stderr
