"""Case 3: miss ratio at a fixed memory limit, shoal's default policy against redis's LRU and LFU.

The limit is what redis-server itself uses to hold `hr_fraction` of the key space: a fresh redis is
loaded with that many keys and its used_memory becomes every server's `maxmemory`. So "10% of the data
set" is measured, not guessed, and a server that stores keys more compactly than redis gets to keep
more of them within the same bytes; that is part of what the comparison is meant to show.

Every run starts a fresh server (an empty cache), and within a round all three servers get the same
seed, hence the same request sequence.
"""

from .context import RUN_ERRORS, Ctx, log, order
from .protocol import load
from .report import Group, Metric, Row

METRICS = [
    Metric("miss_pct", "miss %", "lower", "{:.2f}"),
    Metric("keys_held", "keys held", "higher", "{:,.0f}"),
    Metric("rps", "loadgen req/s", "higher", "{:,.0f}"),
]
REDIS_POLICIES = {"redis-lru": "allkeys-lru", "redis-lfu": "allkeys-lfu"}


def run(ctx: Ctx) -> list[Group]:
    p = ctx.params
    group = Group("hitratio", "Hit ratio at a fixed memory limit (shoal-loadgen hitratio)", "")
    try:
        maxmemory, per_key = calibrate(ctx)
    except RUN_ERRORS as e:
        for skew in p.hr_skews:
            for label, policy in REDIS_POLICIES.items():
                row = Row("hitratio", f"zipf {skew} vs {policy}", METRICS, sides=("shoal", label))
                for side in row.sides:
                    row.fail(side, 0, f"could not measure the memory limit on redis: {e}")
                group.rows.append(row)
        return [group]
    shoal_policy = ctx.shoal_policy or "its default"
    group.description = (
        f"Cache-aside (GET; on a miss SET 64 bytes) over {p.hr_keys:,} keys, {p.hr_warmup:,} warm-up then "
        f"{p.hr_requests:,} measured GETs, {p.hr_connections} connections × pipeline {p.hr_pipeline}. "
        f"maxmemory {maxmemory:,} B = redis used_memory holding {p.hr_fraction:.0%} of the keys "
        f"({per_key:.0f} B/key). shoal runs {shoal_policy} policy; the redis column is the policy named in the case.")
    specs = {"shoal": ctx.shoal_spec(maxmemory)}
    specs.update({label: ctx.redis_spec(maxmemory, policy, label) for label, policy in REDIS_POLICIES.items()})
    for skew in p.hr_skews:
        rows = {label: Row("hitratio", f"zipf {skew} vs {policy}", METRICS, sides=("shoal", label))
                for label, policy in REDIS_POLICIES.items()}
        group.rows.extend(rows.values())
        for r in range(p.rounds):
            log(f"[hitratio] zipf {skew} round {r + 1}/{p.rounds}")
            for side in order(list(specs), r):
                targets = list(rows.values()) if side == "shoal" else [rows[side]]
                try:
                    values = once(ctx, specs[side], skew, seed=r + 1)
                except RUN_ERRORS as e:
                    log(f"    {side}: FAILED: {e}")
                    for row in targets:
                        row.fail(side, r, str(e))
                    continue
                for row in targets:
                    row.add(side, r, values)
                held = values["keys_held"]
                log(f"    {side}: miss {values['miss_pct']:.2f}%, " + (f"{held:,.0f} keys held" if held is not None else ""))
    return [group]


def calibrate(ctx: Ctx) -> tuple[int, float]:
    """used_memory of a redis-server holding `hr_fraction` of the keys, and its bytes per key."""
    p = ctx.params
    keys = max(1, int(p.hr_keys * p.hr_fraction))
    log(f"[hitratio] measuring redis used_memory for {keys:,} keys")
    server = ctx.fleet.start(ctx.redis_spec(label="redis-calibration"))
    try:
        empty = server.used_memory()
        load(ctx.redis_cli, server, ctx.stream(keys), keys)
        full = server.used_memory()
    finally:
        ctx.fleet.stop(server)
    return full, (full - empty) / keys


def once(ctx: Ctx, spec, skew: float, seed: int) -> dict[str, float]:
    p = ctx.params
    server = ctx.fleet.start(spec)
    try:
        result = ctx.loadgen_run(
            ["hitratio", "--addr", f"127.0.0.1:{server.port}", "--keys", str(p.hr_keys), "--skew", str(skew),
             "--warmup", str(p.hr_warmup), "--requests", str(p.hr_requests),
             "--connections", str(p.hr_connections), "--pipeline", str(p.hr_pipeline), "--seed", str(seed),
             "--max-duration-s", str(p.hr_max_s)],
            timeout=p.hr_max_s + 30)
        server.check_alive()
        held = server.key_count()
        return {"miss_pct": 100.0 * result["miss_ratio"], "rps": result["rps"],
                "keys_held": float(held) if held is not None else None}
    finally:
        ctx.fleet.stop(server)
