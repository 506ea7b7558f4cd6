"""dbt through Flywheel's Postgres front door: the `dbt-flywheel` adapter (./dbt-flywheel, over
dbt-postgres and psycopg2) builds the example project examples/dbt_fraud against a real
`flywheel serve --pg-listen`: seeds, a table, an incremental model with a two-column unique_key,
two feature views, a label and a training set, then dbt's tests, source freshness and docs. The
results are read back over Flight SQL (ADBC), independently of the Postgres front door."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import adbc_driver_flightsql.dbapi as flightsql
import pytest

from conftest import Server

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "dbt_fraud"
DBT = Path(sys.executable).parent / "dbt"


def pg_connect(port: int, timeout: float = 30.0):
    import psycopg2

    deadline = time.monotonic() + timeout
    while True:
        try:
            conn = psycopg2.connect(
                host="127.0.0.1", port=port, user="flywheel", password="", dbname="flywheel"
            )
            conn.autocommit = True
            return conn
        except psycopg2.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture(scope="module")
def pg_server(tmp_path_factory):
    """`flywheel serve` with its Postgres front door on a free port: (server, pg_port)."""
    try:
        import dbt.adapters.flywheel  # noqa: F401
    except ImportError:
        pytest.fail("dbt-flywheel is not installed: pip install 'dbt-core==1.11.16' "
                    "'dbt-postgres==1.11.0' ./dbt-flywheel (scripts/test.sh does)")
    server = Server(tmp_path_factory.mktemp("dbt") / "warehouse", ["--pg-listen", "127.0.0.1:0"])
    port = server.pg_port
    try:
        pg_connect(port).close()
    except BaseException:
        server.stop()
        raise
    yield server, port
    assert server.stop() == 0, "flywheel serve did not shut down cleanly on SIGTERM"


@pytest.fixture
def project(tmp_path):
    """A copy of examples/dbt_fraud (dbt writes target/ and logs/ into it)."""
    dest = tmp_path / "dbt_fraud"
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns("target", "logs", ".user.yml"))
    return dest


def dbt(project: Path, port: int, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = os.environ | {
        "FLYWHEEL_PG_HOST": "127.0.0.1",
        "FLYWHEEL_PG_PORT": str(port),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        "DBT_USE_COLORS": "false",
    }
    proc = subprocess.run(
        [str(DBT), *args, "--profiles-dir", str(project), "--project-dir", str(project)],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check and proc.returncode != 0:
        pytest.fail(f"dbt {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def query(uri: str, sql: str) -> list[tuple]:
    with flightsql.connect(uri) as conn, conn.cursor() as cur:
        cur.execute(sql)
        return [tuple(r) for r in cur.fetchall()]


def fails(uri: str, sql: str) -> bool:
    try:
        query(uri, sql)
    except Exception:  # noqa: BLE001 - any error: the version does not exist
        return True
    return False


DAILY = """SELECT user_id, CAST(date_trunc('day', ts) AS DATE) AS d, count(*) AS n,
                  round(sum(amount), 6) AS spend
           FROM {table} GROUP BY 1, 2 ORDER BY 1, 2"""
DAILY_SPEND = """SELECT user_id, CAST(day AS DATE) AS d, txn_count, round(spend, 6)
                 FROM {table} ORDER BY 1, 2"""


def test_dbt_builds_the_fraud_flywheel_and_a_second_run_adds_one_version_each(pg_server, project):
    server, port = pg_server
    uri = server.uri

    dbt(project, port, "seed")
    dbt(project, port, "run")
    dbt(project, port, "test")

    # First run: every model is version 0 of its table.
    assert query(uri, "SELECT count(*) FROM stg_transactions") == [(40,)]
    entities = query(uri, "SELECT name FROM flywheel.entities ORDER BY name")
    assert entities == [("merchant",), ("user",)]
    kinds = dict(query(uri, "SELECT name, coalesce(object, 'table') FROM flywheel.tables"))
    assert kinds == {
        "transactions": "table",
        "chargebacks": "table",
        "stg_transactions": "table",
        "daily_spend": "table",
        "txn_log": "table",
        "user_txn": "feature_view",
        "merchant_txn": "feature_view",
        "is_fraud": "label",
        "fraud_train": "training_set",
    }
    first_daily = query(uri, DAILY_SPEND.format(table="daily_spend"))
    assert first_daily == query(uri, DAILY.format(table="stg_transactions"))
    assert query(uri, "SELECT count(*) FROM fraud_train") == [(14,)]
    # user_txn is online (its TTL is over for February's events, so lookups now find nothing).
    online = "SELECT loaded, rows FROM flywheel.online_freshness WHERE feature_view = 'user_txn'"
    assert query(uri, online) == [(True, 6)]

    # New events land: one on the latest day (an existing user_id/day row changes), one on a new
    # day for a new user, and a chargeback for that new user.
    with pg_connect(port) as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO transactions VALUES"
            " (41, 6, 'm2', '2026-02-23 20:00:00', 99.5),"
            " (42, 7, 'm4', '2026-02-24 10:00:00', 1234.5)"
        )
        cur.execute("INSERT INTO chargebacks VALUES (7, 'm4', '2026-02-25 12:00:00', true)")
    conn.close()

    dbt(project, port, "run")
    dbt(project, port, "test")

    # The table model: exactly one new Delta version; version 0 still reads the first run.
    assert query(uri, "SELECT count(*) FROM stg_transactions") == [(42,)]
    assert query(uri, "SELECT count(*) FROM stg_transactions VERSION AS OF 0") == [(40,)]
    assert query(uri, "SELECT count(*) FROM stg_transactions VERSION AS OF 1") == [(42,)]
    assert fails(uri, "SELECT count(*) FROM stg_transactions VERSION AS OF 2")

    # The incremental model merged on (user_id, day) in one new version: the same rows as
    # aggregating every transaction again, with user 6's 2026-02-23 row replaced, not duplicated.
    merged = query(uri, DAILY_SPEND.format(table="daily_spend"))
    assert merged == query(uri, DAILY.format(table="stg_transactions"))
    assert len(merged) == len(first_daily) + 1
    assert query(uri, DAILY_SPEND.format(table="daily_spend VERSION AS OF 0")) == first_daily
    assert fails(uri, "SELECT count(*) FROM daily_spend VERSION AS OF 2")
    user6 = query(uri, "SELECT txn_count FROM daily_spend WHERE user_id = 6 AND "
                       "CAST(day AS DATE) = DATE '2026-02-23'")
    assert len(user6) == 1

    # The append-only incremental model: one INSERT of the two new transactions.
    assert query(uri, "SELECT count(*), count(DISTINCT txn_id) FROM txn_log") == [(42, 42)]
    assert query(uri, "SELECT count(*) FROM txn_log VERSION AS OF 0") == [(40,)]
    assert fails(uri, "SELECT count(*) FROM txn_log VERSION AS OF 2")

    # Feature views, label and training set were replaced from the new inputs: the new label row
    # gets the new transaction's amounts, point in time.
    assert query(uri, "SELECT count(*) FROM user_txn") == [(42,)]
    assert query(uri, online) == [(True, 7)]
    assert query(uri, "SELECT definition_version FROM flywheel.feature_views WHERE name = 'user_txn'") == [(2,)]
    assert query(uri, "SELECT label, features FROM flywheel.training_sets WHERE name = 'fraud_train'")[0][0] == "is_fraud"
    assert query(uri, "SELECT count(*) FROM fraud_train") == [(15,)]
    assert query(
        uri, "SELECT is_fraud, last_amount, merchant_last_amount FROM fraud_train WHERE user_id = 7"
    ) == [(True, 1234.5, 1234.5)]
    assert query(uri, "SELECT count(*) FROM fraud_train VERSION AS OF 0") == [(14,)]

    # Source freshness (max(ts) of the raw table) and the docs catalog.
    dbt(project, port, "source", "freshness")
    sources = json.loads((project / "target" / "sources.json").read_text())
    assert [(r["status"], r["max_loaded_at"][:19]) for r in sources["results"]] == [
        ("pass", "2026-02-24T10:00:00")
    ]
    dbt(project, port, "docs", "generate")
    catalog = json.loads((project / "target" / "catalog.json").read_text())
    types = {n.split(".")[-1]: v["metadata"]["type"] for n, v in catalog["nodes"].items()}
    assert types["stg_transactions"] == "BASE TABLE"
    assert types["user_txn"] == "FEATURE VIEW"
    assert types["is_fraud"] == "LABEL"
    assert types["fraud_train"] == "TRAINING SET"
    columns = catalog["nodes"]["model.dbt_fraud.daily_spend"]["columns"]
    assert [c["name"] for c in sorted(columns.values(), key=lambda c: c["index"])] == [
        "user_id", "day", "txn_count", "spend", "last_ts"
    ]
    assert catalog["sources"]["source.dbt_fraud.raw.transactions"]["columns"]["amount"]["type"] == "double precision"


def test_a_view_model_is_refused_saying_what_to_use(pg_server, project):
    server, port = pg_server
    (project / "models" / "recent.sql").write_text(
        "{{ config(materialized='view') }}\nselect 1 as x\n"
    )
    out = dbt(project, port, "run", "--select", "recent", check=False)
    assert out.returncode != 0
    assert "Flywheel has no SQL views yet" in out.stdout, out.stdout
    assert "materialized='table'" in out.stdout
    assert not query(server.uri, "SELECT name FROM flywheel.tables WHERE name = 'recent'")
