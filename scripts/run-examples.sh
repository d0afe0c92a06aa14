#!/usr/bin/env bash
# `make run`: serve the example strategies on the embedded defaults.
# On a fresh tree (no ./strategies/registry.json yet) the examples are
# copied into ./strategies (the default strategies directory) and migrated
# there with the bootstrap tool, so the tree in examples/ stays as authors
# write it: one <name>.js per strategy. Once the registry exists the tree is
# the operator's: the examples are not copied again, so a revision or a
# strategy deleted through the API stays deleted, and a tag moved since is
# left where it was moved. State goes to ./var.
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
# A registry.json that is there in any form (even a dangling link) means the
# tree has been served or migrated before.
if [ ! -e strategies/registry.json ] && [ ! -L strategies/registry.json ]; then
  for f in "$repo"/examples/strategies/*.js; do
    cp -n "$f" strategies/ 2>/dev/null || true
  done
  "$binary" bootstrap -root strategies -write >/dev/null
fi
exec "$binary" serve "$@"
