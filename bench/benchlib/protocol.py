"""Bulk loading: a RESP stream of `SET key:%012d <64 bytes>` fed to `redis-cli --pipe`.

The stream is written to a file once per key count and reused, so every server and round is loaded
from identical bytes and the generator's speed is not part of any measurement. Keys and values are
the ones shoal-loadgen uses (crates/loadgen/src/workload.rs), so preloaded keys are the keys it reads.
"""

import os
import re

from .servers import Server, ToolError, run_tool

VALUE_LEN = 64
_CHUNK = 10_000


def value_for(i: int) -> bytes:
    """The key's 12-digit id repeated to 64 bytes: distinct per key, so nothing can be shared."""
    return (b"%012d" % i * 6)[:VALUE_LEN]


def set_stream(path: str, keys: int) -> str:
    """Writes (once) the SET stream for ids 0..keys and returns its path."""
    if os.path.exists(path):
        return path
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        for start in range(0, keys, _CHUNK):
            f.write(b"".join(
                b"*3\r\n$3\r\nSET\r\n$16\r\nkey:%012d\r\n$64\r\n%s\r\n" % (i, value_for(i))
                for i in range(start, min(start + _CHUNK, keys))))
    os.replace(tmp, path)
    return path


_SUMMARY = re.compile(r"errors:\s*(\d+),\s*replies:\s*(\d+)")


def load(redis_cli: str, server: Server, stream_path: str, keys: int) -> float:
    """Pipes the stream into the server; returns seconds taken. Fails unless every SET got +OK."""
    # A server loads at least ~20k keys/s even on a slow machine; beyond that it is stuck.
    timeout = 60 + keys / 20_000
    run = run_tool([redis_cli, "-h", "127.0.0.1", "-p", str(server.port), "--pipe"], timeout=timeout,
                   stdin_path=stream_path, check=False)
    found = _SUMMARY.findall(run.stdout)
    if not found:
        raise ToolError(f"redis-cli --pipe into {server.label}: no summary: {(run.stdout + run.stderr)[-400:]}")
    errors, replies = map(int, found[-1])
    if errors or replies != keys:
        raise ToolError(f"redis-cli --pipe into {server.label}: {errors} errors, {replies} replies of {keys}"
                        f" {run.stdout.strip()[-300:]}")
    return run.seconds
