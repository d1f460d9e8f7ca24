"""Case: a cache that is full. Writes and a cache-aside mix while every new key evicts another.

A production cache runs at `maxmemory` all the time, so almost every write evicts something. Each
server (shoal with its default policy, redis-server with `allkeys-lru` and with `allkeys-lfu`) gets
the same `maxmemory`, is filled past it once with redis-benchmark SETs over a key range far larger
than fits (`ev_keyspace`), and stays full: every later SET of a new key evicts one. Then, in
interleaved rounds: redis-benchmark SET at pipeline 1 and 16 over the same range, and a cache-aside
mix (`shoal-loadgen hitratio`: GET a Zipf key, SET it on a miss) over a key set about three times
what fits. Rows compare shoal with each redis policy; the shoal runs of a round serve both rows.
"""

from .context import RUN_ERRORS, Ctx, log, order
from .report import Group, Metric, Row
from .servers import Server, ServerError
from .throughput import METRICS as RB_METRICS
from .throughput import once as rb_once

REDIS_POLICIES = {"redis-lru": "allkeys-lru", "redis-lfu": "allkeys-lfu"}
MIX_METRICS = [
    Metric("rps", "GET/s (+ SET per miss)", "higher", "{:,.0f}"),
    Metric("miss_pct", "miss %", "lower", "{:.2f}"),
    Metric("cpu_us", "server CPU µs/req", "lower", "{:.2f}"),
]
# Fill batches before giving up on seeing evictions (each is `ev_fill_batch` SETs).
FILL_BATCHES_MAX = 12


def run(ctx: Ctx) -> list[Group]:
    p = ctx.params
    group = Group(
        "eviction", "Writes into a full cache (maxmemory reached, every new key evicts one)",
        f"maxmemory {p.ev_maxmemory:,} B on every server, filled past it first. SET: redis-benchmark, "
        f"{p.rb_clients} clients, 64-byte values, `-r {p.ev_keyspace:,}`. Mix: shoal-loadgen hitratio over "
        f"{p.ev_mix_keys:,} Zipf {p.ev_mix_skew} keys, {p.ev_mix_connections} connections × pipeline "
        f"{p.ev_mix_pipeline}, {p.ev_mix_requests:,} GETs (+ a SET per miss) after {p.ev_mix_warmup:,}. "
        f"shoal runs {ctx.shoal_policy or 'its default'} policy; the redis column is the policy named in the case.")
    mix_group = Group("eviction-mix", "Cache-aside mix into a full cache (shoal-loadgen hitratio)",
                      group.description)
    specs = {"shoal": ctx.shoal_spec(p.ev_maxmemory)}
    specs.update({label: ctx.redis_spec(p.ev_maxmemory, policy, label) for label, policy in REDIS_POLICIES.items()})
    servers: dict[str, Server] = {}
    start_errors: dict[str, str] = {}
    try:
        for side, spec in specs.items():
            try:
                servers[side] = ctx.fleet.start(spec)
                fill(ctx, servers[side])
            except RUN_ERRORS as e:
                start_errors[side] = str(e)
                log(f"  {side}: {e}")
        n_by_pipeline = {pl: p.rb_requests or probe(ctx, servers.get("redis-lru"), pl) for pl in (1, 16)}
        cases = [(f"SET P{pl}, -n {n:,}", "set", pl) for pl, n in n_by_pipeline.items()]
        cases.append(("cache-aside mix", "mix", 0))
        for title, kind, pipeline in cases:
            rows = {label: Row("eviction", f"{title} vs {policy}", MIX_METRICS if kind == "mix" else RB_METRICS,
                               sides=("shoal", label))
                    for label, policy in REDIS_POLICIES.items()}
            (mix_group if kind == "mix" else group).rows.extend(rows.values())
            for side, error in start_errors.items():
                for row in rows.values() if side == "shoal" else [rows[side]]:
                    row.fail(side, 0, f"server did not start or fill: {error}")
            for r in range(p.rounds):
                log(f"[eviction] {title} round {r + 1}/{p.rounds}")
                for side in order(list(specs), r):
                    if side not in servers:
                        continue
                    targets = list(rows.values()) if side == "shoal" else [rows[side]]
                    try:
                        server = servers[side]
                        server.ensure_running()
                        fill(ctx, server)
                        if kind == "mix":
                            values = mix_once(ctx, server, seed=r + 1)
                        else:
                            values = rb_once(ctx, server, "set", pipeline, 1, n_by_pipeline[pipeline],
                                             keyspace=p.ev_keyspace)
                        values["evicted"] = evicted_keys(server)
                    except RUN_ERRORS as e:
                        log(f"    {side}: FAILED: {e}")
                        for row in targets:
                            row.fail(side, r, str(e))
                        continue
                    for row in targets:
                        row.add(side, r, values)
                    log(f"    {side}: {values['rps']:,.0f} req/s, " + (
                        f"miss {values['miss_pct']:.2f}%" if kind == "mix" else f"p99 {values['p99']:.3f} ms")
                        + f", {values['cpu_us']:.2f} CPU µs/req, {values['evicted']:,} evicted so far")
    finally:
        for server in servers.values():
            ctx.fleet.stop(server)
    return [group, mix_group]


def evicted_keys(server: Server) -> int:
    return int(server.info("stats").get("evicted_keys", "0"))


def fill(ctx: Ctx, server: Server) -> None:
    """SETs over the whole range until the server has evicted keys (a server that restarted after a
    failure starts empty and is filled again)."""
    p = ctx.params
    for batch in range(FILL_BATCHES_MAX):
        if evicted_keys(server) > 0:
            return
        if batch == 0:
            log(f"  {server.label}: filling past maxmemory {p.ev_maxmemory:,} B")
        rb_once(ctx, server, "set", 16, 1, p.ev_fill_batch, keyspace=p.ev_keyspace)
    if evicted_keys(server) == 0:
        raise ServerError(f"{server.label}: no key evicted after {FILL_BATCHES_MAX} × {p.ev_fill_batch:,} SETs")


def probe(ctx: Ctx, redis: Server | None, pipeline: int) -> int:
    """A SET count that takes the full redis-server about `rb_seconds`, two significant digits."""
    fallback = 50_000 * pipeline
    if redis is None:
        return fallback
    try:
        rps = rb_once(ctx, redis, "set", pipeline, 1, 10_000 * pipeline, keyspace=ctx.params.ev_keyspace)["rps"]
    except RUN_ERRORS as e:
        log(f"  probe on redis failed ({e}); using -n {fallback}")
        return fallback
    n = max(10_000, int(rps * ctx.params.rb_seconds))
    magnitude = 10 ** max(0, len(str(n)) - 2)
    return n // magnitude * magnitude


def mix_once(ctx: Ctx, server: Server, seed: int) -> dict[str, float]:
    p = ctx.params
    cpu_before = server.cpu_seconds()
    result = ctx.loadgen_run(
        ["hitratio", "--addr", f"127.0.0.1:{server.port}", "--keys", str(p.ev_mix_keys),
         "--skew", str(p.ev_mix_skew), "--warmup", str(p.ev_mix_warmup), "--requests", str(p.ev_mix_requests),
         "--connections", str(p.ev_mix_connections), "--pipeline", str(p.ev_mix_pipeline), "--seed", str(seed),
         "--max-duration-s", str(p.hr_max_s)],
        timeout=p.hr_max_s + 30)
    cpu_after = server.cpu_seconds()
    server.check_alive()
    # Warm-up included: the CPU was sampled around the whole run. GETs plus the SETs of misses.
    gets = p.ev_mix_warmup + p.ev_mix_requests
    requests = gets * (1 + result["miss_ratio"])
    return {"rps": result["rps"], "miss_pct": 100.0 * result["miss_ratio"],
            "cpu_us": (cpu_after - cpu_before) / requests * 1e6}
