"""A third backend for the soak (test/soak/soak.sh): test/app.py's WSGI app behind a small
threaded HTTP/1.1 server that also accepts WebSocket-style upgrades.

test/app.py runs under Gunicorn, which cannot answer `101 Switching Protocols`, so sluice's
tunnel code would go untested in the soak. This server answers a request carrying
`Upgrade: websocket` with 101 and then echoes every byte it receives until the client
closes (a tunnel message "bye\\n" makes the server close first instead). Every other
request goes to app.app exactly as Gunicorn would hand it over (the body is read first,
by Content-Length or chunked), so it is an ordinary pool member: anything wrk or the
driver sends may land here and gets the same answer as from Gunicorn. Keep-alive as
HTTP/1.1 says; responses without a Content-Length are sent chunked.

Run:  python3 test/soak/upgrade_backend.py PORT [NAME]
Stops on SIGTERM/SIGINT. Binds 127.0.0.1 only. Standard library only.
"""
import base64
import hashlib
import io
import os
import signal
import socket
import sys
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # test/, where app.py lives
os.environ.setdefault("APP_NAME", sys.argv[2] if len(sys.argv) > 2 else "ws")
import app as wsgi_app  # noqa: E402

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
IDLE = 30.0          # seconds a connection may sit idle (sluice's idle_timeout is shorter)
MAX_HEAD = 65536


class BadRequest(Exception):
    pass


class Conn:
    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()

    def fill(self):
        d = self.sock.recv(262144)
        if not d:
            raise EOFError
        self.buf += d

    def read_head(self):
        while b"\r\n\r\n" not in self.buf:
            if len(self.buf) > MAX_HEAD:
                raise BadRequest("head too large")
            self.fill()
        i = self.buf.index(b"\r\n\r\n")
        head = bytes(self.buf[:i]).decode("latin-1")
        del self.buf[:i + 4]
        return head

    def read_exact(self, n):
        while len(self.buf) < n:
            self.fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_line(self):
        while b"\r\n" not in self.buf:
            if len(self.buf) > MAX_HEAD:
                raise BadRequest("line too long")
            self.fill()
        i = self.buf.index(b"\r\n")
        line = bytes(self.buf[:i])
        del self.buf[:i + 2]
        return line

    def read_chunked(self):
        out = bytearray()
        while True:
            size = int(self.read_line().split(b";")[0].strip(), 16)
            if size == 0:
                while self.read_line():  # trailers up to the empty line
                    pass
                return bytes(out)
            out += self.read_exact(size)
            if self.read_exact(2) != b"\r\n":
                raise BadRequest("chunk not followed by CRLF")


def parse_head(head):
    lines = head.split("\r\n")
    try:
        method, target, version = lines[0].split(" ")
    except ValueError:
        raise BadRequest("bad request line")
    headers = []
    for l in lines[1:]:
        name, sep, value = l.partition(":")
        if not sep:
            raise BadRequest("bad header line")
        headers.append((name.strip().lower(), value.strip()))
    return method, target, version, headers


def hget(headers, name, default=None):
    for k, v in headers:
        if k == name:
            return v
    return default


def tunnel(c, headers):
    key = hget(headers, "sec-websocket-key", "")
    accept = base64.b64encode(hashlib.sha1(key.encode("latin-1") + WS_GUID).digest())
    c.sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                   b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
    pending = bytes(c.buf)
    c.buf.clear()
    while True:
        if pending:
            if b"bye\n" in pending:
                c.sock.sendall(pending[:pending.index(b"bye\n")])
                return  # the server ends the tunnel
            c.sock.sendall(pending)
        pending = c.sock.recv(262144)
        if not pending:
            return


def serve_wsgi(c, method, target, version, headers, body):
    path, _, query = target.partition("?")
    environ = {
        "REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query,
        "SERVER_PROTOCOL": version, "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "0",
        "REMOTE_ADDR": c.sock.getpeername()[0], "SCRIPT_NAME": "",
        "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr, "wsgi.multithread": True, "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    for k, v in headers:
        if k == "content-type":
            environ["CONTENT_TYPE"] = v
        elif k == "content-length":
            environ["CONTENT_LENGTH"] = v
        else:
            key = "HTTP_" + k.upper().replace("-", "_")
            environ[key] = environ[key] + "," + v if key in environ else v
    started = {}

    def start_response(status, resp_headers, exc_info=None):
        started["status"], started["headers"] = status, resp_headers

    result = wsgi_app.app(environ, start_response)
    status = started["status"]
    code = int(status.split()[0])
    rh = list(started["headers"])
    has_cl = any(k.lower() == "content-length" for k, _ in rh)
    no_body = method == "HEAD" or code in (204, 304) or code < 200
    chunked = not has_cl and not no_body
    if chunked:
        rh.append(("Transfer-Encoding", "chunked"))
    close = version == "HTTP/1.0" or "close" in hget(headers, "connection", "").lower()
    if close:
        rh.append(("Connection", "close"))
    out = ["HTTP/1.1 %s\r\n" % status] + ["%s: %s\r\n" % kv for kv in rh] + ["\r\n"]
    c.sock.sendall("".join(out).encode("latin-1"))
    try:
        for piece in result:
            if no_body or not piece:
                continue
            if chunked:
                c.sock.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
            else:
                c.sock.sendall(piece)
        if chunked:
            c.sock.sendall(b"0\r\n\r\n")
    finally:
        if hasattr(result, "close"):
            result.close()
    return not close


def handle(sock):
    c = Conn(sock)
    sock.settimeout(IDLE)
    try:
        while True:
            head = c.read_head()
            method, target, version, headers = parse_head(head)
            if "websocket" in hget(headers, "upgrade", "").lower():
                tunnel(c, headers)
                return
            te = hget(headers, "transfer-encoding", "")
            if "chunked" in te.lower():
                body = c.read_chunked()
            else:
                body = c.read_exact(int(hget(headers, "content-length", "0") or 0))
            if not serve_wsgi(c, method, target, version, headers, body):
                return
    except BadRequest:
        try:
            sock.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                         b"Connection: close\r\n\r\n")
        except OSError:
            pass
    except (EOFError, OSError, ValueError):
        pass
    finally:
        try:
            sock.close()
        except OSError:
            pass


def main():
    port = int(sys.argv[1])
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port))
    ls.listen(512)
    stop = threading.Event()

    def on_term(signum, frame):
        stop.set()
        try:
            ls.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        ls.close()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    while not stop.is_set():
        try:
            s, _ = ls.accept()
        except OSError:
            break
        threading.Thread(target=handle, args=(s,), daemon=True).start()


if __name__ == "__main__":
    main()
