#!/usr/bin/env python3
"""bench/active-repair.py [SHOAL] [KEYS]: issue 13's repair figures for active-active groups.

Two members are joined; a third node (a member of a group of its own) writes KEYS string keys,
whose merge states are merged into member A alone (ACTIVESTATE there, ACTIVEMERGE here: never
streamed on), so B lacks them as if a stream had lost them. Then:
  1. anti-entropy: `active-anti-entropy-interval-ms` goes from 0 to its default (2000) on both,
     and we time until both members' SLOTDIGESTs are equal (default slots and keys per pass);
  2. read repair (a fresh pair, anti-entropy off, `read-repair yes`): B reads 1000 of the keys at
     once (MGET) and we time until B holds them all (bounded by read-repair-keys-per-second,
     default 1000).
Servers listen on free loopback ports in a temporary directory and are stopped on exit.
"""

import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib.resp import Client, parse_info  # noqa: E402

SHOAL = sys.argv[1] if len(sys.argv) > 1 else "target/release/shoal"
KEYS = int(sys.argv[2]) if len(sys.argv) > 2 else 20000
DEADLINE_S = 300
procs = []
tmp = tempfile.mkdtemp()


def start(*extra):
    d = tempfile.mkdtemp(dir=tmp)
    p = subprocess.Popen(
        [SHOAL, "serve", "--port", "0", "--bind", "127.0.0.1", "--loglevel", "warning",
         "--dir", d, *extra],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    procs.append(p)
    line = p.stdout.readline()
    port = int(re.search(r":(\d+)$", line.strip()).group(1))
    return Client("127.0.0.1", port, timeout=30), port


def pair(*settings):
    (a, pa), (b, pb) = start(*settings), start(*settings)
    a.command("CONFIG", "SET", "active-peers", f"127.0.0.1:{pb}")
    b.command("CONFIG", "SET", "active-peers", f"127.0.0.1:{pa}")
    for c in (a, b):
        until("peer link up", lambda c=c: "state=connected" in c.command("INFO", "active").decode())
    return a, b


def until(what, f):
    end = time.monotonic() + DEADLINE_S
    while not f():
        if time.monotonic() > end:
            sys.exit(f"bench/active-repair: timed out waiting for {what}")
        time.sleep(0.02)


def diverge(a):
    o, _ = start("--active-peers", "127.0.0.1:1")
    names = [f"key:{i}" for i in range(KEYS)]
    for i in range(0, KEYS, 500):
        chunk = names[i:i + 500]
        args = []
        for k in chunk:
            args += [k, "value-" + k]
        o.command("MSET", *args)
        states = o.command("ACTIVESTATE", "0", *chunk)
        for k, st in zip(chunk, states):
            a.command("ACTIVEMERGE", "0", k, st)
    return names


def digests(c):
    return c.command("SLOTDIGEST", "0", "16383")


def info(c, field):
    return int(parse_info(c.command("INFO", "active"))[field])


try:
    a, b = pair("--active-anti-entropy-interval-ms", "0")
    diverge(a)
    assert digests(a) != digests(b)
    t0 = time.monotonic()
    for c in (a, b):
        c.command("CONFIG", "SET", "active-anti-entropy-interval-ms", "2000")
    until("equal digests", lambda: digests(a) == digests(b))
    took = time.monotonic() - t0
    repaired = sum(info(c, "active_antientropy_keys_repaired") + info(c, "active_antientropy_keys_pushed")
                   for c in (a, b))
    print(f"anti-entropy: {KEYS} diverged keys equal on both members {took:.1f} s after it was "
          f"turned on (interval 2000 ms, 2048 slots and 10000 keys a pass); keys repaired: {repaired}")

    a, b = pair("--active-anti-entropy-interval-ms", "0", "--read-repair", "yes")
    names = diverge(a)[:1000]
    t0 = time.monotonic()
    b.command("MGET", *names)
    # ACTIVESTATE names no keys, so polling with it queues nothing.
    def held():
        return sum(st is not None for i in range(0, len(names), 500)
                   for st in b.command("ACTIVESTATE", "0", *names[i:i + 500]))
    until("read repair", lambda: held() == len(names))
    took = time.monotonic() - t0
    print(f"read repair: 1000 keys read at once on the stale member repaired in {took:.1f} s "
          f"(read-repair-keys-per-second 1000); held afterwards: {held()}; "
          f"dropped: {info(b, 'active_read_repair_dropped')}")
finally:
    for p in procs:
        p.kill()
        p.wait()
    subprocess.run(["rm", "-rf", tmp])
