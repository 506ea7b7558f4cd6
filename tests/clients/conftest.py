"""Fixtures: a real `flywheel serve` process on 127.0.0.1 port 0 over a temp warehouse."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest


def flywheel_bin() -> str:
    path = os.environ.get("FLYWHEEL_BIN")
    if not path or not Path(path).exists():
        pytest.exit("FLYWHEEL_BIN must point at a built `flywheel` binary (run through .ci/run)", 2)
    return path


class Server:
    """`flywheel serve` on a free port; `args` are extra `serve` flags (e.g. `--auth-token`), `env`
    extra `FLYWHEEL_*` settings. Clients may use files beside the warehouse (its parent folder is
    in `allowed_paths`) unless `env` says otherwise."""

    def __init__(self, warehouse: Path, args: list[str] | None = None, env: dict | None = None):
        self.warehouse = warehouse
        env = (
            {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
            | {"FLYWHEEL_ALLOWED_PATHS": str(warehouse.parent)}
            | (env or {})
        )
        self.proc = subprocess.Popen(
            [flywheel_bin(), "--warehouse", str(warehouse), "serve", "--listen", "127.0.0.1:0"]
            + list(args or []),
            stdout=subprocess.PIPE,
            stderr=sys.stderr,
            env=env,
            text=True,
        )
        banner = self.proc.stdout.readline()
        scheme = "grpc+tls://" if "grpc+tls://" in banner else "grpc://"
        if scheme not in banner:
            self.proc.kill()
            raise RuntimeError(f"flywheel serve did not start: {banner!r}")
        self.address = banner.split(scheme, 1)[1].split()[0]
        self.uri = f"{scheme}{self.address}"
        # With --pg-listen, the second banner line names the Postgres front door's address.
        self.pg_port = None
        if "--pg-listen" in (args or []):
            line = self.proc.stdout.readline()
            if "Postgres protocol on " not in line:
                self.proc.kill()
                raise RuntimeError(f"flywheel serve --pg-listen did not start: {line!r}")
            self.pg_port = int(line.split("Postgres protocol on ", 1)[1].split()[0].rsplit(":", 1)[1])

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                return self.proc.wait()
        return self.proc.returncode


def table_location(uri: str, name: str) -> str:
    """Where the warehouse table `name` lives (managed tables are in folders named by ids):
    `flywheel.tables` says, for other Delta readers."""
    import adbc_driver_flightsql.dbapi as flightsql

    with flightsql.connect(uri) as conn, conn.cursor() as cur:
        cur.execute("SELECT location FROM flywheel.tables WHERE name = ?", parameters=[name])
        row = cur.fetchone()
    assert row is not None, f"table {name} is not registered"
    from urllib.parse import urlparse
    from urllib.request import url2pathname

    url = urlparse(row[0])
    return url2pathname(url.path) if url.scheme == "file" else row[0]


@pytest.fixture
def warehouse(tmp_path: Path) -> Path:
    return tmp_path / "warehouse"


@pytest.fixture
def server(warehouse: Path):
    s = Server(warehouse)
    yield s
    assert s.stop() == 0, "flywheel serve did not shut down cleanly on SIGTERM"


@pytest.fixture
def pg_server(warehouse: Path):
    """`flywheel serve` with its Postgres front door too (`pg_port`)."""
    s = Server(warehouse, ["--pg-listen", "127.0.0.1:0"])
    yield s
    assert s.stop() == 0, "flywheel serve did not shut down cleanly on SIGTERM"
