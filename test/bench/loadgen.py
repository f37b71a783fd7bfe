#!/usr/bin/python3
"""Open-loop HTTP/1.1 load generator for test/bench/overload.sh (stdlib only, asyncio).

usage: loadgen.py --port PORT [--host 127.0.0.1] --duration SECONDS
                  --stream NAME:RATE:PATH[:HEADER=VALUE[,HEADER=VALUE...]] [--stream ...]
                  [--arrivals poisson|constant|onoff] [--seed N] [--timeout 10] [--good-ms 1000]
                  [--out FILE] [--raw FILE]

Open loop: each stream's requests are sent at their scheduled times whatever happened to
the earlier ones (Poisson arrivals at RATE req/s by default; `constant` spaces them 1/RATE
apart). The schedule of each stream is drawn from --seed and the stream's name, so every
run with the same arguments sends the same requests at the same offsets: the proxies of
the benchmark all see the same arrival sequence. Nothing waits for a free connection:
each stream keeps a pool of keep-alive connections and opens a new one when none is
idle. A request is `GET PATH HTTP/1.1` with `Host`, the stream's headers and
`X-Bench-Seq: NAME-N`.

Every request has a hard limit of --timeout seconds, from its scheduled time to the end
of the response body (connect included); past it the request counts as a timeout and its
connection is closed. A connection refused, reset or closed before the whole response is
an error (by kind). A request on a reused keep-alive connection that fails before any
response byte arrives (the server had closed it while idle) is sent once more on a new
connection; `stale_retries` counts those.

Latency is measured from the scheduled time, so a generator that fell behind would show
up in it rather than hide it (no coordinated omission); the lag between the scheduled and
the actual send time is reported separately (`lag_ms`), with the achieved send rate, so a
run where the generator itself was the bottleneck is visible.

Output (stdout, or --out): one JSON object, {"generator": {...}, "streams": {NAME: {...}}}.
Per stream: target and achieved send rate, requests sent, counts by status and status
class, 2xx answered within --good-ms ("good") and goodput per second (good answers
completed within the --duration window, divided by it), p50/p95/p99/max of
2xx latency, the 429 and 503 counts with how many carried Retry-After (and the reject
reasons in X-Sluice-Reject, when present), timeouts and errors, and a per-second timeline
of good answers (by the second they completed in). --raw FILE writes one TSV line per request.
"""
import argparse
import asyncio
import json
import math
import random
import re
import resource
import sys
import time


def parse_stream(spec):
    parts = spec.split(":", 3)
    if len(parts) < 3:
        raise argparse.ArgumentTypeError(f"stream {spec!r}: want NAME:RATE:PATH[:HEADER=VALUE,...]")
    name, rate, path = parts[0], parts[1], parts[2]
    try:
        rate = float(rate)
    except ValueError:
        raise argparse.ArgumentTypeError(f"stream {spec!r}: rate {rate!r} is not a number")
    if not name or rate <= 0 or not path.startswith("/"):
        raise argparse.ArgumentTypeError(f"stream {spec!r}: need a name, a rate > 0, a path /...")
    headers = []
    if len(parts) == 4 and parts[3]:
        for h in parts[3].split(","):
            k, sep, v = h.partition("=")
            if not sep or not k:
                raise argparse.ArgumentTypeError(f"stream {spec!r}: header {h!r} is not NAME=VALUE")
            headers.append((k.strip(), v.strip()))
    return {"name": name, "rate": rate, "path": path, "headers": headers}


def pct(sorted_vals, p):
    """Nearest-rank percentile of an ascending list (None when empty)."""
    if not sorted_vals:
        return None
    k = max(0, min(len(sorted_vals) - 1, math.ceil(p / 100.0 * len(sorted_vals)) - 1))
    return sorted_vals[k]


def r1(v):
    return None if v is None else round(v, 1)


class Conn:
    __slots__ = ("reader", "writer")

    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer

    def close(self):
        try:
            self.writer.close()
        except Exception:  # noqa: BLE001 - closing a broken transport
            pass


class BadResponse(Exception):
    pass


class Stream:
    def __init__(self, spec, args, t0, loop):
        self.name, self.rate, self.path = spec["name"], spec["rate"], spec["path"]
        self.headers = spec["headers"]
        self.args, self.t0, self.loop = args, t0, loop
        self.idle = []
        self.open = 0
        self.peak_open = 0
        self.opened = 0
        self.reused = 0
        self.stale_retries = 0
        self.results = []  # (seq, sched_off, lag, latency, status, retry_after, reject, err)
        rng = random.Random(f"{args.seed}/{self.name}")
        self.schedule = []
        t = 0.0
        if args.arrivals == "constant":
            n = int(args.duration * self.rate)
            self.schedule = [i / self.rate for i in range(n)]
        else:
            # onoff: 5 s at 1.6 x RATE, 5 s at 0.4 x (mean RATE): Poisson at the peak rate,
            # thinned to a quarter in the quiet seconds
            peak = self.rate * (1.6 if args.arrivals == "onoff" else 1.0)
            while True:
                t += rng.expovariate(peak)
                if t >= args.duration:
                    break
                if args.arrivals == "onoff" and int(t / 5) % 2 and rng.random() >= 0.25:
                    continue
                self.schedule.append(t)
        head = [f"Host: {args.host}:{args.port}"] + [f"{k}: {v}" for k, v in self.headers]
        self.head = "\r\n".join(head)

    def request_bytes(self, seq):
        head = self.head
        if "{seq%" in head:  # a header value "flood-{seq%100}": one of 100 keys in turn
            head = re.sub(r"\{seq%(\d+)\}", lambda m: str(seq % int(m.group(1))), head)
        return (f"GET {self.path} HTTP/1.1\r\n{head}\r\n"
                f"X-Bench-Seq: {self.name}-{seq}\r\n\r\n").encode()

    async def connect(self):
        reader, writer = await asyncio.open_connection(self.args.host, self.args.port)
        self.opened += 1
        self.open += 1
        self.peak_open = max(self.peak_open, self.open)
        return Conn(reader, writer)

    def drop(self, conn):
        conn.close()
        self.open -= 1

    async def exchange(self, conn, data):
        """Send one request, read one response. Returns (status, headers, keep_alive);
        raises BadResponse(got_bytes) on a short or malformed response."""
        conn.writer.write(data)
        await conn.writer.drain()
        try:
            head = await conn.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as e:
            raise BadResponse(len(e.partial) > 0) from None
        except asyncio.LimitOverrunError:
            raise BadResponse(True) from None
        lines = head.decode("latin-1").split("\r\n")
        status_line = lines[0].split(" ", 2)
        if len(status_line) < 2 or not status_line[0].startswith("HTTP/1."):
            raise BadResponse(True)
        version, status = status_line[0], int(status_line[1])
        hdrs = {}
        for line in lines[1:]:
            if not line:
                continue
            k, _, v = line.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        conn_tokens = hdrs.get("connection", "").lower()
        keep = ("close" not in conn_tokens) and (version == "HTTP/1.1" or "keep-alive" in conn_tokens)
        try:
            if status < 200 or status in (204, 304):
                pass
            elif "chunked" in hdrs.get("transfer-encoding", "").lower():
                while True:
                    size_line = await conn.reader.readuntil(b"\r\n")
                    size = int(size_line.split(b";")[0].strip(), 16)
                    if size == 0:
                        while (await conn.reader.readuntil(b"\r\n")) != b"\r\n":
                            pass
                        break
                    await conn.reader.readexactly(size + 2)
            elif "content-length" in hdrs:
                await conn.reader.readexactly(int(hdrs["content-length"]))
            else:
                await conn.reader.read()  # to EOF
                keep = False
        except (asyncio.IncompleteReadError, ValueError):
            raise BadResponse(True) from None
        return status, hdrs, keep

    async def one(self, seq, data):
        conn = self.idle.pop() if self.idle else None
        fresh = conn is None
        if fresh:
            conn = await self.connect()
        else:
            self.reused += 1
        try:
            try:
                status, hdrs, keep = await self.exchange(conn, data)
            except (BadResponse, ConnectionError) as e:
                got = isinstance(e, BadResponse) and e.args[0]
                if fresh or got:
                    raise
                # the server closed this idle keep-alive connection: once more on a new one
                self.stale_retries += 1
                self.drop(conn)
                conn = await self.connect()
                status, hdrs, keep = await self.exchange(conn, data)
        except BaseException:
            self.drop(conn)  # also on cancellation by the timeout
            raise
        if keep and not conn.reader.at_eof():
            self.idle.append(conn)
        else:
            self.drop(conn)
        return status, hdrs

    async def fire(self, seq, sched_off):
        start = self.loop.time()
        lag = start - (self.t0 + sched_off)
        status = ra = reject = err = None
        try:
            deadline = self.args.timeout - max(lag, 0.0)
            status, hdrs = await asyncio.wait_for(self.one(seq, self.request_bytes(seq)), deadline)
            ra = "retry-after" in hdrs
            reject = hdrs.get("x-sluice-reject")
        except asyncio.TimeoutError:
            err = "timeout"
        except ConnectionRefusedError:
            err = "refused"
        except ConnectionResetError:
            err = "reset"
        except BadResponse as e:
            err = "closed-mid-response" if e.args[0] else "closed-before-response"
        except (ConnectionError, OSError) as e:
            err = type(e).__name__
        end = self.loop.time()
        self.results.append((seq, sched_off, lag, end - (self.t0 + sched_off), status, ra, reject, err))

    async def run(self, tasks):
        for seq, off in enumerate(self.schedule):
            delay = self.t0 + off - self.loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.add(asyncio.ensure_future(self.fire(seq, off)))

    def close_idle(self):
        for c in self.idle:
            self.drop(c)
        self.idle.clear()

    def summary(self):
        a = self.args
        res = self.results
        good_s = a.good_ms / 1000.0
        by_status, by_class, errors = {}, {}, {}
        lat_2xx, lat_good, refusals = [], [], {}
        timeline = [0] * int(math.ceil(a.duration))
        reject_reasons = {}
        good_in_window = 0
        for _seq, off, _lag, lat, status, ra, reject, err in res:
            if err is not None:
                errors[err] = errors.get(err, 0) + 1
                by_class["timeout" if err == "timeout" else "error"] = \
                    by_class.get("timeout" if err == "timeout" else "error", 0) + 1
                continue
            by_status[str(status)] = by_status.get(str(status), 0) + 1
            cls = f"{status // 100}xx"
            by_class[cls] = by_class.get(cls, 0) + 1
            if reject:
                reject_reasons[f"{status} {reject}"] = reject_reasons.get(f"{status} {reject}", 0) + 1
            if 200 <= status < 300:
                lat_2xx.append(lat)
                if lat <= good_s:
                    lat_good.append(lat)
                    done = off + lat  # completion, seconds after the first arrival slot
                    if done < a.duration:
                        good_in_window += 1
                        timeline[int(done)] += 1
            elif status in (429, 503) or status >= 500:
                r = refusals.setdefault(str(status), {"n": 0, "retry_after": 0, "lat": []})
                r["n"] += 1
                r["retry_after"] += 1 if ra else 0
                r["lat"].append(lat)
        lat_2xx.sort()
        lat_good.sort()
        ms = lambda v: None if v is None else round(v * 1000.0, 1)  # noqa: E731
        for r in refusals.values():
            r["lat"].sort()
            r["latency_p50_ms"] = ms(pct(r["lat"], 50))
            r["latency_p99_ms"] = ms(pct(r["lat"], 99))
            r["latency_max_ms"] = ms(r["lat"][-1])
            del r["lat"]
        lags = sorted(x[2] for x in res)
        sent = len(res)
        sends = sorted(x[1] + x[2] for x in res)  # actual send offsets
        span = (sends[-1] - sends[0]) if sent > 1 else 0.0
        n2 = len(lat_2xx)
        return {
            "name": self.name, "path": self.path, "headers": dict(self.headers),
            "target_rate": self.rate, "duration_s": a.duration, "arrivals": a.arrivals,
            "scheduled": len(self.schedule), "sent": sent,
            "scheduled_rate": round(len(self.schedule) / a.duration, 2),
            # achieved: requests sent / seconds between the first and last send, scaled to
            # the n-1 gaps between n sends (what a perfect generator of this schedule gets)
            "achieved_rate": round((sent - 1) / span, 2) if span > 0 else None,
            "schedule_span_s": round(self.schedule[-1] - self.schedule[0], 3) if len(self.schedule) > 1 else 0,
            "lag_ms": {"p50": ms(pct(lags, 50)), "p99": ms(pct(lags, 99)), "max": ms(lags[-1] if lags else None)},
            "status": dict(sorted(by_status.items())), "class": dict(sorted(by_class.items())),
            "ok_2xx": n2, "good_2xx": len(lat_good), "late_2xx": n2 - len(lat_good),
            "success_pct": round(100.0 * n2 / sent, 3) if sent else None,
            # goodput: 2xx answered within good_ms whose answer came within the run's
            # `duration` seconds, per second (what is still queued at the end does not count)
            "good_in_window": good_in_window,
            "goodput_rps": round(good_in_window / a.duration, 2),
            "latency_2xx_ms": {"p50": ms(pct(lat_2xx, 50)), "p95": ms(pct(lat_2xx, 95)),
                               "p99": ms(pct(lat_2xx, 99)), "max": ms(lat_2xx[-1] if lat_2xx else None),
                               "mean": ms(sum(lat_2xx) / n2) if n2 else None},
            "latency_good_ms": {"p50": ms(pct(lat_good, 50)), "p99": ms(pct(lat_good, 99))},
            "refusals": refusals, "reject_reasons": reject_reasons,
            "timeouts": errors.get("timeout", 0),
            "errors": {k: v for k, v in errors.items() if k != "timeout"},
            "connections": {"opened": self.opened, "peak_open": self.peak_open,
                            "reused_requests": self.reused, "stale_retries": self.stale_retries},
            "timeline_good_per_s": timeline,
        }


async def amain(args):
    loop = asyncio.get_running_loop()
    t0 = loop.time() + 0.2
    streams = [Stream(s, args, t0, loop) for s in args.stream]
    wall0, ru0 = time.monotonic(), resource.getrusage(resource.RUSAGE_SELF)
    tasks = set()
    await asyncio.gather(*(s.run(tasks) for s in streams))
    if tasks:
        await asyncio.wait(tasks)  # each ends by its own timeout at the latest
    for s in streams:
        s.close_idle()
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    wall = time.monotonic() - wall0
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    out = {
        "generator": {
            "target": f"{args.host}:{args.port}", "duration_s": args.duration,
            "arrivals": args.arrivals, "seed": args.seed, "timeout_s": args.timeout,
            "good_ms": args.good_ms, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "cpu_pct_of_one_core": round(100.0 * cpu / wall, 1) if wall else None,
        },
        "streams": {s.name: s.summary() for s in streams},
    }
    if args.raw:
        with open(args.raw, "w") as f:
            f.write("stream\tseq\tsched_s\tlag_ms\tlatency_ms\tstatus\tretry_after\treject\terror\n")
            for s in streams:
                for seq, off, lag, lat, status, ra, reject, err in sorted(s.results):
                    f.write(f"{s.name}\t{seq}\t{off:.4f}\t{lag * 1000:.2f}\t{lat * 1000:.1f}\t"
                            f"{status if status is not None else '-'}\t"
                            f"{'-' if ra is None else int(ra)}\t{reject or '-'}\t{err or '-'}\n")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--duration", type=float, required=True, help="seconds of arrivals")
    ap.add_argument("--stream", type=parse_stream, action="append", required=True,
                    help="NAME:RATE:PATH[:HEADER=VALUE,...] (repeatable); {seq%%N} in a "
                         "VALUE is the request's number modulo N")
    ap.add_argument("--arrivals", choices=("poisson", "constant", "onoff"), default="poisson")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=10.0, help="hard limit per request, s")
    ap.add_argument("--good-ms", type=float, default=1000.0,
                    help="a 2xx within this many ms counts towards goodput")
    ap.add_argument("--out", help="write the JSON here instead of stdout")
    ap.add_argument("--raw", help="one TSV line per request")
    args = ap.parse_args()
    names = [s["name"] for s in args.stream]
    if len(set(names)) != len(names):
        ap.error("stream names must differ")
    out = asyncio.run(amain(args))
    text = json.dumps(out, indent=1)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
