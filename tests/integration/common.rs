//! Test harness: a real Flight SQL server on 127.0.0.1 port 0, and clients for it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use arrow::array::RecordBatch;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::client::FlightSqlServiceClient;
use flywheel::{Engine, server};
use futures::TryStreamExt;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

/// A running server; dropping it without [`TestServer::stop`] aborts it.
pub struct TestServer {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<flywheel::Result<()>>>,
}

impl TestServer {
    /// Starts a server over the warehouse at `warehouse`; returns once it is listening.
    pub async fn start(warehouse: &Path) -> Self {
        Self::start_with(warehouse, server::ServeOptions::default()).await
    }

    /// Starts a server with authentication and/or TLS options.
    pub async fn start_with(warehouse: &Path, options: server::ServeOptions) -> Self {
        let engine = Engine::open(warehouse.to_str().expect("utf-8 path"))
            .await
            .expect("engine opens");
        Self::serve_engine(engine, options).await
    }

    /// Starts a server over an engine opened by the caller (e.g. with another online store).
    pub async fn serve_engine(engine: Engine, options: server::ServeOptions) -> Self {
        let listener = server::bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("binds");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(server::serve_with(engine, listener, options, async {
            let _ = rx.await;
        }));
        Self {
            addr,
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }

    pub async fn channel(&self) -> Channel {
        channel_to(&self.addr).await
    }

    /// A Flight SQL client.
    pub async fn sql_client(&self) -> FlightSqlServiceClient<Channel> {
        FlightSqlServiceClient::new(self.channel().await)
    }

    /// A raw Flight client, to see gRPC status codes.
    pub async fn flight_client(&self) -> FlightServiceClient<Channel> {
        FlightServiceClient::new(self.channel().await)
    }

    /// Graceful shutdown; returns what `serve` returned.
    pub async fn stop(mut self) -> flywheel::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.handle.take() {
            Some(h) => h.await.expect("server task joins"),
            None => Ok(()),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.abort();
        }
    }
}

/// A gRPC channel to a server listening on `addr` (plain HTTP/2).
async fn channel_to(addr: impl std::fmt::Display) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connects")
}

/// Runs a query through Flight SQL (`GetFlightInfo` + `DoGet` of every endpoint).
pub async fn query(client: &mut FlightSqlServiceClient<Channel>, sql: &str) -> Vec<RecordBatch> {
    let info = client
        .execute(sql.to_string(), None)
        .await
        .expect("get_flight_info");
    let mut out = Vec::new();
    for endpoint in info.endpoint {
        let ticket = endpoint.ticket.expect("endpoint has a ticket");
        let stream = client.do_get(ticket).await.expect("do_get");
        out.extend(stream.try_collect::<Vec<_>>().await.expect("stream"));
    }
    out
}

/// The batches as the sorted lines of a pretty table, for order-independent comparisons.
pub fn sorted_rows(batches: &[RecordBatch]) -> Vec<String> {
    let text = arrow::util::pretty::pretty_format_batches(batches)
        .expect("formats")
        .to_string();
    let lines: Vec<&str> = text.lines().collect();
    // Skip the header (border, names, border) and the closing border.
    let mut rows: Vec<String> = lines
        .iter()
        .skip(3)
        .filter(|l| !l.starts_with('+'))
        .map(|l| {
            l.split('|')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect();
    rows.sort();
    rows
}

/// The folder of the warehouse table `name` (tables live in folders named by ids, which the
/// registry records).
pub async fn table_dir(warehouse: &Path, name: &str) -> std::path::PathBuf {
    let wh = flywheel_catalog::Warehouse::open(warehouse.to_str().expect("utf-8 path"))
        .expect("warehouse");
    let registry = flywheel_catalog::Registry::open(wh)
        .await
        .expect("registry");
    registry
        .table(name)
        .unwrap_or_else(|| panic!("table `{name}` is registered"))
        .location
        .to_file_path()
        .expect("a local table")
}

/// The `flywheel` binary over `warehouse`, with no configuration from the environment.
pub fn flywheel(warehouse: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_flywheel"));
    c.arg("--warehouse").arg(warehouse);
    c.env_remove("FLYWHEEL_CONFIG")
        .env_remove("FLYWHEEL_WAREHOUSE")
        .env_remove("FLYWHEEL_LISTEN");
    c
}

/// An engine over a fresh warehouse in `dir`, after running `setup` (one statement each).
pub async fn engine_with(dir: &Path, setup: &[&str]) -> Engine {
    let engine = Engine::open(dir.to_str().expect("utf-8 path"))
        .await
        .expect("engine opens");
    for sql in setup {
        run_sql(&engine, sql).await;
    }
    engine
}

/// Runs one statement on `engine` and collects its rows (panicking with the statement on error).
pub async fn run_sql(engine: &Engine, sql: &str) -> Vec<RecordBatch> {
    engine
        .sql(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// [`run_sql`]'s rows as [`sorted_rows`].
pub async fn sql_rows(engine: &Engine, sql: &str) -> Vec<String> {
    sorted_rows(&run_sql(engine, sql).await)
}

/// Runs `command`, asserts it succeeded (showing its stderr if not), and returns its stdout.
pub fn succeeds(command: &mut Command) -> String {
    let out = command.output().expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `flywheel serve` as a child process on a free loopback port.
pub struct ServerProcess {
    child: Child,
    pub addr: String,
}

impl ServerProcess {
    /// Starts `flywheel serve` over `warehouse` with extra flags `args`; returns once it listens.
    pub fn start(warehouse: &Path, args: &[&str]) -> Self {
        Self::start_with_env(warehouse, args, &[])
    }

    /// [`ServerProcess::start`] with environment variables (`FLYWHEEL_...` settings).
    pub fn start_with_env(warehouse: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = flywheel(warehouse)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .env("FLYWHEEL_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("flywheel serve starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut banner = String::new();
        BufReader::new(stdout)
            .read_line(&mut banner)
            .expect("reads the banner");
        let addr = banner
            .split("grpc://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no address in the banner {banner:?}"))
            .to_string();
        Self { child, addr }
    }

    pub async fn channel(&self) -> Channel {
        channel_to(&self.addr).await
    }

    /// A raw Flight client that takes messages of any size.
    pub async fn flight(&self) -> FlightServiceClient<Channel> {
        FlightServiceClient::new(self.channel().await)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX)
    }

    pub fn alive(&mut self) -> bool {
        self.child.try_wait().expect("waits").is_none()
    }

    /// Resident memory of the server, in bytes.
    pub fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("reads /proc");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("VmRSS")
            * 1024
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let killed = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(killed.success());
        self.child.wait().expect("waits")
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
