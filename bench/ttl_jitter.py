"""Avalanche figure: how `ttl-jitter-percent` spreads the deadlines of keys written together
(python3 stdlib only), against a running shoal:

    python3 bench/ttl_jitter.py PORT [KEYS] [TTL_S] [JITTER_PERCENT]

Writes KEYS (default 100,000) keys with `SET k v EX TTL_S` (default 3600) in pipelined batches of
1,000, once with jitter off and once with JITTER_PERCENT (default 10), reads every deadline back
with PEXPIRETIME and prints the most deadlines falling in one second. Under a steady read load
every key misses (and calls the loader) once, in the second its deadline passes, so the peak
deadlines per second is the peak loader calls per second of the avalanche. The reduction is
about (jitter window in seconds) / (seconds the burst of writes took): a window of 10 % of
3600 s is 360 s.
"""
import socket, sys, time
from collections import Counter

def conn(port):
    s = socket.create_connection(("127.0.0.1", port)); return s, s.makefile("rb")

def enc(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out

def read(f):
    line = f.readline()
    t, rest = line[:1], line[1:-2]
    if t in b"+-": return rest.decode()
    if t == b":": return int(rest)
    if t == b"$":
        n = int(rest)
        if n < 0: return None
        d = f.read(n + 2); return d[:-2]
    if t == b"*": return [read(f) for _ in range(int(rest))]
    raise Exception(line)

def run(s, f, keys, ttl, jitter):
    s.sendall(enc("CONFIG", "SET", "ttl-jitter-percent", jitter)); read(f)
    s.sendall(enc("FLUSHALL")); read(f)
    start = time.time()
    for lo in range(0, keys, 1000):
        s.sendall(b"".join(enc("SET", "k%d" % i, "v", "EX", ttl) for i in range(lo, lo + 1000)))
        for _ in range(1000): read(f)
    took = time.time() - start
    per_second = Counter()
    for lo in range(0, keys, 1000):
        s.sendall(b"".join(enc("PEXPIRETIME", "k%d" % i) for i in range(lo, lo + 1000)))
        for _ in range(1000): per_second[read(f) // 1000] += 1
    return took, max(per_second.values()), len(per_second)

port = int(sys.argv[1])
keys = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
ttl = int(sys.argv[3]) if len(sys.argv) > 3 else 3600
jitter = int(sys.argv[4]) if len(sys.argv) > 4 else 10
s, f = conn(port)
took0, peak0, secs0 = run(s, f, keys, ttl, 0)
took1, peak1, secs1 = run(s, f, keys, ttl, jitter)
s.sendall(enc("CONFIG", "SET", "ttl-jitter-percent", 0)); read(f)
print("%d keys, SET EX %d, writes took %.2f s / %.2f s" % (keys, ttl, took0, took1))
print("jitter 0%%:  peak %d expirations (loader calls) in one second, over %d seconds" % (peak0, secs0))
print("jitter %d%%: peak %d expirations (loader calls) in one second, over %d seconds" % (jitter, peak1, secs1))
print("peak reduction: %.1fx" % (peak0 / peak1))
