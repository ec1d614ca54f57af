#!/usr/bin/env bash
# Scenario E on a cluster (PROTOCOL.md section 11): TOTAL subscriber connections over NODES
# broker nodes on one redis-server, from GENS generator processes (a process may hold at
# most 20,000 open files, so neither one node nor one generator can hold them all). Each
# generator process (`--shard K`) subscribes its share to a channel of its own, spread over
# every node, and publishes one event per second, EVENTS times, on the first node; every
# event must reach every one of its subscribers. Prints each generator's report, then the
# nodes' RSS per connection and redis-server's CPU. Loopback only; every process is
# stopped at the end.
#
#   benches/cluster-e.sh                        # 100,000 connections, 6 nodes, 6 generators
#   TOTAL=12000 NODES=3 GENS=2 benches/cluster-e.sh   # a quick run
set -euo pipefail
TOTAL=${TOTAL:-100000}
NODES=${NODES:-6}
GENS=${GENS:-6}
EVENTS=${EVENTS:-10}
cd "$(dirname "$0")/.."

. benches/prepare.sh

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" >"$work/redis.log" 2>&1 &
redis_pid=$!
for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done

cat >"$work/node.toml" <<TOML
[server]
bind = "127.0.0.1:0"
workers = 1
[[keys]]
name = "load"
secret = "load-key"
roles = ["subscribe", "publish"]
max_connections = $((TOTAL + 100))
[limits]
publish_events_per_second = 1000000000
[channels]
allow_plain = true
[demo]
enabled = false
[ledger]
enabled = false
[engine]
kind = "redis"
redis_url = "redis://127.0.0.1:$port/"
TOML

addrs=()
for i in $(seq "$NODES"); do
  RUST_LOG=warn target/release/rustorium-broker --config "$work/node.toml" >"$work/node$i.log" 2>&1 &
  pids+=($!)
done
for i in $(seq "$NODES"); do
  for _ in $(seq 100); do
    a=$(sed -n 's/^rustorium-broker listening on //p' "$work/node$i.log")
    [ -n "$a" ] && break
    sleep 0.1
  done
  [ -n "$a" ] || { echo "node $i did not start" >&2; exit 1; }
  addrs+=("$a")
done
urls=$(IFS=,; echo "${addrs[*]}")
sleep 1

rss() { local t=0; for p in "${pids[@]}"; do t=$((t + $(awk "/^$1:/{print \$2}" /proc/$p/status))); done; echo $t; }
cpu() { awk '{print ($14 + $15) / 100}' "/proc/$1/stat"; }
rss_before=$(rss VmRSS)
redis_cpu0=$(cpu "$redis_pid")

per=$(( (TOTAL + GENS - 1) / GENS ))
gens=()
for k in $(seq "$GENS"); do
  "$LOAD" --scenario E --subscribers "$per" --events "$EVENTS" --target "urls=$urls" \
    --shard "$k" --sources 4 >"$work/gen$k.log" 2>&1 &
  gens+=($!)
done
# The nodes' memory once every generator is connected and before the last events.
peak=0
failed=0
for g in "${gens[@]}"; do
  while kill -0 "$g" 2>/dev/null; do
    now=$(rss VmRSS); [ "$now" -gt "$peak" ] && peak=$now
    sleep 1
  done
  wait "$g" || failed=1
done
redis_cpu1=$(cpu "$redis_pid")

for k in $(seq "$GENS"); do echo "== generator $k"; grep -E "scenario|subscribers|connect|events published|deliveries|delivered|latency|loss|dupl|order" "$work/gen$k.log" || cat "$work/gen$k.log"; done
echo "== cluster: $TOTAL connections over $NODES nodes, $GENS generator processes"
echo "nodes' RSS before: $rss_before KiB; highest sampled while connected: $peak KiB"
awk -v a="$rss_before" -v b="$peak" -v n="$TOTAL" 'BEGIN { printf "RSS per connection: %.1f KiB\n", (b - a) / n }'
awk -v a="$redis_cpu0" -v b="$redis_cpu1" 'BEGIN { printf "redis-server CPU over the run: %.2f s\n", b - a }'
exit "$failed"
