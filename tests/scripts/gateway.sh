# shellcheck shell=bash
# Sourced by the script tests: starts a gateway the way `make run` does
# (scripts/run-examples.sh: the examples bootstrapped into ./strategies,
# state in ./var) in a temporary directory and on a free port, and stops it.
#
# gateway_start WORK [ARG...]: runs it in WORK/run, its stdout and log in
# WORK, with the ARGs given to `stratd serve` after `--listen`; sets `port`,
# `scheme` (http, or https when the ARGs make it serve HTTPS) and
# `server_pid`, or exits the test with its log. stop_server sends SIGTERM
# and returns the gateway's exit status.
# Environment: STRATD_BINARY, STRATD_SOURCE_DIR (set by ctest).

source_dir=${STRATD_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
binary=${STRATD_BINARY:-$source_dir/build/stratd}
server_pid=
port=
scheme=

stop_server() {
  local status=0
  if [ -n "$server_pid" ]; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" || status=$?
    server_pid=
  fi
  return "$status"
}

gateway_start() {
  local work=$1
  shift
  [ -x "$binary" ] || { echo "error: no stratd binary at $binary" >&2; exit 1; }
  mkdir -p "$work/run"
  STRATD_RUN_DIR=$work/run STRATD_BINARY=$binary \
    "$source_dir/scripts/run-examples.sh" --listen 127.0.0.1:0 "$@" >"$work/stdout" 2>"$work/server.log" &
  server_pid=$!
  for _ in $(seq 1 1200); do
    port=$(sed -n 's|^listening on https\{0,1\}://127\.0\.0\.1:\([0-9][0-9]*\).*|\1|p' "$work/stdout" | head -n 1)
    [ -n "$port" ] && break
    if ! kill -0 "$server_pid" 2>/dev/null; then
      echo "error: the gateway exited before listening; its log:" >&2
      cat "$work/server.log" >&2
      exit 1
    fi
    sleep 0.1
  done
  [ -n "$port" ] || { echo "error: the gateway did not listen within 120 s" >&2; exit 1; }
  scheme=$(sed -n 's|^listening on \(https\{0,1\}\)://.*|\1|p' "$work/stdout" | head -n 1)
  echo "gateway on $scheme://127.0.0.1:$port (as make run, in $work/run)"
}
