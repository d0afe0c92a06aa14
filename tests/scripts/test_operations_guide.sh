#!/usr/bin/env bash
# Proves docs/OPERATIONS.md: every ```sh block of the guide runs, in order,
# in one shell, against a gateway started the way `make run` starts it
# (scripts/run-examples.sh: the examples bootstrapped into ./strategies,
# state in ./var) but in a temporary directory and on a free port. The only
# rewrites are the base URL 127.0.0.1:8880 and the binary path build/stratd;
# a command that exits non-zero fails the test, and the guide's commands
# check what the operator should see (jq -e, grep, test), so the guide
# cannot drift from the product.
#
# Environment: STRATD_BINARY and STRATD_SOURCE_DIR (set by ctest);
# STRATD_TEST_KEEP=1 keeps the temporary directory.
set -euo pipefail

# shellcheck source=tests/scripts/gateway.sh
. "$(dirname "${BASH_SOURCE[0]}")/gateway.sh"
guide=$source_dir/docs/OPERATIONS.md
for tool in curl jq promtool; do
  command -v "$tool" >/dev/null || { echo "error: $tool is not installed (scripts/install-deps.sh)" >&2; exit 1; }
done
[ -f "$guide" ] || { echo "error: no guide at $guide" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/stratd-guide-XXXXXX")
cleanup() {
  stop_server || true
  if [ -z "${STRATD_TEST_KEEP:-}" ]; then rm -rf "$work"; else echo "kept $work"; fi
}
trap cleanup EXIT

mkdir -p "$work/blocks"
gateway_start "$work"

# ------------------------------------------------------------- the guide's blocks
# Each block goes to its own file, named by its first line in the guide. A
# block may be indented (inside a list item): its fence's indentation is
# taken off every line of it.
awk -v dir="$work/blocks" '
  !inside && /^ *```sh[ \t]*$/ {
    inside = 1; n++; indent = index($0, "`") - 1
    file = sprintf("%s/%03d-%d.sh", dir, n, NR + 1); next
  }
  inside && /^ *```[ \t]*$/ { inside = 0; close(file); next }
  inside { line = $0; if (substr(line, 1, indent) ~ /^ *$/) line = substr(line, indent + 1); print line > file }
' "$guide"
blocks=("$work"/blocks/*.sh)
[ -e "${blocks[0]}" ] || { echo "error: no sh block in $guide" >&2; exit 1; }

script=$work/guide.sh
{
  echo 'set -euo pipefail'
  for block in "${blocks[@]}"; do
    name=$(basename "$block" .sh)
    echo "echo '--- docs/OPERATIONS.md line ${name#*-}'"
    sed -e "s|127\\.0\\.0\\.1:8880|127.0.0.1:$port|g" -e "s|build/stratd|$binary|g" "$block"
  done
} >"$script"

echo "running ${#blocks[@]} blocks of $guide"
status=0
(cd "$work/run" && bash "$script") || status=$?
if [ "$status" -ne 0 ]; then
  echo "error: the guide's commands failed (exit $status); the gateway's log ends with:" >&2
  tail -n 40 "$work/server.log" >&2
  exit 1
fi

# The gateway must still be up and stop cleanly.
curl -sf "127.0.0.1:$port/healthz" >/dev/null || { echo "error: the gateway is down after the guide" >&2; exit 1; }
if ! stop_server; then
  echo "error: the gateway did not exit cleanly; its log ends with:" >&2
  tail -n 40 "$work/server.log" >&2
  exit 1
fi
echo "docs/OPERATIONS.md: ${#blocks[@]} blocks ran as written"
