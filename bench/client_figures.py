"""Cache-protection figures of shoal-client against a running shoal (python3 stdlib only):

    cargo build -p shoal-client --examples       # honours CARGO_TARGET_DIR
    python3 bench/client_figures.py PORT [ROUNDS]

Breakdown: 4 processes x 250 callers (1,000 in all) miss one hot key whose loader takes 50 ms,
ROUNDS times (default 5) per mode, the key deleted before each round (an expiry). Modes: plain
cache-aside, get_or_load without leases (coalescing per process), get_or_load with leases.
Prints loader calls per expiry and caller latency p50/p99 (ms) over all rounds.
Penetration: the `penetration` example (100,000 lookups of missing keys).
"""
import os, socket, subprocess, sys, time

port = int(sys.argv[1])
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
target = os.environ.get("CARGO_TARGET_DIR", os.path.join(os.path.dirname(__file__), "..", "target"))
ex = os.path.join(target, "debug", "examples")
addr = "127.0.0.1:%d" % port

def delete(key):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"*2\r\n$3\r\nDEL\r\n$%d\r\n%s\r\n" % (len(key), key))
    s.recv(64); s.close()

def pct(xs, p):
    xs = sorted(xs); return xs[min(len(xs) - 1, int(len(xs) * p))]

for mode in ("plain", "local", "leases"):
    loads, lat = [], []
    for _ in range(rounds):
        delete(b"hot")
        start = int(time.time() * 1000) + 1500
        procs = [subprocess.Popen([os.path.join(ex, "breakdown"), addr, mode, "250", str(start)],
                                  stdout=subprocess.PIPE, text=True) for _ in range(4)]
        n = 0
        for p in procs:
            out, _ = p.communicate(timeout=120)
            f = out.split()
            n += int(f[1]); lat += [int(x) / 1000.0 for x in f[3].split(",")]
        loads.append(n)
    print("breakdown %-6s: loader calls per expiry %s (mean %.1f); latency p50 %.1f ms, p99 %.1f ms"
          % (mode, loads, sum(loads) / len(loads), pct(lat, 0.5), pct(lat, 0.99)))

for distinct in (100_000, 1_000):
    out = subprocess.run([os.path.join(ex, "penetration"), addr, "100000", str(distinct)],
                         capture_output=True, text=True, timeout=600).stdout
    print(out.strip())
