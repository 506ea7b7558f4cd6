//! Who may connect: the server's [`Credentials`], checked by SCRAM-SHA-256 (pgwire's), the same
//! user and password as Flight's Basic authentication; a configured bearer token is accepted as
//! the password of any user. With no credentials configured every connection is accepted.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use flywheel_engine::Credentials;
use flywheel_engine::credentials::same;
use futures::Sink;
use pgwire::api::auth::noop::NoopStartupHandler;
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::sasl::scram::{
    SCRAM_ITERATIONS, ScramAuth, gen_salted_password, random_nonce,
};
use pgwire::api::auth::{
    AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler,
};
use pgwire::api::{ClientInfo, ConnectionManager};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};

use crate::settings::SERVER_VERSION;

/// What every connection's startup checks, prepared once per server.
pub struct Authentication {
    passwords: Option<Arc<Passwords>>,
    connections: Arc<ConnectionManager>,
}

impl Authentication {
    pub fn new(credentials: &Credentials, connections: Arc<ConnectionManager>) -> Self {
        Self {
            passwords: credentials
                .enabled()
                .then(|| Arc::new(Passwords::new(credentials))),
            connections,
        }
    }

    /// The startup handler of a new connection (pgwire's SASL handler keeps the exchange's state,
    /// so each connection has its own).
    pub fn startup(&self) -> Startup {
        let scram = self.passwords.as_ref().map(|passwords| {
            let mut parameters = DefaultServerParameterProvider::default();
            parameters.server_version =
                format!("{SERVER_VERSION} (Flywheel {})", env!("CARGO_PKG_VERSION"));
            SASLAuthStartupHandler::new(Arc::new(parameters))
                .with_scram(ScramAuth::new(Arc::clone(passwords) as Arc<dyn AuthSource>))
                .with_connection_manager(Arc::clone(&self.connections))
        });
        Startup {
            open: Open {
                connections: Arc::clone(&self.connections),
            },
            scram,
        }
    }
}

/// The startup of one connection: authentication when credentials are configured.
pub struct Startup {
    open: Open,
    scram: Option<SASLAuthStartupHandler<DefaultServerParameterProvider>>,
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match &self.scram {
            Some(scram) => scram.on_startup(client, message).await,
            None => self.open.on_startup(client, message).await,
        }
    }
}

/// No authentication.
struct Open {
    connections: Arc<ConnectionManager>,
}

impl NoopStartupHandler for Open {
    fn connection_manager(&self) -> Option<Arc<ConnectionManager>> {
        Some(Arc::clone(&self.connections))
    }
}

/// The salted passwords SCRAM checks against, derived once from the configured secrets.
#[derive(Debug)]
struct Passwords {
    salt: Vec<u8>,
    /// The configured user and its salted password.
    user: Option<(String, Vec<u8>)>,
    /// The salted bearer token, the password of every other user.
    token: Option<Vec<u8>>,
    /// What a user with no password is checked against: nothing a client can know.
    nobody: Vec<u8>,
}

impl Passwords {
    fn new(credentials: &Credentials) -> Self {
        let salt = random_nonce().into_bytes();
        let salted = |secret: &str| gen_salted_password(secret, &salt, SCRAM_ITERATIONS);
        Self {
            user: credentials
                .user
                .as_ref()
                .map(|(u, p)| (u.clone(), salted(p))),
            token: credentials.token.as_deref().map(salted),
            nobody: salted(&random_nonce()),
            salt,
        }
    }
}

#[async_trait]
impl AuthSource for Passwords {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let user = login.user().unwrap_or_default();
        let salted = match &self.user {
            Some((u, p)) if same(u, user) => p,
            _ => self.token.as_ref().unwrap_or(&self.nobody),
        };
        Ok(Password::new(Some(self.salt.clone()), salted.clone()))
    }
}
