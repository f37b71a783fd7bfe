"""Bodies are streamed both ways with bounded memory: a big download (curl), a big upload,
chunked uploads, Content-Length and chunked downloads, an HTTP/1.0 client."""
import hashlib
import re
import socket
import subprocess
import time

import pytest

import helpers
from helpers import SANITIZED, SLOW, Conn, RssSampler, pattern_sha, pattern_stream

MiB = 1 << 20
RSS_LIMIT_KB = (160 if SANITIZED else 64) * 1024   # ASan adds shadow memory and quarantine
DOWNLOAD = (256 if SANITIZED else 1024) * MiB
UPLOAD = 200 * MiB


@pytest.mark.slow
def test_large_download_streams_through_curl_with_bounded_rss(backend_factory, sluice_factory):
    a = backend_factory("a", workers=1)
    s = sluice_factory([a])
    url = "%s/bytes?n=%d" % (s.url, DOWNLOAD)
    h = hashlib.sha256()
    total = 0
    with RssSampler(s.pid) as rss:
        p = subprocess.Popen([helpers.CURL, "-sS", "--max-time", str(int(60 * SLOW)), "-o", "-",
                              "-w", "%{stderr}status=%{http_code} size=%{size_download}\n", url],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        while True:
            d = p.stdout.read(1 << 20)
            if not d:
                break
            total += len(d)
            h.update(d)
            if rss.max_kb >= RSS_LIMIT_KB:   # no point streaming the rest
                p.kill()
                break
        err = p.stderr.read().decode()
        rc = p.wait(30)
    assert rss.max_kb < RSS_LIMIT_KB, "sluice VmRSS reached %d KiB after %d MiB of a %d MiB " \
        "download" % (rss.max_kb, total // MiB, DOWNLOAD // MiB)
    assert rc == 0, "curl exit %d: %s" % (rc, err)
    assert "status=200" in err, err
    assert total == DOWNLOAD, "got %d of %d bytes (%s)" % (total, DOWNLOAD, err)
    assert h.hexdigest() == pattern_sha(DOWNLOAD)
    assert rss.samples > 5
    assert rss.max_kb < RSS_LIMIT_KB, "sluice VmRSS peaked at %d KiB during a %d MiB download" \
        % (rss.max_kb, DOWNLOAD // MiB)


def test_large_upload_streams_with_bounded_rss(backend_factory, sluice_factory):
    a = backend_factory("a", workers=1)
    s = sluice_factory([a])
    with RssSampler(s.pid) as rss, Conn(s.port, timeout=20) as c:
        c.request("POST", "/upload", {"Content-Length": str(UPLOAD),
                                      "Content-Type": "application/octet-stream"})
        deadline = time.monotonic() + 60 * SLOW
        sent = 0
        for piece in pattern_stream(UPLOAD):
            c.sock.sendall(piece)
            sent += len(piece)
            assert time.monotonic() < deadline, "upload too slow: %d MiB sent" % (sent // MiB)
            assert rss.max_kb < RSS_LIMIT_KB, "sluice VmRSS reached %d KiB after %d MiB of a " \
                "%d MiB upload" % (rss.max_kb, sent // MiB, UPLOAD // MiB)
        r = c.read_response()
    assert r.status == 200, r
    j = r.json()
    assert j["length"] == UPLOAD
    assert j["sha256"] == pattern_sha(UPLOAD)
    assert rss.samples > 3
    assert rss.max_kb < RSS_LIMIT_KB, "sluice VmRSS peaked at %d KiB during a %d MiB upload" \
        % (rss.max_kb, UPLOAD // MiB)


def test_large_upload_with_curl_from_dev_zero(backend_factory, sluice_factory):
    a = backend_factory("a", workers=1)
    s = sluice_factory([a])
    n = 32 * MiB
    # curl sends a chunked PUT with Expect: 100-continue for stdin of unknown size
    cmd = "head -c %d /dev/zero | %s -sS --max-time %d -T - %s/upload" % (
        n, helpers.CURL, int(60 * SLOW), s.url)
    p = subprocess.run(["/bin/sh", "-c", cmd], capture_output=True, timeout=90 * SLOW)
    assert p.returncode == 0, p.stderr.decode()
    import json
    j = json.loads(p.stdout)
    assert j["length"] == n
    assert j["sha256"] == hashlib.sha256(b"\0" * n).hexdigest()


def test_chunked_upload_reaches_backend_intact(backend_factory, sluice_factory):
    a = backend_factory("a", workers=1, worker_class="gthread", threads=2)
    s = sluice_factory([a])
    sizes = [1, 100, 65536, 3, 200000, 7, 1 << 20]
    h = hashlib.sha256()
    body = bytearray()
    total = 0
    for i, n in enumerate(sizes):
        data = bytes([(i * 37 + k) & 0xFF for k in range(min(n, 256))]) * (n // 256 + 1)
        data = data[:n]
        h.update(data)
        total += n
        ext = ";name=value" if i == 2 else ""
        body += b"%x%s\r\n" % (n, ext.encode()) + data + b"\r\n"
    body += b"0\r\nX-Trailer: yes\r\n\r\n"
    with Conn(s.port) as c:
        c.request("POST", "/upload", {"Transfer-Encoding": "chunked"})
        # dribble it in pieces of odd sizes
        view = memoryview(bytes(body))
        step = 7777
        for off in range(0, len(view), step):
            c.send(bytes(view[off:off + step]))
        r = c.read_response()
        assert r.status == 200, r
        assert r.json() == {"name": "a", "length": total, "sha256": h.hexdigest()}
        # and the connection is still good
        c.request("GET", "/")
        assert c.read_response().body == b"hello from a\n"


def test_chunked_and_content_length_downloads_are_intact(backend_factory, sluice_factory):
    a = backend_factory("a", workers=1, worker_class="gthread", threads=2)
    s = sluice_factory([a])
    n = 3 * MiB + 12345
    with Conn(s.port) as c:
        for q in ("", "&cl=1"):
            h = hashlib.sha256()
            c.request("GET", "/bytes?n=%d%s" % (n, q))
            r = c.read_response(sink=h.update)
            assert r.status == 200, r
            assert h.hexdigest() == pattern_sha(n), q
            if q:
                assert r.header("Content-Length") == str(n) or r.chunked


def test_http10_client_gets_a_body_without_chunked_coding(backend_factory, sluice_factory):
    a = backend_factory("a", workers=1, worker_class="gthread", threads=2)
    s = sluice_factory([a])
    n = 300000
    req = ("GET /bytes?n=%d HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n" % n).encode()
    sock = socket.create_connection(("127.0.0.1", s.port), timeout=10 * SLOW)
    data = b""
    try:
        sock.sendall(req)
        deadline = time.monotonic() + 20 * SLOW
        while time.monotonic() < deadline:
            d = sock.recv(65536)
            if not d:
                break
            data += d
            head, sep, body = data.partition(b"\r\n\r\n")
            m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            if sep and m and len(body) >= int(m.group(1)):
                break
    finally:
        sock.close()
    head, sep, body = data.partition(b"\r\n\r\n")
    assert sep, data[:300]
    r = helpers.parse_head(head)
    assert r.status == 200, r
    assert r.header("Transfer-Encoding") is None, "chunked sent to an HTTP/1.0 client: %r" % r
    if r.header("Content-Length") is not None:
        assert int(r.header("Content-Length")) == n
    assert len(body) == n
    assert hashlib.sha256(body).hexdigest() == pattern_sha(n)
