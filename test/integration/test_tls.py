"""TLS listeners: TLS 1.2/1.3 only, SNI certificate choice, ALPN, session resumption,
keep-alive, bad handshakes, HTTP->HTTPS redirects and certificate/key checks in -t.

Certificates are made with the openssl CLI in a temporary directory: an RSA one for
alpha.test (the default, also www.alpha.test) and an EC one for beta.test."""
import os
import re
import shutil
import signal
import socket
import subprocess

import pytest

import helpers
from helpers import SLOW, read_text, wait_for, wait_port

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"

pytestmark = pytest.mark.skipif(not os.access(OPENSSL, os.X_OK), reason="needs openssl CLI")


# ---------------------------------------------------------------- certificates and configs

def make_cert(d, name, kind, sans):
    """Self-signed certificate for CN=name with subjectAltName DNS:sans; (cert, key) paths."""
    cert = os.path.join(d, "%s.crt" % name)
    key = os.path.join(d, "%s.key" % name)
    if kind == "rsa":
        newkey = ["-newkey", "rsa:2048"]
    else:
        newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    subprocess.run([OPENSSL, "req", "-x509"] + newkey +
                   ["-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=%s" % name,
                    "-addext", "subjectAltName=" + ",".join("DNS:%s" % s for s in sans)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)
    return cert, key


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("certs"))
    return {
        "alpha": make_cert(d, "alpha.test", "rsa", ["alpha.test", "www.alpha.test"]),
        "beta": make_cert(d, "beta.test", "ec", ["beta.test"]),
        "other": make_cert(d, "other.test", "rsa", ["other.test"]),
        "dir": d,
    }


def tls_lines(tls_port, pairs, redirect=False):
    lines = ["tls_listen = 127.0.0.1:%d" % tls_port]
    for cert, key in pairs:
        lines += ["tls_cert = %s" % cert, "tls_key = %s" % key]
    if redirect:
        lines.append("redirect_http = yes")
    return lines


def insert_proxy_lines(config, lines):
    """Insert lines right after [proxy] in a config written by helpers.write_config."""
    text = read_text(config).splitlines()
    i = text.index("[proxy]") + 1
    text[i:i] = lines
    with open(config, "w") as f:
        f.write("\n".join(text) + "\n")


def line_of(config, prefix):
    """1-based line number of the first line starting with prefix."""
    for n, l in enumerate(read_text(config).splitlines(), 1):
        if l.startswith(prefix):
            return n
    raise AssertionError("no %r in %s" % (prefix, config))


class TlsSite:
    def __init__(self, sluice, backend, tls_port):
        self.s = sluice
        self.b = backend
        self.port = sluice.port
        self.tls_port = tls_port


def start_tls_sluice(sluice_factory, backends, pairs, redirect=False, proxy=None, extra=None):
    s = sluice_factory(backends, proxy=proxy, start=False, extra=extra)
    tls_port = helpers.free_port()
    insert_proxy_lines(s.config, tls_lines(tls_port, pairs, redirect))
    s.start()
    wait_port(tls_port, 15 * SLOW, s.proc, "sluice tls listener")
    return s, tls_port


@pytest.fixture(scope="module")
def site(module_backend_factory, module_sluice_factory, certs):
    a = module_backend_factory("tls-a", workers=1, worker_class="gthread", threads=4)
    s, tls_port = start_tls_sluice(module_sluice_factory, [a], [certs["alpha"], certs["beta"]],
                                   redirect=True)
    return TlsSite(s, a, tls_port)


# ---------------------------------------------------------------- clients

def curl(port, urls, *extra, name="alpha.test"):
    """curl -sk over TLS; returns CompletedProcess (stdout has bodies then the -w line)."""
    argv = [helpers.CURL, "-sk", "--max-time", str(int(20 * SLOW)),
            "--resolve", "%s:%d:127.0.0.1" % (name, port)] + list(extra)
    argv += ["https://%s:%d%s" % (name, port, u) for u in urls]
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=40 * SLOW)


def s_client(port, *args, data=b"", timeout=None):
    """openssl s_client against 127.0.0.1:port; (returncode, stdout+stderr text)."""
    argv = [OPENSSL, "s_client", "-connect", "127.0.0.1:%d" % port] + list(args)
    p = subprocess.run(argv, input=data, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=timeout or 30 * SLOW)
    return p.returncode, p.stdout.decode("utf-8", "replace")


def http_get(host="alpha.test", target="/"):
    return ("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (target, host)).encode()


def subject_cn(out):
    m = re.search(r"^subject=.*?CN\s*=\s*([^,/\s]+)", out, re.M)
    return m.group(1) if m else None


# ---------------------------------------------------------------- tests

def test_tls13_request_reaches_backend_marked_x_forwarded_proto_https(site):
    p = curl(site.tls_port, ["/echo"], "--tlsv1.3", "-v")
    assert p.returncode == 0, p.stderr.decode()[-2000:]
    err = p.stderr.decode()
    assert "SSL connection using TLSv1.3" in err, err[-2000:]
    import json
    j = json.loads(p.stdout)
    assert j["headers"]["x-forwarded-proto"] == "https", j
    assert j["headers"]["host"] == "alpha.test:%d" % site.tls_port, j
    assert j["name"] == "tls-a"


def test_tls12_request_works_and_is_marked_https(site):
    p = curl(site.tls_port, ["/echo"], "--tlsv1.2", "--tls-max", "1.2", "-v")
    assert p.returncode == 0, p.stderr.decode()[-2000:]
    err = p.stderr.decode()
    assert "SSL connection using TLSv1.2" in err, err[-2000:]
    import json
    assert json.loads(p.stdout)["headers"]["x-forwarded-proto"] == "https"


@pytest.mark.parametrize("proto", ["tls1", "tls1_1", "ssl3"])
def test_old_protocol_versions_are_refused_by_the_server(site, proto):
    # SECLEVEL=0 lets the local client actually offer TLS 1.0/1.1; the refusal must then come
    # from sluice (a protocol_version alert or a failed handshake), not from the client.
    rc, out = s_client(site.tls_port, "-%s" % proto, "-cipher", "DEFAULT:@SECLEVEL=0",
                       "-servername", "alpha.test", data=http_get())
    if "Unknown option" in out or "unknown option" in out or "no protocols available" in out:
        pytest.skip("local openssl s_client cannot offer %s" % proto)
    assert rc != 0, out[-2000:]
    assert "hello from" not in out, out[-2000:]
    assert "Cipher is (NONE)" in out or "alert protocol version" in out, out[-2000:]
    # and sluice still serves
    assert curl(site.tls_port, ["/"]).stdout == b"hello from tls-a\n"


@pytest.mark.parametrize("servername,cn", [
    ("alpha.test", "alpha.test"),
    ("www.alpha.test", "alpha.test"),
    ("beta.test", "beta.test"),
    ("unknown.test", "alpha.test"),
    (None, "alpha.test"),
])
def test_sni_selects_the_certificate_whose_names_match_default_otherwise(site, servername, cn):
    sni = ["-servername", servername] if servername else ["-noservername"]
    rc, out = s_client(site.tls_port, *sni, "-ign_eof", data=http_get(servername or "alpha.test"))
    assert subject_cn(out) == cn, out[-3000:]
    assert "hello from tls-a" in out, out[-3000:]


def test_sni_ec_certificate_works_over_tls12(site):
    rc, out = s_client(site.tls_port, "-tls1_2", "-servername", "beta.test", "-ign_eof",
                       data=http_get("beta.test"))
    assert subject_cn(out) == "beta.test", out[-3000:]
    assert "ECDSA" in out, out[-3000:]  # an ECDHE-ECDSA suite: the EC key was used
    assert "hello from tls-a" in out, out[-3000:]


def test_alpn_offering_h2_and_http11_negotiates_h2(site):
    # (HTTP/2 itself is tested in test_http2.py; the HTTP/1.1 request sent here is then
    # not an HTTP/2 preface, and the connection is refused)
    rc, out = s_client(site.tls_port, "-servername", "alpha.test", "-alpn", "h2,http/1.1",
                       "-ign_eof", data=http_get())
    assert "ALPN protocol: h2" in out, out[-3000:]
    assert "hello from tls-a" not in out, out[-3000:]


def test_alpn_offering_http11_negotiates_http11(site):
    rc, out = s_client(site.tls_port, "-servername", "alpha.test", "-alpn", "http/1.1",
                       "-ign_eof", data=http_get())
    assert "ALPN protocol: http/1.1" in out, out[-3000:]
    assert "hello from tls-a" in out, out[-3000:]


def test_alpn_offering_only_unknown_protocols_completes_the_handshake_without_alpn(site):
    rc, out = s_client(site.tls_port, "-servername", "alpha.test", "-alpn", "spdy/3",
                       "-ign_eof", data=http_get())
    assert "No ALPN negotiated" in out, out[-3000:]
    assert "hello from tls-a" in out, out[-3000:]


@pytest.mark.parametrize("proto", ["tls1_2", "tls1_3"])
def test_tls_session_is_resumed(site, tmp_path, proto):
    sess = str(tmp_path / "session.pem")
    rc, out = s_client(site.tls_port, "-%s" % proto, "-servername", "alpha.test", "-ign_eof",
                       "-sess_out", sess, data=http_get())
    assert "hello from tls-a" in out and re.search(r"^New, TLSv1", out, re.M), out[-3000:]
    assert os.path.getsize(sess) > 0
    rc, out = s_client(site.tls_port, "-%s" % proto, "-servername", "alpha.test", "-ign_eof",
                       "-sess_in", sess, data=http_get())
    assert re.search(r"^Reused, TLSv1", out, re.M), out[-3000:]
    assert "hello from tls-a" in out, out[-3000:]


def test_keepalive_over_tls_serves_two_requests_on_one_connection(site):
    p = curl(site.tls_port, ["/", "/echo"], "-w", "|%{http_code} %{num_connects}\n")
    assert p.returncode == 0, p.stderr.decode()
    out = p.stdout.decode()
    assert out.startswith("hello from tls-a\n|200 1\n"), out
    assert out.rstrip().endswith("|200 0"), out  # the second URL reused the TLS connection


def test_plain_listener_redirects_to_https_with_308(site):
    r = helpers.request(site.port, "GET", "/some/path?x=1&y=2", {"Host": "alpha.test"})
    assert r.status == 308, r
    assert r.header("Location") == "https://alpha.test:%d/some/path?x=1&y=2" % site.tls_port, r
    r = helpers.request(site.port, "POST", "/form", {"Host": "www.alpha.test:8080"}, body=b"a=1")
    assert r.status == 308, r
    assert r.header("Location") == "https://www.alpha.test:%d/form" % site.tls_port, r
    assert not any("/some/path" in l or "/form" in l for l in site.b.log_lines())


def test_curl_follows_the_redirect_to_https(site):
    p = subprocess.run([helpers.CURL, "-skL", "--max-time", str(int(20 * SLOW)),
                        "--resolve", "alpha.test:%d:127.0.0.1" % site.port,
                        "--resolve", "alpha.test:%d:127.0.0.1" % site.tls_port,
                        "-w", "|%{http_code} %{num_redirects}",
                        "http://alpha.test:%d/" % site.port],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=40 * SLOW)
    assert p.stdout == b"hello from tls-a\n|200 1", (p.stdout, p.stderr)


def test_garbage_on_the_tls_port_never_reaches_a_backend_and_sluice_keeps_serving(
        backend_factory, sluice_factory, certs):
    a = backend_factory("a", workers=1, worker_class="gthread", threads=4)
    s, tls_port = start_tls_sluice(sluice_factory, [a], [certs["alpha"]])
    garbage = [os.urandom(512),
               b"\x16\x03\x01\x00\x05hello",                       # a bogus handshake record
               b"\x16\x03\x01\xff\xff" + os.urandom(64),           # huge length, then stop
               http_get()]                                          # plain HTTP on TLS
    for g in garbage:
        out = helpers.raw(tls_port, g, timeout=10 * SLOW)
        assert b"hello from" not in out and b"HTTP/1.1 200" not in out, out[:200]
    # a client that connects and closes at once, and one that half-handshakes and leaves
    socket.create_connection(("127.0.0.1", tls_port), timeout=5).close()
    assert a.log_lines() == [], a.log_lines()
    p = curl(tls_port, ["/"])
    assert p.stdout == b"hello from a\n", p
    assert a.log_lines() == ["GET /"], a.log_lines()
    assert s.proc.poll() is None


# ---------------------------------------------------------------- -t certificate checks

def check_config(tmp_path, certs, pairs):
    """Write a config with the given cert/key pairs; run sluice -t; (rc, output, config)."""
    cfg = str(tmp_path / "tls.ini")
    helpers.write_config(cfg, ["127.0.0.1:%d" % helpers.free_port()],
                         [("a", "127.0.0.1:%d" % helpers.free_port())], log_dir=str(tmp_path))
    insert_proxy_lines(cfg, tls_lines(helpers.free_port(), pairs))
    p = subprocess.run([helpers.SLUICE_BIN, "-t", "-c", cfg], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, env=helpers.sluice_env(), timeout=30 * SLOW)
    return p.returncode, p.stdout.decode("utf-8", "replace"), cfg


def test_config_check_accepts_matching_cert_and_key_pairs(tmp_path, certs):
    rc, out, cfg = check_config(tmp_path, certs, [certs["alpha"], certs["beta"]])
    assert rc == 0, out


def assert_key_error(rc, out, cfg, key):
    assert rc == 1, out
    line = line_of(cfg, "tls_key = %s" % key)
    assert "%s:%d:" % (cfg, line) in out, (line, out)
    assert "tls_key" in out, out


def test_config_check_rejects_a_key_that_does_not_match_its_cert(tmp_path, certs):
    key = certs["other"][1]
    rc, out, cfg = check_config(tmp_path, certs, [certs["alpha"], (certs["beta"][0], key)])
    assert_key_error(rc, out, cfg, key)


def test_config_check_rejects_a_missing_key_file(tmp_path, certs):
    key = str(tmp_path / "nope.key")
    rc, out, cfg = check_config(tmp_path, certs, [(certs["alpha"][0], key)])
    assert_key_error(rc, out, cfg, key)


def test_config_check_rejects_an_unreadable_key_file(tmp_path, certs):
    key = str(tmp_path / "secret.key")
    shutil.copy(certs["alpha"][1], key)
    os.chmod(key, 0)
    try:
        if os.access(key, os.R_OK):
            # root reads anything: a directory in place of the key is unreadable as a key too
            key = str(tmp_path / "keydir")
            os.mkdir(key)
        rc, out, cfg = check_config(tmp_path, certs, [(certs["alpha"][0], key)])
        assert_key_error(rc, out, cfg, key)
    finally:
        if os.path.isfile(str(tmp_path / "secret.key")):
            os.chmod(str(tmp_path / "secret.key"), 0o600)


def test_config_check_rejects_a_garbage_key_file(tmp_path, certs):
    key = str(tmp_path / "garbage.key")
    with open(key, "w") as f:
        f.write("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5IGF0IGFsbA==\n-----END PRIVATE KEY-----\n")
    rc, out, cfg = check_config(tmp_path, certs, [(certs["alpha"][0], key)])
    assert_key_error(rc, out, cfg, key)


def test_config_check_rejects_random_bytes_as_key_file(tmp_path, certs):
    key = str(tmp_path / "random.key")
    with open(key, "wb") as f:
        f.write(os.urandom(600))
    rc, out, cfg = check_config(tmp_path, certs, [(certs["alpha"][0], key)])
    assert_key_error(rc, out, cfg, key)


def test_reload_with_a_new_certificate_order_changes_the_default_certificate(
        backend_factory, sluice_factory, certs):
    a = backend_factory("a", workers=1, worker_class="gthread", threads=4)
    s, tls_port = start_tls_sluice(sluice_factory, [a], [certs["alpha"], certs["beta"]])
    rc, out = s_client(tls_port, "-noservername", "-ign_eof", data=http_get())
    assert subject_cn(out) == "alpha.test", out[-2000:]
    text = read_text(s.config)
    a_lines = "tls_cert = %s\ntls_key = %s\n" % certs["alpha"]
    b_lines = "tls_cert = %s\ntls_key = %s\n" % certs["beta"]
    assert a_lines + b_lines in text
    with open(s.config, "w") as f:
        f.write(text.replace(a_lines + b_lines, b_lines + a_lines))
    s.signal(signal.SIGHUP)
    wait_for(lambda: "reloaded generation" in s.errors(), 15 * SLOW, msg="reload logged")
    rc, out = s_client(tls_port, "-noservername", "-ign_eof", data=http_get())
    assert subject_cn(out) == "beta.test", out[-2000:]
    assert "hello from a" in out
    rc, out = s_client(tls_port, "-servername", "alpha.test", "-ign_eof", data=http_get())
    assert subject_cn(out) == "alpha.test", out[-2000:]


def test_reload_with_a_mismatched_key_fails_and_keeps_serving_the_old_certificate(
        backend_factory, sluice_factory, certs):
    a = backend_factory("a", workers=1, worker_class="gthread", threads=4)
    s, tls_port = start_tls_sluice(sluice_factory, [a], [certs["alpha"]])
    text = read_text(s.config)
    with open(s.config, "w") as f:
        f.write(text.replace("tls_key = %s" % certs["alpha"][1],
                             "tls_key = %s" % certs["other"][1]))
    s.signal(signal.SIGHUP)
    wait_for(lambda: "reload failed" in s.errors(), 15 * SLOW, msg="reload failed logged")
    err = [l for l in s.errors().splitlines() if "reload failed" in l][0]
    assert "%s:%d:" % (s.config, line_of(s.config, "tls_key")) in err, err
    p = curl(tls_port, ["/"])
    assert p.stdout == b"hello from a\n", p


# ---------------------------------------------------------------- clients that go away

def tls_download_then(port, how):
    """Ask for a 64 MiB body over TLS, take 64 KiB of it, then end our side by `how`
    ("fin": TCP FIN without close_notify; "close_notify": a TLS close_notify) and keep the
    socket open without reading. Returns the raw socket (the caller closes it)."""
    import ssl
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    raw = socket.create_connection(("127.0.0.1", port), timeout=10 * SLOW)
    c = ctx.wrap_socket(raw, server_hostname="alpha.test")
    c.sendall(b"GET /bytes?n=67108864 HTTP/1.1\r\nHost: alpha.test\r\n\r\n")
    got = 0
    while got < 65536:
        got += len(c.recv(16384))
    if how == "fin":
        c.shutdown(socket.SHUT_WR)  # drops the TLS state, sends a bare FIN
    else:
        c.settimeout(0.5)
        try:
            c.unwrap()  # sends close_notify, then waits for the server's: gives up
        except (OSError, ValueError):
            pass
    return c


@pytest.mark.parametrize("how", ["fin", "close_notify"])
def test_tls_client_ending_its_side_mid_download_is_aborted_not_held(site, how):
    """libevent's TLS bufferevent stops writing (and its write timeout) when the client's
    side ends, so a download whose client half-closed could never finish: it must be
    aborted at once (logged with the bytes sent, backend slot back), not held until shutdown."""
    before = len(site.s.access_lines())
    c = tls_download_then(site.tls_port, how)
    try:
        lines = wait_for(lambda: [l for l in site.s.access_lines()[before:]
                                  if "/bytes?n=67108864" in l],
                         timeout=10 * SLOW, msg="the download's access-log line")
        f = lines[0].split()
        assert f[5] == "200" and int(f[7]) < 67108864, lines  # as NGINX: status sent, bytes cut
    finally:
        c.close()
    # the proxy still serves over TLS afterwards
    p = curl(site.tls_port, ["/"], "-o", "/dev/null", "-w", "%{http_code}")
    assert p.stdout.decode().endswith("200")
