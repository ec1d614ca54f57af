#!/usr/bin/env bash
# What the dashboard costs under load: scenario A of the load generator (1 channel, 1000
# subscribers, 20 publishes in flight, one event per frame) against the release broker,
# three ways, one fresh broker each:
#   off    [dashboard] enabled = false: no sampler, no route;
#   idle   enabled, no page open: the sampler alone;
#   PAGES  enabled, PAGES pages open (curl reading /dashboard/stream with an admin key).
# Prints the load generator's report of each (delivered/s, latency, CPU, RSS) and the
# samples the pages received. The three alternate twice (ORDER), so that drift over the run
# (the machine warming, other work) does not land on one of them. Loopback only; every
# process is stopped at the end.
#
#   benches/dashboard-cost.sh                # off, idle, pages, twice; 3 rounds each, 4 pages
#   ROUNDS=1 PAGES=16 ORDER="pages off" benches/dashboard-cost.sh
set -euo pipefail
ROUNDS=${ROUNDS:-3}
PAGES=${PAGES:-4}
cd "$(dirname "$0")/.."

. benches/prepare.sh

run() { # run NAME ENABLED PAGES
  local name=$1 enabled=$2 pages=$3
  # The load generator's own broker configuration (benches/loadgen/target.rs), plus an
  # admin key and the dashboard switch.
  cat >"$work/$name.toml" <<TOML
[server]
bind = "127.0.0.1:0"
[[keys]]
name = "load"
secret = "load-key"
roles = ["subscribe", "publish"]
max_connections = 1010
[[keys]]
name = "ops"
secret = "dashboard-cost-admin"
roles = ["admin"]
[limits]
publish_events_per_second = 1000000000
[channels]
allow_plain = true
max_plain = 1
[demo]
enabled = false
[ledger]
enabled = false
[dashboard]
enabled = $enabled
TOML
  RUST_LOG=warn target/release/rustorium-broker --config "$work/$name.toml" >"$work/$name.out" 2>&1 &
  local pid=$!
  pids+=("$pid")
  local addr=""
  for _ in $(seq 100); do
    addr=$(sed -n 's/^rustorium-broker listening on //p' "$work/$name.out")
    [ -n "$addr" ] && break
    sleep 0.1
  done
  [ -n "$addr" ] || { echo "the broker did not start" >&2; cat "$work/$name.out" >&2; exit 1; }
  local readers=()
  for i in $(seq "$pages"); do
    curl -sN --max-time 600 -H 'Authorization: Bearer dashboard-cost-admin' \
      "http://$addr/dashboard/stream" >"$work/$name.page$i" 2>/dev/null &
    readers+=("$!")
    pids+=("$!")
  done
  echo "== dashboard $name (enabled=$enabled, pages open: $pages)"
  "$LOAD" --scenario A --target "url=$addr@$pid" --rounds "$ROUNDS"
  for r in "${readers[@]}"; do kill "$r" 2>/dev/null || true; done
  if [ "$pages" -gt 0 ]; then
    echo "   samples received by page 1: $(grep -c '^event: sample' "$work/$name.page1" || true)"
  fi
  kill "$pid"
  wait "$pid" 2>/dev/null || true
}

for name in ${ORDER:-off idle pages off idle pages}; do
  case $name in
    off) run off false 0 ;;
    idle) run idle true 0 ;;
    pages) run pages true "$PAGES" ;;
    *) echo "ORDER takes off, idle and pages" >&2; exit 2 ;;
  esac
done
