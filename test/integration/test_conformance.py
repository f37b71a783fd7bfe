"""Smaller RFC 9110/9112 points: Connection: close, absolute-form targets, HTTP/1.0 and
Expect, and backend responses with bad Content-Length framing."""
import time

import pytest

from helpers import SLOW, Conn, is_sluice_error, parse_status, raw, request


@pytest.fixture(scope="module")
def proxy(module_backend_factory, module_sluice_factory):
    a = module_backend_factory("a", workers=1, worker_class="gthread", threads=4)
    return module_sluice_factory([a]), a


def test_client_connection_close_is_honoured(proxy):
    s, _ = proxy
    with Conn(s.port) as c:
        c.request("GET", "/", {"Connection": "close"})
        r = c.read_response()
        assert r.status == 200
        closed, extra = c.wait_closed(3 * SLOW)
    assert closed and extra == b"", "connection not closed after Connection: close"


def test_http10_request_without_keepalive_is_closed_after_the_response(proxy):
    s, _ = proxy
    with Conn(s.port) as c:
        c.send(b"GET / HTTP/1.0\r\nHost: example.test\r\n\r\n")
        r = c.read_response()
        assert r.status == 200 and r.body == b"hello from a\n", r
        closed, extra = c.wait_closed(3 * SLOW)
    assert closed and extra == b""


def test_absolute_form_request_target_is_accepted(proxy):
    """RFC 9112 3.2.2: a server MUST accept the absolute-form."""
    s, _ = proxy
    with Conn(s.port) as c:
        c.send(b"GET http://example.test/echo?abs=1 HTTP/1.1\r\nHost: example.test\r\n\r\n")
        r = c.read_response()
    assert r.status == 200, r
    j = r.json()
    assert j["path"] == "/echo" and j["query"] == "abs=1", j


def test_expect_100_continue_in_http10_request_is_ignored(proxy):
    """RFC 9110 10.1.1: a server MUST ignore a 100-continue expectation in HTTP/1.0."""
    s, _ = proxy
    data = raw(s.port, b"POST /echo HTTP/1.0\r\nHost: example.test\r\nContent-Length: 5\r\n"
                       b"Expect: 100-continue\r\n\r\nhello", 5 * SLOW)
    assert parse_status(data) == 200, data[:300]
    assert b" 100 " not in data.split(b"\r\n", 1)[0]
    assert b'"body_length": 5' in data


def two_lengths_handler(c, head, rest, backend):
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc")
    time.sleep(0.3)


def test_backend_response_with_conflicting_content_lengths_gives_502(raw_backend_factory,
                                                                     sluice_factory):
    """RFC 9112 6.3 (5): a proxy receiving such a response MUST close the upstream
    connection, discard the response and send 502."""
    be = raw_backend_factory(two_lengths_handler)
    s = sluice_factory([("raw", be.address, 1)])
    r = request(s.port, "GET", "/")
    assert is_sluice_error(r, 502), r


def te_and_cl_handler(c, head, rest, backend):
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"2\r\nok\r\n0\r\n\r\n")
    time.sleep(0.3)


def test_backend_response_with_both_te_and_cl_is_not_forwarded_ambiguously(raw_backend_factory,
                                                                           sluice_factory):
    """RFC 9112 6.1/6.3: Transfer-Encoding overrides Content-Length; a proxy must not pass
    both on. Either a 502 or the chunked body "ok" without Content-Length is fine."""
    be = raw_backend_factory(te_and_cl_handler)
    s = sluice_factory([("raw", be.address, 1)])
    with Conn(s.port) as c:
        c.request("GET", "/")
        r = c.read_response()   # asserts that not both framing headers are present
    if r.status == 502:
        assert is_sluice_error(r, 502), r
    else:
        assert (r.status, r.body) == (200, b"ok"), r


def test_http10_request_without_host_reaches_backend_with_a_host(one_backend):
    """HTTP/1.0 may omit Host; sluice speaks HTTP/1.1 upstream, which requires one."""
    import json
    import socket
    s, b = one_backend
    c = socket.create_connection(("127.0.0.1", s.port), timeout=10)
    c.sendall(b"GET /echo HTTP/1.0\r\n\r\n")
    data = b""
    while True:
        chunk = c.recv(65536)
        if not chunk:
            break
        data += chunk
    c.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert json.loads(body)["headers"]["host"] == "127.0.0.1:%d" % s.port
