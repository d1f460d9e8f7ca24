"""Bloom filter figures against a running shoal (python3 stdlib only):

    python3 bench/bloom_figures.py PORT

False-positive rates of BF.RESERVE filters filled to capacity (100,000 probes of items never
added), BF.INFO Size against MEMORY USAGE, a scalable filter filled to 10x its capacity, and the
replication stream's bytes per BF.ADD (attach a replica first: a node without one records no
stream, and the figure is then 0).
"""
import socket, sys
def conn(port):
    s = socket.create_connection(("127.0.0.1", port)); return s, s.makefile("rb")
def send(s, *args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    s.sendall(out)
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
port = int(sys.argv[1])
s, f = conn(port)
for err in (0.01, 0.001):
    for n in (10_000, 100_000):
        key = "fp:%s:%d" % (err, n)
        send(s, "BF.RESERVE", key, err, n); read(f)
        for lo in range(0, n, 10_000):
            send(s, "BF.MADD", key, *["in:%d" % i for i in range(lo, lo + 10_000)]); read(f)
        probes = 100_000; fp = 0
        for lo in range(0, probes, 10_000):
            send(s, "BF.MEXISTS", key, *["out:%d" % i for i in range(lo, lo + 10_000)]); fp += sum(read(f))
        send(s, "BF.INFO", key); info = read(f)
        send(s, "MEMORY", "USAGE", key); mem = read(f)
        print("error %-6s capacity %-7d items %-7d fp %d/%d = %.4f%%  BF.INFO Size %d  MEMORY USAGE %d" % (err, n, n, fp, probes, 100.0*fp/probes, info[3], mem))
# scaling: 10x the capacity
key = "fp:scale"
send(s, "BF.RESERVE", key, 0.01, 10_000); read(f)
for lo in range(0, 100_000, 10_000):
    send(s, "BF.MADD", key, *["in:%d" % i for i in range(lo, lo + 10_000)]); read(f)
fp = 0
for lo in range(0, 100_000, 10_000):
    send(s, "BF.MEXISTS", key, *["out:%d" % i for i in range(lo, lo + 10_000)]); fp += sum(read(f))
send(s, "BF.INFO", key, "filters"); nf = read(f)[0]
print("scaling: capacity 10000 at 0.01 filled with 100000 items -> %d sub-filters, fp %.4f%%" % (nf, 100.0*fp/100_000))
# replication bytes per BF.ADD on a 1.2 MB filter
def offset():
    send(s, "INFO", "replication"); t = read(f).decode()
    return int([l for l in t.split("\r\n") if l.startswith("master_repl_offset:")][0].split(":")[1])
send(s, "BF.RESERVE", "big", 0.001, 1_000_000); read(f)
a = offset()
for i in range(1000):
    send(s, "BF.ADD", "big", "x%d" % i); read(f)
b = offset()
send(s, "BF.INFO", "big", "size"); size = read(f)[0]
print("replication: 1000 BF.ADD on a %d-byte filter streamed %d bytes (%.1f per add)" % (size, b - a, (b - a) / 1000))
