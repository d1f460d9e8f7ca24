"""What every case needs: parameters (full or smoke), tool paths, server specs, round order.

Interleaving: in round r the servers run in list order when r is even and in reverse order when r is
odd (A B, B A, A B, ...), so a machine that slows down or speeds up during the run penalises both
sides alike, and each shoal/redis ratio compares two runs made back to back.
"""

import json
import os
import sys
from dataclasses import dataclass, field

from .protocol import set_stream
from .report import Row
from .resp import ProtocolError, ReplyError
from .servers import Fleet, ServerError, ServerSpec, ToolError, run_tool

# Failures that mean "this run of this server produced no number", never "stop the harness".
RUN_ERRORS = (ServerError, ToolError, ReplyError, ProtocolError, OSError, ValueError, KeyError)


@dataclass
class Params:
    rounds: int = 5
    # Throughput (redis-benchmark).
    tests: list[str] = field(default_factory=lambda: ["set", "get", "incr", "mset", "lpush", "hset", "zadd"])
    rb_clients: int = 50
    rb_keyspace: int = 100_000
    rb_seconds: float = 2.0  # each run is sized from a probe to last about this long on redis
    rb_requests: int | None = None  # fixed request count instead (smoke)
    # Memory.
    mem_keys: int = 1_000_000
    # Hit ratio.
    hr_keys: int = 1_000_000
    hr_skews: tuple[float, ...] = (0.99, 0.8)
    hr_fraction: float = 0.10
    hr_warmup: int = 2_000_000
    hr_requests: int = 2_000_000
    hr_connections: int = 4
    hr_pipeline: int = 32
    hr_max_s: int = 600
    # A full cache (eviction on every new key).
    ev_maxmemory: int = 64 * 1024 * 1024
    ev_keyspace: int = 50_000_000
    ev_fill_batch: int = 500_000
    ev_mix_keys: int = 2_000_000
    ev_mix_skew: float = 0.99
    ev_mix_warmup: int = 500_000
    ev_mix_requests: int = 1_000_000
    ev_mix_connections: int = 8
    ev_mix_pipeline: int = 16
    # Closed-loop max and open-loop latency.
    ol_keys: int = 100_000
    ol_skew: float = 0.99
    ol_get_ratio: float = 0.9
    ol_connections: int = 8
    ol_max_s: float = 3.0
    ol_duration_s: float = 5.0
    ol_fractions: tuple[float, ...] = (0.25, 0.50, 0.75)
    # Replication (one primary, one replica).
    repl_sync_keys: int = 1_000_000
    repl_poll_s: float = 0.010
    repl_lag_seconds: float = 5.0  # the lag run's -n is sized for about this long on redis
    repl_lag_requests: int | None = None  # fixed count instead (smoke)
    repl_sample_s: float = 0.020
    repl_client_s: float = 3.0  # ackclient: measured seconds per run
    repl_client_warmup_s: float = 0.5
    repl_client_procs: int = 2

    @classmethod
    def smoke(cls) -> "Params":
        """Seconds, not minutes: enough traffic to prove every path works, no meaningful numbers."""
        # hr_keys stays at 100k: a memory limit much below ~2 MB measures fixed overheads, not eviction.
        return cls(rounds=1, rb_clients=10, rb_keyspace=1_000, rb_requests=2_000, mem_keys=20_000,
                   hr_keys=100_000, hr_skews=(0.99,), hr_warmup=50_000, hr_requests=50_000, hr_max_s=60,
                   ev_maxmemory=4 * 1024 * 1024, ev_keyspace=1_000_000, ev_fill_batch=50_000, ev_mix_keys=100_000,
                   ev_mix_warmup=20_000, ev_mix_requests=20_000,
                   ol_keys=1_000, ol_connections=2, ol_max_s=0.5, ol_duration_s=0.5,
                   repl_sync_keys=20_000, repl_lag_requests=5_000, repl_client_s=0.3, repl_client_warmup_s=0.05)


@dataclass
class Ctx:
    fleet: Fleet
    workdir: str
    params: Params
    shoal_bin: str
    shoal_style: str  # "shoal", or "redis" when SHOAL_BIN is a redis-server (harness testing)
    shoal_policy: str | None
    shoal_threads: int | None
    redis_bin: str
    redis_cli: str
    redis_benchmark: str
    loadgen: str

    def shoal_spec(self, maxmemory: int | None = None) -> ServerSpec:
        # The eviction policy is only passed when asked for: shoal's default policy is what is measured.
        return ServerSpec("shoal", self.shoal_bin, self.shoal_style, maxmemory,
                          self.shoal_policy if maxmemory is not None else None, self.shoal_threads)

    def redis_spec(self, maxmemory: int | None = None, policy: str | None = None, label: str = "redis") -> ServerSpec:
        return ServerSpec(label, self.redis_bin, "redis", maxmemory, policy)

    def stream(self, keys: int) -> str:
        return set_stream(os.path.join(self.workdir, f"set-{keys}.resp"), keys)

    def loadgen_run(self, args: list[str], timeout: float) -> dict:
        """Runs shoal-loadgen and returns its JSON line; a run it flags as untrustworthy is an error."""
        run = run_tool([self.loadgen, *args], timeout=timeout, check=False)
        lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
        if not lines:
            raise ToolError(f"shoal-loadgen {args[0]}: no result: {run.stderr.strip()[-400:]}")
        result = json.loads(lines[-1])
        if run.code != 0:
            raise ToolError(f"shoal-loadgen {args[0]}: {run.stderr.strip()[-400:]}")
        return result


def order(sides: list[str], round_no: int) -> list[str]:
    return list(sides) if round_no % 2 == 0 else list(reversed(sides))


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def attempt(row: Row, side: str, round_no: int, measure) -> dict | None:
    """Runs one measurement; a failure is recorded against that side and round, never raised."""
    try:
        values = measure()
    except RUN_ERRORS as e:
        row.fail(side, round_no, str(e))
        log(f"    {side}: FAILED: {e}")
        return None
    row.add(side, round_no, values)
    return values
