#!/usr/bin/env bash
# Runs every test of the workspace: unit, integration, property, UI (trybuild)
# and doc tests. This is the README's test command; .ci/run calls it too.
set -euo pipefail
cd "$(dirname "$0")/.."

# Flows run by the tests record their history here, not in ~/.prefecto.
PREFECTO_HOME="$(mktemp -d -t prefecto-tests.XXXXXX)"
export PREFECTO_HOME
trap 'rm -rf "$PREFECTO_HOME"' EXIT

cargo test --workspace --locked "$@"
