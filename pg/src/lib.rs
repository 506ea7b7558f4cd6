//! The PostgreSQL wire front door over the [`Engine`]: `psql`, JDBC, psycopg, BI tools and dbt
//! connect to Flywheel as to a PostgreSQL server.
//!
//! The protocol is pgwire's ([`pgwire`]): startup, SCRAM authentication ([`auth`]), TLS ([`tls`]),
//! the simple and the extended query protocols ([`handlers`]). Statements are parsed by the
//! engine's parser, with `datafusion-pg-catalog`'s compatibility rewrites for the catalog queries
//! Postgres clients send ([`statements`]), and run on the same engine entry points as Flight SQL,
//! so a statement answers the same through either door. Rows leave encoded from Arrow by
//! `arrow-pg` ([`results`]); errors carry SQLSTATE codes chosen in one place ([`sqlstate`]).
//! `pg_catalog` (pg_class, pg_namespace, pg_attribute, ...) is registered on the engine's session
//! by `datafusion-pg-catalog` when the door opens ([`open_catalog`]); feature views, labels and
//! training sets are views there (`relkind` `v`), as they are in `information_schema`.
//!
//! Transactions: `BEGIN`, `COMMIT` and `ROLLBACK` are accepted, and every statement commits on its
//! own as it runs (a Delta commit); `ROLLBACK` undoes nothing. `SET` and `SHOW` keep and show the
//! connection's settings ([`settings`]).

mod auth;
mod compat;
mod functions;
mod handlers;
mod results;
mod settings;
mod sqlstate;
mod statements;
mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use flywheel_engine::{Credentials, Engine, Error, Result};
use pgwire::api::auth::StartupHandler;
use pgwire::api::cancel::DefaultCancelHandler;
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::{ConnectionManager, PgWireServerHandlers};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{info, warn};

pub use sqlstate::sqlstate;

/// How the Postgres front door serves.
#[derive(Debug, Clone, Default)]
pub struct PgOptions {
    /// Who may connect (none configured: everyone).
    pub credentials: Credentials,
    /// PEM certificate chain and private key: TLS is offered (and plain connections still
    /// accepted, as PostgreSQL does unless `hostssl` is required).
    pub tls: Option<(Vec<u8>, Vec<u8>)>,
    /// Connections served at once; past it a new connection is closed (0: the default).
    pub max_connections: usize,
}

/// Connections served at once unless [`PgOptions::max_connections`] says otherwise.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// Binds `addr` (port 0 picks a free port).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Transport(format!("cannot listen on {addr} (pg_listen): {e}")))
}

/// Registers `pg_catalog` and the Postgres functions clients call (`current_schema()`,
/// `pg_table_is_visible`, `format_type`, `version()`, `to_regtype`, ...) on the engine's session.
/// Opening it again does nothing.
pub fn open_catalog(engine: &Engine) -> Result<()> {
    let ctx = engine.context();
    let catalog = engine.default_catalog();
    if ctx
        .catalog(&catalog)
        .and_then(|c| c.schema("pg_catalog"))
        .is_some()
    {
        return Ok(());
    }
    datafusion_pg_catalog::setup_pg_catalog(ctx, &catalog, EmptyContextProvider)
        .map_err(|e| Error::from_datafusion(*e))?;
    for function in functions::all() {
        ctx.register_udf(function);
    }
    Ok(())
}

/// The handlers of one connection (the query service and the cancel handler are shared).
struct Handlers {
    service: Arc<handlers::Service>,
    startup: Arc<auth::Startup>,
    cancel: Arc<DefaultCancelHandler>,
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        Arc::clone(&self.service)
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        Arc::clone(&self.service)
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::clone(&self.startup)
    }

    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        Arc::clone(&self.cancel)
    }
}

/// Serves the Postgres protocol on `listener` until `shutdown` completes; connections still open
/// then are closed. `pg_catalog` is opened first ([`open_catalog`]).
pub async fn serve(
    engine: Engine,
    listener: TcpListener,
    options: PgOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let addr = listener.local_addr()?;
    open_catalog(&engine)?;
    let tls = match &options.tls {
        Some((cert, key)) => Some(tls::acceptor(cert, key)?),
        None => None,
    };
    let connections = Arc::new(ConnectionManager::new());
    let authentication = auth::Authentication::new(&options.credentials, Arc::clone(&connections));
    let service = Arc::new(handlers::Service::new(engine));
    let cancel = Arc::new(DefaultCancelHandler::new(connections));
    let max = match options.max_connections {
        0 => DEFAULT_MAX_CONNECTIONS,
        n => n,
    };
    let slots = Arc::new(Semaphore::new(max));
    info!(%addr, tls = tls.is_some(), auth = options.credentials.enabled(), "Postgres server listening");
    tokio::pin!(shutdown);
    loop {
        let (socket, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    warn!(error = %e, "cannot accept a Postgres connection");
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            warn!(%peer, max, "Postgres connection refused: too many connections");
            continue;
        };
        let _ = socket.set_nodelay(true);
        let handlers = Arc::new(Handlers {
            service: Arc::clone(&service),
            startup: Arc::new(authentication.startup()),
            cancel: Arc::clone(&cancel),
        });
        let tls = tls.clone();
        tokio::spawn(async move {
            if let Err(e) = pgwire::tokio::process_socket(socket, tls, handlers).await {
                tracing::debug!(%peer, error = %e, "Postgres connection ended with an error");
            }
            drop(slot);
        });
    }
    info!("Postgres server stopped");
    Ok(())
}
