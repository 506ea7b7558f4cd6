//! Online lookup latency and throughput over loopback, with a real server and a Rust Flight client.
//!
//! `cargo bench --bench online_lookup` (release build). Builds 1M entities with 10 features in three
//! online feature views in a temp warehouse, starts `flywheel serve` in-process on 127.0.0.1 port 0,
//! then measures:
//! - latency (p50/p99/p999 of sequential lookups, one client) for 1 key x 1 view x 10 features and
//!   100 keys x 3 views, and of a call that does no work (`ListActions`), the transport's floor;
//! - throughput of 1-key lookups with 8 concurrent clients, each on its own connection and all on
//!   one shared connection;
//! - the same lookups and no-op calls from a bare HTTP/2 client (hyper's connection, no tonic
//!   channel), to tell the client's share of the transport's cost from the server's.
//!
//! Keys are drawn at random from the 1M. Prints a Markdown table. Not a test: it asserts only that
//! every answer has the requested rows.

use std::time::{Duration, Instant};

use arrow_flight::Ticket;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::Any;
use futures::TryStreamExt;
use prost::Message;
use tonic::transport::Channel;

/// The allocator of the `flywheel` binary, so the in-process server runs as it does in production.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ENTITIES: u64 = 1_000_000;
const LATENCY_SAMPLES: usize = 20_000;
const THROUGHPUT_CLIENTS: usize = 8;
const THROUGHPUT_SECS: u64 = 5;

fn ticket(features: &[&str], keys: &[u64]) -> Ticket {
    let request = serde_json::json!({
        "features": features,
        "keys": keys.iter().map(|k| vec![*k]).collect::<Vec<_>>(),
    });
    let any = Any {
        type_url: flywheel::online::LOOKUP_TICKET_TYPE.to_string(),
        value: request.to_string().into_bytes().into(),
    };
    Ticket::new(any.encode_to_vec())
}

async fn lookup(client: &mut FlightServiceClient<Channel>, t: Ticket, rows: usize) {
    let data = client.do_get(t).await.expect("do_get").into_inner();
    let batches: Vec<_> =
        FlightRecordBatchStream::new_from_flight_data(data.map_err(FlightError::from))
            .try_collect()
            .await
            .expect("answer");
    let n: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(n, rows);
}

/// A small xorshift generator: reproducible random keys without another dependency.
struct Keys(u64);

impl Keys {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % ENTITIES
    }
    fn take(&mut self, n: usize) -> Vec<u64> {
        (0..n).map(|_| self.next()).collect()
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

async fn channel(addr: std::net::SocketAddr) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .tcp_nodelay(true)
        .connect()
        .await
        .expect("connects")
}

/// A call that does no work: `ListActions`.
async fn nothing(client: &mut FlightServiceClient<Channel>) {
    let actions = client
        .list_actions(arrow_flight::Empty {})
        .await
        .expect("list_actions")
        .into_inner();
    let _: Vec<_> = actions.try_collect().await.expect("actions");
}

/// Latencies of sequential calls from one client, after 500 warm-up calls.
async fn latency(
    addr: std::net::SocketAddr,
    call: Call,
    features: &[&str],
    keys_per: usize,
) -> Vec<Duration> {
    const WARM_UP: usize = 500;
    let mut client = FlightServiceClient::new(channel(addr).await);
    let mut keys = Keys(0x9E37_79B9_7F4A_7C15);
    let mut samples = Vec::with_capacity(LATENCY_SAMPLES);
    for i in 0..WARM_UP + LATENCY_SAMPLES {
        let t = ticket(features, &keys.take(keys_per));
        let start = Instant::now();
        match call {
            Call::Lookup => lookup(&mut client, t, keys_per).await,
            Call::Nothing => nothing(&mut client).await,
        }
        if i >= WARM_UP {
            samples.push(start.elapsed());
        }
    }
    samples.sort();
    samples
}

/// What each measured call does.
#[derive(Clone, Copy, PartialEq)]
enum Call {
    /// A 1-key lookup.
    Lookup,
    /// `ListActions`, a server-streaming RPC that does no work: the floor the transport (tonic,
    /// HTTP/2, loopback TCP, both ends on the same cores) sets for any Flight call on this machine.
    Nothing,
}

/// How the `THROUGHPUT_CLIENTS` concurrent callers reach the server.
#[derive(Clone, Copy, PartialEq)]
enum Clients {
    /// tonic clients, a connection each.
    OwnConnections,
    /// tonic clients multiplexed over one connection (gRPC's usual set-up for a service: one
    /// channel, many calls).
    SharedConnection,
    /// bare HTTP/2 clients (see [`bare`]), a connection each.
    Bare,
    /// tonic clients, a connection each, each with this many calls in flight (as a service
    /// answering several of its own requests at once).
    InFlight(usize),
}

/// One caller of a throughput run.
enum Caller {
    Tonic(FlightServiceClient<Channel>),
    Bare(bare::Connection),
}

impl Caller {
    /// Makes `call` once (a lookup of the next of `keys`).
    async fn call(&mut self, call: Call, keys: &mut Keys) {
        match (self, call) {
            (Caller::Tonic(c), Call::Lookup) => lookup(c, ticket(&["v0"], &keys.take(1)), 1).await,
            (Caller::Tonic(c), Call::Nothing) => nothing(c).await,
            (Caller::Bare(c), Call::Lookup) => {
                bare::lookup(c, &ticket(&["v0"], &keys.take(1)), 1).await
            }
            (Caller::Bare(c), Call::Nothing) => bare::nothing(c).await,
        }
    }
}

/// Calls per second from `THROUGHPUT_CLIENTS` concurrent callers connected as `clients` say.
async fn throughput(addr: std::net::SocketAddr, clients: Clients, call: Call) -> f64 {
    let one = channel(addr).await;
    let deadline = Instant::now() + Duration::from_secs(THROUGHPUT_SECS);
    let mut tasks = Vec::new();
    for c in 0..THROUGHPUT_CLIENTS {
        let (own, in_flight) = match clients {
            Clients::InFlight(n) => (Some(channel(addr).await), n),
            _ => (None, 1),
        };
        for i in 0..in_flight {
            let (one, own) = (one.clone(), own.clone());
            tasks.push(tokio::spawn(async move {
                let mut caller = match (clients, own) {
                    (Clients::OwnConnections, _) => {
                        Caller::Tonic(FlightServiceClient::new(channel(addr).await))
                    }
                    (Clients::SharedConnection, _) => Caller::Tonic(FlightServiceClient::new(one)),
                    (Clients::InFlight(_), Some(own)) => {
                        Caller::Tonic(FlightServiceClient::new(own))
                    }
                    (Clients::InFlight(_), None) => unreachable!("made above"),
                    (Clients::Bare, _) => Caller::Bare(bare::connect(addr).await),
                };
                let mut keys = Keys(0x1234_5678 + (c * 64 + i) as u64);
                let mut n = 0u64;
                while Instant::now() < deadline {
                    caller.call(call, &mut keys).await;
                    n += 1;
                }
                n
            }));
        }
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("client task");
    }
    total as f64 / THROUGHPUT_SECS as f64
}

/// Calls over a bare HTTP/2 connection: hyper's client connection, the request framed by hand, the
/// answer collected and decoded with arrow-flight's helpers. No tonic channel (its buffer task,
/// codecs and layers), so the difference to the tonic client is that client stack's cost.
mod bare {
    use arrow_flight::FlightData;
    use bytes::{Buf, BufMut, Bytes, BytesMut};
    use http_body_util::{BodyExt, Full};
    use hyper::client::conn::http2::SendRequest;
    use prost::Message;

    pub type Connection = SendRequest<Full<Bytes>>;

    pub async fn connect(addr: std::net::SocketAddr) -> Connection {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connects");
        tcp.set_nodelay(true).expect("nodelay");
        let (send, connection) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tcp),
        )
        .await
        .expect("HTTP/2 handshake");
        tokio::spawn(connection);
        send
    }

    /// One unary-request, streaming-answer call: the answer's messages, after checking its status.
    pub async fn call(send: &mut Connection, path: &str, message: &[u8]) -> Vec<Bytes> {
        let mut frame = BytesMut::with_capacity(5 + message.len());
        frame.put_u8(0);
        frame.put_u32(message.len() as u32);
        frame.put_slice(message);
        let request = http::Request::post(format!("http://flywheel{path}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Full::new(frame.freeze()))
            .expect("request");
        send.ready().await.expect("connection ready");
        let answer = send.send_request(request).await.expect("answer");
        let collected = answer.into_body().collect().await.expect("body");
        let status = collected
            .trailers()
            .and_then(|t| t.get("grpc-status"))
            .map(|v| v.as_bytes().to_vec());
        assert_eq!(status.as_deref(), Some(&b"0"[..]), "call failed");
        let mut body = collected.to_bytes();
        let mut messages = Vec::new();
        while body.len() >= 5 {
            body.advance(1);
            let len = body.get_u32() as usize;
            messages.push(body.split_to(len));
        }
        messages
    }

    pub async fn lookup(send: &mut Connection, ticket: &arrow_flight::Ticket, rows: usize) {
        let messages = call(
            send,
            "/arrow.flight.protocol.FlightService/DoGet",
            &ticket.encode_to_vec(),
        )
        .await;
        let data: Vec<FlightData> = messages
            .into_iter()
            .map(|m| FlightData::decode(m).expect("FlightData"))
            .collect();
        let batches = arrow_flight::utils::flight_data_to_batches(&data).expect("batches");
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), rows);
    }

    pub async fn nothing(send: &mut Connection) {
        call(
            send,
            "/arrow.flight.protocol.FlightService/ListActions",
            &[],
        )
        .await;
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = flywheel::Engine::open(dir.path().to_str().expect("utf-8"))
            .await
            .expect("engine");
        let features: Vec<String> = (0..10)
            .map(|i| format!("CAST((value * {}) % 1000 AS DOUBLE) AS f{i}", i + 3))
            .collect();
        let setup = [
            "CREATE ENTITY user (user_id BIGINT)".to_string(),
            format!(
                "CREATE TABLE src AS SELECT value AS user_id, CAST(value % 86400 AS TIMESTAMP) AS ts, {} \
                 FROM range(0, {ENTITIES})",
                features.join(", ")
            ),
        ];
        let load = Instant::now();
        for s in &setup {
            engine.sql(s).await.expect("setup").collect().await.expect("setup");
        }
        for v in ["v0", "v1", "v2"] {
            let cols = (0..10).map(|i| format!("f{i} AS {v}_f{i}")).collect::<Vec<_>>().join(", ");
            let cols = if v == "v0" { (0..10).map(|i| format!("f{i}")).collect::<Vec<_>>().join(", ") } else { cols };
            engine
                .sql(&format!(
                    "CREATE FEATURE VIEW {v} ENTITY user EVENT TIME ts WITH (online = true) \
                     AS SELECT user_id, ts, {cols} FROM src"
                ))
                .await
                .expect("view")
                .collect()
                .await
                .expect("view");
        }
        eprintln!("setup: 1M entities, 3 online views in {:.1} s", load.elapsed().as_secs_f64());

        let listener = flywheel::server::bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("binds");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(flywheel::server::serve(engine, listener, async {
            let _ = stopped.await;
        }));

        if let Ok(only) = std::env::var("PROFILE_ONLY") {
            let call = if only == "lookup" { Call::Lookup } else { Call::Nothing };
            for _ in 0..4 {
                eprintln!("{only}: {:.0}/s", throughput(addr, Clients::InFlight(16), call).await);
            }
            std::process::exit(0);
        }
        let one = latency(addr, Call::Lookup, &["v0"], 1).await;
        let hundred = latency(addr, Call::Lookup, &["v0", "v1", "v2"], 100).await;
        let empty = latency(addr, Call::Nothing, &[], 0).await;
        let rate = throughput(addr, Clients::OwnConnections, Call::Lookup).await;
        let shared_rate = throughput(addr, Clients::SharedConnection, Call::Lookup).await;
        let floor = throughput(addr, Clients::OwnConnections, Call::Nothing).await;
        let bare_rate = throughput(addr, Clients::Bare, Call::Lookup).await;
        let in_flight_rate = throughput(addr, Clients::InFlight(4), Call::Lookup).await;
        let deep_rate = throughput(addr, Clients::InFlight(16), Call::Lookup).await;
        let deep_floor = throughput(addr, Clients::InFlight(16), Call::Nothing).await;
        let bare_floor = throughput(addr, Clients::Bare, Call::Nothing).await;

        println!("| lookup | p50 ms | p99 ms | p999 ms |");
        println!("|---|---|---|---|");
        for (name, s) in [
            ("1 key x 1 view x 10 features", &one),
            ("100 keys x 3 views x 10 features", &hundred),
            ("ListActions (no work): the transport's floor", &empty),
        ] {
            println!(
                "| {name} | {:.3} | {:.3} | {:.3} |",
                percentile(s, 0.5),
                percentile(s, 0.99),
                percentile(s, 0.999)
            );
        }
        println!(
            "\nthroughput, 1-key lookups, {THROUGHPUT_CLIENTS} concurrent clients: {rate:.0} lookups/s \
             (a connection each), {shared_rate:.0} lookups/s (one shared connection)"
        );
        println!(
            "transport floor, ListActions (no work), {THROUGHPUT_CLIENTS} concurrent clients: \
             {floor:.0} calls/s"
        );
        println!(
            "bare HTTP/2 clients (no tonic channel), {THROUGHPUT_CLIENTS} concurrent, a connection each: \
             {bare_rate:.0} lookups/s, {bare_floor:.0} ListActions calls/s"
        );
        println!(
            "{THROUGHPUT_CLIENTS} concurrent clients, a connection each, 4 lookups in flight each: \
             {in_flight_rate:.0} lookups/s"
        );
        println!(
            "{THROUGHPUT_CLIENTS} concurrent clients, a connection each, 16 calls in flight each: \
             {deep_rate:.0} lookups/s, {deep_floor:.0} ListActions calls/s"
        );
        let _ = stop.send(());
        let _ = server.await;
    });
}
