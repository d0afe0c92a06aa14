#!/usr/bin/env bash
# Runs every benchmark of the Performance figures against a release build
# and prints one table: figure, value, unit, baseline, ratio, target, pass.
# The same rows go to build/bench/results.json; raw outputs of every run to
# build/bench/raw/. docs/PERFORMANCE.md explains each figure.
#
# usage: bench/run.sh BUILD_DIR            (make bench: bench/run.sh build/release)
#
# Environment:
#   BENCH_ONLY      sections to run, of: dispatch peers latency density control tls compute
#                   (default: all, in that order)
#   BENCH_WINDOWS   measurement windows per figure; the median is reported (default 5)
#   BENCH_SECONDS   seconds per window (default 3)
#   BENCH_QUICK=1   a smaller, faster run for checking the harness (fleets of 1,000,
#                   a catalogue of 100 x 10, 3 windows of 1 s); not for figures
#   BENCH_PROFILE=1 also record a perf profile of the server per figure
#                   (build/bench/profiles/*.txt, top functions by self time)
#
# The machine is shared and noisy: gateway figures are events per CPU second
# of the server process (utime + stime from /proc), each comparison is
# measured in the same run, and every figure is the median of several
# windows or runs.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
build=$(cd "${1:?usage: bench/run.sh BUILD_DIR}" && pwd)

STRATD=$build/stratd
BENCH_BIN=$build/bench
OUT=$root/build/bench
RAW=$OUT/raw
PROF=$OUT/profiles
WORK=$OUT/work              # real disk: figures that include durable writes
SHM=/dev/shm/stratd-bench.$$ # tmpfs: set-up state of figures that never touch the disk
RESULTS=$RAW/rows.jsonl
EVENTS=$OUT/events.bin
STRATEGIES=$here/strategies

WINDOWS=${BENCH_WINDOWS:-5}
SECONDS_PER_WINDOW=${BENCH_SECONDS:-3}
WARMUP=2
FLEET=10000        # the large fleets (dispatch, density)
CAT_STRATEGIES=1000
CAT_REVISIONS=10
CP_INSTANCES=5000
MOVERS=1000
MOVER_TICK_RATE=100 # ticks per second while the targeted refresh runs
WORKER_PEERS=100    # the largest worker_threads peer (one thread and isolate each)
UPLOADS=100
TLS_INSTANCES=1000  # the instances the TLS section reads
if [ "${BENCH_QUICK:-0}" = 1 ]; then
  WINDOWS=${BENCH_WINDOWS:-3}
  SECONDS_PER_WINDOW=${BENCH_SECONDS:-1}
  WARMUP=1
  FLEET=1000
  CAT_STRATEGIES=100
  CP_INSTANCES=500
  MOVERS=100
  WORKER_PEERS=20
  UPLOADS=10
fi
SECTIONS=${BENCH_ONLY:-dispatch peers latency density control tls compute}

export STRATD BENCH_BIN WORK SHM RESULTS RAW
# shellcheck source=bench/lib.sh
. "$here/lib.sh"

for tool in curl jq node wrk awk openssl; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is required" >&2; exit 1; }
done
if [ ! -x "$STRATD" ] || [ ! -x "$BENCH_BIN/bench_http" ]; then
  echo "bench: build $build with -DSTRATD_BENCH=ON first (make bench)" >&2
  exit 1
fi

rm -rf "$RAW" "$PROF" "$WORK"
mkdir -p "$RAW" "$PROF" "$WORK" "$SHM"
: >"$RESULTS"
cleanup() {
  server_stop
  rm -rf "$SHM"
}
trap cleanup EXIT

has() { case " $SECTIONS " in *" $1 "*) return 0 ;; esac; return 1; }

# profile NAME SECONDS: flat perf profile of the running server.
profile() {
  [ "${BENCH_PROFILE:-0}" = 1 ] || return 0
  perf record -F 999 -p "$SERVER_PID" -o "$PROF/$1.data" -- sleep "$2" >/dev/null 2>&1 || return 0
  perf report -i "$PROF/$1.data" --no-children --percent-limit 0.5 --stdio \
    --sort dso,symbol >"$PROF/$1.txt" 2>/dev/null || true
}

peer() { # peer vm|workers STRATEGY N dispatch|memory: one JSON object
  local heap=()
  [ "$1" = vm ] && heap=(--max-old-space-size=16384)
  node --expose-gc "${heap[@]}" "$here/peer/$1_host.js" --strategy "$2" --events "$EVENTS" \
    --instances "$3" --mode "$4" --windows "$WINDOWS" --seconds 2 --warmup 1
}

jqr() { jq -r "$1" "$2"; } # jqr FILTER FILE

log "events for the peers: the simulated exchange's trades (BTC-USDT, seed 1)"
"$BENCH_BIN/bench_events" "$EVENTS" 65536

# ------------------------------------------------------------------ dispatch
#
# dispatch_gateway TAG FILE NAME N CALLS: N running instances of strategy
# NAME (from FILE) on the unpaced provider, driven through the real path
# (provider thread -> runtime_publish -> worker queues -> VMs). Each window:
# the server is paused (SIGSTOP) while the bare QuickJS baseline runs CALLS
# calls of the same handler, plain and tuned (see baseline_dispatch.c), then
# resumed and measured. Sets GW, GW_WALL, BASE, RATIO (median of the paired
# window ratios), BASE_T, RATIO_T (the same against the tuned loop) and
# RSS_PER (KiB per instance, from the fleet's creation).
dispatch_gateway() {
  local tag=$1 file=$2 name=$3 n=$4 calls=$5
  local dir=$SHM/$tag-$n win=$RAW/$tag-$n-windows.txt rss0 rss1 w b bt rc rw
  rm -rf "$dir"
  # The baselines run while the server is paused; the CPU budget is wall
  # clock, so a handler caught by the pause would overrun the default 50 ms
  # and stop its instance. A 60 s budget keeps the pauses harmless.
  server_start "$tag-$n" "$dir" "$(printf 'runtime:\n  cpu_budget_ms: 60000')"
  upload "$file"
  rss0=$(rss_kib "$SERVER_PID")
  "$BENCH_BIN/bench_http" fleet --port "$PORT" --prefix "$tag" --count "$n" --selector "$name" \
    --provider bench --symbol BTC-USDT --connections 2 >"$RAW/$tag-$n-fleet.json"
  rss1=$(rss_kib "$SERVER_PID")
  provider start
  sleep "$WARMUP"
  : >"$win"
  for w in $(seq "$WINDOWS"); do
    kill -STOP "$SERVER_PID"
    b=$("$BENCH_BIN/bench_baseline_dispatch" "$file" "$calls" "$EVENTS")
    bt=$("$BENCH_BIN/bench_baseline_dispatch" "$file" "$calls" "$EVENTS" tuned)
    kill -CONT "$SERVER_PID"
    sleep 0.5
    read -r rc rw < <(measure_window "$SECONDS_PER_WINDOW")
    echo "$rc $rw $b $bt" >>"$win"
    log "$tag N=$n window $w: gateway $rc/cpu-s ($rw/s), baseline $b, tuned $bt /cpu-s"
  done
  profile "$tag-$n" 5
  provider stop
  server_stop
  GW=$(awk '{ print $1 }' "$win" | median)
  GW_WALL=$(awk '{ print $2 }' "$win" | median)
  BASE=$(awk '{ print $3 }' "$win" | median)
  RATIO=$(awk '{ print $1 / $3 }' "$win" | median)
  BASE_T=$(awk '{ print $4 }' "$win" | median)
  RATIO_T=$(awk '{ print $1 / $4 }' "$win" | median)
  RSS_PER=$(awk -v a="$rss0" -v b="$rss1" -v n="$n" 'BEGIN { print (b - a) / n }')
}

declare -A GATEWAY
if has dispatch || has peers; then
  for n in 1 100 "$FLEET"; do
    log "dispatch: $n instance(s) of bench/strategies/count.js"
    dispatch_gateway dispatch "$STRATEGIES/count.js" benchcount "$n" 600000
    GATEWAY[$n]=$GW
    if has dispatch; then
      row "dispatch N=$n" "$GW" "events/cpu-s" "$BASE" "bare QuickJS loop" "$RATIO" ">= 0.8x" \
        "ratio>=0.8"
      row "  vs tuned bare loop" "$GW" "events/cpu-s" "$BASE_T" "tuned bare loop" "$RATIO_T" \
        "(report)" ""
      row "  wall clock" "$GW_WALL" "events/s" null "" null "" ""
    fi
    if [ "$n" = "$FLEET" ] && has dispatch; then
      row "memory of a running count.js instance" "$RSS_PER" "KiB" null "" null "" ""
    fi
  done
fi

# --------------------------------------------------------------------- peers

if has peers; then
  declare -A VM_RATE WK_RATE
  for n in 1 100 "$FLEET"; do
    log "peer (a) vm contexts: $n instance(s)"
    peer vm "$STRATEGIES/count.js" "$n" dispatch >"$RAW/peer-vm-$n.json"
    VM_RATE[$n]=$(jqr .rate_cpu "$RAW/peer-vm-$n.json")
  done
  for n in 1 "$WORKER_PEERS"; do
    log "peer (b) worker_threads: $n instance(s)"
    peer workers "$STRATEGIES/count.js" "$n" dispatch >"$RAW/peer-workers-$n.json"
    WK_RATE[$n]=$(jqr .rate_cpu "$RAW/peer-workers-$n.json")
  done
  for n in 1 "$WORKER_PEERS"; do
    g=${GATEWAY[$n]:-}
    if [ -z "$g" ]; then # the worker peer's size is not one of the dispatch sizes
      dispatch_gateway dispatch "$STRATEGIES/count.js" benchcount "$n" 600000
      g=$GW
    fi
    row "vs Node workers N=$n" "$g" "events/cpu-s" "${WK_RATE[$n]}" "worker_threads peer" \
      "$(div "$g" "${WK_RATE[$n]}")" ">= 4x" "ratio>=4"
  done
  for n in 1 100 "$FLEET"; do
    row "vs Node vm contexts N=$n" "${GATEWAY[$n]}" "events/cpu-s" "${VM_RATE[$n]}" \
      "vm-context peer" "$(div "${GATEWAY[$n]}" "${VM_RATE[$n]}")" "(report)" ""
  done
fi

# ------------------------------------------------------------------- latency
#
# bench_latency wires the real subsystems in process (see bench/latency.c):
# a paced provider at half of the measured maximum Trade rate, one instance
# of order.js; three runs alone and three with 100 count.js instances on the
# same feed, three with the market's store off (no order records: what
# the provider thread's SQLite writes cost), and three with workers that
# always sleep between events (runtime.event_poll_us 0: what polling for
# the next event buys, and the CPU it takes). Percentiles are the medians
# over the runs.
if has latency; then
  : >"$RAW/latency.jsonl"
  : >"$RAW/latency-fleet.jsonl"
  : >"$RAW/latency-nostore.jsonl"
  : >"$RAW/latency-sleep.jsonl"
  for k in 1 2 3; do
    log "latency run $k (one instance)"
    rm -rf "$WORK/latency"
    "$BENCH_BIN/bench_latency" --dir "$WORK/latency" --strategy "$STRATEGIES/order.js" \
      --seconds 6 >>"$RAW/latency.jsonl"
    log "latency run $k (with 100 more instances on the feed)"
    rm -rf "$WORK/latency"
    "$BENCH_BIN/bench_latency" --dir "$WORK/latency" --strategy "$STRATEGIES/order.js" \
      --background "$STRATEGIES/count.js" --background-instances 100 \
      --seconds 6 >>"$RAW/latency-fleet.jsonl"
    log "latency run $k (market store off)"
    rm -rf "$WORK/latency"
    "$BENCH_BIN/bench_latency" --dir "$WORK/latency" --strategy "$STRATEGIES/order.js" \
      --market-store 0 --seconds 6 >>"$RAW/latency-nostore.jsonl"
    log "latency run $k (workers always sleep between events)"
    rm -rf "$WORK/latency"
    "$BENCH_BIN/bench_latency" --dir "$WORK/latency" --strategy "$STRATEGIES/order.js" \
      --event-poll-us 0 --seconds 6 >>"$RAW/latency-sleep.jsonl"
  done
  lat() { jq -r "$1" "$2" | median; }
  L=$RAW/latency.jsonl
  row "tick-to-order max rate (1 instance)" "$(lat .max_rate "$L")" "trades/s" null "" null "" ""
  row "tick-to-order rate used (half)" "$(lat .rate "$L")" "trades/s" null "" null "" ""
  row "tick-to-order orders timed per run" "$(lat .orders "$L")" "orders" null "" null "" ""
  row "tick-to-order p50" "$(lat .p50_us "$L")" "us" null "" null "" ""
  row "tick-to-order p99" "$(lat .p99_us "$L")" "us" null "" null "<= 50 us" "value<=50"
  row "tick-to-order p99.9" "$(lat .p999_us "$L")" "us" null "" null "" ""
  row "  of which trade -> order leaves VM, p99" "$(lat .submit_p99_us "$L")" "us" null "" null \
    "" ""
  row "  of which order leaves VM -> engine ack, p99" "$(lat .engine_p99_us "$L")" "us" null "" null \
    "" ""
  row "  engine dequeue (stratd_tick_to_order_seconds) within 50 us" \
    "$(lat .dequeue_within_50us "$L")" "share" null "" null ">= 0.99" "value>=0.99"
  row "  engine dequeue p99 bucket (upper bound)" "$(lat .dequeue_p99_bucket_us "$L")" "us" null \
    "" null "" ""
  row "  machine noise: 200 us sleep overshoot p99" "$(lat .noise_p99_us "$L")" "us" null "" \
    null "" ""
  row "  other processes' CPU meanwhile" "$(lat .other_cores "$L")" "cores" null "" null "" ""
  row "  the gateway's CPU meanwhile" "$(lat .self_cores "$L")" "cores" null "" null "" ""
  L=$RAW/latency-fleet.jsonl
  row "tick-to-order p50 (+100 instances)" "$(lat .p50_us "$L")" "us" null "" null "" ""
  row "tick-to-order p99 (+100 instances)" "$(lat .p99_us "$L")" "us" null "" null "" ""
  row "tick-to-order p99.9 (+100 instances)" "$(lat .p999_us "$L")" "us" null "" null "" ""
  L=$RAW/latency-nostore.jsonl
  row "tick-to-order p50 (market store off)" "$(lat .p50_us "$L")" "us" null "" null "" ""
  row "tick-to-order p99 (market store off)" "$(lat .p99_us "$L")" "us" null "" null "" ""
  row "  machine noise meanwhile, p99" "$(lat .noise_p99_us "$L")" "us" null "" null "" ""
  L=$RAW/latency-sleep.jsonl
  row "tick-to-order p50 (workers always sleep)" "$(lat .p50_us "$L")" "us" null "" null "" ""
  row "tick-to-order p99 (workers always sleep)" "$(lat .p99_us "$L")" "us" null "" null "" ""
  row "  the gateway's CPU meanwhile" "$(lat .self_cores "$L")" "cores" null "" null "" ""
  row "  machine noise meanwhile, p99" "$(lat .noise_p99_us "$L")" "us" null "" null "" ""
fi

# ------------------------------------------------------------------- density
#
# FLEET instances of the 5 KB strategy created and started over HTTP, one
# pair at a time on one connection (latency per pair, client-side), state
# on the real disk. Idle: the provider never starts. RSS per instance is
# the server's VmRSS growth over the fleet divided by its size.
if has density; then
  # dense_server NAME DIR: a server with the 5 KB strategy uploaded
  dense_server() {
    server_start "$1" "$2"
    upload "$STRATEGIES/dense.js"
    sleep 1
  }
  # dense_fleet [ARGS...]: FLEET pairs, one at a time; the fleet's JSON on stdout
  dense_fleet() {
    "$BENCH_BIN/bench_http" fleet --port "$PORT" --prefix dense --count "$FLEET" \
      --selector benchdense --provider bench --symbol BTC-USDT --connections 1 "$@"
  }
  dir=$WORK/density
  rm -rf "$dir"
  dense_server density "$dir"
  rss0=$(rss_kib "$SERVER_PID")
  cpu0=$(cpu_seconds "$SERVER_PID")
  flush0=$(disk_flushes "$dir")
  syncs0=$(db_syncs)
  log "density: creating and starting $FLEET instances of bench/strategies/dense.js"
  dense_fleet --pairs "$RAW/density-pairs.txt" >"$RAW/density-fleet.json"
  cpu1=$(cpu_seconds "$SERVER_PID")
  flush1=$(disk_flushes "$dir")
  syncs1=$(db_syncs)
  # the same seen from inside: the gateway's database syncs over the fleet
  read -r D_SYNC_US D_SYNC_PER < <(awk -v a="$syncs0" -v b="$syncs1" -v n="$FLEET" '
    BEGIN { split(a, x, " "); split(b, y, " "); c = y[1] - x[1]
            if (c <= 0) print "null null"; else print (y[2] - x[2]) * 1e6 / c, c / n }')
  # the disk's cache flushes over the fleet: their mean time and how many a
  # pair (two commits; the audit log's group commit adds a few)
  read -r D_FLUSH_US D_FLUSH_PER < <(awk -v a="${flush0:-}" -v b="${flush1:-}" -v n="$FLEET" '
    BEGIN { split(a, x, " "); split(b, y, " "); c = y[1] - x[1]
            if (a == "" || b == "" || c <= 0) print "null null"
            else print (y[2] - x[2]) * 1000 / c, c / n }')
  sleep 2
  rss1=$(rss_kib "$SERVER_PID")
  # What a pair costs before any work: two request round trips and two
  # durable commits. One trivial request at a time on one connection, and
  # one durable 4 KB write over allocated blocks, as SQLite's WAL is written
  # once it has grown to its checkpoint size.
  echo /healthz >"$dir/paths-healthz.txt"
  WRK_PATHS=$dir/paths-healthz.txt wrk -t1 -c1 -d3s -s "$here/wrk/paths.lua" \
    "http://127.0.0.1:$PORT" | tail -n 1 >"$RAW/density-healthz.json"
  dd if=/dev/zero of="$dir/dsync-probe" bs=4k count=500 status=none
  sync
  dd if=/dev/zero of="$dir/dsync-probe" bs=4k count=500 oflag=dsync conv=notrunc 2>"$RAW/density-dsync.txt"
  D_SYNC=$(awk '/copied/ { for (i = 1; i <= NF; i++) if ($i == "s,") print $(i - 1) / 500 * 1e6 }' \
    "$RAW/density-dsync.txt")
  rm -f "$dir/dsync-probe"
  # The same write paced as the fleet's commits are, a request's work apart
  # (a pair is two commits in about half a millisecond), and further apart:
  # this disk's flushes are slower the longer it was idle.
  "$BENCH_BIN/bench_sync_probe" "$dir" 500 0 100 250 1000 >"$RAW/density-sync-probe.json"
  if [ "${BENCH_PROFILE:-0}" = 1 ]; then # 1,000 more, profiled, after the figures
    perf record -F 999 -p "$SERVER_PID" -o "$PROF/density-start.data" >/dev/null 2>&1 &
    perf_pid=$!
    "$BENCH_BIN/bench_http" fleet --port "$PORT" --prefix profiled --count 1000 \
      --selector benchdense --provider bench --symbol BTC-USDT >/dev/null
    kill -INT "$perf_pid"
    wait "$perf_pid" || true
    perf report -i "$PROF/density-start.data" --no-children --percent-limit 0.5 --stdio \
      --sort dso,symbol >"$PROF/density-start.txt" 2>/dev/null || true
  fi
  server_stop
  # The same fleet with the state on tmpfs, where a sync costs next to
  # nothing: what a pair costs apart from the disk (never a target: the
  # gateway's state belongs on a disk that survives a power cut).
  dense_server density-tmpfs "$SHM/density"
  dense_fleet >"$RAW/density-fleet-tmpfs.json"
  server_stop
  rm -rf "$SHM/density"
  D_RSS=$(awk -v a="$rss0" -v b="$rss1" -v n="$FLEET" 'BEGIN { print (b - a) / n }')
  D_CPU=$(awk -v a="$cpu0" -v b="$cpu1" -v n="$FLEET" 'BEGIN { print (b - a) / n * 1000 }')
  log "density peers: $FLEET vm contexts, $WORKER_PEERS workers (bench/strategies/dense.js)"
  peer vm "$STRATEGIES/dense.js" "$FLEET" memory >"$RAW/peer-vm-dense.json"
  peer workers "$STRATEGIES/dense.js" "$WORKER_PEERS" memory >"$RAW/peer-workers-dense.json"
  VM_KIB=$(jq '.rss_per_instance_bytes / 1024' "$RAW/peer-vm-dense.json")
  WK_KIB=$(jq '.rss_per_instance_bytes / 1024' "$RAW/peer-workers-dense.json")
  row "density: RSS per idle instance" "$D_RSS" "KiB" null "" null "<= 120 KiB" "value<=120"
  row "  vs Node vm contexts (a)" "$D_RSS" "KiB" "$VM_KIB" "vm-context peer" \
    "$(div "$D_RSS" "$VM_KIB")" "<= 0.7x" "ratio<=0.7"
  row "  vs Node workers (b)" "$D_RSS" "KiB" "$WK_KIB" "worker_threads peer" \
    "$(div "$D_RSS" "$WK_KIB")" "" ""
  GIB=$(div 1048576 "$D_RSS")
  WK_GIB=$(div 1048576 "$WK_KIB")
  row "density: instances per GiB" "$GIB" "instances" "$WK_GIB" "worker_threads peer" \
    "$(div "$GIB" "$WK_GIB")" ">= 50x" "ratio>=50"
  row "start (create + start) mean" "$(jqr .mean_ms "$RAW/density-fleet.json")" "ms" \
    "$(jqr .start_mean_ms "$RAW/peer-vm-dense.json")" "vm-context peer (start)" \
    "$(div "$(jqr .mean_ms "$RAW/density-fleet.json")" \
      "$(jqr .start_mean_ms "$RAW/peer-vm-dense.json")")" "<= 0.5 ms" "value<=0.5"
  row "start (create + start) p99" "$(jqr .p99_ms "$RAW/density-fleet.json")" "ms" \
    "$(jqr .start_p99_ms "$RAW/peer-vm-dense.json")" "vm-context peer (start)" null "" ""
  row "  of which the create, mean" "$(jqr .create_mean_ms "$RAW/density-fleet.json")" "ms" null "" \
    null "" ""
  row "  of which the start, mean" "$(jqr .start_mean_ms "$RAW/density-fleet.json")" "ms" null "" \
    null "" ""
  row "  server CPU per create + start" "$D_CPU" "ms" null "" null "" ""
  row "  the same, state on tmpfs: mean" "$(jqr .mean_ms "$RAW/density-fleet-tmpfs.json")" "ms" \
    null "" null "" ""
  row "  the same, state on tmpfs: p99" "$(jqr .p99_ms "$RAW/density-fleet-tmpfs.json")" "ms" \
    null "" null "" ""
  row "  one request round trip (GET /healthz), p50" \
    "$(jqr .p50_us "$RAW/density-healthz.json")" "us" null "" null "" ""
  row "  one durable 4 KB overwrite (dd dsync)" "${D_SYNC:-null}" "us" null "" null "" ""
  for gap in 0 100 250 1000; do
    v=$(jq --argjson g "$gap" '.gaps[] | select(.gap_us == $g) | .mean_us' \
      "$RAW/density-sync-probe.json" 2>/dev/null || true)
    row "  durable 8 KB write, $gap us after the last" "${v:-null}" "us" null "" null "" ""
  done
  row "  disk cache flush during the fleet, mean" "$D_FLUSH_US" "us" null "" null "" ""
  row "  disk cache flushes per pair" "$D_FLUSH_PER" "flushes" null "" null "" ""
  row "  database sync, mean, as the gateway saw it" "$D_SYNC_US" "us" null "" null "" ""
  row "  database syncs per pair" "$D_SYNC_PER" "syncs" null "" null "" ""
  row "  mean, first tenth of the fleet" "$(jqr .first_tenth_ms "$RAW/density-fleet.json")" "ms" \
    null "" null "" ""
  row "  mean, last tenth of the fleet" "$(jqr .last_tenth_ms "$RAW/density-fleet.json")" "ms" \
    null "" null "" ""
  row "  worker_threads peer start mean" "$(jqr .start_mean_ms "$RAW/peer-workers-dense.json")" \
    "ms" null "" null "" ""
fi

# wrk_runs NAME URL PATHS RUNS [HEADER]: RUNS runs of wrk (2 threads, 16
# connections, 5 s) over the paths in the file PATHS, one JSON line a run
# in $RAW/wrk-NAME.jsonl, with the server's CPU per request (what the figure
# costs, whatever the noise) and the CPU the hypervisor took from the
# machine meanwhile (steal).
wrk_runs() {
  local name=$1 url=$2 paths=$3 runs=$4 header=${5:-} k c0 c1 s0 s1
  : >"$RAW/wrk-$name.jsonl"
  for k in $(seq 1 "$runs"); do
    c0=$(cpu_seconds "$SERVER_PID")
    s0=$(steal_ms)
    WRK_HEADER=$header WRK_PATHS=$paths wrk -t2 -c16 -d5s -s "$here/wrk/paths.lua" "$url" \
      | tail -n 1 >"$WORK/wrk.json"
    c1=$(cpu_seconds "$SERVER_PID")
    s1=$(steal_ms)
    jq -c --argjson c "$(awk -v a="$c0" -v b="$c1" 'BEGIN { print b - a }')" \
      --argjson s "$((s1 - s0))" \
      '. + {server_cpu_us: ($c / .requests * 1e6), server_cores: ($c / .seconds),
            steal_ms: $s}' \
      "$WORK/wrk.json" >>"$RAW/wrk-$name.jsonl"
    log "wrk $name run $k: $(tail -n 1 "$RAW/wrk-$name.jsonl")"
  done
}
w() { jq -r "$1" "$RAW/wrk-$2.jsonl" | median; } # w FILTER NAME: median over wrk_runs NAME

# --------------------------------------------------------- control plane
#
# A catalogue of CAT_STRATEGIES x CAT_REVISIONS written in the on-disk
# format (bench/gen_catalog.js), served from the real disk; CP_INSTANCES
# stopped instances created over HTTP. wrk (2 threads, 16 connections)
# drives each GET five times for 5 s; the figures are medians (a p99 on two
# shared cores swings from under 1 ms to tens of ms between runs, even for
# GET /healthz). The module
# page is asked both with Accept-Encoding: gzip (what HTTP clients send by
# default) and without (434 KB of identity JSON a request).
if has control; then
  dir=$WORK/control
  rm -rf "$dir"
  mkdir -p "$dir"
  log "control plane: writing a catalogue of $CAT_STRATEGIES x $CAT_REVISIONS revisions"
  node "$here/gen_catalog.js" "$dir/strategies" "$CAT_STRATEGIES" "$CAT_REVISIONS"
  t0=$(now)
  server_start control "$dir"
  COLD=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { print b - a }')
  row "catalogue cold start ($((CAT_STRATEGIES * CAT_REVISIONS)) revisions)" "$COLD" "s" null "" \
    null "" ""
  log "control plane: creating $CP_INSTANCES stopped instances"
  "$BENCH_BIN/bench_http" fleet --port "$PORT" --prefix cp --count "$CP_INSTANCES" --start 0 \
    --selector 'cat@S@:v1.0.3' --strategies "$CAT_STRATEGIES" --provider bench \
    --symbol BTC-USDT --connections 1 >"$RAW/control-fleet.json"
  row "instance create (stopped), mean" "$(jqr .mean_ms "$RAW/control-fleet.json")" "ms" null "" \
    null "" ""
  echo "/strategies/modules?limit=100" >"$dir/paths-modules.txt"
  cp "$dir/paths-modules.txt" "$dir/paths-modules-gzip.txt"
  for i in $(seq 0 499); do
    printf '/strategies/modules/cat%03d:v1.0.3/usage\n' $((i * 7 % CAT_STRATEGIES))
  done >"$dir/paths-usage.txt"
  for i in $(seq 1 500); do
    echo "/strategy/instances/cp-$(((i * 7919) % CP_INSTANCES + 1))"
  done >"$dir/paths-instance.txt"
  for what in modules modules-gzip usage instance; do
    header=
    [ "$what" = modules-gzip ] && header='Accept-Encoding: gzip'
    wrk_runs "$what" "http://127.0.0.1:$PORT" "$dir/paths-$what.txt" 5 "$header"
  done
  if [ "${BENCH_PROFILE:-0}" = 1 ]; then
    for what in modules usage instance; do
      WRK_PATHS=$dir/paths-$what.txt wrk -t2 -c16 -d6s -s "$here/wrk/paths.lua" \
        "http://127.0.0.1:$PORT" >/dev/null &
      wrk_pid=$!
      sleep 0.5
      profile "control-$what" 5
      wait "$wrk_pid"
    done
  fi
  # Runs during which the hypervisor took under 10 ms of the machine's CPU:
  # a vCPU descheduled by the host stalls every connection it serves for
  # up to 100 ms, which is the host's tail, not the gateway's. The target is
  # judged on the median over all runs, steal included (the stricter of the
  # two: on this machine most runs see a tick or more of steal).
  calm() { jq -r "select(.steal_ms < 10) | $1" "$RAW/wrk-$2.jsonl" | median; }
  ncalm() { jq -s '[.[] | select(.steal_ms < 10)] | length' "$RAW/wrk-$1.jsonl"; }
  row "GET /strategies/modules?limit=100 (gzip)" "$(w .rps modules-gzip)" "req/s" null "" null \
    "" ""
  row "  p99, all runs" "$(w '.p99_us / 1000' modules-gzip)" "ms" null "" null "<= 2 ms" \
    "value<=2"
  row "  p99, runs without CPU steal ($(ncalm modules-gzip) of 5)" \
    "$(calm '.p99_us / 1000' modules-gzip)" "ms" null "" null "" ""
  row "  CPU steal per run (median)" "$(w .steal_ms modules-gzip)" "ms" null "" null "" ""
  row "  server CPU per request" "$(w .server_cpu_us modules-gzip)" "us" null "" null "" ""
  row "GET /strategies/modules?limit=100 (identity)" "$(w .rps modules)" "req/s" null "" null "" \
    ""
  row "  p99, all runs" "$(w '.p99_us / 1000' modules)" "ms" null "" null "" ""
  row "  p99, runs without CPU steal ($(ncalm modules) of 5)" "$(calm '.p99_us / 1000' modules)" \
    "ms" null "" null "" ""
  row "  server CPU per request" "$(w .server_cpu_us modules)" "us" null "" null "" ""
  row "GET /strategies/modules/{sel}/usage" "$(w .rps usage)" "req/s" null "" null \
    ">= 20000/s" "value>=20000"
  row "  p99, all runs" "$(w '.p99_us / 1000' usage)" "ms" null "" null "" ""
  row "  p99, runs without CPU steal ($(ncalm usage) of 5)" "$(calm '.p99_us / 1000' usage)" \
    "ms" null "" null "" ""
  row "  server CPU per request" "$(w .server_cpu_us usage)" "us" null "" null "" ""
  row "GET /strategy/instances/{id}" "$(w .rps instance)" "req/s" null "" null ">= 20000/s" \
    "value>=20000"
  row "  p99, all runs" "$(w '.p99_us / 1000' instance)" "ms" null "" null "" ""
  row "  p99, runs without CPU steal ($(ncalm instance) of 5)" "$(calm '.p99_us / 1000' instance)" \
    "ms" null "" null "" ""
  row "  server CPU per request" "$(w .server_cpu_us instance)" "us" null "" null "" ""
  row "  server cores used (instance GETs)" "$(w .server_cores instance)" "cores" null "" null \
    "" ""

  # uploads: a 20 KB module (dense.js plus generated helper functions), each
  # upload new bytes and a new version tag
  tmpl=$dir/upload.js.in
  sed -e "s/name: 'benchdense'/name: 'benchupload'/" -e "s/tag: 'v1.0.0'/tag: 'v3.0.@N@'/" \
    "$STRATEGIES/dense.js" >"$tmpl"
  awk 'BEGIN { for (i = 0; i < 300; i++)
    printf "function helper%d(x) { return (x * %d + @N@) %% 1000003; }\n", i, i + 7 }' >>"$tmpl"
  log "control plane: $UPLOADS uploads of a $(wc -c <"$tmpl")-byte module"
  "$BENCH_BIN/bench_http" upload --port "$PORT" --template "$tmpl" --count "$UPLOADS" \
    >"$RAW/upload.json"
  row "upload 20 KB module, p50" "$(jqr .p50_ms "$RAW/upload.json")" "ms" null "" null "<= 5 ms" \
    "value<=5"
  row "  p99" "$(jqr .p99_ms "$RAW/upload.json")" "ms" null "" null "" ""
  # the first change of a process serialises every strategy's line once
  row "  mean, first tenth of the uploads" "$(jqr .first_tenth_ms "$RAW/upload.json")" "ms" null \
    "" null "" ""

  # refresh: no change, everything
  : >"$RAW/refresh-full.txt"
  for k in 1 2 3 4 5; do
    curl -sS -o "$dir/refresh.json" -w '%{http_code} %{time_total}\n' -X POST \
      "http://127.0.0.1:$PORT/strategies/refresh" >>"$RAW/refresh-full.txt"
  done
  row "refresh, full, no change" "$(awk '$1 == 200 { print $2 * 1000 }' "$RAW/refresh-full.txt" |
    median)" "ms" null "" null "<= 200 ms" "value<=200"

  # refresh: move MOVERS running instances to a new revision while the
  # provider feeds them MOVER_TICK_RATE trades per second; three times,
  # unless one takes more than 10 s (then that one run is the figure)
  sed -e "s/name: 'benchcount'/name: 'benchmover'/" "$STRATEGIES/count.js" >"$dir/mover-a.js"
  sed -e "s/tag: 'v1.0.0'/tag: 'v1.0.1'/" "$dir/mover-a.js" >"$dir/mover-b.js"
  hash_a=$(jq -n --rawfile s "$dir/mover-a.js" '{source: $s}' |
    api POST /strategies/modules @- | jq -r .module.hash)
  hash_b=$(jq -n --rawfile s "$dir/mover-b.js" '{source: $s}' |
    api POST /strategies/modules @- | jq -r .module.hash)
  api PUT /strategies/modules/benchmover/tags/prod "{\"hash\": \"$hash_a\"}" >/dev/null
  log "refresh: $MOVERS running instances of benchmover:prod"
  "$BENCH_BIN/bench_http" fleet --port "$PORT" --prefix mv --count "$MOVERS" \
    --selector benchmover:prod --provider bench --symbol BTC-USDT --connections 2 \
    >"$RAW/movers-fleet.json"
  provider_rate "$MOVER_TICK_RATE"
  sleep 2
  read -r paced_cpu paced_wall < <(measure_window "$SECONDS_PER_WINDOW")
  : >"$RAW/refresh-targeted.txt"
  target=$hash_b
  for k in 1 2 3; do
    api PUT /strategies/modules/benchmover/tags/prod "{\"hash\": \"$target\"}" >/dev/null
    d0=$(delivered)
    curl -sS -o "$dir/refresh.json" -w '%{http_code} %{time_total}' -X POST \
      -H 'Content-Type: application/json' --data '{"strategies": ["benchmover:prod"]}' \
      "http://127.0.0.1:$PORT/strategies/refresh" >"$dir/refresh-status.txt"
    moved=$(jq '[.results[] | select(.reason == "refreshed") | .instances | length] | add // 0' \
      "$dir/refresh.json")
    echo "$(cat "$dir/refresh-status.txt") $moved $(($(delivered) - d0))" \
      >>"$RAW/refresh-targeted.txt"
    log "targeted refresh $k: $(tail -n 1 "$RAW/refresh-targeted.txt") (status seconds moved deliveries)"
    if [ "$target" = "$hash_b" ]; then target=$hash_a; else target=$hash_b; fi
    if awk '{ exit !($2 > 10) }' "$dir/refresh-status.txt"; then
      log "targeted refresh took more than 10 s: one run only"
      break
    fi
    sleep 1
  done
  provider stop
  server_stop
  row "refresh, targeted, $MOVERS running moved" "$(awk -v m="$MOVERS" \
    '$1 == 200 && $3 == m { print $2 * 1000 }' "$RAW/refresh-targeted.txt" | median)" "ms" null \
    "" null "<= 1000 ms" "value<=1000"
  row "paced delivery, $MOVERS instances x $MOVER_TICK_RATE/s" "$paced_cpu" "events/cpu-s" \
    "${GATEWAY[$FLEET]:-null}" "unpaced, N=$FLEET" \
    "$(div "$paced_cpu" "${GATEWAY[$FLEET]:-null}")" "" ""
  row "  wall clock" "$paced_wall" "events/s" null "" null "" ""
fi

# ----------------------------------------------------------------------- tls
#
# What HTTPS costs: the same instance GETs over kept-alive connections
# (wrk's), first over plain HTTP and then over HTTPS from the same state, the
# gateway restarted with a certificate (ECDSA P-256, self-signed; wrk does not
# verify it); and full handshakes, each on a new connection closed right
# after it (openssl s_time -new), the client on the same two cores.
if has tls; then
  dir=$WORK/tls
  rm -rf "$dir"
  mkdir -p "$dir"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -keyout "$dir/gateway.key" -out "$dir/gateway.crt" -subj /CN=127.0.0.1 \
    -addext subjectAltName=IP:127.0.0.1 2>/dev/null
  server_start tls-plain "$dir"
  upload "$STRATEGIES/count.js"
  "$BENCH_BIN/bench_http" fleet --port "$PORT" --prefix tls --count "$TLS_INSTANCES" --start 0 \
    --selector benchcount --provider bench --symbol BTC-USDT --connections 1 >/dev/null
  for i in $(seq 1 500); do
    echo "/strategy/instances/tls-$(((i * 7919) % TLS_INSTANCES + 1))"
  done >"$dir/paths.txt"
  wrk_runs tls-plain "http://127.0.0.1:$PORT" "$dir/paths.txt" 3
  server_stop
  server_start tls-https "$dir" "$(printf 'http:\n  tls_certificate: %s\n  tls_key: %s' \
    "$dir/gateway.crt" "$dir/gateway.key")"
  wrk_runs tls-https "https://127.0.0.1:$PORT" "$dir/paths.txt" 3
  : >"$RAW/tls-handshakes.jsonl"
  for k in 1 2 3; do
    c0=$(cpu_seconds "$SERVER_PID")
    t0=$(now)
    openssl s_time -connect "127.0.0.1:$PORT" -new -time 5 >"$dir/s_time.txt" 2>&1 || true
    t1=$(now)
    c1=$(cpu_seconds "$SERVER_PID")
    n=$(sed -n 's/^\([0-9][0-9]*\) connections in [0-9]* real seconds.*/\1/p' "$dir/s_time.txt")
    jq -nc --argjson n "${n:-0}" --argjson s "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" \
      --argjson c "$(awk -v a="$c0" -v b="$c1" 'BEGIN { print b - a }')" \
      '{handshakes: $n, seconds: $s, rate: (if $n > 0 then $n / $s else null end),
        server_cpu_us: (if $n > 0 then $c / $n * 1e6 else null end)}' >>"$RAW/tls-handshakes.jsonl"
    log "tls handshakes run $k: $(tail -n 1 "$RAW/tls-handshakes.jsonl")"
  done
  server_stop
  plain_rps=$(w .rps tls-plain)
  plain_cpu=$(w .server_cpu_us tls-plain)
  https_rps=$(w .rps tls-https)
  https_cpu=$(w .server_cpu_us tls-https)
  row "GET /strategy/instances/{id} over HTTPS" "$https_rps" "req/s" "$plain_rps" \
    "plain HTTP, same run" "$(div "$https_rps" "$plain_rps")" "(report)" ""
  row "  p99, all runs" "$(w '.p99_us / 1000' tls-https)" "ms" "$(w '.p99_us / 1000' tls-plain)" \
    "plain HTTP, same run" "$(div "$(w '.p99_us / 1000' tls-https)" \
    "$(w '.p99_us / 1000' tls-plain)")" "" ""
  row "  server CPU per request" "$https_cpu" "us" "$plain_cpu" "plain HTTP, same run" \
    "$(div "$https_cpu" "$plain_cpu")" "" ""
  row "TLS handshakes, a new connection each" \
    "$(jq -r '.rate // empty' "$RAW/tls-handshakes.jsonl" | median)" "per s" null "" null \
    "(report)" ""
  row "  server CPU per handshake" \
    "$(jq -r '.server_cpu_us // empty' "$RAW/tls-handshakes.jsonl" | median)" "us" null "" null "" ""
fi

# ------------------------------------------------------------------- compute
#
# A handler that computes mean, deviation and slope over a 500-price window
# per trade (bench/strategies/indicator.js): the gateway against the bare
# QuickJS loop (same file) and against both Node.js peers.
if has compute; then
  for n in 1 100; do
    log "compute-heavy handler: $n instance(s)"
    dispatch_gateway compute "$STRATEGIES/indicator.js" benchindicator "$n" 6000
    peer vm "$STRATEGIES/indicator.js" "$n" dispatch >"$RAW/peer-vm-indicator-$n.json"
    peer workers "$STRATEGIES/indicator.js" "$n" dispatch >"$RAW/peer-workers-indicator-$n.json"
    vm_rate=$(jqr .rate_cpu "$RAW/peer-vm-indicator-$n.json")
    wk_rate=$(jqr .rate_cpu "$RAW/peer-workers-indicator-$n.json")
    row "indicator N=$n" "$GW" "events/cpu-s" "$BASE" "bare QuickJS loop" "$RATIO" "(report)" ""
    row "  vs tuned bare loop" "$GW" "events/cpu-s" "$BASE_T" "tuned bare loop" "$RATIO_T" \
      "(report)" ""
    row "  vs Node vm contexts" "$GW" "events/cpu-s" "$vm_rate" "vm-context peer" \
      "$(div "$GW" "$vm_rate")" "(report)" ""
    row "  vs Node workers" "$GW" "events/cpu-s" "$wk_rate" "worker_threads peer" \
      "$(div "$GW" "$wk_rate")" "(report)" ""
  done
fi

# --------------------------------------------------------------------- table

jq -s --arg date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" --arg cpu "$(nproc)" \
  --arg os "$(. /etc/os-release && echo "$PRETTY_NAME")" --arg node "$(node --version)" \
  --arg windows "$WINDOWS" --arg seconds "$SECONDS_PER_WINDOW" --arg quick "${BENCH_QUICK:-0}" \
  '{generated: $date, command: "make bench", machine: {cores: ($cpu | tonumber), os: $os,
    node: $node}, windows: ($windows | tonumber), window_seconds: ($seconds | tonumber),
    quick: ($quick == "1"), rows: .}' "$RESULTS" >"$OUT/results.json"

echo
echo "stratd benchmarks ($(nproc) cores, $(. /etc/os-release && echo "$PRETTY_NAME"), node $(node --version));" \
  "medians of $WINDOWS windows of ${SECONDS_PER_WINDOW}s unless noted"
print_table "$RESULTS"
echo
echo "rows: $OUT/results.json; raw outputs: $RAW"
