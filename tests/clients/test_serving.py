"""Flight serving with real clients: ADBC parameters, metadata and ingest, polars, pyarrow.flight
shard reads from several processes, authentication, and a client hanging up mid-stream."""

import multiprocessing as mp
from decimal import Decimal

import adbc_driver_flightsql.dbapi as flightsql
import polars as pl
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from conftest import Server

OBJECTS = [
    "CREATE ENTITY user (user_id BIGINT)",
    "CREATE TABLE transactions AS SELECT value % 100 AS user_id, CAST(value AS TIMESTAMP) AS ts, "
    "CAST(value AS DOUBLE) AS amount FROM range(0, 5000)",
    "CREATE TABLE chargebacks AS SELECT value % 100 AS user_id, "
    "CAST(value AS TIMESTAMP) + INTERVAL '500 milliseconds' AS ts, value % 7 = 0 AS is_fraud "
    "FROM range(0, 3000)",
    "CREATE FEATURE VIEW user_txn ENTITY user EVENT TIME ts AS SELECT user_id, ts, amount FROM transactions",
    "CREATE LABEL is_fraud ENTITY user EVENT TIME ts FROM (SELECT user_id, ts, is_fraud FROM chargebacks)",
    "CREATE TRAINING SET fraud_train LABEL is_fraud FEATURES user_txn",
]


def create_objects(server):
    with flightsql.connect(server.uri) as conn, conn.cursor() as cur:
        for sql in OBJECTS:
            cur.execute(sql)


def rows(table: pa.Table) -> list[tuple]:
    """The rows of a table as sorted tuples (strings normalised, so string views compare equal)."""
    cols = [c.cast(pa.string()) if pa.types.is_string_view(c.type) else c for c in table.columns]
    return sorted(zip(*[c.to_pylist() for c in cols]))


def test_parameters_bind_to_queries_and_executemany(server):
    with flightsql.connect(server.uri) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE users (id BIGINT, name VARCHAR)")
        cur.executemany("INSERT INTO users VALUES (?, ?)", [(1, "ada"), (2, "bob"), (3, "cy")])
        cur.execute("SELECT name FROM users WHERE id = ?", (2,))
        assert cur.fetchall() == [("bob",)]
        cur.execute("SELECT count(*) FROM users WHERE id >= $1", (2,))
        assert cur.fetchone()[0] == 2
        # executemany wrote one Delta commit: version 1 holds all three rows.
        cur.execute("SELECT count(*) FROM users VERSION AS OF 1")
        assert cur.fetchone()[0] == 3
        # More values than placeholders is refused, not silently cut short.
        for statement, values in [
            ("SELECT name FROM users WHERE id = ?", (2, 3)),
            ("INSERT INTO users VALUES (?, ?)", (4, "dee", "extra")),
        ]:
            with pytest.raises(flightsql.ProgrammingError, match="takes (1 parameter, but 2|2 parameters, but 3) values"):
                cur.execute(statement, values)
        cur.execute("SELECT count(*) FROM users")
        assert cur.fetchone()[0] == 3


def test_get_objects_lists_tables_feature_views_and_system_tables(server):
    create_objects(server)
    with flightsql.connect(server.uri) as conn:
        objects = conn.adbc_get_objects(depth="all").read_all().to_pylist()
        tables = {}
        for catalog in objects:
            assert catalog["catalog_name"] == "flywheel"
            for schema in catalog["catalog_db_schemas"]:
                for t in schema["db_schema_tables"]:
                    columns = [c["column_name"] for c in t["table_columns"] or []]
                    tables[(schema["db_schema_name"], t["table_name"])] = (t["table_type"], columns)
        assert tables[("public", "transactions")] == ("TABLE", ["user_id", "ts", "amount"])
        assert tables[("public", "user_txn")][0] == "FEATURE VIEW"
        assert tables[("public", "is_fraud")][0] == "LABEL"
        assert tables[("public", "fraud_train")][0] == "TRAINING SET"
        assert tables[("flywheel", "entities")][0] == "SYSTEM TABLE"
        assert "FEATURE VIEW" in conn.adbc_get_table_types()
        schema = conn.adbc_get_table_schema("user_txn")
        assert schema.names == ["user_id", "ts", "amount"]


def test_ingest_create_append_replace(server):
    batch = pa.table({"event_id": pa.array(range(100), pa.int64()), "kind": ["click"] * 100})
    with flightsql.connect(server.uri) as conn, conn.cursor() as cur:
        assert cur.adbc_ingest("events", batch, mode="create") == 100
        assert cur.adbc_ingest("events", batch, mode="append") == 100
        cur.execute("SELECT count(*), count(DISTINCT event_id) FROM events")
        assert cur.fetchone() == (200, 100)
        # A column the table does not have is refused, not dropped, and nothing is written.
        with pytest.raises(flightsql.Error) as extra:
            cur.adbc_ingest("events", batch.append_column("score", pa.array([0.5] * 100)), mode="append")
        assert "table `events`: it has no column `score`" in str(extra.value)
        cur.execute("SELECT count(*) FROM events")
        assert cur.fetchone() == (200,)
        with pytest.raises(flightsql.Error) as exists:
            cur.adbc_ingest("events", batch, mode="create")
        assert "events" in str(exists.value)
        assert cur.adbc_ingest("events", batch.slice(0, 10), mode="replace") == 10
        assert cur.adbc_ingest("fresh", batch, mode="create_append") == 100
        # ADBC sends nothing for a table without rows; the error says how to get an empty table.
        with pytest.raises(flightsql.Error) as empty:
            cur.adbc_ingest("empty", batch.slice(0, 0), mode="create")
        assert "CREATE TABLE" in str(empty.value)
        cur.execute("SELECT (SELECT count(*) FROM events) AS e, (SELECT count(*) FROM fresh) AS f")
        assert cur.fetchone() == (10, 100)


def test_unsigned_and_zoned_columns_are_ingested_as_types_delta_holds(server):
    # numpy-born data is often unsigned; Delta has no unsigned types, nor zones other than UTC.
    data = pa.table({
        "pixel": pa.array([200, 0], pa.uint8()),
        "item": pa.array([4_000_000_000, 1], pa.uint32()),
        "big": pa.array([2**63 - 1, 0], pa.uint64()),
        "seen": pa.array([0, 3_600_000_000_000], pa.timestamp("ns", tz="Europe/Paris")),
        "tags": pa.array([[65535], []], pa.list_(pa.uint16())),
    })
    with flightsql.connect(server.uri) as conn, conn.cursor() as cur:
        assert cur.adbc_ingest("pixels", data, mode="create") == 2
        assert cur.adbc_ingest("pixels", data, mode="append") == 2
        cur.execute("SELECT * FROM pixels")
        back = cur.fetch_arrow_table()
        assert back.schema.field("pixel").type == pa.int16()
        assert back.schema.field("item").type == pa.int64()
        assert back.schema.field("seen").type == pa.timestamp("us", tz="UTC")
        assert back.schema.field("tags").type.value_type == pa.int32()
        rows = back.to_pylist()[:2]
        assert [r["pixel"] for r in rows] == [200, 0]
        assert [r["item"] for r in rows] == [4_000_000_000, 1]
        assert [r["big"] for r in rows] == [2**63 - 1, 0]
        # The same instants, in UTC.
        assert [r["seen"].timestamp() for r in rows] == [0, 3600]
        assert rows[0]["tags"] == [65535]
        # A value no Delta type holds is refused, and no table is left behind.
        with pytest.raises(flightsql.Error, match="cannot create table `huge`: Cast error"):
            cur.adbc_ingest("huge", pa.table({"u": pa.array([2**64 - 1], pa.uint64())}), mode="create")
        with pytest.raises(flightsql.Error, match="column `t` is Time64"):
            cur.adbc_ingest("clock", pa.table({"t": pa.array([1], pa.time64("us"))}), mode="create")
        cur.execute("SELECT count(*) FROM information_schema.tables WHERE table_name IN ('huge', 'clock')")
        assert cur.fetchone() == (0,)


def test_flight_sql_answers_carry_plain_strings_for_jdbc_and_bi_tools(server):
    # DataFusion reads Delta strings as string views; the Flight SQL JDBC driver (18.x) refuses any
    # result holding one ("Unsupported ArrowType Utf8View"), and ADBC gives them no XDBC type.
    # Flight SQL answers carry plain strings; bulk reads for training code keep the views.
    with flightsql.connect(server.uri) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE people AS SELECT 1 AS id, 'ada' AS name, [ 'x', 'y' ] AS tags, X'00ff' AS raw")
        cur.execute("SELECT * FROM people")
        table = cur.fetch_arrow_table()
        assert table.schema.field("name").type == pa.string()
        assert table.schema.field("tags").type == pa.list_(pa.string())
        assert table.schema.field("raw").type == pa.binary()
        assert table.to_pylist() == [{"id": 1, "name": "ada", "tags": ["x", "y"], "raw": b"\x00\xff"}]
        cur.execute("SELECT name FROM people WHERE id = ?", (1,))
        assert cur.fetch_arrow_table().schema.field("name").type == pa.string()
        assert conn.adbc_get_table_schema("people").field("name").type == pa.string()
        objects = conn.adbc_get_objects(depth="columns", table_name_filter="people").read_all().to_pylist()
        columns = {
            c["column_name"]: c
            for catalog in objects
            for schema in catalog["catalog_db_schemas"]
            for t in schema["db_schema_tables"]
            for c in t["table_columns"]
        }
        assert columns["name"]["xdbc_data_type"] == 12  # VARCHAR (0, unknown, for a view)
        # Type names come from the Flight SQL column metadata, as GetXdbcTypeInfo lists them.
        assert (columns["id"]["xdbc_type_name"], columns["name"]["xdbc_type_name"]) == ("BIGINT", "VARCHAR")
    client = flight.connect(server.uri)
    info = client.get_flight_info(flight.FlightDescriptor.for_path("table", "people"))
    assert info.schema.field("name").type == pa.string_view()
    assert client.do_get(info.endpoints[0].ticket).read_all().column("name").to_pylist() == ["ada"]


def test_a_record_batch_over_adbcs_default_message_limit_is_ingested_with_the_documented_option(server):
    rows = 2_500_000  # 40 MB in one record batch: over ADBC's default 16 MiB per message
    big = pa.table({"id": pa.array(range(rows), pa.int64()), "x": pa.array([0.5] * rows)})
    assert big.num_rows == big.to_batches()[0].num_rows
    options = {"adbc.flight.sql.client_option.with_max_msg_size": str(256 << 20)}
    with flightsql.connect(server.uri, db_kwargs=options) as conn, conn.cursor() as cur:
        assert cur.adbc_ingest("big_batch", big, mode="create") == rows
        cur.execute("SELECT count(*), sum(id) FROM big_batch")
        assert cur.fetchone() == (rows, rows * (rows - 1) // 2)


def test_polars_read_database_through_adbc(server):
    with flightsql.connect(server.uri) as conn:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE scores AS SELECT value AS id, value * 1.5 AS score FROM range(0, 10)")
        frame = pl.read_database("SELECT id, score FROM scores WHERE id < 3 ORDER BY id", connection=conn)
    assert frame["id"].to_list() == [0, 1, 2]
    assert frame["score"].to_list() == [0.0, 1.5, 3.0]


def test_every_type_a_table_holds_reads_back_through_pyarrow_and_adbc(server):
    """Answers are IPC messages the server builds itself from the column buffers: the C++ (pyarrow)
    and Go (ADBC) readers must read them exactly, nulls, slices and multi-message batches included."""
    n = 200_000
    ids = pa.array(range(n), pa.int64())
    source = pa.table({
        "id": ids,
        "i8": pa.array([None if i % 7 == 0 else i % 100 for i in range(n)], pa.int8()),
        "i32": pa.array([None if i % 5 == 0 else i * 3 for i in range(n)], pa.int32()),
        "f32": pa.array([i / 4 for i in range(n)], pa.float32()),
        "f64": pa.array([None if i % 3 == 0 else i / 7 for i in range(n)], pa.float64()),
        "flag": pa.array([None if i % 11 == 0 else i % 2 == 0 for i in range(n)], pa.bool_()),
        "name": pa.array([None if i % 13 == 0 else ("u%d" % i if i % 2 else "a longer user name %d" % i)
                          for i in range(n)], pa.string()),
        "blob": pa.array([None if i % 17 == 0 else bytes([i % 256]) * (i % 20) for i in range(n)], pa.binary()),
        "amount": pa.array([None if i % 19 == 0 else Decimal(i) / 100 for i in range(n)], pa.decimal128(12, 2)),
        "day": pa.array([i % 20000 for i in range(n)], pa.date32()),
        "ts": pa.array([i * 1_000_003 for i in range(n)], pa.timestamp("us")),
        "embedding": pa.array([None if i % 23 == 0 else [i / 3, None, -i / 5][: i % 4] for i in range(n)],
                              pa.list_(pa.float32())),
        "pair": pa.array([None if i % 29 == 0 else {"a": i, "b": "b%d" % i} for i in range(n)],
                         pa.struct([("a", pa.int64()), ("b", pa.string())])),
    })
    with flightsql.connect(server.uri) as conn, conn.cursor() as cur:
        # ADBC sends each batch as one message, of at most 16 MiB.
        batches = pa.RecordBatchReader.from_batches(source.schema, source.to_batches(max_chunksize=50_000))
        cur.adbc_ingest("typed", batches, mode="create")
        cur.execute("SELECT * FROM typed ORDER BY id")
        through_adbc = cur.fetch_arrow_table()
    client = flight.connect(server.uri)
    info = client.get_flight_info(flight.FlightDescriptor.for_path("table", "typed"))
    through_flight = pa.concat_tables(client.do_get(e.ticket).read_all() for e in info.endpoints)
    for read in (through_adbc, through_flight):
        assert read.num_rows == n
        # Strings and binaries come back as views; pyarrow sorts plain strings only.
        assert read.select(source.column_names).cast(source.schema).sort_by("id").equals(source)


def read_shard(args):
    """One training worker: its own process and client, one ticket."""
    uri, ticket = args
    client = flight.connect(uri)
    return client.do_get(flight.Ticket(ticket)).read_all()


def test_training_set_shards_read_in_parallel_processes(server):
    create_objects(server)
    client = flight.connect(server.uri)
    info = client.get_flight_info(flight.FlightDescriptor.for_path("training_set", "fraud_train", "shards=3"))
    assert len(info.endpoints) == 3
    assert info.total_records == 3000
    tickets = [(server.uri, e.ticket.ticket) for e in info.endpoints]
    with mp.get_context("spawn").Pool(3) as pool:
        shards = pool.map(read_shard, tickets)
    union = pa.concat_tables([s.cast(info.schema) for s in shards])
    with flightsql.connect(server.uri) as conn, conn.cursor() as cur:
        cur.execute("SELECT * FROM fraud_train")
        whole = cur.fetch_arrow_table()
    assert union.num_rows == whole.num_rows == 3000
    assert rows(union) == rows(whole)

    # Any query, split in two.
    q = "SELECT user_id, sum(amount) AS total FROM transactions GROUP BY user_id"
    info = client.get_flight_info(flight.FlightDescriptor.for_path("sql", q, "shards=2"))
    parts = [client.do_get(e.ticket).read_all() for e in info.endpoints]
    assert sum(p.num_rows for p in parts) == 100
    assert rows(pa.concat_tables(parts)) == sorted(
        (u, float(sum(v for v in range(5000) if v % 100 == u))) for u in range(100)
    )


def test_a_second_epoch_reads_the_same_rows(server):
    create_objects(server)
    client = flight.connect(server.uri)
    info = client.get_flight_info(flight.FlightDescriptor.for_path("training_set", "fraud_train", "shards=2"))
    tickets = [(server.uri, e.ticket.ticket) for e in info.endpoints]
    epochs = []
    with mp.get_context("spawn").Pool(2) as pool:
        for _ in range(2):
            epochs.append(pool.map(read_shard, tickets))
    for first, second in zip(*epochs):
        assert first.num_rows > 0
        assert second.equals(first)
    assert sum(t.num_rows for t in epochs[0]) == 3000


def test_unknown_training_set_is_not_found(server):
    client = flight.connect(server.uri)
    # pyarrow raises NOT_FOUND as ArrowKeyError (a KeyError).
    with pytest.raises(KeyError) as missing:
        client.get_flight_info(flight.FlightDescriptor.for_path("training_set", "nope"))
    assert "training set `nope` not found" in str(missing.value)


def test_token_and_password_authentication(warehouse):
    s = Server(warehouse, ["--auth-token", "s3cret", "--auth-user", "ada", "--auth-password", "lovelace"])
    try:
        client = flight.connect(s.uri)
        descriptor = flight.FlightDescriptor.for_path("sql", "SELECT 1 AS one")
        with pytest.raises(flight.FlightUnauthenticatedError):
            client.get_flight_info(descriptor)
        bearer = flight.FlightCallOptions(headers=[(b"authorization", b"Bearer s3cret")])
        info = client.get_flight_info(descriptor, bearer)
        assert client.do_get(info.endpoints[0].ticket, bearer).read_all().num_rows == 1

        # Basic credentials through the handshake give a session token.
        header = client.authenticate_basic_token("ada", "lovelace")
        session = flight.FlightCallOptions(headers=[header])
        assert client.get_flight_info(descriptor, session).total_records == -1
        with pytest.raises(flight.FlightUnauthenticatedError):
            client.authenticate_basic_token("ada", "babbage")

        # ADBC with user and password.
        with flightsql.connect(s.uri, db_kwargs={"username": "ada", "password": "lovelace"}) as conn:
            with conn.cursor() as cur:
                cur.execute("SELECT 42")
                assert cur.fetchone()[0] == 42
        with pytest.raises(flightsql.Error):
            with flightsql.connect(s.uri, db_kwargs={"username": "ada", "password": "nope"}) as conn:
                with conn.cursor() as cur:
                    cur.execute("SELECT 1")
    finally:
        assert s.stop() == 0


def test_client_hanging_up_mid_stream(server):
    client = flight.connect(server.uri)
    info = client.get_flight_info(
        flight.FlightDescriptor.for_path("sql", "SELECT value, value * 2 AS v FROM range(0, 300000000)")
    )
    reader = client.do_get(info.endpoints[0].ticket)
    first = reader.read_chunk()
    assert first.data.num_rows > 0
    reader.cancel()
    client.close()
    # The server still answers, and the fixture checks it still shuts down cleanly.
    with flightsql.connect(server.uri) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1")
        assert cur.fetchone()[0] == 1


def test_online_lookup_example_client(server):
    """examples/online_lookup.py against a real server: the documented Python lookup path."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "examples" / "online_lookup.py"
    spec = importlib.util.spec_from_file_location("online_lookup", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    with flightsql.connect(server.uri) as conn, conn.cursor() as cur:
        for sql in [
            "CREATE ENTITY user (user_id BIGINT)",
            "CREATE TABLE spend (user_id BIGINT, ts TIMESTAMP, amount DOUBLE)",
            "INSERT INTO spend VALUES (42, '2026-01-01T00:00:00', 1.0), (42, '2026-01-02T00:00:00', 12.5), "
            "(43, '2026-01-01T00:00:00', 3.0)",
            "CREATE FEATURE VIEW user_spend ENTITY user EVENT TIME ts WITH (online = true) "
            "AS SELECT user_id, ts, amount FROM spend",
        ]:
            cur.execute(sql)
    client = flight.connect(server.uri)
    rows = example.lookup(client, ["user_spend"], [[43], [42], [44]]).to_pylist()
    assert rows == [
        {"user_id": 43, "user_spend__found": True, "amount": 3.0},
        {"user_id": 42, "user_spend__found": True, "amount": 12.5},
        {"user_id": 44, "user_spend__found": False, "amount": None},
    ]
