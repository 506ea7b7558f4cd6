#!/usr/bin/env bash
# The whole test suite: Rust unit tests, the integration binary, the sqllogictest files, and the
# Python client tests (real ADBC / pyarrow / deltalake clients against a real `flywheel serve`).
# Installs what it needs: a Python venv outside the clone (FLYWHEEL_VENV). Exits non-zero if any
# test fails.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/flywheel-target}"
VENV="${FLYWHEEL_VENV:-$HOME/.cache/flywheel-venv}"

echo "== Rust: unit, integration and sqllogictest (target dir $CARGO_TARGET_DIR)"
cargo test --workspace

echo "== Examples (each asserts its own results)"
cargo run --example fraud

echo "== Python client tests (venv $VENV)"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
req=tests/clients/requirements.txt
stamp="$VENV/.requirements.sha"
want=$(sha256sum "$req" | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
  echo "$want" > "$stamp"
fi
cargo build --bin flywheel
export FLYWHEEL_BIN="$CARGO_TARGET_DIR/debug/flywheel"
"$VENV/bin/python" -m pytest tests/clients
