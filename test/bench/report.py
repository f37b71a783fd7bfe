#!/usr/bin/python3
"""Summarise the raw results of test/bench/run.sh.

usage: report.py RUNS_TSV MEM_TSV

RUNS_TSV columns (one line per wrk run, header line first):
  proxy path round rps p50_us p99_us requests non2xx sockerr origin_reqs cpu_us_per_req
MEM_TSV columns:
  proxy conns ok failed non200 rss_before rss_after fds_before fds_after closed per_conn

Prints the median of every metric over the rounds, the ratios sluice/nginx and
sluice/haproxy, and the memory table. Standard library only.
"""
import csv
import statistics
import sys

PROXIES = ["sluice", "nginx", "haproxy"]


def read_tsv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def fmt_us(us):
    if us is None:
        return "-"
    if us >= 1000:
        return f"{us / 1000:.2f}ms"
    return f"{us:.0f}us"


def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def main():
    runs = read_tsv(sys.argv[1])
    mem = read_tsv(sys.argv[2]) if len(sys.argv) > 2 else []
    paths = []
    for r in runs:
        if r["path"] not in paths:
            paths.append(r["path"])
    present = [p for p in PROXIES if any(r["proxy"] == p for r in runs)]

    summary = {}
    print("Throughput, latency and proxy CPU time per request: median over rounds "
          "(errors are totals over rounds)")
    hdr = f"{'path':<7} {'proxy':<8} {'rounds':>6} {'req/s':>10} {'p50':>9} {'p99':>9} " \
          f"{'CPU/req':>8} {'non-2xx':>8} {'sock-err':>8} {'origin/wrk':>10}"
    print(hdr)
    print("-" * len(hdr))
    for path in paths:
        for p in present:
            rs = [r for r in runs if r["proxy"] == p and r["path"] == path]
            ok = [r for r in rs if num(r["rps"]) is not None]
            rps = med([num(r["rps"]) for r in ok])
            p50 = med([num(r["p50_us"]) for r in ok])
            p99 = med([num(r["p99_us"]) for r in ok])
            cpu = med([num(r.get("cpu_us_per_req")) for r in ok])
            non2xx = sum(int(num(r["non2xx"]) or 0) for r in ok)
            sockerr = sum(int(num(r["sockerr"]) or 0) for r in ok)
            wrk_total = sum(num(r["requests"]) or 0 for r in ok)
            origin_total = sum(num(r["origin_reqs"]) or 0 for r in ok
                               if num(r["origin_reqs"]) is not None)
            ratio = f"{origin_total / wrk_total:.4f}" if wrk_total else "-"
            summary[(p, path)] = (rps, p50, p99, cpu)
            rps_s = f"{rps:,.0f}" if rps is not None else "FAILED"
            print(f"{path:<7} {p:<8} {len(ok):>3}/{len(rs):<2} {rps_s:>10} {fmt_us(p50):>9} "
                  f"{fmt_us(p99):>9} {(f'{cpu:.1f}us' if cpu is not None else '-'):>8} "
                  f"{non2xx:>8} {sockerr:>8} {ratio:>10}")
    print()
    if "sluice" in present:
        print("Ratios (sluice / other): req/s >1 = sluice faster; p50, p99, CPU/req <1 = sluice better")
        for other in ("nginx", "haproxy"):
            if other not in present:
                continue
            for path in paths:
                s = summary.get(("sluice", path))
                o = summary.get((other, path))
                if not s or not o or None in s or None in o or 0 in (o[0], o[2]):
                    print(f"  sluice/{other:<8} {path:<7} n/a")
                    continue
                cpu = f"x{s[3] / o[3]:.2f}" if s[3] and o[3] else "n/a"
                print(f"  sluice/{other:<8} {path:<7} req/s x{s[0] / o[0]:.2f}   "
                      f"p50 x{s[1] / o[1]:.2f}   p99 x{s[2] / o[2]:.2f}   CPU/req {cpu}")
        print()

    if mem:
        print("Memory per idle keep-alive client connection (RSS summed over the proxy's processes)")
        hdr = f"{'proxy':<8} {'conns ok':>9} {'failed':>6} {'RSS before':>11} {'RSS after':>11} " \
              f"{'bytes/conn':>10} {'fds before':>10} {'fds after':>9} {'closed':>6}"
        print(hdr)
        print("-" * len(hdr))
        for m in mem:
            def kib(v):
                v = num(v)
                return f"{v / 1024:,.0f}K" if v is not None else "-"
            per = num(m["per_conn"])
            print(f"{m['proxy']:<8} {m['ok']:>9} {m['failed']:>6} {kib(m['rss_before']):>11} "
                  f"{kib(m['rss_after']):>11} {(f'{per:,.0f}' if per is not None else '-'):>10} "
                  f"{m['fds_before']:>10} {m['fds_after']:>9} {m['closed']:>6}")
        byp = {m["proxy"]: num(m["per_conn"]) for m in mem}
        if byp.get("sluice"):
            for other in ("nginx", "haproxy"):
                if byp.get(other):
                    print(f"  sluice/{other}: bytes/conn x{byp['sluice'] / byp[other]:.2f}")
        print()


if __name__ == "__main__":
    main()
