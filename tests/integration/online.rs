//! The online store through a real server: lookups by Flight `DoGet`, the same answer as a training
//! set's `ASOF JOIN` at the load's cut-off, persistence across restarts, TTL and errors.

use arrow::array::{Array, BooleanArray, Float64Array, Int64Array, RecordBatch};
use arrow_flight::Ticket;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::sql::Any;
use futures::TryStreamExt;
use prost::Message;
use tonic::Code;

use crate::common::{TestServer, query, sorted_rows};

async fn lookup(
    server: &TestServer,
    request: serde_json::Value,
) -> Result<RecordBatch, tonic::Status> {
    let any = Any {
        type_url: flywheel::online::LOOKUP_TICKET_TYPE.to_string(),
        value: request.to_string().into_bytes().into(),
    };
    let mut client = server.flight_client().await;
    let data = client
        .do_get(Ticket::new(any.encode_to_vec()))
        .await?
        .into_inner();
    let batches: Vec<RecordBatch> =
        FlightRecordBatchStream::new_from_flight_data(data.map_err(FlightError::from))
            .try_collect()
            .await
            .map_err(|e| tonic::Status::internal(e.to_string()))?;
    assert_eq!(batches.len(), 1, "one record batch per lookup");
    Ok(batches.into_iter().next().expect("a batch"))
}

fn f64s(b: &RecordBatch, name: &str) -> Vec<Option<f64>> {
    let c = b
        .column_by_name(name)
        .unwrap_or_else(|| panic!("column {name}"));
    let c = c.as_any().downcast_ref::<Float64Array>().expect("f64");
    (0..c.len())
        .map(|i| c.is_valid(i).then(|| c.value(i)))
        .collect()
}

fn column_names(b: &RecordBatch) -> Vec<String> {
    b.schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect()
}

fn bools(b: &RecordBatch, name: &str) -> Vec<bool> {
    let c = b
        .column_by_name(name)
        .unwrap_or_else(|| panic!("column {name}"));
    let c = c.as_any().downcast_ref::<BooleanArray>().expect("bool");
    (0..c.len()).map(|i| c.value(i)).collect()
}

#[tokio::test]
async fn online_answers_equal_the_asof_answer_and_survive_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path()).await;
    let mut sql = server.sql_client().await;
    // 200 keys, 20k rows, many ties on (key, time) so the tie rule matters.
    for s in [
        "CREATE ENTITY user (user_id BIGINT)",
        "CREATE TABLE spend AS SELECT (value * 7919) % 200 AS user_id, \
         CAST((value * 104729) % 5000 AS TIMESTAMP) AS ts, CAST(value AS DOUBLE) AS amount, \
         CAST(value % 13 AS DOUBLE) AS score FROM range(0, 20000)",
        "CREATE FEATURE VIEW user_spend ENTITY user EVENT TIME ts WITH (online = true) \
         AS SELECT user_id, ts, amount, score FROM spend",
    ] {
        sql.execute_update(s.into(), None)
            .await
            .unwrap_or_else(|e| panic!("{s}: {e}"));
    }
    // The training-set rule at a cut-off after every event: ASOF JOIN on each key.
    let expected = query(
        &mut sql,
        "SELECT k.user_id, f.amount, f.score FROM \
         (SELECT DISTINCT user_id, CAST('2100-01-01T00:00:00' AS TIMESTAMP) AS t FROM user_spend) k \
         ASOF JOIN user_spend f MATCH_CONDITION (k.t >= f.ts) ON k.user_id = f.user_id \
         ORDER BY k.user_id",
    )
    .await;
    let expected =
        arrow::compute::concat_batches(&expected[0].schema(), &expected).expect("concat");
    let keys: Vec<i64> = (0..200).rev().chain([999]).collect();
    let request = serde_json::json!({"features": ["user_spend"], "keys": keys.iter().map(|k| vec![*k]).collect::<Vec<_>>()});
    let answer = lookup(&server, request.clone()).await.expect("lookup");
    assert_eq!(answer.num_rows(), keys.len());
    let ids = answer
        .column_by_name("user_id")
        .expect("key column")
        .as_any()
        .downcast_ref::<Int64Array>()
        .expect("ids")
        .values()
        .to_vec();
    assert_eq!(ids, keys, "one row per key, in request order");
    let found = bools(&answer, "user_spend__found");
    assert!(found[..200].iter().all(|f| *f) && !found[200], "{found:?}");
    let (amount, score) = (f64s(&answer, "amount"), f64s(&answer, "score"));
    let (want_amount, want_score) = (f64s(&expected, "amount"), f64s(&expected, "score"));
    for (i, key) in keys[..200].iter().enumerate() {
        let k = *key as usize;
        assert_eq!(amount[i], want_amount[k], "amount of key {key}");
        assert_eq!(score[i], want_score[k], "score of key {key}");
    }
    assert_eq!(
        (amount[200], score[200]),
        (None, None),
        "an unknown key is NULL"
    );

    // A single feature, keys as objects.
    let one = lookup(
        &server,
        serde_json::json!({"features": ["user_spend.score"], "keys": [{"user_id": 3}]}),
    )
    .await
    .expect("lookup");
    assert_eq!(one.num_columns(), 3, "key, found, score");
    assert_eq!(f64s(&one, "score")[0], want_score[3]);

    // A new server on the same warehouse serves the persisted snapshot without a refresh.
    server.stop().await.expect("clean shutdown");
    let server = TestServer::start(dir.path()).await;
    let again = lookup(&server, request)
        .await
        .expect("lookup after restart");
    assert_eq!(f64s(&again, "amount"), amount);

    // Errors name what is wrong.
    let e = lookup(
        &server,
        serde_json::json!({"features": ["nope"], "keys": [[1]]}),
    )
    .await
    .expect_err("unknown view");
    assert_eq!(e.code(), Code::NotFound, "{e}");
    let e = lookup(
        &server,
        serde_json::json!({"features": ["user_spend.nope"], "keys": [[1]]}),
    )
    .await
    .expect_err("unknown column");
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    server.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn ttl_and_alter_online() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path()).await;
    let mut sql = server.sql_client().await;
    for s in [
        "CREATE ENTITY user (user_id BIGINT)",
        "CREATE TABLE events (user_id BIGINT, ts TIMESTAMP, clicks DOUBLE)",
        "INSERT INTO events VALUES (1, '2020-01-01T00:00:00', 5.0), (2, now(), 7.0)",
        "CREATE FEATURE VIEW clicks_1d ENTITY user EVENT TIME ts TTL INTERVAL '1 day' \
         AS SELECT user_id, ts, clicks FROM events",
        // An online view over no rows yet: loads, and finds nothing.
        "CREATE TABLE later (user_id BIGINT, ts TIMESTAMP, x DOUBLE)",
        "CREATE FEATURE VIEW empty_now ENTITY user EVENT TIME ts WITH (online = true) \
         AS SELECT user_id, ts, x FROM later",
    ] {
        sql.execute_update(s.into(), None)
            .await
            .unwrap_or_else(|e| panic!("{s}: {e}"));
    }
    let empty = lookup(
        &server,
        serde_json::json!({"features": ["empty_now"], "keys": [[1]]}),
    )
    .await
    .expect("lookup on an empty view");
    assert_eq!(bools(&empty, "empty_now__found"), vec![false]);
    let request = serde_json::json!({"features": ["clicks_1d"], "keys": [[1], [2]]});
    // Not online yet: the answer says how to make it so.
    let e = lookup(&server, request.clone()).await.expect_err("offline");
    assert_eq!(e.code(), Code::NotFound, "{e}");
    assert!(
        e.message()
            .contains("ALTER FEATURE VIEW clicks_1d SET (online = true)"),
        "{e}"
    );
    sql.execute_update(
        "ALTER FEATURE VIEW clicks_1d SET (online = true)".into(),
        None,
    )
    .await
    .expect("alter");
    let answer = lookup(&server, request.clone()).await.expect("lookup");
    // User 1's value is six years old: past the TTL, served as NULL and not found.
    assert_eq!(bools(&answer, "clicks_1d__found"), vec![false, true]);
    assert_eq!(f64s(&answer, "clicks"), vec![None, Some(7.0)]);

    // The same state in SQL, for BI tools.
    let one = query(
        &mut sql,
        "SELECT clicks, clicks_1d__found FROM online('clicks_1d', 2)",
    )
    .await;
    assert_eq!(sorted_rows(&one), vec!["7.0,true"]);
    // Listing the view answers what lookups would: user 1's value is past the TTL, so not listed.
    let all = query(&mut sql, "SELECT user_id FROM online('clicks_1d')").await;
    assert_eq!(sorted_rows(&all), vec!["2"]);
    let fresh = query(
        &mut sql,
        "SELECT feature_view, loaded, rows, loaded_at IS NOT NULL, \
         latest_event_time > TIMESTAMP '2025-01-01T00:00:00Z' FROM flywheel.online_freshness",
    )
    .await;
    // (The empty view has no latest event time: NULL, which `sorted_rows` leaves out.)
    assert_eq!(
        sorted_rows(&fresh),
        vec!["clicks_1d,true,2,true,true", "empty_now,true,0,true"]
    );
    let e = sql
        .execute("SELECT * FROM online('no_such_view')".into(), None)
        .await
        .expect_err("no such view");
    assert!(e.to_string().contains("`no_such_view` not found"), "{e}");

    // Keys that are not the entity's type are refused, naming the key, not reported missing.
    for keys in [serde_json::json!([[2], ["x"]]), serde_json::json!([[4.5]])] {
        let bad = serde_json::json!({"features": ["clicks_1d"], "keys": keys});
        let e = lookup(&server, bad)
            .await
            .expect_err("a key of the wrong type");
        assert_eq!(e.code(), Code::InvalidArgument, "{e}");
        assert!(e.message().contains("`user_id` = "), "{e}");
    }
    let e = sql
        .execute("SELECT * FROM online('clicks_1d', 'two')".into(), None)
        .await
        .expect_err("a key of the wrong type");
    assert!(e.to_string().contains("`user_id` = two"), "{e}");
    // A feature asked for twice is answered once, under its own name.
    let twice = serde_json::json!({"features": ["clicks_1d.clicks", "clicks_1d"], "keys": [[2]]});
    let answer = lookup(&server, twice).await.expect("lookup");
    let names = column_names(&answer);
    assert_eq!(names, ["user_id", "clicks_1d__found", "clicks"]);
    // A ticket that is not a protobuf `Any` says what tickets Flywheel reads.
    let mut client = server.flight_client().await;
    let e = client
        .do_get(Ticket::new(b"hello".to_vec()))
        .await
        .expect_err("not a ticket");
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    assert!(e.message().contains("flywheel.OnlineLookup"), "{e}");
    sql.execute_update(
        "ALTER FEATURE VIEW clicks_1d SET (online = false)".into(),
        None,
    )
    .await
    .expect("alter off");
    assert!(lookup(&server, request).await.is_err());
    server.stop().await.expect("clean shutdown");
}

/// A service asks the same features call after call (the server keeps a plan per feature list):
/// a refresh, a dropped view and a view defined anew are all seen by the next call.
#[tokio::test]
async fn the_same_lookup_asked_again_sees_refreshes_and_new_definitions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path()).await;
    let mut sql = server.sql_client().await;
    let mut run = async |s: &str| {
        sql.execute_update(s.to_string(), None)
            .await
            .unwrap_or_else(|e| panic!("{s}: {e}"));
    };
    run("CREATE ENTITY user (user_id BIGINT)").await;
    run("CREATE TABLE ev (user_id BIGINT, ts TIMESTAMP, a DOUBLE)").await;
    run("INSERT INTO ev VALUES (1, now() - INTERVAL '1 hour', 1.0)").await;
    run(
        "CREATE FEATURE VIEW fv ENTITY user EVENT TIME ts WITH (online = true) \
         AS SELECT user_id, ts, a FROM ev",
    )
    .await;
    let request = serde_json::json!({"features": ["fv"], "keys": [[1], [2]]});
    for _ in 0..2 {
        let answer = lookup(&server, request.clone()).await.expect("lookup");
        assert_eq!(f64s(&answer, "a"), vec![Some(1.0), None]);
    }

    run("INSERT INTO ev VALUES (1, now(), 2.0), (2, now(), 5.0)").await;
    run("REFRESH FEATURE VIEW fv").await;
    let answer = lookup(&server, request.clone())
        .await
        .expect("after refresh");
    assert_eq!(f64s(&answer, "a"), vec![Some(2.0), Some(5.0)]);
    assert_eq!(bools(&answer, "fv__found"), vec![true, true]);

    run("DROP FEATURE VIEW fv").await;
    let e = lookup(&server, request.clone())
        .await
        .expect_err("dropped view");
    assert_eq!(e.code(), Code::NotFound, "{e}");

    run(
        "CREATE FEATURE VIEW fv ENTITY user EVENT TIME ts WITH (online = true) \
         AS SELECT user_id, ts, a * 10 AS b FROM ev",
    )
    .await;
    let answer = lookup(&server, request).await.expect("new definition");
    let names = column_names(&answer);
    assert_eq!(names, ["user_id", "fv__found", "b"]);
    assert_eq!(f64s(&answer, "b"), vec![Some(20.0), Some(50.0)]);
    server.stop().await.expect("clean shutdown");
}

/// A real `redis-server` on a free loopback port, stopped on drop.
struct Redis {
    child: std::process::Child,
    port: u16,
    url: String,
    dir: tempfile::TempDir,
}

impl Redis {
    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = tempfile::tempdir().expect("tempdir");
        let child = Self::spawn(port, dir.path()).await;
        Self {
            child,
            port,
            url: format!("redis://127.0.0.1:{port}"),
            dir,
        }
    }

    async fn spawn(port: u16, dir: &std::path::Path) -> std::process::Child {
        let child = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server runs (scripts/test.sh installs the Debian package)");
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        child
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts again on the same port (empty: nothing is persisted).
    async fn restart(&mut self) {
        self.stop();
        self.child = Self::spawn(self.port, self.dir.path()).await;
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A server on `redis` (the warehouse in `dir`).
async fn serve_on_redis(dir: &std::path::Path, redis: &Redis) -> TestServer {
    let engine = flywheel::Engine::open_with(
        dir.to_str().expect("utf-8"),
        &flywheel::EngineOptions {
            online_store: Some(redis.url.clone()),
            ..Default::default()
        },
    )
    .await
    .expect("engine with Redis");
    TestServer::serve_engine(engine, Default::default()).await
}

/// Creates entity `user`, table `spend (user_id, ts, amount)` holding `rows` (an SQL `VALUES`
/// list) and the online feature view `user_spend` over it.
async fn create_user_spend(
    sql: &mut arrow_flight::sql::client::FlightSqlServiceClient<tonic::transport::Channel>,
    rows: &str,
) {
    for s in [
        "CREATE ENTITY user (user_id BIGINT)".to_string(),
        "CREATE TABLE spend (user_id BIGINT, ts TIMESTAMP, amount DOUBLE)".to_string(),
        format!("INSERT INTO spend VALUES {rows}"),
        "CREATE FEATURE VIEW user_spend ENTITY user EVENT TIME ts WITH (online = true) \
         AS SELECT user_id, ts, amount FROM spend"
            .to_string(),
    ] {
        sql.execute_update(s.clone(), None)
            .await
            .unwrap_or_else(|e| panic!("{s}: {e}"));
    }
}

#[tokio::test]
async fn redis_backend_serves_every_server_the_latest_load() {
    let redis = Redis::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let a = serve_on_redis(dir.path(), &redis).await;
    let b = serve_on_redis(dir.path(), &redis).await;
    let mut sql = a.sql_client().await;
    create_user_spend(
        &mut sql,
        "(1, '2026-01-01T00:00:00', 1.0), (2, '2026-01-01T00:00:00', 2.0)",
    )
    .await;
    let request = serde_json::json!({"features": ["user_spend"], "keys": [[1], [2], [3]]});
    // Server B never loaded the view: it reads the snapshot server A published.
    let answer = lookup(&b, request.clone()).await.expect("lookup on B");
    assert_eq!(f64s(&answer, "amount"), vec![Some(1.0), Some(2.0), None]);
    // A refresh on A reaches B's next lookup.
    sql.execute_update(
        "INSERT INTO spend VALUES (1, '2026-02-01T00:00:00', 10.0)".into(),
        None,
    )
    .await
    .expect("insert");
    sql.execute_update("REFRESH FEATURE VIEW user_spend".into(), None)
        .await
        .expect("refresh");
    let answer = lookup(&b, request.clone()).await.expect("lookup on B");
    assert_eq!(f64s(&answer, "amount"), vec![Some(10.0), Some(2.0), None]);
    // Taken offline on A: B stops serving it.
    sql.execute_update(
        "ALTER FEATURE VIEW user_spend SET (online = false)".into(),
        None,
    )
    .await
    .expect("offline");
    let e = lookup(&b, request).await.expect_err("offline everywhere");
    assert_eq!(e.code(), Code::NotFound, "{e}");
    a.stop().await.expect("clean shutdown");
    b.stop().await.expect("clean shutdown");
}

/// Redis goes away and comes back (a restart, a failover): while it is away, lookups and loads
/// answer `UNAVAILABLE` saying so; once it is back, the same server reconnects by itself.
#[tokio::test]
async fn a_restarted_redis_is_reconnected_to_by_the_running_server() {
    let mut redis = Redis::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = serve_on_redis(dir.path(), &redis).await;
    let mut sql = server.sql_client().await;
    create_user_spend(&mut sql, "(1, '2026-01-01T00:00:00', 1.0)").await;
    let request = serde_json::json!({"features": ["user_spend"], "keys": [[1]]});
    lookup(&server, request.clone()).await.expect("lookup");

    redis.stop();
    let e = lookup(&server, request.clone())
        .await
        .expect_err("Redis is away");
    assert_eq!(e.code(), Code::Unavailable, "{e}");
    assert!(
        e.message()
            .contains("online store (Redis) cannot be reached"),
        "{e}"
    );
    let e = sql
        .execute_update("REFRESH FEATURE VIEW user_spend".into(), None)
        .await
        .expect_err("cannot load");
    assert!(
        e.to_string()
            .contains("REFRESH FEATURE VIEW user_spend loads it again"),
        "{e}"
    );

    // Back, empty (nothing persisted): the next lookup reaches it (no UNAVAILABLE) and finds no
    // snapshot; a refresh loads one and lookups are answered again.
    redis.restart().await;
    let e = lookup(&server, request.clone())
        .await
        .expect_err("Redis lost its data");
    assert_eq!(e.code(), Code::NotFound, "{e}");
    sql.execute_update("REFRESH FEATURE VIEW user_spend".into(), None)
        .await
        .expect("refresh once Redis is back");
    let answer = lookup(&server, request).await.expect("lookup");
    assert_eq!(f64s(&answer, "amount"), vec![Some(1.0)]);
    server.stop().await.expect("clean shutdown");
}

/// A server reads its online snapshots into memory as it starts (`Engine::preload_online`, which
/// `serve` runs), so a restarted server's first lookups do not wait for them: here the snapshot's
/// file is deleted once preloaded, and lookups are still answered.
#[tokio::test]
async fn online_snapshots_are_preloaded_when_a_server_starts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_str().expect("utf-8");
    let engine = flywheel::Engine::open(path).await.expect("engine");
    for s in [
        "CREATE ENTITY user (user_id BIGINT)",
        "CREATE TABLE spend (user_id BIGINT, ts TIMESTAMP, amount DOUBLE)",
        "INSERT INTO spend VALUES (1, '2026-01-01T00:00:00', 4.5)",
        "CREATE FEATURE VIEW user_spend ENTITY user EVENT TIME ts WITH (online = true) \
         AS SELECT user_id, ts, amount FROM spend",
        "CREATE FEATURE VIEW offline_only ENTITY user EVENT TIME ts AS SELECT user_id, ts, amount FROM spend",
    ] {
        engine
            .sql(s)
            .await
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .collect()
            .await
            .unwrap_or_else(|e| panic!("{s}: {e}"));
    }
    drop(engine);

    let engine = flywheel::Engine::open(path).await.expect("engine");
    assert_eq!(
        flywheel::engine::online_views(engine.registry()),
        ["user_spend"]
    );
    engine.preload_online().await.expect("preloaded");
    std::fs::remove_file(dir.path().join("_flywheel/online/user_spend.arrow")).expect("file");
    let request: flywheel::online::LookupRequest =
        serde_json::from_value(serde_json::json!({"features": ["user_spend"], "keys": [[1]]}))
            .expect("request");
    let answer = engine
        .online_lookup(&request, chrono::Utc::now().timestamp_micros())
        .await
        .expect("answered from memory");
    assert_eq!(f64s(&answer, "amount"), vec![Some(4.5)]);
}

/// After another server's refresh, lookups arriving together on a server that holds the old
/// snapshot fetch the new one from Redis once, not once each (a view can be gigabytes), and all
/// answer from it.
#[tokio::test]
async fn lookups_arriving_together_fetch_a_new_snapshot_once() {
    let redis = Redis::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let a = serve_on_redis(dir.path(), &redis).await;
    let b = serve_on_redis(dir.path(), &redis).await;
    let mut sql = a.sql_client().await;
    for s in [
        "CREATE ENTITY user (user_id BIGINT)",
        "CREATE TABLE spend AS SELECT value AS user_id, TIMESTAMP '2026-01-01T00:00:00' AS ts, \
         1.0 AS amount FROM range(0, 100000)",
        "CREATE FEATURE VIEW user_spend ENTITY user EVENT TIME ts WITH (online = true) \
         AS SELECT user_id, ts, amount FROM spend",
    ] {
        sql.execute_update(s.into(), None)
            .await
            .unwrap_or_else(|e| panic!("{s}: {e}"));
    }
    let request = serde_json::json!({"features": ["user_spend"], "keys": [[7]]});
    assert_eq!(
        f64s(
            &lookup(&b, request.clone()).await.expect("lookup"),
            "amount"
        ),
        vec![Some(1.0)]
    );
    for s in [
        "CREATE OR REPLACE TABLE spend AS SELECT value AS user_id, \
         TIMESTAMP '2026-02-01T00:00:00' AS ts, 2.0 AS amount FROM range(0, 100000)",
        "REFRESH FEATURE VIEW user_spend",
    ] {
        sql.execute_update(s.into(), None)
            .await
            .unwrap_or_else(|e| panic!("{s}: {e}"));
    }

    let client = redis::Client::open(redis.url.as_str()).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async::<()>(&mut conn)
        .await
        .expect("reset stats");
    let callers = 16;
    let answers =
        futures::future::join_all((0..callers).map(|_| lookup(&b, request.clone()))).await;
    for answer in answers {
        assert_eq!(f64s(&answer.expect("lookup"), "amount"), vec![Some(2.0)]);
    }
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .expect("stats");
    let gets: usize = stats
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_get:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .expect("GET calls in INFO commandstats");
    // One pointer read per lookup, and the snapshot's one piece read once.
    assert_eq!(gets, callers + 1, "{stats}");
    a.stop().await.expect("clean shutdown");
    b.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn views_with_integer_and_date_event_times_serve_each_keys_latest_row() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = crate::common::engine_with(
        dir.path(),
        &[
            "CREATE ENTITY user (user_id BIGINT)",
            "CREATE TABLE seq (user_id BIGINT, n BIGINT, v DOUBLE)",
            "INSERT INTO seq VALUES (1, 1, 1.0), (1, 5, 5.0), (2, 3, 3.0), (1, 4, 4.0)",
            "CREATE FEATURE VIEW by_seq ENTITY user EVENT TIME n WITH (online = true) \
             AS SELECT * FROM seq",
            "CREATE TABLE daily (user_id BIGINT, day DATE, v DOUBLE)",
            "INSERT INTO daily VALUES (1, DATE '2020-01-01', 1.0), (1, DATE '2020-01-03', 3.0), \
             (2, DATE '2020-01-02', 2.0), (2, DATE '2999-01-01', 9.0)",
            "CREATE FEATURE VIEW by_day ENTITY user EVENT TIME day WITH (online = true) \
             AS SELECT * FROM daily",
        ],
    )
    .await;
    // An integer event time: the latest row per key, whatever its number.
    assert_eq!(
        crate::common::sql_rows(&engine, "SELECT user_id, n, v FROM online('by_seq')").await,
        ["1,5,5.0", "2,3,3.0"]
    );
    // A date: the latest row at or before today (a row dated in the future is not served yet).
    assert_eq!(
        crate::common::sql_rows(&engine, "SELECT user_id, day, v FROM online('by_day')").await,
        ["1,2020-01-03,3.0", "2,2020-01-02,2.0"]
    );
}
