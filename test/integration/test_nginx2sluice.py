"""contrib/nginx2sluice.py: NGINX configuration -> sluice.ini.

The converted files must pass `sluice -t`; every directive that is not converted must leave
a `; nginx.conf:LINE: ...: not converted: ...` note on the right line; syntax errors exit 1
naming file:line; and a converted configuration must proxy to real Gunicorn backends."""
import importlib.util
import json
import os
import re
import shutil
import subprocess

import pytest

import helpers
from helpers import SLUICE_BIN

SCRIPT = os.path.join(helpers.REPO, "contrib", "nginx2sluice.py")
OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"

# The NGINX configuration Superset operators run today (/work/shared/sizing-reference.md,
# last section), verbatim.
SIZING_NGINX = """\
upstream superset_backend {
    least_conn;
    server app1:8088 weight=1 max_fails=3 fail_timeout=30s;
    server app2:8088 weight=1 max_fails=3 fail_timeout=30s;
}
proxy_cache_path /var/cache/nginx levels=1:2 keys_zone=superset_cache:10m max_size=1g inactive=60m;
server {
    listen 80;
    location / {
        proxy_pass http://superset_backend;
        proxy_connect_timeout 10s;
        proxy_send_timeout 120s;
        proxy_read_timeout 120s;
        proxy_buffering off;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
    }
}
"""


# ---------------------------------------------------------------- helpers

def convert(conf, *args, cwd=None):
    """Run the converter on the file conf; CompletedProcess with text stdout/stderr."""
    return subprocess.run([helpers.PYTHON, SCRIPT] + list(args) + [str(conf)],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=60, cwd=cwd)


def convert_ok(conf, *args):
    p = convert(conf, *args)
    assert p.returncode == 0, "exit %s\nstderr: %s" % (p.returncode, p.stderr)
    assert p.stdout, "no output"
    return p


def sluice_t(path):
    return subprocess.run([SLUICE_BIN, "-t", "-c", str(path)], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=30 * helpers.SLOW,
                          env=helpers.sluice_env())


def assert_sluice_t_ok(path):
    p = sluice_t(path)
    out = p.stdout + p.stderr
    assert p.returncode == 0 and "syntax is ok" in out, "sluice -t %s: exit %s\n%s\n%s" % (
        path, p.returncode, out, open(path).read())


def ini(text):
    """{section: [(key, value), ...]} in file order (keys may repeat)."""
    out, cur = {}, None
    for line in text.splitlines():
        s = line.strip()
        if not s or s[0] in ";#":
            continue
        if s.startswith("["):
            cur = s[1:s.index("]")]
            assert cur not in out, "duplicate section [%s]" % cur
            out[cur] = []
            continue
        k, _, v = s.partition("=")
        assert cur is not None, "key outside a section: %r" % line
        out[cur].append((k.strip(), v.split(" ;")[0].strip()))
    return out


def keys(sections, name):
    d = {}
    for k, v in sections[name]:
        d.setdefault(k, v)
    return d


def summary(stderr):
    m = re.search(r"converted (\d+) directives, (\d+) not converted", stderr)
    assert m, "no summary on stderr: %r" % stderr
    return int(m.group(1)), int(m.group(2))


def notes(text, kind="not converted"):
    """{(file, line): note text} for '; FILE:LINE: ...: KIND: ...' comments (with their
    continuation lines)."""
    out, last = {}, None
    for line in text.splitlines():
        m = re.match(r"; (\S+?):(\d+): (.*)$", line)
        if m and (": %s:" % kind) in m.group(3):
            last = (m.group(1), int(m.group(2)))
            out[last] = m.group(3)
        elif last and line.startswith(";   "):
            out[last] += " " + line[4:]
        else:
            last = None
    return out


def resolvable(text):
    """The same configuration with every backend host replaced by 127.0.0.1."""
    return re.sub(r"(?m)^address = [^:\s]+:", "address = 127.0.0.1:", text)


def line_of(text, needle):
    for n, l in enumerate(text.splitlines(), 1):
        if needle in l:
            return n
    raise AssertionError("%r not in the configuration" % needle)


# ---------------------------------------------------------------- the sizing reference

def test_sizing_reference_nginx_conf_converts_to_a_config_sluice_accepts(tmp_path):
    conf = tmp_path / "nginx.conf"
    conf.write_text(SIZING_NGINX)
    p = convert_ok(conf)
    n_conv, n_not = summary(p.stderr)
    assert (n_conv, n_not) == (14, 1), p.stderr
    s = ini(p.stdout)
    assert [x for x in s if x.startswith("backend ")] == ["backend app1", "backend app2"]
    for name, host in (("backend app1", "app1"), ("backend app2", "app2")):
        b = keys(s, name)
        assert b["address"] == "%s:8088" % host
        assert b["weight"] == "1"
        assert b["max_fails"] == "3"
        assert b["fail_timeout"] == "30s"
        assert b["connect_timeout"] == "10s"
        assert b["read_timeout"] == "120s"
    proxy = keys(s, "proxy")
    assert s["proxy"][0] == ("listen", "80")
    # proxy_buffering is about responses (sluice always streams them); request bodies are
    # proxy_request_buffering's, on by default in NGINX: sluice keeps buffering them
    # (request_buffer's default, 1m), so the converter must not write request_buffer = 0.
    assert proxy.get("request_buffer", "1m") != "0"
    built_in = notes(p.stdout, "built in")
    assert "always streams responses" in built_in[("nginx.conf", 14)]
    assert "proxy_request_buffering" in built_in[("nginx.conf", 14)]
    for line in (2, 12, 15, 16):        # least_conn, send timeout, the two headers
        assert ("nginx.conf", line) in built_in, (line, p.stdout)
    nc = notes(p.stdout)
    assert list(nc) == [("nginx.conf", 6)], p.stdout
    assert nc[("nginx.conf", 6)].startswith("proxy_cache_path /var/cache/nginx")
    assert "no response cache" in nc[("nginx.conf", 6)]

    out = tmp_path / "sluice.ini"
    out.write_text(p.stdout)
    r = sluice_t(out)
    # app1/app2 are the operators' host names: sluice -t resolves backend addresses, so
    # here it may only fail on that; with resolvable hosts the file must be accepted.
    if r.returncode != 0:
        assert r.returncode == 1 and "cannot resolve app1:8088" in r.stderr, r.stderr
        assert r.stderr.count("\n") <= 1, r.stderr
    mapped = tmp_path / "sluice-127.ini"
    mapped.write_text(resolvable(p.stdout))
    assert_sluice_t_ok(mapped)


def test_output_is_deterministic_and_dash_o_writes_the_same(tmp_path):
    conf = tmp_path / "nginx.conf"
    conf.write_text(SIZING_NGINX)
    a = convert_ok(conf).stdout
    b = convert_ok(conf).stdout
    assert a == b
    out = tmp_path / "out.ini"
    p = convert(conf, "-o", str(out))
    assert p.returncode == 0 and p.stdout == "", (p.returncode, p.stdout, p.stderr)
    assert out.read_text() == a
    # the same file seen from elsewhere gives the same text (no absolute paths in it)
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "nginx.conf").write_text(SIZING_NGINX)
    assert convert_ok(other / "nginx.conf").stdout == a
    assert all(len(l) <= 198 for l in a.splitlines())


def test_sluice_from_nginx_runs_the_converter(tmp_path):
    """`sluice --from-nginx` (the binary's own flag) writes what the script writes, passes
    its options on, and says where it looked when the converter is missing."""
    conf = tmp_path / "nginx.conf"
    conf.write_text(SIZING_NGINX)
    want = convert_ok(conf).stdout
    run = lambda *a, env=None: subprocess.run(
        [SLUICE_BIN, "--from-nginx"] + list(a), capture_output=True, text=True,
        timeout=60 * helpers.SLOW, env=env or helpers.sluice_env())
    p = run(str(conf))
    assert p.returncode == 0 and p.stdout == want, (p.returncode, p.stderr)
    out = tmp_path / "o.ini"
    p = run("-o", str(out), "--workers", "7", str(conf))
    assert p.returncode == 0 and "workers = 7" in out.read_text(), p.stderr
    env = dict(helpers.sluice_env(), SLUICE_NGINX2SLUICE=str(tmp_path / "missing.py"))
    p = run(str(conf), env=env)
    assert p.returncode == 2 and "missing.py" in p.stderr and p.stdout == "", p.stderr


def test_workers_option_sets_every_backends_capacity(tmp_path):
    conf = tmp_path / "nginx.conf"
    conf.write_text(SIZING_NGINX)
    s = ini(convert_ok(conf, "--workers", "8").stdout)
    assert keys(s, "backend app1")["workers"] == "8"
    assert keys(s, "backend app2")["workers"] == "8"


# ---------------------------------------------------------------- TLS, limits, websocket, health

def make_cert(d):
    cert, key = os.path.join(d, "superset.crt"), os.path.join(d, "superset.key")
    subprocess.run([OPENSSL, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "2", "-subj", "/CN=superset.test",
                    "-addext", "subjectAltName=DNS:superset.test"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)
    return cert, key


TLS_NGINX = """\
worker_processes 4;
error_log {dir}/error.log warn;
events {{
    worker_connections 1024;
}}
http {{
    keepalive_timeout 65;
    client_max_body_size 100m;
    large_client_header_buffers 4 16k;
    access_log {dir}/access.log;
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      close;
    }}
    limit_req_zone $http_x_tenant zone=tenants:10m rate=20r/s;
    limit_req_zone $binary_remote_addr zone=login:1m rate=30r/m;
    upstream superset {{
        least_conn;
        keepalive 16;
        server 127.0.0.1:8001 max_fails=2 fail_timeout=15s;
        server 127.0.0.1:8002 max_fails=2 fail_timeout=15s;
    }}
    server {{
        listen 127.0.0.1:{http_port};
        server_name superset.test;
        return 301 https://$host$request_uri;
    }}
    server {{
        listen 127.0.0.1:{https_port} ssl http2;
        server_name superset.test;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256;
        location = /health {{
            access_log off;
            return 200 "ok";
        }}
        location /api/v1/sqllab/ {{
            proxy_pass http://superset;
        }}
        location / {{
            proxy_pass http://superset;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_connect_timeout 3s;
            proxy_read_timeout 86400s;
            proxy_request_buffering off;
            limit_req zone=tenants burst=40 nodelay;
            limit_req_status 429;
        }}
    }}
}}
"""


@pytest.mark.skipif(not os.access(OPENSSL, os.X_OK), reason="needs the openssl CLI")
def test_tls_limit_req_websocket_and_health_location_convert_and_pass_sluice_t(tmp_path):
    cert, key = make_cert(str(tmp_path))
    conf = tmp_path / "nginx.conf"
    text = TLS_NGINX.format(dir=tmp_path, http_port=helpers.free_port(),
                            https_port=helpers.free_port(), cert=cert, key=key)
    conf.write_text(text)
    p = convert_ok(conf)
    out = tmp_path / "sluice.ini"
    out.write_text(p.stdout)
    assert_sluice_t_ok(out)
    s = ini(p.stdout)
    proxy = s["proxy"]
    assert ("tls_listen", "127.0.0.1:%s" % text.split("listen 127.0.0.1:")[2].split()[0]) \
        in proxy
    assert ("tls_cert", cert) in proxy and ("tls_key", key) in proxy
    px = keys(s, "proxy")
    assert px["redirect_http"] == "yes"
    assert px["tls_ciphers"] == "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256"
    assert px["threads"] == "4"
    assert px["keepalive_timeout"] == "65s"
    assert px["max_body_size"] == "100m"
    assert px["max_line_size"] == "16k" and px["max_header_size"] == "64k"
    assert px["request_buffer"] == "0"          # proxy_request_buffering off
    assert px["access_log"] == "%s/access.log" % tmp_path
    assert px["error_log"] == "%s/error.log" % tmp_path and px["log_level"] == "warn"
    for name in ("backend 127.0.0.1-8001", "backend 127.0.0.1-8002"):
        b = keys(s, name)
        assert b["max_fails"] == "2" and b["fail_timeout"] == "15s"
        assert b["connect_timeout"] == "3s"
        assert b["read_timeout"] == "1h"        # 86400s, clamped to sluice's maximum
        assert b["keepalive"] == "16"
    assert keys(s, "tenants") == {"key": "header:X-Tenant"}
    assert keys(s, "tenant default") == {"rate": "20", "burst": "41"}
    assert keys(s, "route health") == {"prefix": "/health", "bypass": "yes"}
    assert keys(s, "route api-v1-sqllab") == {"prefix": "/api/v1/sqllab/"}

    def at(needle):
        return ("nginx.conf", line_of(text, needle))
    built_in = notes(p.stdout, "built in")
    for needle in ("map $http_upgrade", "proxy_set_header Upgrade",
                   "proxy_set_header Connection", "limit_req_status 429",
                   "ssl_protocols TLSv1.2 TLSv1.3"):
        assert at(needle) in built_in, (needle, p.stdout)
    assert "WebSocket" in built_in[at("proxy_set_header Upgrade")]
    partly = notes(p.stdout, "converted only in part")
    assert "clamped to 1h" in partly[at("proxy_read_timeout 86400s")]
    assert at("ssl http2") not in partly        # HTTP/2 is on by default over TLS
    assert "308" in partly[at("return 301")]
    assert "forwards it to the backends" in partly[at('return 200 "ok"')]
    nc = notes(p.stdout)
    assert at("zone=login:1m") in nc                  # a zone no limit_req uses
    assert at("access_log off") in nc                 # sluice logs every request


# ---------------------------------------------------------------- notes and errors

UNCONVERTIBLE = """\
user nginx; # X
events { # X
    worker_connections 512;
}
http {
    gzip on; # X
    sendfile on; # X
    upstream backend {
        ip_hash; # X
        server 127.0.0.1:8001;
        server unix:/run/gunicorn.sock; # X
    }
    server {
        listen 127.0.0.1:8080;
        add_header X-Frame-Options DENY; # X
        location ~ \\.php$ { # X
            return 403;
        }
        location /admin { # X
            deny all;
        }
        location / {
            proxy_pass http://backend;
            proxy_cache_valid 200 10m; # X
            proxy_set_header X-Real-IP $remote_addr; # X
            rewrite ^/old/(.*)$ /new/$1 break; # X
            allow 10.0.0.0/8; # X
        }
    }
    server { # X
        listen 127.0.0.1:8090;
        location / { proxy_pass http://backend; }
    }
    include missing.d/upstreams.conf; # X
}
"""


def test_each_unconvertible_directive_gets_a_note_on_its_own_line(tmp_path):
    conf = tmp_path / "nginx.conf"
    conf.write_text(UNCONVERTIBLE)
    p = convert_ok(conf)
    want = [n for n, l in enumerate(UNCONVERTIBLE.splitlines(), 1) if l.endswith("# X")]
    got = notes(p.stdout)
    assert sorted(l for f, l in got) == want, p.stdout
    assert all(f == "nginx.conf" for f, l in got)
    assert summary(p.stderr)[1] == len(want), p.stderr
    for (f, l), text in got.items():
        src = UNCONVERTIBLE.splitlines()[l - 1].strip()
        assert re.match(re.match(r"\w+", src).group(0) + "[ :]", text), (l, text)  # names it
        assert re.search(r": not converted: \S", text), text    # and says why
    assert "will reach the backends" in got[("nginx.conf", line_of(UNCONVERTIBLE,
                                                                   "location /admin"))]
    assert "regular-expression" in got[("nginx.conf", line_of(UNCONVERTIBLE, "location ~"))]
    out = tmp_path / "sluice.ini"
    out.write_text(p.stdout)
    assert_sluice_t_ok(out)


def test_includes_are_followed_with_globs_and_notes_name_the_included_file(tmp_path):
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "nginx.conf").write_text(
        "events { }\nhttp {\n    include conf.d/*.conf;\n}\n")
    (tmp_path / "conf.d" / "10-upstream.conf").write_text(
        "upstream pool {\n    server 127.0.0.1:8001;\n    server 127.0.0.1:8002;\n}\n")
    (tmp_path / "conf.d" / "20-site.conf").write_text(
        "server {\n    listen 8080;\n    gzip on;\n"
        "    location / {\n        proxy_pass http://pool;\n    }\n}\n")
    p = convert_ok(tmp_path / "nginx.conf")
    s = ini(p.stdout)
    assert [keys(s, x)["address"] for x in s if x.startswith("backend ")] == [
        "127.0.0.1:8001", "127.0.0.1:8002"]
    got = notes(p.stdout)
    assert ("conf.d/20-site.conf", 3) in got, p.stdout
    assert ("nginx.conf", 1) in got                     # events { }
    out = tmp_path / "sluice.ini"
    out.write_text(p.stdout)
    assert_sluice_t_ok(out)


@pytest.mark.parametrize("text,line", [
    # an unclosed block: the line that opened it
    ("server {\n    listen 80;\n    location / {\n        proxy_pass http://a:1;\n}\n", 1),
    # a stray closing brace
    ("server {\n    listen 80;\n}\n}\n", 4),
    # a directive without ';'
    ("server {\n    listen 80\n}\n", 2),
    # an unterminated string
    ("server {\n    listen 80;\n    return 200 \"ok;\n}\n", 3),
], ids=["unclosed", "stray-brace", "no-semicolon", "open-quote"])
def test_syntax_errors_exit_1_naming_file_and_line(tmp_path, text, line):
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    p = convert(conf)
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    assert p.stdout == ""
    assert "%s:%d:" % (conf, line) in p.stderr, p.stderr


def test_syntax_error_in_an_included_file_names_that_file(tmp_path):
    (tmp_path / "nginx.conf").write_text("http {\n    include site.conf;\n}\n")
    (tmp_path / "site.conf").write_text("server {\n    listen 80;\n}}\n")
    p = convert(tmp_path / "nginx.conf")
    assert p.returncode == 1
    assert "site.conf:3:" in p.stderr, p.stderr


def test_nothing_to_convert_and_unreadable_input_exit_1(tmp_path):
    conf = tmp_path / "nginx.conf"
    conf.write_text("server {\n    listen 80;\n    root /var/www;\n}\n")
    p = convert(conf)
    assert p.returncode == 1 and "proxy_pass" in p.stderr, p.stderr
    p = convert(tmp_path / "absent.conf")
    assert p.returncode == 1 and "absent.conf" in p.stderr, p.stderr


@pytest.mark.parametrize("args", [[], ["--no-such-option", "x.conf"], ["a.conf", "b.conf"],
                                  ["--workers", "many", "x.conf"]])
def test_usage_errors_exit_2(tmp_path, args):
    p = subprocess.run([helpers.PYTHON, SCRIPT] + args, capture_output=True, text=True,
                       timeout=30, cwd=str(tmp_path))
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert "usage" in p.stderr


# ---------------------------------------------------------------- the key table

def _c_tables():
    """src/config.c's key tables: {table: {key: (type, min, max)}}."""
    src = open(os.path.join(helpers.REPO, "src", "config.c")).read()
    out = {}
    for m in re.finditer(r"static const struct key_def (\w+)_keys\[\] = \{(.*?)\n\};", src,
                         re.S):
        body = re.sub(r'"\s*\n\s*"', "", m.group(2))   # joined string literals
        ent = {}
        for e in re.finditer(r'\{"(\w+)",\s*(K_\w+),\s*\w+\([\w.]+\),\s*(?:"[^"]*"|NULL),'
                             r'\s*([^,]+),\s*([^}]+)\}', body):
            lo, hi = (eval(x.replace("LL", "")) for x in (e.group(3), e.group(4)))
            ent[e.group(1)] = (e.group(2), lo, hi)
        out[m.group(1)] = ent
    return out


def test_converter_key_table_agrees_with_src_config_c():
    spec = importlib.util.spec_from_file_location("nginx2sluice", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    types = {"K_DURATION": "dur", "K_SIZE": "size", "K_INT": "int", "K_DOUBLE": "double",
             "K_BOOL": "bool", "K_STR": "str", "K_LIST": "list", "K_THREADS": "threads",
             "K_LEVEL": "level", "K_WORKERS": "workers", "K_RATE": "double",
             "K_AUTO_DURATION": "autodur", "K_KEEPALIVE": "autoint"}
    c = _c_tables()
    for table, section in (("proxy", "proxy"), ("backend", "backend"), ("tenant", "tenant"),
                           ("route", "route"), ("queue", "queue"), ("admin", "admin")):
        assert table in c, "no %s_keys in src/config.c" % table
        mine = mod.SLUICE_KEYS[section]
        assert set(c[table]) == set(mine), (table, set(c[table]) ^ set(mine))
        for key, (ctype, lo, hi) in c[table].items():
            t = mine[key]
            assert t[0] == types[ctype], (table, key, t, ctype)
            if t[0] in ("dur", "autodur", "size", "int", "double", "threads", "workers",
                        "autoint"):
                assert tuple(t[1:3]) == (lo, hi), (table, key, t, lo, hi)


# ---------------------------------------------------------------- end to end

def test_converted_sizing_config_proxies_to_real_gunicorn_backends(tmp_path, backend_factory,
                                                                    sluice_factory):
    a = backend_factory("app1", workers=2)
    b = backend_factory("app2", workers=2)
    s = sluice_factory([a, b], start=False)    # only for its port, paths and teardown
    text = (SIZING_NGINX.replace("app1:8088", a.address).replace("app2:8088", b.address)
            .replace("listen 80;", "listen 127.0.0.1:%d;\n    access_log %s;\n"
                     "    error_log %s info;" % (s.port, s.access_log, s.error_log)))
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    p = convert(conf, "-o", s.config, "--workers", "2")
    assert p.returncode == 0, p.stderr
    assert_sluice_t_ok(s.config)
    s.start()
    seen = set()
    for i in range(8):
        r = helpers.request(s.port, "GET", "/echo?i=%d" % i,
                            headers={"X-Forwarded-For": "10.9.8.7"})
        assert r.status == 200, r.body
        seen.add(r.header("X-App-Name"))
        echo = json.loads(r.body)
        assert echo["headers"]["x-forwarded-for"] == "10.9.8.7, 127.0.0.1"
        assert echo["headers"]["x-forwarded-proto"] == "http"
        assert r.header("X-Request-ID")
    assert seen == {"app1", "app2"}, seen
    lines = s.wait_access_lines(8)
    names = {l.split()[8] for l in lines}
    assert names == {"127.0.0.1-%d" % a.port, "127.0.0.1-%d" % b.port}, lines


def test_http2_listens_and_streams_convert(tmp_path):
    cert, key = make_cert(str(tmp_path))
    conf = tmp_path / "nginx.conf"
    conf.write_text("""
http {
    upstream app { server 127.0.0.1:8088; }
    server {
        listen 127.0.0.1:%d ssl http2;
        listen 127.0.0.1:%d http2;
        ssl_certificate %s;
        ssl_certificate_key %s;
        http2_max_concurrent_streams 64;
        location / { proxy_pass http://app; }
    }
}
""" % (helpers.free_port(), helpers.free_port(), cert, key))
    p = convert_ok(conf)
    out = tmp_path / "sluice.ini"
    out.write_text(p.stdout)
    assert_sluice_t_ok(out)
    px = keys(ini(p.stdout), "proxy")
    assert px["h2c"] == "yes"                   # listen ... http2 without ssl
    assert px["http2_max_streams"] == "64"
    assert "http2" not in px                    # on by default over TLS
    assert "not converted: http2" not in p.stdout
