"""Request bodies held in memory have one process-wide bound ([proxy] buffer_memory).

Found as an attacker would (issue 17): 1,000 clients each sending 1,000,000 body bytes and then
stalling took sluice from 8 MB to 1,027 MB, and it stayed near 1 GB after they left. Now a body
reserves its room before it is read; one that does not fit is refused with 503 buffers-full,
and the memory goes back to the kernel when the clients leave."""
import hashlib
import json
import resource
import selectors
import socket
import time

from helpers import SANITIZED, SLOW, Conn, exit_totals, rss_kb, status_json, wait_for

MB = 1 << 20


def _stalled_uploads(port, clients, sent, length, deadline_s):
    """`clients` connections each send a head announcing `length` body bytes, then `sent`
    of them, then stall. Returns (sockets still waiting, answers read: list of bytes)."""
    body = b"x" * sent
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < clients + 256:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, clients + 1024), hard))
    sel = selectors.DefaultSelector()
    state = {}
    for i in range(clients):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.setblocking(False)
        head = ("POST /upload?i=%d HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n"
                % (i, length)).encode()
        state[s] = {"out": memoryview(head + body), "in": b""}
        sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE)
    answered, end = [], time.monotonic() + deadline_s
    while time.monotonic() < end:
        busy = [s for s, st in state.items() if st["out"] and st["in"] is not None]
        if not busy and all(st["in"] is None or not st["out"] for st in state.values()):
            break
        for key, ev in sel.select(0.2):
            s, st = key.fileobj, state[key.fileobj]
            if ev & selectors.EVENT_READ:
                try:
                    d = s.recv(65536)
                except (ConnectionResetError, BlockingIOError):
                    d = b""
                st["in"] += d
                if not d or b"\r\n\r\n" in st["in"]:
                    answered.append(st["in"])
                    st["in"] = None
                    sel.unregister(s)
                    continue
            if ev & selectors.EVENT_WRITE and st["out"]:
                try:
                    n = s.send(st["out"][:262144])
                    st["out"] = st["out"][n:]
                except (BlockingIOError, ConnectionResetError, BrokenPipeError):
                    pass
                if not st["out"]:
                    sel.modify(s, selectors.EVENT_READ)
    waiting = [s for s, st in state.items() if st["in"] is not None]
    for s, st in state.items():
        if st["in"] is None:
            s.close()
    sel.close()
    return waiting, answered


def test_a_thousand_stalled_uploads_stay_under_buffer_memory(backend_factory, sluice_factory,
                                                             free_port):
    a = backend_factory("a", workers=2, worker_class="gthread", threads=4)
    admin = free_port()
    s = sluice_factory([a], proxy={"buffer_memory": "64m", "client_body_timeout": "120s"},
                       extra="[admin]\nlisten = 127.0.0.1:%d\n" % admin)
    with Conn(s.port) as c:  # warm: the threads' arenas and the pool exist
        for _ in range(4):
            c.request("POST", "/echo", body=b"y" * 100000)
            assert c.read_response().status == 200
    base = rss_kb(s.pid)
    waiting, answered = _stalled_uploads(s.port, 1000, 1000000, 1000001, 60 * SLOW)
    try:
        peak = rss_kb(s.pid)
        doc = status_json(admin)
        held = doc["buffers"]["used"]
        # every client either holds a buffered body or was told 503 buffers-full, at once
        refused = [r for r in answered if r.startswith(b"HTTP/1.1 503 ")
                   and b"X-Sluice-Error: buffers-full" in r and b"Retry-After: 1" in r]
        assert len(refused) == len(answered), [r[:120] for r in answered if r not in refused][:3]
        assert len(waiting) + len(answered) == 1000
        assert held == len(waiting) * 1000001, (held, len(waiting))
        assert held <= 64 * MB and len(waiting) >= 60, (held, len(waiting))
        grew = (peak - base) // 1024
        print("1000 stalled uploads: %d held (%d bytes), %d refused; RSS %d -> %d kB"
              % (len(waiting), held, len(refused), base, peak))
        assert grew < (160 if SANITIZED else 64 + 24), \
            "sluice grew by %d MB for a 64 MB bound (%d kB -> %d kB)" % (grew, base, peak)
        # a client under the bound is still served, a new body over it is refused
        assert doc["totals"]["rejected_buffers"] == len(refused)
    finally:
        for sock in waiting:
            sock.close()
    wait_for(lambda: status_json(admin)["buffers"]["used"] == 0, 10 * SLOW,
             msg="the bodies' reservations returned")
    with Conn(s.port) as c:
        c.request("POST", "/echo", body=b"z" * 500000)
        r = c.read_response()
        assert r.status == 200, r
        assert json.loads(r.body)["body_sha256"] == hashlib.sha256(b"z" * 500000).hexdigest()
    if not SANITIZED:  # ASan's allocator keeps its own free lists: no malloc_trim there
        wait_for(lambda: rss_kb(s.pid) - base < 16 * 1024, 10 * SLOW,
                 msg="RSS back near %d kB (now %d kB)" % (base, rss_kb(s.pid)))
    assert s.stop() == 0
    t = exit_totals(s)
    assert t.get("rejected_buffers") == len(refused), t


def test_a_body_trickled_a_byte_at_a_time_costs_its_bytes(backend_factory, sluice_factory):
    """Moving libevent chains from the input costs one read's chain (about a kilobyte) per
    byte when a client sends a byte per packet; small pieces are copied instead."""
    a = backend_factory("a", workers=1)
    s = sluice_factory([a], proxy={"threads": "1"})
    n = 60000
    with Conn(s.port) as c:
        c.request("POST", "/echo", body=b"w" * 10)
        assert c.read_response().status == 200
        base = rss_kb(s.pid)
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % n)
        peak = base
        for i in range(n):
            c.sock.send(b"q")
            if i % 2000 == 0:
                peak = max(peak, rss_kb(s.pid))
        r = c.read_response()
        peak = max(peak, rss_kb(s.pid))
    assert r.status == 200 and json.loads(r.body)["body_length"] == n, r
    print("a %d-byte body a byte at a time: RSS %d -> %d kB" % (n, base, peak))
    # under ASan freed chains wait in its quarantine (16 MB here) before reuse
    assert (peak - base) < (40 if SANITIZED else 12) * 1024, \
        "a %d-byte body cost %d kB" % (n, peak - base)


def test_a_head_as_large_as_max_header_size_is_read_whole(backend_factory, sluice_factory):
    """A client's input is held up to what the largest allowed head needs, and no more."""
    a = backend_factory("a", workers=1)
    s = sluice_factory([a], proxy={"max_header_size": "512k"})
    # 360 kB in fields Gunicorn accepts (8190 bytes each at most, 100 fields)
    fields = "".join("X-Big-%d: %s\r\n" % (i, "v" * 4000) for i in range(90))
    with Conn(s.port) as c:
        c.sock.sendall(("GET /echo HTTP/1.1\r\nHost: t\r\n%s\r\n" % fields).encode())
        r = c.read_response()
        assert r.status == 200, r
        assert len(json.loads(r.body)["headers"]["x-big-89"]) == 4000
        c.sock.sendall(("GET /echo HTTP/1.1\r\nHost: t\r\n%sX-Over: %s\r\n\r\n"
                        % (fields, "v" * 200000)).encode())
        assert c.read_response().status == 431
