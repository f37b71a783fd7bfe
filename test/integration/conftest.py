"""Fixtures for sluice's integration tests.

  free_port          -> a function returning a free 127.0.0.1 port
  backend_factory    -> start(name, workers=2, worker_class="sync", threads=1, env=None,
                        port=None, keepalive=5) starts gunicorn with test/app.py on a free
                        port and waits for it; stopped (SIGTERM, then SIGKILL by PID, workers
                        included) at teardown
  raw_backend_factory-> start(handler, port=None) starts a raw-socket Python backend
                        (helpers.RawBackend) in a thread
  sluice_factory     -> start(backends, proxy=None, backend_opts=None) writes a config into
                        tmp_path and starts $SLUICE_BIN (default build/sluice); at teardown
                        SIGTERM, wait, and the exit status must be 0 and (SLUICE_SANITIZED=1)
                        no sanitizer report may appear in its stderr or error log
  module_backend_factory / module_sluice_factory: the same, shared by a test module.
"""
import os

import pytest

import helpers
from helpers import Backend, RawBackend, Sluice


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: long load/timing tests; `make sanitize` skips them (`make soak` runs "
        "long mixed load under ASan instead)")


def pytest_report_header(config):
    return "sluice: %s%s" % (helpers.SLUICE_BIN, " (sanitized)" if helpers.SANITIZED else "")


@pytest.fixture(scope="session", autouse=True)
def _need_binaries():
    for path in (helpers.GUNICORN, helpers.CURL):
        if not os.access(path, os.X_OK):
            pytest.exit("integration tests need %s" % path, returncode=2)
    if not os.access(helpers.SLUICE_BIN, os.X_OK):
        pytest.exit("no sluice binary at %s (run make, or set SLUICE_BIN)" % helpers.SLUICE_BIN,
                    returncode=2)


@pytest.fixture
def free_port():
    return helpers.free_port


class _Backends:
    def __init__(self, workdir):
        self.dir = workdir
        self.started = []

    def __call__(self, name, workers=2, worker_class="sync", threads=1, env=None, port=None,
                 keepalive=5, extra_args=()):
        b = Backend(self.dir, name, workers, worker_class, threads, env, port, keepalive,
                    extra_args)
        self.started.append(b)
        return b.start()

    def stop_all(self):
        errors = []
        for b in reversed(self.started):
            try:
                b.stop()
            except Exception as e:  # keep stopping the rest
                errors.append("%s: %s" % (b.name, e))
        return errors


class _RawBackends:
    def __init__(self):
        self.started = []

    def __call__(self, handler, port=None):
        b = RawBackend(handler, port)
        self.started.append(b)
        return b

    def stop_all(self):
        for b in self.started:
            b.stop()


class _Sluices:
    def __init__(self, workdir):
        self.dir = workdir
        self.started = []

    def __call__(self, backends, proxy=None, backend_opts=None, listens=1, start=True,
                 extra=None):
        d = os.path.join(self.dir, "sluice%d" % len(self.started))
        os.makedirs(d, exist_ok=True)
        s = Sluice(d, backends, proxy, backend_opts, listens, extra)
        self.started.append(s)
        return s.start() if start else s

    def stop_all(self):
        problems = []
        for s in self.started:
            if s.proc is None:
                continue
            rc = s.stop()
            if rc != 0:
                problems.append("sluice (%s) exit status %r, expected 0\n%s"
                                % (s.config, rc, s.diagnostics()))
            bugs = s.bug_reports()
            if bugs:
                problems.append("sluice (%s) reported bugs:\n%s" % (s.config, "\n".join(bugs[:20])))
            if helpers.SANITIZED:
                reports = s.sanitizer_reports()
                if reports:
                    problems.append("sanitizer reports from sluice (%s):\n%s\n%s"
                                    % (s.config, "\n".join(reports[:20]), s.diagnostics()))
        return problems


def _finish(sluices, backends, raws):
    # Stop sluice first (it must drain and exit 0 with its backends still up).
    problems = sluices.stop_all()
    raws.stop_all()
    errors = backends.stop_all()
    if errors:
        problems.append("stopping backends: %s" % "; ".join(errors))
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.fixture
def _procs(tmp_path):
    b, r, s = _Backends(str(tmp_path)), _RawBackends(), _Sluices(str(tmp_path))
    yield b, r, s
    _finish(s, b, r)


@pytest.fixture
def backend_factory(_procs):
    return _procs[0]


@pytest.fixture
def raw_backend_factory(_procs):
    return _procs[1]


@pytest.fixture
def sluice_factory(_procs):
    return _procs[2]


@pytest.fixture(scope="module")
def _module_procs(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("mod"))
    b, r, s = _Backends(d), _RawBackends(), _Sluices(d)
    yield b, r, s
    _finish(s, b, r)


@pytest.fixture(scope="module")
def module_backend_factory(_module_procs):
    return _module_procs[0]


@pytest.fixture(scope="module")
def module_raw_backend_factory(_module_procs):
    return _module_procs[1]


@pytest.fixture(scope="module")
def module_sluice_factory(_module_procs):
    return _module_procs[2]


@pytest.fixture
def one_backend(backend_factory, sluice_factory):
    """A gthread gunicorn 'a' behind a fresh sluice: (sluice, backend)."""
    a = backend_factory("a", workers=1, worker_class="gthread", threads=4)
    return sluice_factory([a]), a
