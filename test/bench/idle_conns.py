#!/usr/bin/python3
"""Open N idle keep-alive client connections to HOST:PORT for the memory benchmark.

Each connection sends one `GET PATH HTTP/1.1`, reads the whole response (Content-Length
framing), then stays open and idle. At most --inflight connections are being set up at
once so the proxy's listen backlog never overflows. When every connection is either
established-and-answered or failed, one line is written to --ready:

    ok=N failed=N non200=N elapsed=S

and the script holds the connections until SIGTERM/SIGINT (or --hold seconds), watching
for any the server closes. On exit it writes `closed_by_server=N` to --done.
Standard library only; run with /usr/bin/python3.
"""
import argparse
import errno
import os
import resource
import selectors
import signal
import socket
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("-n", type=int, default=10000)
    ap.add_argument("--path", default="/small")
    ap.add_argument("--inflight", type=int, default=200)
    ap.add_argument("--setup-timeout", type=float, default=90.0)
    ap.add_argument("--hold", type=float, default=120.0)
    ap.add_argument("--ready", required=True)
    ap.add_argument("--done", required=True)
    a = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if a.n + 32 > hard:
        print(f"idle_conns: need {a.n + 32} fds, hard limit is {hard}", file=sys.stderr)
        return 2

    stop = False

    def on_sig(signum, frame):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_sig)
    signal.signal(signal.SIGINT, on_sig)

    req = (f"GET {a.path} HTTP/1.1\r\nHost: {a.host}:{a.port}\r\n"
           "User-Agent: sluice-bench-idle\r\n\r\n").encode()
    sel = selectors.EpollSelector()
    state = {}          # sock -> [phase, buffer]; phase: "connect" | "read" | "idle"
    idle = []
    started = ok = failed = non200 = 0
    t0 = time.monotonic()

    def fail(s):
        nonlocal failed
        failed += 1
        try:
            sel.unregister(s)
        except (KeyError, ValueError):
            pass
        state.pop(s, None)
        s.close()

    def response_complete(buf: bytes):
        """None if more bytes are needed, else the status code."""
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = buf[:end].decode("latin-1").split("\r\n")
        try:
            code = int(head[0].split()[1])
        except (IndexError, ValueError):
            return -1
        clen = 0
        for line in head[1:]:
            k, _, v = line.partition(":")
            if k.strip().lower() == "content-length":
                clen = int(v.strip())
            elif k.strip().lower() == "transfer-encoding":
                # the origin always sends Content-Length; chunked: wait for the terminator
                return code if buf.endswith(b"0\r\n\r\n") else None
        return code if len(buf) - (end + 4) >= clen else None

    while ok + failed < a.n:
        if time.monotonic() - t0 > a.setup_timeout or stop:
            break
        while started < a.n and len(state) < a.inflight:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            rc = s.connect_ex((a.host, a.port))
            started += 1
            if rc not in (0, errno.EINPROGRESS):
                failed += 1
                s.close()
                continue
            state[s] = ["connect", b""]
            sel.register(s, selectors.EVENT_WRITE)
        for key, ev in sel.select(timeout=0.5):
            s = key.fileobj
            st = state.get(s)
            if st is None:
                continue
            if st[0] == "connect":
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
                    fail(s)
                    continue
                try:
                    s.send(req)  # tiny; fits in the socket buffer
                except OSError:
                    fail(s)
                    continue
                st[0] = "read"
                sel.modify(s, selectors.EVENT_READ)
            else:
                try:
                    chunk = s.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    fail(s)
                    continue
                if not chunk:
                    fail(s)
                    continue
                st[1] += chunk
                code = response_complete(st[1])
                if code is None:
                    continue
                if code != 200:
                    non200 += 1
                ok += 1
                st[0] = "idle"
                st[1] = b""
                del state[s]
                idle.append(s)  # stays registered for READ: EOF means the server closed it

    # anything still being set up when the deadline hit counts as failed
    for s in list(state):
        fail(s)
    elapsed = time.monotonic() - t0
    with open(a.ready + ".tmp", "w") as f:
        f.write(f"ok={ok} failed={failed} non200={non200} elapsed={elapsed:.2f}\n")
    os.rename(a.ready + ".tmp", a.ready)

    closed = 0
    open_set = set(idle)
    deadline = time.monotonic() + a.hold
    while not stop and time.monotonic() < deadline:
        for key, ev in sel.select(timeout=0.5):
            s = key.fileobj
            if s not in open_set:
                continue
            try:
                chunk = s.recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                chunk = b""
            if not chunk:
                closed += 1
                open_set.discard(s)
                sel.unregister(s)
                s.close()
    with open(a.done, "w") as f:
        f.write(f"closed_by_server={closed}\n")
    for s in open_set:
        s.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
