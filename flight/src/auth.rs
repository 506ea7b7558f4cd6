//! Authentication: a configured bearer token, and/or a user and password exchanged for a session
//! token by the Flight handshake.
//!
//! Every RPC passes through [`AuthInterceptor`]: with authentication configured, a call needs an
//! `authorization` header holding either `Bearer <token>` (the configured token, or a session token
//! the handshake issued) or `Basic <base64(user:password)>`; anything else is refused with
//! `UNAUTHENTICATED`. The handshake (which ADBC and pyarrow send with Basic credentials) answers
//! with an `authorization: Bearer <session token>` header that clients then send on every call.
//! Session tokens live in this server's memory: after a restart clients handshake again (ADBC does
//! so on reconnect). At most [`MAX_SESSIONS`] are kept: past that, the least recently used are
//! forgotten, so clients that handshake on every connection cannot grow the server without bound.
//! Configured secrets are compared in constant time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use flywheel_engine::Error;
use tonic::Status;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::service::Interceptor;

use super::to_status;

pub use flywheel_engine::Credentials;

/// Session tokens kept; past this many, the least recently used tenth is forgotten.
pub const MAX_SESSIONS: usize = 100_000;

/// Checks credentials and issues session tokens.
#[derive(Debug)]
pub struct Authenticator {
    credentials: Credentials,
    /// Issued session tokens and when each was last presented (a tick of `clock`).
    sessions: RwLock<HashMap<String, AtomicU64>>,
    /// Counts session uses: each use gets a distinct tick, so the least recently used are exact.
    clock: AtomicU64,
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
            clock: AtomicU64::new(0),
        })
    }

    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether `token` is a session token, noting its use.
    fn is_session(&self, token: &str) -> bool {
        let Ok(sessions) = self.sessions.read() else {
            return false;
        };
        match sessions.get(token) {
            Some(used) => {
                used.store(self.tick(), Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// Issues a new session token, forgetting the least recently used tenth when full.
    fn new_session(&self) -> Result<String, Status> {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let mut sessions = self
            .sessions
            .write()
            .map_err(|_| to_status(Error::Internal("the session table is poisoned".into())))?;
        if sessions.len() >= MAX_SESSIONS {
            let mut used: Vec<u64> = sessions
                .values()
                .map(|u| u.load(Ordering::Relaxed))
                .collect();
            let cut = MAX_SESSIONS / 10;
            let (_, &mut oldest_kept, _) = used.select_nth_unstable(cut);
            sessions.retain(|_, u| u.load(Ordering::Relaxed) >= oldest_kept);
            tracing::info!(
                kept = sessions.len(),
                "authentication: forgot the least recently used session tokens"
            );
        }
        sessions.insert(token.clone(), AtomicU64::new(self.tick()));
        Ok(token)
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
                let known = self.credentials.is_token(value) || self.is_session(value);
                if known {
                    Ok(Caller::Bearer(value.to_string()))
                } else {
                    Err(refused(
                        "the bearer token is not valid (session tokens are forgotten by a \
                         restart, and the least recently used when there are very many; \
                         handshake again)",
                    ))
                }
            }
            "basic" => {
                let (user, password) = decode_basic(value.trim())
                    .ok_or_else(|| refused("the Basic credentials are not base64 user:password"))?;
                if self.credentials.is_user(&user, &password) {
                    Ok(Caller::User)
                } else {
                    Err(refused("wrong user or password"))
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
            Caller::User => self.new_session().map(Some),
        }
    }

    /// The `authorization` header value for `token`.
    pub fn bearer_header(token: &str) -> Result<MetadataValue<tonic::metadata::Ascii>, Status> {
        format!("Bearer {token}")
            .parse()
            .map_err(|_| to_status(Error::Internal("a token is not a valid header".into())))
    }
}

fn refused(why: &str) -> Status {
    to_status(Error::Unauthenticated(format!(
        "{why}: send `authorization: Bearer <token>`, or handshake with Basic user and password"
    )))
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

    #[test]
    fn session_tokens_are_bounded_and_the_recently_used_survive() {
        let a = auth();
        let basic = with_header(&format!("Basic {}", STANDARD.encode("ada:pw:with:colons")));
        let first = a.handshake(&basic).expect("ok").expect("a token");
        let idle = a.handshake(&basic).expect("ok").expect("a token");
        for _ in 2..MAX_SESSIONS {
            a.handshake(&basic).expect("ok");
        }
        // The first session is in use; the second has been idle since it was issued.
        assert!(a.check(&with_header(&format!("Bearer {first}"))).is_ok());
        let newest = a.handshake(&basic).expect("ok").expect("a token");
        let kept = a.sessions.read().expect("lock").len();
        assert_eq!(kept, MAX_SESSIONS - MAX_SESSIONS / 10 + 1);
        assert!(a.check(&with_header(&format!("Bearer {first}"))).is_ok());
        assert!(a.check(&with_header(&format!("Bearer {newest}"))).is_ok());
        let e = a
            .check(&with_header(&format!("Bearer {idle}")))
            .expect_err("forgotten");
        assert!(e.message().contains("handshake again"), "{e}");
    }
}
