//! Authentication: a configured bearer token, and/or a user and password exchanged for a session
//! token by the Flight handshake.
//!
//! Every RPC passes through [`AuthInterceptor`]: with authentication configured, a call needs an
//! `authorization` header holding either `Bearer <token>` (the configured token, or a session token
//! the handshake issued) or `Basic <base64(user:password)>`; anything else is refused with
//! `UNAUTHENTICATED`. The handshake (which ADBC and pyarrow send with Basic credentials) answers
//! with an `authorization: Bearer <session token>` header that clients then send on every call.
//! Session tokens live in this server's memory: after a restart clients handshake again (ADBC does
//! so on reconnect).

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use tonic::Status;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::service::Interceptor;

/// The credentials a server accepts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// A static bearer token.
    pub token: Option<String>,
    /// A user and password for Basic authentication.
    pub user: Option<(String, String)>,
}

impl Credentials {
    /// Whether any credential is configured (otherwise every call is accepted).
    pub fn enabled(&self) -> bool {
        self.token.is_some() || self.user.is_some()
    }
}

/// Checks credentials and issues session tokens.
#[derive(Debug, Default)]
pub struct Authenticator {
    credentials: Credentials,
    sessions: RwLock<HashSet<String>>,
}

/// Who a call was authenticated as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Authentication is off.
    Anonymous,
    /// A bearer token (configured or issued) was presented.
    Bearer(String),
    /// A valid user and password were presented.
    User,
}

impl Authenticator {
    pub fn new(credentials: Credentials) -> Arc<Self> {
        Arc::new(Self {
            credentials,
            sessions: RwLock::default(),
        })
    }

    /// Checks the `authorization` header of a call.
    pub fn check(&self, metadata: &MetadataMap) -> Result<Caller, Status> {
        if !self.credentials.enabled() {
            return Ok(Caller::Anonymous);
        }
        let header = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| refused("no credentials were sent"))?;
        let (scheme, value) = header
            .split_once(' ')
            .ok_or_else(|| refused("the authorization header is malformed"))?;
        match scheme.to_ascii_lowercase().as_str() {
            "bearer" => {
                let value = value.trim();
                let known = self.credentials.token.as_deref() == Some(value)
                    || self
                        .sessions
                        .read()
                        .map(|s| s.contains(value))
                        .unwrap_or(false);
                if known {
                    Ok(Caller::Bearer(value.to_string()))
                } else {
                    Err(refused(
                        "the bearer token is not valid (expired by a restart?)",
                    ))
                }
            }
            "basic" => {
                let (user, password) = decode_basic(value.trim())
                    .ok_or_else(|| refused("the Basic credentials are not base64 user:password"))?;
                match &self.credentials.user {
                    Some((u, p)) if *u == user && *p == password => Ok(Caller::User),
                    _ => Err(refused("wrong user or password")),
                }
            }
            _ => Err(refused("unknown authorization scheme")),
        }
    }

    /// The handshake: returns the bearer token the client should send from now on (`None` when
    /// authentication is off).
    pub fn handshake(&self, metadata: &MetadataMap) -> Result<Option<String>, Status> {
        match self.check(metadata)? {
            Caller::Anonymous => Ok(None),
            Caller::Bearer(token) => Ok(Some(token)),
            Caller::User => {
                let token = uuid::Uuid::new_v4().simple().to_string();
                self.sessions
                    .write()
                    .map_err(|_| Status::internal("internal error: session table poisoned"))?
                    .insert(token.clone());
                Ok(Some(token))
            }
        }
    }

    /// The `authorization` header value for `token`.
    pub fn bearer_header(token: &str) -> Result<MetadataValue<tonic::metadata::Ascii>, Status> {
        format!("Bearer {token}")
            .parse()
            .map_err(|_| Status::internal("internal error: token is not a valid header"))
    }
}

fn refused(why: &str) -> Status {
    Status::unauthenticated(format!(
        "{why}: send `authorization: Bearer <token>`, or handshake with Basic user and password"
    ))
}

/// `dXNlcjpwdw` (padded or not, as ADBC sends it) to (`user`, `pw`).
fn decode_basic(value: &str) -> Option<(String, String)> {
    let bytes = STANDARD
        .decode(value)
        .or_else(|_| STANDARD_NO_PAD.decode(value.trim_end_matches('=')))
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// Refuses every call without valid credentials, before it reaches the service.
#[derive(Debug, Clone)]
pub struct AuthInterceptor {
    pub authenticator: Arc<Authenticator>,
}

impl Interceptor for AuthInterceptor {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        self.authenticator.check(request.metadata())?;
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_header(value: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert("authorization", value.parse().expect("ascii"));
        m
    }

    fn auth() -> Arc<Authenticator> {
        Authenticator::new(Credentials {
            token: Some("t0ken".into()),
            user: Some(("ada".into(), "pw:with:colons".into())),
        })
    }

    #[test]
    fn off_accepts_everyone() {
        let a = Authenticator::new(Credentials::default());
        assert_eq!(a.check(&MetadataMap::new()).expect("ok"), Caller::Anonymous);
        assert_eq!(a.handshake(&MetadataMap::new()).expect("ok"), None);
    }

    #[test]
    fn bearer_and_basic() {
        let a = auth();
        assert!(a.check(&with_header("Bearer t0ken")).is_ok());
        let e = a.check(&with_header("Bearer nope")).expect_err("refused");
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        assert!(a.check(&MetadataMap::new()).is_err());
        // ADBC sends unpadded base64.
        let basic = STANDARD_NO_PAD.encode("ada:pw:with:colons");
        assert_eq!(
            a.check(&with_header(&format!("Basic {basic}")))
                .expect("ok"),
            Caller::User
        );
        let wrong = STANDARD.encode("ada:nope");
        assert!(a.check(&with_header(&format!("Basic {wrong}"))).is_err());
    }

    #[test]
    fn handshake_issues_a_session_token() {
        let a = auth();
        let basic = STANDARD.encode("ada:pw:with:colons");
        let token = a
            .handshake(&with_header(&format!("Basic {basic}")))
            .expect("ok")
            .expect("a token");
        assert!(a.check(&with_header(&format!("Bearer {token}"))).is_ok());
        assert!(a.handshake(&MetadataMap::new()).is_err());
    }
}
