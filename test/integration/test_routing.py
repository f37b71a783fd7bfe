"""Requests and responses pass through unchanged; sluice adds X-Forwarded-* and X-Request-ID
and drops hop-by-hop request headers."""
import hashlib
import re

import pytest

import helpers

from helpers import Conn, request

HEX32 = re.compile(r"^[0-9a-f]{32}$")


@pytest.fixture(scope="module")
def proxy(module_backend_factory, module_sluice_factory):
    a = module_backend_factory("a", workers=1, worker_class="gthread", threads=4)
    s = module_sluice_factory([a], listens=2)
    return s, a


def echo(port, method="GET", target="/echo", headers=None, body=None):
    r = request(port, method, target, headers, body)
    assert r.status == 200, r
    return r, r.json()


def test_get_root_returns_backend_body(proxy):
    s, _ = proxy
    r = request(s.port, "GET", "/")
    assert r.status == 200
    assert r.body == b"hello from a\n"
    assert r.header("Content-Type") == "text/plain"
    assert r.header("X-App-Name") == "a"


def test_second_listen_address_serves_too(proxy):
    s, _ = proxy
    r = request(s.ports[1], "GET", "/")
    assert r.status == 200 and r.body == b"hello from a\n"


def test_post_body_method_path_and_query_reach_backend_unchanged(proxy):
    s, _ = proxy
    body = bytes(range(256)) * 40 + b"tail"
    r, j = echo(s.port, "POST", "/echo?x=1&y=%20two&z", {"Content-Type": "application/x-test"},
                body)
    assert j["method"] == "POST"
    assert j["path"] == "/echo"
    assert j["query"] == "x=1&y=%20two&z"
    assert j["body_length"] == len(body)
    assert j["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert j["headers"]["content-type"] == "application/x-test"


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS"])
def test_other_methods_pass_through(proxy, method):
    s, _ = proxy
    r, j = echo(s.port, method, "/echo", body=b"abc" if method in ("PUT", "PATCH") else None)
    assert j["method"] == method


def test_custom_request_headers_pass_unchanged(proxy):
    s, _ = proxy
    hdrs = [("X-Custom", "one two  three"), ("Accept", "text/html, */*;q=0.1"),
            ("User-Agent", "sluice-test/1.0"), ("Cookie", "a=1; b=2"),
            ("Authorization", "Bearer abc.def"), ("X-Empty", "")]
    _, j = echo(s.port, headers=hdrs)
    h = j["headers"]
    assert h["x-custom"] == "one two  three"
    assert h["accept"] == "text/html, */*;q=0.1"
    assert h["user-agent"] == "sluice-test/1.0"
    assert h["cookie"] == "a=1; b=2"
    assert h["authorization"] == "Bearer abc.def"
    assert h.get("x-empty") == ""


def test_response_headers_and_two_set_cookies_pass_unchanged(proxy):
    s, _ = proxy
    r = request(s.port, "GET", "/cookie")
    assert r.status == 200
    assert r.header_all("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/; HttpOnly"]
    assert r.body == b"cookies\n"


def test_redirect_302_and_location_pass_unchanged(proxy):
    s, _ = proxy
    r = request(s.port, "GET", "/redirect")
    assert r.status == 302
    assert r.header("Location") == "/echo?from=redirect"


@pytest.mark.parametrize("code", [201, 404, 418, 500, 503])
def test_backend_status_codes_pass_through(proxy, code):
    s, _ = proxy
    r = request(s.port, "GET", "/status/%d" % code)
    assert r.status == code
    assert r.body == b"status %d\n" % code
    assert r.header("X-Sluice-Error") is None


def test_x_forwarded_for_proto_and_host_are_added(proxy):
    s, _ = proxy
    _, j = echo(s.port, headers={"Host": "www.example.test:8443"})
    h = j["headers"]
    assert h["x-forwarded-for"] == "127.0.0.1"
    assert h["x-forwarded-proto"] == "http"
    assert h["x-forwarded-host"] == "www.example.test:8443"


def test_x_forwarded_for_is_appended_to_clients_value(proxy):
    s, _ = proxy
    _, j = echo(s.port, headers={"X-Forwarded-For": "203.0.113.7"})
    assert j["headers"]["x-forwarded-for"].replace(" ", "") == "203.0.113.7,127.0.0.1"


def test_client_supplied_x_forwarded_proto_is_replaced(proxy):
    s, _ = proxy
    _, j = echo(s.port, headers={"X-Forwarded-Proto": "https"})
    assert j["headers"]["x-forwarded-proto"] == "http"


def test_x_request_id_is_generated_sent_to_backend_and_returned(proxy):
    s, _ = proxy
    r, j = echo(s.port)
    rid = j["headers"].get("x-request-id")
    assert rid and HEX32.match(rid), rid
    assert r.header("X-Request-ID") == rid
    r2, j2 = echo(s.port)
    assert j2["headers"]["x-request-id"] != rid, "request ids must differ per request"


def test_x_request_id_from_client_is_kept(proxy):
    s, _ = proxy
    r, j = echo(s.port, headers={"X-Request-ID": "client-chosen-id-42"})
    assert j["headers"]["x-request-id"] == "client-chosen-id-42"
    assert r.header("X-Request-ID") == "client-chosen-id-42"


def test_hop_by_hop_request_headers_are_dropped(proxy):
    s, _ = proxy
    hdrs = [("Connection", "keep-alive, X-Drop-Me"), ("Keep-Alive", "timeout=300"),
            ("Proxy-Connection", "keep-alive"), ("TE", "trailers"), ("Trailer", "X-T"),
            ("Upgrade", "h2c"), ("Proxy-Authorization", "Basic c2VjcmV0"),
            ("X-Drop-Me", "1"), ("X-Keep-Me", "2")]
    _, j = echo(s.port, headers=hdrs)
    h = j["headers"]
    for name in ("keep-alive", "proxy-connection", "te", "trailer", "upgrade",
                 "proxy-authorization", "x-drop-me"):
        assert name not in h, "%s reached the backend: %r" % (name, h)
    assert "x-drop-me" not in h.get("connection", "").lower()
    assert h["x-keep-me"] == "2"


def test_requests_on_one_connection_each_get_their_own_response(proxy):
    s, _ = proxy
    with Conn(s.port) as c:
        for i in range(5):
            c.request("GET", "/echo?i=%d" % i)
            r = c.read_response()
            assert r.status == 200 and r.json()["query"] == "i=%d" % i


def test_http10_request_without_host_is_proxied(proxy):
    s, _ = proxy
    data = helpers.raw(s.port, b"GET /echo?old HTTP/1.0\r\nUser-Agent: old\r\n\r\n", 5)
    head, _, body = data.partition(b"\r\n\r\n")
    r = helpers.parse_head(head)
    assert r.status == 200, data[:300]
    assert r.header("Transfer-Encoding") is None
    import json
    j = json.loads(body)
    assert j["query"] == "old" and j["headers"]["user-agent"] == "old"
