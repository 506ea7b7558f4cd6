"""Delta interop: tables Flywheel writes are read by the `deltalake` Python package, and back."""

import datetime

import adbc_driver_flightsql.dbapi as flightsql
import polars as pl
import pytest
import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import DeltaTable, write_deltalake

from conftest import Server, table_location


def test_deltalake_reads_what_flywheel_wrote(server, warehouse):
    with flightsql.connect(server.uri) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE events (user_id BIGINT, kind VARCHAR)")
        cur.execute("INSERT INTO events VALUES (1, 'click'), (2, 'buy')")
        cur.execute("INSERT INTO events VALUES (3, 'view')")

    dt = DeltaTable(table_location(server.uri, "events"))
    assert dt.version() == 2
    got = dt.to_pyarrow_table().sort_by("user_id")
    assert got.column("user_id").to_pylist() == [1, 2, 3]
    assert got.column("kind").cast(pa.string()).to_pylist() == ["click", "buy", "view"]
    # Time travel agrees between the two readers.
    dt.load_as_version(1)
    assert dt.to_pyarrow_table().num_rows == 2


def test_flywheel_reads_what_deltalake_wrote(server, tmp_path):
    location = tmp_path / "external_delta"
    write_deltalake(str(location), pa.table({"k": [1, 2], "v": ["a", "b"]}))
    write_deltalake(str(location), pa.table({"k": [3], "v": ["c"]}), mode="append")
    with flightsql.connect(server.uri) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE EXTERNAL TABLE ext STORED AS DELTA LOCATION '{location}'")
        cur.execute("SELECT count(*), sum(k) FROM ext")
        assert cur.fetchone() == (3, 6)
        cur.execute("SELECT count(*) FROM ext VERSION AS OF 0")
        assert cur.fetchone()[0] == 2


def test_partitioned_delta_tables_are_read_and_appended_to(server, tmp_path):
    # Partition columns come back from Delta scans as dictionaries; every answer decodes them, and
    # the schema a FlightInfo or prepared statement announces must say so (ADBC checks it).
    location = tmp_path / "partitioned"
    write_deltalake(str(location), pa.table({"region": ["eu", "us"], "id": [1, 2], "v": [1.0, 2.0]}),
                    partition_by=["region"])
    with flightsql.connect(server.uri) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE EXTERNAL TABLE part STORED AS DELTA LOCATION '{location}'")
        assert conn.adbc_get_table_schema("part").field("region").type == pa.string()
        cur.execute("INSERT INTO part VALUES ('eu', 3, 3.0)")
        assert cur.adbc_ingest("part", pa.table({"id": [4], "v": [4.0], "region": ["jp"]}),
                               mode="append") == 1
        cur.execute("SELECT region, id, v FROM part ORDER BY id")
        table = cur.fetch_arrow_table()
        assert table.schema.field("region").type == pa.string()
        assert table.to_pylist() == [
            {"region": "eu", "id": 1, "v": 1.0}, {"region": "us", "id": 2, "v": 2.0},
            {"region": "eu", "id": 3, "v": 3.0}, {"region": "jp", "id": 4, "v": 4.0},
        ]
        cur.execute("SELECT id FROM part WHERE region = ? ORDER BY id", ("eu",))
        assert [r[0] for r in cur.fetchall()] == [1, 3]
    # Other Delta readers see the appends, in their partitions.
    dt = DeltaTable(str(location))
    assert sorted(dt.to_pyarrow_table().column("id").to_pylist()) == [1, 2, 3, 4]
    assert any("region=jp" in f for f in dt.file_uris())


def test_appends_keep_the_tables_check_constraints(server, tmp_path):
    location = tmp_path / "checked"
    write_deltalake(str(location), pa.table({"k": pa.array([1], pa.int64()), "v": ["a"]}))
    DeltaTable(str(location)).alter.add_constraint({"k_positive": "k > 0"})
    with flightsql.connect(server.uri) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE EXTERNAL TABLE checked STORED AS DELTA LOCATION '{location}'")
        cur.execute("INSERT INTO checked VALUES (2, 'b')")
        with pytest.raises(flightsql.ProgrammingError) as insert:
            cur.execute("INSERT INTO checked VALUES (-1, 'x')")
        with pytest.raises(flightsql.ProgrammingError) as ingest:
            cur.adbc_ingest("checked", pa.table({"k": pa.array([-2], pa.int64()), "v": ["y"]}), mode="append")
        for refused in (insert, ingest):
            message = str(refused.value)
            assert "INVALID_ARGUMENT" in message and "table `checked`: rows break its constraints" in message
        cur.execute("SELECT k FROM checked ORDER BY k")
        assert cur.fetchall() == [(1,), (2,)]
    assert sorted(DeltaTable(str(location)).to_pyarrow_table().column("k").to_pylist()) == [1, 2]


def test_appends_compute_generated_columns(server, tmp_path):
    from deltalake.schema import Field, PrimitiveType, Schema

    location = tmp_path / "generated"
    DeltaTable.create(str(location), schema=Schema([
        Field("k", PrimitiveType("long"), nullable=True),
        Field("g", PrimitiveType("long"), nullable=True, metadata={"delta.generationExpression": "k * 2"}),
    ]))
    with flightsql.connect(server.uri) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE EXTERNAL TABLE generated STORED AS DELTA LOCATION '{location}'")
        cur.execute("INSERT INTO generated (k) VALUES (5)")
        assert cur.adbc_ingest("generated", pa.table({"k": pa.array([6], pa.int64())}), mode="append") == 1
        # A value that contradicts the expression is refused.
        with pytest.raises(flightsql.ProgrammingError) as wrong:
            cur.execute("INSERT INTO generated VALUES (7, 1)")
        assert "table `generated`: rows break its constraints" in str(wrong.value)
        cur.execute("SELECT k, g FROM generated ORDER BY k")
        assert cur.fetchall() == [(5, 10), (6, 12)]


def test_a_partition_column_can_key_features_and_labels(server, tmp_path):
    # A partition column comes back dictionary-encoded: it still fits an entity's VARCHAR key.
    day = lambda d: datetime.datetime(2026, 1, d)  # noqa: E731
    write_deltalake(str(tmp_path / "tx"), pa.table({
        "region": ["eu", "eu", "us", "us"], "ts": pa.array([day(1), day(3), day(2), day(4)], pa.timestamp("us")),
        "amount": [1.0, 2.0, 3.0, 4.0]}), partition_by=["region"])
    write_deltalake(str(tmp_path / "cb"), pa.table({
        "region": ["eu", "us"], "ts": pa.array([day(5), day(5)], pa.timestamp("us")),
        "is_fraud": [True, False]}), partition_by=["region"])
    with flightsql.connect(server.uri) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE EXTERNAL TABLE tx STORED AS DELTA LOCATION '{tmp_path / 'tx'}'")
        cur.execute(f"CREATE EXTERNAL TABLE cb STORED AS DELTA LOCATION '{tmp_path / 'cb'}'")
        cur.execute("CREATE ENTITY region (region VARCHAR)")
        cur.execute("CREATE FEATURE VIEW spend ENTITY region EVENT TIME ts AS "
                    "SELECT region, ts, sum(amount) OVER (PARTITION BY region ORDER BY ts) AS total FROM tx")
        cur.execute("CREATE LABEL fraud ENTITY region EVENT TIME ts FROM (SELECT region, ts, is_fraud FROM cb)")
        cur.execute("CREATE TRAINING SET train LABEL fraud FEATURES spend")
        cur.execute("SELECT region, is_fraud, total FROM train ORDER BY region")
        assert cur.fetchall() == [("eu", True, 3.0), ("us", False, 7.0)]


def test_other_readers_read_the_parquet_files_flywheel_writes(server, warehouse):
    # Random floats do not shrink under Snappy: Flywheel stores those pages uncompressed (Data Page
    # V2), beside compressed pages of the other columns. Readers outside Flywheel read them all.
    with flightsql.connect(server.uri) as conn, conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE feats AS SELECT value AS id, random() AS f, CAST(value % 7 AS VARCHAR) AS c "
            "FROM generate_series(1, 300000)"
        )
        cur.execute("SELECT id, f, c FROM feats ORDER BY id")
        expected = cur.fetch_arrow_table()
    assert expected.num_rows == 300_000

    dt = DeltaTable(table_location(server.uri, "feats"))
    files = dt.file_uris()
    # Written with Data Page V2 (the files' format version says which writer version made them).
    assert {pq.ParquetFile(f).metadata.format_version for f in files} == {"2.6"}
    by_pyarrow = pa.concat_tables(pq.read_table(f).select(["id", "f", "c"]) for f in files)
    by_polars = pl.read_parquet(files).select(["id", "f", "c"]).to_arrow()
    by_deltalake = dt.to_pyarrow_table().select(["id", "f", "c"])
    for name, got in [("pyarrow", by_pyarrow), ("polars", by_polars), ("deltalake", by_deltalake)]:
        got = got.sort_by("id")
        assert got.column("id").to_pylist() == expected.column("id").to_pylist(), name
        assert got.column("f").to_pylist() == expected.column("f").to_pylist(), name
        assert got.column("c").cast(pa.string()).to_pylist() == expected.column("c").cast(pa.string()).to_pylist(), name


def test_parquet_data_pages_v1_for_readers_without_v2_support(tmp_path):
    server = Server(tmp_path / "warehouse", env={"FLYWHEEL_PARQUET_DATA_PAGES": "v1"})
    try:
        with flightsql.connect(server.uri) as conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE t AS SELECT value AS id, random() AS f FROM generate_series(1, 1000)")
            cur.execute("SELECT count(*) FROM t")
            assert cur.fetchone()[0] == 1000
        files = DeltaTable(table_location(server.uri, "t")).file_uris()
        assert {pq.ParquetFile(f).metadata.format_version for f in files} == {"1.0"}
        assert pa.concat_tables(pq.read_table(f) for f in files).num_rows == 1000
    finally:
        assert server.stop() == 0
