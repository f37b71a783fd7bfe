"""The admin listener: /status.json is JSON with the backends, tenants, routes and queue;
/metrics is valid Prometheus text (checked here without promtool); actions need the token;
bad [admin] settings are refused with file:line."""
import http.client
import json
import re
import subprocess
import time

import pytest

import helpers

TOKEN = "0123456789abcdef-admin"


def admin_extra(port, token=TOKEN):
    return "[admin]\nlisten = 127.0.0.1:%d\n%s" % (port, "token = %s\n" % token if token else "")


def call(port, method, path, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request(method, path, headers=headers or {})
    r = c.getresponse()
    body = r.read().decode()
    c.close()
    return r, body


def proxy_get(port, path="/", tenant=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", path, headers={"X-Tenant": tenant} if tenant else {})
    r = c.getresponse()
    r.read()
    c.close()
    return r.status


TENANTS = """
[tenants]
key = header:X-Tenant
[tenant acme]
rate = 0.01
burst = 2
[route sqllab]
prefix = /slow
max_inflight = 1
"""

# Prometheus text exposition format 0.0.4: comment lines, then `name{labels} value`
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*"'
SAMPLE = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)'
                    r'(?:\{(?P<labels>%s(?:,%s)*)?\})? '
                    r'(?P<value>-?[0-9.eE+-]+|NaN|\+Inf|-Inf)$' % (LABEL, LABEL))


def parse_metrics(text):
    """name -> {labels string: value}; asserts every line is well formed and every sample's
    metric was declared by a TYPE line before it."""
    typed, out = {}, {}
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP ") or not line:
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            assert kind in ("counter", "gauge", "summary", "histogram", "untyped"), line
            assert name not in typed, "declared twice: " + name
            typed[name] = kind
            continue
        m = SAMPLE.match(line)
        assert m, "not a valid sample line: %r" % line
        name = m.group("name")
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in typed or base in typed, "sample before its TYPE: %r" % line
        if typed.get(name) == "counter":
            assert name.endswith("_total"), name
        out.setdefault(name, {})[m.group("labels") or ""] = float(m.group("value"))
    return out


@pytest.fixture
def admin_sluice(backend_factory, sluice_factory, free_port):
    port = free_port()
    s = sluice_factory([backend_factory("a")], backend_opts={"workers": "4"},
                       extra=TENANTS + admin_extra(port))
    return s, port


def test_status_json_describes_backends_tenants_routes_and_queue(admin_sluice):
    s, port = admin_sluice
    assert [proxy_get(s.port, "/", "acme") for _ in range(3)] == [200, 200, 429]
    r, body = call(port, "GET", "/status.json")
    assert r.status == 200 and r.getheader("Content-Type") == "application/json"
    doc = json.loads(body)
    assert doc["generation"] == 1 and doc["threads"] >= 1
    (b,) = doc["backends"]
    assert b["name"] == "a" and b["state"] == "up" and b["capacity"] == 4
    assert b["capacity_mode"] == "fixed" and b["requests"] == 2
    acme = next(t for t in doc["tenants"] if t["name"] == "acme")
    assert acme["admitted"] == 2 and acme["rejected"]["rate"] == 1 and acme["burst"] == 2
    assert doc["routes"][0]["name"] == "sqllab" and doc["routes"][0]["max_inflight"] == 1
    assert doc["queue"]["depth"] == 0 and doc["totals"]["rejected_rate"] == 1


def test_metrics_are_valid_prometheus_text(admin_sluice):
    s, port = admin_sluice
    assert [proxy_get(s.port, "/", "acme") for _ in range(3)] == [200, 200, 429]
    r, body = call(port, "GET", "/metrics")
    assert r.status == 200 and r.getheader("Content-Type").startswith("text/plain; version=0.0.4")
    m = parse_metrics(body)
    assert m["sluice_requests_total"][""] == 3
    assert m["sluice_backend_up"]['backend="a"'] == 1
    assert m["sluice_backend_capacity"]['backend="a"'] == 4
    assert m["sluice_tenant_rejected_total"]['tenant="acme",reason="rate"'] == 1
    assert m["sluice_tenant_admitted_total"]['tenant="acme"'] == 2


def test_actions_need_the_token_and_drain_undrain_reset_work(admin_sluice):
    s, port = admin_sluice
    r, _ = call(port, "POST", "/actions/drain?backend=a")
    assert r.status == 401 and r.getheader("WWW-Authenticate") == "Bearer"
    r, _ = call(port, "POST", "/actions/drain?backend=a", {"Authorization": "Bearer wrong"})
    assert r.status == 401
    auth = {"Authorization": "Bearer " + TOKEN}
    r, body = call(port, "POST", "/actions/drain?backend=a", auth)
    assert r.status == 200 and "drained" in body
    assert proxy_get(s.port) == 502  # the only backend is drained
    doc = json.loads(call(port, "GET", "/status.json")[1])
    assert doc["backends"][0]["state"] == "draining"
    assert call(port, "POST", "/actions/undrain?backend=a", auth)[0].status == 200
    assert proxy_get(s.port) == 200
    assert [proxy_get(s.port, "/", "acme") for _ in range(3)] == [200, 200, 429]
    assert call(port, "POST", "/actions/reset?tenant=acme", auth)[0].status == 200
    assert proxy_get(s.port, "/", "acme") == 200
    assert call(port, "POST", "/actions/drain?backend=nope", auth)[0].status == 404
    assert call(port, "GET", "/actions/drain?backend=a", auth)[0].status == 405
    assert call(port, "GET", "/nothing")[0].status == 404


def test_actions_are_refused_without_a_configured_token(backend_factory, sluice_factory,
                                                        free_port):
    port = free_port()
    s = sluice_factory([backend_factory("a")], extra=admin_extra(port, token=None))
    r, body = call(port, "POST", "/actions/drain?backend=a", {"Authorization": "Bearer x"})
    assert r.status == 403 and "token" in body
    assert proxy_get(s.port) == 200


def test_status_page_is_served_self_contained(admin_sluice):
    s, port = admin_sluice
    r, body = call(port, "GET", "/status")
    assert r.status == 200 and r.getheader("Content-Type").startswith("text/html")
    assert "<html" in body.lower() or "<!doctype" in body.lower()
    assert not re.search(r'(src|href)="https?://', body), "the page must not load external assets"


def _check(tmp_path, text):
    path = tmp_path / "s.ini"
    path.write_text("[proxy]\nlisten = 127.0.0.1:1\n[backend a]\naddress = 127.0.0.1:2\n" + text)
    return subprocess.run([helpers.SLUICE_BIN, "-t", "-c", str(path)], capture_output=True,
                          text=True), str(path)


def test_non_loopback_admin_needs_a_token(tmp_path):
    p, path = _check(tmp_path, "[admin]\nlisten = 0.0.0.0:9901\n")
    assert p.returncode == 1 and "%s:6:" % path in p.stderr and "token" in p.stderr, p.stderr
    p, path = _check(tmp_path, "[admin]\nlisten = 0.0.0.0:9901\ntoken = %s\n" % TOKEN)
    assert p.returncode == 0, p.stderr
    p, path = _check(tmp_path, "[admin]\nlisten = nowhere\n")
    assert p.returncode == 1 and "%s:6:" % path in p.stderr, p.stderr


def test_admin_port_taken_fails_start_with_file_and_line(backend_factory, tmp_path, free_port):
    import socket
    port = free_port()
    holder = socket.socket()
    holder.bind(("127.0.0.1", port))
    holder.listen(1)
    try:
        cfg = tmp_path / "s.ini"
        cfg.write_text("[proxy]\nlisten = 127.0.0.1:%d\n[backend a]\naddress = 127.0.0.1:2\n"
                       "[admin]\nlisten = 127.0.0.1:%d\n" % (free_port(), port))
        p = subprocess.run([helpers.SLUICE_BIN, "-c", str(cfg)], capture_output=True, text=True,
                           timeout=20)
        assert p.returncode == 1, (p.returncode, p.stderr)
        assert "%s:6:" % cfg in p.stderr + p.stdout, p.stderr
    finally:
        holder.close()


def test_reloads_alternating_tenants_reuse_their_series(admin_sluice):
    """A tenant removed by one reload and added back by the next keeps its series (and its
    history): configurations that alternate must not pile up ~280 KB series (the soak found
    +300 KB per reload)."""
    from test_reload import reload
    s, port = admin_sluice
    assert [proxy_get(s.port, "/", "acme") for _ in range(2)] == [200, 200]
    series = lambda: parse_metrics(call(port, "GET", "/metrics")[1])["sluice_meter_series"][""]
    with open(s.config) as f:
        a = f.read()
    b = a.replace("[tenant acme]", "[tenant beta]")
    assert b != a
    first = series()
    for i in range(6):
        with open(s.config, "w") as f:
            f.write(b if i % 2 == 0 else a)
        reload(s)
    assert series() == first + 1  # beta's, made once

    def acme_requests():
        doc = json.loads(call(port, "GET", "/status.json")[1])
        return next(t for t in doc["tenants"] if t["name"] == "acme")["windows"]["5m"]["requests"]
    helpers.wait_for(lambda: acme_requests() == 2, timeout=5 * helpers.SLOW,
                     msg="acme's two requests in its 5-minute window (once a second)")


def test_admin_port_accepts_as_soon_as_the_proxy_port_does(backend_factory, sluice_factory,
                                                           free_port):
    """The admin listener is bound before the proxy's: a readiness check that saw the proxy
    port open can read /status.json at once (test_status_page_is_served_self_contained was
    refused once: the admin port opened after the proxy's)."""
    a = backend_factory("a")
    for _ in range(10):
        port = free_port()
        s = sluice_factory([a], extra=admin_extra(port), start=False)
        s.proc = subprocess.Popen([helpers.SLUICE_BIN, "-c", s.config], env=helpers.sluice_env(),
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15 * helpers.SLOW
        while not helpers.port_open(s.port, 0.05):  # as fast as connect() is refused
            assert time.monotonic() < deadline and s.proc.poll() is None, "sluice did not start"
        assert helpers.port_open(port), "the proxy port accepted before the admin port"
        s.stop()


def test_loopback_admin_answers_only_hosts_that_name_it(backend_factory, sluice_factory,
                                                        free_port):
    """DNS rebinding: a page in a browser on this machine whose name now resolves to
    127.0.0.1 sends its own name as Host; without the token it must not read the admin
    documents. Loopback names, the listen address and [admin] hosts may (any port)."""
    port = free_port()
    s = sluice_factory([backend_factory("a")],
                       extra=admin_extra(port) + "hosts = status.internal, ops.example\n")
    for host in ("127.0.0.1:%d" % port, "localhost", "LOCALHOST:1", "status.internal:8080",
                 "ops.example", "[::1]:%d" % port):
        r, body = call(port, "GET", "/status.json", {"Host": host})
        assert r.status == 200, (host, r.status, body)
    for host in ("evil.example", "evil.example:%d" % port, "127.0.0.1.evil.example",
                 "status.internal.evil", "localhost.", "[::2]"):
        for path in ("/status.json", "/metrics", "/status"):
            r, body = call(port, "GET", path, {"Host": host})
            assert r.status == 403 and "[admin] hosts" in body, (host, path, r.status, body)
    # the token is enough whatever the Host
    r, _ = call(port, "GET", "/status.json", {"Host": "evil.example",
                                              "Authorization": "Bearer " + TOKEN})
    assert r.status == 200
