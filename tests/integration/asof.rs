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
