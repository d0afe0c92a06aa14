#!/usr/bin/env bash
# `make run`: serve the example strategies on the embedded defaults.
# The examples are migrated into ./strategies (the default strategies
# directory) with the bootstrap tool, so the tree in examples/ stays as
# authors write it: one <name>.js per strategy. State goes to ./var.
#
# Arguments are passed to `stratd serve`. Two variables let a test start the
# gateway exactly this way elsewhere (tests/scripts/test_operations_guide.sh):
#   STRATD_RUN_DIR  the directory that holds strategies/ and var/ (default:
#                   the repository)
#   STRATD_BINARY   the stratd binary (default: build/stratd)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
binary=${STRATD_BINARY:-$repo/build/stratd}
cd "${STRATD_RUN_DIR:-$repo}"
mkdir -p strategies
for f in "$repo"/examples/strategies/*.js; do
  cp -n "$f" strategies/ 2>/dev/null || true
done
"$binary" bootstrap -root strategies -write >/dev/null
exec "$binary" serve "$@"
