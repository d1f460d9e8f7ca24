"""Case 4: tail latency in an open loop, at fixed fractions of redis-server's closed-loop maximum.

First `shoal-loadgen maxrate` measures the closed-loop maximum of both servers (interleaved rounds);
redis's median sets the target rates, so both servers are offered the very same load. Then
`shoal-loadgen openloop` sends at each rate and reports latency from the intended send times.
Both servers are preloaded with the key space so GETs hit.
"""

from .context import RUN_ERRORS, Ctx, attempt, log, order
from .protocol import load
from .report import Group, Metric, Row
from .servers import Server, ServerError

MAX_METRICS = [
    Metric("rps", "req/s", "higher", "{:,.0f}"),
    Metric("cpu_us", "server CPU µs/req", "lower", "{:.2f}"),
]
OPEN_METRICS = [
    Metric("p50_us", "p50 µs", "lower", "{:,.1f}"),
    Metric("p99_us", "p99 µs", "lower", "{:,.1f}"),
    Metric("p999_us", "p99.9 µs", "lower", "{:,.1f}"),
    Metric("achieved", "achieved req/s", "higher", "{:,.0f}"),
    Metric("cpu_us", "server CPU µs/req", "lower", "{:.2f}"),
]


def run(ctx: Ctx) -> list[Group]:
    p = ctx.params
    workload = (f"{p.ol_get_ratio:.0%} GET / {1 - p.ol_get_ratio:.0%} SET (64 B) over {p.ol_keys:,} preloaded keys, "
                f"zipf {p.ol_skew}, {p.ol_connections} connections")
    max_group = Group("maxrate", "Closed-loop maximum (shoal-loadgen maxrate)",
                      f"{workload}, one request in flight per connection, {p.ol_max_s:g} s per run.")
    open_group = Group("openloop", "Open-loop latency (shoal-loadgen openloop)",
                       f"{workload}, {p.ol_duration_s:g} s per run at fixed fractions of redis-server's closed-loop "
                       "maximum; latency is measured from each request's intended send time (no coordinated omission).")
    max_row = Row("maxrate", "closed loop, pipeline 1", MAX_METRICS)
    max_group.rows.append(max_row)
    open_rows = [Row("openloop", f"{f:.0%} of redis max", OPEN_METRICS) for f in p.ol_fractions]
    open_group.rows.extend(open_rows)
    servers: dict[str, Server] = {}
    try:
        stream = ctx.stream(p.ol_keys)
        for side, spec in (("shoal", ctx.shoal_spec()), ("redis", ctx.redis_spec())):
            try:
                server = ctx.fleet.start(spec)
                servers[side] = server
                load(ctx.redis_cli, server, stream, p.ol_keys)
            except RUN_ERRORS as e:
                servers.pop(side, None)
                log(f"  {e}")
                for row in [max_row, *open_rows]:
                    row.fail(side, 0, f"server did not start or load: {e}")

        for r in range(p.rounds):
            log(f"[openloop] closed-loop maximum round {r + 1}/{p.rounds}")
            for side in order(["shoal", "redis"], r):
                if side in servers:
                    values = attempt(max_row, side, r, lambda: max_once(ctx, servers[side], seed=r + 1))
                    if values:
                        log(f"    {side}: {values['rps']:,.0f} req/s")

        base = max_row.median("redis", "rps")
        if base is None:
            base = max_row.median("shoal", "rps")
            if base is None:
                for row in open_rows:
                    row.fail("shoal", 0, "no closed-loop maximum to take rates from")
                return [max_group, open_group]
            for row in open_rows:
                row.note("redis-server's maximum is missing; rates are fractions of shoal's")

        for fraction, row in zip(p.ol_fractions, open_rows):
            rate = fraction * base
            row.case = f"{fraction:.0%} of redis max ({rate:,.0f} req/s)"
            for r in range(p.rounds):
                log(f"[openloop] {rate:,.0f} req/s round {r + 1}/{p.rounds}")
                for side in order(["shoal", "redis"], r):
                    if side in servers:
                        values = attempt(row, side, r, lambda: open_once(ctx, servers[side], rate, seed=r + 1))
                        if values:
                            log(f"    {side}: p50 {values['p50_us']:.1f} µs, p99 {values['p99_us']:.1f} µs, "
                                f"p99.9 {values['p999_us']:.1f} µs")
                        if values and values.pop("overloaded"):
                            row.note(f"{side} fell behind in round {r + 1}: in-flight requests hit the cap")
    finally:
        for server in servers.values():
            ctx.fleet.stop(server)
    return [max_group, open_group]


def _common(ctx: Ctx, server: Server, seed: int) -> list[str]:
    p = ctx.params
    return ["--addr", f"127.0.0.1:{server.port}", "--keys", str(p.ol_keys), "--skew", str(p.ol_skew),
            "--get-ratio", str(p.ol_get_ratio), "--connections", str(p.ol_connections), "--seed", str(seed)]


def max_once(ctx: Ctx, server: Server, seed: int) -> dict[str, float]:
    p = ctx.params
    server.ensure_running()
    warmup = min(1.0, p.ol_max_s / 4)
    cpu_before = server.cpu_seconds()
    result = ctx.loadgen_run(["maxrate", *_common(ctx, server, seed), "--duration-s", str(p.ol_max_s),
                              "--warmup-s", str(warmup)], timeout=p.ol_max_s + warmup + 60)
    cpu_after = server.cpu_seconds()
    server.check_alive()
    return {"rps": result["rps"], "cpu_us": (cpu_after - cpu_before) / max(1, result["all_requests"]) * 1e6}


def open_once(ctx: Ctx, server: Server, rate: float, seed: int) -> dict[str, float]:
    p = ctx.params
    server.ensure_running()
    cpu_before = server.cpu_seconds()
    result = ctx.loadgen_run(["openloop", *_common(ctx, server, seed), "--rate", f"{rate:.1f}",
                              "--duration-s", str(p.ol_duration_s)], timeout=p.ol_duration_s + 90)
    cpu_after = server.cpu_seconds()
    server.check_alive()
    if result["completed"] == 0:
        raise ServerError(f"{server.label}: no request completed")
    return {"p50_us": result["p50_us"], "p99_us": result["p99_us"], "p999_us": result["p999_us"],
            "achieved": result["achieved_rate"], "cpu_us": (cpu_after - cpu_before) / result["completed"] * 1e6,
            "overloaded": result["overloaded"]}
