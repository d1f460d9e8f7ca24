"""Case 1: throughput and latency with redis-benchmark, one command per run.

One run per (command, pipeline, client threads) so the server CPU sampled around it belongs to that
command alone. The request count is sized once per variant from a short probe against redis-server
so a run lasts about `rb_seconds`; both servers then get the same count, which keeps CPU per request
comparable.
"""

import csv

from .context import RUN_ERRORS, Ctx, attempt, log, order
from .report import Group, Metric, Row
from .servers import Server, ServerError, ToolError, run_tool

# redis-benchmark -t names and the test names its CSV output uses.
TESTS = {"set": "SET", "get": "GET", "incr": "INCR", "mset": "MSET (10 keys)", "lpush": "LPUSH",
         "hset": "HSET", "zadd": "ZADD"}
VALUE_BYTES = 64

METRICS = [
    Metric("rps", "req/s", "higher", "{:,.0f}"),
    Metric("p50", "p50 ms", "lower", "{:.3f}"),
    Metric("p99", "p99 ms", "lower", "{:.3f}"),
    Metric("cpu_us", "server CPU µs/req", "lower", "{:.2f}"),
]


def variants(tests: list[str]) -> list[tuple[str, int, int]]:
    """(test, pipeline, client threads): every test at pipeline 1 and 16, then GET and SET with a
    2-thread client at pipeline 16, which shows whether one benchmark thread was the limit."""
    out = [(t, p, 1) for p in (1, 16) for t in tests]
    out += [(t, 16, 2) for t in ("set", "get") if t in tests]
    return out


def run(ctx: Ctx) -> list[Group]:
    p = ctx.params
    group = Group("throughput", "Throughput and latency (redis-benchmark)",
                  f"{p.rb_clients} clients, {VALUE_BYTES}-byte values, {p.rb_keyspace:,} random keys (`-r`), "
                  f"median of {p.rounds} interleaved rounds. MSET sets 10 keys per request.")
    servers: dict[str, Server] = {}
    start_errors: dict[str, str] = {}
    try:
        for side, spec in (("shoal", ctx.shoal_spec()), ("redis", ctx.redis_spec())):
            try:
                servers[side] = ctx.fleet.start(spec)
            except ServerError as e:
                start_errors[side] = str(e)
                log(f"  {e}")
        for test, pipeline, threads in variants(p.tests):
            name = f"{TESTS[test]} P{pipeline}" + (f" threads={threads}" if threads > 1 else "")
            n = p.rb_requests or probe(ctx, servers.get("redis"), test, pipeline, threads)
            row = Row("throughput", f"{name}, -n {n:,}", METRICS)
            group.rows.append(row)
            for side, error in start_errors.items():
                row.fail(side, 0, f"server did not start: {error}")
            for r in range(p.rounds):
                log(f"[throughput] {name} -n {n} round {r + 1}/{p.rounds}")
                for side in order(["shoal", "redis"], r):
                    if side in servers:
                        values = attempt(row, side, r, lambda: once(ctx, servers[side], test, pipeline, threads, n))
                        if values:
                            log(f"    {side}: {values['rps']:,.0f} req/s, p99 {values['p99']:.3f} ms, "
                                f"{values['cpu_us']:.2f} CPU µs/req")
    finally:
        for server in servers.values():
            ctx.fleet.stop(server)
    return [group]


def probe(ctx: Ctx, redis: Server | None, test: str, pipeline: int, threads: int) -> int:
    """A request count that takes redis-server about `rb_seconds`, rounded to two significant digits."""
    fallback = 50_000 * pipeline
    if redis is None:
        return fallback
    try:
        probe_n = 10_000 * pipeline
        rps = once(ctx, redis, test, pipeline, threads, probe_n)["rps"]
    except RUN_ERRORS as e:
        log(f"  probe on redis failed ({e}); using -n {fallback}")
        return fallback
    n = max(10_000, int(rps * ctx.params.rb_seconds))
    magnitude = 10 ** max(0, len(str(n)) - 2)
    return n // magnitude * magnitude


def once(ctx: Ctx, server: Server, test: str, pipeline: int, threads: int, n: int,
         keyspace: int | None = None) -> dict[str, float]:
    p = ctx.params
    server.ensure_running()
    argv = [ctx.redis_benchmark, "-h", "127.0.0.1", "-p", str(server.port), "-c", str(p.rb_clients),
            "-n", str(n), "-d", str(VALUE_BYTES), "-r", str(keyspace or p.rb_keyspace), "-P", str(pipeline),
            "--csv", "-t", test]
    if threads > 1:
        argv += ["--threads", str(threads)]
    # Generous: a server 20x slower than the probe predicted still finishes.
    timeout = 30 + 20 * p.rb_seconds
    cpu_before = server.cpu_seconds()
    result = run_tool(argv, timeout=timeout, check=False)
    cpu_after = server.cpu_seconds()
    server.check_alive()
    # redis-benchmark 7 stops at the first error reply and prints it.
    prefix = "Error from server: "
    errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith(prefix)]
    if errors:
        raise ToolError(f"server replied {errors[0][len(prefix):].split(', with args')[0][:160]}")
    if result.code != 0:
        raise ToolError(f"redis-benchmark exited with code {result.code}: "
                        f"{(result.stderr.strip() or result.stdout.strip())[-300:]}")
    values = None
    for fields in csv.reader(result.stdout.splitlines()):
        if fields and fields[0] == TESTS[test] and len(fields) >= 7:
            values = {"rps": float(fields[1]), "p50": float(fields[4]), "p99": float(fields[6])}
    if values is None or values["rps"] <= 0:
        raise ToolError(f"no {TESTS[test]} result in redis-benchmark output: {result.stdout.strip()[-300:]}"
                        f" {result.stderr.strip()[-300:]}")
    values["cpu_us"] = (cpu_after - cpu_before) / n * 1e6
    if test == "lpush":
        # LPUSH grows one list without bound; empty it so later rounds start alike.
        try:
            server.command("DEL", "mylist")
        except RUN_ERRORS:
            pass
    return values
