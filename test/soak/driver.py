"""The soak's driver for what wrk cannot do (test/soak/soak.sh starts it next to wrk).

Threads, each looping until the deadline, every socket operation bounded by a timeout:

  upload     chunked (random chunk sizes) and Content-Length uploads to /upload, plain and
             TLS, some with Expect: 100-continue, some sent slowly; the JSON answer's length
             and sha256 must match what was sent
  download   /bytes?n=N (chunked, or &cl=1), plain and TLS, some read slowly; the body's
             sha256 must match the app's pattern
  upgrade    WebSocket-style upgrades (test/soak/upgrade_backend.py answers 101 and echoes;
             a Gunicorn backend answers an ordinary response, which is fine too); echo
             checked, closed by the client, by the server ("bye"), or reset
  malformed  requests sluice must refuse (400/413/414/431/501), plain and TLS
  abort      clients that go away: mid-download (FIN or RST), mid-upload, while queued,
             mid-TLS-handshake, in the middle of a tunnel, after half a request head
  slow       slowloris heads (408 expected), idle keep-alive connections held until sluice
             closes them, pipelined requests, HTTP/1.0, HEAD, absolute-form targets
  hog        bursts of concurrent slow requests of tenant "hog" that make the queue stand,
             so that sluice sheds (503 shed) and times out waiters (503 queue-timeout)
  admin      GET /status.json every second; /metrics, /scale.json, /status every 5 s;
             token-protected POST actions (and the same without the token) now and then

Outcomes are counted per thread kind: ok, refused (429/503 from sluice's admission),
backend (502/503/504: expected while a backend or Redis restarts), cut (connection closed
early; expected around restarts), timeout, unexpected:... and integrity (a complete 200
whose body does not match: a real bug). The summary is one JSON object written to --out.

    python3 test/soak/driver.py --port P --tls-port T --admin-port A --token TOKEN \\
        --seconds 600 --out summary.json [--light]
"""
import argparse
import collections
import functools
import hashlib
import http.client
import json
import os
import random
import socket
import ssl
import struct
import sys
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # test/, where app.py lives
from app import pattern_stream  # noqa: E402

ARGS = None
DEADLINE = 0.0
TIMEOUT = 20.0
LOCK = threading.Lock()
COUNTS = collections.defaultdict(collections.Counter)
SAMPLES = collections.defaultdict(list)   # kind -> first few unexpected details
TLS_CTX = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
TLS_CTX.check_hostname = False
TLS_CTX.verify_mode = ssl.CERT_NONE


def note(kind, outcome, detail=None):
    with LOCK:
        COUNTS[kind][outcome] += 1
        if detail and (outcome.startswith("unexpected") or outcome == "integrity"):
            if len(SAMPLES[kind]) < 20:
                SAMPLES[kind].append("%s %s: %s" % (time.strftime("%H:%M:%S"), outcome,
                                                   detail))


def running():
    return time.monotonic() < DEADLINE


@functools.lru_cache(maxsize=None)
def pattern_sha(n):
    h = hashlib.sha256()
    for p in pattern_stream(n):
        h.update(p)
    return h.hexdigest()


class Closed(Exception):
    """The peer closed (or reset) the connection."""


class Client:
    """One connection to sluice, plain or TLS, with a small strict HTTP/1.1 response
    reader that streams bodies into a sha256."""

    def __init__(self, tls=False, sni="soak.test", timeout=None, port=None):
        self.tls = tls
        port = port or (ARGS.tls_port if tls else ARGS.port)
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout or TIMEOUT)
        self.sock = TLS_CTX.wrap_socket(raw, server_hostname=sni) if tls else raw
        self.buf = bytearray()

    def close(self, reset=False):
        try:
            if reset:
                s = self.sock
                if isinstance(s, ssl.SSLSocket):
                    s = socket.socket(fileno=os.dup(s.fileno()))
                    self.sock.close()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()
            else:
                self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data):
        self.sock.sendall(data)

    def fill(self):
        try:
            d = self.sock.recv(262144)
        except (ConnectionResetError, ssl.SSLError) as e:
            raise Closed(str(e))
        if not d:
            raise Closed("EOF")
        self.buf += d

    def read_line(self):
        while b"\r\n" not in self.buf:
            if len(self.buf) > 65536:
                raise ValueError("line too long")
            self.fill()
        i = self.buf.index(b"\r\n")
        line = bytes(self.buf[:i])
        del self.buf[:i + 2]
        return line

    def read_head(self):
        """(status, {lower-name: value}) of the next response head."""
        while b"\r\n\r\n" not in self.buf:
            if len(self.buf) > 65536:
                raise ValueError("head too large")
            self.fill()
        i = self.buf.index(b"\r\n\r\n")
        lines = bytes(self.buf[:i]).decode("latin-1").split("\r\n")
        del self.buf[:i + 4]
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            raise ValueError("bad status line %r" % lines[0][:80])
        h = {}
        for l in lines[1:]:
            k, _, v = l.partition(":")
            k = k.strip().lower()
            h[k] = (h[k] + ", " + v.strip()) if k in h else v.strip()
        return int(parts[1]), h

    def take(self, n):
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_body(self, status, h, head=False, keep=True, slow=0.0, stop_after=None):
        """Read the body; return (bytes or b"" if not keep, length, sha256 hex). slow:
        seconds to sleep after each piece (a slow reader); stop_after: give up (return
        None) once this many bytes have arrived."""
        sha = hashlib.sha256()
        kept = bytearray()
        total = 0

        def eat(piece):
            nonlocal total
            sha.update(piece)
            total += len(piece)
            if keep:
                kept.extend(piece)

        if head or status in (204, 304) or 100 <= status < 200:
            return b"", 0, sha.hexdigest()
        if "chunked" in h.get("transfer-encoding", "").lower():
            while True:
                size = int(self.read_line().split(b";")[0], 16)
                if size == 0:
                    while self.read_line():
                        pass
                    break
                while size:
                    if not self.buf:
                        self.fill()
                    piece = self.take(min(size, len(self.buf)))
                    size -= len(piece)
                    eat(piece)
                    if stop_after is not None and total >= stop_after:
                        return None
                    if slow:
                        time.sleep(slow)
                if self.read_line() != b"":
                    raise ValueError("chunk without CRLF")
        elif "content-length" in h:
            left = int(h["content-length"])
            while left:
                if not self.buf:
                    self.fill()
                piece = self.take(min(left, len(self.buf)))
                left -= len(piece)
                eat(piece)
                if stop_after is not None and total >= stop_after:
                    return None
                if slow:
                    time.sleep(slow)
        else:  # until close
            while True:
                try:
                    self.fill()
                except Closed:
                    break
                eat(self.take(len(self.buf)))
        return bytes(kept), total, sha.hexdigest()

    def read_response(self, method="GET", **kw):
        while True:
            status, h = self.read_head()
            if 100 <= status < 200 and status != 101:
                continue
            body = self.read_body(status, h, head=(method == "HEAD"), **kw)
            return status, h, body


def req_bytes(method, target, headers=(), body=None, version="HTTP/1.1", host="soak.test"):
    lines = ["%s %s %s" % (method, target, version)]
    if host is not None:
        lines.append("Host: %s" % host)
    for k, v in headers:
        lines.append("%s: %s" % (k, v))
    if body is not None:
        lines.append("Content-Length: %d" % len(body))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def classify(kind, status, h, ok_statuses=(200,)):
    """Count a status that is not a success of the operation: refusals and backend
    errors are expected now and then; anything else is unexpected."""
    if status in ok_statuses:
        return True
    if status in (429, 503) and "x-sluice-reject" in h:
        note(kind, "refused")
    elif status in (502, 503, 504):
        note(kind, "backend")
    else:
        note(kind, "unexpected:status", "status %d %s" % (status, h.get("x-sluice-error", "")))
    return False


def guard(kind, fn):
    """Run fn() once, counting connection trouble instead of raising."""
    try:
        fn()
    except Closed:
        note(kind, "cut")
    except (socket.timeout, TimeoutError):
        note(kind, "timeout")
    except (ConnectionRefusedError, ConnectionResetError, BrokenPipeError) as e:
        note(kind, "cut", repr(e))
    except ssl.SSLError as e:
        note(kind, "cut", repr(e))
    except Exception as e:  # a bug in the driver or a protocol violation by sluice
        note(kind, "unexpected:exception", "%r %s" % (e, traceback.format_exc(limit=3)[-300:]))


def loop(kind, ops, pause=(0.0, 0.0)):
    """Run random ops until the deadline."""
    while running():
        op = random.choice(ops)
        guard(kind, op)
        if pause[1]:
            time.sleep(random.uniform(*pause))


def tenant():
    return random.choice(["gold", "gold", "gold", "default-ish", "u%d" % random.randint(1, 50)])


# ------------------------------------------------------------------------------ uploads

def upload_cl():
    n = random.choice([0, 1, 5000, 300000, 1 << 20, 3 * (1 << 20) + 17])
    body = os.urandom(n)
    tls = random.random() < 0.3
    expect = random.random() < 0.2
    with Client(tls) as c:
        hdr = [("X-Tenant", tenant()), ("Content-Type", "application/octet-stream")]
        if expect:
            hdr.append(("Expect", "100-continue"))
            head = req_bytes("POST", "/upload", hdr, b"")
            head = head.replace(b"Content-Length: 0", b"Content-Length: %d" % n)
            c.send(head)
            status, h = c.read_head()
            if status != 100:  # refused before the body was sent
                c.read_body(status, h)
                classify("upload", status, h)
                return
            c.send(body)
        else:
            c.send(req_bytes("POST", "/upload", hdr, body))
        status, h, (data, _, _) = c.read_response()
        check_upload(status, h, data, n, hashlib.sha256(body).hexdigest())


def upload_chunked():
    pieces = [os.urandom(random.choice([1, 100, 4096, 65536, 200000]))
              for _ in range(random.randint(1, 24))]
    tls = random.random() < 0.3
    slow = random.random() < 0.1
    with Client(tls) as c:
        c.send(req_bytes("PUT", "/upload", [("X-Tenant", tenant()),
                                             ("Transfer-Encoding", "chunked")]))
        for p in pieces:
            c.send(b"%x\r\n" % len(p) + p + b"\r\n")
            if slow:
                time.sleep(0.1)
        c.send(b"0\r\n\r\n")
        status, h, (data, _, _) = c.read_response()
        whole = b"".join(pieces)
        check_upload(status, h, data, len(whole), hashlib.sha256(whole).hexdigest())


def check_upload(status, h, data, n, sha):
    if not classify("upload", status, h):
        return
    try:
        j = json.loads(data)
    except ValueError:
        note("upload", "unexpected:json", repr(data[:100]))
        return
    if j.get("length") != n or j.get("sha256") != sha:
        note("upload", "integrity", "sent %d bytes, backend got %r" % (n, j))
    else:
        note("upload", "ok")


# ------------------------------------------------------------------------------ downloads

DOWNLOAD_SIZES = [1000, 1 << 20, 4 * (1 << 20) + 123, 16 * (1 << 20) + 7, 40 * (1 << 20)]


def download():
    n = random.choice(DOWNLOAD_SIZES)
    cl = random.random() < 0.5
    tls = random.random() < 0.3
    slow = 0.02 if random.random() < 0.1 and n <= 4 * (1 << 20) + 123 else 0.0
    with Client(tls) as c:
        c.send(req_bytes("GET", "/bytes?n=%d%s" % (n, "&cl=1" if cl else ""),
                         [("X-Tenant", tenant())]))
        status, h = c.read_head()
        if status != 200:
            c.read_body(status, h, keep=False)
            classify("download", status, h)
            return
        _, total, sha = c.read_body(status, h, keep=False, slow=slow)
        if total != n or sha != pattern_sha(n):
            note("download", "integrity", "n=%d cl=%s tls=%s got %d bytes" % (n, cl, tls, total))
        else:
            note("download", "ok")


# ------------------------------------------------------------------------------ upgrades

def upgrade():
    tls = random.random() < 0.3
    with Client(tls) as c:
        c.send(req_bytes("GET", "/ws/chat", [
            ("X-Tenant", tenant()), ("Upgrade", "websocket"), ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "13")]))
        status, h = c.read_head()
        if status != 101:
            c.read_body(status, h, keep=False)
            # a Gunicorn backend answers the upgrade with an ordinary response (404 here)
            if status == 404:
                note("upgrade", "not_upgraded")
            else:
                classify("upgrade", status, h)
            return
        for i in range(random.randint(1, 20)):
            msg = os.urandom(random.choice([10, 1000, 70000])).replace(b"bye\n", b"xyz\n")
            c.send(msg)
            got = bytearray(c.buf)
            c.buf.clear()
            while len(got) < len(msg):
                c.fill()
                got += c.buf
                c.buf.clear()
            if bytes(got) != msg:
                note("upgrade", "integrity", "echo of %d bytes differs" % len(msg))
                return
        end = random.choice(["client_fin", "server_bye", "reset"])
        if end == "reset":
            c.close(reset=True)
        elif end == "server_bye":
            c.send(b"bye\n")
            try:
                while True:
                    c.fill()
            except Closed:
                pass
        else:
            if not tls:
                c.sock.shutdown(socket.SHUT_WR)
                try:
                    while True:
                        c.fill()
                except Closed:
                    pass
        note("upgrade", "ok_" + end)


# ------------------------------------------------------------------------------ malformed

H = "Host: soak.test\r\n"
BAD = [
    ("POST /upload HTTP/1.1\r\n" + H + "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n"
     "\r\n0\r\n\r\n", {400}),
    ("POST /upload HTTP/1.1\r\n" + H + "Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
     {400}),
    ("POST /upload HTTP/1.1\r\n" + H + "Content-Length: abc\r\n\r\n", {400}),
    ("POST /upload HTTP/1.1\r\n" + H + "Transfer-Encoding: gzip\r\n\r\n", {400}),
    ("POST /upload HTTP/1.1\r\n" + H + "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
     {501}),
    ("GET / HTTP/1.1\r\n" + H + "X-Folded: a\r\n b\r\n\r\n", {400}),
    ("GET / HTTP/1.1\r\n" + H + "Bad Name: x\r\n\r\n", {400}),
    ("GET / HTTP/1.1\r\n" + H + "X-A: a\x00b\r\n\r\n", {400}),
    ("GET / HTTP/1.1\nHost: soak.test\n\n", {400}),
    ("GET / HTTP/1.1\r\nX-A: b\r\n\r\n", {400}),
    ("GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n", {400}),
    ("GET /a b HTTP/1.1\r\n" + H + "\r\n", {400}),
    ("GET / HTTP/1.x\r\n" + H + "\r\n", {400}),
    ("GET /" + "a" * 9000 + " HTTP/1.1\r\n" + H + "\r\n", {414}),
    ("GET / HTTP/1.1\r\n" + H + "".join("X-Big-%d: %s\r\n" % (i, "v" * 1000)
                                        for i in range(20)) + "\r\n", {431}),
    ("GET / HTTP/1.1\r\n" + H + "".join("X-H%d: v\r\n" % i for i in range(150)) + "\r\n",
     {431}),
    ("POST /upload HTTP/1.1\r\n" + H + "Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
     {400}),
    ("POST /upload HTTP/1.1\r\n" + H + "Transfer-Encoding: chunked\r\n\r\n"
     "fffffffffffffffffffff\r\nhello\r\n0\r\n\r\n", {400}),
    ("POST /upload HTTP/1.1\r\n" + H + "Content-Length: 99999999999\r\n\r\n", {413}),
    ("CONNECT soak.test:443 HTTP/1.1\r\n" + H + "\r\n", {501, 400}),
    ("\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + "\x00" * 40 + "\r\n\r\n", {400}),
]


def malformed():
    data, expected = random.choice(BAD)
    tls = random.random() < 0.25
    with Client(tls) as c:
        # sometimes after a good request on the same connection
        if random.random() < 0.3:
            c.send(req_bytes("GET", "/", [("X-Tenant", "gold")]))
            c.read_response()
        c.send(data.encode("latin-1"))
        status, h, _ = c.read_response()
        if status in expected:
            note("malformed", "ok_%d" % status)
        elif status in (429, 503) and "x-sluice-reject" in h:
            # a head that parses (e.g. Content-Length over max_body_size) meets the tenant's
            # limits first, as NGINX's limit_req comes before client_max_body_size
            note("malformed", "refused_%d" % status)
            return
        else:
            note("malformed", "unexpected:status", "sent %r got %d" % (data[:90], status))
            return
        try:  # sluice must close after the error
            while True:
                c.fill()
        except Closed:
            pass


# ------------------------------------------------------------------------------ aborts

def abort_tls():
    """Whether this abort goes over TLS (30%; never with --tls-aborts no)."""
    return ARGS.tls_aborts == "yes" and random.random() < 0.3


def abort_download():
    with Client(abort_tls()) as c:
        c.send(req_bytes("GET", "/bytes?n=%d" % (32 << 20), [("X-Tenant", tenant())]))
        status, h = c.read_head()
        if status == 200:
            c.read_body(status, h, keep=False, stop_after=random.randint(0, 4 << 20))
        c.close(reset=random.random() < 0.5)
        note("abort", "download")


def abort_upload():
    with Client(abort_tls()) as c:
        n = 8 << 20
        hdr = [("X-Tenant", tenant())]
        if random.random() < 0.5:
            c.send(req_bytes("POST", "/upload", hdr + [("Transfer-Encoding", "chunked")]))
            for _ in range(random.randint(0, 20)):
                c.send(b"10000\r\n" + b"u" * 65536 + b"\r\n")
            c.send(b"10000\r\nhalf")
        else:
            c.send(req_bytes("POST", "/upload", hdr, b"").replace(
                b"Content-Length: 0", b"Content-Length: %d" % n))
            c.send(os.urandom(random.randint(0, 3 << 20)))
        c.close(reset=random.random() < 0.5)
        note("abort", "upload")


def abort_queued():
    """Slow requests on the capped route, closed while they wait in the queue or run."""
    with Client() as c:
        c.send(req_bytes("GET", "/slow?ms=%d" % random.randint(100, 800), [("X-Tenant", "hog")]))
        time.sleep(random.uniform(0.0, 0.3))
        c.close(reset=random.random() < 0.5)
        note("abort", "queued")


def abort_tls_handshake():
    raw = socket.create_connection(("127.0.0.1", ARGS.tls_port), timeout=TIMEOUT)
    try:
        if random.random() < 0.5:
            raw.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(32))
        if random.random() < 0.5:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    finally:
        raw.close()
    note("abort", "tls_handshake")


def abort_tunnel():
    with Client(abort_tls()) as c:
        c.send(req_bytes("GET", "/ws", [("Upgrade", "websocket"), ("Connection", "Upgrade"),
                                        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                                        ("Sec-WebSocket-Version", "13")]))
        c.send(os.urandom(random.randint(0, 100000)))  # data before the 101 arrives
        time.sleep(random.uniform(0, 0.2))
        c.close(reset=random.random() < 0.5)
        note("abort", "tunnel")


def abort_half_head():
    with Client(abort_tls()) as c:
        c.send(b"GET /echo HTTP/1.1\r\nHost: soak.test\r\nX-Ten")
        time.sleep(random.uniform(0, 0.2))
        c.close(reset=random.random() < 0.5)
        note("abort", "half_head")


# ------------------------------------------------------------------------------ slow, misc

def slowloris():
    with Client(random.random() < 0.3, timeout=TIMEOUT + 15) as c:
        c.send(b"GET /echo HTTP/1.1\r\nHost: soak.test\r\n")
        t0 = time.monotonic()
        while time.monotonic() - t0 < ARGS.header_timeout + 2:
            time.sleep(1.0)
            try:
                c.send(b"X-Drip: 1\r\n")
            except OSError:
                break
        try:
            status, h, _ = c.read_response()
        except Closed:
            note("slow", "slowloris_closed")
            return
        note("slow", "slowloris_%d" % status if status == 408 else "unexpected:slowloris",
             "status %d" % status)


def idle_keepalive():
    with Client(random.random() < 0.3, timeout=ARGS.keepalive_timeout + 20) as c:
        c.send(req_bytes("GET", "/", [("X-Tenant", "gold")]))
        status, h, _ = c.read_response()
        t0 = time.monotonic()
        try:
            while True:
                c.fill()
        except Closed:
            note("slow", "idle_closed_after_%ds" % round(time.monotonic() - t0))


def pipelined():
    with Client(random.random() < 0.3) as c:
        paths = ["/echo?p=%d" % i for i in range(random.randint(2, 6))]
        c.send(b"".join(req_bytes("GET", p, [("X-Tenant", "gold")]) for p in paths))
        for p in paths:
            status, h, (data, _, _) = c.read_response()
            if status == 200 and json.loads(data)["query"] != p.split("?")[1]:
                note("misc", "integrity", "pipelined answer out of order")
                return
            if not classify("misc", status, h):
                return
        note("misc", "pipelined")


def misc():
    kind = random.choice(["http10", "head", "absolute", "options", "reqid"])
    with Client(random.random() < 0.3) as c:
        if kind == "http10":
            c.send(b"GET /echo HTTP/1.0\r\n\r\n")
            status, h, _ = c.read_response()
        elif kind == "head":
            c.send(req_bytes("HEAD", "/bytes?n=5000&cl=1", [("X-Tenant", "gold")]))
            status, h, _ = c.read_response("HEAD")
        elif kind == "absolute":
            c.send(req_bytes("GET", "http://soak.test/echo?abs=1", [("X-Tenant", "gold")]))
            status, h, _ = c.read_response()
        elif kind == "options":
            c.send(req_bytes("OPTIONS", "*", [("X-Tenant", "gold")]))
            status, h, _ = c.read_response()
            note("misc", "options_%d" % status)
            return
        else:
            c.send(req_bytes("GET", "/echo", [("X-Request-ID", "soak-%d" % random.randint(1, 10**9)),
                                              ("X-Tenant", "gold")]))
            status, h, _ = c.read_response()
        if classify("misc", status, h):
            note("misc", kind)


# ------------------------------------------------------------------------------ hog

def hog_burst():
    """n concurrent slow requests of tenant hog: with every slot busy they queue, the queue
    stands, and sluice sheds them (503 shed) or times them out (503 queue-timeout)."""
    # more than the pool's 15 slots by far, so that the waits stand over [queue] target
    # for a whole interval even with other tenants' quick requests served in between
    n = random.randint(20, 50) if not ARGS.light else random.randint(3, 8)
    results = collections.Counter()

    def one():
        try:
            with Client() as c:
                c.send(req_bytes("GET", "/concurrent?ms=%d" % random.randint(100, 400),
                                 [("X-Tenant", "hog")]))
                status, h, _ = c.read_response()
                results["%d %s" % (status, h.get("x-sluice-reject", ""))] += 1
        except Exception as e:
            results[type(e).__name__] += 1

    ts = [threading.Thread(target=one, daemon=True) for _ in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(TIMEOUT + 10)
    for k, v in results.items():
        with LOCK:
            COUNTS["hog"][k.strip()] += v
    time.sleep(random.uniform(1.0, 4.0))


# ------------------------------------------------------------------------------ admin

def admin_loop():
    tick = 0
    last = {}
    while running():
        t0 = time.monotonic()
        guard("admin", lambda: admin_get("/status.json", last))
        if tick % 5 == 0:
            for p in ("/metrics", "/scale.json", "/status"):
                guard("admin", lambda p=p: admin_get(p, last))
        if tick % 30 == 15:
            guard("admin", lambda: admin_post("/actions/reset?tenant=bronze", True, 200))
            guard("admin", lambda: admin_post("/actions/reset?tenant=bronze", False, 401))
        if tick % 90 == 45:
            guard("admin", lambda: admin_post("/actions/drain?backend=ws", True, 200))
        if tick % 90 == 50:
            guard("admin", lambda: admin_post("/actions/undrain?backend=ws", True, 200))
        tick += 1
        time.sleep(max(0.0, 1.0 - (time.monotonic() - t0)))
    # never leave the ws backend drained
    guard("admin", lambda: admin_post("/actions/undrain?backend=ws", True, 200))
    if "/status.json" in last:
        with open(ARGS.out + ".status.json", "wb") as f:
            f.write(last["/status.json"])


def admin_get(path, last):
    conn = http.client.HTTPConnection("127.0.0.1", ARGS.admin_port, timeout=TIMEOUT)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        body = r.read()
    finally:
        conn.close()
    if r.status != 200:
        note("admin", "unexpected:status", "%s -> %d" % (path, r.status))
        return
    if path.endswith(".json"):
        try:
            json.loads(body)
        except ValueError:
            note("admin", "unexpected:json", "%s: %r" % (path, body[:120]))
            return
    elif path == "/metrics" and b"sluice_" not in body:
        note("admin", "unexpected:metrics", repr(body[:120]))
        return
    last[path] = body
    note("admin", "get " + path)


def admin_post(path, with_token, want):
    conn = http.client.HTTPConnection("127.0.0.1", ARGS.admin_port, timeout=TIMEOUT)
    hdr = {"Authorization": "Bearer " + ARGS.token} if with_token else {}
    try:
        conn.request("POST", path, headers=hdr)
        r = conn.getresponse()
        r.read()
    finally:
        conn.close()
    ok = r.status == want or (not with_token and r.status in (401, 403))
    note("admin", ("post %s %d" % (path.split("?")[0], r.status)) if ok else "unexpected:post",
         "%s token=%s -> %d" % (path, with_token, r.status))


# ------------------------------------------------------------------------------ main

def main():
    global ARGS, DEADLINE, TIMEOUT
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--tls-port", type=int, required=True)
    ap.add_argument("--admin-port", type=int, required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--light", action="store_true", help="fewer threads, longer timeouts")
    ap.add_argument("--header-timeout", type=float, default=4.0)
    ap.add_argument("--keepalive-timeout", type=float, default=10.0)
    ap.add_argument("--tls-aborts", choices=("yes", "no"), default="yes",
                    help="no: client aborts only over plain HTTP (to look past a TLS-only bug)")
    ap.add_argument("--only", default="", help="comma-separated thread kinds (diagnosis), "
                    "or kind:op,op to run only those ops of a kind")
    ARGS = ap.parse_args()
    TIMEOUT = 60.0 if ARGS.light else 20.0
    DEADLINE = time.monotonic() + ARGS.seconds
    m = 1 if ARGS.light else 2
    plan = [
        ("upload", [upload_cl, upload_chunked], m, (0.0, 0.2)),
        ("download", [download], m, (0.0, 0.3)),
        ("upgrade", [upgrade], 1, (0.0, 0.3)),
        ("malformed", [malformed], 1, (0.0, 0.1)),
        ("abort", [abort_download, abort_upload, abort_queued, abort_tls_handshake,
                   abort_tunnel, abort_half_head], m, (0.0, 0.2)),
        ("slow", [slowloris, idle_keepalive], 1, (0.0, 0.5)),
        ("misc", [pipelined, misc], 1, (0.0, 0.1)),
        ("hog", [hog_burst], 1, (0.0, 0.0)),
    ]
    if ARGS.only:
        want = {}
        for item in ARGS.only.split(";"):
            kind, _, ops = item.partition(":")
            want[kind] = set(ops.split(",")) if ops else None
        plan = [(k, [o for o in ops if want[k] is None or o.__name__ in want[k]], n, p)
                for k, ops, n, p in plan if k in want]
    threads = []
    for kind, ops, n, pause in plan:
        for _ in range(n):
            threads.append(threading.Thread(target=loop, args=(kind, ops, pause), daemon=True))
    if not ARGS.only or "admin" in ARGS.only:
        threads.append(threading.Thread(target=admin_loop, daemon=True))
    for t in threads:
        t.start()
    grace = TIMEOUT * 3 + 30
    for t in threads:
        t.join(max(0.1, DEADLINE + grace - time.monotonic()))
    stuck = sum(t.is_alive() for t in threads)
    with LOCK:
        out = {"counts": {k: dict(v) for k, v in COUNTS.items()},
               "samples": dict(SAMPLES), "stuck_threads": stuck,
               "integrity_errors": sum(v["integrity"] for v in COUNTS.values()),
               "unexpected": sum(n for v in COUNTS.values() for k, n in v.items()
                                 if k.startswith("unexpected"))}
    with open(ARGS.out, "w") as f:
        json.dump(out, f, indent=1, sort_keys=True)
    print("driver: %d integrity errors, %d unexpected outcomes, %d stuck threads"
          % (out["integrity_errors"], out["unexpected"], stuck))
    return 0


if __name__ == "__main__":
    sys.exit(main())
