"""Helpers for sluice's integration tests: ports, processes (gunicorn backends, raw-socket
backends, sluice itself), a small strict HTTP/1.1 client on raw sockets, RSS sampling.

Everything binds 127.0.0.1 on ports picked here; every process is started here and stopped
by its PID; every wait is bounded."""
import functools
import hashlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TEST_DIR = os.path.dirname(HERE)                       # repo/test (where app.py lives)
REPO = os.path.dirname(TEST_DIR)

# The /bytes pattern comes from the app itself, so what the tests expect cannot drift.
sys.path.insert(0, TEST_DIR)
from app import PATTERN, PIECE, pattern_stream  # noqa: E402,F401
SLUICE_BIN = os.environ.get("SLUICE_BIN", os.path.join(REPO, "build", "sluice"))
SANITIZED = os.environ.get("SLUICE_SANITIZED") == "1"
PYTHON = "/usr/bin/python3"
GUNICORN = "/usr/bin/gunicorn"
CURL = "/usr/bin/curl"

# Slower everything under ASan/UBSan.
SLOW = 3.0 if SANITIZED else 1.0

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "WARNING: ThreadSanitizer")



# ---------------------------------------------------------------- ports and waiting

_PORTS_LO, _PORTS_HI = 20000, 32768  # below Linux's ephemeral range (32768-60999 here)
_next_port = None


def _port_block():
    """This test process's own ports: the range split between pytest-xdist's workers (and
    the process that runs without them)."""
    n = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    w = os.environ.get("PYTEST_XDIST_WORKER", "")
    i = int(w[2:]) + 1 if w.startswith("gw") else 0
    size = (_PORTS_HI - _PORTS_LO) // (n + 1)
    return _PORTS_LO + i * size, _PORTS_LO + (i + 1) * size


def free_port():
    """A port on 127.0.0.1 that nothing is bound to right now, from this process's own
    block, handed out in turn. Not bind(0): that gives an ephemeral port, which another
    xdist worker's bind(0) or any outgoing connection's source port may take before the
    server the test starts binds it (seen under TSan: a sluice could not listen, and its
    test's request reached another test's server)."""
    global _next_port
    lo, hi = _port_block()
    if _next_port is None or not lo <= _next_port < hi:
        _next_port = lo
    for _ in range(hi - lo):
        port = _next_port
        _next_port = lo if _next_port + 1 >= hi else _next_port + 1
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port in %d-%d" % (lo, hi))


def port_open(port, timeout=0.2):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_port(port, timeout=15.0, proc=None, what="server"):
    """Poll until something accepts on 127.0.0.1:port. Fails if `proc` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError("%s exited with %s before listening on %d"
                                 % (what, proc.returncode, port))
        if port_open(port):
            return
        time.sleep(0.05)
    raise AssertionError("%s did not listen on port %d within %.0fs" % (what, port, timeout))


def wait_for(pred, timeout=5.0, interval=0.05, msg="condition"):
    """Poll pred() until it returns something truthy; return that or fail after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, msg))
        time.sleep(interval)


def read_text(path):
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


# ---------------------------------------------------------------- the /bytes pattern

@functools.lru_cache(maxsize=None)
def pattern_sha(n):
    h = hashlib.sha256()
    for p in pattern_stream(n):
        h.update(p)
    return h.hexdigest()


# ---------------------------------------------------------------- processes

def fd_count(pid):
    """Open file descriptors of a process."""
    return len(os.listdir("/proc/%d/fd" % pid))


def cpu_seconds(pid):
    """CPU time (user + system) a process has used, in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def exit_totals(s):
    """The counters of sluice's exit totals line (after it stopped) as a dict."""
    for line in reversed(s.errors().splitlines()):
        if " stats: " in line and "connections=" in line:
            return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}
    raise AssertionError("no exit totals line in the error log:\n%s" % s.errors()[-3000:])


def child_pids(pid):
    """Direct children of pid (from /proc)."""
    kids = set()
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            kids.update(int(x) for x in f.read().split())
    except OSError:
        pass
    if not kids:
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % d) as f:
                    stat = f.read()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == pid:
                kids.add(int(d))
    return sorted(kids)


def pid_alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (OSError, IndexError):
        return False


def rss_kb(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class RssSampler:
    """Samples VmRSS of a pid every `interval` seconds in a thread; max_kb is the peak."""

    def __init__(self, pid, interval=0.05):
        self.pid = pid
        self.interval = interval
        self.max_kb = 0
        self.samples = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            kb = rss_kb(self.pid)
            if kb:
                self.samples += 1
                self.max_kb = max(self.max_kb, kb)
            self._stop.wait(self.interval)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join(5)


class Backend:
    """A gunicorn running test/app.py on 127.0.0.1:port."""

    def __init__(self, workdir, name, workers=2, worker_class="sync", threads=1, env=None,
                 port=None, keepalive=5, extra_args=()):
        self.name = name
        self.extra_args = list(extra_args)
        self.workers = workers
        self.worker_class = worker_class
        self.threads = threads
        self.port = port or free_port()
        self.address = "127.0.0.1:%d" % self.port
        self.log = os.path.join(workdir, "app-%s.log" % name)
        self.out = os.path.join(workdir, "gunicorn-%s.out" % name)
        self.extra_env = dict(env or {})
        self.keepalive = keepalive
        self.proc = None
        self.known_workers = set()

    def start(self, timeout=20.0):
        env = dict(os.environ)
        env.update({"APP_NAME": self.name, "APP_LOG": self.log})
        env.update(self.extra_env)
        argv = [GUNICORN, "--chdir", TEST_DIR, "-b", self.address, "-w", str(self.workers),
                "-k", self.worker_class, "--threads", str(self.threads),
                "--timeout", "120", "--graceful-timeout", "3",
                "--keep-alive", str(self.keepalive),
                "--limit-request-line", "8190", "--limit-request-fields", "300",
                "--limit-request-field_size", "16380", "--log-level", "warning"] + \
            self.extra_args + ["app:app"]
        with open(self.out, "ab") as out:
            self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT)
        wait_port(self.port, timeout, self.proc, "gunicorn %s" % self.name)
        # The master listens before its workers boot; wait until they exist too.
        wait_for(lambda: len(child_pids(self.proc.pid)) >= self.workers, timeout,
                 msg="gunicorn %s workers" % self.name)
        self.known_workers.update(child_pids(self.proc.pid))
        return self

    @property
    def pid(self):
        return self.proc.pid

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def log_lines(self):
        return [l for l in read_text(self.log).splitlines() if l]

    def wait_log(self, needle, timeout=5.0):
        return wait_for(lambda: any(needle in l for l in self.log_lines()), timeout,
                        msg="%r in %s's APP_LOG" % (needle, self.name))

    def kill(self):
        """SIGKILL the master and every worker it had (all started by us)."""
        if self.proc is None:
            return
        self.known_workers.update(child_pids(self.proc.pid))
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        for w in self.known_workers:
            if pid_alive(w):
                try:
                    os.kill(w, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        wait_for(lambda: not any(pid_alive(w) for w in self.known_workers), 10,
                 msg="gunicorn %s workers to die" % self.name)

    def stop(self):
        if self.proc is None:
            return
        self.known_workers.update(child_pids(self.proc.pid))
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(8)
            except subprocess.TimeoutExpired:
                pass
        self.kill()


class RawBackend:
    """A tiny threaded raw-socket server. handler(conn, head_bytes, backend) is called with
    the accepted socket after a request head (through the blank line) has been read; the
    head is also recorded in self.heads."""

    def __init__(self, handler, port=None):
        self.handler = handler
        self.heads = []
        self.port = port or free_port()
        self.address = "127.0.0.1:%d" % self.port
        self.name = "raw"
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", self.port))
        self._sock.listen(64)
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._threads = []
        self._t = threading.Thread(target=self._accept_loop, daemon=True)
        self._t.start()

    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                c, _ = self._sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(c,), daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, c):
        try:
            c.settimeout(10)
            buf = b""
            while b"\r\n\r\n" not in buf and len(buf) < 65536:
                d = c.recv(65536)
                if not d:
                    return
                buf += d
            head, _, rest = buf.partition(b"\r\n\r\n")
            self.heads.append(head + b"\r\n\r\n")
            self.handler(c, head + b"\r\n\r\n", rest, self)
        except OSError:
            pass
        finally:
            try:
                c.close()
            except OSError:
                pass

    def stop(self):
        self._stop.set()
        self._sock.close()
        self._t.join(2)
        for t in self._threads:
            t.join(2)


def keepalive_loop(c, head, rest, respond):
    """A RawBackend handler's body for a keep-alive backend: respond(conn, head) for the
    first request and every one after it on the connection, until the peer closes."""
    buf = rest
    while True:
        respond(c, head)
        while b"\r\n\r\n" not in buf:
            d = c.recv(65536)
            if not d:
                return
            buf += d
        head, _, buf = buf.partition(b"\r\n\r\n")
        head += b"\r\n\r\n"


SLUICE_PROXY_DEFAULTS = {
    "threads": "2",
    "client_header_timeout": "10s",
    "client_body_timeout": "60s",
    "keepalive_timeout": "75s",
    "max_header_size": "16k",
    "max_line_size": "8k",
    "max_headers": "100",
    "max_body_size": "1g",
    "shutdown_grace": "10s",
}

SLUICE_BACKEND_DEFAULTS = {
    "weight": "1",
    "max_fails": "1",
    "fail_timeout": "10s",
    "connect_timeout": "2s",
    "read_timeout": "30s",
    "keepalive": "32",
    "idle_timeout": "1s",
}


def write_config(path, listens, backends, proxy=None, backend_opts=None, log_dir=None,
                 extra=None):
    """Write a sluice INI. backends: list of (name, address) or objects with .name/.address
    (and .workers); backend_opts: dict applied to all, or {name: dict} per backend."""
    log_dir = log_dir or os.path.dirname(path)
    p = dict(SLUICE_PROXY_DEFAULTS)
    p.update({"access_log": os.path.join(log_dir, "access.log"),
              "error_log": os.path.join(log_dir, "error.log"),
              "pid_file": os.path.join(log_dir, "sluice.pid")})
    p.update(proxy or {})
    lines = ["; written by test/integration/helpers.py", "[proxy]"]
    for l in listens:
        lines.append("listen = %s" % l)
    for k, v in p.items():
        if v is not None:
            lines.append("%s = %s" % (k, v))
    backend_opts = backend_opts or {}
    for b in backends:
        if isinstance(b, tuple):
            name, address, workers = b[0], b[1], (b[2] if len(b) > 2 else 1)
        else:
            name, address, workers = b.name, b.address, getattr(b, "workers", 1) * max(
                1, getattr(b, "threads", 1))
        opts = dict(SLUICE_BACKEND_DEFAULTS)
        opts["workers"] = str(workers)
        if backend_opts and all(isinstance(v, dict) for v in backend_opts.values()):
            opts.update(backend_opts.get(name, {}))
        else:
            opts.update(backend_opts)
        lines.append("")
        lines.append("[backend %s]" % name)
        lines.append("address = %s" % address)
        for k, v in opts.items():
            if v is not None:
                lines.append("%s = %s" % (k, v))
    if extra:  # more sections, as INI text: [tenants], [tenant NAME], ...
        lines.append("")
        lines.append(extra.strip())
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def sluice_env():
    env = dict(os.environ)
    if SANITIZED:
        # Freed memory sits in ASan's quarantine (256 MiB by default) and would count as RSS
        # in the streaming tests; keep it small. Everything else as the caller set it.
        opts = env.get("ASAN_OPTIONS", "")
        if "quarantine_size_mb" not in opts:
            env["ASAN_OPTIONS"] = (opts + ":" if opts else "") + "quarantine_size_mb=16"
    return env


class Sluice:
    """A sluice process with a config written into workdir."""

    def __init__(self, workdir, backends, proxy=None, backend_opts=None, listens=1, extra=None):
        self.dir = workdir
        self.ports = [free_port() for _ in range(listens)]
        self.port = self.ports[0]
        self.url = "http://127.0.0.1:%d" % self.port
        self.config = os.path.join(workdir, "sluice.ini")
        self.access_log = os.path.join(workdir, "access.log")
        self.error_log = os.path.join(workdir, "error.log")
        self.pid_file = os.path.join(workdir, "sluice.pid")
        self.stderr_path = os.path.join(workdir, "sluice.stderr")
        self.stdout_path = os.path.join(workdir, "sluice.stdout")
        write_config(self.config, ["127.0.0.1:%d" % p for p in self.ports], backends, proxy,
                     backend_opts, extra=extra)
        self.proc = None
        self.returncode = None

    def start(self, timeout=15.0):
        assert os.access(SLUICE_BIN, os.X_OK), "no sluice binary at %s" % SLUICE_BIN
        with open(self.stdout_path, "ab") as out, open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen([SLUICE_BIN, "-c", self.config], env=sluice_env(),
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        for p in self.ports:
            wait_port(p, timeout * SLOW, self.proc, "sluice")
        if "pid_file = %s\n" % self.pid_file in read_text(self.config):
            # once a port accepts, the pid file names this process, so `sluice -s reload`
            # works at once (it was written after the workers started: under TSan a reload
            # sent the moment the port opened found no pid)
            pid = read_text(self.pid_file).strip() if os.path.exists(self.pid_file) else ""
            assert pid == str(self.proc.pid), "pid file %r once a port accepts" % pid
        return self

    @property
    def pid(self):
        return self.proc.pid

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=None):
        """SIGTERM and wait; returns the exit status (also kept in self.returncode)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout or 30 * SLOW)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                self.returncode = "hung after SIGTERM (SIGKILLed)"
                return self.returncode
        self.returncode = self.proc.returncode
        return self.returncode

    def wait_exit(self, timeout):
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self.returncode = self.proc.returncode
        return self.returncode

    def stderr(self):
        return read_text(self.stderr_path)

    def errors(self):
        return read_text(self.error_log)

    def bug_reports(self):
        """Lines where sluice caught itself in a bug (a request state move not drawn)."""
        text = self.stderr() + "\n" + self.errors()
        return [l for l in text.splitlines() if "bug: " in l]

    def sanitizer_reports(self):
        text = self.stderr() + "\n" + self.errors()
        return [l for l in text.splitlines() if any(m in l for m in SANITIZER_MARKERS)]

    def access_lines(self, path=None):
        return [l for l in read_text(path or self.access_log).splitlines() if l.strip()]

    def wait_access_lines(self, n, timeout=5.0, path=None):
        return wait_for(lambda: (len(self.access_lines(path)) >= n) and self.access_lines(path),
                        timeout * SLOW, msg="%d access log lines" % n)

    def diagnostics(self):
        return "sluice stderr:\n%s\nsluice error log:\n%s" % (self.stderr()[-4000:],
                                                              self.errors()[-4000:])


# ---------------------------------------------------------------- HTTP on raw sockets

class ConnectionClosed(Exception):
    pass


class Response:
    def __init__(self, version, status, reason, headers, body=b"", raw_head=b""):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers          # list of (name, value) as received
        self.body = body
        self.raw_head = raw_head
        self.chunked = False
        self.complete = True

    def header(self, name, default=None):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return default

    def header_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def has(self, name):
        return self.header(name) is not None

    def json(self):
        import json
        return json.loads(self.body)

    def text(self):
        return self.body.decode("utf-8", "replace")

    def __repr__(self):
        return "<Response %s %s %r body=%r>" % (self.status, self.reason, self.headers,
                                                self.body[:200])


_STATUS_RE = re.compile(rb"^HTTP/(1\.[01]) ([0-9]{3})(?: (.*))?$")


def parse_head(head):
    """Parse a response head (bytes without the final CRLFCRLF) strictly."""
    lines = head.split(b"\r\n")
    m = _STATUS_RE.match(lines[0])
    if not m:
        raise AssertionError("bad status line %r" % lines[0])
    headers = []
    for l in lines[1:]:
        if b":" not in l or l[:1] in (b" ", b"\t"):
            raise AssertionError("bad response header line %r" % l)
        k, _, v = l.partition(b":")
        if k != k.strip() or not k:
            raise AssertionError("bad response header name %r" % l)
        headers.append((k.decode("latin-1"), v.strip(b" \t").decode("latin-1")))
    return Response(m.group(1).decode(), int(m.group(2)),
                    (m.group(3) or b"").decode("latin-1"), headers, raw_head=head)


def parse_status(data):
    """Status code of the first response in raw bytes, or None."""
    m = re.match(rb"HTTP/1\.[01] ([0-9]{3})", data)
    return int(m.group(1)) if m else None


class Conn:
    """One client connection with a read buffer, for keep-alive/pipelining tests."""

    def __init__(self, port, timeout=10.0):
        self.port = port
        self.timeout = timeout * SLOW
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.host = "127.0.0.1:%d" % port

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("latin-1")
        self.sock.sendall(data)

    def request(self, method, target, headers=None, body=None, version="1.1", send=True):
        """Build (and send) a request; Host is added unless given; Content-Length is added
        for a body unless Transfer-Encoding or Content-Length is given."""
        hdrs = list(headers.items() if isinstance(headers, dict) else (headers or []))
        names = {k.lower() for k, _ in hdrs}
        if "host" not in names:
            hdrs.insert(0, ("Host", self.host))
        if body is not None and "content-length" not in names and \
                "transfer-encoding" not in names:
            hdrs.append(("Content-Length", str(len(body))))
        data = ("%s %s HTTP/%s\r\n" % (method, target, version)).encode("latin-1")
        for k, v in hdrs:
            data += ("%s: %s\r\n" % (k, v)).encode("latin-1")
        data += b"\r\n"
        if body:
            data += body if isinstance(body, bytes) else body.encode()
        if send:
            self.send(data)
        return data

    def _fill(self):
        d = self.sock.recv(262144)
        if not d:
            raise ConnectionClosed("connection closed by peer")
        self.buf += d

    def _read_until(self, sep, limit=1 << 20):
        while True:
            i = self.buf.find(sep)
            if i >= 0:
                out = bytes(self.buf[:i])
                del self.buf[:i + len(sep)]
                return out
            if len(self.buf) > limit:
                raise AssertionError("no %r within %d bytes" % (sep, limit))
            self._fill()

    def _read_n(self, n, sink=None):
        got = 0
        out = bytearray() if sink is None else None
        while got < n:
            if not self.buf:
                self._fill()
            take = min(n - got, len(self.buf))
            piece = bytes(self.buf[:take])
            del self.buf[:take]
            got += take
            if sink is None:
                out += piece
            else:
                sink(piece)
        return bytes(out) if out is not None else b""

    def read_head(self):
        return parse_head(self._read_until(b"\r\n\r\n"))

    def read_response(self, method="GET", sink=None, allow_interim=False):
        """Read one response. 1xx interim responses are skipped unless allow_interim.
        The body is returned in .body unless sink (a callable) is given."""
        while True:
            r = self.read_head()
            if 100 <= r.status < 200 and r.status != 101 and not allow_interim:
                continue
            break
        if method == "HEAD" or 100 <= r.status < 200 or r.status in (204, 304):
            return r
        te = r.header("Transfer-Encoding")
        cl = r.header("Content-Length")
        if te is not None:
            assert te.lower() == "chunked", "unexpected Transfer-Encoding %r" % te
            assert cl is None, "response has both Content-Length and Transfer-Encoding"
            r.chunked = True
            body = bytearray()
            while True:
                line = self._read_until(b"\r\n", 4096)
                size = int(line.split(b";")[0].strip(), 16)
                if size == 0:
                    while self._read_until(b"\r\n", 8192):  # trailers
                        pass
                    break
                if sink is None:
                    body += self._read_n(size)
                else:
                    self._read_n(size, sink)
                assert self._read_until(b"\r\n", 2) == b"", "bad chunk data terminator"
            r.body = bytes(body)
        elif cl is not None:
            vals = set(v.strip() for v in ",".join(r.header_all("Content-Length")).split(","))
            assert len(vals) == 1, "conflicting Content-Length %r" % vals
            r.body = self._read_n(int(vals.pop()), sink)
        else:
            # read until close
            body = bytearray()
            while True:
                try:
                    self._fill()
                except ConnectionClosed:
                    break
                if sink is None:
                    body += self.buf
                else:
                    sink(bytes(self.buf))
                self.buf.clear()
            if sink is None:
                body += self.buf
            self.buf.clear()
            r.body = bytes(body)
        return r

    def wait_closed(self, timeout):
        """Wait for EOF (or reset) from the peer. Returns (closed, bytes_received)."""
        self.sock.settimeout(timeout)
        got = bytes(self.buf)
        self.buf.clear()
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                self.sock.settimeout(max(0.01, deadline - time.monotonic()))
                d = self.sock.recv(65536)
                if not d:
                    return True, got
                got += d
        except socket.timeout:
            return False, got
        except ConnectionResetError:
            return True, got
        finally:
            self.sock.settimeout(self.timeout)
        return False, got


def request(port, method, target, headers=None, body=None, timeout=10.0):
    """One request on a new connection; returns the Response."""
    with Conn(port, timeout) as c:
        c.request(method, target, headers, body)
        return c.read_response(method)


def status_json(port):
    """The admin listener's /status.json on port, parsed."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", "/status.json")
    doc = json.loads(c.getresponse().read())
    c.close()
    return doc


def raw(port, data, timeout=5.0):
    """Send raw bytes, read until the peer closes or `timeout` passes; return what came."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    out = b""
    try:
        if data:
            s.sendall(data)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                d = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                break
            if not d:
                break
            out += d
    finally:
        s.close()
    return out


def is_sluice_error(r, status):
    """A response sluice generated itself: status, X-Sluice-Error, body 'sluice:...'."""
    return (r.status == status and r.header("X-Sluice-Error") and
            r.body.startswith(b"sluice:"))


class ChunkedDecoder:
    """Incremental decoder for a chunked body: feed() raw bytes; .data counts payload bytes,
    .done is set after the last chunk and trailers, .error on malformed framing."""

    def __init__(self):
        self.state = "size"
        self.remaining = 0
        self.line = bytearray()
        self.data = 0
        self.done = False
        self.error = None

    def feed(self, b):
        i = 0
        n = len(b)
        while i < n and not self.done and not self.error:
            if self.state == "data":
                take = min(self.remaining, n - i)
                self.data += take
                self.remaining -= take
                i += take
                if self.remaining == 0:
                    self.state = "crlf"
                continue
            j = b.find(b"\n", i)
            if j < 0:
                self.line += b[i:]
                if len(self.line) > 8192:
                    self.error = "line too long"
                return
            self.line += b[i:j + 1]
            i = j + 1
            line = bytes(self.line)
            self.line.clear()
            if not line.endswith(b"\r\n"):
                self.error = "bare LF"
                return
            line = line[:-2]
            if self.state == "size":
                try:
                    size = int(line.split(b";")[0].strip(), 16)
                except ValueError:
                    self.error = "bad chunk size %r" % line
                    return
                if size == 0:
                    self.state = "trailer"
                else:
                    self.remaining = size
                    self.state = "data"
            elif self.state == "crlf":
                if line:
                    self.error = "no CRLF after chunk data"
                    return
                self.state = "size"
            elif self.state == "trailer":
                if not line:
                    self.done = True


def concurrent_names(port, n, target):
    """n requests to target at once (one thread each); the X-App-Name of each answer."""
    out, errors = [], []
    lock = threading.Lock()

    def one():
        try:
            r = request(port, "GET", target, timeout=30)
            assert r.status == 200, r
            with lock:
                out.append(r.header("X-App-Name"))
        except Exception as e:
            errors.append(repr(e))

    ts = [threading.Thread(target=one) for _ in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(40 * SLOW)
    assert not errors, errors[:3]
    return out


# ---------------------------------------------------------------- redis-server

REDIS_SERVER = "/usr/bin/redis-server"
REDIS_CLI = "/usr/bin/redis-cli"


class RedisServer:
    """A redis-server on 127.0.0.1:port (no persistence) with its files in workdir.
    start() (again on the same port after kill()), kill() (SIGKILL + wait), pause()/resume()
    (SIGSTOP/SIGCONT), cli(*args) runs redis-cli against it and returns its stdout;
    stop() always sends SIGCONT before killing."""

    def __init__(self, workdir, port=None):
        self.dir = workdir
        self.port = port or free_port()
        self.url = "redis://127.0.0.1:%d" % self.port
        self.log = os.path.join(workdir, "redis-%d.log" % self.port)
        self.proc = None
        self.paused = False

    @property
    def pid(self):
        return self.proc.pid if self.proc is not None else None

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout=10.0):
        assert not self.running(), "redis-server already running (pid %d)" % self.proc.pid
        argv = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--daemonize", "no",
                "--dir", self.dir, "--logfile", self.log]
        with open(self.log + ".out", "ab") as out:
            self.proc = subprocess.Popen(argv, cwd=self.dir, stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=subprocess.STDOUT)
        self.paused = False
        deadline = time.monotonic() + timeout
        while not self.ping():
            if self.proc.poll() is not None:
                raise AssertionError("redis-server exited with %s:\n%s" % (
                    self.proc.returncode, read_text(self.log)[-2000:]))
            if time.monotonic() > deadline:
                raise AssertionError("redis-server on port %d did not answer PING within "
                                     "%.0fs" % (self.port, timeout))
            time.sleep(0.05)
        return self

    def cli(self, *args, timeout=5.0):
        p = subprocess.run([REDIS_CLI, "-h", "127.0.0.1", "-p", str(self.port)] +
                           [str(a) for a in args], stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=timeout)
        return p.stdout.decode("utf-8", "replace")

    def ping(self, timeout=1.0):
        try:
            return self.cli("PING", timeout=timeout).strip() == "PONG"
        except subprocess.TimeoutExpired:
            return False

    def kill(self):
        """SIGKILL and wait: the port refuses connections when this returns."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.paused = False

    def pause(self):
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.paused = True

        def stopped():
            with open("/proc/%d/stat" % self.proc.pid) as f:
                return f.read().rsplit(")", 1)[1].split()[0] in ("T", "t")
        wait_for(stopped, 5, 0.01, msg="redis-server to stop (SIGSTOP)")

    def resume(self):
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
        self.paused = False

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)  # a stopped process cannot act on SIGTERM
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        self.kill()
