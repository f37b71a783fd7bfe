"""Reload: SIGHUP and `sluice -c FILE -s reload` re-read the config (backends added, removed,
re-weighted; listeners added and removed, unchanged ones untouched); a broken config keeps
the old one serving; `-s stop` stops. Plus reloads under a bounded load with zero failures."""
import http.client
import json
import os
import signal
import subprocess
import threading
import time

import pytest

import helpers
from helpers import SLOW, Conn, concurrent_names, read_text, request, wait_for, write_config


def name_of(r):
    assert r.status == 200, r
    return r.body.decode().strip().rsplit(" ", 1)[-1]


def events(s):
    """(successful reloads, failed reloads) so far, from the error log."""
    t = s.errors()
    return t.count("reloaded generation="), t.count("reload failed")


def rewrite(s, backends, backend_opts=None, listens=None, proxy=None, extra=None):
    """Rewrite s.config (same log/pid paths); extra = (after_prefix, line) to insert.
    Returns the 1-based line number of the inserted line, if any."""
    listens = listens or ["127.0.0.1:%d" % p for p in s.ports]
    write_config(s.config, listens, backends, proxy, backend_opts, log_dir=s.dir)
    if extra:
        lines = read_text(s.config).splitlines()
        idx = next(i for i, l in enumerate(lines) if l.startswith(extra[0]))
        lines.insert(idx + 1, extra[1])
        with open(s.config, "w") as f:
            f.write("\n".join(lines) + "\n")
        return idx + 2
    return None


def reload(s, how="sighup", expect="ok", timeout=15.0):
    """Trigger a reload and wait until the error log says it succeeded (or failed)."""
    ok0, bad0 = events(s)
    if how == "sighup":
        s.signal(signal.SIGHUP)
    else:
        p = subprocess.run([helpers.SLUICE_BIN, "-c", s.config, "-s", "reload"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           env=helpers.sluice_env(), timeout=30 * SLOW)
        assert p.returncode == 0, p.stdout.decode()

    def done():
        if s.proc.poll() is not None:
            raise AssertionError("sluice exited with %r during the reload\n%s"
                                 % (s.proc.returncode, s.diagnostics()))
        ok, bad = events(s)
        return (ok, bad) != (ok0, bad0) and (ok, bad)

    ok, bad = wait_for(done, timeout * SLOW, msg="reload %s in the error log" % expect)
    if expect == "ok":
        assert ok == ok0 + 1 and bad == bad0, "reload failed:\n%s" % s.errors()[-3000:]
    else:
        assert bad == bad0 + 1 and ok == ok0, "reload should have failed:\n%s" % s.errors()[-3000:]


def names_seen(port, n=12):
    return [name_of(request(port, "GET", "/")) for _ in range(n)]


@pytest.fixture(scope="module")
def pool(module_backend_factory):
    """Backends shared by the module (each gunicorn costs ~1 s to stop); every test starts
    its own sluice."""
    return {"a": module_backend_factory("a", workers=1, worker_class="gthread", threads=24),
            "b": module_backend_factory("b", workers=1, worker_class="gthread", threads=24),
            "c": module_backend_factory("c", workers=2, worker_class="sync")}


# ---------------------------------------------------------------- backends

def test_sighup_adds_a_new_backend_and_it_gets_requests(pool, sluice_factory):
    a = pool["a"]
    b = pool["b"]
    s = sluice_factory([a])
    assert set(names_seen(s.port, 6)) == {"a"}
    rewrite(s, [a, b])
    reload(s)
    seen = names_seen(s.port)
    assert seen.count("a") >= 3 and seen.count("b") >= 3, seen


def test_sighup_removed_backend_gets_no_more_requests(pool, sluice_factory):
    a = pool["a"]
    b = pool["b"]
    s = sluice_factory([a, b])
    seen = names_seen(s.port)
    assert "a" in seen and "b" in seen, seen
    rewrite(s, [b])
    reload(s)
    n_a = len(a.log_lines())
    assert set(names_seen(s.port, 20)) == {"b"}
    assert len(a.log_lines()) == n_a, a.log_lines()[n_a:]


def test_sighup_replacing_all_backends_switches_traffic(pool, sluice_factory):
    a = pool["a"]
    b = pool["b"]
    s = sluice_factory([a])
    # an idle pooled upstream connection to a exists now
    assert set(names_seen(s.port, 4)) == {"a"}
    rewrite(s, [b])
    reload(s)
    assert set(names_seen(s.port, 10)) == {"b"}


def test_sighup_changed_weights_change_the_share_under_concurrency(pool, sluice_factory):
    # Least connections weighs in-flight counts, so weights show with concurrent requests.
    a = pool["a"]
    b = pool["b"]
    s = sluice_factory([a, b], backend_opts={"a": {"weight": "5"}, "b": {"weight": "1"}})
    got = concurrent_names(s.port, 18, "/slow?ms=%d" % int(800 * SLOW))
    assert got.count("a") > 2 * got.count("b"), got
    rewrite(s, [a, b], backend_opts={"a": {"weight": "1"}, "b": {"weight": "5"}})
    reload(s)
    got = concurrent_names(s.port, 18, "/slow?ms=%d" % int(800 * SLOW))
    assert got.count("b") > 2 * got.count("a"), got


def test_s_reload_reads_pid_file_and_applies_the_new_config(pool, sluice_factory):
    a = pool["a"]
    b = pool["b"]
    s = sluice_factory([a])
    wait_for(lambda: read_text(s.pid_file).strip(), 5 * SLOW, msg="pid file")
    rewrite(s, [b])
    reload(s, how="-s")
    assert set(names_seen(s.port, 6)) == {"b"}
    assert s.proc.poll() is None


def test_broken_config_on_reload_keeps_old_config_serving_and_logs_file_line(
        pool, sluice_factory):
    a = pool["a"]
    b = pool["b"]
    s = sluice_factory([a])
    n_b = len(b.log_lines())
    line = rewrite(s, [b], extra=("[backend b]", "no_such_key = 1"))
    reload(s, expect="failed")
    err = [l for l in s.errors().splitlines() if "reload failed" in l]
    assert "%s:%d:" % (s.config, line) in err[-1], err
    assert set(names_seen(s.port, 6)) == {"a"}
    assert len(b.log_lines()) == n_b
    # the broken file is fixed: the next reload works
    rewrite(s, [b])
    reload(s)
    assert set(names_seen(s.port, 6)) == {"b"}


def test_reload_with_unresolvable_backend_address_fails_and_keeps_serving(pool, sluice_factory):
    a = pool["a"]
    s = sluice_factory([a])
    rewrite(s, [a, ("b", "no-such-host.invalid:80", 1)])
    reload(s, expect="failed")
    assert set(names_seen(s.port, 6)) == {"a"}


def test_s_reload_with_broken_config_exits_0_but_instance_keeps_serving(pool, sluice_factory):
    # -s only needs the pid_file; the instance itself reports the broken config.
    a = pool["a"]
    s = sluice_factory([a])
    wait_for(lambda: read_text(s.pid_file).strip(), 5 * SLOW, msg="pid file")
    rewrite(s, [a], backend_opts={"weight": "0"})  # out of range: 1..1000
    ok0, bad0 = events(s)
    p = subprocess.run([helpers.SLUICE_BIN, "-c", s.config, "-s", "reload"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       env=helpers.sluice_env(), timeout=30 * SLOW)
    if p.returncode == 0:
        wait_for(lambda: events(s)[1] == bad0 + 1, 15 * SLOW, msg="reload failed logged")
    else:
        assert p.returncode == 1 and "weight" in p.stdout.decode(), p.stdout.decode()
    assert set(names_seen(s.port, 4)) == {"a"}


# ---------------------------------------------------------------- listeners

def test_unchanged_listener_and_its_keepalive_connection_survive_reload_while_one_is_added(
        pool, sluice_factory):
    a = pool["a"]
    s = sluice_factory([a])
    p1 = s.port
    p2 = helpers.free_port()
    with Conn(p1) as c:
        c.request("GET", "/")
        assert c.read_response().body == b"hello from a\n"
        rewrite(s, [a], listens=["127.0.0.1:%d" % p1, "127.0.0.1:%d" % p2])
        reload(s)
        helpers.wait_port(p2, 10 * SLOW, s.proc, "sluice new listener")
        assert request(p2, "GET", "/").body == b"hello from a\n"
        assert request(p1, "GET", "/").body == b"hello from a\n"
        # the connection accepted before the reload still works
        c.request("GET", "/echo")
        r = c.read_response()
        assert r.status == 200 and r.json()["name"] == "a"
        # and the added listener can be removed again
        rewrite(s, [a], listens=["127.0.0.1:%d" % p1])
        reload(s)
        wait_for(lambda: not helpers.port_open(p2), 10 * SLOW, msg="port %d closed" % p2)
        assert request(p1, "GET", "/").body == b"hello from a\n"
        c.request("GET", "/")
        assert c.read_response().body == b"hello from a\n"


def test_reload_with_two_unchanged_listeners_keeps_both_serving(pool, sluice_factory):
    a = pool["a"]
    s = sluice_factory([a], listens=2)
    for p in s.ports:
        assert request(p, "GET", "/").body == b"hello from a\n"
    rewrite(s, [a], backend_opts={"weight": "2"})
    reload(s)
    assert s.proc.poll() is None, "sluice died on reload: exit %r\n%s" % (s.proc.returncode,
                                                                         s.diagnostics())
    for p in s.ports:
        assert request(p, "GET", "/").body == b"hello from a\n"


def test_s_stop_stops_the_instance_with_exit_0_and_removes_pid_file(pool, sluice_factory):
    a = pool["a"]
    s = sluice_factory([a])
    wait_for(lambda: read_text(s.pid_file).strip(), 5 * SLOW, msg="pid file")
    p = subprocess.run([helpers.SLUICE_BIN, "-c", s.config, "-s", "stop"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       env=helpers.sluice_env(), timeout=30 * SLOW)
    assert p.returncode == 0, p.stdout.decode()
    rc = s.wait_exit(15 * SLOW)
    assert rc == 0, "sluice exit %r after -s stop\n%s" % (rc, s.diagnostics())
    assert not os.path.exists(s.pid_file)


def test_s_reload_without_a_running_instance_fails(tmp_path):
    cfg = write_config(str(tmp_path / "x.ini"), ["127.0.0.1:%d" % helpers.free_port()],
                       [("a", "127.0.0.1:%d" % helpers.free_port(), 1)], log_dir=str(tmp_path))
    p = subprocess.run([helpers.SLUICE_BIN, "-c", cfg, "-s", "reload"], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, env=helpers.sluice_env(), timeout=30 * SLOW)
    assert p.returncode == 1, p.stdout.decode()


# ---------------------------------------------------------------- reloads under load

@pytest.mark.slow
def test_twenty_reloads_under_load_fail_no_request(pool, sluice_factory):
    a = pool["a"]
    b = pool["b"]
    c = pool["c"]
    s = sluice_factory([a, b], proxy={"keepalive_timeout": "75s"})
    variants = [
        ([a, b], {"a": {"weight": "1"}, "b": {"weight": "1"}}, None),
        ([b, c], {"b": {"weight": "3"}, "c": {"weight": "1"}}, None),
        ([c, a, b], {"a": {"weight": "2"}, "b": {"weight": "1"}, "c": {"weight": "5"}}, None),
        ([a, c], {"a": {"weight": "1"}, "c": {"weight": "1"}},
         ("[backend c]", "bogus_key = 1")),          # broken: this reload must fail
    ]
    stop = threading.Event()
    lock = threading.Lock()
    failures, counts = [], {"a": 0, "b": 0, "c": 0}
    deadline = time.monotonic() + 60 * SLOW

    def check(resp, body, target):
        if resp.status != 200:
            return "status %d for %s: %r" % (resp.status, target, body[:200])
        if target == "/":
            who = body.decode(errors="replace").strip().rsplit(" ", 1)[-1]
            if body != ("hello from %s\n" % who).encode() or who not in counts:
                return "bad body %r" % body[:200]
        elif body != b"slept 50\n":
            return "bad body %r for %s" % (body[:200], target)
        who = resp.getheader("X-App-Name")
        with lock:
            counts[who] = counts.get(who, 0) + 1
        return None

    def client(i, keepalive):
        n = 0
        conn = None
        while not stop.is_set() and n < 3000 and time.monotonic() < deadline:
            n += 1
            target = "/slow?ms=50" if n % 5 == 0 else "/"
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=20 * SLOW)
                conn.request("GET", target)
                resp = conn.getresponse()
                body = resp.read()
                problem = check(resp, body, target)
                if problem:
                    failures.append("client %d req %d: %s" % (i, n, problem))
                if not keepalive or resp.will_close:
                    conn.close()
                    conn = None
            except Exception as e:
                failures.append("client %d req %d (%s, keepalive=%s): %r"
                                % (i, n, target, keepalive, e))
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=client, args=(i, i % 2 == 0)) for i in range(4)]
    for t in threads:
        t.start()
    reloads_ok = reloads_failed = 0
    try:
        t_end = time.monotonic() + 8.0 * SLOW
        for k in range(20):
            backends, opts, extra = variants[k % len(variants)]
            rewrite(s, backends, backend_opts=opts, extra=extra)
            broken = extra is not None
            # -s reload parses the file itself, so a broken file goes by SIGHUP
            how = "-s" if (k % 3 == 0 and not broken) else "sighup"
            reload(s, how=how, expect="failed" if broken else "ok")
            if broken:
                reloads_failed += 1
            else:
                reloads_ok += 1
            # spread the 20 reloads over ~8 s, never sleeping past the end
            left = t_end - time.monotonic()
            if left > 0:
                time.sleep(min(left / (20 - k), 0.4))
            assert s.proc.poll() is None, s.diagnostics()
    finally:
        stop.set()
        for t in threads:
            t.join(30 * SLOW)
    total = sum(counts.values())
    assert not failures, "%d failed of %d requests; first: %s\n%s" % (
        len(failures), total + len(failures), failures[:5], s.diagnostics())
    assert reloads_ok == 15 and reloads_failed == 5
    assert total >= 100, counts
    assert counts["a"] and counts["b"] and counts["c"], counts
    assert events(s) == (15, 5), s.errors()[-3000:]


def test_requests_queued_across_a_reload_that_reorders_and_removes_backends(pool,
                                                                           sluice_factory):
    """Requests admitted under the old generation and woken after a reload that removed,
    added and reordered backends: each is sent to a backend of its own generation, the one
    whose slot it holds (a woken request indexed the new pool table with its old backend
    index: a heap overflow when the table shrank, a request sent to another server when it
    did not); every slot comes back."""
    a, b, c = pool["a"], pool["b"], pool["c"]
    admin = helpers.free_port()
    opts = {"workers": "1", "idle_timeout": "30s"}
    extra = "[admin]\nlisten = 127.0.0.1:%d\n" % admin
    s = sluice_factory([a, b], backend_opts=opts, extra=extra)
    assert set(names_seen(s.port, 8)) == {"a", "b"}  # pooled connections to both now
    results = {}

    def one(tag, ms):
        results[tag] = request(s.port, "GET", "/slow?ms=%d&tag=%s" % (ms, tag), timeout=30)

    def queued():
        c_ = http.client.HTTPConnection("127.0.0.1", admin, timeout=10)
        c_.request("GET", "/status.json")
        n = json.loads(c_.getresponse().read())["queue"]["depth"]
        c_.close()
        return n

    threads = []
    for gen, backends in enumerate(([c, b], [c])):  # reorder and add, then shrink
        tags = ["g%dhold%d" % (gen, i) for i in range(2)] + ["g%dq%d" % (gen, i) for i in range(4)]
        ts = [threading.Thread(target=one, args=(t, 1500 if "hold" in t else 50)) for t in tags]
        for t in ts[:2]:
            t.start()
        wait_for(lambda: sum(any("tag=%s" % t in l for l in a.log_lines() + b.log_lines() +
                                 c.log_lines()) for t in tags[:2]) == 2,
                 5 * SLOW, msg="both slots taken")
        for t in ts[2:]:
            t.start()
        wait_for(lambda: queued() == 4, 5 * SLOW, msg="4 requests queued")
        before = {"a", "b"} if gen == 0 else {"c", "b"}
        rewrite(s, backends, backend_opts=opts, extra=None)
        with open(s.config, "a") as f:
            f.write(extra)
        reload(s)
        for t in ts:
            t.join(30 * SLOW)
        for tag in tags:
            r = results[tag]
            assert r.status == 200, (tag, r)
            assert r.header("X-App-Name") in before, \
                "%s, admitted before the reload, was answered by %s" % (
                    tag, r.header("X-App-Name"))
        threads += ts
        if gen == 0:  # the new generation pools connections before the next reload
            assert set(names_seen(s.port, 8)) == {"b", "c"}
    assert set(names_seen(s.port, 4)) == {"c"}

    def status():
        c_ = http.client.HTTPConnection("127.0.0.1", admin, timeout=10)
        c_.request("GET", "/status.json")
        doc = json.loads(c_.getresponse().read())
        c_.close()
        return doc
    # the client has the last response's bytes a moment before sluice gives its slot back
    # (under TSan, long enough for one read to see 1: CI on 48d93ae); a slot that leaked
    # stays taken and fails here
    wait_for(lambda: [x["inflight"] for x in status()["backends"]] == [0], 5 * SLOW,
             msg="every backend slot given back")
    doc = status()
    assert [x["inflight"] for x in doc["backends"]] == [0] and doc["queue"]["depth"] == 0, doc
    assert s.stop() == 0, s.diagnostics()
