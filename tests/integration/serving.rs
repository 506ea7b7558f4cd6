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

/// The names of the files in the download cache's folder, sorted (entries end in `.flight`,
/// recordings under way hold `.tmp-`).
fn cache_files(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The download cache's entries (`.flight` files), waiting until there are `n`: a recording is put
/// in place just after its answer was sent.
async fn cache_entries(dir: &std::path::Path, n: usize) -> Vec<String> {
    let list = || {
        let mut names = cache_files(dir);
        names.retain(|n| n.ends_with(".flight"));
        names
    };
    for _ in 0..300 {
        if list().len() >= n {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    list()
}

/// Server options with a download cache of 1 GiB in `cache`.
fn with_cache(cache: &std::path::Path) -> ServeOptions {
    ServeOptions {
        download_cache: flywheel::server::DownloadCacheOptions {
            dir: Some(cache.to_path_buf()),
            max_bytes: 1 << 30,
        },
        ..ServeOptions::default()
    }
}

/// A server in `dir` with a download cache: the server, its warehouse (`dir/wh`) and its cache
/// folder (`dir/cache`).
async fn start_with_cache(
    dir: &std::path::Path,
) -> (TestServer, std::path::PathBuf, std::path::PathBuf) {
    let (warehouse, cache) = (dir.join("wh"), dir.join("cache"));
    let server = TestServer::start_with(&warehouse, with_cache(&cache)).await;
    (server, warehouse, cache)
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

/// Marks the cache entries `names` last used an hour ago; returns that time.
fn mark_unused(dir: &std::path::Path, names: &[String]) -> std::time::SystemTime {
    let an_hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    for name in names {
        let file = std::fs::File::options()
            .write(true)
            .open(dir.join(name))
            .expect("entry");
        file.set_modified(an_hour_ago).expect("sets the time");
    }
    an_hour_ago
}

/// Asserts that each entry was replayed since `since` (a replay marks its entry used).
fn assert_replayed(dir: &std::path::Path, names: &[String], since: std::time::SystemTime) {
    for name in names {
        let used = std::fs::metadata(dir.join(name))
            .and_then(|m| m.modified())
            .expect("mtime");
        assert!(used > since, "{name} was not replayed");
    }
}

#[tokio::test]
async fn repeated_shard_reads_are_sent_from_the_download_cache() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, warehouse, cache) = start_with_cache(dir.path()).await;
    create_objects(&server).await;
    let mut sql = server.sql_client().await;
    let mut flight = server.flight_client().await;
    let whole = sorted_rows(&query(&mut sql, "SELECT * FROM fraud_train").await);
    let info = flight
        .get_flight_info(path(&["training_set", "fraud_train", "shards=2"]))
        .await
        .expect("info")
        .into_inner();

    // The first read records each shard; a query that may change is not recorded.
    assert_eq!(union_rows(&read_endpoints(&mut flight, &info).await), whole);
    let q = path(&["sql", "SELECT * FROM fraud_train"]);
    let sql_info = flight.get_flight_info(q).await.expect("info").into_inner();
    read_endpoints(&mut flight, &sql_info).await;
    let entries = cache_entries(&cache, 2).await;
    assert_eq!(entries.len(), 2, "{entries:?}");

    // A later read is sent from the entries, which marks them used (the least recently used
    // leave first when the cache is full).
    let an_hour_ago = mark_unused(&cache, &entries);
    assert_eq!(union_rows(&read_endpoints(&mut flight, &info).await), whole);
    assert_replayed(&cache, &entries, an_hour_ago);

    // What was removed from the table does not come back from the cache: with the version's data
    // files gone (as after a vacuum), its read fails as it would without a cache.
    let table_dir = crate::common::table_dir(&warehouse, "fraud_train").await;
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

    // An entry never outlives its table: a table created again under the same name, at the same
    // version number, is read afresh.
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
            cache_entries(&cache, 3).await;
        }
        sql.execute_update(statement.into(), None)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
        if statement.starts_with("DROP") {
            // The dropped table's recording goes with it; the training set's stay.
            assert_eq!(cache_entries(&cache, 0).await.len(), 2);
        }
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

/// The cache's entries once its recordings have settled (no temporary file, the same listing
/// over three looks 100 ms apart).
async fn settled_entries(dir: &std::path::Path) -> Vec<String> {
    let (mut last, mut same) = (cache_files(dir), 0);
    for _ in 0..300 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let now = cache_files(dir);
        same = if now == last { same + 1 } else { 0 };
        last = now;
        if same >= 3 && !last.iter().any(|n| n.contains(".tmp-")) {
            break;
        }
    }
    last.retain(|n| n.ends_with(".flight"));
    last
}

#[tokio::test]
async fn a_read_larger_than_the_cache_replays_its_first_shards_every_epoch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, warehouse, cache) = start_with_cache(dir.path()).await;
    let mut sql = server.sql_client().await;
    for statement in [
        "CREATE TABLE events AS SELECT value AS id, CAST(value AS DOUBLE) * 0.5 AS f \
         FROM range(0, 20000)",
        "INSERT INTO events SELECT value AS id, 1.5 AS f FROM range(20000, 40000)",
        "INSERT INTO events SELECT value AS id, 2.5 AS f FROM range(40000, 60000)",
    ] {
        sql.execute_update(statement.into(), None)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    let whole = sorted_rows(&query(&mut sql, "SELECT * FROM events").await);
    assert_eq!(whole.len(), 60_000);
    let descriptor = path(&["table", "events", "shards=3"]);
    // The three shards' entry sizes, from a cache that holds them all.
    let mut flight = server.flight_client().await;
    let info = flight
        .get_flight_info(descriptor.clone())
        .await
        .expect("info")
        .into_inner();
    assert_eq!(union_rows(&read_endpoints(&mut flight, &info).await), whole);
    let entries = settled_entries(&cache).await;
    assert_eq!(entries.len(), 3, "{entries:?}");
    let shard = |k: usize| {
        entries
            .iter()
            .find(|n| n.contains(&format!("-s{k}of3-")))
            .unwrap_or_else(|| panic!("no entry of shard {k}: {entries:?}"))
            .clone()
    };
    let size = |name: String| std::fs::metadata(cache.join(name)).expect("entry").len();
    let (s0, s1, s2) = (size(shard(0)), size(shard(1)), size(shard(2)));
    server.stop().await.expect("clean shutdown");
    std::fs::remove_dir_all(&cache).expect("empties the cache");

    // Room for shards 0 and 1, not 2. With least-recently-used eviction, shard 2 would evict
    // shard 0, which the next epoch reads first and records again, evicting shard 1, ...: no read
    // would ever replay.
    let options = ServeOptions {
        download_cache: flywheel::server::DownloadCacheOptions {
            dir: Some(cache.clone()),
            max_bytes: s0 + s1 + s2 / 2,
        },
        ..ServeOptions::default()
    };
    let server = TestServer::start_with(&warehouse, options).await;
    let mut flight = server.flight_client().await;
    let info = flight
        .get_flight_info(descriptor)
        .await
        .expect("info")
        .into_inner();
    let kept = vec![shard(0), shard(1)];
    for epoch in 0..3 {
        let since = (epoch > 0).then(|| mark_unused(&cache, &kept));
        assert_eq!(union_rows(&read_endpoints(&mut flight, &info).await), whole);
        assert_eq!(settled_entries(&cache).await, kept, "after epoch {epoch}");
        if let Some(since) = since {
            assert_replayed(&cache, &kept, since);
        }
    }
    server.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_configured_cache_folder_that_cannot_be_used_stops_the_server_with_the_fix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let not_a_folder = dir.path().join("file");
    std::fs::write(&not_a_folder, b"x").expect("file");
    let engine = flywheel::Engine::open(dir.path().join("wh").to_str().expect("utf-8"))
        .await
        .expect("engine");
    let listener = flywheel::server::bind("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("binds");
    let options = ServeOptions {
        download_cache: flywheel::server::DownloadCacheOptions {
            dir: Some(not_a_folder.join("cache")),
            max_bytes: 1 << 30,
        },
        ..ServeOptions::default()
    };
    let e = flywheel::server::serve_with(engine, listener, options, std::future::pending())
        .await
        .expect_err("refused");
    assert!(e.to_string().contains("download_cache_dir"), "{e}");
}

#[tokio::test]
async fn a_removed_file_of_a_version_with_many_files_is_noticed() {
    // Over 32 data files, the cache checks them with one listing instead of a request each.
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, warehouse, cache) = start_with_cache(dir.path()).await;
    let mut sql = server.sql_client().await;
    sql.execute_update("CREATE TABLE many AS SELECT 0 AS x".into(), None)
        .await
        .expect("create");
    for i in 1..40 {
        sql.execute_update(format!("INSERT INTO many VALUES ({i})"), None)
            .await
            .expect("insert");
    }
    let mut flight = server.flight_client().await;
    let info = flight
        .get_flight_info(path(&["table", "many", "shards=1"]))
        .await
        .expect("info")
        .into_inner();
    let count = |shards: Vec<Vec<RecordBatch>>| -> usize {
        shards.iter().flatten().map(|b| b.num_rows()).sum()
    };
    assert_eq!(count(read_endpoints(&mut flight, &info).await), 40);
    let entries = cache_entries(&cache, 1).await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    let an_hour_ago = mark_unused(&cache, &entries);
    assert_eq!(count(read_endpoints(&mut flight, &info).await), 40);
    assert_replayed(&cache, &entries, an_hour_ago);

    let table_dir = crate::common::table_dir(&warehouse, "many").await;
    let parquet = std::fs::read_dir(&table_dir)
        .expect("table folder")
        .flatten()
        .find(|f| f.path().extension().is_some_and(|e| e == "parquet"))
        .expect("a data file");
    std::fs::remove_file(parquet.path()).expect("removes");
    let read = redeem(&mut flight, &info.endpoint[0]).await;
    assert!(read.is_err(), "a version missing a file was served");
    server.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_warmed_training_set_is_read_from_the_cache_at_once() {
    use prost::Message as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, _, cache) = start_with_cache(dir.path()).await;
    create_objects(&server).await;
    let mut sql = server.sql_client().await;
    let mut flight = server.flight_client().await;
    let warm = |descriptor: FlightDescriptor| arrow_flight::Action {
        r#type: "flywheel.warm_download_cache".into(),
        body: descriptor.encode_to_vec().into(),
    };
    let results = |client: FlightServiceClient<Channel>, action| async move {
        let mut client = client;
        let results: Vec<serde_json::Value> = client
            .do_action(action)
            .await?
            .into_inner()
            .map_ok(|r| serde_json::from_slice(&r.body).expect("JSON"))
            .try_collect()
            .await?;
        Ok::<_, tonic::Status>(results)
    };

    let listed: Vec<String> = flight
        .list_actions(arrow_flight::Empty {})
        .await
        .expect("list")
        .into_inner()
        .map_ok(|a| a.r#type)
        .try_collect()
        .await
        .expect("actions");
    assert!(
        listed.contains(&"flywheel.warm_download_cache".to_string()),
        "{listed:?}"
    );

    // Each shard is recorded before any reader asks; warming again finds them.
    let descriptor = path(&["training_set", "fraud_train", "shards=2"]);
    let warmed = results(flight.clone(), warm(descriptor.clone()))
        .await
        .expect("warms");
    assert_eq!(warmed.len(), 2, "{warmed:?}");
    assert!(
        warmed.iter().all(|r| r["cached"] == "recorded"),
        "{warmed:?}"
    );
    let entries = cache_entries(&cache, 2).await;
    assert_eq!(entries.len(), 2, "{entries:?}");
    let again = results(flight.clone(), warm(descriptor.clone()))
        .await
        .expect("warms");
    assert!(again.iter().all(|r| r["cached"] == "already"), "{again:?}");

    // The first read is a replay of the entries (which marks them used): the same rows.
    let an_hour_ago = mark_unused(&cache, &entries);
    let info = flight
        .get_flight_info(descriptor)
        .await
        .expect("info")
        .into_inner();
    assert_eq!(
        union_rows(&read_endpoints(&mut flight, &info).await),
        sorted_rows(&query(&mut sql, "SELECT * FROM fraud_train").await)
    );
    assert_replayed(&cache, &entries, an_hour_ago);

    // Queries are not cached; a server without a cache says how to get one.
    let e = results(flight.clone(), warm(path(&["sql", "SELECT 1"])))
        .await
        .expect_err("a query");
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    let plain = TestServer::start(&dir.path().join("other")).await;
    let e = results(plain.flight_client().await, warm(path(&["table", "t"])))
        .await
        .expect_err("no cache");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    assert!(e.message().contains("download_cache_size"), "{e}");
    plain.stop().await.expect("clean shutdown");
    server.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn training_sets_built_through_the_server_are_warmed_for_their_first_read() {
    use prost::Message as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("cache");
    let options = ServeOptions {
        warm_training_sets: true,
        ..with_cache(&cache)
    };
    let server = TestServer::start_with(&dir.path().join("wh"), options).await;
    create_objects(&server).await;
    let mut sql = server.sql_client().await;
    let mut flight = server.flight_client().await;
    // What the action says of each shard `descriptor` hands out: after the server's own warming,
    // every one is there already.
    let ask = |client: FlightServiceClient<Channel>, descriptor: FlightDescriptor| async move {
        let mut client = client;
        let action = arrow_flight::Action {
            r#type: "flywheel.warm_download_cache".into(),
            body: descriptor.encode_to_vec().into(),
        };
        let results: Vec<serde_json::Value> = client
            .do_action(action)
            .await
            .expect("action")
            .into_inner()
            .map_ok(|r| serde_json::from_slice(&r.body).expect("JSON"))
            .try_collect()
            .await
            .expect("results");
        results
    };
    let default = path(&["training_set", "fraud_train"]);
    let in_two = path(&["training_set", "fraud_train", "shards=2"]);

    // Nobody read it yet: the recordings of its first version appear by themselves.
    let info = flight
        .get_flight_info(default.clone())
        .await
        .expect("info")
        .into_inner();
    let shards = info.endpoint.len();
    let entries = cache_entries(&cache, shards).await;
    assert_eq!(entries.len(), shards, "{entries:?}");
    let warmed = ask(flight.clone(), default.clone()).await;
    assert!(
        warmed.iter().all(|w| w["cached"] == "already"),
        "{warmed:?}"
    );
    let first = warmed[0]["version"].as_u64().expect("a version");

    // The first read is a replay of them, with the rows of the training set.
    let an_hour_ago = mark_unused(&cache, &entries);
    assert_eq!(
        union_rows(&read_endpoints(&mut flight, &info).await),
        sorted_rows(&query(&mut sql, "SELECT * FROM fraud_train").await)
    );
    assert_replayed(&cache, &entries, an_hour_ago);

    // A REFRESH's new version is warmed too, for each shard count its readers asked for (the
    // default, read above, and two shards, asked for here).
    flight.get_flight_info(in_two.clone()).await.expect("info");
    for statement in [
        "INSERT INTO chargebacks VALUES (7, TIMESTAMP '2000-01-01 00:00:00', true)",
        "REFRESH TRAINING SET fraud_train FULL",
    ] {
        sql.execute_update(statement.into(), None)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    let entries = cache_entries(&cache, 2 * shards + 2).await;
    assert_eq!(entries.len(), 2 * shards + 2, "{entries:?}");
    for descriptor in [default, in_two] {
        let warmed = ask(flight.clone(), descriptor).await;
        assert!(
            warmed.iter().all(|w| w["cached"] == "already"),
            "{warmed:?}"
        );
        assert!(warmed[0]["version"].as_u64() > Some(first), "{warmed:?}");
    }
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
        ..ServeOptions::default()
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
        ..ServeOptions::default()
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
