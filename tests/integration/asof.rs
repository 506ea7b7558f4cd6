//! ASOF JOIN through the whole stack: the plan names our operator, and a server answers it.

use crate::common::{TestServer, query, sorted_rows};

#[tokio::test]
async fn explain_names_the_operator_and_the_server_runs_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path()).await;
    let mut client = server.sql_client().await;
    for sql in [
        "CREATE TABLE spine (k BIGINT, t BIGINT)",
        "INSERT INTO spine VALUES (1, 10), (1, 30), (2, 5)",
        "CREATE TABLE feats (k BIGINT, t BIGINT, v VARCHAR)",
        "INSERT INTO feats VALUES (1, 10, 'a'), (1, 20, 'b'), (2, 6, 'late')",
    ] {
        client.execute_update(sql.into(), None).await.expect(sql);
    }
    let sql = "SELECT s.k, s.t, f.v FROM spine s ASOF JOIN feats f MATCH_CONDITION (s.t >= f.t) ON s.k = f.k";
    let plan = sorted_rows(&query(&mut client, &format!("EXPLAIN {sql}")).await).join("\n");
    assert!(
        plan.contains("AsOfJoin: match=(s.t >= f.t), on=[s.k = f.k]"),
        "{plan}"
    );
    assert!(plan.contains("AsOfJoinExec: match="), "{plan}");
    assert_eq!(
        sorted_rows(&query(&mut client, sql).await),
        vec!["1,10,a", "1,30,b", "2,5"]
    );
}

#[tokio::test]
async fn a_memory_limit_gives_the_same_answer() {
    // About 10 MB of right side to hold against a 4 MiB limit: the join matches it in passes.
    let dir = tempfile::tempdir().expect("tempdir");
    let location = dir.path().to_str().expect("utf-8");
    let unlimited = flywheel::Engine::open(location).await.expect("engine");
    for sql in [
        "CREATE TABLE spine AS SELECT value % 1000 AS k, (value * 7919) % 100000 AS t \
         FROM range(0, 20000)",
        "CREATE TABLE feats AS SELECT value % 1000 AS k, (value * 104729) % 100000 AS t, \
         CAST(value AS DOUBLE) AS v FROM range(0, 300000)",
    ] {
        run(&unlimited, sql).await;
    }
    let sql = "SELECT count(*) AS n, count(f.v) AS matched, sum(f.v) AS s, sum(f.t) AS ts \
               FROM spine s ASOF JOIN feats f MATCH_CONDITION (s.t >= f.t) ON s.k = f.k";
    let want = run(&unlimited, sql).await;
    let limited = flywheel::Engine::open_with(
        location,
        &flywheel::EngineOptions {
            memory_limit: Some(4 << 20),
            ..Default::default()
        },
    )
    .await
    .expect("engine");
    assert_eq!(run(&limited, sql).await, want);
    assert!(want.contains("| 20000 |"), "{want}");
}

/// Runs one statement and pretty-prints its result.
async fn run(engine: &flywheel::Engine, sql: &str) -> String {
    let batches = engine
        .sql(sql)
        .await
        .expect(sql)
        .collect()
        .await
        .expect(sql);
    arrow::util::pretty::pretty_format_batches(&batches)
        .expect("format")
        .to_string()
}
