//! Tables persist across restarts, and servers on one warehouse see each other's changes.

use crate::common::{TestServer, query, sorted_rows};

#[tokio::test]
async fn tables_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path()).await;
    let mut client = server.sql_client().await;
    for sql in [
        "CREATE TABLE a (x BIGINT)",
        "INSERT INTO a VALUES (1), (2)",
        "CREATE TABLE b AS SELECT 'kept' AS s",
        "CREATE TABLE gone (x BIGINT)",
        "DROP TABLE gone",
        "CREATE ENTITY user (user_id BIGINT)",
    ] {
        client.execute_update(sql.into(), None).await.expect(sql);
    }
    drop(client);
    server.stop().await.expect("clean shutdown");

    let server = TestServer::start(dir.path()).await;
    let mut client = server.sql_client().await;
    assert_eq!(
        sorted_rows(&query(&mut client, "SELECT sum(x) FROM a").await),
        vec!["3"]
    );
    assert_eq!(
        sorted_rows(&query(&mut client, "SELECT s FROM b").await),
        vec!["kept"]
    );
    let tables = query(
        &mut client,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .await;
    assert_eq!(sorted_rows(&tables), vec!["a", "b"]);
    // Registry objects persist, visible through SHOW and the system tables.
    assert_eq!(
        sorted_rows(&query(&mut client, "SELECT name, keys FROM flywheel.entities").await),
        vec!["user,user_id BIGINT"]
    );
    assert_eq!(
        query(&mut client, "SHOW ENTITIES")
            .await
            .iter()
            .map(|b| b.num_rows())
            .sum::<usize>(),
        1
    );
    // History persists too.
    assert_eq!(
        sorted_rows(&query(&mut client, "SELECT count(*) FROM a VERSION AS OF 0").await),
        vec!["0"]
    );
    server.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn two_servers_share_one_warehouse() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = TestServer::start(dir.path()).await;
    let second = TestServer::start(dir.path()).await;
    let mut c1 = first.sql_client().await;
    let mut c2 = second.sql_client().await;

    c1.execute_update("CREATE TABLE shared (v BIGINT)".into(), None)
        .await
        .expect("create");
    c2.execute_update("INSERT INTO shared VALUES (7)".into(), None)
        .await
        .expect("insert via second");
    assert_eq!(
        sorted_rows(&query(&mut c1, "SELECT v FROM shared").await),
        vec!["7"]
    );
    c2.execute_update("DROP TABLE shared".into(), None)
        .await
        .expect("drop via second");
    let info = c1.execute("SELECT v FROM shared".into(), None).await;
    assert!(info.is_err(), "the first server still sees a dropped table");
}
