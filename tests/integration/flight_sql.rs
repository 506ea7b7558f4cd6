//! Flight SQL against a real server: queries, DDL/DML, prepared statements, status codes.

use arrow_flight::FlightDescriptor;
use arrow_flight::sql::{CommandStatementQuery, ProstMessageExt, SqlInfo};
use futures::TryStreamExt;
use prost::Message;
use tonic::Code;

use crate::common::{TestServer, query, sorted_rows};

#[tokio::test]
async fn ddl_dml_and_queries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path()).await;
    let mut client = server.sql_client().await;

    let n = client
        .execute_update("CREATE TABLE users (id BIGINT, name VARCHAR)".into(), None)
        .await
        .expect("create");
    assert_eq!(n, 0);
    let n = client
        .execute_update(
            "INSERT INTO users VALUES (1, 'ada'), (2, 'bob'), (3, 'cy')".into(),
            None,
        )
        .await
        .expect("insert");
    assert_eq!(n, 3);

    let batches = query(
        &mut client,
        "SELECT id, upper(name) AS n FROM users WHERE id >= 2",
    )
    .await;
    assert_eq!(sorted_rows(&batches), vec!["2,BOB", "3,CY"]);

    // DDL sent as a query (what DB-API clients do) runs once, not once per call.
    let batches = query(&mut client, "INSERT INTO users VALUES (4, 'di')").await;
    assert_eq!(sorted_rows(&batches), vec!["1"]);
    let batches = query(&mut client, "SELECT count(*) FROM users").await;
    assert_eq!(sorted_rows(&batches), vec!["4"]);

    // Time travel through the server.
    let batches = query(&mut client, "SELECT count(*) FROM users VERSION AS OF 1").await;
    assert_eq!(sorted_rows(&batches), vec!["3"]);

    server.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn prepared_statements_without_parameters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path()).await;
    let mut client = server.sql_client().await;

    // Preparing DDL does not run it; executing does, once.
    let mut create = client
        .prepare(
            "CREATE TABLE p AS SELECT 1 AS x UNION ALL SELECT 2".into(),
            None,
        )
        .await
        .expect("prepare create");
    let batches = query(&mut client, "SHOW TABLES").await;
    assert!(
        !sorted_rows(&batches).iter().any(|r| r.contains(",p,")),
        "prepare ran the DDL"
    );
    create.execute_update().await.expect("execute create");

    let mut select = client
        .prepare("SELECT sum(x) AS s FROM p".into(), None)
        .await
        .expect("prepare query");
    let schema = select.dataset_schema().expect("schema");
    assert_eq!(schema.field(0).name(), "s");
    let info = select.execute().await.expect("execute");
    let ticket = info.endpoint[0].ticket.clone().expect("ticket");
    let batches: Vec<_> = client
        .do_get(ticket)
        .await
        .expect("do_get")
        .try_collect()
        .await
        .expect("stream");
    assert_eq!(sorted_rows(&batches), vec!["3"]);
    select.close().await.expect("close");
}

async fn status_of(server: &TestServer, sql: &str) -> tonic::Status {
    let mut flight = server.flight_client().await;
    let cmd = CommandStatementQuery {
        query: sql.into(),
        transaction_id: None,
    };
    let descriptor = FlightDescriptor::new_cmd(cmd.as_any().encode_to_vec());
    flight.get_flight_info(descriptor).await.expect_err(sql)
}

#[tokio::test]
async fn errors_map_to_status_codes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path()).await;
    let mut client = server.sql_client().await;
    client
        .execute_update("CREATE TABLE t (a BIGINT)".into(), None)
        .await
        .expect("create");

    let s = status_of(&server, "SELEC 1").await;
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(
        s.message().contains("Line: 1, Column: 1"),
        "{}",
        s.message()
    );

    let s = status_of(&server, "SELECT * FROM missing").await;
    assert_eq!(s.code(), Code::NotFound, "{s:?}");
    assert!(s.message().contains("missing"), "{}", s.message());

    let s = status_of(&server, "SELECT * FROM t VERSION AS OF 5").await;
    assert_eq!(s.code(), Code::NotFound, "{s:?}");

    let s = status_of(&server, "CREATE TABLE t (b INT)").await;
    assert_eq!(s.code(), Code::AlreadyExists, "{s:?}");

    let s = status_of(&server, "CREATE VIEW v AS SELECT 1").await;
    assert_eq!(s.code(), Code::Unimplemented, "{s:?}");

    // Flywheel's objects: missing and existing ones.
    for sql in [
        "DESCRIBE FEATURE VIEW nope",
        "REFRESH TRAINING SET nope",
        "DROP ENTITY nope",
    ] {
        let s = status_of(&server, sql).await;
        assert_eq!(s.code(), Code::NotFound, "{sql}: {s:?}");
        assert!(s.message().contains("`nope` not found"), "{}", s.message());
    }
    client
        .execute_update("CREATE ENTITY user (user_id BIGINT)".into(), None)
        .await
        .expect("entity");
    let s = status_of(&server, "CREATE ENTITY user (user_id BIGINT)").await;
    assert_eq!(s.code(), Code::AlreadyExists, "{s:?}");

    let s = status_of(&server, "INSERT INTO t VALUES ('x')").await;
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(s.message().contains("column `a`"), "{}", s.message());

    // The server is still healthy after errors.
    let batches = query(&mut client, "SELECT count(*) FROM t").await;
    assert_eq!(sorted_rows(&batches), vec!["0"]);
}

#[tokio::test]
async fn sql_info_answers_server_name_and_transactions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path()).await;
    let mut client = server.sql_client().await;
    let info = client
        .get_sql_info(vec![
            SqlInfo::FlightSqlServerName,
            SqlInfo::FlightSqlServerTransaction,
        ])
        .await
        .expect("sql info");
    let ticket = info.endpoint[0].ticket.clone().expect("ticket");
    let batches: Vec<_> = client
        .do_get(ticket)
        .await
        .expect("do_get")
        .try_collect()
        .await
        .expect("stream");
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, 2);
    let text = arrow::util::pretty::pretty_format_batches(&batches)
        .expect("format")
        .to_string();
    assert!(text.contains("Flywheel"), "{text}");
}
