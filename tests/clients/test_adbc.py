"""Flight SQL through the real ADBC driver: connect, create, insert, query, fetch as Arrow."""

import adbc_driver_flightsql.dbapi as flightsql
import pyarrow as pa
import pytest


def connect(server):
    return flightsql.connect(server.uri)


def test_create_insert_query_fetch_arrow(server):
    with connect(server) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE users (id BIGINT, name VARCHAR, score DOUBLE)")
        cur.execute("INSERT INTO users VALUES (1, 'ada', 9.5), (2, 'bob', 7.0), (3, 'cy', NULL)")
        cur.execute("SELECT id, name, score FROM users ORDER BY id")
        table = cur.fetch_arrow_table()
    assert table.num_rows == 3
    assert table.column("id").to_pylist() == [1, 2, 3]
    assert table.column("name").cast(pa.string()).to_pylist() == ["ada", "bob", "cy"]
    assert table.column("score").to_pylist() == [9.5, 7.0, None]


def test_dbapi_rows_and_time_travel(server):
    with connect(server) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE t AS SELECT 1 AS v")
        cur.execute("INSERT INTO t VALUES (2)")
        cur.execute("SELECT sum(v) FROM t")
        assert cur.fetchone()[0] == 3
        cur.execute("SELECT sum(v) FROM t VERSION AS OF 0")
        assert cur.fetchone()[0] == 1


def test_errors_reach_the_client(server):
    with connect(server) as conn, conn.cursor() as cur:
        with pytest.raises(flightsql.Error) as bad_sql:
            cur.execute("SELEC 1")
        assert "Line: 1, Column: 1" in str(bad_sql.value)
        with pytest.raises(flightsql.Error) as missing:
            cur.execute("SELECT * FROM no_such_table")
        assert "no_such_table" in str(missing.value)
        # The connection still works after errors.
        cur.execute("SELECT 42 AS answer")
        assert cur.fetchone()[0] == 42


def test_tables_persist_across_restarts(warehouse):
    from conftest import Server

    first = Server(warehouse)
    with connect(first) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE kept AS SELECT 'still here' AS s")
    assert first.stop() == 0
    second = Server(warehouse)
    try:
        with connect(second) as conn, conn.cursor() as cur:
            cur.execute("SELECT s FROM kept")
            assert cur.fetchone()[0] == "still here"
    finally:
        assert second.stop() == 0
