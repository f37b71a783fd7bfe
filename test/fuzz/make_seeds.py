#!/usr/bin/env python3
"""Write the seed corpora of the fuzz targets: test/fuzz/corpus/{response,chunked,config}/.

  python3 test/fuzz/make_seeds.py            # hand-made seeds only
  python3 test/fuzz/make_seeds.py --gunicorn # also capture real responses from Gunicorn
                                             # running test/app.py on 127.0.0.1 (a free port)

Seeds are named seed-*; files named by a hash are what libFuzzer's -merge=1 kept. Running
this again rewrites the seed-* files and leaves the rest alone.

Layouts: response seeds are raw response bytes; chunked seeds are one option byte (low 4
bits: number of split points K, bits 4-5: max_trailer choice), 2K bytes of split points
(little-endian uint16), then the chunked body; config seeds are INI text."""
import os
import socket
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CORPUS = os.path.join(HERE, "corpus")


def put(kind, name, data):
    d = os.path.join(CORPUS, kind)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


# ---------------------------------------------------------------- responses (hand-made)

R = "\r\n"
RESPONSES = {
    "200-cl": "HTTP/1.1 200 OK\r\nServer: gunicorn\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
    "200-chunked-trailer": "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n5;a=b\r\nhello\r\n0\r\nX-Sum: 1\r\n\r\n",
    "200-close": "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n\r\n<p>x</p>",
    "200-http10-ka": "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\nok",
    "200-no-reason": "HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
    "200-empty-reason": "HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n",
    "200-obs-text-reason": "HTTP/1.1 200 \xc3\x9cberall gut\r\nContent-Length: 0\r\n\r\n",
    "100-then-200": "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    "103-early-hints": "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    "101-websocket": "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\x81\x05hello",
    "204": "HTTP/1.1 204 No Content\r\nDate: Mon, 24 Nov 2026 10:00:00 GMT\r\n\r\n",
    "304-cl": "HTTP/1.1 304 Not Modified\r\nETag: \"abc\"\r\nContent-Length: 1234\r\n\r\n",
    "te-gzip-chunked": "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    "te-gzip-close": "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n\x1f\x8b",
    "conn-tokens": "HTTP/1.1 200 OK\r\nConnection: close, X-Private\r\nX-Private: secret\r\nContent-Length: 0\r\n\r\n",
    "many-headers": "HTTP/1.1 200 OK\r\n" + "".join("X-H%d: v%d\r\n" % (i, i) for i in range(12)) + "Content-Length: 0\r\n\r\n",
    "set-cookies": "HTTP/1.1 302 Found\r\nLocation: /echo?from=redirect\r\nSet-Cookie: a=1; Path=/\r\nSet-Cookie: b=2; Path=/; HttpOnly\r\nContent-Length: 0\r\n\r\n",
    "x-request-id": "HTTP/1.1 500 Internal Server Error\r\nX-Request-ID: 0123456789abcdef\r\nContent-Length: 3\r\n\r\nerr",
    "tab-values": "HTTP/1.1 200 OK\r\nX-A:\tv\t\r\nX-B:  \r\nContent-Length:0\r\n\r\n",
    # malformed: each must be a 502
    "bad-cl-te": "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
    "bad-two-cl": "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
    "bad-bare-lf": "HTTP/1.1 200 OK\nContent-Length: 0\n\n",
    "bad-obs-fold": "HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\n\r\n",
    "bad-space-before-colon": "HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n",
    "bad-version": "HTTP/2.0 200 OK\r\n\r\n",
    "bad-status": "HTTP/1.1 20 OK\r\n\r\n",
    "bad-nul": "HTTP/1.1 200 OK\r\nX-A: a\x00b\r\n\r\n",
    "bad-te-http10": "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
    "bad-te-chunked-twice": "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
    "incomplete": "HTTP/1.1 200 OK\r\nContent-Le",
}

# ---------------------------------------------------------------- chunked bodies (hand-made)

CHUNKED = {
    "simple": "5\r\nhello\r\n0\r\n\r\n",
    "two-chunks": "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    "extensions": "5;name=value\r\nhello\r\n6;a;b=\"q s\"\r\n world\r\n0;last\r\n\r\n",
    "ext-bws": "5 ;x=y\r\nhello\r\n0\t;z\r\n\r\n",
    "trailers": "3\r\nabc\r\n0\r\nX-Checksum: 900150983cd24fb0\r\nExpires: Mon, 24 Nov 2026 10:00:00 GMT\r\n\r\n",
    "upper-hex": "A\r\n0123456789\r\n1F\r\n" + "x" * 31 + "\r\n0\r\n\r\n",
    "leading-zeros": "0005\r\nhello\r\n000\r\n\r\n",
    "max-digits": "00000000000000a\r\n0123456789\r\n0\r\n\r\n",
    "pipelined": "2\r\nok\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    "binary": "4\r\n\x00\r\n\xff\r\n0\r\n\r\n",
    "empty-body": "0\r\n\r\n",
    # malformed
    "bad-bws": "5 \r\nhello\r\n0\r\n\r\n",
    "bad-bare-lf": "5\nhello\n0\n\n",
    "bad-16-digits": "0000000000000005\r\nhello\r\n0\r\n\r\n",
    "bad-no-crlf-after-data": "5\r\nhelloX0\r\n\r\n",
    "bad-trailer-fold": "0\r\nX-A: a\r\n b\r\n\r\n",
    "bad-ext-ctl": "5;a=\x01\r\nhello\r\n0\r\n\r\n",
    "bad-neg": "-5\r\nhello\r\n0\r\n\r\n",
    "bad-0x": "0x5\r\nhello\r\n0\r\n\r\n",
    "incomplete": "5\r\nhel",
}


def chunked_seed(body, splits=(), trailer=0):
    if isinstance(body, str):
        body = body.encode("latin-1")
    head = bytes([(len(splits) & 15) | (trailer << 4)])
    return head + b"".join(struct.pack("<H", s) for s in splits) + body


# ---------------------------------------------------------------- configs (hand-made)

MIN = "[proxy]\nlisten = 127.0.0.1:8080\n\n[backend app]\naddress = 127.0.0.1:8001\n"
CONFIGS = {
    "minimal": MIN,
    "two-backends": MIN + "weight = 2\nworkers = auto\nworkers_min = 2\nworkers_max = 16\n\n"
    "[backend b2]\naddress = [::1]:8002\nhealth_check = /health\nrise = 2\nfall = 3\n"
    "health_status = 204\nslow_start = 30s\ndrain = no\n",
    "tls": "[proxy]\ntls_listen = 0.0.0.0:8443\ntls_cert = /etc/sluice/a.pem\ntls_key = /etc/sluice/a.key\n"
    "tls_cert = /etc/sluice/b.pem\ntls_key = /etc/sluice/b.key\nlisten = 8080\nredirect_http = yes\n"
    "[backend app]\naddress = app.internal:443\ntls = yes\ntls_verify = yes\ntls_ca = /etc/ssl/ca.pem\n"
    "tls_name = app.internal\n",
    "tenants": MIN + "\n[tenants]\nkey = header:X-Tenant\nmax_tracked = 100\n"
    "hmac_key = 0123456789abcdef0123\n\n[tenant acme]\nrate = 20\nburst = 40\nweight = 3\n"
    "max_inflight = 4\nmax_queue = 10\n\n[tenant default]\nrate = 5.5\nburst = 10\n\n[tenant solo]\n",
    "routes-queue": MIN + "\n[route health]\nprefix = /health\nbypass = yes\n\n"
    "[route sqllab]\nprefix = /api/v1/sqllab\nmax_inflight = 2\n\n[queue]\nmax = 1000\n"
    "timeout = 10s\ntarget = 200ms\ninterval = 1s\n",
    "redis": MIN + "\n[tenants]\nkey = path_prefix:2\n\n[redis]\n"
    "url = redis://:secret@127.0.0.1:6379/3\ntimeout = 50ms\non_failure = closed\nprefix = s1:\n",
    "admin-scale": MIN + "\n[admin]\nlisten = 0.0.0.0:9090\ntoken = 0123456789abcdef\n\n"
    "[scale]\nmode = erlang\nmargin = 1.3\nquantile = 0.95\ntarget_wait = 500ms\n"
    "epsilon = 0.05\nstep = 0.25\nup_for = 30s\ndown_for = 5m\ncooldown = 60s\n"
    "min_workers = 2\nmax_workers = 64\nqueue_threshold = 5\ndown_utilisation = 0.30\n"
    "db_max_connections = 500\ndb_share = 0.65\npool_size = 10\nwindow = 1m\n"
    "on_scale = /usr/local/bin/hook\non_scale_timeout = 30s\n"
    "webhook = http://127.0.0.1:9999/scale\nwebhook_timeout = 5s\n"
    "gunicorn_pidfile = /run/gunicorn.pid\ngunicorn_backend = app\nshared_backends = yes\n",
    "proxy-keys": "[proxy]\nlisten = 8080\nlisten = [::]:8081\nthreads = auto\naccess_log = -\n"
    "error_log = /var/log/sluice/error.log\npid_file = /run/sluice.pid\nclient_header_timeout = 250ms\n"
    "client_body_timeout = 2m\nkeepalive_timeout = 0\nsend_timeout = 1h\nshutdown_grace = 30\n"
    "max_header_size = 32K\nmax_line_size = 4kb\nmax_headers = 50\nmax_body_size = 0\n"
    "request_buffer = 64m\nretries = 0\nlog_level = debug\n"
    "tls_ciphers = ECDHE-RSA-AES128-GCM-SHA256\n[backend a]\naddress = localhost:1\n",
    "comments-multiline": "; comment\n# another\n[proxy] ; inline\nlisten = 127.0.0.1:8080 ; inline\n"
    "access_log = /tmp/a\n  /tmp/continued\n\n[backend app]\naddress=127.0.0.1:8001\n",
    "bom-crlf": "\xef\xbb\xbf[proxy]\r\nlisten = 8080\r\n[backend a]\r\naddress = h:1\r\n",
    # rejected: each gives PATH:LINE: message
    "bad-unknown-key": MIN + "colour = blue\n",
    "bad-section": MIN + "[backnd x]\n",
    "bad-name": "[tenant a b]\nrate = 1\n" + MIN,  # after a [backend] it crashed: crashes/config-section-kind-mismatch
    "bad-duplicate": MIN + "[backend app]\naddress = h:2\n",
    "bad-value": MIN + "weight = 0\n",
    "bad-duration": MIN + "read_timeout = 10 s\n",
    "bad-long-line": MIN + "health_check = /" + "a" * 250 + "\n",
    "bad-no-backend": "[proxy]\nlisten = 8080\n",
    "bad-syntax": MIN + "just words\n",
    "bad-redis": MIN + "[redis]\nurl = http://x\n",
    "bad-scale": MIN + "[scale]\nmin_workers = 10\nmax_workers = 2\n",
    "empty": "",
}


def gunicorn_responses():
    """Raw responses from Gunicorn serving test/app.py; {} when it cannot run."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    proc = subprocess.Popen(["gunicorn", "--chdir", os.path.join(ROOT, "test"), "-b",
                             "127.0.0.1:%d" % port, "-w", "1", "app:app"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = {}
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        reqs = {
            "root": b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            "echo": b"GET /echo?x=1 HTTP/1.1\r\nHost: a\r\nX-Tenant: acme\r\n\r\n",
            "head": b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n",
            "204": b"GET /status/204 HTTP/1.1\r\nHost: a\r\n\r\n",
            "304-cl": b"GET /status/304?cl=7 HTTP/1.1\r\nHost: a\r\n\r\n",
            "404": b"GET /nope HTTP/1.1\r\nHost: a\r\n\r\n",
            "503": b"GET /status/503 HTTP/1.1\r\nHost: a\r\n\r\n",
            "redirect": b"GET /redirect HTTP/1.1\r\nHost: a\r\n\r\n",
            "cookie": b"GET /cookie HTTP/1.1\r\nHost: a\r\n\r\n",
            "bytes-chunked": b"GET /bytes?n=300 HTTP/1.1\r\nHost: a\r\n\r\n",
            "bytes-cl": b"GET /bytes?n=64&cl=1 HTTP/1.1\r\nHost: a\r\n\r\n",
            "bytes-http10": b"GET /bytes?n=40 HTTP/1.0\r\n\r\n",
            "expect-100": b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
                          b"Expect: 100-continue\r\n\r\nabc",
            "upload-chunked": b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                              b"\r\n3\r\nabc\r\n0\r\n\r\n",
        }
        for name, req in reqs.items():
            c = socket.create_connection(("127.0.0.1", port), 5)
            c.sendall(req)
            c.shutdown(socket.SHUT_WR)
            data = b""
            while True:
                b = c.recv(65536)
                if not b:
                    break
                data += b
            c.close()
            out[name] = data[:2048]
    finally:
        proc.terminate()
        proc.wait(10)
    return out


def main():
    for name, r in RESPONSES.items():
        put("response", name, r.encode("latin-1"))
    for name, body in CHUNKED.items():
        put("chunked", name, chunked_seed(body))
    # the same bodies cut in awkward places, and a small trailer limit
    put("chunked", "split-crlf", chunked_seed(CHUNKED["trailers"], (1, 2, 4, 8, 9, 12)))
    put("chunked", "split-ext", chunked_seed(CHUNKED["extensions"], (3, 6, 14, 19, 20, 33)))
    put("chunked", "trailer-limit16", chunked_seed(CHUNKED["trailers"], (5,), 1))
    put("chunked", "trailer-limit64", chunked_seed(CHUNKED["trailers"], (), 2))
    with open(os.path.join(ROOT, "etc", "sluice.ini"), "rb") as f:
        ini = f.read()
    put("config", "etc-sluice.ini", ini)
    # the same without its comments: under the 4096-byte -max_len `make fuzz` passes
    put("config", "etc-sluice-keys.ini",
        b"".join(l for l in ini.splitlines(True) if l.strip() and not l.startswith(b";")))
    for name, text in CONFIGS.items():
        put("config", name + ".ini", text.encode("latin-1"))
    if "--gunicorn" in sys.argv:
        for name, raw in gunicorn_responses().items():
            put("response", "gunicorn-" + name, raw)
            head, sep, body = raw.partition(b"\r\n\r\n")
            if sep and b"chunked" in head.lower():
                put("chunked", "gunicorn-" + name, chunked_seed(body))
                put("chunked", "gunicorn-" + name + "-split",
                    chunked_seed(body, (2, 5, 100, 200, len(body) - 3)))


if __name__ == "__main__":
    main()
