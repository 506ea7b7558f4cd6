//! The `flywheel` binary: `sql -e/-f` exit codes and output, and `serve` with a signal shutdown.

use crate::common::{ServerProcess, flywheel, query, sorted_rows, succeeds};

#[test]
fn sql_execute_prints_tables_and_fails_on_the_first_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wh = dir.path().join("wh");
    let out = flywheel(&wh)
        .args(["sql", "-e", "CREATE TABLE t (a BIGINT); INSERT INTO t VALUES (41), (1); SELECT sum(a) AS total FROM t;"])
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("| total |"), "{stdout}");
    assert!(stdout.contains("| 42    |"), "{stdout}");
    assert!(stdout.contains("2 rows affected"), "{stdout}");

    // The first failing statement stops the script: the INSERT after it never runs.
    let out = flywheel(&wh)
        .args([
            "sql",
            "-e",
            "SELECT * FROM nope; INSERT INTO t VALUES (100);",
        ])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Error:") && stderr.contains("nope"),
        "{stderr}"
    );
    let out = flywheel(&wh)
        .args(["sql", "-e", "SELECT count(*) AS n FROM t"])
        .output()
        .expect("runs");
    assert!(String::from_utf8_lossy(&out.stdout).contains("| 2 |"));
}

#[test]
fn sql_file_runs_a_script() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("setup.sql");
    std::fs::write(
        &script,
        "-- a comment\nCREATE TABLE s AS\n  SELECT 1 AS id, 'x' AS v;\n\nSELECT v FROM s WHERE id = 1;\n",
    )
    .expect("write");
    let stdout = succeeds(
        flywheel(&dir.path().join("wh"))
            .args(["sql", "-f"])
            .arg(&script),
    );
    assert!(stdout.contains("| x |"));

    let out = flywheel(&dir.path().join("wh"))
        .args(["sql", "-f", "/definitely/not/here.sql"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read SQL file"));
}

#[tokio::test]
async fn serve_answers_what_the_shell_wrote_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wh = dir.path().join("wh");
    let out = flywheel(&wh)
        .args(["sql", "-e", "CREATE TABLE t AS SELECT 6 * 7 AS answer"])
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let server = ServerProcess::start(&wh, &[]);
    let mut client = arrow_flight::sql::client::FlightSqlServiceClient::new(server.channel().await);
    assert_eq!(
        sorted_rows(&query(&mut client, "SELECT answer FROM t").await),
        vec!["42"]
    );
    drop(client);

    let status = server.terminate();
    assert!(
        status.success(),
        "serve exits cleanly on SIGTERM: {status:?}"
    );
}

#[test]
fn refresh_runs_stale_inputs_first_and_names_the_object_that_failed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wh = dir.path().join("wh");
    let setup = "CREATE ENTITY user (user_id BIGINT);
        CREATE TABLE tx (user_id BIGINT, ts TIMESTAMP, amount DOUBLE);
        INSERT INTO tx VALUES (1, '2026-01-01T10:00:00', 10.0);
        CREATE TABLE cb (user_id BIGINT, ts TIMESTAMP, y BOOLEAN);
        INSERT INTO cb VALUES (1, '2026-01-05T00:00:00', true);
        CREATE FEATURE VIEW spend ENTITY user EVENT TIME ts AS SELECT user_id, ts, amount FROM tx;
        CREATE LABEL fraud ENTITY user EVENT TIME ts FROM (SELECT user_id, ts, y FROM cb);
        CREATE TRAINING SET train LABEL fraud FEATURES spend;
        INSERT INTO cb VALUES (1, '2026-01-06T00:00:00', false);";
    succeeds(flywheel(&wh).args(["sql", "-e", setup]));

    // The label is stale (new chargebacks): it is refreshed before the training set; the feature
    // view is not.
    let stdout = succeeds(flywheel(&wh).args(["refresh", "train"]));
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with("refreshed label fraud: version 1"),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with("refreshed training set train: version 1"),
        "{stdout}"
    );
    assert!(lines[2].starts_with("2 objects refreshed"), "{stdout}");
    let stdout = succeeds(flywheel(&wh).args(["sql", "-e", "SELECT count(*) AS n FROM train"]));
    assert!(stdout.contains("| 2 |"));

    // Nothing is stale now.
    let out = flywheel(&wh)
        .args(["refresh", "--stale"])
        .output()
        .expect("runs");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("0 objects refreshed"));

    // A failing object is named, and the exit code says so.
    succeeds(flywheel(&wh).args([
        "sql",
        "-e",
        "CREATE OR REPLACE TABLE tx AS SELECT user_id FROM tx",
    ]));
    let out = flywheel(&wh)
        .args(["refresh", "--all"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("stopped at feature view `spend`"),
        "{stderr}"
    );
    let out = flywheel(&wh)
        .args(["refresh", "tx"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("`tx` is a table"));
}
