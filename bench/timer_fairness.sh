#!/usr/bin/env bash
# What a strategy that keeps its worker busy in timer callbacks does to a
# neighbour on the same worker: one worker, a canary that measures each
# trade's wait (Date.now() - evt.ts) and logs its median and maximum every
# second, and beside it, from the fourth second, a hog with fifty
# setInterval(spin 40 ms, 0) (each callback within its budget, so it is
# never stopped). Prints the canary's seconds as deliveries/median/max ms.
#
#   bench/timer_fairness.sh [BUILD_DIR] [PORT]      (needs curl, jq, python3)
set -euo pipefail

BUILD=${1:-build/release}
PORT=${2:-18950}
BIN=$BUILD/stratd
[ -x "$BIN" ] || { echo "timer_fairness.sh: no $BIN (make bench builds it)" >&2; exit 2; }
WORK=$(mktemp -d)
trap 'kill "$SERVER" 2>/dev/null || true; rm -rf "$WORK"' EXIT
mkdir -p "$WORK/state" "$WORK/strategies"
cat >"$WORK/config.yaml" <<YAML
workers: 1
providers:
  - name: sim
    adapter: simulated
    config: {symbols: [BTC-USDT], tickRate: 100, seed: 7}
YAML
"$BIN" serve --config "$WORK/config.yaml" --listen "127.0.0.1:$PORT" --state "$WORK/state" \
  --strategies "$WORK/strategies" >"$WORK/log" 2>&1 &
SERVER=$!
for _ in $(seq 50); do curl -sf "127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done

CANARY="module.exports = { metadata: { name: 'canary', displayName: 'Canary', events: ['Trade'] },
  create(env) { let wait = [], since = Date.now();
    return { onTrade(ctx, evt) { wait.push(Date.now() - evt.ts);
      if (Date.now() - since < 1000) return;
      wait.sort((a, b) => a - b);
      env.helpers.log('wait', {n: wait.length, p50: wait[wait.length >> 1], max: wait[wait.length - 1]});
      wait = []; since = Date.now(); } }; } };"
HOG="module.exports = { metadata: { name: 'hog', displayName: 'Hog', events: ['Trade'] },
  create() { const spin = (ms) => { const t = Date.now(); while (Date.now() - t < ms) {} };
    for (let i = 0; i < 50; i++) setInterval(() => spin(40), 0);
    return { onTrade() {} }; } };"
for src in "$CANARY" "$HOG"; do
  jq -n --arg s "$src" '{source: $s}' | curl -sf -XPOST "127.0.0.1:$PORT/strategies/modules" -d @- >/dev/null
done
for id in canary hog; do
  curl -sf -XPOST "127.0.0.1:$PORT/strategy/instances" \
    -d "{\"id\": \"$id\", \"strategy\": {\"selector\": \"$id\"}, \"scope\": {\"sim\": {\"symbols\": [\"BTC-USDT\"]}}}" >/dev/null
done
curl -sf -XPOST "127.0.0.1:$PORT/strategy/instances/canary/start" >/dev/null
sleep 3
curl -sf -XPOST "127.0.0.1:$PORT/strategy/instances/hog/start" >/dev/null
sleep 12
kill "$SERVER"
wait "$SERVER" 2>/dev/null || true
python3 - "$WORK/log" <<'PY'
import json, sys
seconds = []
for line in open(sys.argv[1]):
    try:
        entry = json.loads(line)
    except ValueError:
        continue
    if entry.get('instance') == 'canary' and str(entry.get('msg', '')).startswith('wait '):
        v = json.loads(entry['msg'][5:])
        seconds.append('%d/%d/%d' % (v['n'], v['p50'], v['max']))
print('canary per second (deliveries/median ms/max ms), the hog from the fourth:')
print(' '.join(seconds))
PY
