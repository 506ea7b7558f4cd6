//! A Rust online-lookup client: the features of some users, now, in one Flight `DoGet`.
//!
//! `cargo run --example online_lookup -- grpc://127.0.0.1:50051 user_spend 42 43` looks keys up on a
//! running server. Without arguments it is self-contained: it starts a server on a temp warehouse,
//! creates an online feature view, looks three users up, and checks the answer (the test script runs
//! it this way).

use arrow::array::RecordBatch;
use arrow_flight::Ticket;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::Any;
use futures::TryStreamExt;
use prost::Message;

/// One lookup: `features` (views or `view.column`) of `keys` (one value per key column).
async fn lookup(
    uri: &str,
    features: &[&str],
    keys: &[serde_json::Value],
) -> Result<Vec<RecordBatch>, Box<dyn std::error::Error>> {
    let endpoint = uri.replacen("grpc://", "http://", 1);
    let channel = tonic::transport::Endpoint::from_shared(endpoint)?
        .connect()
        .await?;
    let mut client = FlightServiceClient::new(channel);
    let request = serde_json::json!({ "features": features, "keys": keys });
    let ticket = Any {
        type_url: flywheel::online::LOOKUP_TICKET_TYPE.to_string(),
        value: request.to_string().into_bytes().into(),
    };
    let data = client
        .do_get(Ticket::new(ticket.encode_to_vec()))
        .await?
        .into_inner();
    Ok(
        FlightRecordBatchStream::new_from_flight_data(data.map_err(FlightError::from))
            .try_collect()
            .await?,
    )
}

/// Starts a server with a small online feature view; returns its URI and a stop handle.
async fn demo_server(
    dir: &std::path::Path,
) -> Result<(String, tokio::sync::oneshot::Sender<()>), Box<dyn std::error::Error>> {
    let engine = flywheel::Engine::open(dir.to_str().ok_or("temp dir is not UTF-8")?).await?;
    for sql in [
        "CREATE ENTITY user (user_id BIGINT)",
        "CREATE TABLE spend (user_id BIGINT, ts TIMESTAMP, amount DOUBLE)",
        "INSERT INTO spend VALUES (42, '2026-01-01T00:00:00', 1.0), (42, '2026-01-02T00:00:00', 12.5), \
         (43, '2026-01-01T00:00:00', 3.0)",
        "CREATE FEATURE VIEW user_spend ENTITY user EVENT TIME ts WITH (online = true) \
         AS SELECT user_id, ts, amount FROM spend",
    ] {
        engine.sql(sql).await?.collect().await?;
    }
    let listener = flywheel::server::bind("127.0.0.1:0".parse()?).await?;
    let uri = format!("grpc://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(flywheel::server::serve(engine, listener, async {
        let _ = stopped.await;
    }));
    Ok((uri, stop))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [uri, view, keys @ ..] = args.as_slice() {
        let keys: Vec<serde_json::Value> = keys
            .iter()
            .map(|k| match k.parse::<i64>() {
                Ok(n) => serde_json::json!([n]),
                Err(_) => serde_json::json!([k]),
            })
            .collect();
        let batches = lookup(uri, &[view.as_str()], &keys).await?;
        println!("{}", arrow::util::pretty::pretty_format_batches(&batches)?);
        return Ok(());
    }

    let dir = tempfile::tempdir()?;
    let (uri, stop) = demo_server(dir.path()).await?;
    let keys = [
        serde_json::json!([43]),
        serde_json::json!([42]),
        serde_json::json!([44]),
    ];
    let batches = lookup(&uri, &["user_spend"], &keys).await?;
    let table = arrow::util::pretty::pretty_format_batches(&batches)?.to_string();
    println!("{table}");
    let expected = [
        "| user_id | user_spend__found | amount |",
        "| 43      | true              | 3.0    |",
        "| 42      | true              | 12.5   |",
        "| 44      | false             |        |",
    ];
    for line in expected {
        if !table.contains(line) {
            return Err(format!("the lookup answer lacks `{line}`").into());
        }
    }
    let _ = stop.send(());
    println!("online lookup example: OK");
    Ok(())
}
