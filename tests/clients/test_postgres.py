"""The Postgres front door with real Postgres clients: `psql` (Debian's postgresql-client),
psycopg 3 (simple and extended protocol, parameters, prepared statements, types), SQLAlchemy's
inspector, pgjdbc (Debian's libpostgresql-jdbc-java, where a JVM is present); the same answers as Flight SQL (ADBC) for the same statements; SQLSTATE codes; SCRAM
authentication with the server's credentials; TLS from the server's certificate."""

import datetime
import decimal
import os
import shutil
import subprocess
from pathlib import Path

import adbc_driver_flightsql.dbapi as flightsql
import psycopg
import pytest
import sqlalchemy as sa

from conftest import Server

TOUR = [
    "CREATE TABLE transactions (user_id BIGINT, merchant_id VARCHAR, ts TIMESTAMP, amount DOUBLE)",
    """INSERT INTO transactions VALUES
       (1, 'm1', '2026-02-01T09:00:00', 25.0), (1, 'm2', '2026-02-03T18:30:00', 420.0),
       (2, 'm1', '2026-02-02T12:00:00', 12.5), (2, 'm3', '2026-02-20T08:00:00', 990.0)""",
    "CREATE TABLE chargebacks (user_id BIGINT, merchant_id VARCHAR, ts TIMESTAMP, is_fraud BOOLEAN)",
    """INSERT INTO chargebacks VALUES (1, 'm2', '2026-02-05T12:00:00', true),
       (2, 'm1', '2026-02-15T12:00:00', false), (2, 'm3', '2026-02-21T12:00:00', true)""",
    "CREATE ENTITY user (user_id BIGINT)",
    "CREATE ENTITY merchant (merchant_id VARCHAR)",
    """CREATE FEATURE VIEW user_txn ENTITY user EVENT TIME ts TTL INTERVAL '7 days'
       AS SELECT user_id, ts, amount AS last_amount FROM transactions""",
    """CREATE FEATURE VIEW merchant_txn ENTITY merchant EVENT TIME ts WITH (online = true)
       AS SELECT merchant_id, ts, amount AS merchant_last_amount FROM transactions""",
    """CREATE LABEL is_fraud ENTITY user EVENT TIME ts
       FROM (SELECT user_id, merchant_id, ts, is_fraud FROM chargebacks)""",
    "CREATE TRAINING SET fraud_train LABEL is_fraud FEATURES user_txn, merchant_txn",
]

# Read-only statements whose answers must be the same through both front doors.
SAME_ANSWERS = [
    "SELECT * FROM fraud_train ORDER BY ts",
    "SELECT * FROM fraud_train VERSION AS OF 0 ORDER BY ts",
    """SELECT c.user_id, c.ts, f.last_amount FROM chargebacks c
       ASOF JOIN user_txn f MATCH_CONDITION (c.ts >= f.ts) ON c.user_id = f.user_id
       ORDER BY c.ts""",
    "SELECT name, kind FROM flywheel.tables ORDER BY name",
    "SELECT user_id, count(*) AS n, sum(amount) AS total FROM transactions GROUP BY user_id ORDER BY 1",
    "SELECT * FROM online('merchant_txn', 'm1')",
    "SHOW FEATURE VIEWS",
    "SHOW TABLES",
]


def connect(server: Server, **kwargs) -> psycopg.Connection:
    return psycopg.connect(
        host="127.0.0.1", port=server.pg_port, user="flywheel", dbname="flywheel",
        autocommit=True, **kwargs,
    )


def psql(server: Server, *commands: str, env: dict | None = None) -> str:
    exe = shutil.which("psql")
    assert exe, "psql is missing: install Debian's postgresql-client (scripts/test.sh does)"
    args = [exe, "-h", "127.0.0.1", "-p", str(server.pg_port), "-U", "flywheel", "-X",
            "-v", "ON_ERROR_STOP=1"]
    for c in commands:
        args += ["-c", c]
    run = subprocess.run(args, capture_output=True, text=True, timeout=120,
                         env=os.environ | (env or {}))
    assert run.returncode == 0, run.stderr
    return run.stdout


@pytest.fixture
def tour(pg_server):
    with connect(pg_server) as conn:
        for statement in TOUR:
            conn.execute(statement)
    return pg_server


def test_psql_runs_flywheel_statements_and_describes_the_warehouse(tour):
    out = psql(tour, "SELECT user_id, is_fraud, last_amount FROM fraud_train ORDER BY ts")
    assert "(3 rows)" in out and "420" in out
    out = psql(tour, "INSERT INTO transactions VALUES (3, 'm9', '2026-03-01T00:00:00', 5.0)",
               "REFRESH TRAINING SET fraud_train")
    assert "INSERT 0 1" in out and "REFRESH" in out
    # \dt: tables (and the system tables of schema flywheel); \dv: Flywheel's objects, which are
    # views, not base tables; \dn: the schemas; \d name: a view's columns.
    tables = psql(tour, r"\dt")
    assert "transactions" in tables and "chargebacks" in tables and "flywheel" in tables
    assert "user_txn" not in tables
    views = psql(tour, r"\dv")
    for name in ["user_txn", "merchant_txn", "is_fraud", "fraud_train"]:
        assert f" {name} " in views, views
    schemas = psql(tour, r"\dn")
    assert "public" in schemas and "flywheel" in schemas
    described = psql(tour, r"\d user_txn")
    assert 'View "public.user_txn"' in described
    assert "last_amount" in described and "double precision" in described
    assert "timestamp without time zone" in described
    everything = psql(tour, r"\d")
    assert "fraud_train" in everything and "transactions" in everything


def test_psql_reports_errors_with_their_sqlstate(pg_server):
    exe = shutil.which("psql")
    run = subprocess.run(
        [exe, "-h", "127.0.0.1", "-p", str(pg_server.pg_port), "-U", "flywheel", "-X",
         "-v", "VERBOSITY=verbose", "-c", "SELECT * FROM nope"],
        capture_output=True, text=True, timeout=60,
    )
    assert run.returncode != 0
    assert "42P01" in run.stderr and "table `nope` not found" in run.stderr


def test_psycopg_parameters_prepared_statements_and_types(tour):
    with connect(tour) as conn:
        rows = conn.execute(
            "SELECT user_id, amount FROM transactions WHERE user_id = %s AND amount > %s "
            "ORDER BY amount", (1, 10.0)).fetchall()
        assert rows == [(1, 25.0), (1, 420.0)]
        # Named prepared statements (server-side), executed many times with new values: each
        # execution reads the table's current version.
        query = "SELECT count(*) FROM transactions WHERE merchant_id = %s"
        assert conn.execute(query, ("m1",), prepare=True).fetchone() == (2,)
        conn.execute("INSERT INTO transactions VALUES (%s, %s, %s, %s)",
                     (5, "m1", datetime.datetime(2026, 3, 2, 8, 0), 7.5))
        assert conn.execute(query, ("m1",), prepare=True).fetchone() == (3,)
        assert conn.execute(query, ("m3",), prepare=True).fetchone() == (1,)
        # Types: timestamps with a zone, decimals, lists, text, booleans, NULL; binary results too.
        utc = datetime.timezone.utc
        row = conn.execute(
            "SELECT arrow_cast(%s, 'Timestamp(Microsecond, Some(\"UTC\"))') AS tz, "
            "CAST(%s AS DECIMAL(10, 2)) AS d, make_array(1, 2, 3) AS l, %s AS s, true AS b, "
            "CAST(NULL AS BIGINT) AS n",
            ("2026-01-02T03:04:05Z", decimal.Decimal("12.34"), "héllo"),
        ).fetchone()
        assert row == (datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=utc),
                       decimal.Decimal("12.34"), [1, 2, 3], "héllo", True, None)
        with conn.cursor(binary=True) as cur:
            cur.execute("SELECT ts, amount, merchant_id FROM transactions WHERE user_id = %s "
                        "ORDER BY ts", (2,))
            assert cur.fetchall() == [
                (datetime.datetime(2026, 2, 2, 12, 0), 12.5, "m1"),
                (datetime.datetime(2026, 2, 20, 8, 0), 990.0, "m3"),
            ]
        # Flywheel's listings describe their columns to the extended protocol too.
        with conn.cursor() as cur:
            cur.execute("DESCRIBE FEATURE VIEW user_txn")
            assert cur.description is not None and cur.fetchall()
        # Transactions are accepted; each statement commits as it runs.
        with conn.transaction():
            conn.execute("INSERT INTO transactions VALUES (6, 'm6', '2026-03-03T00:00:00', 1.0)")
        assert conn.execute("SELECT count(*) FROM transactions WHERE user_id = 6").fetchone() == (1,)
        conn.execute("SET application_name = 'fraud-notebook'")
        assert conn.execute("SHOW application_name").fetchone() == ("fraud-notebook",)
        assert conn.execute("SHOW TimeZone").fetchone() == ("UTC",)


def test_answers_are_the_same_as_over_flight_sql(tour):
    with connect(tour) as pg, flightsql.connect(tour.uri) as fl:
        for statement in SAME_ANSWERS:
            over_pg = [tuple(r) for r in pg.execute(statement).fetchall()]
            with fl.cursor() as cur:
                cur.execute(statement)
                over_flight = [tuple(r) for r in cur.fetchall()]
            assert over_pg == over_flight, statement
            assert over_pg, f"{statement} returned no rows"


def test_errors_carry_sqlstate_codes_and_flights_messages(tour):
    cases = {
        "SELEC 1": "42601",
        "SELECT * FROM nope": "42P01",
        "CREATE TABLE transactions (a INT)": "42P07",
        "DELETE FROM transactions": "0A000",
        "CREATE ENTITY user (user_id BIGINT)": "42710",
    }
    with connect(tour) as pg, flightsql.connect(tour.uri) as fl:
        for statement, code in cases.items():
            with pytest.raises(psycopg.Error) as raised:
                pg.execute(statement)
            assert raised.value.sqlstate == code, (statement, raised.value)
            with pytest.raises(Exception) as over_flight, fl.cursor() as cur:
                cur.execute(statement)
            # The same message as Flight's (which ADBC wraps in its own prefix).
            assert raised.value.diag.message_primary in str(over_flight.value), statement
        # After an error the connection goes on.
        assert pg.execute("SELECT 1").fetchone() == (1,)


def test_sqlalchemy_inspector_lists_schemas_tables_views_columns_and_keys(tour):
    engine = sa.create_engine(f"postgresql+psycopg://flywheel@127.0.0.1:{tour.pg_port}/flywheel")
    inspector = sa.inspect(engine)
    assert {"public", "flywheel"} <= set(inspector.get_schema_names())
    assert {"transactions", "chargebacks"} <= set(inspector.get_table_names())
    assert {"user_txn", "merchant_txn", "is_fraud", "fraud_train"} <= set(
        inspector.get_view_names())
    assert "tables" in inspector.get_table_names(schema="flywheel")
    columns = {c["name"]: c["type"] for c in inspector.get_columns("transactions")}
    assert list(columns) == ["user_id", "merchant_id", "ts", "amount"]
    assert isinstance(columns["user_id"], sa.BIGINT)
    assert isinstance(columns["ts"], sa.TIMESTAMP)
    assert [c["name"] for c in inspector.get_columns("user_txn")] == ["user_id", "ts", "last_amount"]
    assert inspector.get_pk_constraint("transactions")["constrained_columns"] == []
    with engine.connect() as conn:
        total = conn.execute(sa.text("SELECT sum(amount) FROM transactions WHERE user_id = :u"),
                             {"u": 1}).scalar()
        assert total == 445.0
    engine.dispose()


def test_scram_authentication_with_the_servers_credentials(tmp_path):
    server = Server(tmp_path / "warehouse",
                    ["--pg-listen", "127.0.0.1:0", "--auth-user", "ada", "--auth-password", "s3cret",
                     "--auth-token", "t0ken"])
    try:
        with connect_as(server, "ada", "s3cret") as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        # The bearer token is the password of any other user.
        with connect_as(server, "robot", "t0ken") as conn:
            assert conn.execute("SELECT 2").fetchone() == (2,)
        for user, password in [("ada", "wrong"), ("ada", "t0ken"), ("robot", "s3cret")]:
            with pytest.raises(psycopg.OperationalError) as refused:
                connect_as(server, user, password)
            # libpq shows the message of the 28P01 error, not its code.
            assert "password authentication failed" in str(refused.value).lower(), refused.value
    finally:
        assert server.stop() == 0


def connect_as(server: Server, user: str, password: str, **kwargs) -> psycopg.Connection:
    return psycopg.connect(host="127.0.0.1", port=server.pg_port, user=user, password=password,
                           dbname="flywheel", autocommit=True, **kwargs)


def test_tls_from_the_servers_certificate(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    server = Server(tmp_path / "warehouse",
                    ["--pg-listen", "127.0.0.1:0", "--tls-cert", str(cert), "--tls-key", str(key)])
    try:
        with connect(server, sslmode="verify-full", sslrootcert=str(cert)) as conn:
            assert conn.info.pgconn.ssl_in_use
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        assert server.stop() == 0


def test_a_cancel_request_stops_a_running_query(pg_server):
    import threading
    import time

    with connect(pg_server) as conn:
        threading.Timer(1.0, conn.cancel).start()
        started = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled):
            # Billions of rows: minutes of work unless the cancel stops it.
            conn.execute("SELECT count(*) FROM generate_series(1, 3000000000)").fetchall()
        assert time.monotonic() - started < 60
        # The connection goes on.
        assert conn.execute("SELECT 1").fetchone() == (1,)


PGJDBC = Path("/usr/share/java/postgresql.jar")


@pytest.mark.skipif(shutil.which("java") is None, reason="no JVM on this machine for pgjdbc")
def test_pgjdbc_prepared_statements_and_metadata(tour):
    assert PGJDBC.exists(), "pgjdbc is missing: scripts/test.sh installs libpostgresql-jdbc-java"
    source = Path(__file__).parent / "jdbc" / "JdbcCheck.java"
    run = subprocess.run(
        ["java", "-cp", str(PGJDBC), str(source),
         f"jdbc:postgresql://127.0.0.1:{tour.pg_port}/flywheel"],
        capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[:2] == ["row 1 25.0", "row 1 420.0"]
    assert lines[2].startswith("product PostgreSQL 16")
    assert "table transactions TABLE" in lines and "table user_txn VIEW" in lines
    assert "table fraud_train VIEW" in lines
    assert [l for l in lines if l.startswith("column ")] == [
        "column user_id int8", "column ts timestamp", "column last_amount float8"]
    assert "view user_txn" in lines
