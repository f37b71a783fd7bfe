"""A small WSGI app (stdlib only) that stands in for a real Gunicorn application in sluice's
integration tests and demo.

Run:  gunicorn --chdir test -b 127.0.0.1:8001 -w 2 app:app

Environment:
  APP_NAME      name reported by "/" and in the X-App-Name response header (default "app")
  APP_LOG       if set, every request appends one line "METHOD PATH[?QUERY]" to this file,
                before anything else happens (so tests can prove a request never got here)
  APP_DELAY_MS  if set, every request except /health first sleeps this long (a slow backend)
  APP_HEALTH_FILE  if set, /health answers 503 "unhealthy" while this file exists (tests
                make a backend fail its health checks by creating it, recover by removing it)

Endpoints:
  /                 "hello from NAME"
  /echo             JSON: method, path, query, version, headers (lower-case names), body
                    length and sha256
  /slow?ms=N        sleeps N ms, then answers "slept N" (&spread=P: a time drawn uniformly
                    from N x (1 - P/100) to N x (1 + P/100), mean N: a pool of varied requests;
                    &sigma=S: lognormal with median N; &alt=A&p=P: A ms with chance P)
  /hold?file=F      waits until file F exists (polled every 5 ms; &ms=N: at most N ms, 10000
                    by default), then answers "held": a request a test lets finish when it is
                    ready, not after a guessed time
  /concurrent?ms=N  like /slow, counting requests in progress in this process
  /peak             the most /concurrent requests seen in progress at once (?reset=1 clears)
  /bytes?n=N        streams N bytes (a fixed pattern, see PATTERN) from a generator in
                    64 KiB pieces; no Content-Length unless &cl=1
  /status/CODE      that status; 204 and 304 have no body (&cl=N adds Content-Length: N anyway)
  /redirect         302 with Location: /echo?from=redirect
  /cookie           two Set-Cookie headers
  /upload           reads the body in pieces (&delay_ms=N: sleeps N ms after each 64 KiB
                    piece, a slow reader); JSON with its length and sha256
  /conn             JSON: worker pid and the peer (proxy-side) port of this connection
  /health           "ok" (503 "unhealthy" while APP_HEALTH_FILE exists)
  .../sqllab/...    any path with a "sqllab" segment, however written: like /concurrent (the
                    route-cap tests write it every way a client can)
  /headbody?body=B  B as the body with its Content-Length, for every method: a naive app
                    that sends a body for HEAD too (Gunicorn passes it on)
"""
import hashlib
import http
import json
import os
import random
import threading
import time
from urllib.parse import parse_qs

PIECE = 64 * 1024
# The /bytes pattern: bytes 0..255 repeated; piece k of the stream is PATTERN, the tail is
# PATTERN[:n % PIECE]. Tests compute the same sha256 without talking to the app.
PATTERN = bytes(range(256)) * (PIECE // 256)

NAME = os.environ.get("APP_NAME", "app")
LOG = os.environ.get("APP_LOG")
DELAY_MS = int(os.environ.get("APP_DELAY_MS", "0") or 0)
HEALTH_FILE = os.environ.get("APP_HEALTH_FILE")
_conc_lock = threading.Lock()
_conc = {"now": 0, "peak": 0}


def pattern_stream(n):
    """Yield n bytes of the /bytes pattern in 64 KiB pieces."""
    full, rest = divmod(n, PIECE)
    for _ in range(full):
        yield PATTERN
    if rest:
        yield PATTERN[:rest]


def _log(environ):
    if not LOG:
        return
    line = "%s %s" % (environ.get("REQUEST_METHOD", "?"), environ.get("PATH_INFO", ""))
    if environ.get("QUERY_STRING"):
        line += "?" + environ["QUERY_STRING"]
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode("utf-8", "replace"))
    finally:
        os.close(fd)


def _status_line(code):
    try:
        return "%d %s" % (code, http.HTTPStatus(code).phrase)
    except ValueError:
        return "%d Unknown" % code


def _headers(environ):
    out = {}
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            out[key[5:].replace("_", "-").lower()] = value
    if environ.get("CONTENT_TYPE"):
        out["content-type"] = environ["CONTENT_TYPE"]
    if environ.get("CONTENT_LENGTH"):
        out["content-length"] = environ["CONTENT_LENGTH"]
    return out


def _read_body(environ, delay_ms=0):
    """Read the whole body in 64 KiB pieces, sleeping delay_ms after each; return
    (length, sha256 hex)."""
    h = hashlib.sha256()
    total = 0
    stream = environ["wsgi.input"]
    while True:
        piece = stream.read(PIECE)
        if not piece:
            break
        if delay_ms:
            time.sleep(delay_ms / 1000.0)
        total += len(piece)
        h.update(piece)
    return total, h.hexdigest()


def _reply(start_response, code, body, ctype="text/plain", extra=None, head=False):
    if isinstance(body, str):
        body = body.encode()
    headers = [("Content-Type", ctype), ("Content-Length", str(len(body))), ("X-App-Name", NAME)]
    headers.extend(extra or [])
    start_response(_status_line(code), headers)
    return [b""] if head else [body]


def _json(start_response, obj, head=False):
    return _reply(start_response, 200, json.dumps(obj, sort_keys=True) + "\n",
                  "application/json", head=head)


def app(environ, start_response):
    _log(environ)
    path = environ.get("PATH_INFO", "/")
    method = environ.get("REQUEST_METHOD", "GET")
    head = method == "HEAD"  # gunicorn would send a HEAD body if we gave it one
    query = parse_qs(environ.get("QUERY_STRING", ""))

    def q(name, default=None):
        return query.get(name, [default])[0]

    if path == "/health":
        if HEALTH_FILE and os.path.exists(HEALTH_FILE):
            return _reply(start_response, 503, "unhealthy\n", head=head)
        return _reply(start_response, 200, "ok\n", head=head)
    if DELAY_MS:
        time.sleep(DELAY_MS / 1000.0)

    if path == "/":
        return _reply(start_response, 200, "hello from %s\n" % NAME, head=head)

    if path == "/echo":
        length, digest = _read_body(environ)
        return _json(start_response, {
            "name": NAME,
            "method": method,
            "path": path,
            "query": environ.get("QUERY_STRING", ""),
            "version": environ.get("SERVER_PROTOCOL", ""),
            "remote_addr": environ.get("REMOTE_ADDR", ""),
            "headers": _headers(environ),
            "body_length": length,
            "body_sha256": digest,
        }, head=head)

    if path == "/upload":
        length, digest = _read_body(environ, int(q("delay_ms", "0")))
        return _json(start_response, {"name": NAME, "length": length, "sha256": digest},
                     head=head)

    if path == "/concurrent" or "sqllab" in path.split("/"):
        with _conc_lock:
            _conc["now"] += 1
            _conc["peak"] = max(_conc["peak"], _conc["now"])
        time.sleep(int(q("ms", "100")) / 1000.0)
        with _conc_lock:
            _conc["now"] -= 1
        return _reply(start_response, 200, "ok\n", head=head)

    if path == "/fetches":  # a page that fires n fetches at once, as a Superset dashboard does
        n, ms = int(q("n", "30")), int(q("ms", "1500"))
        page = """<!doctype html><html><body><p id="out">running</p><script>
const t0 = performance.now();
Promise.all(Array.from({length: %d}, (_, i) => fetch("/concurrent?ms=%d&i=" + i)
  .then(r => r.status))).then(st => {
  const protos = new Set(performance.getEntriesByType("resource").map(e => e.nextHopProtocol));
  document.getElementById("out").textContent = "done " + st.filter(s => s === 200).length +
    " " + Array.from(protos).join(",") + " " + Math.round(performance.now() - t0);
});
</script></body></html>
""" % (n, ms)
        return _reply(start_response, 200, page, ctype="text/html", head=head)

    if path == "/peak":
        with _conc_lock:
            peak = _conc["peak"]
            if q("reset"):
                _conc["peak"] = 0
        return _reply(start_response, 200, "%d\n" % peak, head=head)

    if path == "/slow":
        ms = int(q("ms", "1000"))
        spread = int(q("spread", "0"))  # percent: uniform in ms x (1 +- spread/100)
        t = ms * (1 + random.uniform(-spread, spread) / 100.0)
        if q("sigma", ""):  # lognormal, median ms
            t = ms * random.lognormvariate(0, float(q("sigma", "0")))
        if q("alt", "") and random.random() < float(q("p", "0")):  # ms, or alt with chance p
            t = float(q("alt", "0"))
        time.sleep(t / 1000.0)
        return _reply(start_response, 200, "slept %d\n" % ms, head=head)

    if path == "/hold":
        gate, deadline = q("file", ""), time.monotonic() + int(q("ms", "10000")) / 1000.0
        while gate and not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.005)
        return _reply(start_response, 200, "held\n", head=head)

    if path == "/bytes":
        n = int(q("n", "0"))
        headers = [("Content-Type", "application/octet-stream"), ("X-App-Name", NAME)]
        if q("cl") == "1":
            headers.append(("Content-Length", str(n)))
        start_response("200 OK", headers)
        if head:
            return [b""]
        return pattern_stream(n)

    if path.startswith("/status/"):
        try:
            code = int(path[len("/status/"):])
        except ValueError:
            return _reply(start_response, 400, "bad status\n")
        if code in (204, 304) or code < 200:
            headers = [("X-App-Name", NAME)]
            if q("cl"):
                headers.append(("Content-Length", q("cl")))
            start_response(_status_line(code), headers)
            return [b""]
        return _reply(start_response, code, "status %d\n" % code, head=head)

    if path == "/headbody":  # the body even for HEAD, as many plain WSGI apps do
        return _reply(start_response, 200, q("body", ""))

    if path == "/redirect":
        return _reply(start_response, 302, "see /echo\n",
                      extra=[("Location", "/echo?from=redirect")], head=head)

    if path == "/cookie":
        return _reply(start_response, 200, "cookies\n",
                      extra=[("Set-Cookie", "a=1; Path=/"),
                             ("Set-Cookie", "b=2; Path=/; HttpOnly")], head=head)

    if path == "/conn":
        sock = environ.get("gunicorn.socket")
        peer = sock.getpeername() if sock is not None else ("", 0)
        return _json(start_response, {"name": NAME, "pid": os.getpid(), "peer_port": peer[1]},
                     head=head)

    return _reply(start_response, 404, "not found: %s\n" % path, head=head)
