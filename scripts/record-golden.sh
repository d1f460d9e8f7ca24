#!/usr/bin/env bash
# Records the reference replies for the golden tests (crates/shoal/tests/golden.rs): starts a
# throwaway redis-server on a free local port, runs every tests/golden/*.cmds file through it and
# rewrites the matching .resp files. The server and its directory are removed whatever happens.
#
# Usage: scripts/record-golden.sh            (REDIS_SERVER / REDIS_CLI override the binaries)
# Then:  cargo test -p shoal --test golden   (compares shoal with the recording; no redis needed)
set -euo pipefail

cd "$(dirname "$0")/.."
redis_server=${REDIS_SERVER:-redis-server}
redis_cli=${REDIS_CLI:-redis-cli}
command -v "$redis_server" >/dev/null || { echo "redis-server not found" >&2; exit 1; }
command -v "$redis_cli" >/dev/null || { echo "redis-cli not found" >&2; exit 1; }

dir=$(mktemp -d)
pid=""
cleanup() {
    if [[ -n "$pid" ]]; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -rf "$dir"
}
trap cleanup EXIT INT TERM

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A port nobody listens on; retry if another process takes it between the check and the bind.
for attempt in 1 2 3 4 5 6 7 8 9 10; do
    port=$((20000 + RANDOM % 40000))
    port_in_use "$port" && continue
    "$redis_server" --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" \
        --logfile "$dir/redis.log" &
    pid=$!
    for _ in $(seq 50); do
        "$redis_cli" -p "$port" ping >/dev/null 2>&1 && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if "$redis_cli" -p "$port" ping >/dev/null 2>&1; then
        break
    fi
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    pid=""
done
[[ -n "$pid" ]] || { echo "could not start redis-server" >&2; cat "$dir/redis.log" >&2 || true; exit 1; }

echo "recording against $("$redis_server" --version | cut -d' ' -f1-3) on port $port"
SHOAL_GOLDEN_RECORD="127.0.0.1:$port" cargo test -p shoal --test golden -- --test-threads 1 --nocapture
