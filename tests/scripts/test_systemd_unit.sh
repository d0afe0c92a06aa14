#!/usr/bin/env bash
# examples/systemd/stratd.service as systemd reads it, without a running
# systemd: `systemd-analyze verify` finds nothing to say about it (an
# unknown key or a value it cannot parse would be said and ignored by
# systemd, so any word fails here); `systemd-analyze security` scores its
# sandbox at most 3.0 ("OK"; --threshold counts in tenths), so that no
# hardening is dropped unnoticed;
# and its ExecStart, run as written with its paths moved under a temporary
# directory, starts the gateway, whose ExecReload is a SIGHUP it answers
# by reopening the audit log, and which stops cleanly on SIGTERM (what
# `systemctl stop` sends). The notifications Type=notify waits for are
# tested by tests/integration/test_serve.c.
#
# Environment: STRATD_BINARY and STRATD_SOURCE_DIR (set by ctest);
# STRATD_TEST_KEEP=1 keeps the temporary directory.
set -euo pipefail

source_dir=${STRATD_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
binary=${STRATD_BINARY:-$source_dir/build/stratd}
unit=$source_dir/examples/systemd/stratd.service
command -v systemd-analyze >/dev/null ||
  { echo "error: systemd-analyze is not installed (scripts/install-deps.sh)" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/stratd-unit-XXXXXX")
pid=
cleanup() {
  [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
  if [ -z "${STRATD_TEST_KEEP:-}" ]; then rm -rf "$work"; else echo "kept $work"; fi
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# The unit with its binary where this build put it (verify checks that
# ExecStart's program exists).
sed "s|/usr/local/bin/stratd|$binary|g" "$unit" >"$work/stratd.service"
said=$(systemd-analyze verify "$work/stratd.service" 2>&1) ||
  fail "systemd-analyze verify refused the unit: $said"
[ -z "$said" ] || fail "systemd-analyze verify has something to say about the unit: $said"
score=$(systemd-analyze security --offline=yes --threshold=30 "$work/stratd.service" 2>&1 |
  sed -n 's/.*Overall exposure level for stratd.service: \([0-9.]*\).*/\1/p') ||
  fail "systemd-analyze security scores the unit's exposure over 3.0 (${score:-no score})"
[ -n "$score" ] || fail "systemd-analyze security gave no score"
echo "exposure level $score (systemd-analyze security)"

# ExecStart and ExecReload as written, /etc/stratd/config.yaml as shipped
# (examples/config.yaml) and /var/lib/stratd under the temporary directory;
# a free port, since the file's 8880 may be taken.
line() { sed -n "s/^$1=//p" "$unit"; }
start=$(line ExecStart)
reload=$(line ExecReload)
if [ -z "$start" ] || [ -z "$reload" ]; then fail "the unit has no ExecStart or no ExecReload"; fi
mkdir -p "$work/lib/strategies" "$work/lib/state"
start=${start//\/usr\/local\/bin\/stratd/$binary}
start=${start//\/etc\/stratd\/config.yaml/$source_dir/examples/config.yaml}
start=${start//\/var\/lib\/stratd/$work/lib}
read -r -a argv <<<"$start"
(cd "$work/lib" && exec "${argv[@]}" --listen 127.0.0.1:0 >"$work/stdout" 2>"$work/log") &
pid=$!
for _ in $(seq 1 1200); do
  grep -q '^listening on ' "$work/stdout" 2>/dev/null && break
  kill -0 "$pid" 2>/dev/null || fail "ExecStart exited before listening: $(cat "$work/log")"
  sleep 0.1
done
port=$(sed -n 's|^listening on http://127\.0\.0\.1:\([0-9]*\)$|\1|p' "$work/stdout")
[ -n "$port" ] || fail "ExecStart printed '$(cat "$work/stdout")'"
curl -sf "127.0.0.1:$port/healthz" | jq -e '.status == "ok"' >/dev/null ||
  fail "the gateway started by ExecStart is not healthy"
[ -f "$work/lib/state/stratd.db" ] || fail "the state is not in the unit's state directory"

reload=${reload//\$MAINPID/$pid}
read -r -a argv <<<"$reload"
"${argv[@]}"
for _ in $(seq 1 600); do
  grep -q 'SIGHUP: reopened the audit log' "$work/log" && break
  sleep 0.1
done
grep -q 'SIGHUP: reopened the audit log' "$work/log" || fail "ExecReload's SIGHUP was not answered"
curl -sf "127.0.0.1:$port/healthz" >/dev/null || fail "the gateway stopped serving after ExecReload"

kill -TERM "$pid"
status=0
wait "$pid" || status=$?
pid=
[ "$status" = 0 ] || fail "SIGTERM ended the gateway with status $status: $(tail -n 20 "$work/log")"
echo "examples/systemd/stratd.service: verified, exposure $score, ExecStart serves, ExecReload reloads"
