#!/usr/bin/env bash
# The whole test suite: Rust unit tests, the integration binary, the sqllogictest files, and the
# Python client tests (real ADBC / pyarrow / deltalake / polars clients against a real `flywheel
# serve`). Installs what it needs: redis-server (Debian package) and a Python venv outside the clone
# (FLYWHEEL_VENV). Exits non-zero if any test fails.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/flywheel-target}"
VENV="${FLYWHEEL_VENV:-$HOME/.cache/flywheel-venv}"

# The Redis online-store tests start a real redis-server; the Postgres front door's tests run
# psql and pgjdbc (Debian packages).
if [ "$(id -u)" = 0 ]; then apt_get=(apt-get); else apt_get=(sudo -n apt-get); fi
needs=(redis-server:redis-server psql:postgresql-client)
# pgjdbc for the JDBC test, where a JVM is present (the test is skipped without one).
if command -v java >/dev/null 2>&1 && [ ! -e /usr/share/java/postgresql.jar ]; then
  needs+=(/usr/share/java/postgresql.jar:libpostgresql-jdbc-java)
fi
for need in "${needs[@]}"; do
  { command -v "${need%%:*}" >/dev/null 2>&1 || [ -e "${need%%:*}" ]; } && continue
  package=${need#*:}
  echo "== Installing $package (Debian package) for the client tests"
  "${apt_get[@]}" install -y -q "$package" >/dev/null \
    || { "${apt_get[@]}" update -q >/dev/null && "${apt_get[@]}" install -y -q "$package" >/dev/null; } \
    || { echo "cannot install $package: install the Debian package $package and rerun" >&2; exit 1; }
done

echo "== Crate walls: the engine links no front door's crates"
walls=$(cargo tree -p flywheel-engine -e normal --prefix none | cut -d' ' -f1 \
  | grep -xE 'tonic|arrow-flight|rustyline|clap|pgwire|arrow-pg|datafusion-pg-catalog|flywheel-flight|flywheel-pg|flywheel' | sort -u || true)
if [ -n "$walls" ]; then
  echo "flywheel-engine depends on: $walls (front doors and the binary sit on the engine, not in it)" >&2
  exit 1
fi

echo "== Rust: unit, integration and sqllogictest (target dir $CARGO_TARGET_DIR)"
cargo test --workspace

echo "== Examples (each asserts its own results)"
cargo run --example fraud
cargo run --example online_lookup

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
# The dbt adapter of this repository, reinstalled whenever its files change.
adapter_stamp="$VENV/.dbt-flywheel.sha"
adapter=$(find dbt-flywheel -type f -not -path '*/build/*' -not -path '*.egg-info*' -not -name '*.pyc' \
  | sort | xargs sha256sum | sha256sum | cut -d' ' -f1)
if [ "$(cat "$adapter_stamp" 2>/dev/null || true)" != "$adapter" ]; then
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --force-reinstall ./dbt-flywheel
  echo "$adapter" > "$adapter_stamp"
fi
cargo build --bin flywheel
export FLYWHEEL_BIN="$CARGO_TARGET_DIR/debug/flywheel"
"$VENV/bin/python" -m pytest tests/clients
