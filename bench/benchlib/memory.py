"""Case 2: memory per key after loading `SET key:%012d <64 bytes>` through `redis-cli --pipe`.

Each round starts a fresh server, so the empty-server baseline and the growth are measured on the same
process and nothing from an earlier case (fragmentation, grown tables) carries over.
"""

from .context import Ctx, attempt, log, order
from .protocol import load
from .report import Group, Metric, Row

METRICS = [
    Metric("used_per_key", "used_memory B/key", "lower", "{:.1f}"),
    Metric("rss_per_key", "RSS B/key", "lower", "{:.1f}"),
    Metric("load_kps", "load keys/s", "higher", "{:,.0f}"),
    Metric("load_cpu_us", "server CPU µs/key", "lower", "{:.2f}"),
]


def run(ctx: Ctx) -> list[Group]:
    keys = ctx.params.mem_keys
    group = Group("memory", "Memory per key",
                  f"{keys:,} × `SET key:%012d <64 bytes>` via `redis-cli --pipe` into an empty server; growth of "
                  "INFO `used_memory` and of VmRSS divided by the key count.")
    row = Row("memory", f"{keys:,} strings, 16 B keys, 64 B values", METRICS)
    group.rows.append(row)
    stream = ctx.stream(keys)
    specs = {"shoal": ctx.shoal_spec(), "redis": ctx.redis_spec()}
    for r in range(ctx.params.rounds):
        log(f"[memory] {keys:,} keys round {r + 1}/{ctx.params.rounds}")
        for side in order(["shoal", "redis"], r):
            values = attempt(row, side, r, lambda: once(ctx, specs[side], stream, keys))
            if values:
                log(f"    {side}: {values['used_per_key']:.1f} B/key used_memory, {values['rss_per_key']:.1f} B/key RSS")
    return [group]


def once(ctx: Ctx, spec, stream: str, keys: int) -> dict[str, float]:
    server = ctx.fleet.start(spec)
    try:
        used_before, rss_before, cpu_before = server.used_memory(), server.rss_bytes(), server.cpu_seconds()
        seconds = load(ctx.redis_cli, server, stream, keys)
        cpu_after = server.cpu_seconds()
        used_after, rss_after = server.used_memory(), server.rss_bytes()
        return {
            "used_per_key": (used_after - used_before) / keys,
            "rss_per_key": (rss_after - rss_before) / keys,
            "load_kps": keys / seconds,
            "load_cpu_us": (cpu_after - cpu_before) / keys * 1e6,
        }
    finally:
        ctx.fleet.stop(server)
