//! Online lookup latency and throughput over loopback, with a real server and a Rust Flight client.
//!
//! `cargo bench --bench online_lookup` (release build). Builds 1M entities with 10 features in three
//! online feature views in a temp warehouse, starts `flywheel serve` in-process on 127.0.0.1 port 0
//! on a runtime of its own (as in its own process), then measures:
//! - latency (p50/p99/p999 of sequential lookups, one client) for 1 key x 1 view x 10 features and
//!   100 keys x 3 views, and of a call that does no work (`ListActions`), the transport's floor;
//! - throughput of 1-key lookups and of no-op calls with 8 concurrent clients: each on its own
//!   connection, all on one shared connection, bare HTTP/2 clients (hyper's connection, no tonic
//!   channel: the client stack's share), and with 4 or 16 calls in flight per client (a service
//!   answering several of its own requests at once);
//! - for each throughput run, the CPU time of the server's threads per call (`/proc`), and the
//!   rate that CPU alone would allow on 2 cores: what the server could answer with its clients on
//!   other machines, since here they share the same 2 cores;
//! - throughput of lookups of 1, 10 and 100 keys per request (8 clients, a connection each), in
//!   lookups and keys per second: a service that batches the entities of one of its requests.
//!
//! `FLYWHEEL_BENCH_ONLY=lookup` (or `nothing`; `lookup:1` for one call at a time per client, `:N`
//! for N in flight, 16 by default; `keys:N` for lookups of N keys, one at a time per client) runs
//! only that throughput, four times: for profiling one phase.
//! `FLYWHEEL_BENCH_ONLY=latency:lookup` (or `latency:nothing`) runs the one-key latency four times
//! and also prints the server's and the client's CPU per call. `FLYWHEEL_BENCH_SERVER_WORKERS=N`
//! gives the server's runtime N worker threads instead of one per core.
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

/// Latencies of sequential calls from one client, after 500 warm-up calls. The client runs on a
/// single-threaded runtime of its own, as a latency-sensitive caller would: on a multi-threaded
/// one, every answer also wakes a second worker thread, which on these 2 shared cores costs the
/// client more CPU per call than the whole call costs the server.
async fn latency(
    addr: std::net::SocketAddr,
    call: Call,
    features: &[&str],
    keys_per: usize,
) -> Vec<Duration> {
    let features: Vec<String> = features.iter().map(|f| f.to_string()).collect();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("client runtime");
        let features: Vec<&str> = features.iter().map(String::as_str).collect();
        let _ = tx.send(runtime.block_on(sequential_calls(addr, call, &features, keys_per)));
    });
    rx.await.expect("the latency client finished")
}

async fn sequential_calls(
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
            Call::Lookup | Call::Keys(_) => lookup(&mut client, t, keys_per).await,
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
    /// A lookup of this many keys in one request (1 view x 10 features), as a service batching
    /// the entities of one of its requests (a feed's candidates, a basket's items) would.
    Keys(usize),
    /// `ListActions`, a server-streaming RPC that does no work: the floor the transport (tonic,
    /// HTTP/2, loopback TCP, both ends on the same cores) sets for any Flight call on this machine.
    Nothing,
}

impl Call {
    /// Keys per request.
    fn keys(self) -> usize {
        match self {
            Call::Lookup => 1,
            Call::Keys(n) => n,
            Call::Nothing => 0,
        }
    }
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
            (Caller::Tonic(c), Call::Lookup | Call::Keys(_)) => {
                let n = call.keys();
                lookup(c, ticket(&["v0"], &keys.take(n)), n).await
            }
            (Caller::Tonic(c), Call::Nothing) => nothing(c).await,
            (Caller::Bare(c), Call::Lookup | Call::Keys(_)) => {
                let n = call.keys();
                bare::lookup(c, &ticket(&["v0"], &keys.take(n)), n).await
            }
            (Caller::Bare(c), Call::Nothing) => bare::nothing(c).await,
        }
    }
}

/// What a throughput run measured.
struct Rate {
    calls_per_s: f64,
    /// CPU time of the server's threads per call.
    server_us_per_call: f64,
}

impl Rate {
    /// Calls per second the server's CPU alone would allow on `cores` cores (clients elsewhere).
    fn capacity(&self, cores: f64) -> f64 {
        cores * 1e6 / self.server_us_per_call
    }
}

/// The server runtime's threads are named this (15 bytes: Linux keeps at most that of a name).
const SERVER_THREADS: &str = "flywheel-server";

/// CPU seconds used so far by this process's threads named [`SERVER_THREADS`] (Linux `/proc`).
fn server_cpu_seconds() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return f64::NAN;
    };
    let mut ticks = 0u64;
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ...`: the name may hold spaces, so split at its closing parenthesis.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if &stat[open + 1..close] != SERVER_THREADS {
            continue;
        }
        ticks += cpu_ticks(&stat[close + 1..]);
    }
    ticks as f64 / TICKS_PER_S
}

/// USER_HZ, 100 on every Linux this runs on.
const TICKS_PER_S: f64 = 100.0;

/// User plus system CPU ticks from a `/proc/.../stat` line's fields after the name (`) state
/// ...`): the state is field 3, utime and stime are fields 14 and 15.
fn cpu_ticks(after_name: &str) -> u64 {
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |n: usize| {
        fields
            .get(n - 3)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(14) + field(15)
}

/// CPU seconds used so far by this whole process (server and clients).
fn process_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    let Some(close) = stat.rfind(')') else {
        return f64::NAN;
    };
    cpu_ticks(&stat[close + 1..]) as f64 / TICKS_PER_S
}

/// Calls per second from `THROUGHPUT_CLIENTS` concurrent callers connected as `clients` say, and
/// the server's CPU per call.
async fn throughput(addr: std::net::SocketAddr, clients: Clients, call: Call) -> Rate {
    let cpu_before = server_cpu_seconds();
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
    let server_cpu = server_cpu_seconds() - cpu_before;
    Rate {
        calls_per_s: total as f64 / THROUGHPUT_SECS as f64,
        server_us_per_call: server_cpu * 1e6 / total.max(1) as f64,
    }
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
    // The clients' runtime; the server gets its own (below), as in its own process, so that its
    // threads' CPU time can be told from the clients'.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // `FLYWHEEL_BENCH_SERVER_WORKERS=N`: the server runtime's worker threads (default: one per
    // core, as `flywheel serve` runs).
    let mut server_builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = std::env::var("FLYWHEEL_BENCH_SERVER_WORKERS")
        .ok()
        .and_then(|n| n.parse().ok())
    {
        server_builder.worker_threads(n);
    }
    let server_runtime = server_builder
        .enable_all()
        .thread_name(SERVER_THREADS)
        .build()
        .expect("server runtime");
    let engine = server_runtime.block_on(async {
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
        (engine, dir)
    });
    let (engine, _dir) = engine;
    let listener = server_runtime
        .block_on(flywheel::server::bind("127.0.0.1:0".parse().expect("addr")))
        .expect("binds");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = server_runtime.spawn(flywheel::server::serve(engine, listener, async {
        let _ = stopped.await;
    }));

    runtime.block_on(async {
        // For profiling one phase: `FLYWHEEL_BENCH_ONLY=lookup` (or `nothing`), optionally
        // `:N` calls in flight per client (default 16), runs only that throughput, four times.
        if let Ok(only) = std::env::var("FLYWHEEL_BENCH_ONLY") {
            if let Some(call) = only.strip_prefix("latency:") {
                let (call, features) = match call {
                    "lookup" => (Call::Lookup, vec!["v0"]),
                    _ => (Call::Nothing, vec![]),
                };
                for _ in 0..4 {
                    let (server0, all0) = (server_cpu_seconds(), process_cpu_seconds());
                    let s = latency(addr, call, &features, 1).await;
                    let calls = s.len() as f64;
                    let server = (server_cpu_seconds() - server0) * 1e6 / calls;
                    let client = (process_cpu_seconds() - all0) * 1e6 / calls - server;
                    eprintln!(
                        "{only}: p50 {:.3} ms, p99 {:.3} ms; CPU per call: server {server:.1} us, \
                         client {client:.1} us",
                        percentile(&s, 0.5),
                        percentile(&s, 0.99)
                    );
                }
                return;
            }
            let (what, depth) = only.split_once(':').unwrap_or((only.as_str(), "16"));
            // `keys:N`: lookups of N keys each, a connection per client, one call at a time.
            let (call, clients) = match (what, depth.parse().unwrap_or(16)) {
                ("keys", n) => (Call::Keys(n), Clients::OwnConnections),
                ("lookup", 1) => (Call::Lookup, Clients::OwnConnections),
                ("lookup", n) => (Call::Lookup, Clients::InFlight(n)),
                (_, 1) => (Call::Nothing, Clients::OwnConnections),
                (_, n) => (Call::Nothing, Clients::InFlight(n)),
            };
            for _ in 0..4 {
                let rate = throughput(addr, clients, call).await;
                eprintln!(
                    "{only}: {:.0} calls/s, server {:.1} us CPU per call",
                    rate.calls_per_s, rate.server_us_per_call
                );
            }
            return;
        }
        let one = latency(addr, Call::Lookup, &["v0"], 1).await;
        let hundred = latency(addr, Call::Lookup, &["v0", "v1", "v2"], 100).await;
        let empty = latency(addr, Call::Nothing, &[], 0).await;
        println!("| call | p50 ms | p99 ms | p999 ms |");
        println!("|---|---|---|---|");
        for (name, s) in [
            ("lookup, 1 key x 1 view x 10 features", &one),
            ("lookup, 100 keys x 3 views x 10 features", &hundred),
            (
                "`ListActions` (does nothing): the transport's floor",
                &empty,
            ),
        ] {
            println!(
                "| {name} | {:.3} | {:.3} | {:.3} |",
                percentile(s, 0.5),
                percentile(s, 0.99),
                percentile(s, 0.999)
            );
        }

        let runs = [
            (
                "lookups, a connection each",
                Clients::OwnConnections,
                Call::Lookup,
            ),
            (
                "lookups, all on one shared connection",
                Clients::SharedConnection,
                Call::Lookup,
            ),
            (
                "lookups, bare HTTP/2 clients (no tonic channel)",
                Clients::Bare,
                Call::Lookup,
            ),
            (
                "lookups, 4 in flight per client",
                Clients::InFlight(4),
                Call::Lookup,
            ),
            (
                "lookups, 16 in flight per client",
                Clients::InFlight(16),
                Call::Lookup,
            ),
            (
                "`ListActions` (does nothing), a connection each",
                Clients::OwnConnections,
                Call::Nothing,
            ),
            (
                "`ListActions`, bare HTTP/2 clients",
                Clients::Bare,
                Call::Nothing,
            ),
            (
                "`ListActions`, 16 in flight per client",
                Clients::InFlight(16),
                Call::Nothing,
            ),
        ];
        println!(
            "\n| {THROUGHPUT_CLIENTS} concurrent clients, 1-key lookups or no-op calls | calls/s | \
             server CPU us per call | server's own limit on 2 cores, calls/s |"
        );
        println!("|---|---|---|---|");
        for (name, clients, call) in runs {
            let rate = throughput(addr, clients, call).await;
            println!(
                "| {name} | {:.0} | {:.1} | {:.0} |",
                rate.calls_per_s,
                rate.server_us_per_call,
                rate.capacity(2.0)
            );
        }

        println!(
            "\n| {THROUGHPUT_CLIENTS} concurrent clients, a connection each, keys per lookup \
             (1 view x 10 features) | lookups/s | keys/s | server CPU us per lookup | per key |"
        );
        println!("|---|---|---|---|---|");
        for n in [1, 10, 100] {
            let rate = throughput(addr, Clients::OwnConnections, Call::Keys(n)).await;
            println!(
                "| {n} | {:.0} | {:.0} | {:.1} | {:.2} |",
                rate.calls_per_s,
                rate.calls_per_s * n as f64,
                rate.server_us_per_call,
                rate.server_us_per_call / n as f64
            );
        }
    });
    let _ = stop.send(());
    let _ = server_runtime.block_on(server);
}
