"""Judge a soak run (called by test/soak/soak.sh at the end; can be re-run on an artifacts
directory: python3 test/soak/analyze.py --dir test/artifacts/soak-STAMP ... with the same
arguments, which soak.sh records in events.tsv and run-info.txt).

Hard checks (any FAIL makes the exit status 1):
  alive        sluice never died during the run
  exit         exit status 0 after SIGTERM
  sanitizers   no ASan / LSan / UBSan report in its stderr (ASan mode), or valgrind's
               ERROR SUMMARY 0 with nothing definitely or indirectly lost (valgrind mode)
  totals       the totals line ("stats: connections=...") and "stopped" in the error log
  rss          RSS flat: a least-squares line through the samples taken during the load
               after the warm-up; its rise over that window, relative to its value at the
               start of the window, must not exceed --rss-max-pct
  fds          the fd count after the load fell back to the idle baseline (+ --fd-slack)
  slots        with no traffic left, no backend, tenant or route holds a request in flight
               and the queue is empty (/status.json at the end)
  reloads      every SIGHUP gave a new generation, none failed
  integrity    no complete 200 response with a wrong body (driver), no stuck driver thread
Coverage rows (WARN when zero; FAIL only with --strict 1) show that the run exercised what
it claims: refusals by reason, shedding, 4xx, aborts, TLS, tunnels, Redis fallbacks, scale
decisions, admin polls.

Writes verdict.txt and summary.json into --dir and prints the verdict table."""
import argparse
import json
import os
import re
import sys

SAN_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
               "SUMMARY: AddressSanitizer", "SUMMARY: UndefinedBehaviorSanitizer",
               "SUMMARY: LeakSanitizer", "WARNING: AddressSanitizer", "AddressSanitizer:DEADLYSIGNAL")


def read(path):
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def fit(xs, ys):
    """Least squares y = a + b x; returns (a, b, r2)."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    b = sxy / sxx if sxx else 0.0
    a = my - b * mx
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - (a + b * x)) ** 2 for x, y in zip(xs, ys))
    r2 = 1 - ss_res / ss_tot if ss_tot else 1.0
    return a, b, r2


def parse_kv(line):
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--mode", default="asan")
    ap.add_argument("--load", type=int, required=True)
    ap.add_argument("--warmup", type=int, required=True)
    ap.add_argument("--load-t0", type=int, required=True)
    ap.add_argument("--load-epoch", type=int, default=0,
                    help="Unix time the load started (to place heap.tsv's samples)")
    ap.add_argument("--heap-max-pct", type=float, default=10.0)
    ap.add_argument("--heap-floor-kb", type=int, default=1024,
                    help="live-heap growth below this many kB passes whatever the percentage")
    ap.add_argument("--rss-max-pct", type=float, default=10.0)
    ap.add_argument("--fd-base", default="NA")
    ap.add_argument("--fd-after", default="NA")
    ap.add_argument("--fd-after-s", default="NA")
    ap.add_argument("--fd-slack", type=int, default=0)
    ap.add_argument("--reloads", type=int, default=0)
    ap.add_argument("--died", type=int, default=0)
    ap.add_argument("--stop-rc", default="NA")
    ap.add_argument("--stop-s", default="NA")
    ap.add_argument("--strict", type=int, default=0)
    a = ap.parse_args()
    d = a.dir
    rows = []          # (check, PASS/FAIL/WARN/info, detail)
    summary = {"mode": a.mode, "load_s": a.load, "warmup_s": a.warmup}

    def row(name, ok, detail, soft=False):
        if ok is None:
            res = "info"
        elif ok:
            res = "PASS" if not soft else "ok"
        else:
            res = "FAIL" if not soft or a.strict else "WARN"
        rows.append((name, res, detail))

    # ---------------------------------------------------------------- alive, exit
    row("sluice alive for the whole run", a.died == 0,
        "no crash" if a.died == 0 else "sluice DIED during the run (see sluice/stderr.log)")
    row("exit status after SIGTERM", a.stop_rc == "0",
        "%s (stopped in %ss)" % (a.stop_rc, a.stop_s))
    summary.update(stop_rc=a.stop_rc, stop_s=a.stop_s)

    # ---------------------------------------------------------------- sanitizers / valgrind
    stderr = read(os.path.join(d, "sluice", "stderr.log"))
    if a.mode == "valgrind":
        vg = read(os.path.join(d, "sluice", "valgrind.log"))
        m = re.findall(r"ERROR SUMMARY: ([\d,]+) errors", vg)
        errors = int(m[-1].replace(",", "")) if m else None

        def lost(kind):
            mm = re.findall(kind + r" lost: ([\d,]+) bytes in ([\d,]+) blocks", vg)
            return int(mm[-1][0].replace(",", "")) if mm else 0

        definite, indirect, possible = lost("definitely"), lost("indirectly"), lost("possibly")
        reach = re.findall(r"still reachable: ([\d,]+) bytes", vg)
        freed = "All heap blocks were freed" in vg
        ok = errors == 0 and definite == 0 and indirect == 0
        row("valgrind: memory errors and leaks", ok,
            "ERROR SUMMARY %s; definitely lost %d B, indirectly lost %d B, possibly lost %d B,"
            " still reachable %s B%s" % (errors if errors is not None else "missing", definite,
                                         indirect, possible, reach[-1] if reach else "0",
                                         " (all heap blocks freed)" if freed else ""))
        summary["valgrind"] = {"errors": errors, "definitely_lost": definite,
                               "indirectly_lost": indirect, "possibly_lost": possible}
        if not ok:
            blocks = re.split(r"\n==\d+== \n", vg)
            bad = [b for b in blocks if re.search(r"(definitely|indirectly) lost in loss record|"
                                                  r"Invalid (read|write|free)|uninitialised|"
                                                  r"Mismatched free|overlap", b)]
            with open(os.path.join(d, "valgrind-report.txt"), "w") as f:
                f.write("\n\n".join(bad) + "\n")
        hits = [l for l in stderr.splitlines() if any(mk in l for mk in SAN_MARKERS)]
        if hits:
            row("sanitizer markers in stderr", False, hits[0][:160])
    elif a.mode == "plain":
        row("leak check", None, "none in the release build (the ASan and valgrind runs check)")
    else:
        lines = stderr.splitlines()
        hits = [i for i, l in enumerate(lines) if any(mk in l for mk in SAN_MARKERS)]
        if hits:
            with open(os.path.join(d, "sanitizer-report.txt"), "w") as f:
                f.write("\n".join(lines[max(0, hits[0] - 2):hits[0] + 400]) + "\n")
        kinds = sorted({mk for l in lines for mk in SAN_MARKERS if mk in l})
        leak = re.findall(r"SUMMARY: AddressSanitizer: (\d+) byte\(s\) leaked in (\d+) "
                          r"allocation", stderr)
        row("ASan/LSan/UBSan reports", not hits,
            "none in sluice/stderr.log (LeakSanitizer ran at exit)" if not hits else
            "%d report lines (%s)%s; first: %s; see sanitizer-report.txt"
            % (len(hits), ", ".join(kinds),
               "; leaked %s bytes in %s allocations" % leak[-1] if leak else "",
               lines[hits[0]].strip()[:140]))
        summary["sanitizer_report_lines"] = len(hits)

    # ---------------------------------------------------------------- totals line
    elog = read(os.path.join(d, "sluice", "error.log"))
    tl = [l for l in elog.splitlines() if " stats: connections=" in l]
    totals = parse_kv(tl[-1].split(" stats: ", 1)[1]) if tl else {}
    stopped = any(l.rstrip().endswith("stopped") for l in elog.splitlines()[-20:])
    row("totals line at exit", bool(tl) and stopped,
        ("present, %s requests, %s connections%s" % (totals.get("requests"),
                                                    totals.get("connections"),
                                                    "" if stopped else "; but no 'stopped'"))
        if tl else "MISSING from sluice/error.log")
    summary["totals"] = totals
    tenants = {}
    for l in elog.splitlines():
        m = re.search(r" stats: tenant=(\S+) (.*)", l)
        if m:
            tenants[m.group(1)] = parse_kv(m.group(2))
    summary["tenants_at_exit"] = tenants

    # ---------------------------------------------------------------- RSS
    samples = []
    for l in read(os.path.join(d, "rss.tsv")).splitlines()[1:]:
        f = l.split("\t")
        if len(f) >= 5 and f[2] and f[3]:
            samples.append((int(f[0]), f[1], int(f[2]), int(f[3]), f[4]))
    load = [(t - a.load_t0, r) for t, ph, r, _, _ in samples if ph == "load"]
    win = [(t, r) for t, r in load if t >= a.warmup]

    # live heap (ASan mode, test/soak/heapstat.c): "epoch live_bytes heap_bytes"
    heap = []
    for l in read(os.path.join(d, "heap.tsv")).splitlines():
        f = l.split("\t")
        if len(f) == 3 and a.load_epoch:
            heap.append((int(f[0]) - a.load_epoch, int(f[1]) // 1024, int(f[2]) // 1024))
    hwin = [(t, lv) for t, lv, _ in heap if a.warmup <= t <= a.load]
    heap_ok = None
    if len(hwin) >= 3 and a.died == 0:
        xs, ys = [t for t, _ in hwin], [v for _, v in hwin]
        ia, b, r2 = fit(xs, ys)
        start, end = ia + b * xs[0], ia + b * xs[-1]
        growth = (end - start) / start * 100 if start else 0.0
        # a rise is a trend only if the line explains the samples (R2): the live heap
        # swings by megabytes with the downloads in flight at each sample
        heap_ok = growth <= a.heap_max_pct or end - start <= a.heap_floor_kb or r2 < 0.3
        row("live heap flat after warm-up (ASan allocator)", heap_ok,
            "linear fit over t=%d..%ds (%d samples): %+.1f%% (%.0f -> %.0f kB, %+.1f kB/min, "
            "R2 %.2f); limit %+.0f%% or %d kB, a trend only with R2 >= 0.3; samples min %d "
            "max %d kB" % (xs[0], xs[-1], len(xs), growth, start, end, b * 60, r2,
                           a.heap_max_pct, a.heap_floor_kb, min(ys), max(ys)))
        hmin = {}
        for t, lv, _ in heap:
            if 0 <= t <= a.load:
                hmin.setdefault(t // 60, lv)
        after_heap = [lv for t, lv, _ in heap if t > a.load]
        row("live heap series (MiB, first sample of each minute)", None,
            "%s | after %s" % (" ".join("%dm:%.1f" % (m, v / 1024) for m, v in sorted(hmin.items())),
                               "%.1f" % (after_heap[-1] / 1024) if after_heap else "?"))
        summary["heap"] = {"growth_pct": round(growth, 2), "slope_kb_per_min": round(b * 60, 1),
                           "r2": round(r2, 3), "fit_start_kb": round(start),
                           "fit_end_kb": round(end), "min_kb": min(ys), "max_kb": max(ys)}
        summary["heap_series_kb"] = [(t, lv, hp) for t, lv, hp in heap]
    elif a.mode == "asan":
        row("live heap flat after warm-up (ASan allocator)", None,
            "not measured (heap.tsv missing or too short)")

    if len(win) >= 3 and a.died == 0:
        xs, ys = [t for t, _ in win], [r for _, r in win]
        ia, b, r2 = fit(xs, ys)
        start, end = ia + b * xs[0], ia + b * xs[-1]
        growth = (end - start) / start * 100 if start else 0.0
        ok = growth <= a.rss_max_pct
        note = ""
        if not ok and heap_ok:
            # ASan's allocator maps more as it fragments; with the live heap flat that is
            # not retention
            ok, note = "warn", "; the live heap is flat, so this is ASan's allocator, not retention"
        row("RSS flat after warm-up", ok is True,
            "linear fit over t=%d..%ds (%d samples): %+.1f%% (%.0f -> %.0f kB, %+.1f kB/min, "
            "R2 %.2f); limit %+.0f%%; samples min %d max %d kB%s"
            % (xs[0], xs[-1], len(xs), growth, start, end, b * 60, r2, a.rss_max_pct,
               min(ys), max(ys), note), soft=(ok == "warn"))
        summary["rss"] = {"fit_from_s": xs[0], "fit_to_s": xs[-1], "samples": len(xs),
                          "growth_pct": round(growth, 2), "slope_kb_per_min": round(b * 60, 1),
                          "r2": round(r2, 3), "fit_start_kb": round(start),
                          "fit_end_kb": round(end), "min_kb": min(ys), "max_kb": max(ys)}
    else:
        row("RSS flat after warm-up", False, "too few samples (%d) after the warm-up" % len(win))
    idle = [r for _, ph, r, _, _ in samples if ph == "idle"]
    after = [r for _, ph, r, _, _ in samples if ph == "after"]
    by_min = {}
    for t, r in load:
        by_min.setdefault(t // 60, r)
    series = " ".join("%dm:%d" % (m, r // 1024) for m, r in sorted(by_min.items()))
    row("RSS series (MiB, first sample of each minute)", None,
        "idle %s | %s | after %s" % (idle[0] // 1024 if idle else "?", series,
                                     after[-1] // 1024 if after else "?"))
    summary["rss_series_kb"] = [(t, r) for t, r in load]
    summary["rss_idle_kb"] = idle[0] if idle else None
    summary["rss_after_kb"] = after[-1] if after else None

    # ---------------------------------------------------------------- fds
    if a.fd_after != "NA" and a.fd_base != "NA":
        fb, fa = int(a.fd_base), int(a.fd_after)
        fds_load = [f for _, ph, _, f, _ in samples if ph == "load"]
        row("fds back to baseline after the load", fa <= fb + a.fd_slack,
            "%d after (%ss after the load) vs %d at idle before (slack %d); max during load %s"
            % (fa, a.fd_after_s, fb, a.fd_slack, max(fds_load) if fds_load else "?"))
        summary["fds"] = {"baseline": fb, "after": fa, "after_s": a.fd_after_s,
                          "max_load": max(fds_load) if fds_load else None}
    else:
        row("fds back to baseline after the load", False, "not measured (sluice gone)")

    # ---------------------------------------------------------------- slots after the load
    st_final = {}
    try:
        with open(os.path.join(d, "status-final.json")) as f:
            st_final = json.load(f)
    except (OSError, ValueError):
        pass
    if st_final:
        held = ["backend %s %d/%d" % (b["name"], b["inflight"], b["capacity"])
                for b in st_final.get("backends", []) if b.get("inflight")]
        held += ["tenant %s %d" % (t["name"], t["inflight"])
                 for t in st_final.get("tenants", []) if t.get("inflight")]
        held += ["route %s %d" % (r["name"], r["inflight"])
                 for r in st_final.get("routes", []) if r.get("inflight")]
        q = st_final.get("queue", {}).get("depth", 0)
        if q:
            held.append("queue depth %d" % q)
        row("slots released after the load (in flight 0)", not held,
            "all backends, tenants, routes at 0 in flight, queue empty" if not held else
            "still held with no traffic: " + ", ".join(held))
        summary["held_after_load"] = held
    else:
        row("slots released after the load (in flight 0)", False,
            "status-final.json missing (sluice gone)")

    # ---------------------------------------------------------------- reloads
    done = len(re.findall(r" reloaded generation=", elog))
    failed = len(re.findall(r"reload failed", elog))
    row("config reloads (SIGHUP, alternating A/B)", done == a.reloads and failed == 0,
        "%d sent, %d applied, %d failed" % (a.reloads, done, failed))

    # ---------------------------------------------------------------- driver
    drv = {}
    try:
        with open(os.path.join(d, "driver.json")) as f:
            drv = json.load(f)
    except (OSError, ValueError):
        pass
    if drv:
        row("data integrity (driver)", drv["integrity_errors"] == 0 and drv["stuck_threads"] == 0,
            "%d bodies/echoes wrong, %d driver threads stuck"
            % (drv["integrity_errors"], drv["stuck_threads"]))
        unexpected = drv["unexpected"]
        row("driver: unexpected outcomes", unexpected == 0,
            "%d (examples in driver.json 'samples')" % unexpected, soft=True)
    else:
        row("data integrity (driver)", False, "driver.json missing (driver crashed?)")
    summary["driver"] = drv.get("counts", {})

    # ---------------------------------------------------------------- wrk
    wrk_total = 0
    wrk_detail = []
    for name in ("plain-ka", "tls-ka", "plain-close", "tls-close"):
        out = read(os.path.join(d, "wrk-%s.out" % name))
        m = re.search(r"(\d+) requests in", out)
        n = int(m.group(1)) if m else 0
        wrk_total += n
        rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
        serr = re.search(r"Socket errors: (.*)", out)
        wrk_detail.append("%s %d (%s/s%s)" % (name, n, rps.group(1) if rps else "?",
                                              ", socket errors " + serr.group(1) if serr else ""))
        summary.setdefault("wrk", {})[name] = n
    st = {}
    for name in ("plain-ka", "tls-ka", "plain-close", "tls-close"):
        m = re.search(r"soak-lua status (.*)", read(os.path.join(d, "wrk-%s.out" % name)))
        if m:
            for kv in m.group(1).split():
                k, _, v = kv.partition("=")
                st[k] = st.get(k, 0) + int(v)
    summary["wrk_status"] = st
    row("wrk requests", None, "%d in all: %s" % (wrk_total, "; ".join(wrk_detail)))
    row("wrk responses by status", None, " ".join("%s=%d" % kv for kv in sorted(st.items())))

    # ---------------------------------------------------------------- coverage
    def cov(name, n, detail=""):
        row("exercised: " + name, n > 0, "%d%s" % (n, detail), soft=True)

    t = totals
    cov("429 rate limit", t.get("rejected_rate", 0))
    cov("429 tenant max_queue", t.get("rejected_tenant_queue", 0))
    cov("503 shed (standing queue)", t.get("rejected_shed", 0),
        ", queue-timeout %d, queue-full %d" % (t.get("rejected_queue_timeout", 0),
                                               t.get("rejected_queue_full", 0)))
    cov("400 malformed", t.get("err_400", 0),
        " (408 %d, 413 %d, 414 %d, 431 %d, 501 %d)" % tuple(t.get(k, 0) for k in (
            "err_408", "err_413", "err_414", "err_431", "err_501")))
    cov("408 slow clients", t.get("err_408", 0))
    cov("client aborts", t.get("client_aborts", 0))
    cov("TLS requests (wrk)", summary["wrk"].get("tls-ka", 0) + summary["wrk"].get("tls-close", 0),
        ", handshake errors %d" % t.get("tls_handshake_errors", 0))
    ups = drv.get("counts", {}).get("upgrade", {})
    cov("101 tunnels (WebSocket-style)", sum(v for k, v in ups.items() if k.startswith("ok_")),
        " (%s)" % ", ".join("%s %d" % kv for kv in sorted(ups.items())))
    cov("Redis calls", t.get("redis_calls", 0),
        ", errors %d, timeouts %d, fallbacks %d" % (t.get("redis_errors", 0),
                                                    t.get("redis_timeouts", 0),
                                                    t.get("redis_fallbacks", 0)))
    cov("Redis restart seen (fallbacks + reconnect)",
        t.get("redis_fallbacks", 0) if "connected again" in elog else 0,
        "" if "connected again" in elog else " ('connected again' not logged)")
    cov("502 / retries around the backend restart", t.get("err_502", 0) + t.get("retries", 0),
        " (502 %d, retries %d, truncated %d)" % (t.get("err_502", 0), t.get("retries", 0),
                                                  t.get("upstream_truncated", 0)))
    dec = len(re.findall(r" scale: decision=", elog))
    hook = len(read(os.path.join(d, "scale-hook.log")).splitlines())
    cov("scale decisions (exec hook runs)", dec, " decisions logged, %d hook runs" % hook)
    adm = drv.get("counts", {}).get("admin", {})
    cov("admin /status.json polls", adm.get("get /status.json", 0),
        ", /metrics %d" % adm.get("get /metrics", 0))

    # ---------------------------------------------------------------- error log digest
    levels = {}
    msgs = {}
    for l in elog.splitlines():
        m = re.match(r"\S+ (error|warn) (\S+) (.*)", l)
        if m:
            levels[m.group(1)] = levels.get(m.group(1), 0) + 1
            key = m.group(1) + " " + m.group(2) + " " + re.sub(r"\d+", "N", m.group(3))[:90]
            msgs[key] = msgs.get(key, 0) + 1
    top = sorted(msgs.items(), key=lambda kv: -kv[1])[:8]
    row("error log: warn/error lines", None, "%d warn, %d error" % (levels.get("warn", 0),
                                                                 levels.get("error", 0)))
    summary["error_log_top"] = top

    # ---------------------------------------------------------------- print
    hard_fail = any(r[1] == "FAIL" for r in rows)
    warn = any(r[1] == "WARN" for r in rows)
    info = read(os.path.join(d, "run-info.txt")).strip()
    w1 = max(len(r[0]) for r in rows)
    out = ["soak verdict: %s" % ("FAIL" if hard_fail else ("PASS (with warnings)" if warn
                                                            else "PASS")),
           info, ""]
    out.append("%-*s  %-6s %s" % (w1, "check", "result", "detail"))
    out.append("%s  %s %s" % ("-" * w1, "-" * 6, "-" * 40))
    for name, res, detail in rows:
        out.append("%-*s  %-6s %s" % (w1, name, res, detail))
    if top:
        out.append("")
        out.append("most frequent warn/error lines in sluice/error.log:")
        for k, n in top:
            out.append("  %6d  %s" % (n, k))
    text = "\n".join(out) + "\n"
    with open(os.path.join(d, "verdict.txt"), "w") as f:
        f.write(text)
    summary["verdict"] = "FAIL" if hard_fail else "PASS"
    summary["rows"] = rows
    with open(os.path.join(d, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    sys.stdout.write(text)
    return 1 if hard_fail else 0


if __name__ == "__main__":
    sys.exit(main())
