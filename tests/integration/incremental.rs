//! Incremental refresh gives exactly the rows a full refresh would: random sequences of appends,
//! deletes and overwrites written by delta-rs to an external Delta table (and appends to a
//! dimension table), each followed by `REFRESH ALL`, compared with the objects' queries run whole.

use std::sync::Arc;

use arrow::array::{Float64Array, Int64Array, RecordBatch, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use deltalake::DeltaTable;
use deltalake::protocol::SaveMode;
use flywheel::Engine;

use crate::common::{engine_with, run_sql, sql_rows as rows};

/// A small deterministic generator (the sequences are reproducible from their seed).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below
    }
}

fn events(ids: std::ops::Range<i64>, rng: &mut Lcg) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("user_id", DataType::Int64, false),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("amount", DataType::Float64, false),
    ]));
    let ids: Vec<i64> = ids.collect();
    let users: Vec<i64> = ids.iter().map(|_| rng.next(6) as i64).collect();
    let ts: Vec<i64> = ids
        .iter()
        .map(|i| 1_767_225_600_000_000 + i * 60_000_000)
        .collect();
    let amounts: Vec<f64> = ids
        .iter()
        .map(|_| rng.next(10_000) as f64 / 100.0)
        .collect();
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(Int64Array::from(users)),
            Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("UTC")),
            Arc::new(Float64Array::from(amounts)),
        ],
    )
    .expect("batch")
}

async fn run(engine: &Engine, sql: &str) {
    run_sql(engine, sql).await;
}

#[tokio::test]
async fn incremental_refreshes_equal_full_ones_on_random_appends_deletes_and_overwrites() {
    let queries = [
        (
            "FEATURE VIEW",
            "big_spend",
            "SELECT id, user_id, ts, amount * 2 AS double_amount FROM ev WHERE amount > 20",
        ),
        (
            "FEATURE VIEW",
            "tiered",
            "SELECT e.id, e.user_id, e.ts, u.tier FROM ev e JOIN users u ON e.user_id = u.user_id",
        ),
        (
            "FEATURE VIEW",
            "per_user",
            "SELECT user_id, max(ts) AS ts, count(*) AS n FROM ev GROUP BY user_id",
        ),
    ];
    let mut modes = std::collections::BTreeSet::new();
    for seed in [7_u64, 42] {
        let dir = tempfile::tempdir().expect("tempdir");
        let wh = dir.path().join("wh");
        let location = wh.join("external").join("ev");
        std::fs::create_dir_all(&location).expect("folder");
        let url = url::Url::from_directory_path(&location).expect("url");
        let mut rng = Lcg(seed);
        let mut next_id = 0_i64;
        let mut batch = |n: i64, rng: &mut Lcg| {
            let b = events(next_id..next_id + n, rng);
            next_id += n;
            b
        };
        let first = batch(20, &mut rng);
        DeltaTable::try_from_url(url.clone())
            .await
            .expect("table")
            .write(vec![first])
            .await
            .expect("creates");

        let engine = Engine::open(wh.to_str().expect("utf-8"))
            .await
            .expect("opens");
        run(&engine, "CREATE ENTITY user (user_id BIGINT)").await;
        run(
            &engine,
            &format!(
                "CREATE EXTERNAL TABLE ev STORED AS DELTA LOCATION '{}'",
                location.display()
            ),
        )
        .await;
        run(&engine, "CREATE TABLE users (user_id BIGINT, tier VARCHAR)").await;
        run(
            &engine,
            "INSERT INTO users VALUES (0, 'gold'), (1, 'silver'), (2, 'gold')",
        )
        .await;
        for (kind, name, query) in queries {
            run(
                &engine,
                &format!("CREATE {kind} {name} ENTITY user EVENT TIME ts AS {query}"),
            )
            .await;
        }
        run(
            &engine,
            "CREATE LABEL big ENTITY user EVENT TIME ts FROM (SELECT user_id, ts, amount > 50 AS y FROM ev)",
        )
        .await;

        let mut dimension_user = 3;
        for step in 0..14 {
            let table = deltalake::open_table(url.clone()).await.expect("opens");
            let op = rng.next(10);
            let what = match op {
                0..=4 => {
                    let n = 1 + rng.next(15) as i64;
                    table.write(vec![batch(n, &mut rng)]).await.expect("append");
                    "append"
                }
                5 | 6 => {
                    let k = rng.next(5);
                    table
                        .delete()
                        .with_predicate(format!("id % 5 = {k}"))
                        .await
                        .expect("delete");
                    "delete"
                }
                7 => {
                    table
                        .write(vec![batch(10, &mut rng)])
                        .with_save_mode(SaveMode::Overwrite)
                        .await
                        .expect("overwrite");
                    "overwrite"
                }
                _ => {
                    run(
                        &engine,
                        &format!("INSERT INTO users VALUES ({dimension_user}, 'bronze')"),
                    )
                    .await;
                    dimension_user += 1;
                    "dimension append"
                }
            };
            run(&engine, "REFRESH ALL").await;
            for (_, name, query) in queries {
                assert_eq!(
                    rows(&engine, &format!("SELECT * FROM {name}")).await,
                    rows(&engine, query).await,
                    "seed {seed}, step {step} ({what}): `{name}` differs from its query"
                );
            }
            assert_eq!(
                rows(&engine, "SELECT * FROM big").await,
                rows(&engine, "SELECT user_id, ts, amount > 50 AS y FROM ev").await,
                "seed {seed}, step {step} ({what}): label `big` differs from its query"
            );
        }
        for mode in rows(
            &engine,
            "SELECT DISTINCT concat(object, ' ', mode) FROM flywheel.refresh_history",
        )
        .await
        {
            modes.insert(mode);
        }
    }
    // Both kinds ran: the sequences exercised incremental appends and the fallbacks.
    for expected in [
        "big_spend incremental",
        "big_spend full",
        "tiered incremental",
        "big incremental",
        "per_user full",
    ] {
        assert!(modes.contains(expected), "{expected} never ran: {modes:?}");
    }
    assert!(!modes.contains("per_user incremental"), "{modes:?}");
}

#[tokio::test]
async fn a_training_set_whose_label_gained_rows_appends_their_features_and_equals_a_rebuild() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine_with(
        dir.path(),
        &[
            "CREATE ENTITY user (user_id BIGINT)",
            "CREATE TABLE tx (user_id BIGINT, ts TIMESTAMP, amount DOUBLE)",
            "INSERT INTO tx VALUES (1, '2026-01-01T10:00:00', 10.0), (2, '2026-01-02T10:00:00', 20.0)",
            "CREATE TABLE cb (user_id BIGINT, ts TIMESTAMP, y BOOLEAN)",
            "INSERT INTO cb VALUES (1, '2026-01-05T00:00:00', true)",
            "CREATE FEATURE VIEW spend ENTITY user EVENT TIME ts TTL INTERVAL '30 days' AS SELECT user_id, ts, amount FROM tx",
            "CREATE LABEL fraud ENTITY user EVENT TIME ts FROM cb",
            "CREATE TRAINING SET train LABEL fraud FEATURES spend",
        ],
    )
    .await;
    let modes = |engine: Engine| async move {
        rows(
            &engine,
            "SELECT concat(object, ' ', mode) FROM flywheel.refresh_history \
             WHERE object = 'train'",
        )
        .await
    };

    // New labels: their point-in-time features are appended.
    run(
        &engine,
        "INSERT INTO cb VALUES (2, '2026-01-06T00:00:00', false), (1, '2025-12-01T00:00:00', false)",
    )
    .await;
    run(&engine, "REFRESH TRAINING SET train").await;
    run(
        &engine,
        "CREATE TRAINING SET rebuilt LABEL fraud FEATURES spend",
    )
    .await;
    assert_eq!(
        rows(&engine, "SELECT * FROM train").await,
        rows(&engine, "SELECT * FROM rebuilt").await
    );
    assert_eq!(rows(&engine, "SELECT count(*) FROM train").await, vec!["3"]);
    assert_eq!(modes(engine.clone()).await, vec!["train incremental"]);

    // A feature view that moved changes features of rows already there: rebuilt.
    run(
        &engine,
        "INSERT INTO tx VALUES (1, '2026-01-04T10:00:00', 99.0)",
    )
    .await;
    run(&engine, "REFRESH TRAINING SET train").await;
    run(&engine, "REFRESH TRAINING SET rebuilt FULL").await;
    assert_eq!(
        rows(&engine, "SELECT * FROM train").await,
        rows(&engine, "SELECT * FROM rebuilt").await
    );
    assert!(
        rows(&engine, "SELECT * FROM train")
            .await
            .iter()
            .any(|r| r.contains("99.0")),
        "the new feature value is in the training set"
    );
    assert_eq!(
        modes(engine.clone()).await,
        vec!["train full", "train incremental"]
    );
}

#[tokio::test]
async fn an_online_views_incremental_refresh_serves_what_a_full_load_would() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine_with(
        dir.path(),
        &[
            "CREATE ENTITY user (user_id BIGINT)",
            "CREATE TABLE tx (user_id BIGINT, ts TIMESTAMP, amount DOUBLE)",
            "INSERT INTO tx VALUES (1, '2026-01-01T10:00:00', 10.0), \
             (2, '2026-01-02T10:00:00', 20.0), (3, '2026-01-03T10:00:00', 30.0)",
            "CREATE FEATURE VIEW spend ENTITY user EVENT TIME ts WITH (online = true) \
             AS SELECT user_id, ts, amount FROM tx",
        ],
    )
    .await;
    let served =
        |engine: Engine| async move { rows(&engine, "SELECT * FROM online('spend')").await };
    for (round, appended) in [
        // A new key, a newer row for key 1, a correction of key 2 (same time), a late row for
        // key 3 (older than the one served).
        "(4, '2026-01-04T10:00:00', 40.0), (1, '2026-01-05T10:00:00', 11.0), \
         (2, '2026-01-02T10:00:00', 21.0), (3, '2025-12-01T10:00:00', 3.0)",
        // Two rows of one key in one commit: the later time wins; on equal times the last; a row
        // from the future is not served yet.
        "(6, '2026-01-06T10:00:00', 60.0), (6, '2026-01-07T10:00:00', 61.0), \
         (7, '2026-01-07T10:00:00', 70.0), (7, '2026-01-07T10:00:00', 71.0), \
         (5, '2099-01-01T00:00:00', 50.0)",
        // The view now holds a row past the served cut-off: it is loaded whole.
        "(8, '2026-01-08T10:00:00', 80.0)",
    ]
    .into_iter()
    .enumerate()
    {
        run(&engine, &format!("INSERT INTO tx VALUES {appended}")).await;
        run(&engine, "REFRESH FEATURE VIEW spend").await;
        let incremental = served(engine.clone()).await;
        // What loading the view whole serves.
        run(&engine, "ALTER FEATURE VIEW spend SET (online = true)").await;
        assert_eq!(incremental, served(engine.clone()).await, "round {round}");
    }
    assert_eq!(
        rows(
            &engine,
            "SELECT concat(object, ' ', mode) FROM flywheel.refresh_history"
        )
        .await,
        vec![
            "spend incremental",
            "spend incremental",
            "spend incremental"
        ]
    );
    let one = rows(&engine, "SELECT amount FROM online('spend', 2)").await;
    assert_eq!(one, vec!["21.0"], "the correction is served");
    let late = rows(&engine, "SELECT amount FROM online('spend', 3)").await;
    assert_eq!(
        late,
        vec!["30.0"],
        "a late row does not replace a newer one"
    );
    let seven = rows(&engine, "SELECT amount FROM online('spend', 7)").await;
    assert_eq!(seven, vec!["71.0"]);
}
