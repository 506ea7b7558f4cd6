//! The Arrow Flight SQL server over the [`Engine`](crate::Engine).
//!
//! Requests enter through tonic as Flight SQL commands ([`service`]); SQL runs in the shared engine;
//! results leave as Arrow IPC streams, batch by batch. Tickets and prepared-statement handles carry
//! the statement itself ([`tickets`]), so nothing is kept per client and any server instance on the
//! same warehouse can answer them. Engine errors become gRPC status codes in one place ([`status`]).
//! `DoGet` answers leave from the batches' own buffers ([`do_get`], [`messages`]). Beside Flight
//! SQL, path descriptors serve sharded reads of training sets ([`shards`]); bulk
//! ingest writes Delta tables ([`ingest`]); catalog metadata lists Flywheel's objects
//! ([`metadata`]); every call passes the credential check ([`auth`]); TLS is optional.

mod auth;
mod column_metadata;
mod do_get;
mod download_cache;
mod grpc_body;
mod ingest;
mod messages;
mod metadata;
mod service;
mod shards;
mod sql_info;
mod status;
mod tickets;
mod warm;

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
pub use download_cache::DownloadCacheOptions;
pub use service::FlywheelFlightSqlService;
pub use shards::{SHARD_TICKET_TYPE, ShardTicket};
pub use status::to_status;

use crate::{Engine, Error, Result};

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
    /// Where repeated shard reads of pinned table versions are cached (default: off; the
    /// `flywheel serve` default is 8 GiB in the warehouse).
    pub download_cache: DownloadCacheOptions,
    /// Whether each training set built through the server (CREATE, REFRESH) is recorded into
    /// the download cache at once, so that its first read is a replay (default: no; the
    /// `flywheel serve` default is yes).
    pub warm_training_sets: bool,
}

impl ServeOptions {
    /// The options `config` asks for; reads the TLS files.
    pub fn from_config(config: &crate::Config) -> Result<Self> {
        let read = |what: &str, path: &str| {
            std::fs::read(path)
                .map_err(|e| Error::Config(format!("cannot read the TLS {what} `{path}`: {e}")))
        };
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some((read("certificate", cert)?, read("key", key)?)),
            _ => None,
        };
        Ok(Self {
            credentials: config.credentials(),
            tls,
            download_cache: DownloadCacheOptions {
                dir: config.download_cache_dir.as_ref().map(Into::into),
                max_bytes: config.download_cache_bytes()?,
            },
            warm_training_sets: config.warm_training_sets.unwrap_or(true),
        })
    }

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
    let cache = open_download_cache(&engine, &options.download_cache)?;
    if let Some(cache) = &cache {
        // A dropped table's recordings can never be asked for again: free their space now.
        let cache = Arc::clone(cache);
        engine.on_table_dropped(Arc::new(move |table_id| cache.forget_table(table_id)));
    }
    // A restarted server answers its first lookups from memory.
    engine.preload_online();
    // Folders of tables whose statements stopped before registering them (a crash) hold space.
    let registry = std::sync::Arc::clone(engine.registry());
    tokio::task::spawn_blocking(move || {
        if let Err(e) = registry.remove_orphan_folders(flywheel_catalog::ORPHAN_GRACE) {
            warn!(error = %e, "could not look for unregistered table folders");
        }
    });
    let flight_sql = FlywheelFlightSqlService::with_auth(engine, Arc::clone(&authenticator))
        .with_download_cache(cache.clone());
    let warming = match cache {
        Some(cache) if options.warm_training_sets => Some(AbortOnDrop(
            warm::warm_built_training_sets(flight_sql.clone(), cache),
        )),
        _ => None,
    };
    let service = FlightServiceServer::new(flight_sql.clone())
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let service = do_get::DoGetRoute::new(service, flight_sql, MAX_MESSAGE_BYTES);
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
    drop(warming);
    info!("Flight SQL server stopped");
    Ok(())
}

/// Aborts a background task when dropped (the server returned, by error or shutdown).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Opens the download cache `options` ask for: `None` when it is off, or when no folder was given
/// and the warehouse has no usable one (an object store, a read-only folder). A configured folder
/// that cannot be used is an error.
fn open_download_cache(
    engine: &Engine,
    options: &DownloadCacheOptions,
) -> Result<Option<Arc<download_cache::DownloadCache>>> {
    if options.max_bytes == 0 {
        return Ok(None);
    }
    let dir = match &options.dir {
        Some(dir) => dir.clone(),
        None => match engine.registry().warehouse().root().to_file_path() {
            Ok(root) => root.join("_flywheel").join("download_cache"),
            Err(()) => {
                info!(
                    "no download cache: the warehouse is not a local folder; set \
                     download_cache_dir to a local one to cache repeated training-set reads"
                );
                return Ok(None);
            }
        },
    };
    let cache = match download_cache::DownloadCache::open(dir.clone(), options.max_bytes) {
        Ok(cache) => cache,
        // A folder the configuration names must work; the default one is a convenience.
        Err(e) if options.dir.is_some() => {
            return Err(Error::Config(format!(
                "cannot open the download cache folder `{}`: {e}; set download_cache_dir to a \
                 writable folder, or download_cache_size = \"0\" to switch the cache off",
                dir.display()
            )));
        }
        Err(e) => {
            warn!(dir = %dir.display(), error = %e,
                "no download cache: its folder cannot be created; set download_cache_dir to a \
                 writable folder");
            return Ok(None);
        }
    };
    info!(dir = %dir.display(), max_bytes = options.max_bytes, "download cache");
    Ok(Some(Arc::new(cache)))
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
