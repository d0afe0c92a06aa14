#!/usr/bin/env bash
# Builds the libFuzzer harnesses (tests/fuzz/fuzz_*.c) with clang into
# build/fuzz and runs them.
#
#   scripts/fuzz.sh smoke   every target over its committed corpus, then a few
#                           seconds of fuzzing (`make test` runs this)
#   scripts/fuzz.sh long    every target for FUZZ_SECONDS (default 120) seconds
#                           (`make fuzz`); new inputs go to build/fuzz/corpus/<target>
#   scripts/fuzz.sh build   only build
#
# Environment: FUZZ_SECONDS (long), FUZZ_SMOKE_SECONDS (smoke, default 4),
# FUZZ_TARGETS (e.g. "selector registry"; default every harness),
# FUZZ_BUILD_DIR (default build/fuzz), JOBS (build parallelism).
#
# Crashes, timeouts, leaks and sanitizer reports are written to
# build/fuzz/crashes (smoke: build/fuzz/smoke-crashes); the script fails if
# any target finds one. Reproduce with build/fuzz/fuzzers/fuzz_<target> FILE;
# once fixed, copy the input into tests/fuzz/corpus/<target>/.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
mode=${1:-}
build=${FUZZ_BUILD_DIR:-$here/build/fuzz}
jobs=${JOBS:-$(nproc)}

case "$mode" in
  smoke | long | build) ;;
  *)
    echo "usage: scripts/fuzz.sh smoke|long|build" >&2
    exit 2
    ;;
esac

# ------------------------------------------------------------------ build

command -v clang >/dev/null || { echo "fuzz.sh: clang is missing (make deps)" >&2; exit 1; }
mkdir -p "$build"
# One configure and build at a time (`make test` and `make fuzz` may overlap).
exec 9>"$build/.lock"
flock 9
if [ ! -f "$build/CMakeCache.txt" ]; then
  CC=clang cmake -S "$here" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSTRATD_FUZZ=ON \
    -DSTRATD_TESTS=OFF >"$build/configure.log" 2>&1 ||
    { cat "$build/configure.log" >&2; exit 1; }
fi
cmake --build "$build" --target fuzzers -j"$jobs" >"$build/build.log" 2>&1 ||
  { cat "$build/build.log" >&2; exit 1; }
flock -u 9
[ "$mode" = build ] && exit 0

# -------------------------------------------------------------------- run

if [ -n "${FUZZ_TARGETS:-}" ]; then
  read -r -a targets <<<"$FUZZ_TARGETS"
else
  targets=()
  for src in "$here"/tests/fuzz/fuzz_*.c; do
    name=$(basename "$src" .c)
    targets+=("${name#fuzz_}")
  done
fi

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:detect_stack_use_after_return=0:allocator_may_return_null=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$here/tests/lsan.supp}

if [ "$mode" = smoke ]; then
  crashes=$build/smoke-crashes
  rm -rf "$crashes"
else
  crashes=$build/crashes
  # Earlier findings move aside rather than failing this run.
  if [ -d "$crashes" ] && [ -n "$(ls -A "$crashes")" ]; then
    mkdir -p "$build/crashes.prev"
    mv "$crashes"/* "$build/crashes.prev/"
  fi
fi
mkdir -p "$crashes"

# Per-target options: the time one input may take (validation runs a JS
# budget, the api target a whole request) and the size of generated inputs.
options_for() {
  case "$1" in
    api) echo "-timeout=60 -rss_limit_mb=6144 -max_len=8192" ;;
    validate) echo "-timeout=$([ "$mode" = smoke ] && echo 120 || echo 30) -rss_limit_mb=4096 -max_len=8192" ;;
    selector) echo "-timeout=10 -max_len=512" ;;
    *) echo "-timeout=10 -max_len=16384" ;;
  esac
}

failed=()
summary=()
for target in "${targets[@]}"; do
  bin=$build/fuzzers/fuzz_$target
  seeds=$here/tests/fuzz/corpus/$target
  [ -x "$bin" ] || { echo "fuzz.sh: no harness fuzz_$target" >&2; exit 1; }
  [ -d "$seeds" ] || { echo "fuzz.sh: no corpus $seeds" >&2; exit 1; }
  read -r -a opts <<<"$(options_for "$target")"
  dict=$here/tests/fuzz/$target.dict
  [ -f "$dict" ] && opts+=("-dict=$dict")
  opts+=("-artifact_prefix=$crashes/$target-" "-print_final_stats=1")
  # The smoke run's few seconds of mutation under the sanitizers on a busy
  # machine can make an input run past libFuzzer's default 10 s "slow unit"
  # mark (and, for validate, near its 30 s timeout: see tests/fuzz/README.md);
  # there only a hang fails it. The long runs keep reporting slow units.
  [ "$mode" = smoke ] && opts+=("-report_slow_units=1000000")
  log=$build/$target.$mode.log
  status=0
  if [ "$mode" = smoke ]; then
    # Every committed input once, then a short run on a scratch copy so that
    # the committed corpus never changes.
    work=$build/smoke-corpus/$target
    rm -rf "$work"
    mkdir -p "$work"
    echo "fuzz_$target: $(find "$seeds" -type f | wc -l) committed inputs, then ${FUZZ_SMOKE_SECONDS:-4} s"
    {
      "$bin" "${opts[@]}" -runs=0 "$seeds" &&
        "$bin" "${opts[@]}" -max_total_time="${FUZZ_SMOKE_SECONDS:-4}" "$work" "$seeds"
    } >"$log" 2>&1 || status=$?
  else
    corpus=$build/corpus/$target
    mkdir -p "$corpus"
    echo "fuzz_$target: ${FUZZ_SECONDS:-120} s (corpus $corpus)"
    "$bin" "${opts[@]}" -max_total_time="${FUZZ_SECONDS:-120}" "$corpus" "$seeds" >"$log" 2>&1 ||
      status=$?
  fi
  found=$(find "$crashes" -maxdepth 1 -type f -name "$target-*" | wc -l)
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
  summary+=("$(printf '%-10s %10s runs %8s exec/s  %s' "$target" "${runs:-?}" "${speed:-?}" \
    "$([ "$status" = 0 ] && [ "$found" = 0 ] && echo ok || echo FAILED)")")
  if [ "$status" != 0 ] || [ "$found" != 0 ]; then
    failed+=("$target")
    echo "fuzz_$target failed (exit $status, $found artifacts in $crashes); the end of $log:" >&2
    tail -n 60 "$log" >&2
  fi
done

printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz.sh: findings in: ${failed[*]} (inputs in $crashes)" >&2
  exit 1
fi
