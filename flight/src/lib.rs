//! The Arrow Flight SQL server over the [`Engine`](flywheel_engine::Engine).
//!
//! Requests enter through tonic as Flight SQL commands ([`service`]); SQL runs in the shared engine;
//! results leave as Arrow IPC streams, batch by batch, through arrow-flight's encoder (in the types
//! [`wire_types`] gives them). Tickets and prepared-statement handles carry the statement itself
//! ([`tickets`]), so nothing is kept per client and any server instance on the same warehouse can
//! answer them; [`checked`] refuses envelopes that are not Flight SQL before the dispatch sees
//! them. Engine errors become gRPC status codes in one place ([`status`]). Beside Flight SQL, path descriptors serve sharded reads of training sets ([`shards`]); bulk
//! ingest writes Delta tables ([`ingest`]); catalog metadata lists Flywheel's objects
//! ([`metadata`]); every call passes the credential check ([`auth`]); TLS is optional.

mod auth;
mod checked;
mod column_metadata;
mod ingest;
mod metadata;
mod service;
mod shards;
mod sql_info;
mod status;
mod tickets;
mod untrusted;
mod wire_types;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::flight_service_server::FlightServiceServer;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tonic::transport::server::TcpIncoming;
use tracing::{info, warn};

pub use auth::{AuthInterceptor, Authenticator, Credentials};
pub use checked::CheckedFlightService;
pub use service::FlywheelFlightSqlService;
pub use status::to_status;
pub use tickets::{SHARD_TICKET_TYPE, ShardTicket};

use flywheel_engine::{Engine, Error, Result};

/// Binds `addr` (port 0 picks a free port).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Transport(format!("cannot listen on {addr}: {e}")))
}

/// How to serve: who may call, and whether over TLS.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    pub credentials: Credentials,
    /// PEM certificate chain and private key.
    pub tls: Option<(Vec<u8>, Vec<u8>)>,
}

impl ServeOptions {
    /// `grpc` or `grpc+tls`: the URI scheme clients connect with.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "grpc+tls"
        } else {
            "grpc"
        }
    }
}

/// Serves Flight SQL on `listener`, open to everyone and without TLS, until `shutdown` completes.
pub async fn serve(
    engine: Engine,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    serve_with(engine, listener, ServeOptions::default(), shutdown).await
}

/// Serves Flight SQL on `listener` with `options` until `shutdown` completes, then finishes
/// in-flight calls and returns.
pub async fn serve_with(
    engine: Engine,
    listener: TcpListener,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let addr = listener.local_addr()?;
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let authenticator = Authenticator::new(options.credentials.clone());
    // A restarted server answers its first lookups from memory.
    engine.preload_online();
    // Folders of tables whose statements stopped before registering them (a crash) hold space.
    let registry = std::sync::Arc::clone(engine.registry());
    tokio::task::spawn_blocking(move || {
        if let Err(e) = registry.remove_orphan_folders(flywheel_catalog::ORPHAN_GRACE) {
            warn!(error = %e, "could not look for unregistered table folders");
        }
    });
    let flight_sql = FlywheelFlightSqlService::with_auth(engine, Arc::clone(&authenticator));
    let service = FlightServiceServer::new(CheckedFlightService(flight_sql))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let service = tonic::service::interceptor::InterceptedService::new(
        service,
        AuthInterceptor { authenticator },
    );
    info!(%addr, tls = options.tls.is_some(), auth = options.credentials.enabled(), "Flight SQL server listening");
    let stop = Arc::new(Notify::new());
    // Bulk downloads: large HTTP/2 windows and frames, so a stream is not throttled by
    // flow-control round trips on fast links (loopback included).
    let mut builder = tonic::transport::Server::builder()
        .initial_stream_window_size(Some(16 * 1024 * 1024))
        .initial_connection_window_size(Some(64 * 1024 * 1024))
        .max_frame_size(Some(1024 * 1024));
    if let Some((cert, key)) = &options.tls {
        // Several TLS backends are linked in (object stores bring their own); pick one for the
        // process. Failing means one was already installed, which serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let identity = tonic::transport::Identity::from_pem(cert, key);
        builder = builder
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
            .map_err(|e| Error::Config(format!("bad TLS certificate or key: {e}")))?;
    }
    let serving = builder
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, {
            let stop = Arc::clone(&stop);
            async move { stop.notified().await }
        });
    tokio::pin!(serving);
    tokio::select! {
        result = &mut serving => return result.map_err(|e| Error::Transport(e.to_string())),
        () = shutdown => stop.notify_one(),
    }
    // Stop accepting; let calls in flight finish, but do not wait forever on clients that keep
    // idle connections open.
    match tokio::time::timeout(SHUTDOWN_GRACE, serving).await {
        Ok(result) => result.map_err(|e| Error::Transport(e.to_string()))?,
        Err(_) => {
            warn!(grace = ?SHUTDOWN_GRACE, "connections still open after the grace period; closing them")
        }
    }
    info!("Flight SQL server stopped");
    Ok(())
}

/// Largest message a call may send or receive.
const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// How long a shutdown waits for calls in flight.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    info!("shutdown requested");
}
