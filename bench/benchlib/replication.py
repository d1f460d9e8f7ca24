"""Case 5: replication, one primary and one replica per server kind (issue #4).

1. Full sync time: a fresh primary is loaded with `repl_sync_keys` × `SET key:%012d <64 bytes>` (the
   memory case's stream, through `redis-cli --pipe`); a fresh, empty replica then gets `REPLICAOF`, and
   the time runs from sending it until the replica reports `master_link_status:up` *and* `DBSIZE`
   equals the key count (polled every `repl_poll_s`). Fresh servers every round, so nothing cached
   from an earlier copy can help.
2. Replication lag under load: redis-benchmark SET (50 clients, 64 B, `-r 100000`) against a primary
   with one replica, while a sampler reads INFO replication of both every `repl_sample_s`. Byte lag is
   primary `master_repl_offset` − replica `slave_repl_offset` from the same tick (primary read first).
   Time lag: for each primary sample (time t, offset P), the moment the replica's offset first reached P
   (linear interpolation between replica readings) minus t. Once the load stops, the replica's catch-up
   is polled every millisecond; those readings resolve the last samples, and the time from the end of
   the load to full catch-up is the drain time. Byte offsets are each server's own stream format, so
   byte lags compare streams, not servers; time lags compare servers.
3. Acknowledged-write throughput with one replica: shoal with `write-strategy sync` (`min-replicas-ack
   1`; switched with CONFIG SET on one long-lived pair) and `async`, redis-server as is. Loads:
   redis-benchmark SET at pipeline 1 and 16, and `ackclient.py` (same client on every server: SET, or
   SET then `WAIT 1 0`, per write; batches of 1 or 16 writes per round trip). redis acknowledges only
   through WAIT, so the headline compares shoal sync SET with redis SET+WAIT from the same client at the
   same pipeline depth.
"""

import bisect
import csv
import dataclasses
import json
import math
import os
import resource
import sys
import threading
import time

from .context import RUN_ERRORS, Ctx, attempt, log, order
from .protocol import load, value_for
from .report import Group, Metric, Row
from .resp import Client, ReplyError, parse_info
from .servers import Server, ServerError, ServerSpec, ToolError, run_tool

HOST = "127.0.0.1"
VALUE_BYTES = 64
ACKCLIENT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ackclient.py")
# redis primaries stream the snapshot straight to the socket and start at once; replicas keep the
# default disk-based load. Everything else is redis's default (as in every other case).
REDIS_PRIMARY_CONFIG = (("repl-diskless-sync", "yes"), ("repl-diskless-sync-delay", "0"))
REDIS_REPLICA_CONFIG = (("repl-diskless-load", "disabled"),)
SHOAL_PRIMARY_CONFIG = (("min-replicas-ack", "1"),)
SYNC_TIMEOUT_BASE_S = 60.0
CATCH_UP_TIMEOUT_S = 30.0

SYNC_METRICS = [
    Metric("sync_s", "full sync s", "lower", "{:.3f}"),
    Metric("link_s", "link up s", "lower", "{:.3f}"),
    Metric("primary_cpu_s", "primary CPU s", "lower", "{:.2f}"),
    Metric("replica_cpu_s", "replica CPU s", "lower", "{:.2f}"),
]
LAG_METRICS = [
    Metric("lag_p50_ms", "lag p50 ms", "lower", "{:.2f}"),
    Metric("lag_p99_ms", "lag p99 ms", "lower", "{:.2f}"),
    Metric("bytes_p50", "lag p50 B", "lower", "{:,.0f}"),
    Metric("bytes_p99", "lag p99 B", "lower", "{:,.0f}"),
    Metric("drain_ms", "catch-up after load ms", "lower", "{:.1f}"),
    Metric("rps", "SET req/s", "higher", "{:,.0f}"),
    Metric("stream_b", "stream B/SET", "lower", "{:.1f}"),
]
ACK_METRICS = [
    Metric("rps", "req/s", "higher", "{:,.0f}"),
    Metric("p50", "p50 ms", "lower", "{:.3f}"),
    Metric("p99", "p99 ms", "lower", "{:.3f}"),
    Metric("primary_us", "primary CPU µs/req", "lower", "{:.2f}"),
    Metric("replica_us", "replica CPU µs/req", "lower", "{:.2f}"),
    Metric("client_us", "client CPU µs/req", "lower", "{:.2f}"),
]


def run(ctx: Ctx) -> list[Group]:
    return [full_sync(ctx), lag(ctx), *acked(ctx)]


# ---------------------------------------------------------------------------------------------------
# Servers


def specs(ctx: Ctx, side: str) -> tuple[ServerSpec, ServerSpec]:
    base = ctx.shoal_spec() if side == "shoal" else ctx.redis_spec()
    if base.style == "redis":
        primary_cfg, replica_cfg = REDIS_PRIMARY_CONFIG, REDIS_REPLICA_CONFIG
    else:
        primary_cfg, replica_cfg = SHOAL_PRIMARY_CONFIG, ()
    return (dataclasses.replace(base, label=f"{side}-primary", config=base.config + primary_cfg),
            dataclasses.replace(base, label=f"{side}-replica", config=base.config + replica_cfg))


def proc_cpu(server: Server) -> float:
    """utime + stime of the process and of its reaped children (redis's snapshot fork), seconds."""
    try:
        with open(f"/proc/{server.pid}/stat") as f:
            stat = f.read()
    except OSError as e:
        raise ServerError(f"{server.label}: cannot read CPU time: {e}") from e
    fields = stat[stat.rindex(")") + 2:].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def info(client: Client, section: str = "replication") -> dict[str, str]:
    return parse_info(client.command("INFO", section))


def offsets(primary: Client, replica: Client) -> tuple[int, int, str]:
    p = info(primary)
    r = info(replica)
    return int(p.get("master_repl_offset", 0)), int(r.get("slave_repl_offset", -1)), r.get("master_link_status", "?")


def replicate(replica: Server, primary: Server) -> None:
    reply = replica.command("REPLICAOF", HOST, primary.port)
    if reply != "OK" and not str(reply).startswith("OK"):
        raise ServerError(f"{replica.label}: REPLICAOF replied {reply!r}")


def wait_caught_up(primary: Server, replica: Server, timeout: float = CATCH_UP_TIMEOUT_S) -> None:
    """Until the link is up and the replica's offset reached the primary's (polled every 5 ms)."""
    deadline = time.monotonic() + timeout
    with primary.client() as pc, replica.client() as rc:
        while True:
            p, r, link = offsets(pc, rc)
            if link == "up" and r >= p:
                return
            if time.monotonic() > deadline:
                raise ServerError(f"{replica.label}: not caught up after {timeout:.0f}s: link {link}, "
                                  f"replica offset {r}, primary offset {p}")
            primary.check_alive()
            replica.check_alive()
            time.sleep(0.005)


def start_pair(ctx: Ctx, side: str) -> tuple[Server, Server]:
    pspec, rspec = specs(ctx, side)
    primary = ctx.fleet.start(pspec)
    try:
        replica = ctx.fleet.start(rspec)
    except BaseException:
        ctx.fleet.stop(primary)
        raise
    return primary, replica


def stop_pair(ctx: Ctx, pair) -> None:
    for server in reversed(pair or ()):
        ctx.fleet.stop(server)


def linked_pair(ctx: Ctx, side: str) -> tuple[Server, Server]:
    primary, replica = start_pair(ctx, side)
    try:
        replicate(replica, primary)
        wait_caught_up(primary, replica)
    except BaseException:
        stop_pair(ctx, (primary, replica))
        raise
    return primary, replica


def percentile(sorted_vals: list[float], q: float) -> float:
    """Nearest rank: the smallest value with at least a fraction q of the values at or below it."""
    return sorted_vals[min(len(sorted_vals) - 1, max(0, math.ceil(q * len(sorted_vals)) - 1))]


# ---------------------------------------------------------------------------------------------------
# 1. Full sync


def full_sync(ctx: Ctx) -> Group:
    p = ctx.params
    keys = p.repl_sync_keys
    group = Group("repl-fullsync", "Replication: full sync time",
                  f"Fresh primary loaded with {keys:,} × `SET key:%012d <64 bytes>` (`redis-cli --pipe`), fresh "
                  f"empty replica; time from sending `REPLICAOF` until the replica reports `master_link_status:up` "
                  f"and `DBSIZE` = {keys:,} (polled every {p.repl_poll_s * 1000:g} ms). CPU: user+system of each "
                  "process over the sync, including reaped children (redis's snapshot fork). redis: primary "
                  "`--repl-diskless-sync yes --repl-diskless-sync-delay 0`, replica `--repl-diskless-load disabled` "
                  "(default: the snapshot goes to the replica's disk, then loads).")
    row = Row("repl-fullsync", f"{keys:,} keys, 64 B values", SYNC_METRICS)
    group.rows.append(row)
    stream = ctx.stream(keys)
    for r in range(p.rounds):
        log(f"[replication] full sync of {keys:,} keys round {r + 1}/{p.rounds}")
        for side in order(["shoal", "redis"], r):
            values = attempt(row, side, r, lambda: sync_once(ctx, side, stream, keys))
            if values:
                log(f"    {side}: {values['sync_s']:.3f} s (link up {values['link_s']:.3f} s), CPU primary "
                    f"{values['primary_cpu_s']:.2f} s, replica {values['replica_cpu_s']:.2f} s")
    return group


def sync_once(ctx: Ctx, side: str, stream: str, keys: int) -> dict[str, float]:
    p = ctx.params
    pspec, rspec = specs(ctx, side)
    pair = []
    try:
        primary = ctx.fleet.start(pspec)
        pair.append(primary)
        load(ctx.redis_cli, primary, stream, keys)
        if primary.command("DBSIZE") != keys:
            raise ServerError(f"{primary.label}: DBSIZE {primary.command('DBSIZE')} after loading {keys} keys")
        replica = ctx.fleet.start(rspec)
        pair.append(replica)
        if replica.command("DBSIZE") != 0:
            raise ServerError(f"{replica.label}: not empty at start")
        timeout = SYNC_TIMEOUT_BASE_S + keys / 10_000
        cpu_p, cpu_r = proc_cpu(primary), proc_cpu(replica)
        link_at = None
        last = ""
        with replica.client() as c:
            t0 = time.monotonic()
            reply = c.command("REPLICAOF", HOST, primary.port)
            if not str(reply).startswith("OK"):
                raise ServerError(f"{replica.label}: REPLICAOF replied {reply!r}")
            while True:
                fields = info(c)
                now = time.monotonic()
                status = fields.get("master_link_status", "?")
                if status == "up":
                    link_at = link_at or now
                    try:
                        n = c.command("DBSIZE")
                    except ReplyError as e:  # e.g. -LOADING
                        n, last = None, str(e)
                    now = time.monotonic()
                    if n == keys:
                        done_at = now
                        break
                    last = last if n is None else f"DBSIZE {n}"
                if now - t0 > timeout:
                    raise ServerError(f"{replica.label}: not synced after {timeout:.0f}s: link {status}, "
                                      f"sync in progress {fields.get('master_sync_in_progress')}, {last}")
                primary.check_alive()
                replica.check_alive()
                time.sleep(p.repl_poll_s)
        # redis's fork is reaped within a cron tick of finishing; its CPU only counts once reaped.
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and info_field(primary, "persistence", "rdb_bgsave_in_progress") == "1":
            time.sleep(0.02)
        time.sleep(0.15)
        values = {"sync_s": done_at - t0, "link_s": link_at - t0,
                  "primary_cpu_s": proc_cpu(primary) - cpu_p, "replica_cpu_s": proc_cpu(replica) - cpu_r}
        check_sample(replica, keys)
        full = info_field(primary, "stats", "sync_full")
        if full is not None and int(full) < 1:
            raise ServerError(f"{primary.label}: sync_full is {full} after a full sync")
        return values
    finally:
        stop_pair(ctx, pair)


def info_field(server: Server, section: str, name: str) -> str | None:
    try:
        return server.info(section).get(name)
    except ReplyError:
        return None


def check_sample(replica: Server, keys: int) -> None:
    """A few values read back from the replica, so a fast copy is also a correct one."""
    with replica.client() as c:
        for i in sorted({0, keys // 3, keys // 2, keys - 1}):
            got = c.command("GET", b"key:%012d" % i)
            if got != value_for(i):
                raise ServerError(f"{replica.label}: key:{i:012d} holds {got!r:.40} after the sync")


# ---------------------------------------------------------------------------------------------------
# 2. Lag under load


class Sampler(threading.Thread):
    """Reads the primary's then the replica's offset every `interval` seconds until stopped."""

    def __init__(self, primary: Server, replica: Server, interval: float):
        super().__init__(daemon=True, name="repl-sampler")
        self.primary, self.replica, self.interval = primary, replica, interval
        self.primary_obs: list[tuple[float, int]] = []  # (time, master_repl_offset)
        self.replica_obs: list[tuple[float, int]] = []  # (time, slave_repl_offset)
        self.ticks: list[tuple[float, int, int]] = []  # (time, primary offset, replica offset)
        self.stop_event = threading.Event()
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            with self.primary.client() as pc, self.replica.client() as rc:
                next_at = time.monotonic()
                while not self.stop_event.is_set():
                    a = time.monotonic()
                    p = int(info(pc).get("master_repl_offset", 0))
                    b = time.monotonic()
                    r = int(info(rc).get("slave_repl_offset", -1))
                    c = time.monotonic()
                    self.primary_obs.append(((a + b) / 2, p))
                    self.replica_obs.append(((b + c) / 2, r))
                    self.ticks.append(((a + b) / 2, p, r))
                    next_at += self.interval
                    delay = next_at - time.monotonic()
                    if delay > 0:
                        self.stop_event.wait(delay)
                    else:
                        next_at = time.monotonic()
        except (*RUN_ERRORS,) as e:
            self.error = e

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=10)


def lag(ctx: Ctx) -> Group:
    p = ctx.params
    n = p.repl_lag_requests or lag_probe(ctx)
    group = Group("repl-lag", "Replication: lag under write load",
                  f"redis-benchmark `-t set -c {p.rb_clients} -d 64 -r {p.rb_keyspace} -n {n:,}` against the primary "
                  f"(sized for about {p.repl_lag_seconds:g} s on redis); INFO replication of primary and replica "
                  f"sampled every {p.repl_sample_s * 1000:g} ms during the load. Time lag: when the replica's offset "
                  "reached each sampled primary offset (interpolated between replica readings) minus the sample "
                  "time. Byte lag: primary − replica offset in the same tick; bytes are each server's own stream "
                  "format (see stream B/SET), so compare byte lags with care. Catch-up: from the end of the load "
                  "until the replica's offset equals the primary's (polled every 1 ms).")
    row = Row("repl-lag", f"SET load, {p.rb_clients} clients, P1", LAG_METRICS)
    group.rows.append(row)
    for r in range(p.rounds):
        log(f"[replication] lag under SET load (-n {n}) round {r + 1}/{p.rounds}")
        for side in order(["shoal", "redis"], r):
            values = attempt(row, side, r, lambda: lag_once(ctx, side, n))
            if values:
                log(f"    {side}: lag p50 {values['lag_p50_ms']:.2f} ms, p99 {values['lag_p99_ms']:.2f} ms, "
                    f"bytes p50 {values['bytes_p50']:,.0f} p99 {values['bytes_p99']:,.0f}, catch-up "
                    f"{values['drain_ms']:.1f} ms, {values['rps']:,.0f} SET/s")
    return group


def lag_probe(ctx: Ctx) -> int:
    """A request count that takes redis-server (with a replica) about `repl_lag_seconds`."""
    fallback = 200_000
    pair = None
    try:
        pair = linked_pair(ctx, "redis")
        values = rb_once(ctx, pair[0], 1, 20_000)
    except RUN_ERRORS as e:
        log(f"  lag probe on redis failed ({e}); using -n {fallback}")
        return fallback
    finally:
        stop_pair(ctx, pair)
    return round_count(values["rps"] * ctx.params.repl_lag_seconds)


def round_count(n: float) -> int:
    n = max(10_000, int(n))
    magnitude = 10 ** max(0, len(str(n)) - 2)
    return n // magnitude * magnitude


def lag_once(ctx: Ctx, side: str, n: int) -> dict[str, float]:
    p = ctx.params
    pair = linked_pair(ctx, side)
    primary, replica = pair
    sampler = None
    try:
        with primary.client() as pc:
            start_offset = int(info(pc)["master_repl_offset"])
        sampler = Sampler(primary, replica, p.repl_sample_s)
        sampler.start()
        t_start = time.monotonic()
        values = rb_once(ctx, primary, 1, n)
        t_end = time.monotonic()
        sampler.stop()
        if sampler.error:
            raise sampler.error
        # Catch-up, polled tightly; these readings also resolve the last samples.
        replica_obs = list(sampler.replica_obs)
        with primary.client() as pc, replica.client() as rc:
            final = int(info(pc)["master_repl_offset"])
            deadline = time.monotonic() + CATCH_UP_TIMEOUT_S
            while True:
                a = time.monotonic()
                r = int(info(rc).get("slave_repl_offset", -1))
                b = time.monotonic()
                replica_obs.append(((a + b) / 2, r))
                if r >= final:
                    caught_up = (a + b) / 2
                    break
                if b > deadline:
                    raise ServerError(f"{replica.label}: replica offset {r} still behind the primary's {final} "
                                      f"{CATCH_UP_TIMEOUT_S:.0f}s after the load ended")
                replica.check_alive()
                time.sleep(0.001)
            pkeys, rkeys = pc.command("DBSIZE"), rc.command("DBSIZE")
        if pkeys != rkeys:
            raise ServerError(f"{side}: replica holds {rkeys} keys, primary {pkeys}, after catching up")
        # Only ticks while the load ran and after its first write reached the stream.
        ticks = [(t, po, ro) for t, po, ro in sampler.ticks if t_start <= t <= t_end and po > start_offset]
        if not ticks:
            raise ToolError(f"no offset samples during the load ({len(sampler.ticks)} in all)")
        times = [t for t, _ in replica_obs]
        offs = [o for _, o in replica_obs]
        # The replica's offset never decreases; bisect on the running maximum to be safe.
        run_max = []
        m = -1
        for o in offs:
            m = max(m, o)
            run_max.append(m)
        lags_ms = []
        for t, po, _ in ticks:
            j = bisect.bisect_left(run_max, po)
            if j >= len(run_max):
                raise ServerError(f"{side}: replica never reached offset {po}")
            reach = times[j]
            if j > 0 and run_max[j] > run_max[j - 1]:
                frac = (po - run_max[j - 1]) / (run_max[j] - run_max[j - 1])
                reach = times[j - 1] + (times[j] - times[j - 1]) * frac
            lags_ms.append(max(0.0, reach - t) * 1000)
        lags_ms.sort()
        byte_lags = sorted(max(0, po - ro) for _, po, ro in ticks)
        return {
            "lag_p50_ms": percentile(lags_ms, 0.50), "lag_p99_ms": percentile(lags_ms, 0.99),
            "bytes_p50": percentile(byte_lags, 0.50), "bytes_p99": percentile(byte_lags, 0.99),
            "drain_ms": max(0.0, caught_up - t_end) * 1000, "rps": values["rps"],
            "stream_b": (final - start_offset) / n, "samples": len(ticks),
        }
    finally:
        if sampler and sampler.is_alive():
            sampler.stop()
        stop_pair(ctx, pair)


# ---------------------------------------------------------------------------------------------------
# 3. Acknowledged-write throughput


def rb_once(ctx: Ctx, server: Server, pipeline: int, n: int) -> dict[str, float]:
    """redis-benchmark SET; returns rps, p50, p99 (ms)."""
    p = ctx.params
    argv = [ctx.redis_benchmark, "-h", HOST, "-p", str(server.port), "-c", str(p.rb_clients), "-n", str(n),
            "-d", str(VALUE_BYTES), "-r", str(p.rb_keyspace), "-P", str(pipeline), "--csv", "-t", "set"]
    result = run_tool(argv, timeout=60 + 20 * max(p.rb_seconds, p.repl_lag_seconds), check=False)
    server.check_alive()
    prefix = "Error from server: "
    errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith(prefix)]
    if errors:
        raise ToolError(f"server replied {errors[0][len(prefix):].split(', with args')[0][:160]}")
    if result.code != 0:
        raise ToolError(f"redis-benchmark exited with code {result.code}: "
                        f"{(result.stderr.strip() or result.stdout.strip())[-300:]}")
    for fields in csv.reader(result.stdout.splitlines()):
        if fields and fields[0] == "SET" and len(fields) >= 7 and float(fields[1]) > 0:
            return {"rps": float(fields[1]), "p50": float(fields[4]), "p99": float(fields[6]), "requests": n}
    raise ToolError(f"no SET result in redis-benchmark output: {result.stdout.strip()[-300:]} "
                    f"{result.stderr.strip()[-300:]}")


def client_once(ctx: Ctx, server: Server, mode: str, pipeline: int, seed: int) -> dict[str, float]:
    p = ctx.params
    argv = [sys.executable, ACKCLIENT, "--host", HOST, "--port", str(server.port), "--mode", mode,
            "--pipeline", str(pipeline),
            "--connections", str(p.rb_clients), "--procs", str(p.repl_client_procs),
            "--keyspace", str(p.rb_keyspace), "--value-bytes", str(VALUE_BYTES),
            "--duration-s", str(p.repl_client_s), "--warmup-s", str(p.repl_client_warmup_s), "--seed", str(seed)]
    run = run_tool(argv, timeout=60 + p.repl_client_s + p.repl_client_warmup_s, check=False)
    server.check_alive()
    lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise ToolError(f"ackclient: no result (exit {run.code}): {run.stderr.strip()[-400:]}")
    res = json.loads(lines[-1])
    if run.code != 0:
        raise ToolError(f"ackclient {mode}: {res.get('errors')} error(s), {res.get('stuck')} stuck; "
                        f"first: {res.get('first_error') or run.stderr.strip()[-300:]}")
    return {"rps": res["rps"], "p50": res["p50_ms"], "p99": res["p99_ms"], "requests": res["requests"]}


# What each configuration runs, in this order within a round.
# ("rb", pipeline) or ("client", ackclient mode, pipeline).
MEASUREMENTS = [("rb", 1), ("rb", 16), ("client", "set", 1), ("client", "set+wait", 1),
                ("client", "set", 16), ("client", "set+wait", 16)]


def meas_name(m) -> str:
    if m[0] == "rb":
        return f"redis-benchmark SET P{m[1]}"
    return f"ackclient {m[1].upper().replace('+', ' + ')} P{m[2]}"


class AckPairs:
    """One long-lived primary+replica per server kind; shoal's strategy switched with CONFIG SET."""

    def __init__(self, ctx: Ctx):
        self.ctx = ctx
        self.pairs: dict[str, tuple[Server, Server]] = {}

    def get(self, side: str) -> tuple[Server, Server]:
        pair = self.pairs.get(side)
        if pair and not all(s.alive() for s in pair):
            log(f"    {side}: a server died; starting a fresh pair")
            stop_pair(self.ctx, pair)
            pair = None
        if pair is None:
            pair = linked_pair(self.ctx, side)
            self.pairs[side] = pair
        return pair

    def close(self) -> None:
        for pair in self.pairs.values():
            stop_pair(self.ctx, pair)


def set_strategy(primary: Server, strategy: str) -> None:
    primary.command("CONFIG", "SET", "write-strategy", strategy)
    got = primary.info("replication").get("shoal_write_strategy")
    if got != strategy:
        raise ServerError(f"{primary.label}: shoal_write_strategy is {got!r} after CONFIG SET {strategy}")


def ack_measure(ctx: Ctx, pairs: AckPairs, config: str, m, n_for: dict[int, int], r: int) -> dict[str, float]:
    side, _, strategy = config.partition("-")
    primary, replica = pairs.get(side)
    if strategy and primary.spec.style == "shoal":  # a redis stand-in for shoal only ever runs "async"
        set_strategy(primary, strategy)
    # Each run starts with the replica caught up, so no backlog from the previous run counts.
    wait_caught_up(primary, replica)
    cpu_p, cpu_r, cpu_c = proc_cpu(primary), proc_cpu(replica), children_cpu()
    if m[0] == "rb":
        values = rb_once(ctx, primary, m[1], n_for[m[1]])
    else:
        values = client_once(ctx, primary, m[1], m[2], seed=r + 1)
    cpu_p, cpu_r, cpu_c = proc_cpu(primary) - cpu_p, proc_cpu(replica) - cpu_r, children_cpu() - cpu_c
    replica.check_alive()
    # CPU per request over the whole tool run (the client's warm-up included), so only for comparison.
    total = values.pop("requests")
    if m[0] == "client":
        total = values["rps"] * (ctx.params.repl_client_s + ctx.params.repl_client_warmup_s)
    values.update(primary_us=cpu_p / total * 1e6, replica_us=cpu_r / total * 1e6, client_us=cpu_c / total * 1e6)
    return values


# Rows: (case label, (config, measurement) of the first side, of the second side, side names).
def ack_rows(standin: bool):
    sync_rows = []
    for pl in (1, 16):
        sync_rows += [
            (f"acked writes, same client P{pl}: shoal sync SET vs redis SET + WAIT 1 0",
             ("shoal-sync", ("client", "set", pl)), ("redis", ("client", "set+wait", pl)), ("shoal", "redis")),
            (f"identical client SET + WAIT 1 0 P{pl}: shoal sync vs redis",
             ("shoal-sync", ("client", "set+wait", pl)), ("redis", ("client", "set+wait", pl)), ("shoal", "redis")),
        ]
    sync_rows.insert(1, ("acked writes: shoal sync redis-benchmark SET P1 vs redis SET + WAIT 1 0 (ackclient P1)",
                         ("shoal-sync", ("rb", 1)), ("redis", ("client", "set+wait", 1)), ("shoal", "redis")))
    acked = ([] if standin else sync_rows) + [
        (f"identical client SET + WAIT 1 0 P{pl}: shoal async vs redis",
         ("shoal-async", ("client", "set+wait", pl)), ("redis", ("client", "set+wait", pl)), ("shoal", "redis"))
        for pl in (1, 16)]
    plain = (("rb", 1), ("rb", 16), ("client", "set", 1), ("client", "set", 16))
    unacked = [(f"{meas_name(m)}: shoal async vs redis", ("shoal-async", m), ("redis", m), ("shoal", "redis"))
               for m in plain]
    cost = [] if standin else [
        (f"{meas_name(m)}: shoal sync vs shoal async", ("shoal-sync", m), ("shoal-async", m),
         ("shoal sync", "shoal async"))
        for m in plain]
    return acked, unacked, cost


def acked(ctx: Ctx) -> list[Group]:
    p = ctx.params
    standin = ctx.shoal_style == "redis"
    configs = ["redis", "shoal-async"] if standin else ["shoal-sync", "shoal-async", "redis"]
    common = (f"One primary + one replica per server, long-lived; {p.rb_clients} clients, 64 B values, "
              f"{p.rb_keyspace:,} random keys. shoal sync: `write-strategy sync`, `min-replicas-ack 1`, "
              "`ack-timeout-ms` default (a late ack turns the reply into an error, which fails the run). "
              f"ackclient: `bench/benchlib/ackclient.py`, {p.repl_client_procs} processes; per connection a closed "
              "loop of batches of P writes (P1: one write per round trip; P16: 16 pipelined), each write SET "
              f"or SET followed by `WAIT 1 0` in the same batch; {p.repl_client_s:g} s measured after "
              f"{p.repl_client_warmup_s:g} s warm-up. CPU per request covers the whole tool run; client CPU is "
              f"the load tool's own (it shares the machine's {os.cpu_count()} cores with both servers).")
    if standin:
        common += " The SHOAL_BIN stand-in is a redis-server: shoal's sync strategy rows are left out."
    g_ack = Group("repl-acked", "Replication: acknowledged-write throughput (one replica)", common)
    g_unack = Group("repl-async", "Replication: unacknowledged writes with a replica attached",
                    "Same servers as above; plain SET, replies do not wait for the replica.")
    g_cost = Group("repl-synccost", "Replication: shoal sync vs shoal async (cells: sync / async)",
                   "Same shoal pair, `write-strategy` switched with CONFIG SET between runs; "
                   "the ratio is sync ÷ async.")
    acked_rows, unacked_rows, cost_rows = ack_rows(standin)
    results: dict[tuple, dict[int, dict | str]] = {}
    pairs = AckPairs(ctx)
    try:
        n_for = {}
        for m in MEASUREMENTS:
            if m[0] == "rb":
                n_for[m[1]] = p.rb_requests or ack_probe(ctx, pairs, m[1])
        for r in range(p.rounds):
            for m in MEASUREMENTS:
                log(f"[replication] {meas_name(m)}" + (f" -n {n_for[m[1]]}" if m[0] == "rb" else "") +
                    f" round {r + 1}/{p.rounds}")
                for config in order(configs, r):
                    try:
                        values = ack_measure(ctx, pairs, config, m, n_for, r)
                    except RUN_ERRORS as e:
                        results.setdefault((config, m), {})[r] = str(e)
                        log(f"    {config}: FAILED: {e}")
                        continue
                    results.setdefault((config, m), {})[r] = values
                    log(f"    {config}: {values['rps']:,.0f} req/s, p50 {values['p50']:.3f} ms, "
                        f"p99 {values['p99']:.3f} ms; CPU µs/req primary {values['primary_us']:.2f}, "
                        f"replica {values['replica_us']:.2f}, client {values['client_us']:.2f}")
    finally:
        pairs.close()
    for group, specs_ in ((g_ack, acked_rows), (g_unack, unacked_rows), (g_cost, cost_rows)):
        for label, a, b, sides in specs_:
            row = Row(group.key, label, ACK_METRICS, sides=sides)
            for side, key in zip(sides, (a, b)):
                for r in range(p.rounds):
                    got = results.get(key, {}).get(r)
                    if isinstance(got, dict):
                        row.add(side, r, got)
                    elif isinstance(got, str):
                        row.fail(side, r, f"{key[0]} {meas_name(key[1])}: {got}")
            group.rows.append(row)
    return [g_ack, g_unack, g_cost]


def ack_probe(ctx: Ctx, pairs: AckPairs, pipeline: int) -> int:
    """A redis-benchmark -n that takes redis-server (with its replica) about `rb_seconds`."""
    fallback = 100_000 * pipeline
    try:
        primary, replica = pairs.get("redis")
        values = rb_once(ctx, primary, pipeline, 10_000 * pipeline)
        wait_caught_up(primary, replica)
    except RUN_ERRORS as e:
        log(f"  probe on redis failed ({e}); using -n {fallback}")
        return fallback
    return round_count(values["rps"] * ctx.params.rb_seconds)
