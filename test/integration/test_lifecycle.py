"""Access log, pid file, and signals: SIGTERM drains, SIGUSR1 reopens logs."""
import os
import re
import signal
import threading
import time

from helpers import SLOW, Conn, read_text, request, wait_for

ISO8601 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:?\d\d)?$")
HEX32 = re.compile(r"^[0-9a-f]{32}$")
NUM = re.compile(r"^\d+(\.\d+)?$")

FIELDS = ("time", "client", "tenant", "method", "path", "status", "bytes_in", "bytes_out",
          "backend", "total_ms", "upstream_ms", "request_id", "protocol")


def parse_access(line):
    parts = line.split(" ")
    assert len(parts) == len(FIELDS), "access log line has %d fields, want %d: %r" % (
        len(parts), len(FIELDS), line)
    rec = dict(zip(FIELDS, parts))
    assert all(rec.values()), "empty field in %r (use '-')" % line
    assert ISO8601.match(rec["time"]), "time is not ISO 8601: %r" % line
    assert rec["client"] == "127.0.0.1", line
    assert rec["status"].isdigit(), line
    assert rec["bytes_in"].isdigit() and rec["bytes_out"].isdigit(), line
    assert NUM.match(rec["total_ms"]), line
    assert rec["upstream_ms"] == "-" or NUM.match(rec["upstream_ms"]), line
    return rec


def test_access_log_has_one_line_per_request_in_the_documented_format(backend_factory,
                                                                        sluice_factory):
    a = backend_factory("a", workers=1, worker_class="gthread", threads=2)
    s = sluice_factory([a])
    r1 = request(s.port, "GET", "/", {"X-Request-ID": "0123456789abcdef0123456789abcdef"})
    r2 = request(s.port, "POST", "/echo", body=b"0123456789")
    r3 = request(s.port, "GET", "/status/404")
    with Conn(s.port) as c:
        c.send(b"GET /bad HTTP/1.1\r\nHost: x\r\nBad Name: y\r\n\r\n")
        r4 = c.read_response()
    # three requests on one keep-alive connection: three lines
    with Conn(s.port) as c:
        for i in range(3):
            c.request("GET", "/health", {"X-Request-ID": "ka-%d" % i})
            assert c.read_response().status == 200
    assert (r1.status, r2.status, r3.status, r4.status) == (200, 200, 404, 400)
    lines = s.wait_access_lines(7)
    time.sleep(0.3)
    lines = s.access_lines()
    assert len(lines) == 7, "want exactly 7 access log lines:\n" + "\n".join(lines)
    recs = [parse_access(l) for l in lines]
    # threads may write their lines in any order: find each request's line by its path

    def by_path(path):
        found = [x for x in recs if x["path"] == path]
        assert len(found) == 1, "want one line for %s:\n%s" % (path, "\n".join(lines))
        return found[0]

    ka = sorted(x["request_id"] for x in recs if x["path"] == "/health")
    assert ka == ["ka-0", "ka-1", "ka-2"], "\n".join(lines)
    recs = [x for x in recs if x["path"] != "/health"]
    g, p, nf = by_path("/"), by_path("/echo"), by_path("/status/404")
    bad = [x for x in recs if x["status"] == "400"]
    assert len(bad) == 1, "want one line for the 400:\n" + "\n".join(lines)
    bad = bad[0]
    assert (g["method"], g["path"], g["status"], g["backend"]) == ("GET", "/", "200", "a")
    assert g["request_id"] == "0123456789abcdef0123456789abcdef"
    assert int(g["bytes_out"]) >= len(r1.body)
    assert g["upstream_ms"] != "-"
    assert float(g["total_ms"]) >= float(g["upstream_ms"])
    assert (p["method"], p["path"], p["status"], p["backend"]) == ("POST", "/echo", "200", "a")
    assert int(p["bytes_in"]) >= 10
    assert int(p["bytes_out"]) >= len(r2.body)
    assert HEX32.match(p["request_id"]), p
    assert p["request_id"] == r2.header("X-Request-ID")
    assert (nf["method"], nf["path"], nf["status"], nf["backend"]) == (
        "GET", "/status/404", "404", "a")
    assert (bad["status"], bad["backend"]) == ("400", "-"), bad


def test_pid_file_holds_the_pid(backend_factory, sluice_factory):
    a = backend_factory("a", workers=1)
    s = sluice_factory([a])
    pid = wait_for(lambda: read_text(s.pid_file).strip(), 5 * SLOW, msg="pid file")
    assert int(pid) == s.pid


def test_sigterm_lets_in_flight_request_finish_then_exits_0(backend_factory, sluice_factory):
    a = backend_factory("a", workers=1, worker_class="gthread", threads=4)
    s = sluice_factory([a], proxy={"shutdown_grace": "10s"})
    result = {}

    def slow_client():
        try:
            result["r"] = request(s.port, "GET", "/slow?ms=1500", timeout=15)
        except Exception as e:
            result["e"] = e

    t = threading.Thread(target=slow_client)
    t.start()
    a.wait_log("GET /slow?ms=1500", 5 * SLOW)
    t0 = time.monotonic()
    s.signal(signal.SIGTERM)
    t.join(15 * SLOW)
    assert "e" not in result, "in-flight request failed during drain: %r" % result["e"]
    r = result.get("r")
    assert r is not None and r.status == 200 and r.body == b"slept 1500\n", r
    rc = s.wait_exit(15 * SLOW)
    assert rc == 0, "sluice exit %r after SIGTERM\n%s" % (rc, s.diagnostics())
    assert time.monotonic() - t0 < 8 * SLOW


def test_sigterm_does_not_wait_for_idle_keepalive_connections(backend_factory, sluice_factory):
    a = backend_factory("a", workers=1, worker_class="gthread", threads=2)
    s = sluice_factory([a], proxy={"shutdown_grace": "30s", "keepalive_timeout": "75s"})
    with Conn(s.port) as c:
        c.request("GET", "/")
        assert c.read_response().status == 200
        t0 = time.monotonic()
        s.signal(signal.SIGTERM)
        rc = s.wait_exit(10 * SLOW)
        elapsed = time.monotonic() - t0
        assert rc == 0, "exit %r after %.1fs with an idle client connection open" % (rc, elapsed)
        closed, extra = c.wait_closed(2)
        assert closed


def test_sigusr1_reopens_the_access_log(backend_factory, sluice_factory):
    a = backend_factory("a", workers=1, worker_class="gthread", threads=2)
    s = sluice_factory([a])
    assert request(s.port, "GET", "/").status == 200
    s.wait_access_lines(1)
    rotated = s.access_log + ".1"
    os.rename(s.access_log, rotated)
    assert request(s.port, "GET", "/health").status == 200   # still goes to the old file
    wait_for(lambda: len(s.access_lines(rotated)) >= 2, 5 * SLOW, msg="2 lines in the rotated log")
    s.signal(signal.SIGUSR1)
    try:
        wait_for(lambda: os.path.exists(s.access_log), 2 * SLOW, msg="a new access log")
    except AssertionError:
        pass  # it may be created on first write
    assert request(s.port, "GET", "/cookie").status == 200
    new = wait_for(lambda: s.access_lines(), 5 * SLOW, msg="lines in the reopened access log")
    assert any(" /cookie " in l for l in new), new
    old = s.access_lines(rotated)
    assert not any(" /cookie " in l for l in old), old
    assert s.proc.poll() is None, "sluice died on SIGUSR1"


def test_ipv4_and_ipv6_listeners_on_the_same_port_both_work(backend_factory, tmp_path):
    # NGINX's usual pair `listen 80; listen [::]:80;`: the IPv6 socket is IPv6-only
    import socket
    import subprocess
    import helpers
    b = backend_factory("a")
    port = helpers.free_port()
    cfg = tmp_path / "s.ini"
    cfg.write_text("[proxy]\nlisten = %d\nlisten = [::]:%d\n[backend a]\naddress = 127.0.0.1:%d\n"
                   % (port, port, b.port))
    p = subprocess.Popen([helpers.SLUICE_BIN, "-c", str(cfg)], stderr=subprocess.PIPE,
                         env=helpers.sluice_env())
    try:
        helpers.wait_port(port, 15 * helpers.SLOW, p, "sluice")
        for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            s = socket.create_connection((host, port), timeout=10) if family == socket.AF_INET \
                else socket.socket(socket.AF_INET6)
            if family == socket.AF_INET6:
                s.settimeout(10)
                s.connect((host, port))
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            s.close()
            assert data.startswith(b"HTTP/1.1 200"), (host, data[:100])
    finally:
        p.terminate()
        p.wait(20)
    assert p.returncode == 0, p.stderr.read()
