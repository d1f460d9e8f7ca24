#!/usr/bin/env python3
"""A closed-loop write client for the replication case: what redis-benchmark cannot send.

Each connection loops: send a batch of `--pipeline` writes in one piece, each `SET key:%012d <value>`
or (mode `set+wait`) `SET` followed by `WAIT <n> <ms>`, then wait for all of the batch's replies; each
write is one request. redis-server acknowledges a write to its replicas only through WAIT, so
`set+wait` is how a redis client gets an acknowledged write; shoal under `write-strategy sync`
acknowledges in the SET reply itself (mode `set`). The same client runs against both servers, so client
overhead is alike on both sides. The WAIT goes out with its SET (no round trip in between), which is the
fastest way a redis client can ask for the acknowledgement.

Standard library only. `--procs` worker processes (this file with `--worker`) share `--connections`;
each drives its connections from one epoll loop with pre-encoded requests and blocking sockets that are
only read when readable. All workers measure the same window: connections are opened first, then each
worker starts at a common CLOCK_MONOTONIC instant, warms up for `--warmup-s`, counts the requests that
complete within `--duration-s`, stops sending, and waits at most `--drain-s` for the replies in flight
(a WAIT with timeout 0 never returns if no replica acknowledges: that shows as `stuck`).

Prints one JSON line: rps, requests, p50_ms, p99_ms, errors, first_error, stuck. Exits 1 if any reply was
an error or unexpected, a connection broke, or requests were stuck; the line still says what happened.
"""

import argparse
import array
import base64
import json
import os
import random
import selectors
import socket
import subprocess
import sys
import time

WAIT_REPLY_PREFIX = b":"


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--procs", type=int, default=2, help="worker processes sharing the connections")
    ap.add_argument("--mode", choices=("set", "set+wait"), default="set+wait")
    ap.add_argument("--wait-replicas", type=int, default=1)
    ap.add_argument("--wait-timeout-ms", type=int, default=0)
    ap.add_argument("--keyspace", type=int, default=100_000)
    ap.add_argument("--value-bytes", type=int, default=64)
    ap.add_argument("--duration-s", type=float, default=3.0)
    ap.add_argument("--warmup-s", type=float, default=0.5)
    ap.add_argument("--drain-s", type=float, default=5.0)
    ap.add_argument("--pipeline", type=int, default=1,
                    help="writes per batch: each connection sends this many (SET, or SET + WAIT) at once")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--start-at", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.connections < 1 or args.procs < 1 or args.pipeline < 1:
        ap.error("--connections, --procs and --pipeline must be at least 1")
    args.procs = min(args.procs, args.connections)
    return args


def encode(*parts: bytes) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for p in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(p), p))
    return b"".join(out)


def worker(args: argparse.Namespace) -> dict:
    rng = random.Random(args.seed)
    value = b"x" * args.value_bytes
    wait = encode(b"WAIT", b"%d" % args.wait_replicas, b"%d" % args.wait_timeout_ms)
    with_wait = args.mode == "set+wait"
    depth = args.pipeline
    # Random keys like redis-benchmark's -r: `key:` and a 12-digit number below the key space. One
    # batch is `depth` writes sent in one piece: SET, or SET then WAIT, per write.
    batches = []
    for _ in range(max(1, 4096 // depth)):
        parts = []
        for _ in range(depth):
            parts.append(encode(b"SET", b"key:%012d" % rng.randrange(args.keyspace), value))
            if with_wait:
                parts.append(wait)
        batches.append(b"".join(parts))
    replies_per_batch = depth * (2 if with_wait else 1)
    socks = []
    for _ in range(args.connections):
        s = socket.create_connection((args.host, args.port), timeout=10)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.settimeout(None)  # blocking, no timeout: plain syscalls; only read when epoll says readable
        socks.append(s)
    sel = selectors.EpollSelector()
    for i, s in enumerate(socks):
        sel.register(s, selectors.EVENT_READ, i)
    n = len(socks)
    started = [0.0] * n
    bufs = [b""] * n
    next_batch = [rng.randrange(len(batches)) for _ in range(n)]
    lat = array.array("I")
    count = errors = 0
    first_error = ""
    now = time.monotonic
    delay = (args.start_at or 0) - now()
    if delay > 0:
        time.sleep(delay)
    t0 = now()
    measure_from, end = t0 + args.warmup_s, t0 + args.warmup_s + args.duration_s
    cpu0 = os.times()
    for i, s in enumerate(socks):
        started[i] = now()
        s.sendall(batches[next_batch[i]])
    active = n
    while active:
        t = now()
        if t > end + args.drain_s:
            break
        for key, _ in sel.select(timeout=0.05):
            i = key.data
            s = socks[i]
            data = s.recv(65536)
            if not data:
                errors += 1
                first_error = first_error or "server closed the connection"
                sel.unregister(s)
                active -= 1
                continue
            b = bufs[i] + data if bufs[i] else data
            # Every reply here is one line (+OK, :n or -error): the batch is complete once it holds
            # one line per request sent.
            if not b.endswith(b"\r\n") or b.count(b"\r\n") < replies_per_batch:
                bufs[i] = b
                continue
            bufs[i] = b""
            lines = b.split(b"\r\n")[:-1]
            ok = len(lines) == replies_per_batch
            for j, line in enumerate(lines if ok else ()):
                if with_wait and j % 2 == 1:
                    good = line.startswith(WAIT_REPLY_PREFIX) and int(line[1:]) >= args.wait_replicas
                else:
                    good = line == b"+OK"
                if not good:
                    ok = False
                    b = line
                    break
            t = now()
            if not ok:
                errors += 1
                first_error = first_error or b[:200].decode(errors="replace").strip()
            elif measure_from <= t < end:
                count += depth
                lat.extend([min(int((t - started[i]) * 1e6), 0xFFFFFFFF)] * depth)
            if t < end and ok:
                started[i] = t
                next_batch[i] = (next_batch[i] + 1) % len(batches)
                s.sendall(batches[next_batch[i]])
            else:
                sel.unregister(s)
                active -= 1
    cpu1 = os.times()
    for s in socks:
        s.close()
    return {"requests": count, "errors": errors, "first_error": first_error, "stuck": active,
            "seconds": args.duration_s, "cpu_s": (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system),
            "lat_us": base64.b64encode(lat.tobytes()).decode()}


def percentile(sorted_vals, q: float) -> float:
    if not sorted_vals:
        return 0.0
    return sorted_vals[min(len(sorted_vals) - 1, int(q * len(sorted_vals)))]


def main() -> int:
    args = parse_args()
    if args.worker:
        try:
            print(json.dumps(worker(args)), flush=True)
            return 0
        except OSError as e:
            print(json.dumps({"fatal": f"{type(e).__name__}: {e}"}), flush=True)
            return 1
    # Coordinator: split the connections, start the workers at one instant, merge their results.
    start_at = time.monotonic() + 0.3 + 0.05 * args.connections / 10
    procs = []
    for w in range(args.procs):
        conns = args.connections // args.procs + (1 if w < args.connections % args.procs else 0)
        argv = [sys.executable, os.path.abspath(__file__), "--worker", "--start-at", repr(start_at),
                "--connections", str(conns), "--seed", str(args.seed * 1000 + w)]
        for name in ("host", "port", "mode", "wait_replicas", "wait_timeout_ms", "keyspace", "value_bytes", "pipeline",
                     "duration_s", "warmup_s", "drain_s"):
            argv += ["--" + name.replace("_", "-"), str(getattr(args, name))]
        procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE))
    results, fatal = [], []
    for p in procs:
        out, _ = p.communicate()
        try:
            r = json.loads(out.decode().strip().splitlines()[-1])
        except (ValueError, IndexError):
            r = {"fatal": f"worker exited with code {p.returncode} and no result"}
        (fatal if "fatal" in r else results).append(r)
    lat = array.array("I")
    for r in results:
        lat.frombytes(base64.b64decode(r["lat_us"]))
    vals = sorted(lat)
    requests = sum(r["requests"] for r in results)
    errors = sum(r["errors"] for r in results) + len(fatal)
    first_error = next((r["first_error"] for r in results if r["first_error"]), "") or \
        next((r["fatal"] for r in fatal), "")
    stuck = sum(r["stuck"] for r in results)
    summary = {"mode": args.mode, "pipeline": args.pipeline, "connections": args.connections, "procs": args.procs,
               "rps": requests / args.duration_s, "requests": requests,
               "p50_ms": percentile(vals, 0.50) / 1000, "p99_ms": percentile(vals, 0.99) / 1000,
               "client_cpu_s": sum(r["cpu_s"] for r in results),
               "errors": errors, "first_error": first_error, "stuck": stuck}
    print(json.dumps(summary), flush=True)
    return 1 if errors or stuck or not requests else 0


if __name__ == "__main__":
    sys.exit(main())
