"""`sluice -t -c FILE`: config check exit status and `file:line: message` errors."""
import os
import subprocess

import helpers
from helpers import SLUICE_BIN, write_config


def check(path):
    return subprocess.run([SLUICE_BIN, "-t", "-c", path], stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=30 * helpers.SLOW,
                          env=helpers.sluice_env())


def good_config(tmp_path):
    return write_config(str(tmp_path / "good.ini"), ["127.0.0.1:%d" % helpers.free_port()],
                        [("app1", "127.0.0.1:%d" % helpers.free_port(), 4),
                         ("app2", "127.0.0.1:%d" % helpers.free_port(), 2)])


def test_config_check_accepts_a_valid_config_and_says_ok(tmp_path):
    path = good_config(tmp_path)
    p = check(path)
    out = (p.stdout + p.stderr).decode()
    assert p.returncode == 0, out
    assert "ok" in out.lower(), out


def test_config_check_accepts_the_shipped_example_config():
    p = check(os.path.join(helpers.REPO, "etc", "sluice.ini"))
    out = (p.stdout + p.stderr).decode()
    assert p.returncode == 0, out


def test_config_check_accepts_threads_auto_and_repeated_listen(tmp_path):
    path = write_config(str(tmp_path / "auto.ini"),
                        ["127.0.0.1:%d" % helpers.free_port(), "127.0.0.1:%d" % helpers.free_port()],
                        [("app1", "127.0.0.1:%d" % helpers.free_port(), 1)],
                        proxy={"threads": "auto", "client_header_timeout": "500ms",
                               "keepalive_timeout": "2m", "max_body_size": "64m"})
    p = check(path)
    assert p.returncode == 0, (p.stdout + p.stderr).decode()


def _with_line_inserted(path, after_prefix, new_line):
    """Insert new_line after the first line starting with after_prefix; return its 1-based
    line number."""
    with open(path) as f:
        lines = f.read().splitlines()
    idx = next(i for i, l in enumerate(lines) if l.startswith(after_prefix))
    lines.insert(idx + 1, new_line)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return idx + 2


def _assert_fails_at(path, line):
    p = check(path)
    err = p.stderr.decode()
    assert p.returncode == 1, "exit %s, stderr %r stdout %r" % (p.returncode, err, p.stdout)
    assert "%s:%d:" % (path, line) in err, "expected '%s:%d: ...' in stderr, got %r" % (
        path, line, err)


def test_config_check_rejects_unknown_key_in_proxy_with_file_and_line(tmp_path):
    path = good_config(tmp_path)
    line = _with_line_inserted(path, "[proxy]", "no_such_key = 1")
    _assert_fails_at(path, line)


def test_config_check_rejects_unknown_key_in_backend_with_file_and_line(tmp_path):
    path = good_config(tmp_path)
    line = _with_line_inserted(path, "[backend app2]", "bogus = yes")
    _assert_fails_at(path, line)


def test_config_check_rejects_bad_duration_with_file_and_line(tmp_path):
    path = good_config(tmp_path)
    line = _with_line_inserted(path, "[backend app1]", "read_timeout = 10 parsecs")
    _assert_fails_at(path, line)


def test_config_check_rejects_bad_size_with_file_and_line(tmp_path):
    path = good_config(tmp_path)
    line = _with_line_inserted(path, "[proxy]", "max_body_size = lots")
    _assert_fails_at(path, line)


def test_config_check_rejects_bad_threads_value_with_file_and_line(tmp_path):
    path = good_config(tmp_path)
    line = _with_line_inserted(path, "[proxy]", "threads = banana")
    _assert_fails_at(path, line)


def test_config_check_fails_for_missing_file(tmp_path):
    p = check(str(tmp_path / "does-not-exist.ini"))
    assert p.returncode == 1, (p.stdout + p.stderr).decode()
    assert p.stderr.strip(), "no error message for a missing config file"


def _fails_at(tmp_path, text, line):
    path = str(tmp_path / "bad.ini")
    with open(path, "w") as f:
        f.write("[proxy]\nlisten = 127.0.0.1:1\n[backend a]\naddress = 127.0.0.1:2\n" + text)
    _assert_fails_at(path, line)


def test_config_check_rejects_bad_admission_keys_with_file_and_line(tmp_path):
    _fails_at(tmp_path, "[route r]\nprefix = /x\nmax_inflight = -1\n", 7)
    # signed tenant keys need a key the client sends
    _fails_at(tmp_path, "[tenants]\nkey = ip\nhmac_key = 0123456789abcdefXYZ\n", 7)
    _fails_at(tmp_path, "[tenants]\nkey = header:X-T\nhmac_key = short\n", 7)
    _fails_at(tmp_path, "[queue]\ntarget = soon\n", 6)
    _fails_at(tmp_path, "[backend b]\naddress = 127.0.0.1:3\nworkers = many\n", 7)
    _fails_at(tmp_path, "[backend b]\naddress = 127.0.0.1:3\nworkers = auto\n"
              "workers_min = 8\nworkers_max = 4\n", 5)
