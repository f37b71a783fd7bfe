"""The status page (src/status.html) in a real browser: headless Chromium loads it, its
JavaScript polls status.json and renders; the DOM after that (--dump-dom) must hold the
backends, tenants, p-values, the scale reason and an SVG chart, and the page must report
data-ready="1" and no data-error. First against test/status_fixture.json served by a tiny
http.server here (each scenario under its own path prefix, which also proves the page asks
for status.json relative to itself), then against a real sluice's admin listener.

Screenshots go to test/artifacts/ (git-ignored): status-page.png (1280 px),
status-page-800.png (800 px, 5m window) and status-page-live.png."""
import html
import http.server
import json
import math
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading

import pytest

import helpers

CHROMIUM = "/usr/bin/chromium"
PAGE = os.path.join(helpers.REPO, "src", "status.html")
FIXTURE = os.path.join(helpers.TEST_DIR, "status_fixture.json")
ARTIFACTS = os.path.join(helpers.TEST_DIR, "artifacts")



@pytest.fixture(autouse=True)
def _chromium():
    assert os.access(CHROMIUM, os.X_OK), "needs %s (sh test/deps.sh installs it)" % CHROMIUM


def load_fixture():
    with open(FIXTURE, encoding="utf-8") as f:
        return json.load(f)


def fmt_ms(v):
    """The page's duration format (fMs in status.html) for the values used here (>= 10 ms)."""
    if v < 999.5:
        return "%d ms" % math.floor(v + 0.5)
    if v < 9950:
        return "%.1f s" % (v / 1000.0)
    return "%d s" % math.floor(v / 1000.0 + 0.5)


def nulled(doc):
    """doc with every number, string and boolean replaced by null (the shape kept)."""
    if isinstance(doc, dict):
        return {k: nulled(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [nulled(v) for v in doc]
    return None


# ---------------------------------------------------------------- a server for the page

class _Handler(http.server.BaseHTTPRequestHandler):
    """GET /SCENARIO/status -> the page; GET /SCENARIO/status.json -> the scenario's answer:
    a document, or (status, body) for an error, or a list of those served in turn (the
    last one repeats)."""
    scenarios = {}
    lock = threading.Lock()

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        prefix, _, leaf = path.rpartition("/")
        name = prefix.strip("/")
        if leaf == "status" and name in self.scenarios:
            with open(PAGE, "rb") as f:
                return self._send(200, "text/html; charset=utf-8", f.read())
        if leaf == "status.json" and name in self.scenarios:
            with self.lock:
                answers = self.scenarios[name]
                answer = answers.pop(0) if len(answers) > 1 else answers[0]
            if isinstance(answer, tuple):
                return self._send(answer[0], "text/plain", answer[1].encode())
            return self._send(200, "application/json", json.dumps(answer).encode())
        self._send(404, "text/plain", b"not found\n")

    def _send(self, status, ctype, body):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def page_server():
    """Base URL of a threaded http.server on a free 127.0.0.1 port; set scenarios with
    page_server.scenarios[name] = [answer, ...]."""
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    _Handler.scenarios.clear()

    class Info:
        url = "http://127.0.0.1:%d" % srv.server_address[1]
        scenarios = _Handler.scenarios
    yield Info
    srv.shutdown()
    srv.server_close()
    t.join(5)


# ---------------------------------------------------------------- headless Chromium

class Page:
    def __init__(self, dom, console):
        self.dom = dom
        self.console = console  # the page's console messages, from Chromium's log

    def body_attrs(self):
        m = re.search(r"<body([^>]*)>", self.dom)
        assert m, "no <body> in the dumped DOM:\n%s" % self.dom[:2000]
        return dict((k, html.unescape(v)) for k, v in re.findall(r'([\w-]+)="([^"]*)"', m.group(1)))

    def element(self, tag, ident):
        """The outer HTML of <tag id="ident">...</tag> (not nested in itself)."""
        m = re.search(r'<%s id="%s"[^>]*>.*?</%s>' % (tag, ident, tag), self.dom, re.S)
        assert m, "no <%s id=%r> in the DOM" % (tag, ident)
        return m.group(0)

    def text(self, fragment=None):
        """Visible-ish text: tags, <style> and <script> removed, entities decoded."""
        s = self.dom if fragment is None else fragment
        s = re.sub(r"<(script|style)\b.*?</\1>", " ", s, flags=re.S)
        return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", s)))

    def assert_ready(self):
        attrs = self.body_attrs()
        assert attrs.get("data-ready") == "1", "page not rendered: body %r, console %r" % (
            attrs, self.console)
        assert "data-error" not in attrs, "page reports an error: %r" % attrs["data-error"]
        uncaught = [l for l in self.console if "Uncaught" in l]
        assert not uncaught, uncaught


def chromium(url, width=1280, height=1400, screenshot=None, budget_ms=5000, timeout=45,
             extra_args=()):
    """Load url in headless Chromium, let the page's timers run for budget_ms of virtual
    time, return the DOM then (and save a screenshot). Chromium runs in its own process
    group, killed as a whole if it overruns."""
    profile = tempfile.mkdtemp(prefix="sluice-chromium-")
    argv = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu",
            "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
            "--disable-extensions", "--disable-background-networking",
            "--disable-component-update", "--hide-scrollbars", "--mute-audio",
            "--user-data-dir=" + profile, "--enable-logging=stderr", "--v=0",
            "--virtual-time-budget=%d" % budget_ms, "--window-size=%d,%d" % (width, height),
            "--dump-dom"] + list(extra_args)
    if screenshot:
        os.makedirs(os.path.dirname(screenshot), exist_ok=True)
        if os.path.exists(screenshot):
            os.unlink(screenshot)
        argv.append("--screenshot=" + screenshot)
    argv.append(url)
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        raise AssertionError("chromium did not finish %s within %ds" % (url, timeout))
    finally:
        try:  # children it left behind (its own process group: all started here)
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        shutil.rmtree(profile, ignore_errors=True)
    err = err.decode("utf-8", "replace")
    assert p.returncode == 0, "chromium exited with %s:\n%s" % (p.returncode, err[-3000:])
    if screenshot:
        assert os.path.getsize(screenshot) > 10000, "no screenshot at %s" % screenshot
    console = [l for l in err.splitlines() if ":CONSOLE" in l]
    return Page(out.decode("utf-8", "replace"), console)


# ---------------------------------------------------------------- against the fixture

def test_fixture_is_a_complete_sample():
    d = load_fixture()
    assert len(d["backends"]) == 2 and len(d["tenants"]) == 4 and len(d["routes"]) == 1
    h = d["scale"]["history"]
    assert len(h) == 90 and all(b["t"] - a["t"] == 10 for a, b in zip(h, h[1:]))
    for o in [d["pool"]] + d["backends"] + d["tenants"] + d["routes"]:
        assert set(o["windows"]) == {"10s", "1m", "5m"}


def test_page_renders_the_fixture(page_server):
    page_server.scenarios["fixture"] = [load_fixture()]
    d = load_fixture()
    p = chromium(page_server.url + "/fixture/status",
                 screenshot=os.path.join(ARTIFACTS, "status-page.png"))
    p.assert_ready()
    assert not p.console, "the page logged to the console: %r" % p.console
    backends = p.text(p.element("table", "backends"))
    for b in d["backends"]:
        assert b["name"] in backends and b["address"] in backends
        # the default window is 1m; p95 formatted for humans (e.g. 1.8 s, 413 ms)
        assert fmt_ms(b["windows"]["1m"]["p95_ms"]) in backends, (b["name"], backends)
    assert "auto (learned 4)" in backends
    tenants = p.text(p.element("table", "tenants"))
    for t in d["tenants"]:
        assert t["name"] in tenants
    assert "rate 12 · tenant-queue 4" in tenants and "none" in tenants
    # an unnamed key is marked as such, and a tenant whose own queue stands as shedding
    row = [r for r in p.element("table", "tenants").split("<tr") if "acme-corp" in r][0]
    assert ">key<" in row and ">shedding<" in row and "shed 812" in p.text(row), row
    routes = p.text(p.element("table", "routes"))
    assert "/api/v1/sqllab" in routes
    assert html.escape(d["scale"]["reason"], quote=False) in p.dom
    # the model's figure in one sentence a person can check (issue 14)
    assert ("model: 8 is the fewest workers with which at most 5% of the 1158 requests of "
            "the last 1 min would have waited over 500 ms, replayed through a simulated pool "
            "with their service times 7.6% longer") in p.text(p.element("p", "model-sentence"))
    chart = p.element("div", "chart")
    assert "<svg" in chart
    series = re.findall(r'<(?:path|polyline)\b[^>]*class="series"[^>]*\bd="M[^"]+"', chart)
    assert len(series) >= 3, chart[:3000]
    for name in ("required", "supply", "desired", "queue"):
        assert 'data-series="%s"' % name in chart
    header = p.text(p.dom.split("</header>")[0])
    assert d["instance"] in header and "3d 4h" in header
    assert "HTTP/2 64% of requests" in header, header  # 30977 of 48211 (issue 15)
    text = p.text()
    for bad in ("NaN", "undefined", "null", "[object"):
        assert bad not in text, "%r shown on the page" % bad


def test_page_at_800px_with_the_5m_window(page_server):
    page_server.scenarios["fixture"] = [load_fixture()]
    d = load_fixture()
    p = chromium(page_server.url + "/fixture/status#w=5m", width=800, height=1700,
                 screenshot=os.path.join(ARTIFACTS, "status-page-800.png"))
    p.assert_ready()
    assert re.search(r'<button[^>]*data-w="5m"[^>]*aria-pressed="true"', p.dom)
    backends = p.text(p.element("table", "backends"))
    for b in d["backends"]:
        assert fmt_ms(b["windows"]["5m"]["p95_ms"]) in backends
        assert fmt_ms(b["windows"]["1m"]["p95_ms"]) not in backends


def test_null_fields_render_as_dashes(page_server):
    page_server.scenarios["nulls"] = [nulled(load_fixture())]
    p = chromium(page_server.url + "/nulls/status", budget_ms=3000)
    p.assert_ready()
    text = p.text()
    assert text.count("–") > 40
    for bad in ("NaN", "undefined", "null", "[object"):
        assert bad not in text, "%r shown on the page" % bad


def test_empty_configuration_shows_empty_states(page_server):
    page_server.scenarios["empty"] = [{"backends": [], "tenants": [], "routes": [],
                                       "scale": None}]
    p = chromium(page_server.url + "/empty/status", budget_ms=3000)
    p.assert_ready()
    text = p.text()
    assert "no backends configured" in text and "no tenants configured" in text
    assert "no scaling estimate reported" in text
    assert re.search(r'<section[^>]*id="routes-panel"[^>]*hidden', p.dom)


def test_failed_poll_keeps_the_last_data_and_shows_the_error(page_server):
    page_server.scenarios["flaky"] = [load_fixture(), (503, "admin listener restarting")]
    p = chromium(page_server.url + "/flaky/status", budget_ms=5000)
    attrs = p.body_attrs()
    assert attrs.get("data-ready") == "1"
    assert "HTTP 503" in attrs.get("data-error", ""), attrs
    assert "gunicorn-a" in p.text(p.element("table", "backends"))
    assert re.search(r'<div id="age" class="age bad"[^>]*>update failed', p.dom)
    assert not [l for l in p.console if "Uncaught" in l], p.console


def test_unreachable_status_json_is_reported(page_server):
    page_server.scenarios["down"] = [(502, "bad gateway")]
    p = chromium(page_server.url + "/down/status", budget_ms=3000)
    attrs = p.body_attrs()
    assert "data-ready" not in attrs
    assert "HTTP 502" in attrs.get("data-error", ""), attrs
    assert "Cannot update from status.json: HTTP 502" in p.text()


# ---------------------------------------------------------------- against a real sluice

LIVE_TENANTS = """
[tenants]
key = header:X-Tenant

[tenant gold]
rate = 50
burst = 20

[tenant silver]
rate = 0
"""


def test_live_status_page(backend_factory, sluice_factory, free_port):
    b = backend_factory("superset-web", workers=2)
    admin_port = free_port()
    s = sluice_factory([b], extra=LIVE_TENANTS + "\n[admin]\nlisten = 127.0.0.1:%d\n"
                       % admin_port, start=False)
    check = subprocess.run([helpers.SLUICE_BIN, "-t", "-c", s.config], stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=30)
    assert check.returncode == 0, "sluice -t refused the config:\n%s" % check.stderr.decode(
        "utf-8", "replace")
    s.start()
    helpers.wait_port(admin_port, 15 * helpers.SLOW, s.proc, "sluice admin listener")
    for i in range(6):
        for tenant in ("gold", "silver"):
            r = helpers.request(s.port, "GET", "/?n=%d" % i, headers={"X-Tenant": tenant})
            assert r.status == 200, r
    p = chromium("http://127.0.0.1:%d/status" % admin_port,
                 screenshot=os.path.join(ARTIFACTS, "status-page-live.png"))
    p.assert_ready()
    assert "superset-web" in p.text(p.element("table", "backends"))
    tenants = p.text(p.element("table", "tenants"))
    assert "gold" in tenants and "silver" in tenants
    for bad in ("NaN", "undefined", "[object"):
        assert bad not in p.text(), "%r shown on the page" % bad
