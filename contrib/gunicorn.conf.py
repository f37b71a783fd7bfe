"""Gunicorn configuration for Apache Superset behind sluice.

    gunicorn -c /etc/superset/gunicorn.conf.py

One Gunicorn server per machine (or pod), listening on loopback; sluice in front of it is the
only client. Every setting below says which sluice key it pairs with (sluice's keys are in
etc/sluice.ini, docs/configuration.md and docs/scaling.md). The matching sluice backend:

    [backend superset]
    address = 127.0.0.1:8088        ; = bind
    workers = 8                     ; = the worker count this file prints at start
                                    ;   (sync workers x threads; a number, not auto, so the
                                    ;   Gunicorn actuator's count becomes the capacity)
    read_timeout = 125s             ; a little above timeout (see timeout below)
    max_fails = 3                   ; one killed slow request must not take the server out
    fail_timeout = 30s
    idle_timeout = 1s               ; below keepalive (see keepalive below)
    health_check = /health

    [scale]                         ; optional: sluice resizes this Gunicorn itself
    gunicorn_pidfile = /run/superset/gunicorn.pid   ; = pidfile
    gunicorn_backend = superset
    min_workers = 2
    max_workers = 32                ; what the machine's memory and the database allow

Worker count (see docs/scaling.md for the arithmetic and a worked example):
  GUNICORN_WORKERS=N         use N as it is;
  else SIZING_RATE (peak requests per second this server serves: a rate, not a count of
       users) and SIZING_P95 (p95 response time at the backend, seconds; sluice shows both:
       `lambda` and `wq_s` in /scale.json) give ceil(SIZING_RATE x SIZING_P95 x
       SIZING_MARGIN), SIZING_MARGIN defaulting to sluice's margin, 1.3;
  else 2 x CPUs + 1 (Gunicorn's generic starting point; replace it with measured numbers).
  Then cut to the database budget, floor(DB_MAX_CONNECTIONS x DB_SHARE / POOL_SIZE / SERVERS)
  (sluice's db_max_connections, db_share [0.65] and pool_size; SERVERS = how many Gunicorn
  servers share that database), and to memory, MemAvailable / WORKER_MB (a sync Superset
  worker is a 100-300 MB Python process; WORKER_MB defaults to 300). Both cuts are logged.
"""

import math
import multiprocessing
import os

# ---------------------------------------------------------------- where and what

# Loopback only: sluice is the front door (it terminates TLS, parses strictly, limits and
# queues); nothing else should reach Gunicorn. = sluice [backend superset] address.
bind = "127.0.0.1:8088"

# Superset's application factory.
wsgi_app = "superset.app:create_app()"

proc_name = "superset"

# ---------------------------------------------------------------- workers

# sync: one request per worker process at a time. That is what sluice is built around:
# `[backend] workers = N` is then exactly how many requests Gunicorn can work on, sluice never
# sends more, and everything above N waits in sluice's fair queue (per-tenant weights,
# [queue] timeout, shedding, 429/503 with Retry-After) instead of in Gunicorn's listen
# backlog, where nobody can see or order it. Slow clients and idle keep-alive connections are
# held by sluice's event loop, not by a worker, which is why the async worker types (gevent,
# eventlet) and their monkey-patching buy nothing here. gthread (threads > 1) also works: then
# [backend] workers = workers x threads, and threads of one process share its SQLAlchemy pool
# (see pool_size in docs/scaling.md).
worker_class = "sync"
threads = 1


def _env_float(name, default=None):
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    try:
        return float(value)
    except ValueError as err:
        raise SystemExit(f"gunicorn.conf.py: {name}={value!r} is not a number") from err


def _mem_available_mb():
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return None


def _size_workers():
    """The worker count and the lines that explain it (logged by on_starting)."""
    notes = []
    fixed = _env_float("GUNICORN_WORKERS")
    if fixed is not None:
        return max(1, int(fixed)), [f"workers = {int(fixed)} (GUNICORN_WORKERS)"]
    rate = _env_float("SIZING_RATE")
    p95 = _env_float("SIZING_P95")
    margin = _env_float("SIZING_MARGIN", 1.3)
    if rate and p95:
        # Little's law: busy workers = arrival rate x time in service. p95, not the mean,
        # and a margin, as sluice's [scale] margin. Same rounding as sluice: a product within
        # 1e-9 of a whole number counts as that number.
        product = rate * p95 * margin
        n = math.ceil(product - 1e-9 * max(product, 1.0))
        notes.append(f"sizing rule: ceil({rate:g}/s x {p95:g}s x {margin:g}) = {n}")
    else:
        n = 2 * multiprocessing.cpu_count() + 1
        notes.append(f"no SIZING_RATE/SIZING_P95: 2 x {multiprocessing.cpu_count()} CPUs + 1 = {n}")
    n = max(1, n)

    max_conn = _env_float("DB_MAX_CONNECTIONS")
    pool = _env_float("POOL_SIZE")
    share = _env_float("DB_SHARE", 0.65)
    servers = _env_float("SERVERS", 1.0)
    if max_conn and pool:
        cap = max(1, math.floor(max_conn * share / pool / servers + 1e-9))
        if n > cap:
            notes.append(f"database budget: floor({max_conn:g} x {share:g} / {pool:g} / "
                         f"{servers:g} servers) = {cap}: {n} cut to {cap}")
            n = cap
    mem = _mem_available_mb()
    worker_mb = _env_float("WORKER_MB", 300.0)
    if mem and worker_mb:
        fit = max(1, int(mem // worker_mb))
        if n > fit:
            notes.append(f"memory: {mem} MB available / {worker_mb:g} MB per worker = {fit}: "
                         f"{n} cut to {fit}")
            n = fit
    notes.append(f"workers = {n}: set sluice's [backend] workers = {n * threads}")
    return n, notes


workers, _sizing_notes = _size_workers()

# ---------------------------------------------------------------- time limits

# A worker silent this long is killed and replaced by the master. Superset's slow chart and
# SQL Lab queries need minutes, as in the NGINX set-up this replaces (proxy_read_timeout 120s).
# sluice's [backend] read_timeout should be a little above it (125s): then Gunicorn, not
# sluice, ends a runaway request, and sluice keeps the worker's slot counted as busy until the
# worker is really free, so it never sends a second request to a worker that is still busy.
# (With read_timeout below it, sluice answers 504 and frees the slot while the worker is still
# running the old request.) Either way the request counts as a backend failure in sluice:
# use max_fails = 3 so one runaway query does not take the whole server out.
timeout = 120

# A worker told to stop (SIGTERM at shutdown, SIGTTOU from sluice's actuator, max_requests)
# finishes its current request within this, then is killed. Long enough for most dashboard
# requests, shorter than timeout so scale-downs and restarts do not hang for minutes. While a
# stopping worker finishes, it still counts as a worker of the master; sluice's actuator waits
# 5 s between rounds of signals (docs/scaling.md, "Gunicorn actuator").
graceful_timeout = 30

# Idle keep-alive to the client (sluice). sync workers close the connection after each
# response whatever this says; it matters with gthread. sluice closes its idle pooled upstream
# connections after [backend] idle_timeout (1s by default): keep that below this, so that
# sluice, not Gunicorn, closes an idle connection, and sluice never reuses one that Gunicorn
# is closing at the same moment.
keepalive = 5

# ---------------------------------------------------------------- recycling

# Restart a worker after this many requests (Superset workers grow over time), each after a
# random 0..jitter extra so that the workers do not all restart together: a restart takes the
# worker away for the seconds the app needs to import, and sluice's capacity follows the
# workers the master has (with the actuator) or waits for the slot (without it).
max_requests = 10000
max_requests_jitter = 1000

# No preload: each worker builds its own app and its own SQLAlchemy engines after the fork
# (connections must never be shared across a fork), and SIGHUP reloads the code.
preload_app = False

# Heartbeat files in memory: a worker whose heartbeat file sits on a slow or full disk (a
# container's overlay filesystem) can be taken for hung and killed.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None

# ---------------------------------------------------------------- the listen socket

# Small on purpose. sluice never has more requests in flight than [backend] workers, so
# nothing waits here in normal operation; the NGINX set-ups this replaces used 2048-8192
# because NGINX has no such limit and the backlog was the queue. A long backlog would only
# hide requests from sluice's queue, its fairness and its timeouts.
backlog = 64

# ---------------------------------------------------------------- the actuator

# sluice's [scale] gunicorn_pidfile: sluice reads the master's pid here, counts its worker
# processes (its children, in /proc) as the capacity of [scale] gunicorn_backend, and sends
# SIGTTIN / SIGTTOU to add or remove one worker at a time. sluice must run on the same
# machine (same pid namespace: in Kubernetes, the same pod with shareProcessNamespace: true)
# and may signal the master (the same user, or root). Note that SIGHUP (a config reload)
# sets the count back to `workers` above; sluice sees the new count and carries on from it.
pidfile = "/run/superset/gunicorn.pid"

# ---------------------------------------------------------------- headers from sluice

# On every request sluice replaces X-Forwarded-Proto and X-Forwarded-Host with its own and
# appends the address it saw to X-Forwarded-For (a client's own X-Forwarded-For values are
# kept in front of it: only the last entry is sluice's and trustworthy). Trust these headers
# only from sluice, i.e. from loopback. Gunicorn uses X-Forwarded-Proto for wsgi.url_scheme
# (https links and redirects); Superset reads X-Forwarded-* when superset_config.py has
# ENABLE_PROXY_FIX = True (its default PROXY_FIX_CONFIG, x_for = 1, takes the last entry).
forwarded_allow_ips = "127.0.0.1,::1"
secure_scheme_headers = {"X-FORWARDED-PROTO": "https"}

# sluice already refuses oversized request heads (431/414) before they reach Gunicorn; make
# Gunicorn's own limits at least as large so that sluice, which logs why, is the one refusing.
# sluice's defaults: max_line_size 8k, max_headers 100, max_header_size 16k (the whole head).
limit_request_line = 8190   # Gunicorn's largest; long Superset URLs carry form_data
limit_request_fields = 100
limit_request_field_size = 8190

# ---------------------------------------------------------------- logs

# To stdout/stderr (journald or the container runtime collect them).
accesslog = "-"
errorlog = "-"
loglevel = "info"

# X-Forwarded-For as received (its last entry is the client address sluice saw), the
# request, status, bytes, time in microseconds, and sluice's X-Request-ID, which is also in
# sluice's access log: join the two on it to split a slow request into time queued in sluice
# and time in Superset. %(p)s is the worker's pid.
access_log_format = (
    '%({x-forwarded-for}i)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" '
    "%(D)sus rid=%({x-request-id}i)s pid=%(p)s"
)


def on_starting(server):
    """Log how the worker count was reached, once, in the master."""
    for line in _sizing_notes:
        server.log.info("sizing: %s", line)
