#!/usr/bin/env bash
# What one strategy that orders in a loop does to the others: four canary
# instances of a strategy that does nothing count their deliveries for 10 s,
# then a flooder (4,000 dry-run market orders a trade, each in try/catch)
# starts beside them and they count again, with the state directory's growth
# meanwhile. Run once with the order rate limit off and once at a limit
# (0 and the gateway's default 1000 when none is given). Without the limit the
# flooder may be stopped by its CPU budget part of the way: 4,000 orders come
# close to the 50 ms a callback is allowed.
#
#   bench/flood.sh [BUILD_DIR] [LIMIT...]      (needs curl and jq)
set -euo pipefail

BUILD=${1:-build/release}
shift || true
LIMITS=("$@")
[ ${#LIMITS[@]} -gt 0 ] || LIMITS=(0 1000)
BIN=$BUILD/stratd
[ -x "$BIN" ] || { echo "flood.sh: no $BIN (make bench builds it)" >&2; exit 2; }

CANARY="module.exports = { metadata: { name: 'canary', displayName: 'Canary', tag: 'v1',
  events: ['Trade'], config: [{ name: 'dry_run', type: 'bool', default: true }] },
  create() { return { onTrade() {} }; } };"
FLOODER="module.exports = { metadata: { name: 'flood', displayName: 'Flood', tag: 'v1',
  events: ['Trade'], config: [{ name: 'dry_run', type: 'bool', default: true }] },
  create(env) { return { onTrade() { for (let i = 0; i < 4000; i++) {
    try { env.runtime.submitMarketOrder('sim', i % 2 ? 'buy' : 'sell', 0.0001); } catch (e) {} } } }; } };"

call() { curl -sf "$@"; }

# Sum of the canaries' delivered events.
delivered() {
  local sum=0 n
  for c in c1 c2 c3 c4; do
    n=$(call "$URL/strategy/instances/$c" | jq '.counters.eventsDelivered')
    sum=$((sum + n))
  done
  echo "$sum"
}

upload() { jq -Rn --arg s "$1" '{source: $s}' | call -XPOST "$URL/strategies/modules" -d @- >/dev/null; }

start_instance() {
  call -XPOST "$URL/strategy/instances" -d "{\"id\": \"$1\", \"strategy\": {\"selector\": \"$2\"},
    \"scope\": {\"sim\": {\"symbols\": $3}}}" >/dev/null
  call -XPOST "$URL/strategy/instances/$1/start" >/dev/null
}

one_run() {
  local limit=$1 dir pid before after kib0 kib1
  dir=$(mktemp -d /tmp/stratd-flood-XXXXXX)
  cat >"$dir/config.yaml" <<YAML
listen: 127.0.0.1:0
strategies: $dir/strategies
state: $dir/var
workers: 2
log_level: warn
runtime:
  max_orders_per_second: $limit
providers:
  - name: sim
    adapter: simulated
    config:
      symbols: [BTC-USDT, ETH-USDT]
      tickRate: 20
YAML
  "$BIN" serve --config "$dir/config.yaml" >"$dir/out" 2>"$dir/log" &
  pid=$!
  URL=
  for _ in $(seq 300); do
    URL=$(sed -n 's/^listening on \(http:[^ ]*\).*/\1/p' "$dir/out" 2>/dev/null | head -1)
    [ -n "$URL" ] && break
    sleep 0.1
  done
  [ -n "$URL" ] || { echo "flood.sh: the gateway did not start:" >&2; cat "$dir/log" >&2; exit 1; }
  upload "$CANARY"
  upload "$FLOODER"
  for c in c1 c2 c3 c4; do start_instance "$c" canary:v1 '["BTC-USDT", "ETH-USDT"]'; done
  sleep 2
  before=$(delivered); sleep 10; after=$(delivered)
  local quiet=$((after - before))
  start_instance fl flood:v1 '["BTC-USDT"]'
  sleep 2
  before=$(delivered); kib0=$(du -sk "$dir/var" | cut -f1)
  sleep 10
  after=$(delivered); kib1=$(du -sk "$dir/var" | cut -f1)
  printf '%-28s %12s %14s %18s %s\n' "max_orders_per_second=$limit" "$quiet" \
    "$((after - before))" "$((kib1 - kib0)) KiB" \
    "$(call "$URL/strategy/instances/fl" | jq -c '{running, stopReason}')"
  kill "$pid"
  wait "$pid" || true
  rm -rf "$dir"
}

printf '%-28s %12s %14s %18s %s\n' "limit" "quiet 10 s" "flooded 10 s" "state growth" "flooder"
for limit in "${LIMITS[@]}"; do one_run "$limit"; done
