#!/usr/bin/env python3
"""S3-shaped HTTP/1.1 proxy for the benchmark: latency, tails, per-connection and link caps.

`scripts/bench --profile s3-shaped` starts this in front of `rclone serve s3`, both on
127.0.0.1. Every client connection gets its own upstream connection, and every HTTP request on
it (keep-alive connections carry many) is shaped on its own:

- first-byte delay: the response's first byte leaves the proxy no earlier than D after the
  request arrived, D drawn uniformly from [--latency-min-ms, --latency-max-ms] (default 15-60 ms,
  S3's usual GET first-byte latency); with probability --tail-fraction (default 0.03) the request
  is a tail request and D is multiplied by --tail-factor (default 10: 150-600 ms);
- per-connection cap: each connection's response bytes are paced to --conn-mbps (default 8.5 MB/s,
  1/10 of the ~85-90 MB/s one connection to S3 sustains from EC2);
- link cap: all connections together are paced to --link-mbps (default 150 MB/s: 1/10 of a
  12 Gb/s instance's 1,500 MB/s). Not 1/10 of 25 Gb/s (~300 MB/s): on the shared 2-core bench
  machine, rclone serve s3 alone delivered 190-230 MB/s to 64 parallel curls (load average
  13-19 from other work) and the whole chain ~110 MB/s with a 300 MB/s cap, so a 300 MB/s cap
  would measure the CPUs, not the shape. Pass --link-mbps to model other links;
- optional request-rate limit (--max-rps N, default off): a token bucket of N requests/s with a
  burst of N/10 (at least 1); a request that finds it empty is answered at once with
  `503 SlowDown` (S3's answer above ~5,500 GET/s per prefix) and never reaches the server.

MB = 10^6 bytes. The scale factor is 1/10 for bandwidth; latency is not scaled (a request's
first byte costs the same wall time as on S3, so, relative to transfer time, latency weighs
10x less on a 16 MiB part here than on S3, and as much as on S3 for small files, which are
latency-bound either way).

Cheap by construction: bodies are relayed in pieces of up to 256 KiB (one sleep and one write
per piece, no per-byte Python work). Requests are not pipelined by any of the benchmarked
clients, so each connection is a simple request/response loop.

`GET /__shape/stats` on the proxy returns its counters as JSON (requests, slowdowns, bytes,
connections); it is neither delayed nor counted.

Standard library only. Run: python3 scripts/shape.py --listen-port P --upstream-port Q [...]
It prints "listening 127.0.0.1:P" on stdout once ready.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import sys
import time

PIECE = 256 * 1024
STATS_PATH = b"/__shape/stats"


class Shape:
    def __init__(self, a):
        self.lat_min = a.latency_min_ms / 1000
        self.lat_max = a.latency_max_ms / 1000
        self.tail_fraction = a.tail_fraction
        self.tail_factor = a.tail_factor
        self.conn_rate = a.conn_mbps * 1e6 if a.conn_mbps > 0 else None
        self.link_rate = a.link_mbps * 1e6 if a.link_mbps > 0 else None
        self.max_rps = a.max_rps if a.max_rps > 0 else None
        self.burst = max(1.0, (a.max_rps or 0) / 10)
        self.tokens = self.burst
        self.tokens_t = time.monotonic()
        self.link_next = 0.0
        self.rnd = random.Random(a.seed)
        self.upstream = (a.upstream_host, a.upstream_port)
        self.stats = {"connections": 0, "requests": 0, "slowdowns": 0, "tail_requests": 0,
                      "bytes": 0, "first_request_t": None, "last_response_t": None,
                      "max_rps": self.max_rps}

    def delay(self) -> float:
        d = self.rnd.uniform(self.lat_min, self.lat_max)
        if self.rnd.random() < self.tail_fraction:
            self.stats["tail_requests"] += 1
            d *= self.tail_factor
        return d

    def admit(self) -> bool:
        if self.max_rps is None:
            return True
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.tokens_t) * self.max_rps)
        self.tokens_t = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    async def pace(self, conn, n: int) -> None:
        """Wait until n more bytes may leave on this connection and on the link."""
        loop_now = time.monotonic()
        t = max(loop_now, conn["next"])
        if self.link_rate:
            t = max(t, self.link_next)
            self.link_next = t + n / self.link_rate
        if self.conn_rate:
            conn["next"] = t + n / self.conn_rate
        if t > loop_now:
            await asyncio.sleep(t - loop_now)

    # ------------------------------------------------------------------

    async def handle(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        self.stats["connections"] += 1
        ureader = uwriter = None
        conn = {"next": 0.0}
        try:
            while True:
                try:
                    head = await creader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                t_req = time.monotonic()
                line, _, rest = head.partition(b"\r\n")
                parts = line.split(b" ")
                method = parts[0].upper() if parts else b""
                target = parts[1] if len(parts) > 1 else b"/"
                hdrs = _headers(rest)
                body = b""
                n = int(hdrs.get(b"content-length", b"0") or 0)
                if n:
                    body = await creader.readexactly(n)
                close_after = hdrs.get(b"connection", b"").lower() == b"close"
                if target == STATS_PATH:
                    out = json.dumps(self.stats).encode()
                    cwriter.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                  b"Content-Length: %d\r\n\r\n" % len(out) + out)
                    await cwriter.drain()
                    continue
                self.stats["requests"] += 1
                if self.stats["first_request_t"] is None:
                    self.stats["first_request_t"] = time.time()
                if not self.admit():
                    self.stats["slowdowns"] += 1
                    out = (b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>"
                           b"<Message>Please reduce your request rate.</Message></Error>")
                    cwriter.write(b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\n"
                                  b"Content-Length: %d\r\n\r\n" % len(out) + out)
                    await cwriter.drain()
                    if close_after:
                        return
                    continue
                d = self.delay()
                if uwriter is None:
                    ureader, uwriter = await asyncio.open_connection(*self.upstream, limit=4 * PIECE)
                uwriter.write(head + body)
                await uwriter.drain()
                try:
                    rhead = await ureader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                status_line, _, rrest = rhead.partition(b"\r\n")
                sp = status_line.split(b" ")
                status = int(sp[1]) if len(sp) > 1 and sp[1].isdigit() else 0
                rh = _headers(rrest)
                wait = t_req + d - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                cwriter.write(rhead)
                no_body = method == b"HEAD" or status in (204, 304) or 100 <= status < 200
                upstream_done = False
                if no_body:
                    pass
                elif b"content-length" in rh:
                    left = int(rh[b"content-length"])
                    while left > 0:
                        chunk = await ureader.read(min(left, PIECE))
                        if not chunk:
                            return
                        left -= len(chunk)
                        await self.pace(conn, len(chunk))
                        cwriter.write(chunk)
                        self.stats["bytes"] += len(chunk)
                        await cwriter.drain()
                elif b"chunked" in rh.get(b"transfer-encoding", b"").lower():
                    while True:
                        size_line = await ureader.readuntil(b"\r\n")
                        size = int(size_line.split(b";")[0].strip() or b"0", 16)
                        data = await ureader.readexactly(size + 2) if size else b""
                        if size == 0:  # trailers end with an empty line
                            trailer = b""
                            while True:
                                tl = await ureader.readuntil(b"\r\n")
                                trailer += tl
                                if tl == b"\r\n":
                                    break
                            cwriter.write(size_line + trailer)
                            break
                        await self.pace(conn, size)
                        cwriter.write(size_line + data)
                        self.stats["bytes"] += size
                        await cwriter.drain()
                else:  # body until the server closes
                    while True:
                        chunk = await ureader.read(PIECE)
                        if not chunk:
                            break
                        await self.pace(conn, len(chunk))
                        cwriter.write(chunk)
                        self.stats["bytes"] += len(chunk)
                        await cwriter.drain()
                    upstream_done = True
                await cwriter.drain()
                self.stats["last_response_t"] = time.time()
                if upstream_done or close_after or rh.get(b"connection", b"").lower() == b"close":
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            return
        finally:
            for w in (cwriter, uwriter):
                if w is not None:
                    try:
                        w.close()
                    except Exception:
                        pass


def _headers(block: bytes) -> dict:
    h = {}
    for ln in block.split(b"\r\n"):
        k, sep, v = ln.partition(b":")
        if sep:
            h[k.strip().lower()] = v.strip()
    return h


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="shape.py", description=__doc__.split("\n")[0])
    ap.add_argument("--listen-port", type=int, required=True)
    ap.add_argument("--upstream-host", default="127.0.0.1")
    ap.add_argument("--upstream-port", type=int, required=True)
    ap.add_argument("--latency-min-ms", type=float, default=15.0)
    ap.add_argument("--latency-max-ms", type=float, default=60.0)
    ap.add_argument("--tail-fraction", type=float, default=0.03)
    ap.add_argument("--tail-factor", type=float, default=10.0)
    ap.add_argument("--conn-mbps", type=float, default=8.5, help="per-connection cap, MB/s (0: none)")
    ap.add_argument("--link-mbps", type=float, default=150.0, help="link-wide cap, MB/s (0: none)")
    ap.add_argument("--max-rps", type=float, default=0.0, help="requests/s before 503 SlowDown (0: none)")
    ap.add_argument("--seed", type=int, default=20261130)
    return ap.parse_args(argv)


async def amain(a) -> None:
    shape = Shape(a)
    server = await asyncio.start_server(shape.handle, "127.0.0.1", a.listen_port, limit=4 * PIECE,
                                        backlog=1024)
    print(f"listening 127.0.0.1:{a.listen_port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main(argv=None) -> int:
    a = parse_args(sys.argv[1:] if argv is None else argv)
    if a.upstream_host not in ("127.0.0.1", "localhost"):
        print("shape.py: the upstream must be on 127.0.0.1", file=sys.stderr)
        return 2
    asyncio.run(amain(a))
    return 0


if __name__ == "__main__":
    sys.exit(main())
