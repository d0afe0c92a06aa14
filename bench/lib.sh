# shellcheck shell=bash
# Helpers for bench/run.sh (sourced, not run): servers, observations taken
# from outside the process (/proc, GET /metrics), statistics and the result
# rows. Expects: $STRATD (the binary), $BENCH_BIN (the drivers), $WORK (a
# scratch directory on the real disk), $SHM (one on tmpfs), $RESULTS (the
# rows file, one JSON object a line), $RAW (raw outputs).

CLK_TCK=$(getconf CLK_TCK)

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ------------------------------------------------------------- servers

# server_start NAME DIR [EXTRA_YAML]: starts `stratd serve` with strategies
# and state under DIR and one simulated provider `bench` (BTC-USDT, seed 1,
# unpaced, not started). Sets SERVER_PID and PORT.
server_start() {
  local name=$1 dir=$2 extra=${3:-}
  mkdir -p "$dir"
  cat >"$dir/config.yaml" <<YAML
listen: 127.0.0.1:0
strategies: $dir/strategies
state: $dir/state
environment: bench
log_level: warn
providers:
  - name: bench
    adapter: simulated
    enabled: false
    config:
      symbols: [BTC-USDT]
      seed: 1
      tickRate: 0
$extra
YAML
  "$STRATD" serve --config "$dir/config.yaml" >"$dir/stdout" 2>"$dir/stderr" &
  SERVER_PID=$!
  local _
  for _ in $(seq 1 3000); do
    if grep -q '^listening on' "$dir/stdout" 2>/dev/null; then
      PORT=$(sed -n 's/^listening on https\{0,1\}:\/\/[^:]*:\([0-9]*\).*/\1/p' "$dir/stdout")
      log "$name: stratd serve pid $SERVER_PID on port $PORT"
      return 0
    fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      cat "$dir/stderr" >&2
      echo "bench: stratd serve ($name) exited during start-up" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "bench: stratd serve ($name) did not start in 300 s" >&2
  return 1
}

server_stop() {
  if [ -n "${SERVER_PID:-}" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -CONT "$SERVER_PID" 2>/dev/null || true
    kill -TERM "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  SERVER_PID=
}

api() { # api METHOD PATH [BODY]: prints the body; fails on a non-2xx status
  local method=$1 path=$2 body=${3:-}
  if [ -n "$body" ]; then
    curl -sS --fail-with-body -X "$method" -H 'Content-Type: application/json' \
      --data-binary "$body" "http://127.0.0.1:$PORT$path"
  else
    curl -sS --fail-with-body -X "$method" "http://127.0.0.1:$PORT$path"
  fi
}

upload() { # upload FILE.js: registers a module revision
  jq -n --rawfile s "$1" '{source: $s}' | api POST /strategies/modules @- >/dev/null
}

provider() { api POST "/providers/bench/$1" >/dev/null; } # provider start|stop

# Paced provider: provider_rate TICKS_PER_SECOND (restarts it if it ran).
provider_rate() {
  api PUT /providers/bench "$(jq -nc --argjson r "$1" '{name: "bench", adapter: {identifier:
    "simulated", config: {symbols: ["BTC-USDT"], seed: 1, tickRate: $r}}, enabled: true}')" >/dev/null
}

# ---------------------------------------------------------- observations

cpu_seconds() { # utime + stime of every thread of the process, in seconds
  awk -v t="$CLK_TCK" '{ sub(/^.*\) /, ""); printf "%.4f\n", ($12 + $13) / t }' "/proc/$1/stat"
}

# CPU time the hypervisor gave other guests instead of this machine (steal,
# all CPUs), in milliseconds since boot.
steal_ms() { awk -v t="$CLK_TCK" '/^cpu / { printf "%.0f\n", $9 * 1000 / t }' /proc/stat; }

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# Cache flushes the disk holding DIR has completed and the milliseconds
# spent on them since boot ("count ms"; kernels since 5.5 count them), for
# the whole disk when DIR is on a partition; nothing when unknown. A
# durable commit ends in one, and on a virtual disk their time follows the
# host's other guests.
disk_flushes() {
  local dev name
  dev=$(df --output=source "$1" 2>/dev/null | tail -n 1)
  name=$(basename "$(readlink -f "$dev" 2>/dev/null)")
  [ -e "/sys/class/block/$name" ] || return 0
  if [ -e "/sys/class/block/$name/partition" ]; then
    name=$(basename "$(dirname "$(readlink -f "/sys/class/block/$name")")")
  fi
  awk -v n="$name" '$3 == n && NF >= 20 { print $19, $20 }' /proc/diskstats
}

delivered() { # stratd_events_delivered_total, all event kinds
  curl -sS "http://127.0.0.1:$PORT/metrics" |
    awk '/^stratd_events_delivered_total/ { s += $2 } END { printf "%.0f\n", s }'
}

# The gateway's own account of its database syncs ("count seconds"), from
# stratd_store_sync_seconds{file="database"}.
db_syncs() {
  curl -sS "http://127.0.0.1:$PORT/metrics" |
    awk '/^stratd_store_sync_seconds_count\{file="database"\}/ { c = $2 }
         /^stratd_store_sync_seconds_sum\{file="database"\}/ { s = $2 }
         END { print c + 0, s + 0 }'
}

now() { date +%s.%N; }

# measure_window SECONDS: prints "deliveries/cpu-second deliveries/second"
# for the server over one window.
measure_window() {
  local c0 d0 t0 c1 d1 t1
  c0=$(cpu_seconds "$SERVER_PID"); d0=$(delivered); t0=$(now)
  sleep "$1"
  c1=$(cpu_seconds "$SERVER_PID"); d1=$(delivered); t1=$(now)
  awk -v c0="$c0" -v c1="$c1" -v d0="$d0" -v d1="$d1" -v t0="$t0" -v t1="$t1" \
    'BEGIN { printf "%.0f %.0f\n", (d1 - d0) / (c1 - c0), (d1 - d0) / (t1 - t0) }'
}

# ------------------------------------------------------------ statistics

median() { # median of the numbers on stdin (one a line)
  sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "null"; else if (NR % 2) print v[(NR + 1) / 2];
                   else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

div() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0 || a == "null" || b == "null") print "null"; else print a / b }'; }

# -------------------------------------------------------------- results

# row FIGURE VALUE UNIT BASELINE BASELINE_NAME RATIO TARGET CHECK
#   CHECK is "value<=X", "value>=X", "ratio<=X", "ratio>=X" or "" (no target).
#   Missing numbers are "null".
row() {
  local figure=$1 value=$2 unit=$3 baseline=$4 bname=$5 ratio=$6 target=$7 check=$8
  local pass=null
  if [ -n "$check" ] && [ "$value" != null ]; then
    local subject=${check%%[<>]*} op limit
    op=$(printf '%s' "$check" | sed 's/^[a-z]*\([<>]=\).*/\1/')
    limit=${check#*=}
    local x=$value
    [ "$subject" = ratio ] && x=$ratio
    if [ "$x" = null ]; then
      pass=null
    else
      pass=$(awk -v x="$x" -v l="$limit" -v op="$op" \
        'BEGIN { r = (op == "<=") ? (x <= l) : (x >= l); print r ? "true" : "false" }')
    fi
  fi
  jq -nc --arg f "$figure" --argjson v "$value" --arg u "$unit" --argjson b "$baseline" \
    --arg bn "$bname" --argjson r "$ratio" --arg t "$target" --argjson p "$pass" \
    '{figure: $f, value: $v, unit: $u, baseline: $b, baseline_of: $bn, ratio: $r,
      target: $t, pass: $p}' >>"$RESULTS"
}

# Prints the rows as one aligned table.
print_table() {
  jq -r '[.figure, .value, .unit, .baseline, .baseline_of, .ratio, .target, .pass] | @tsv' "$1" |
    awk -F'\t' '
      function num(x) {
        if (x == "" || x == "null") return "-"
        if (x + 0 >= 1000 || x + 0 <= -1000) return sprintf("%.0f", x)
        if (x + 0 >= 10 || x + 0 <= -10) return sprintf("%.1f", x)
        if (x + 0 >= 0.1 || x + 0 <= -0.1) return sprintf("%.3f", x)
        return sprintf("%.4f", x)
      }
      BEGIN {
        printf "%-44s %12s %-12s %12s %-26s %9s %-14s %s\n", "figure", "value", "unit",
          "baseline", "baseline is", "ratio", "target", "pass"
      }
      {
        ratio = ($6 == "" || $6 == "null") ? "-" : sprintf("%.3gx", $6)
        pass = ($8 == "true") ? "yes" : ($8 == "false") ? "NO" : "-"
        printf "%-44s %12s %-12s %12s %-26s %9s %-14s %s\n", $1, num($2), $3, num($4),
          ($5 == "" ? "-" : $5), ratio, ($7 == "" ? "-" : $7), pass
      }'
}
