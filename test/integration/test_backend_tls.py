"""TLS from sluice to a backend: verified by default against tls_ca, refused (502) when the
backend's certificate does not verify, and usable unverified only when asked."""
import http.client
import os
import subprocess

import pytest

OPENSSL = "/usr/bin/openssl"
pytestmark = pytest.mark.skipif(not os.access(OPENSSL, os.X_OK), reason="needs openssl CLI")


def make_cert(d, name, sans):
    cert, key = os.path.join(d, name + ".crt"), os.path.join(d, name + ".key")
    subprocess.run([OPENSSL, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "2", "-subj", "/CN=" + name,
                    "-addext", "subjectAltName=" + sans],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)
    return cert, key


@pytest.fixture(scope="module")
def tls_backend(module_backend_factory, tmp_path_factory):
    d = str(tmp_path_factory.mktemp("btls"))
    cert, key = make_cert(d, "backend.test", "DNS:backend.test,IP:127.0.0.1")
    other, _ = make_cert(d, "other.test", "DNS:other.test")
    b = module_backend_factory("tlsb", worker_class="gthread", threads=2,
                               extra_args=["--certfile", cert, "--keyfile", key])
    return b, cert, other


def get(port, path="/"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    c.request("GET", path)
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, r.getheader("X-Sluice-Error"), body


def test_backend_tls_verified_against_tls_ca_serves(tls_backend, sluice_factory):
    b, cert, _ = tls_backend
    s = sluice_factory([b], backend_opts={"tls": "yes", "tls_ca": cert})
    for _ in range(3):  # the second and third reuse the pooled TLS connection
        status, _, body = get(s.port)
        assert status == 200 and body == b"hello from tlsb\n"


def test_backend_tls_name_is_verified_when_set(tls_backend, sluice_factory):
    b, cert, _ = tls_backend
    s = sluice_factory([b], backend_opts={"tls": "yes", "tls_ca": cert,
                                          "tls_name": "backend.test"})
    assert get(s.port)[0] == 200
    s2 = sluice_factory([b], backend_opts={"tls": "yes", "tls_ca": cert,
                                           "tls_name": "wrong.test"})
    status, err, _ = get(s2.port)
    assert status == 502 and err == "upstream-connect"


def test_backend_tls_with_an_untrusted_certificate_is_refused_with_502(tls_backend,
                                                                       sluice_factory):
    b, _, other = tls_backend
    seen = len(open(b.log).read().splitlines()) if os.path.exists(b.log) else 0
    s = sluice_factory([b], backend_opts={"tls": "yes", "tls_ca": other})
    status, err, _ = get(s.port)
    assert status == 502 and err == "upstream-connect"
    assert "certificate verify failed" in open(s.error_log).read()
    after = len(open(b.log).read().splitlines()) if os.path.exists(b.log) else 0
    assert after == seen, "the request reached a backend whose certificate did not verify"


def test_backend_tls_without_verification_only_when_asked(tls_backend, sluice_factory):
    b, _, _ = tls_backend
    s = sluice_factory([b], backend_opts={"tls": "yes", "tls_verify": "no"})
    assert get(s.port)[0] == 200


def test_backend_tls_ca_file_missing_fails_the_config_check(tls_backend, sluice_factory):
    b, _, _ = tls_backend
    s = sluice_factory([b], backend_opts={"tls": "yes", "tls_ca": "/nonexistent/ca.pem"},
                       start=False)
    p = subprocess.run([os.environ.get("SLUICE_BIN", "build/sluice"), "-t", "-c", s.config],
                       capture_output=True, timeout=30)
    assert p.returncode == 1
    err = p.stderr.decode()
    assert s.config + ":" in err and "tls_ca" in err, err
