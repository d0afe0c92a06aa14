#!/usr/bin/env bash
# `make run`: serve the example strategies on the embedded defaults.
# The examples are migrated into ./strategies (the default strategies
# directory) with the bootstrap tool, so the tree in examples/ stays as
# authors write it: one <name>.js per strategy.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p strategies
for f in examples/strategies/*.js; do
  cp -n "$f" strategies/ 2>/dev/null || true
done
build/stratd bootstrap -root strategies -write >/dev/null
exec build/stratd serve "$@"
