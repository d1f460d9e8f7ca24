#!/bin/bash
# Collection commands side by side (LPUSH LPOP SADD HSET ZADD LRANGE_100 at P1 and P16, A B B A) and
# used_memory per key for 100,000 hashes of 10 small fields. Needs a release build and redis-server.
# Usage: bench/collections.sh   (ports 7601/7602 on 127.0.0.1; temporary files under /tmp/b3)
S=$(cd "$(dirname "$0")/.." && pwd)/target/release/shoal
cd /tmp && rm -rf b3 && mkdir b3
$S serve --port 7601 > b3/shoal.log 2>&1 &
redis-server --port 7602 --save '' --appendonly no --dir /tmp/b3 --daemonize yes > /dev/null
sleep 0.7
run() { redis-benchmark -p $1 -t $2 -n $3 -c 50 -P $4 -r 100000 -d 64 -q 2>&1 | tr '\r' '\n' | grep "requests per second" | tail -1 | sed 's/.*: \([0-9.]*\) requests.*/\1/'; }
for P in 1 16; do
for t in lpush lpop sadd hset zadd lrange_100; do
  n=200000; [ $P = 16 ] && n=800000; [ $t = lrange_100 ] && n=$((n/4))
  s1=$(run 7601 $t $n $P); r1=$(run 7602 $t $n $P); r2=$(run 7602 $t $n $P); s2=$(run 7601 $t $n $P)
  echo "$t P$P shoal $s1 $s2 redis $r1 $r2" | awk '{s=($4+$5)/2; r=($7+$8)/2; printf "%-12s %-4s shoal %9.0f  redis %9.0f  ratio %.2f\n",$1,$2,s,r,s/r}'
done; done
# memory: 100,000 hashes of 10 small fields
python3 -c "
import sys
o=sys.stdout.buffer
for i in range(100000):
    k=b'hash:%06d'%i
    a=[b'HSET',k]
    for f in range(10): a+= [b'field%d'%f, b'v%04d'%f]
    o.write(b'*%d\r\n'%len(a)+b''.join(b'\$%d\r\n%s\r\n'%(len(x),x) for x in a))
" > b3/hashes.resp
for p in 7601 7602; do
  redis-cli -p $p flushall > /dev/null
  b=$(redis-cli -p $p info memory | grep '^used_memory:' | cut -d: -f2 | tr -d '\r')
  redis-cli -p $p --pipe < b3/hashes.resp > /dev/null
  a=$(redis-cli -p $p info memory | grep '^used_memory:' | cut -d: -f2 | tr -d '\r')
  echo "port $p: 100k hashes x 10 fields: $(( (a-b)/100000 )) bytes/key, encoding $(redis-cli -p $p object encoding hash:000001)"
done
redis-cli -p 7601 shutdown nosave > /dev/null; redis-cli -p 7602 shutdown nosave > /dev/null
