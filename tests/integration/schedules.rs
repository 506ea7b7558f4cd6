//! Refresh schedules and the scheduler: due refreshes under a clock the test sets (catch-up once,
//! suspend/resume, on change, failures recorded), two real servers on one warehouse running each
//! scheduled refresh once, and a refresh killed midway.

use std::time::{Duration, Instant};

use arrow::array::{Array, Int64Array, RecordBatch, StringArray};
use chrono::{DateTime, TimeZone, Utc};
use flywheel::Engine;
use flywheel::engine::{Scheduler, SchedulerOptions};

use crate::common::{ServerProcess, engine_with, flywheel, run_sql, succeeds};

async fn run(engine: &Engine, sql: &str) -> Vec<RecordBatch> {
    run_sql(engine, sql).await
}

/// The one integer a query returns.
async fn number(engine: &Engine, sql: &str) -> i64 {
    let batches = run(engine, sql).await;
    let column = arrow::compute::cast(batches[0].column(0), &arrow::datatypes::DataType::Int64)
        .expect("an integer");
    column
        .as_any()
        .downcast_ref::<Int64Array>()
        .expect("Int64")
        .value(0)
}

/// The strings of the first column of a query's rows.
async fn strings(engine: &Engine, sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    for b in run(engine, sql).await {
        let column =
            arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8).expect("a string");
        let column = column.as_any().downcast_ref::<StringArray>().expect("Utf8");
        out.extend((0..column.len()).map(|i| column.value(i).to_string()));
    }
    out
}

fn hour_after(t: DateTime<Utc>, hours: i64) -> DateTime<Utc> {
    t + chrono::Duration::hours(hours)
}

fn floor_hour(t: DateTime<Utc>) -> DateTime<Utc> {
    Utc.timestamp_opt(t.timestamp().div_euclid(3600) * 3600, 0)
        .single()
        .expect("a time")
}

#[tokio::test]
async fn the_scheduler_runs_due_refreshes_once_catches_up_once_and_obeys_suspend() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine_with(
        dir.path(),
        &[
            "CREATE ENTITY user (user_id BIGINT)",
            "CREATE TABLE tx (user_id BIGINT, ts TIMESTAMP, amount DOUBLE)",
            "INSERT INTO tx VALUES (1, '2026-01-01T10:00:00', 10.0)",
            "CREATE FEATURE VIEW spend ENTITY user EVENT TIME ts WITH (refresh = 'every 1 hour') \
         AS SELECT user_id, ts, amount FROM tx",
            "CREATE TABLE cb (user_id BIGINT, ts TIMESTAMP, y BOOLEAN)",
            "INSERT INTO cb VALUES (1, '2026-01-05T00:00:00', true)",
            "CREATE LABEL fraud ENTITY user EVENT TIME ts WITH (refresh = 'on change') FROM cb",
        ],
    )
    .await;
    let options = SchedulerOptions {
        poll_interval: Duration::ZERO,
        lease_timeout: Duration::from_secs(300),
    };
    let mut scheduler = Scheduler::new(engine.clone(), options);
    let now = Utc::now();

    // Nothing is due: the hour's tick came before the schedule was set, and the label is fresh.
    let runs = scheduler.pass(now).await.expect("pass");
    assert!(runs.is_empty(), "{runs:?}");

    // The next tick refreshes the view, once.
    run(
        &engine,
        "INSERT INTO tx VALUES (2, '2026-01-02T10:00:00', 20.0)",
    )
    .await;
    let runs = scheduler.pass(hour_after(now, 1)).await.expect("pass");
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].name, "spend");
    assert_eq!(runs[0].tick, floor_hour(hour_after(now, 1)));
    assert!(runs[0].outcome.is_ok(), "{runs:?}");
    assert_eq!(number(&engine, "SELECT count(*) FROM spend").await, 2);
    let again = scheduler.pass(hour_after(now, 1)).await.expect("pass");
    assert!(again.is_empty(), "a tick runs once: {again:?}");

    // Four hours of downtime: one catch-up run, for the latest missed tick.
    let runs = scheduler.pass(hour_after(now, 5)).await.expect("pass");
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].tick, floor_hour(hour_after(now, 5)));

    // Suspended: nothing fires; resumed: it fires again.
    run(&engine, "ALTER FEATURE VIEW spend SUSPEND").await;
    let runs = scheduler.pass(hour_after(now, 7)).await.expect("pass");
    assert!(runs.is_empty(), "{runs:?}");
    assert_eq!(
        strings(
            &engine,
            "SELECT CAST(suspended AS VARCHAR) FROM flywheel.freshness WHERE object = 'spend'"
        )
        .await,
        vec!["true"]
    );
    run(&engine, "ALTER FEATURE VIEW spend RESUME").await;
    let runs = scheduler.pass(hour_after(now, 8)).await.expect("pass");
    assert_eq!(runs.len(), 1, "{runs:?}");

    // On change: a new chargeback refreshes the label at the next poll, once.
    run(
        &engine,
        "INSERT INTO cb VALUES (2, '2026-01-06T00:00:00', false)",
    )
    .await;
    let runs = scheduler.pass(hour_after(now, 8)).await.expect("pass");
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].name, "fraud");
    assert_eq!(number(&engine, "SELECT count(*) FROM fraud").await, 2);
    let runs = scheduler.pass(hour_after(now, 8)).await.expect("pass");
    assert!(runs.is_empty(), "fresh now: {runs:?}");

    // A failing scheduled refresh is recorded with its error, and tried again at the next tick.
    run(
        &engine,
        "CREATE OR REPLACE TABLE tx AS SELECT user_id, ts FROM tx",
    )
    .await;
    let runs = scheduler.pass(hour_after(now, 9)).await.expect("pass");
    assert_eq!(runs.len(), 1, "{runs:?}");
    let error = runs[0]
        .outcome
        .as_ref()
        .expect_err("the query lost a column");
    assert!(error.contains("amount"), "{error}");
    let history = strings(
        &engine,
        "SELECT concat_ws(' ', trigger, status, CAST(scheduled_for AS VARCHAR)) \
         FROM flywheel.refresh_history WHERE object = 'spend' ORDER BY finished_at",
    )
    .await;
    let ticks: Vec<String> = [1, 5, 8, 9]
        .iter()
        .map(|h| {
            floor_hour(hour_after(now, *h))
                .naive_utc()
                .format("%Y-%m-%dT%H:%M:%SZ")
                .to_string()
        })
        .collect();
    assert_eq!(
        history,
        vec![
            format!("schedule ok {}", ticks[0]),
            format!("schedule ok {}", ticks[1]),
            format!("schedule ok {}", ticks[2]),
            format!("schedule failed {}", ticks[3]),
        ]
    );
    let status = strings(
        &engine,
        "SELECT concat_ws(' ', last_status, refresh) FROM flywheel.freshness \
         WHERE object = 'spend'",
    )
    .await;
    assert_eq!(status, vec!["failed every 1 hour"]);
    let label = strings(
        &engine,
        "SELECT concat_ws(' ', trigger, status) FROM flywheel.refresh_history \
         WHERE object = 'fraud'",
    )
    .await;
    assert_eq!(label, vec!["on change ok"]);
}

/// Polls `flywheel sql -e sql` on `warehouse` until its output contains `wanted` (or fails after
/// `within`).
fn wait_for(warehouse: &std::path::Path, sql: &str, wanted: &str, within: Duration) -> String {
    let started = Instant::now();
    loop {
        let out = succeeds(flywheel(warehouse).args(["sql", "-e", sql]));
        if out.contains(wanted) {
            return out;
        }
        assert!(
            started.elapsed() < within,
            "no `{wanted}` after {within:?}: {out}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn two_servers_on_one_warehouse_run_each_scheduled_refresh_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wh = dir.path().join("wh");
    let setup = "CREATE ENTITY user (user_id BIGINT);
        CREATE TABLE tx (user_id BIGINT, ts TIMESTAMP, amount DOUBLE);
        INSERT INTO tx VALUES (1, '2026-01-01T10:00:00', 10.0);
        CREATE FEATURE VIEW spend ENTITY user EVENT TIME ts WITH (refresh = 'every 1 second')
          AS SELECT user_id, ts, amount FROM tx;
        CREATE TABLE cb (user_id BIGINT, ts TIMESTAMP, y BOOLEAN);
        INSERT INTO cb VALUES (1, '2026-01-05T00:00:00', true);
        CREATE LABEL fraud ENTITY user EVENT TIME ts WITH (refresh = 'on change') FROM cb;";
    succeeds(flywheel(&wh).args(["sql", "-e", setup]));
    let env = [("FLYWHEEL_ON_CHANGE_POLL_INTERVAL", "200ms")];
    let a = ServerProcess::start_with_env(&wh, &[], &env);
    let b = ServerProcess::start_with_env(&wh, &[], &env);

    // A new chargeback reaches the label by itself.
    succeeds(flywheel(&wh).args([
        "sql",
        "-e",
        "INSERT INTO cb VALUES (2, '2026-01-06T00:00:00', false)",
    ]));
    wait_for(
        &wh,
        "SELECT count(*) AS n FROM fraud",
        "| 2 |",
        Duration::from_secs(60),
    );
    // Let the view's schedule fire a few times on both servers.
    wait_for(
        &wh,
        "SELECT count(*) >= 4 AS enough FROM flywheel.refresh_history WHERE object = 'spend'",
        "true",
        Duration::from_secs(60),
    );
    drop(a);
    drop(b);

    let twice = succeeds(flywheel(&wh).args([
        "sql",
        "-e",
        "SELECT count(*) AS ticks_run_twice FROM (SELECT scheduled_for FROM \
         flywheel.refresh_history WHERE object = 'spend' GROUP BY scheduled_for HAVING count(*) > 1)",
    ]));
    assert!(twice.contains("| 0 "), "{twice}");
    let label = succeeds(flywheel(&wh).args([
        "sql",
        "-e",
        "SELECT trigger, count(*) AS runs FROM flywheel.refresh_history WHERE object = 'fraud' \
         GROUP BY trigger",
    ]));
    assert!(label.contains("| on change | 1    |"), "{label}");
}

#[test]
fn a_refresh_killed_midway_leaves_each_object_at_its_old_or_new_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wh = dir.path().join("wh");
    let setup = "CREATE ENTITY user (user_id BIGINT);
        CREATE TABLE tx AS SELECT value AS id, value % 1000 AS user_id,
          to_timestamp_seconds(1767225600 + value) AS ts,
          CAST(value AS DOUBLE) AS amount FROM generate_series(1, 300000);
        CREATE FEATURE VIEW spend ENTITY user EVENT TIME ts AS SELECT id, user_id, ts, amount FROM tx;
        CREATE LABEL big ENTITY user EVENT TIME ts FROM (SELECT user_id, ts, amount > 10 AS y FROM tx);
        INSERT INTO tx SELECT value AS id, value % 1000 AS user_id,
          to_timestamp_seconds(1767225600 + value) AS ts,
          CAST(value AS DOUBLE) AS amount FROM generate_series(300001, 400000);";
    succeeds(flywheel(&wh).args(["sql", "-e", setup]));
    let count = |table: &str| -> (u64, u64) {
        let out = succeeds(flywheel(&wh).args([
            "sql",
            "-e",
            &format!("SELECT count(*) AS n, count(DISTINCT ts) AS d FROM {table}"),
        ]));
        let row = out
            .lines()
            .find(|l| l.starts_with("| ") && !l.contains(" n "))
            .unwrap_or_else(|| panic!("a row in {out}"));
        let cells: Vec<u64> = row
            .split('|')
            .filter_map(|c| c.trim().parse().ok())
            .collect();
        (cells[0], cells[1])
    };
    for delay_ms in [150, 400, 900] {
        let mut child = flywheel(&wh)
            .args(["refresh", "--all"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("starts");
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        for table in ["spend", "big"] {
            let (n, distinct) = count(table);
            assert!(
                n == 300_000 || n == 400_000,
                "{table} after a kill at {delay_ms} ms: {n} rows"
            );
            assert_eq!(n, distinct, "{table}: no row twice");
        }
    }
    let out = succeeds(flywheel(&wh).args(["refresh", "--stale"]));
    assert!(!out.contains("error"), "{out}");
    assert_eq!(count("spend"), (400_000, 400_000));
    assert_eq!(count("big"), (400_000, 400_000));
}
