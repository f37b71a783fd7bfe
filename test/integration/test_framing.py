"""Message framing: HEAD, 204 and 304 have no body and the connection stays usable;
Expect: 100-continue; Upgrade tunnels."""
import os
import socket
import threading

import pytest

from helpers import SLOW, Conn


@pytest.fixture(scope="module")
def proxy(module_backend_factory, module_sluice_factory):
    a = module_backend_factory("a", workers=1, worker_class="gthread", threads=4)
    return module_sluice_factory([a]), a


def then_next_request_works(c):
    c.request("GET", "/")
    r = c.read_response()
    assert (r.status, r.body) == (200, b"hello from a\n"), r


def test_head_with_content_length_has_no_body_then_next_request_on_same_connection(proxy):
    s, _ = proxy
    with Conn(s.port) as c:
        c.request("HEAD", "/bytes?n=1000&cl=1")
        r = c.read_response("HEAD")
        assert r.status == 200
        assert r.header("Content-Length") == "1000"
        then_next_request_works(c)


def test_head_without_content_length_has_no_body_then_next_request(proxy):
    s, _ = proxy
    with Conn(s.port) as c:
        c.request("HEAD", "/bytes?n=1000")
        r = c.read_response("HEAD")
        assert r.status == 200
        then_next_request_works(c)
        c.request("HEAD", "/")
        r = c.read_response("HEAD")
        assert r.status == 200 and r.header("Content-Length") == "13"
        then_next_request_works(c)


def test_204_has_no_body_then_next_request_on_same_connection(proxy):
    s, _ = proxy
    with Conn(s.port) as c:
        c.request("GET", "/status/204")
        r = c.read_response()
        assert r.status == 204
        assert r.header("Transfer-Encoding") is None
        then_next_request_works(c)


def test_304_with_content_length_header_has_no_body_then_next_request(proxy):
    s, _ = proxy
    with Conn(s.port) as c:
        c.request("GET", "/status/304?cl=100", {"If-None-Match": '"x"'})
        r = c.read_response()
        assert r.status == 304
        assert r.header("Transfer-Encoding") is None
        then_next_request_works(c)
        c.request("GET", "/status/304")
        assert c.read_response().status == 304
        then_next_request_works(c)


def test_expect_100_continue_is_answered_by_sluice_and_not_forwarded(proxy):
    s, a = proxy
    body = b"hello world"
    with Conn(s.port) as c:
        c.request("POST", "/echo", {"Content-Length": str(len(body)),
                                    "Expect": "100-continue"})
        interim = c.read_head()          # socket timeout if sluice waits for the body
        assert interim.status == 100, interim
        assert interim.raw_head.startswith(b"HTTP/1.1 100 Continue"), interim.raw_head
        c.send(body)
        r = c.read_response()
        assert r.status == 200, r
        j = r.json()
        assert j["body_length"] == len(body)
        assert "expect" not in j["headers"], j["headers"]
        then_next_request_works(c)


def test_expect_100_continue_with_chunked_body(proxy):
    s, _ = proxy
    with Conn(s.port) as c:
        c.request("PUT", "/upload", {"Transfer-Encoding": "chunked", "Expect": "100-continue"})
        assert c.read_head().status == 100
        c.send(b"3\r\nabc\r\n0\r\n\r\n")
        r = c.read_response()
        assert r.status == 200 and r.json()["length"] == 3, r


# ---- Upgrade ----------------------------------------------------------------------------

def ws_echo_handler(c, head, rest, backend):
    c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
              b"Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
    if rest:
        c.sendall(rest)
    while True:
        d = c.recv(65536)
        if not d:
            return
        c.sendall(d)


def recv_exactly(sock, n, timeout):
    sock.settimeout(timeout)
    out = bytearray()
    while len(out) < n:
        d = sock.recv(min(262144, n - len(out)))
        if not d:
            raise AssertionError("tunnel closed after %d of %d bytes" % (len(out), n))
        out += d
    return bytes(out)


def test_websocket_upgrade_is_tunnelled_after_101(raw_backend_factory, sluice_factory):
    be = raw_backend_factory(ws_echo_handler)
    s = sluice_factory([("ws", be.address, 4)])
    with Conn(s.port) as c:
        c.request("GET", "/chat", [("Upgrade", "websocket"), ("Connection", "Upgrade"),
                                   ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                                   ("Sec-WebSocket-Version", "13")])
        r = c.read_response(allow_interim=True)
        assert r.status == 101, r
        assert r.header("Upgrade", "").lower() == "websocket"
        assert "upgrade" in r.header("Connection", "").lower()
        leftover = bytes(c.buf)
        c.buf.clear()
        assert leftover == b""
        c.send(b"ping-123")
        assert recv_exactly(c.sock, 8, 5 * SLOW) == b"ping-123"
        blob = os.urandom(1 << 20)
        # send and receive concurrently so neither side's buffers deadlock
        t = threading.Thread(target=c.sock.sendall, args=(blob,))
        t.start()
        got = recv_exactly(c.sock, len(blob), 20 * SLOW)
        t.join(20)
        assert got == blob
        # the client finishes: the tunnel must close (backend sees EOF and closes)
        c.sock.shutdown(socket.SHUT_WR)
        closed, extra = c.wait_closed(5 * SLOW)
        assert closed and extra == b"", "tunnel still open after the client's EOF"
    head = be.heads[0].decode("latin-1").lower()
    assert "\r\nupgrade: websocket\r\n" in head, head
    assert "upgrade" in [v.strip() for l in head.split("\r\n") if l.startswith("connection:")
                         for v in l.split(":", 1)[1].split(",")], head
    assert "sec-websocket-key: dghlihnhbxbszsbub25jzq==" in head


def test_upgrade_refused_by_backend_is_a_normal_response(backend_factory, sluice_factory):
    a = backend_factory("a", workers=1, worker_class="gthread", threads=2)
    s = sluice_factory([a])
    with Conn(s.port) as c:
        c.request("GET", "/", [("Upgrade", "websocket"), ("Connection", "Upgrade")])
        r = c.read_response()
        assert r.status == 200 and r.body == b"hello from a\n"
