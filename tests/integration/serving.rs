//! Arrow Flight serving against a real server: bound parameters, catalog metadata, bulk ingest,
//! sharded dataset reads, authentication, TLS and clients that hang up mid-stream.

use std::sync::Arc;

use arrow::array::{Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::{
    CommandGetDbSchemas, CommandGetPrimaryKeys, CommandGetTables, CommandStatementIngest, SqlInfo,
    TableDefinitionOptions, TableExistsOption, TableNotExistOption,
};
use arrow_flight::{FlightDescriptor, FlightInfo};
use flywheel::server::{Credentials, ServeOptions};
use futures::{StreamExt, TryStreamExt, stream};
use tonic::Code;
use tonic::transport::Channel;

use crate::common::{TestServer, query, sorted_rows};

fn strings(batches: &[RecordBatch], column: &str) -> Vec<String> {
    let mut out = Vec::new();
    for b in batches {
        let c = arrow::compute::cast(b.column_by_name(column).expect("column"), &DataType::Utf8)
            .expect("casts");
        let c = c.as_any().downcast_ref::<StringArray>().expect("strings");
        out.extend((0..c.len()).map(|i| c.value(i).to_string()));
    }
    out
}

fn single_i64(batches: &[RecordBatch]) -> i64 {
    let b = batches.iter().find(|b| b.num_rows() > 0).expect("a row");
    b.column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .expect("int64")
        .value(0)
}

/// Reads every endpoint of `info` with a raw Flight client.
async fn read_endpoints(
    client: &mut FlightServiceClient<Channel>,
    info: &FlightInfo,
) -> Vec<Vec<RecordBatch>> {
    let mut shards = Vec::new();
    for endpoint in &info.endpoint {
        let ticket = endpoint.ticket.clone().expect("ticket");
        let data = client.do_get(ticket).await.expect("do_get").into_inner();
        let batches =
            FlightRecordBatchStream::new_from_flight_data(data.map_err(FlightError::from))
                .try_collect::<Vec<_>>()
                .await
                .expect("shard streams");
        shards.push(batches);
    }
    shards
}

/// The rows of all shards together, sorted (see [`sorted_rows`]).
fn union_rows(shards: &[Vec<RecordBatch>]) -> Vec<String> {
    let mut rows: Vec<String> = shards.iter().flat_map(|s| sorted_rows(s)).collect();
    rows.sort();
    rows
}

fn path(items: &[&str]) -> FlightDescriptor {
    FlightDescriptor::new_path(items.iter().map(|s| s.to_string()).collect())
}

#[tokio::test]
async fn parameters_bind_to_queries_and_inserts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path()).await;
    let mut client = server.sql_client().await;
    client
        .execute_update("CREATE TABLE t (id BIGINT, name VARCHAR)".into(), None)
        .await
        .expect("create");

    // executemany: three rows bound to one INSERT land in one commit.
    let mut insert = client
        .prepare("INSERT INTO t VALUES (?, ?)".into(), None)
        .await
        .expect("prepare insert");
    assert_eq!(insert.parameter_schema().expect("schema").fields().len(), 2);
    let rows = RecordBatch::try_from_iter([
        ("0", Arc::new(Int64Array::from(vec![1, 2, 3])) as _),
        ("1", Arc::new(StringArray::from(vec!["a", "b", "c"])) as _),
    ])
    .expect("batch");
    insert.set_parameters(rows).expect("bind");
    assert_eq!(insert.execute_update().await.expect("insert"), 3);
    let one_commit = query(&mut client, "SELECT count(*) FROM t VERSION AS OF 1").await;
    assert_eq!(single_i64(&one_commit), 3);
    let e = client
        .execute("SELECT * FROM t VERSION AS OF 2".into(), None)
        .await
        .expect_err("no second commit");
    assert!(e.to_string().contains("latest version is 1"), "{e}");

    // A query with a positional parameter, bound twice.
    let mut select = client
        .prepare("SELECT name FROM t WHERE id = $1".into(), None)
        .await
        .expect("prepare select");
    for (id, name) in [(2, "b"), (3, "c")] {
        let param = RecordBatch::try_from_iter([("0", Arc::new(Int64Array::from(vec![id])) as _)])
            .expect("batch");
        select.set_parameters(param).expect("bind");
        let info = select.execute().await.expect("execute");
        let mut batches = Vec::new();
        for endpoint in info.endpoint {
            let s = client
                .do_get(endpoint.ticket.expect("ticket"))
                .await
                .expect("do_get");
            batches.extend(s.try_collect::<Vec<_>>().await.expect("rows"));
        }
        assert_eq!(strings(&batches, "name"), vec![name]);
    }

    // Two rows bound to a query is refused with the reason.
    let two = RecordBatch::try_from_iter([("0", Arc::new(Int64Array::from(vec![1, 2])) as _)])
        .expect("batch");
    select.set_parameters(two).expect("bind");
    let e = select.execute().await.expect_err("two rows");
    assert!(e.to_string().contains("exactly one row"), "{e}");
    server.stop().await.expect("clean shutdown");
}

/// Entity, source tables, a feature view, a label and a training set over them.
const FLYWHEEL_OBJECTS: &[&str] = &[
    "CREATE ENTITY user (user_id BIGINT)",
    "CREATE TABLE transactions AS SELECT value % 50 AS user_id, \
     CAST(value AS TIMESTAMP) AS ts, CAST(value AS DOUBLE) AS amount FROM range(0, 500)",
    "CREATE TABLE chargebacks AS SELECT value % 50 AS user_id, \
     CAST(value AS TIMESTAMP) + INTERVAL '500 milliseconds' AS ts, value % 7 = 0 AS is_fraud FROM range(0, 300)",
    "CREATE FEATURE VIEW user_txn ENTITY user EVENT TIME ts AS SELECT user_id, ts, amount FROM transactions",
    "CREATE LABEL is_fraud ENTITY user EVENT TIME ts FROM (SELECT user_id, ts, is_fraud FROM chargebacks)",
    "CREATE TRAINING SET fraud_train LABEL is_fraud FEATURES user_txn",
];

async fn create_objects(server: &TestServer) {
    let mut client = server.sql_client().await;
    for sql in FLYWHEEL_OBJECTS {
        client
            .execute_update(sql.to_string(), None)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

#[tokio::test]
async fn catalog_metadata_lists_flywheel_objects() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path()).await;
    create_objects(&server).await;
    let mut client = server.sql_client().await;

    let info = client.get_catalogs().await.expect("catalogs");
    let catalogs = query_info(&mut client, info).await;
    assert_eq!(strings(&catalogs, "catalog_name"), vec!["flywheel"]);

    let info = client
        .get_db_schemas(CommandGetDbSchemas {
            catalog: Some("flywheel".into()),
            db_schema_filter_pattern: None,
        })
        .await
        .expect("schemas");
    let schemas = query_info(&mut client, info).await;
    assert_eq!(
        strings(&schemas, "db_schema_name"),
        vec!["flywheel", "public"]
    );

    let tables = |types: &[&str], name: Option<&str>| CommandGetTables {
        catalog: None,
        db_schema_filter_pattern: None,
        table_name_filter_pattern: name.map(str::to_string),
        table_types: types.iter().map(|t| t.to_string()).collect(),
        include_schema: true,
    };
    let info = client.get_tables(tables(&[], None)).await.expect("tables");
    let all = query_info(&mut client, info).await;
    let listed: Vec<(String, String)> = strings(&all, "table_name")
        .into_iter()
        .zip(strings(&all, "table_type"))
        .collect();
    for (name, kind) in [
        ("transactions", "TABLE"),
        ("user_txn", "FEATURE VIEW"),
        ("is_fraud", "LABEL"),
        ("fraud_train", "TRAINING SET"),
        ("entities", "SYSTEM TABLE"),
    ] {
        assert!(
            listed.contains(&(name.to_string(), kind.to_string())),
            "{name} {kind} in {listed:?}"
        );
    }
    let info = client
        .get_tables(tables(&["FEATURE VIEW"], Some("user%")))
        .await
        .expect("filtered");
    let views = query_info(&mut client, info).await;
    assert_eq!(strings(&views, "table_name"), vec!["user_txn"]);
    // The table's Arrow schema travels as IPC bytes.
    let schema_bytes = views[0]
        .column_by_name("table_schema")
        .expect("schema column")
        .as_any()
        .downcast_ref::<arrow::array::BinaryArray>()
        .expect("binary")
        .value(0)
        .to_vec();
    let schema = arrow::ipc::convert::try_schema_from_ipc_buffer(&schema_bytes).expect("schema");
    assert_eq!(
        schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect::<Vec<_>>(),
        vec!["user_id", "ts", "amount"]
    );

    let info = client.get_table_types().await.expect("types");
    let types = strings(&query_info(&mut client, info).await, "table_type");
    for t in [
        "TABLE",
        "FEATURE VIEW",
        "LABEL",
        "TRAINING SET",
        "SYSTEM TABLE",
    ] {
        assert!(types.contains(&t.to_string()), "{t} in {types:?}");
    }

    let info = client
        .get_primary_keys(CommandGetPrimaryKeys {
            catalog: None,
            db_schema: None,
            table: "user_txn".into(),
        })
        .await
        .expect("keys");
    let keys = query_info(&mut client, info).await;
    assert_eq!(strings(&keys, "column_name"), vec!["user_id", "ts"]);
    assert_eq!(strings(&keys, "key_name"), vec!["user", "user"]);

    let info = client
        .get_xdbc_type_info(Default::default())
        .await
        .expect("xdbc");
    let type_names = strings(&query_info(&mut client, info).await, "type_name");
    assert!(type_names.contains(&"BIGINT".to_string()), "{type_names:?}");

    let info = client
        .get_sql_info(vec![SqlInfo::FlightSqlServerName])
        .await
        .expect("sql info");
    assert_eq!(query_info(&mut client, info).await[0].num_rows(), 1);
    server.stop().await.expect("clean shutdown");
}

async fn query_info(
    client: &mut arrow_flight::sql::client::FlightSqlServiceClient<Channel>,
    info: FlightInfo,
) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    for endpoint in info.endpoint {
        let s = client
            .do_get(endpoint.ticket.expect("ticket"))
            .await
            .expect("do_get");
        out.extend(s.try_collect::<Vec<_>>().await.expect("rows"));
    }
    out
}

fn ingest_command(
    table: &str,
    missing: TableNotExistOption,
    exists: TableExistsOption,
) -> CommandStatementIngest {
    CommandStatementIngest {
        table_definition_options: Some(TableDefinitionOptions {
            if_not_exist: missing.into(),
            if_exists: exists.into(),
        }),
        table: table.into(),
        schema: None,
        catalog: None,
        temporary: false,
        transaction_id: None,
        options: Default::default(),
    }
}

fn events(from: i64, n: i64) -> Vec<Result<RecordBatch, FlightError>> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("event_id", DataType::Int64, false),
        Field::new("kind", DataType::Utf8, true),
    ]));
    // Several batches: the ingest streams them into one commit.
    (0..3)
        .map(|part| {
            let ids: Vec<i64> = (from..from + n).filter(|i| i % 3 == part).collect();
            let kinds: Vec<String> = ids.iter().map(|i| format!("k{}", i % 4)).collect();
            Ok(RecordBatch::try_new(
                Arc::clone(&schema),
                vec![
                    Arc::new(Int64Array::from(ids)),
                    Arc::new(StringArray::from(kinds)),
                ],
            )
            .expect("batch"))
        })
        .collect()
}

#[tokio::test]
async fn bulk_ingest_creates_appends_and_replaces() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path()).await;
    let mut client = server.sql_client().await;
    use TableExistsOption as E;
    use TableNotExistOption as M;

    let n = client
        .execute_ingest(
            ingest_command("events", M::Create, E::Fail),
            stream::iter(events(0, 1000)),
        )
        .await
        .expect("create");
    assert_eq!(n, 1000);
    let n = client
        .execute_ingest(
            ingest_command("events", M::Fail, E::Append),
            stream::iter(events(1000, 500)),
        )
        .await
        .expect("append");
    assert_eq!(n, 500);
    let rows = query(&mut client, "SELECT count(DISTINCT event_id) FROM events").await;
    assert_eq!(single_i64(&rows), 1500);
    // Each ingest was one commit: version 0 (create) and 1 (append).
    let rows = query(&mut client, "SELECT count(*) FROM events VERSION AS OF 0").await;
    assert_eq!(single_i64(&rows), 1000);

    let e = client
        .execute_ingest(
            ingest_command("events", M::Create, E::Fail),
            stream::iter(events(0, 10)),
        )
        .await
        .expect_err("exists");
    assert!(e.to_string().contains("already exists"), "{e}");
    let e = client
        .execute_ingest(
            ingest_command("nope", M::Fail, E::Append),
            stream::iter(events(0, 10)),
        )
        .await
        .expect_err("missing");
    assert!(e.to_string().contains("nope"), "{e}");

    let n = client
        .execute_ingest(
            ingest_command("events", M::Create, E::Replace),
            stream::iter(events(0, 30)),
        )
        .await
        .expect("replace");
    assert_eq!(n, 30);
    let rows = query(&mut client, "SELECT count(*) FROM events").await;
    assert_eq!(single_i64(&rows), 30);
    server.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn shards_hold_every_row_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path()).await;
    create_objects(&server).await;
    let mut sql = server.sql_client().await;
    let mut flight = server.flight_client().await;

    // A training set (small: hash-split) read in 3 shards equals the whole set.
    let whole = sorted_rows(&query(&mut sql, "SELECT * FROM fraud_train").await);
    let info = flight
        .get_flight_info(path(&["training_set", "fraud_train", "shards=3"]))
        .await
        .expect("info")
        .into_inner();
    assert_eq!(info.endpoint.len(), 3);
    assert_eq!(info.total_records, whole.len() as i64);
    assert_eq!(union_rows(&read_endpoints(&mut flight, &info).await), whole);

    // A version pins the snapshot: after one more row, version 0 still reads 300 rows.
    sql.execute_update(
        "INSERT INTO chargebacks VALUES (1, '2030-01-01T00:00:00', true)".into(),
        None,
    )
    .await
    .expect("insert");
    for (options, rows) in [(&["version=0"][..], 300), (&[][..], 301)] {
        let mut p = vec!["table", "chargebacks"];
        p.extend_from_slice(options);
        let info = flight
            .get_flight_info(path(&p))
            .await
            .expect("info")
            .into_inner();
        assert_eq!(info.total_records, rows);
        let n: usize = read_endpoints(&mut flight, &info)
            .await
            .iter()
            .flatten()
            .map(|b| b.num_rows())
            .sum();
        assert_eq!(n as i64, rows, "{options:?}");
    }

    // A table big enough to split by file ranges: each shard reads only its part.
    sql.execute_update(
        "CREATE TABLE big AS SELECT value AS id, value * 2 AS v FROM range(0, 2500000)".into(),
        None,
    )
    .await
    .expect("big");
    let info = flight
        .get_flight_info(path(&["table", "big", "shards=3"]))
        .await
        .expect("info")
        .into_inner();
    let shards = read_endpoints(&mut flight, &info).await;
    let mut ids: Vec<i64> = shards
        .iter()
        .flatten()
        .flat_map(|b| {
            let c = b
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .expect("ids");
            c.values().to_vec()
        })
        .collect();
    assert_eq!(ids.len(), 2_500_000);
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 2_500_000, "a row was read twice");
    let non_empty = shards
        .iter()
        .filter(|s| s.iter().any(|b| b.num_rows() > 0))
        .count();
    assert!(
        non_empty >= 2,
        "the work was split: {non_empty} shards had rows"
    );

    // Any query, in 2 shards.
    let q = "SELECT user_id, count(*) AS n FROM transactions GROUP BY user_id";
    let info = flight
        .get_flight_info(path(&["sql", q, "shards=2"]))
        .await
        .expect("info")
        .into_inner();
    assert_eq!(
        union_rows(&read_endpoints(&mut flight, &info).await),
        sorted_rows(&query(&mut sql, q).await)
    );

    // Errors name what is wrong.
    let e = flight
        .get_flight_info(path(&["training_set", "nope"]))
        .await
        .expect_err("unknown");
    assert_eq!(e.code(), Code::NotFound, "{e}");
    let e = flight
        .get_flight_info(path(&["table", "big", "shards=0"]))
        .await
        .expect_err("zero shards");
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    let e = flight
        .get_flight_info(path(&["table", "big", "shards=2", "shards=3"]))
        .await
        .expect_err("shards twice");
    assert!(
        e.message().contains("`shards` is given more than once"),
        "{e}"
    );
    // A query split by row hash runs once per shard: one whose rows change from run to run
    // (`random()`) would lose and repeat rows, so it is refused, naming the function.
    let info = flight
        .get_flight_info(path(&[
            "sql",
            "SELECT user_id, random() AS draw FROM chargebacks GROUP BY user_id",
            "shards=2",
        ]))
        .await
        .expect("info")
        .into_inner();
    let ticket = info.endpoint[0].ticket.clone().expect("ticket");
    let e = flight.do_get(ticket).await.expect_err("random() in shards");
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    assert!(e.message().contains("`random()`"), "{e}");
    // SQL text in a command descriptor (what `FlightDescriptor.for_command(sql)` sends) is not a
    // Flight SQL command: the answer says what to send instead.
    let e = flight
        .get_flight_info(FlightDescriptor::new_cmd("SELECT * FROM big"))
        .await
        .expect_err("SQL text is not a command");
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    assert!(e.message().contains("for_path(\"sql\", QUERY)"), "{e}");
    // Flight SQL commands go on to be answered as before.
    assert_eq!(
        single_i64(&query(&mut sql, "SELECT count(*) FROM big").await),
        2_500_000
    );
    server.stop().await.expect("clean shutdown");
}

/// Reads an endpoint to its end; the call's error, if any.
async fn redeem(
    client: &mut FlightServiceClient<Channel>,
    endpoint: &arrow_flight::FlightEndpoint,
) -> Result<(), tonic::Status> {
    let ticket = endpoint.ticket.clone().expect("ticket");
    let data = client.do_get(ticket).await?.into_inner();
    data.try_collect::<Vec<_>>().await.map(|_| ())
}

#[tokio::test]
async fn repeated_shard_reads_give_the_same_rows_and_never_outlive_their_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path()).await;
    create_objects(&server).await;
    let mut sql = server.sql_client().await;
    let mut flight = server.flight_client().await;
    let whole = sorted_rows(&query(&mut sql, "SELECT * FROM fraud_train").await);
    let info = flight
        .get_flight_info(path(&["training_set", "fraud_train", "shards=2"]))
        .await
        .expect("info")
        .into_inner();
    // Epochs: every read of the same tickets gives every row once.
    for _ in 0..2 {
        assert_eq!(union_rows(&read_endpoints(&mut flight, &info).await), whole);
    }

    // What was removed from the table does not come back: with the version's data files gone
    // (as after a vacuum), its read fails.
    let table_dir = crate::common::table_dir(dir.path(), "fraud_train").await;
    let mut removed = 0;
    for file in std::fs::read_dir(&table_dir)
        .expect("table folder")
        .flatten()
    {
        if file.path().extension().is_some_and(|e| e == "parquet") {
            std::fs::remove_file(file.path()).expect("removes");
            removed += 1;
        }
    }
    assert!(removed > 0, "the training set has data files");
    let read = redeem(&mut flight, &info.endpoint[0]).await;
    assert!(read.is_err(), "a vacuumed version was served");

    // A table created again under the same name, at the same version number, is read afresh.
    for statement in [
        "CREATE TABLE t AS SELECT 1 AS x",
        "DROP TABLE t",
        "CREATE TABLE t AS SELECT 2 AS x",
    ] {
        if statement.starts_with("DROP") {
            let info = flight
                .get_flight_info(path(&["table", "t", "version=0"]))
                .await
                .expect("info")
                .into_inner();
            let first = read_endpoints(&mut flight, &info).await;
            assert_eq!(single_i64(&first.concat()), 1);
        }
        sql.execute_update(statement.into(), None)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    let info = flight
        .get_flight_info(path(&["table", "t", "version=0"]))
        .await
        .expect("info")
        .into_inner();
    assert_eq!(
        single_i64(&read_endpoints(&mut flight, &info).await.concat()),
        2
    );
    server.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn credentials_are_required_when_configured() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = ServeOptions {
        credentials: Credentials {
            token: Some("s3cret".into()),
            user: Some(("ada".into(), "lovelace".into())),
        },
        tls: None,
    };
    let server = TestServer::start_with(dir.path(), options).await;

    // No credentials: every call is refused, metadata included.
    let mut anonymous = server.sql_client().await;
    let e = anonymous
        .execute("SELECT 1".into(), None)
        .await
        .expect_err("refused");
    assert!(
        e.to_string().contains("Unauthenticated") || e.to_string().contains("no credentials"),
        "{e}"
    );
    let mut raw = server.flight_client().await;
    let e = raw
        .get_flight_info(path(&["sql", "SELECT 1"]))
        .await
        .expect_err("refused");
    assert_eq!(e.code(), Code::Unauthenticated);

    // The configured token.
    let mut with_token = server.sql_client().await;
    with_token.set_token("s3cret".into());
    assert_eq!(single_i64(&query(&mut with_token, "SELECT 42").await), 42);

    // A ticket issued to an authenticated caller is no key by itself: redeeming it needs
    // credentials too.
    let info = with_token
        .execute("SELECT 42".into(), None)
        .await
        .expect("info");
    let ticket = info.endpoint[0].ticket.clone().expect("ticket");
    let e = anonymous.do_get(ticket).await.expect_err("refused");
    assert!(e.to_string().contains("no credentials"), "{e}");

    // Basic user/password through the handshake, then the issued bearer token.
    let mut user = server.sql_client().await;
    user.handshake("ada", "lovelace").await.expect("handshake");
    assert!(user.token().is_some_and(|t| t != "s3cret"));
    assert_eq!(single_i64(&query(&mut user, "SELECT 7").await), 7);
    let mut wrong = server.sql_client().await;
    assert!(wrong.handshake("ada", "babbage").await.is_err());
    server.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn tls_serves_clients_that_trust_the_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A test CA and a certificate for `localhost` signed by it, made with the openssl command.
    let file = |name: &str| dir.path().join(name);
    let openssl = |args: &[&str]| {
        let status = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("the openssl command makes the test certificates");
        assert!(status.success(), "openssl {args:?}");
    };
    std::fs::write(
        file("leaf.ext"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .expect("ext");
    openssl(
        &[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ]
        .iter()
        .chain(&[
            "-subj",
            "/CN=flywheel-test-ca",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ])
        .copied()
        .collect::<Vec<_>>(),
    );
    openssl(
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
        ]
        .iter()
        .chain(&["-keyout", "key.pem", "-out", "leaf.csr"])
        .copied()
        .collect::<Vec<_>>(),
    );
    openssl(
        &[
            "x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        ]
        .iter()
        .chain(&[
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "leaf.ext",
            "-out",
            "cert.pem",
        ])
        .copied()
        .collect::<Vec<_>>(),
    );
    let cert = file("cert.pem");
    let key = file("key.pem");
    let ca = std::fs::read(file("ca.pem")).expect("ca");
    let pem = std::fs::read(&cert).expect("cert");
    let options = ServeOptions {
        credentials: Credentials::default(),
        tls: Some((pem.clone(), std::fs::read(&key).expect("key"))),
    };
    let server = TestServer::start_with(&dir.path().join("wh"), options).await;
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(&ca))
        .domain_name("localhost");
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{}", server.addr))
        .expect("endpoint")
        .tls_config(tls)
        .expect("tls config")
        .connect()
        .await
        .expect("TLS connects");
    let mut client = arrow_flight::sql::client::FlightSqlServiceClient::new(channel);
    assert_eq!(single_i64(&query(&mut client, "SELECT 5").await), 5);
    // A plaintext client gets nowhere.
    let plain = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
        .expect("endpoint")
        .connect()
        .await;
    if let Ok(channel) = plain {
        let mut c = arrow_flight::sql::client::FlightSqlServiceClient::new(channel);
        assert!(c.execute("SELECT 1".into(), None).await.is_err());
    }
    server.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_client_hanging_up_mid_stream_leaves_the_server_healthy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path()).await;
    for _ in 0..3 {
        let mut client = server.sql_client().await;
        let info = client
            .execute(
                "SELECT value, value * 2 AS v FROM range(0, 200000000)".into(),
                None,
            )
            .await
            .expect("info");
        let ticket = info.endpoint[0].ticket.clone().expect("ticket");
        let mut stream = client.do_get(ticket).await.expect("do_get");
        let first = stream.next().await.expect("a batch").expect("ok");
        assert!(first.num_rows() > 0);
        // Hang up after one batch of a 200M-row result.
        drop(stream);
        drop(client);
    }
    let mut client = server.sql_client().await;
    assert_eq!(single_i64(&query(&mut client, "SELECT 1").await), 1);
    // Shutdown does not wait on abandoned streams.
    server.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_query_failing_mid_stream_reports_its_error_after_the_rows_sent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path()).await;
    let mut client = server.sql_client().await;
    let sql = "SELECT CAST(CASE WHEN value < 150000 THEN '1' ELSE 'x' END AS BIGINT) AS n \
               FROM range(0, 200000)";
    let info = client.execute(sql.into(), None).await.expect("info");
    let ticket = info.endpoint[0].ticket.clone().expect("ticket");
    let mut stream = client.do_get(ticket).await.expect("do_get");
    let mut rows = 0;
    let error = loop {
        match stream.next().await {
            Some(Ok(batch)) => rows += batch.num_rows(),
            Some(Err(e)) => break e,
            None => panic!("the stream ended without the cast error after {rows} rows"),
        }
    };
    assert!(rows > 0 && rows <= 150_000, "{rows} rows before the error");
    assert!(error.to_string().contains("'x'"), "{error}");

    // A ticket that is not one: refused by name, and the server goes on.
    let mut raw = server.flight_client().await;
    let e = raw
        .do_get(arrow_flight::Ticket::new("not a ticket"))
        .await
        .expect_err("refused");
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    assert_eq!(single_i64(&query(&mut client, "SELECT 1").await), 1);
    server.stop().await.expect("clean shutdown");
}
