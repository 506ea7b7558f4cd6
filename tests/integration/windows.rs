//! Aggregate features (`OVER (RANGE INTERVAL ... PRECEDING)` in a feature view): every aggregate
//! against an independent SQL formulation (a range join grouped per probe, DataFusion's own
//! aggregates), online lookups against the offline evaluation at the lookup's time, window edges
//! to the microsecond, incremental refresh and freshness.

use arrow::array::{Array, RecordBatch};
use datafusion::common::ScalarValue;
use flywheel::online::LookupRequest;

use crate::common::{engine_with, run_sql, sql_rows};

/// The rows of `batches` as cells: floats as `f64`, anything else as its text.
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Float(f64),
    Text(String),
}

fn cells(batches: &[RecordBatch]) -> Vec<Vec<Cell>> {
    let mut out = Vec::new();
    for b in batches {
        for row in 0..b.num_rows() {
            out.push(
                b.columns()
                    .iter()
                    .map(|c| {
                        let v = ScalarValue::try_from_array(c, row).expect("a value");
                        match v {
                            ScalarValue::Float64(Some(f)) => Cell::Float(f),
                            _ if c.is_null(row) => Cell::Text("NULL".into()),
                            other => Cell::Text(other.to_string()),
                        }
                    })
                    .collect(),
            );
        }
    }
    out
}

/// Asserts two result sets hold the same rows in the same order, floats within 1e-9 (relative).
fn assert_same(ours: &[RecordBatch], oracle: &[RecordBatch], names: &[&str]) {
    let (a, b) = (cells(ours), cells(oracle));
    assert_eq!(a.len(), b.len(), "row counts");
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        for (j, (p, q)) in x.iter().zip(y).enumerate() {
            let same = match (p, q) {
                (Cell::Float(p), Cell::Float(q)) => {
                    (p - q).abs() <= 1e-9 * p.abs().max(q.abs()).max(1.0)
                }
                (Cell::Text(p), Cell::Text(q)) => p == q,
                _ => false,
            };
            assert!(
                same,
                "row {i}, column {}: ours {p:?}, oracle {q:?}",
                names[j]
            );
        }
    }
}

const EVENTS: &str = "CREATE TABLE ev AS SELECT value % 7 AS user_id, \
     CASE WHEN value % 3 = 0 THEN 'eu' ELSE 'us' END AS region, \
     CAST(to_timestamp_seconds(1767225600 + ((value * 7919) % 1500) * 60) AS TIMESTAMP) AS ts, \
     CASE WHEN value % 11 = 0 THEN NULL ELSE CAST((value * 37) % 1000 AS DOUBLE) / 4 END AS amount, \
     CAST((value * 13) % 50 AS BIGINT) AS qty, \
     CASE WHEN value % 9 = 0 THEN NULL ELSE concat('m', CAST((value * 17) % 12 AS VARCHAR)) END AS merchant, \
     CASE WHEN value % 4 = 0 THEN 'x' ELSE 'y' END AS category FROM range(0, 3000)";

/// Probe rows on the events' minute grid (so window edges fall on events), before, among and
/// after the events, with a key that has none (user 7) and keys of both regions.
const PROBES: &str = "CREATE TABLE probes AS SELECT value AS rid, value % 8 AS user_id, \
     CASE WHEN value % 5 = 0 THEN 'eu' ELSE 'us' END AS region, \
     CAST(to_timestamp_seconds(1767225600 + ((value * 31) % 1600 - 50) * 60) AS TIMESTAMP) AS ts, \
     value % 2 AS y FROM range(0, 400)";

const VIEW: &str = "CREATE FEATURE VIEW agg ENTITY ur EVENT TIME ts AS SELECT user_id, region, ts, \
     count(*) OVER (RANGE INTERVAL '1 hour' PRECEDING) AS n_1h, \
     count(amount) OVER (RANGE INTERVAL '3 hours' PRECEDING) AS na_3h, \
     sum(amount) OVER (RANGE INTERVAL '1 hour' PRECEDING) AS sum_1h, \
     sum(qty) OVER (RANGE INTERVAL '90 minutes' PRECEDING) AS qty_90m, \
     avg(amount) FILTER (WHERE category = 'x') OVER (RANGE INTERVAL '1 day' PRECEDING) AS avg_x_1d, \
     min(amount) OVER (RANGE INTERVAL '3 hours' PRECEDING) AS min_3h, \
     max(merchant) OVER (RANGE INTERVAL '3 hours' PRECEDING) AS max_m_3h, \
     stddev_samp(amount) OVER (RANGE INTERVAL '1 day' PRECEDING) AS sd_1d, \
     var_samp(amount) FILTER (WHERE qty > 10) OVER (RANGE INTERVAL '3 hours' PRECEDING) AS var_3h, \
     count(DISTINCT merchant) OVER (RANGE INTERVAL '3 hours' PRECEDING) AS dm_3h, \
     approx_distinct(merchant) OVER (RANGE INTERVAL '3 hours' PRECEDING) AS adm_3h, \
     first_value(amount) OVER (RANGE INTERVAL '1 hour' PRECEDING) AS first_1h, \
     last_value(merchant) OVER (RANGE INTERVAL '90 minutes' PRECEDING) AS last_m_90m, \
     last_k(merchant, 3) FILTER (WHERE category = 'y') OVER (RANGE INTERVAL '3 hours' PRECEDING) AS lk_3h \
     FROM ev";

/// The same aggregates as [`VIEW`], written as a range join grouped per probe row.
const ORACLE: &str = "SELECT p.rid, \
     count(e.ts) FILTER (WHERE e.ts > p.ts - INTERVAL '1 hour') AS n_1h, \
     count(e.amount) FILTER (WHERE e.ts > p.ts - INTERVAL '3 hours') AS na_3h, \
     sum(e.amount) FILTER (WHERE e.ts > p.ts - INTERVAL '1 hour') AS sum_1h, \
     sum(e.qty) FILTER (WHERE e.ts > p.ts - INTERVAL '90 minutes') AS qty_90m, \
     avg(e.amount) FILTER (WHERE e.category = 'x') AS avg_x_1d, \
     min(e.amount) FILTER (WHERE e.ts > p.ts - INTERVAL '3 hours') AS min_3h, \
     max(e.merchant) FILTER (WHERE e.ts > p.ts - INTERVAL '3 hours') AS max_m_3h, \
     stddev_samp(e.amount) AS sd_1d, \
     var_samp(e.amount) FILTER (WHERE e.ts > p.ts - INTERVAL '3 hours' AND e.qty > 10) AS var_3h, \
     count(DISTINCT e.merchant) FILTER (WHERE e.ts > p.ts - INTERVAL '3 hours') AS dm_3h, \
     CAST(count(DISTINCT e.merchant) FILTER (WHERE e.ts > p.ts - INTERVAL '3 hours') AS BIGINT UNSIGNED) AS adm_3h, \
     first_value(e.amount ORDER BY e.ts) FILTER (WHERE e.ts > p.ts - INTERVAL '1 hour' AND e.amount IS NOT NULL) AS first_1h, \
     last_value(e.merchant ORDER BY e.ts) FILTER (WHERE e.ts > p.ts - INTERVAL '90 minutes' AND e.merchant IS NOT NULL) AS last_m_90m, \
     array_slice(array_agg(e.merchant ORDER BY e.ts DESC) FILTER (WHERE e.ts > p.ts - INTERVAL '3 hours' \
       AND e.category = 'y' AND e.merchant IS NOT NULL), 1, 3) AS lk_3h \
     FROM probes p LEFT JOIN ev e ON e.user_id = p.user_id AND e.region = p.region \
       AND e.ts > p.ts - INTERVAL '1 day' AND e.ts <= p.ts \
     GROUP BY p.rid ORDER BY p.rid";

const COLUMNS: [&str; 15] = [
    "rid",
    "n_1h",
    "na_3h",
    "sum_1h",
    "qty_90m",
    "avg_x_1d",
    "min_3h",
    "max_m_3h",
    "sd_1d",
    "var_3h",
    "dm_3h",
    "adm_3h",
    "first_1h",
    "last_m_90m",
    "lk_3h",
];

#[tokio::test]
async fn every_aggregate_at_each_label_time_equals_a_range_join_over_the_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine_with(
        dir.path(),
        &[
            "CREATE ENTITY ur (user_id BIGINT, region VARCHAR)",
            EVENTS,
            PROBES,
            VIEW,
            // An ordinary view beside it in the same training set.
            "CREATE FEATURE VIEW last_amount ENTITY ur EVENT TIME ts AS \
             SELECT user_id, region, ts, amount AS latest_amount FROM ev",
            "CREATE LABEL lab ENTITY ur EVENT TIME ts FROM probes",
            "CREATE TRAINING SET train LABEL lab FEATURES agg, last_amount",
        ],
    )
    .await;
    let ours = run_sql(
        &engine,
        &format!("SELECT {} FROM train ORDER BY rid", COLUMNS.join(", ")),
    )
    .await;
    let oracle = run_sql(&engine, ORACLE).await;
    assert_same(&ours, &oracle, &COLUMNS);
    // The data has what the comparison is for: empty windows, NULL inputs, full windows.
    let shape = sql_rows(
        &engine,
        "SELECT count(*) FILTER (WHERE n_1h = 0), count(*) FILTER (WHERE n_1h > 3), \
         count(*) FILTER (WHERE sum_1h IS NULL), count(*) FILTER (WHERE lk_3h IS NOT NULL) FROM train",
    )
    .await;
    let counts: Vec<i64> = shape[0]
        .split(',')
        .map(|v| v.parse().expect("a count"))
        .collect();
    assert!(counts.iter().all(|&c| c > 10), "{counts:?}");
    // The ordinary view's feature is the ASOF value, as without aggregates.
    let asof = run_sql(
        &engine,
        "SELECT l.rid, f.amount FROM probes l ASOF JOIN ev f MATCH_CONDITION (l.ts >= f.ts) \
         ON l.user_id = f.user_id AND l.region = f.region ORDER BY l.rid",
    )
    .await;
    let ours = run_sql(&engine, "SELECT rid, latest_amount FROM train ORDER BY rid").await;
    assert_same(&ours, &asof, &["rid", "latest_amount"]);
    // Choosing features computes only those.
    run_sql(
        &engine,
        "CREATE TRAINING SET few LABEL lab FEATURES agg.sum_1h, agg.lk_3h",
    )
    .await;
    let few = run_sql(&engine, "SELECT rid, sum_1h, lk_3h FROM few ORDER BY rid").await;
    let all = run_sql(&engine, "SELECT rid, sum_1h, lk_3h FROM train ORDER BY rid").await;
    assert_same(&few, &all, &["rid", "sum_1h", "lk_3h"]);
    // window_features gives the same values as the training set at one probe's time.
    let at = sql_rows(
        &engine,
        "SELECT CAST(ts AS VARCHAR), user_id, region FROM probes WHERE rid = 4",
    )
    .await;
    let parts: Vec<&str> = at[0].split(',').collect();
    let adhoc = run_sql(
        &engine,
        &format!(
            "SELECT n_1h, sum_1h, dm_3h, lk_3h FROM window_features('agg', TIMESTAMP '{}', {}, '{}')",
            parts[0], parts[1], parts[2]
        ),
    )
    .await;
    let train = run_sql(
        &engine,
        "SELECT n_1h, sum_1h, dm_3h, lk_3h FROM train WHERE rid = 4",
    )
    .await;
    assert_same(&adhoc, &train, &["n_1h", "sum_1h", "dm_3h", "lk_3h"]);
    // EXPLAIN shows the operator, evaluating only the aggregates the query asks for.
    let plan = sql_rows(
        &engine,
        &format!(
            "EXPLAIN SELECT sum_1h FROM window_features('agg', TIMESTAMP '{}')",
            parts[0]
        ),
    )
    .await
    .join("\n");
    assert!(plan.contains("WindowAggExec: every key at"), "{plan}");
    assert!(plan.contains("aggregates=[sum_1h := sum("), "{plan}");
    assert!(!plan.contains("n_1h :="), "{plan}");
}

#[tokio::test]
async fn window_edges_exclude_the_start_and_include_the_time_to_the_microsecond() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine_with(
        dir.path(),
        &[
            "CREATE ENTITY user (user_id BIGINT)",
            "CREATE TABLE tx (user_id BIGINT, ts TIMESTAMP, amount DOUBLE)",
            "INSERT INTO tx VALUES (1, '2026-03-01T00:00:00', 1.0), \
             (1, '2026-03-01T00:00:00.000001', 10.0), (1, '2026-03-01T01:00:00', 100.0)",
            "CREATE FEATURE VIEW s ENTITY user EVENT TIME ts AS SELECT user_id, ts, \
             sum(amount) OVER (RANGE INTERVAL '1 hour' PRECEDING) AS s_1h FROM tx",
        ],
    )
    .await;
    let at = |t: &'static str| {
        let engine = engine.clone();
        async move {
            sql_rows(
                &engine,
                &format!("SELECT s_1h FROM window_features('s', TIMESTAMP '{t}', 1)"),
            )
            .await
        }
    };
    // (t - 1h, t]: the event at exactly t - 1h is out, one a microsecond later is in.
    assert_eq!(at("2026-03-01T01:00:00").await, vec!["110.0"]);
    assert_eq!(at("2026-03-01T00:59:59.999999").await, vec!["11.0"]);
    assert_eq!(at("2026-03-01T01:00:00.000001").await, vec!["100.0"]);
    assert_eq!(at("2026-03-01T00:00:00").await, vec!["1.0"]);
    // Empty windows: NULL (shown empty).
    assert_eq!(at("2026-02-28T23:59:59.999999").await, vec![""]);
    assert_eq!(at("2026-03-01T02:00:00").await, vec![""]);
}

#[tokio::test]
async fn online_lookups_equal_the_offline_evaluation_at_the_lookup_time_and_decay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let now_us = chrono::Utc::now().timestamp_micros();
    let hour = 3_600_000_000i64;
    // Events over the last ten days, every 7 hours per key, on 5 keys.
    let events = format!(
        "CREATE TABLE tx AS SELECT value % 5 AS user_id, \
         CAST(to_timestamp_micros({now_us} - value * {}) AS TIMESTAMP) AS ts, \
         CAST(value % 17 AS DOUBLE) AS amount, concat('m', CAST(value % 4 AS VARCHAR)) AS merchant \
         FROM range(0, 170)",
        hour * 7 / 5
    );
    let engine = engine_with(
        dir.path(),
        &[
            "CREATE ENTITY user (user_id BIGINT)",
            &events,
            "CREATE FEATURE VIEW spend ENTITY user EVENT TIME ts WITH (online = true) AS \
             SELECT user_id, ts, \
             sum(amount) OVER (RANGE INTERVAL '7 days' PRECEDING) AS spend_7d, \
             count(*) OVER (RANGE INTERVAL '1 day' PRECEDING) AS n_1d, \
             max(amount) OVER (RANGE INTERVAL '12 hours' PRECEDING) AS max_12h, \
             last_k(merchant, 2) OVER (RANGE INTERVAL '2 days' PRECEDING) AS last_2 FROM tx",
        ],
    )
    .await;
    let features = ["spend_7d", "n_1d", "max_12h", "last_2"];
    // The lookup's clock is injected: now, in an hour, in three days, in eight (all aged out).
    for later in [0, hour, 72 * hour, 192 * hour] {
        let at_us = now_us + later;
        let request = LookupRequest {
            features: vec!["spend".into()],
            keys: (0..6).map(|k| serde_json::json!([k])).collect(),
            keys_arrow: None,
        };
        let online = engine.online_lookup(&request, at_us).await.expect("lookup");
        for key in 0..6usize {
            let offline = run_sql(
                &engine,
                &format!(
                    "SELECT {} FROM window_features('spend', to_timestamp_micros({at_us}), {key})",
                    features.join(", ")
                ),
            )
            .await;
            let online_row: Vec<Cell> =
                cells(&[online.project(&[2, 3, 4, 5]).expect("project")]).remove(key);
            // A key without events in the window (key 5 has none at all): counts 0, the rest NULL.
            assert_eq!(vec![online_row], cells(&offline), "key {key} at +{later}us");
        }
        if later == 192 * hour {
            // A week and a day later every window is empty: the sums decayed to nothing.
            let n: Vec<Cell> = cells(&[online.project(&[3]).expect("project")])
                .into_iter()
                .flatten()
                .collect();
            assert!(n.iter().all(|c| *c == Cell::Text("0".into())), "{n:?}");
        }
    }
    // online() shows what a lookup returns now.
    let shown = sql_rows(&engine, "SELECT user_id, n_1d FROM online('spend')").await;
    assert_eq!(shown.len(), 5, "{shown:?}");
    // The snapshot survives a restart: a new engine serves the same answer.
    let request = LookupRequest {
        features: vec!["spend.spend_7d".into()],
        keys: vec![serde_json::json!([1])],
        keys_arrow: None,
    };
    let before = engine
        .online_lookup(&request, now_us)
        .await
        .expect("lookup");
    drop(engine);
    let reopened = flywheel::Engine::open(dir.path().to_str().expect("utf-8"))
        .await
        .expect("reopens");
    let after = reopened
        .online_lookup(&request, now_us)
        .await
        .expect("lookup");
    assert_eq!(cells(&[before]), cells(&[after]));
}

#[tokio::test]
async fn aggregate_views_refresh_incrementally_and_training_sets_append_new_labels() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine_with(
        dir.path(),
        &[
            "CREATE ENTITY user (user_id BIGINT)",
            "CREATE TABLE tx (user_id BIGINT, ts TIMESTAMP, amount DOUBLE)",
            "INSERT INTO tx VALUES (1, '2026-01-01T10:00:00', 10.0), (2, '2026-01-02T10:00:00', 20.0)",
            "CREATE TABLE cb (user_id BIGINT, ts TIMESTAMP, y BOOLEAN)",
            "INSERT INTO cb VALUES (1, '2026-01-05T00:00:00', true)",
            "CREATE FEATURE VIEW spend ENTITY user EVENT TIME ts AS SELECT user_id, ts, \
             sum(amount) OVER (RANGE INTERVAL '7 days' PRECEDING) AS spend_7d FROM tx",
            "CREATE LABEL fraud ENTITY user EVENT TIME ts FROM cb",
            "CREATE TRAINING SET train LABEL fraud FEATURES spend",
        ],
    )
    .await;
    run_sql(
        &engine,
        "INSERT INTO tx VALUES (1, '2026-01-04T10:00:00', 5.0)",
    )
    .await;
    run_sql(&engine, "REFRESH FEATURE VIEW spend").await;
    assert_eq!(
        sql_rows(
            &engine,
            "SELECT mode FROM flywheel.refresh_history WHERE object = 'spend'"
        )
        .await,
        vec!["incremental"]
    );
    assert_eq!(
        sql_rows(
            &engine,
            "SELECT stale, last_refresh_mode, newest_event_time = TIMESTAMP '2026-01-04T10:00:00Z' \
             FROM flywheel.freshness WHERE object = 'spend'"
        )
        .await,
        vec!["false,incremental,true"]
    );
    run_sql(&engine, "REFRESH TRAINING SET train").await;
    assert_eq!(
        sql_rows(&engine, "SELECT user_id, spend_7d FROM train").await,
        vec!["1,15.0"]
    );
    // Only the label gained rows: their features are appended, equal to a rebuild.
    run_sql(
        &engine,
        "INSERT INTO cb VALUES (2, '2026-01-06T00:00:00', false), (1, '2026-01-12T00:00:00', false)",
    )
    .await;
    run_sql(&engine, "REFRESH TRAINING SET train").await;
    run_sql(
        &engine,
        "CREATE TRAINING SET rebuilt LABEL fraud FEATURES spend",
    )
    .await;
    assert_eq!(
        sql_rows(&engine, "SELECT * FROM train").await,
        sql_rows(&engine, "SELECT * FROM rebuilt").await
    );
    assert_eq!(
        sql_rows(
            &engine,
            "SELECT mode FROM flywheel.refresh_history WHERE object = 'train' ORDER BY mode"
        )
        .await,
        vec!["full", "incremental"]
    );
    assert_eq!(
        sql_rows(
            &engine,
            "SELECT user_id, CAST(ts AS VARCHAR), spend_7d FROM train"
        )
        .await,
        vec![
            "1,2026-01-05T00:00:00,15.0",
            // The 4 January event is more than 7 days before 12 January: an empty window.
            "1,2026-01-12T00:00:00",
            "2,2026-01-06T00:00:00,20.0"
        ]
    );
}

#[tokio::test]
async fn under_a_memory_limit_the_events_are_read_in_passes_with_the_same_answer() {
    // About 12 MB of events against a 4 MiB limit.
    let dir = tempfile::tempdir().expect("tempdir");
    let location = dir.path().to_str().expect("utf-8");
    let unlimited = engine_with(
        dir.path(),
        &[
            "CREATE ENTITY user (user_id BIGINT)",
            "CREATE TABLE tx AS SELECT value % 1000 AS user_id, \
             CAST(to_timestamp_seconds(1767225600 + (value * 7919) % 8640000) AS TIMESTAMP) AS ts, \
             CAST(value % 97 AS DOUBLE) AS amount FROM range(0, 300000)",
            "CREATE TABLE cb AS SELECT value % 1200 AS user_id, \
             CAST(to_timestamp_seconds(1767225600 + (value * 104729) % 8640000) AS TIMESTAMP) AS ts, \
             value % 2 = 0 AS y FROM range(0, 20000)",
            "CREATE FEATURE VIEW spend ENTITY user EVENT TIME ts AS SELECT user_id, ts, \
             sum(amount) OVER (RANGE INTERVAL '7 days' PRECEDING) AS s7, \
             max(amount) OVER (RANGE INTERVAL '1 day' PRECEDING) AS m1, \
             count(*) OVER (RANGE INTERVAL '30 days' PRECEDING) AS n30 FROM tx",
            "CREATE LABEL fraud ENTITY user EVENT TIME ts FROM cb",
            "CREATE TRAINING SET whole LABEL fraud FEATURES spend",
        ],
    )
    .await;
    let limited = flywheel::Engine::open_with(
        location,
        &flywheel::EngineOptions {
            memory_limit: Some(4 << 20),
            ..Default::default()
        },
    )
    .await
    .expect("engine");
    // The limit binds: the events do not fit in one pass.
    let one_pass = limited
        .sql("SELECT * FROM window_features('spend', TIMESTAMP '2026-03-01 00:00:00')")
        .await;
    let refused = match one_pass {
        Ok(out) => out.collect().await.err().map(|e| e.to_string()),
        Err(e) => Some(e.to_string()),
    };
    assert!(
        refused.as_ref().is_some_and(|e| e.contains("memory_limit")),
        "{refused:?}"
    );
    // A training set reads them in passes and gets what the unlimited engine got.
    run_sql(
        &limited,
        "CREATE TRAINING SET limited LABEL fraud FEATURES spend",
    )
    .await;
    let query =
        |t: &str| format!("SELECT user_id, ts, y, s7, m1, n30 FROM {t} ORDER BY user_id, ts, y");
    let (want, got) = (
        run_sql(&unlimited, &query("whole")).await,
        run_sql(&unlimited, &query("limited")).await,
    );
    assert_same(&got, &want, &["user_id", "ts", "y", "s7", "m1", "n30"]);
    assert_eq!(
        sql_rows(
            &unlimited,
            "SELECT count(*) > 15000 FROM whole WHERE n30 > 0"
        )
        .await,
        vec!["true"]
    );
}
