//! The Arrow Flight SQL server over the [`Engine`](crate::Engine).
//!
//! Requests enter through tonic as Flight SQL commands ([`service`]); SQL runs in the shared engine;
//! results leave as Arrow IPC streams, batch by batch. Tickets and prepared-statement handles carry
//! the statement itself ([`tickets`]), so nothing is kept per client and any server instance on the
//! same warehouse can answer them. Engine errors become gRPC status codes in one place ([`status`]).

mod service;
mod sql_info;
mod status;
mod tickets;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::flight_service_server::FlightServiceServer;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tonic::transport::server::TcpIncoming;
use tracing::{info, warn};

pub use service::FlywheelFlightSqlService;
pub use status::to_status;

use crate::{Engine, Error, Result};

/// Binds `addr` (port 0 picks a free port).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Transport(format!("cannot listen on {addr}: {e}")))
}

/// Serves Flight SQL on `listener` until `shutdown` completes, then finishes in-flight calls and
/// returns.
pub async fn serve(
    engine: Engine,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let addr = listener.local_addr()?;
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let service = FlightServiceServer::new(FlywheelFlightSqlService::new(engine))
        .max_decoding_message_size(256 * 1024 * 1024)
        .max_encoding_message_size(256 * 1024 * 1024);
    info!(%addr, "Flight SQL server listening");
    let stop = Arc::new(Notify::new());
    let serving = tonic::transport::Server::builder()
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
