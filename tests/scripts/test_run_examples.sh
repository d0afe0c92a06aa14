#!/usr/bin/env bash
# `make run` (scripts/run-examples.sh) twice on one tree, with an operator
# between the two runs: the first run on a fresh tree serves the six
# examples; then a new momentum revision takes `latest`, the old one is
# deleted through the API, grid's v1.0.0 is moved to a new revision and the
# whole noop strategy is deleted. The second `make run` must start and
# serve exactly what the operator left: nothing deleted comes back, no tag
# moves back.
#
# Environment: STRATD_BINARY and STRATD_SOURCE_DIR (set by ctest);
# STRATD_TEST_KEEP=1 keeps the temporary directory.
set -euo pipefail

# shellcheck source=tests/scripts/gateway.sh
. "$(dirname "${BASH_SOURCE[0]}")/gateway.sh"
for tool in curl jq; do
  command -v "$tool" >/dev/null || { echo "error: $tool is not installed (scripts/install-deps.sh)" >&2; exit 1; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/stratd-run-XXXXXX")
cleanup() {
  stop_server || true
  if [ -z "${STRATD_TEST_KEEP:-}" ]; then rm -rf "$work"; else echo "kept $work"; fi
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
registry=$work/run/strategies/registry.json

# ------------------------------------------------------ a fresh tree
gateway_start "$work"
base=127.0.0.1:$port
names=$(curl -sf "$base/strategies/modules" | jq -c '[.modules[].name] | sort')
[ "$names" = '["grid","logging","market_making","mean_reversion","momentum","noop"]' ] \
  || fail "a fresh tree serves $names"
[ -z "$(find "$work/run/strategies" -maxdepth 1 -name '*.js')" ] || fail "examples left unmigrated"

# ------------------------------------------------------ the operator
old=$(jq -r '.momentum.tags.latest | sub("^sha256:"; "")' "$registry")
source=$(sed "s/tag: 'v1.0.0'/tag: 'v1.1.0'/" "$source_dir/examples/strategies/momentum.js")
jq -n --arg s "$source" '{source: $s, promoteLatest: true}' \
  | curl -sf -XPOST "$base/strategies/modules" -d @- >/dev/null
code=$(curl -s -o /dev/null -w '%{http_code}' -XDELETE "$base/strategies/modules/momentum@sha256:$old")
[ "$code" = 204 ] || fail "deleting momentum@$old answered $code"

grid=$(sed "s/tag: 'v1.0.0'/tag: 'v2.0.0'/" "$source_dir/examples/strategies/grid.js")
grid_new=$(jq -n --arg s "$grid" '{source: $s}' \
  | curl -sf -XPOST "$base/strategies/modules" -d @- | jq -er '.module.hash | sub("^sha256:"; "")')
curl -sf -XPUT "$base/strategies/modules/grid/tags/v1.0.0" -d "{\"hash\": \"sha256:$grid_new\"}" >/dev/null
code=$(curl -s -o /dev/null -w '%{http_code}' -XDELETE "$base/strategies/modules/noop")
[ "$code" = 204 ] || fail "deleting noop answered $code"
stop_server
cp "$registry" "$work/registry.before"

# ------------------------------------------------------ `make run` again
gateway_start "$work"
base=127.0.0.1:$port
cmp -s "$registry" "$work/registry.before" || fail "the second run changed registry.json"
jq -e --arg old "sha256:$old" '.momentum.hashes[$old] == null and .momentum.tags["v1.0.0"] == null
  and .momentum.tags["v1.1.0"] == .momentum.tags.latest' "$registry" >/dev/null \
  || fail "the deleted momentum revision came back: $(jq -c .momentum.tags "$registry")"
jq -e --arg new "sha256:$grid_new" '.grid.tags["v1.0.0"] == $new' "$registry" >/dev/null \
  || fail "grid:v1.0.0 moved back: $(jq -c .grid.tags "$registry")"
jq -e '.noop == null' "$registry" >/dev/null || fail "the deleted noop strategy came back"
served=$(curl -sf "$base/strategies/modules?hash=sha256:$old" | jq .total)
[ "$served" = 0 ] || fail "the gateway serves the deleted revision ($served)"
served=$(curl -sf "$base/strategies/modules?hash=sha256:$grid_new" | jq .total)
[ "$served" = 1 ] || fail "the gateway does not serve grid's new revision ($served)"
[ -z "$(find "$work/run/strategies" -maxdepth 1 -name '*.js')" ] || fail "examples copied again"
stop_server || fail "the gateway did not stop cleanly"
echo "ok"
