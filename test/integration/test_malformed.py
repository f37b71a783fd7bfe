"""Request smuggling and malformed requests (RFC 9112): each gets sluice's own error response,
the connection is closed, and the backend never sees the request. Limits: 413/414/431."""

import pytest

from helpers import SLOW, Conn, is_sluice_error, request

H = "Host: example.test\r\n"


# Appended to every bad request: if sluice ever resynchronised after the bad request, the
# backend would log this one.
SMUGGLED = "GET /smuggled HTTP/1.1\r\nHost: example.test\r\n\r\n"


BAD = [
    # (id, raw request, expected status or set of acceptable statuses)
    ("content_length_and_transfer_encoding",
     "POST /upload HTTP/1.1\r\n" + H + "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n"
     "\r\n0\r\n\r\n", 400),
    ("transfer_encoding_and_content_length",
     "POST /upload HTTP/1.1\r\n" + H + "Transfer-Encoding: chunked\r\nContent-Length: 6\r\n"
     "\r\n0\r\n\r\n", 400),
    ("differing_content_lengths",
     "POST /upload HTTP/1.1\r\n" + H + "Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
     400),
    ("content_length_list_differs",
     "POST /upload HTTP/1.1\r\n" + H + "Content-Length: 5, 6\r\n\r\nhello!", 400),
    ("content_length_not_a_number",
     "POST /upload HTTP/1.1\r\n" + H + "Content-Length: abc\r\n\r\n", 400),
    ("content_length_negative",
     "POST /upload HTTP/1.1\r\n" + H + "Content-Length: -1\r\n\r\n", 400),
    ("content_length_with_plus",
     "POST /upload HTTP/1.1\r\n" + H + "Content-Length: +5\r\n\r\nhello", 400),
    ("content_length_hex",
     "POST /upload HTTP/1.1\r\n" + H + "Content-Length: 0x5\r\n\r\nhello", 400),
    ("content_length_overflows",
     "POST /upload HTTP/1.1\r\n" + H + "Content-Length: 99999999999999999999999\r\n\r\n",
     {400, 413}),
    ("transfer_encoding_chunked_not_final",
     "POST /upload HTTP/1.1\r\n" + H + "Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", 400),
    ("transfer_encoding_without_chunked",
     "POST /upload HTTP/1.1\r\n" + H + "Transfer-Encoding: gzip\r\n\r\n", 400),
    ("transfer_encoding_split_over_two_fields_not_final",
     "POST /upload HTTP/1.1\r\n" + H + "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip"
     "\r\n\r\n0\r\n\r\n", 400),
    ("transfer_encoding_unsupported_coding",
     "POST /upload HTTP/1.1\r\n" + H + "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
    ("obs_fold",
     "GET / HTTP/1.1\r\n" + H + "X-Folded: a\r\n b\r\n\r\n", 400),
    ("obs_fold_with_tab",
     "GET / HTTP/1.1\r\n" + H + "X-Folded: a\r\n\tb\r\n\r\n", 400),
    ("space_in_header_name",
     "GET / HTTP/1.1\r\n" + H + "Bad Name: x\r\n\r\n", 400),
    ("space_before_colon",
     "GET / HTTP/1.1\r\n" + H + "X-A : b\r\n\r\n", 400),
    ("bad_character_in_header_name",
     "GET / HTTP/1.1\r\n" + H + "X-A@b: c\r\n\r\n", 400),
    ("empty_header_name",
     "GET / HTTP/1.1\r\n" + H + ": value\r\n\r\n", 400),
    ("header_line_without_colon",
     "GET / HTTP/1.1\r\n" + H + "NoColonHere\r\n\r\n", 400),
    ("nul_in_header_value",
     "GET / HTTP/1.1\r\n" + H + "X-A: a\x00b\r\n\r\n", 400),
    ("cr_in_header_value",
     "GET / HTTP/1.1\r\n" + H + "X-A: a\rb\r\n\r\n", 400),
    ("bare_lf_between_headers",
     "GET / HTTP/1.1\r\n" + H.replace("\r\n", "\n") + "X-A: b\r\n\r\n", 400),
    ("bare_lf_everywhere",
     "GET / HTTP/1.1\nHost: example.test\n\n", 400),
    ("missing_host_in_http11",
     "GET / HTTP/1.1\r\nX-A: b\r\n\r\n", 400),
    ("two_host_headers",
     "GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n", 400),
    ("double_space_in_request_line",
     "GET  / HTTP/1.1\r\n" + H + "\r\n", 400),
    ("space_in_target",
     "GET /a b HTTP/1.1\r\n" + H + "\r\n", 400),
    ("bad_version",
     "GET / HTTP/1.x\r\n" + H + "\r\n", 400),
    ("lowercase_protocol_name",
     "GET / http/1.1\r\n" + H + "\r\n", 400),
    ("request_line_too_long",
     "GET /" + "a" * 9000 + " HTTP/1.1\r\n" + H + "\r\n", 414),
    ("head_too_large",
     "GET / HTTP/1.1\r\n" + H + "".join("X-Big-%d: %s\r\n" % (i, "v" * 1000) for i in range(20))
     + "\r\n", 431),
    ("too_many_headers",
     "GET / HTTP/1.1\r\n" + H + "".join("X-H%d: v\r\n" % i for i in range(150)) + "\r\n", 431),
    ("bad_chunk_size",
     "POST /upload HTTP/1.1\r\n" + H + "Transfer-Encoding: chunked\r\n\r\n"
     "zz\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk_size_overflows",
     "POST /upload HTTP/1.1\r\n" + H + "Transfer-Encoding: chunked\r\n\r\n"
     "fffffffffffffffffffff\r\nhello\r\n0\r\n\r\n", 400),
    ("negative_chunk_size",
     "POST /upload HTTP/1.1\r\n" + H + "Transfer-Encoding: chunked\r\n\r\n"
     "-5\r\nhello\r\n0\r\n\r\n", 400),
]


@pytest.fixture(scope="module")
def proxy(module_backend_factory, module_sluice_factory):
    a = module_backend_factory("a", workers=1, worker_class="gthread", threads=4)
    s = module_sluice_factory([a], proxy={"max_header_size": "16k", "max_line_size": "8k",
                                          "max_headers": "100", "max_body_size": "100k"})
    return s, a


def assert_backend_saw_nothing(s, a, tag, before):
    """Send a sentinel request after the bad one; once the backend logged the sentinel,
    it must be the only line the backend logged since `before`."""
    r = request(s.port, "GET", "/health?sentinel=%s" % tag)
    assert r.status == 200, r
    a.wait_log("sentinel=%s" % tag, 5 * SLOW)
    seen = a.log_lines()[before:]
    assert seen == ["GET /health?sentinel=%s" % tag], \
        "the backend saw the rejected request: %r" % seen


def send_bad(port, data):
    with Conn(port, timeout=5) as c:
        c.send(data)
        r = c.read_response()
        closed, extra = c.wait_closed(3 * SLOW)
    return r, closed, extra


@pytest.mark.parametrize("data,expected", [((d + SMUGGLED).encode("latin-1"), e)
                                           for _, d, e in BAD],
                         ids=[i for i, _, _ in BAD])
def test_malformed_request_is_rejected_and_never_reaches_backend(proxy, data, expected):
    s, a = proxy
    before = len(a.log_lines())
    r, closed, extra = send_bad(s.port, data)
    ok = expected if isinstance(expected, set) else {expected}
    assert r.status in ok, "expected %s, got %r" % (sorted(ok), r)
    assert r.header("X-Sluice-Error"), "no X-Sluice-Error header: %r" % r
    assert r.body.startswith(b"sluice:"), "body does not start with 'sluice:': %r" % r.body
    assert closed, "connection left open after a %d (then got %r)" % (r.status, extra[:100])
    assert extra == b"", "bytes after the error response: %r" % extra[:200]
    assert_backend_saw_nothing(s, a, "m%d" % before, before)


def test_just_under_the_limits_is_accepted(proxy):
    s, a = proxy
    # 90 headers (sluice adds a few of its own), a 7000 byte request line, a 15k head
    hdrs = [("X-H%d" % i, "v") for i in range(90)]
    r = request(s.port, "GET", "/echo?" + "q" * 6950, hdrs)
    assert r.status == 200, r
    assert r.json()["headers"]["x-h89"] == "v"
    hdrs = [("X-Big-%d" % i, "v" * 1000) for i in range(14)]
    r = request(s.port, "GET", "/echo", hdrs)
    assert r.status == 200, r


def test_identical_repeated_content_length_is_accepted(proxy):
    s, a = proxy
    r = request(s.port, "POST", "/echo", [("Content-Length", "5"), ("Content-Length", "5")],
                b"hello")
    assert r.status in (200, 400), r     # RFC 9112 6.3 allows either; it must not misframe
    if r.status == 200:
        assert r.json()["body_length"] == 5


def test_body_over_max_body_size_by_content_length_gets_413_and_backend_sees_nothing(proxy):
    s, a = proxy
    before = len(a.log_lines())
    with Conn(s.port) as c:
        c.request("POST", "/upload", {"Content-Length": str(200 * 1024)})
        r = c.read_response()
    assert is_sluice_error(r, 413), r
    assert_backend_saw_nothing(s, a, "b413", before)


def test_expect_continue_over_max_body_size_gets_413_instead_of_100(proxy):
    s, a = proxy
    before = len(a.log_lines())
    with Conn(s.port) as c:
        c.request("POST", "/upload", {"Content-Length": str(200 * 1024),
                                      "Expect": "100-continue"})
        r = c.read_response(allow_interim=True)
    assert is_sluice_error(r, 413), r
    assert_backend_saw_nothing(s, a, "e413", before)


def test_chunked_body_over_max_body_size_gets_413(proxy):
    s, a = proxy
    piece = b"x" * 30000
    body = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for _ in range(5)) + b"0\r\n\r\n"
    with Conn(s.port) as c:
        c.request("POST", "/upload", {"Transfer-Encoding": "chunked"})
        try:
            c.send(body)
        except (BrokenPipeError, ConnectionResetError):
            pass
        r = c.read_response()
    assert is_sluice_error(r, 413), r


def test_body_at_max_body_size_is_accepted(proxy):
    s, _ = proxy
    body = b"y" * (100 * 1024)
    r = request(s.port, "POST", "/upload", body=body)
    assert r.status == 200 and r.json()["length"] == len(body), r


def test_http10_request_with_transfer_encoding_cannot_smuggle_a_second_request(proxy):
    """RFC 9112 6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing; the
    connection must be closed after it, so the pipelined /smuggled never runs."""
    s, a = proxy
    before = len(a.log_lines())
    data = (b"POST /upload HTTP/1.0\r\nHost: example.test\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Length: 5\r\n\r\n0\r\n\r\n" + SMUGGLED.encode())
    with Conn(s.port, timeout=5) as c:
        c.send(data)
        r = c.read_response()
        closed, extra = c.wait_closed(3 * SLOW)
    # sluice answers itself (the framing is refused: nothing of it is forwarded) and closes
    assert is_sluice_error(r, 400), r
    assert closed and b"HTTP/1." not in extra, "a second response came back: %r" % extra[:200]
    assert a.log_lines()[before:] == [], "it reached the backend: %r" % a.log_lines()[before:]
