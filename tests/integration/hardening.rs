//! A hostile but legitimate client against real servers: no statement, race, ticket or crash
//! loses data or takes the server down, and clients touch only the files they are allowed to.
//!
//! Statements that could overflow a stack run against the `flywheel` binary itself (its threads'
//! stacks are the ones that matter, and an abort there would not take this test binary down).

use std::path::Path;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::{Any, CommandStatementQuery, ProstMessageExt};
use arrow_flight::{FlightDescriptor, Ticket};
use flywheel::engine::FileAccess;
use flywheel::engine::limits::Limits;
use flywheel::{Engine, EngineOptions};
use futures::TryStreamExt;
use prost::Message;
use tonic::Code;
use tonic::transport::Channel;

use crate::common::{ServerProcess, TestServer, sorted_rows};

/// Runs `sql` as Flight SQL does (`GetFlightInfo`, then `DoGet` of every endpoint) and returns its
/// rows, or the status of whichever call failed.
async fn run(
    flight: &mut FlightServiceClient<Channel>,
    sql: &str,
) -> Result<Vec<RecordBatch>, tonic::Status> {
    let cmd = CommandStatementQuery {
        query: sql.into(),
        transaction_id: None,
    };
    let descriptor = FlightDescriptor::new_cmd(cmd.as_any().encode_to_vec());
    let info = flight.get_flight_info(descriptor).await?.into_inner();
    let mut out = Vec::new();
    for endpoint in info.endpoint {
        let ticket = endpoint.ticket.expect("an endpoint has a ticket");
        out.extend(do_get(flight, ticket).await?);
    }
    Ok(out)
}

async fn do_get(
    flight: &mut FlightServiceClient<Channel>,
    ticket: Ticket,
) -> Result<Vec<RecordBatch>, tonic::Status> {
    let data = flight.do_get(ticket).await?.into_inner();
    FlightRecordBatchStream::new_from_flight_data(data.map_err(FlightError::from))
        .try_collect()
        .await
        .map_err(|e| match e {
            FlightError::Tonic(status) => *status,
            other => tonic::Status::unknown(other.to_string()),
        })
}

async fn ok(flight: &mut FlightServiceClient<Channel>, sql: &str) -> Vec<RecordBatch> {
    match run(flight, sql).await {
        Ok(batches) => batches,
        Err(status) => panic!("`{}` failed: {status:?}", &sql[..sql.len().min(120)]),
    }
}

async fn refused(flight: &mut FlightServiceClient<Channel>, sql: &str) -> tonic::Status {
    match run(flight, sql).await {
        Ok(_) => panic!("`{}` was not refused", &sql[..sql.len().min(120)]),
        Err(status) => status,
    }
}

/// Which of two concurrent creates of one name won (1 or 2): exactly one must succeed, and the
/// other be told the name exists.
fn the_winner<T: std::fmt::Debug>(
    round: usize,
    one: &Result<T, tonic::Status>,
    two: &Result<T, tonic::Status>,
) -> i64 {
    match (one, two) {
        (Ok(_), Err(s)) if s.code() == Code::AlreadyExists => 1,
        (Err(s), Ok(_)) if s.code() == Code::AlreadyExists => 2,
        _ => panic!("round {round}: exactly one create wins: {one:?} / {two:?}"),
    }
}

fn count(batches: &[RecordBatch]) -> Vec<String> {
    sorted_rows(batches)
}

#[tokio::test]
async fn path_like_names_are_refused_and_the_warehouse_stays_intact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let warehouse = dir.path().join("a").join("b").join("wh");
    let server = TestServer::start(&warehouse).await;
    let mut flight = server.flight_client().await;
    ok(
        &mut flight,
        "CREATE TABLE events AS SELECT * FROM (VALUES (1), (2)) t(id)",
    )
    .await;
    for name in ["..", ".", "../../etc", "../../../victim", "a/b", "x\ny", ""] {
        let quoted = name.replace('"', "\"\"");
        for sql in [
            format!("CREATE TABLE \"{quoted}\" (a BIGINT)"),
            format!("CREATE TABLE \"{quoted}\" AS SELECT 1 AS a"),
            format!("CREATE ENTITY \"{quoted}\" (id BIGINT)"),
        ] {
            let status = refused(&mut flight, &sql).await;
            assert_eq!(status.code(), Code::InvalidArgument, "{sql}: {status:?}");
        }
    }
    // Nothing was written outside the warehouse, and everything in it still answers.
    for outside in ["etc", "victim", "a/etc", "a/b/etc"] {
        assert!(!dir.path().join(outside).exists(), "{outside} was created");
    }
    assert_eq!(
        count(&ok(&mut flight, "SELECT count(*) FROM events").await),
        vec!["2"]
    );
    assert_eq!(count(&ok(&mut flight, "SELECT 1").await), vec!["1"]);
    drop(flight);
    server.stop().await.expect("stops");
    let restarted = TestServer::start(&warehouse).await;
    let mut flight = restarted.flight_client().await;
    assert_eq!(
        count(&ok(&mut flight, "SELECT count(*) FROM events").await),
        vec!["2"],
        "the table survives a restart"
    );
}

#[tokio::test]
async fn one_of_two_creates_of_one_name_wins_and_its_table_survives() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = TestServer::start(dir.path()).await;
    let b = TestServer::start(dir.path()).await;
    let (mut fa, mut fb) = (a.flight_client().await, b.flight_client().await);
    let mut fa2 = a.flight_client().await;
    for round in 0..6 {
        // Two servers, then two connections of one server.
        let create = |name: &str, v: i64| {
            format!("CREATE TABLE {name} AS SELECT {v} AS who, value FROM generate_series(1, 2000)")
        };
        let name = format!("same_{round}");
        let (one, two) = (create(&name, 1), create(&name, 2));
        let (ra, rb) = if round % 2 == 0 {
            tokio::join!(run(&mut fa, &one), run(&mut fb, &two))
        } else {
            tokio::join!(run(&mut fa, &one), run(&mut fa2, &two))
        };
        let winner = the_winner(round, &ra, &rb);
        let rows = ok(
            &mut fb,
            &format!("SELECT min(who), max(who), count(*) FROM {name}"),
        )
        .await;
        assert_eq!(
            count(&rows),
            vec![format!("{winner},{winner},2000")],
            "round {round}: the winner's table is whole"
        );

        // With IF NOT EXISTS, the loser simply succeeds.
        let name = format!("maybe_{round}");
        let sql = format!("CREATE TABLE IF NOT EXISTS {name} AS SELECT 7 AS x");
        let (ra, rb) = tokio::join!(run(&mut fa, &sql), run(&mut fb, &sql));
        assert!(ra.is_ok() && rb.is_ok(), "{ra:?} / {rb:?}");
        assert_eq!(
            count(&ok(&mut fa, &format!("SELECT x FROM {name}")).await),
            vec!["7"]
        );
    }
}

#[tokio::test]
async fn deep_and_huge_statements_are_answered_or_refused_and_the_server_lives() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = ServerProcess::start(&dir.path().join("wh"), &[]);
    let mut flight = server.flight().await;
    ok(
        &mut flight,
        "CREATE TABLE tx AS SELECT value AS user_id FROM generate_series(1, 100000)",
    )
    .await;
    let sum = format!("SELECT {}", vec!["1"; 300].join(" + "));
    assert_eq!(count(&ok(&mut flight, &sum).await), vec!["300"]);
    let ors: Vec<String> = (0..2000).map(|i| format!("user_id = {i}")).collect();
    let sql = format!("SELECT count(*) FROM tx WHERE {}", ors.join(" OR "));
    assert_eq!(count(&ok(&mut flight, &sql).await), vec!["1999"]);
    let values: Vec<String> = (0..50_000).map(|i| i.to_string()).collect();
    let sql = format!(
        "SELECT count(*) FROM tx WHERE user_id IN ({})",
        values.join(",")
    );
    assert_eq!(count(&ok(&mut flight, &sql).await), vec!["49999"]);
    let deeper = format!("SELECT {}", vec!["1"; 3000].join(" + "));
    let status = refused(&mut flight, &deeper).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("max_expression_depth"),
        "{status:?}"
    );
    assert!(server.alive(), "the server is still running");
    assert_eq!(count(&ok(&mut flight, "SELECT 1").await), vec!["1"]);
}

#[tokio::test]
async fn absurd_tickets_and_lookups_are_refused_without_growing_the_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = ServerProcess::start(&dir.path().join("wh"), &[]);
    let mut flight = server.flight().await;
    ok(
        &mut flight,
        "CREATE TABLE tx AS SELECT value AS user_id, value * 1.5 AS amount FROM generate_series(1, 100000)",
    )
    .await;
    let before = server.rss();
    let shard = |value: serde_json::Value| {
        let any = Any {
            type_url: flywheel::server::SHARD_TICKET_TYPE.to_string(),
            value: value.to_string().into_bytes().into(),
        };
        Ticket::new(any.encode_to_vec())
    };
    for ticket in [
        serde_json::json!({"sql": "SELECT * FROM tx", "shard": 0, "shards": 1, "partitions": 1_000_000_000u64}),
        serde_json::json!({"sql": "SELECT * FROM tx", "shard": 5, "shards": 2, "partitions": 2}),
        serde_json::json!({"sql": "SELECT * FROM tx", "shard": 0, "shards": 0, "partitions": 1}),
        serde_json::json!({"sql": "SELECT * FROM tx", "shard": 0, "shards": 100_000, "partitions": 100_000}),
        serde_json::json!({"sql": "SELECT * FROM tx", "shard": -1, "shards": 2, "partitions": 2}),
        serde_json::json!({"sql": "DROP TABLE tx", "shard": 0, "shards": 1, "partitions": 1}),
        serde_json::json!({"shard": 0}),
    ] {
        let status = do_get(&mut flight, shard(ticket.clone()))
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{ticket}: {status:?}");
    }
    let garbage = Any {
        type_url: flywheel::server::SHARD_TICKET_TYPE.to_string(),
        value: vec![0xff; 64].into(),
    };
    let status = do_get(&mut flight, Ticket::new(garbage.encode_to_vec()))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    // A lookup of more keys than max_lookup_keys is refused before any work.
    ok(&mut flight, "CREATE ENTITY user (user_id BIGINT)").await;
    ok(
        &mut flight,
        "CREATE FEATURE VIEW spend ENTITY user EVENT TIME ts WITH (online = true) AS \
         SELECT user_id, to_timestamp_seconds(user_id) AS ts, amount FROM tx",
    )
    .await;
    let keys: Vec<Vec<i64>> = (0..100_001).map(|k| vec![k]).collect();
    let lookup = Any {
        type_url: flywheel::online::LOOKUP_TICKET_TYPE.to_string(),
        value: serde_json::json!({"features": ["spend"], "keys": keys})
            .to_string()
            .into_bytes()
            .into(),
    };
    let status = do_get(&mut flight, Ticket::new(lookup.encode_to_vec()))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("max_lookup_keys"), "{status:?}");

    let grown = server.rss().saturating_sub(before);
    assert!(
        grown < 512 << 20,
        "the server grew by {} MiB answering refusals",
        grown >> 20
    );
    assert!(server.alive());
    assert_eq!(
        count(&ok(&mut flight, "SELECT count(*) FROM tx").await),
        vec!["100000"]
    );
}

/// A server whose engine runs under `options`.
async fn server_with(warehouse: &Path, options: EngineOptions) -> TestServer {
    let engine = Engine::open_with(warehouse.to_str().expect("utf-8"), &options)
        .await
        .expect("engine opens");
    TestServer::serve_engine(engine, flywheel::server::ServeOptions::default()).await
}

#[tokio::test]
async fn files_outside_the_warehouse_and_allowed_paths_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let allowed = dir.path().join("exports");
    std::fs::create_dir_all(&allowed).expect("mkdir");
    let options = EngineOptions {
        file_access: FileAccess::restricted_to(&[allowed.display().to_string()])
            .expect("allowed paths"),
        ..EngineOptions::default()
    };
    let server = server_with(&dir.path().join("wh"), options).await;
    let mut flight = server.flight_client().await;
    let outside = dir.path().join("outside.csv");
    let status = refused(
        &mut flight,
        &format!("COPY (SELECT 'x' AS v) TO '{}'", outside.display()),
    )
    .await;
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("allowed_paths"), "{status:?}");
    assert!(!outside.exists(), "the refused COPY wrote its file");
    for location in ["/etc".to_string(), dir.path().display().to_string()] {
        let status = refused(
            &mut flight,
            &format!("CREATE EXTERNAL TABLE e STORED AS DELTA LOCATION '{location}'"),
        )
        .await;
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    }
    // Inside an allowed folder, COPY works.
    let inside = allowed.join("out.csv");
    ok(
        &mut flight,
        &format!("COPY (SELECT 'x' AS v) TO '{}'", inside.display()),
    )
    .await;
    assert!(inside.exists());
}

#[tokio::test]
async fn a_training_set_killed_while_building_can_be_created_after_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wh = dir.path().join("wh");
    let setup = ServerProcess::start(&wh, &[]);
    let mut flight = setup.flight().await;
    for sql in [
        "CREATE ENTITY user (user_id BIGINT)",
        "CREATE TABLE tx AS SELECT value AS id, value % 5000 AS user_id, \
         to_timestamp_seconds(value) AS ts, value * 1.5 AS amount FROM generate_series(1, 600000)",
        "CREATE FEATURE VIEW spend ENTITY user EVENT TIME ts AS SELECT user_id, ts, amount FROM tx",
        "CREATE LABEL fraud ENTITY user EVENT TIME ts FROM (SELECT user_id, ts, amount > 100 AS \
         is_fraud FROM tx WHERE id % 3 = 0)",
    ] {
        ok(&mut flight, sql).await;
    }
    // How long a whole build takes here, to kill the next ones part of the way through.
    let started = std::time::Instant::now();
    ok(
        &mut flight,
        "CREATE TRAINING SET probe LABEL fraud FEATURES spend",
    )
    .await;
    let whole = started.elapsed();
    drop(flight);
    drop(setup);

    let mut interrupted = 0;
    for (i, share) in [0.1, 0.3, 0.5, 0.7, 0.9].into_iter().enumerate() {
        let name = format!("ts_{i}");
        let sql = format!("CREATE TRAINING SET {name} LABEL fraud FEATURES spend");
        let mut server = ServerProcess::start(&wh, &[]);
        let mut flight = server.flight().await;
        let building = {
            let sql = sql.clone();
            let mut flight = flight.clone();
            tokio::spawn(async move { run(&mut flight, &sql).await })
        };
        tokio::time::sleep(whole.mul_f64(share)).await;
        server.kill();
        let finished = matches!(building.await, Ok(Ok(_)));
        drop(flight);

        let server = ServerProcess::start(&wh, &[]);
        flight = server.flight().await;
        let listed = ok(&mut flight, "SHOW TRAINING SETS").await;
        let exists = sorted_rows(&listed)
            .iter()
            .any(|r| r.starts_with(&format!("{name},")));
        if exists {
            // Committed before the kill: it is whole.
            let rows = ok(&mut flight, &format!("SELECT count(*) FROM {name}")).await;
            assert_eq!(count(&rows), vec!["200000"], "{name}");
        } else {
            assert!(!finished, "{name}: answered OK but is not listed");
            interrupted += 1;
            ok(&mut flight, &sql).await;
            let rows = ok(&mut flight, &format!("SELECT count(*) FROM {name}")).await;
            assert_eq!(count(&rows), vec!["200000"], "{name}");
        }
        let described = ok(&mut flight, &format!("DESCRIBE TRAINING SET {name}")).await;
        assert!(
            sorted_rows(&described)
                .iter()
                .any(|r| r.starts_with("version 0,built from ")),
            "{name}: {described:?}"
        );
    }
    eprintln!("{interrupted} of 5 kills landed during a build");
    assert!(interrupted > 0, "no kill landed during a build");
}

#[tokio::test]
async fn two_servers_refreshing_one_view_succeed_or_are_told_to_retry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = TestServer::start(dir.path()).await;
    let b = TestServer::start(dir.path()).await;
    let mut fa = a.flight_client().await;
    for sql in [
        "CREATE ENTITY user (user_id BIGINT)",
        "CREATE TABLE tx AS SELECT value % 100 AS user_id, to_timestamp_seconds(value) AS ts, \
         value AS amount FROM generate_series(1, 20000)",
        "CREATE FEATURE VIEW spend ENTITY user EVENT TIME ts AS SELECT user_id, ts, amount FROM tx",
    ] {
        ok(&mut fa, sql).await;
    }
    async fn refreshes(mut flight: FlightServiceClient<Channel>) -> Vec<Result<(), tonic::Status>> {
        let mut outcomes = Vec::new();
        for _ in 0..6 {
            outcomes.push(
                run(&mut flight, "REFRESH FEATURE VIEW spend")
                    .await
                    .map(|_| ()),
            );
        }
        outcomes
    }
    let (ra, rb) = tokio::join!(
        refreshes(a.flight_client().await),
        refreshes(b.flight_client().await)
    );
    for outcome in ra.into_iter().chain(rb) {
        if let Err(status) = outcome {
            assert_eq!(status.code(), Code::Aborted, "{status:?}");
            assert!(status.message().contains("run it again"), "{status:?}");
        }
    }
    let rows = ok(&mut fa, "SELECT count(*), sum(amount) FROM spend").await;
    assert_eq!(count(&rows), vec!["20000,200010000"]);
}

#[tokio::test]
async fn runaway_and_oversized_statements_are_stopped_with_a_one_line_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = EngineOptions {
        memory_limit: Some(4 << 20),
        limits: Limits {
            statement_timeout: Some(Duration::from_secs(2)),
            ..Limits::default()
        },
        ..EngineOptions::default()
    };
    let server = server_with(&dir.path().join("wh"), options).await;
    let mut flight = server.flight_client().await;
    let endless = "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) \
                   SELECT count(*) FROM r";
    let status = refused(&mut flight, endless).await;
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(status.message().contains("statement_timeout"), "{status:?}");

    let status = refused(&mut flight, "SELECT length(repeat('x', 2000000000))").await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("repeat()"), "{status:?}");

    ok(
        &mut flight,
        "CREATE TABLE f AS SELECT value AS v FROM generate_series(1, 300000)",
    )
    .await;
    let status = refused(
        &mut flight,
        "SELECT count(*) FROM f a JOIN f b ON a.v = b.v",
    )
    .await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("memory_limit"), "{status:?}");
    assert!(!status.message().contains('\n'), "one line: {status:?}");

    assert_eq!(count(&ok(&mut flight, "SELECT 1").await), vec!["1"]);
}

#[tokio::test]
async fn two_servers_creating_one_feature_view_leave_one_whole_view() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = TestServer::start(dir.path()).await;
    let b = TestServer::start(dir.path()).await;
    let (mut fa, mut fb) = (a.flight_client().await, b.flight_client().await);
    for sql in [
        "CREATE ENTITY user (user_id BIGINT)",
        "CREATE TABLE tx AS SELECT value % 10 AS user_id, to_timestamp_seconds(value) AS ts, \
         value AS amount FROM generate_series(1, 5000)",
    ] {
        ok(&mut fa, sql).await;
    }
    for round in 0..3 {
        let create = |who: i64| {
            format!(
                "CREATE FEATURE VIEW v{round} ENTITY user EVENT TIME ts AS \
                 SELECT user_id, ts, amount, {who} AS who FROM tx"
            )
        };
        let (one, two) = (create(1), create(2));
        let (ra, rb) = tokio::join!(run(&mut fa, &one), run(&mut fb, &two));
        let winner = the_winner(round, &ra, &rb);
        let rows = ok(
            &mut fa,
            &format!("SELECT min(who), max(who), count(*) FROM v{round}"),
        )
        .await;
        assert_eq!(count(&rows), vec![format!("{winner},{winner},5000")]);
        let described = ok(&mut fb, &format!("DESCRIBE FEATURE VIEW v{round}")).await;
        assert!(
            sorted_rows(&described)
                .iter()
                .any(|r| r.contains(&format!("{winner} AS who"))),
            "the registered definition is the winner's: {described:?}"
        );
    }
}

#[tokio::test]
async fn a_version_whose_registry_commit_is_missing_keeps_its_lineage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(dir.path().to_str().expect("utf-8"))
        .await
        .expect("engine");
    for sql in [
        "CREATE ENTITY user (user_id BIGINT)",
        "CREATE TABLE tx AS SELECT value % 10 AS user_id, to_timestamp_seconds(value) AS ts, \
         value AS amount FROM generate_series(1, 100)",
        "CREATE FEATURE VIEW spend ENTITY user EVENT TIME ts AS SELECT user_id, ts, amount FROM tx",
        "CREATE LABEL l ENTITY user EVENT TIME ts FROM (SELECT user_id, ts, amount > 50 AS y FROM tx)",
        "CREATE TRAINING SET t LABEL l FEATURES spend",
        "REFRESH TRAINING SET t FULL",
    ] {
        engine.sql(sql).await.expect(sql);
    }
    // As after a crash between the refresh's Delta commit and its registry commit: the registry
    // has no lineage for version 1.
    engine
        .registry()
        .drop_object(flywheel_catalog::objects::KIND_TRAINING_SET_VERSION, "t@1")
        .await
        .expect("forgets the lineage");
    let described = engine
        .sql("DESCRIBE TRAINING SET t")
        .await
        .expect("describes")
        .collect()
        .await
        .expect("rows");
    let rows = sorted_rows(&described);
    for version in ["version 0,built from ", "version 1,built from "] {
        assert!(
            rows.iter().any(|r| r.starts_with(version)),
            "{version} missing: {rows:?}"
        );
    }
}
