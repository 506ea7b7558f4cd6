//! [`Credentials`]: who may use a server, the same for every front door (Flight's Basic and bearer
//! authentication, the Postgres front door's SCRAM password). Secrets are compared in constant time.

/// The credentials a server accepts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// A static bearer token (over Postgres: the password of any user but `user`'s).
    pub token: Option<String>,
    /// A user and password.
    pub user: Option<(String, String)>,
}

impl Credentials {
    /// Whether any credential is configured (otherwise every caller is accepted).
    pub fn enabled(&self) -> bool {
        self.token.is_some() || self.user.is_some()
    }

    /// Whether `user` with `password` is the configured user.
    pub fn is_user(&self, user: &str, password: &str) -> bool {
        match &self.user {
            // Both compared whatever the first gives, in constant time.
            Some((u, p)) => same(u, user) & same(p, password),
            None => false,
        }
    }

    /// Whether `token` is the configured bearer token.
    pub fn is_token(&self, token: &str) -> bool {
        self.token.as_deref().is_some_and(|t| same(t, token))
    }
}

/// Whether two secrets are equal, in time that depends on their lengths only.
pub fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_equal_only_when_equal() {
        assert!(same("t0ken", "t0ken"));
        assert!(!same("t0ken", "t0kem"));
        assert!(!same("t0ken", "t0ke"));
        assert!(!same("", "x"));
        assert!(same("", ""));
    }

    #[test]
    fn the_user_and_the_token() {
        let c = Credentials {
            token: Some("t".into()),
            user: Some(("ada".into(), "pw".into())),
        };
        assert!(c.is_user("ada", "pw") && !c.is_user("ada", "t") && !c.is_user("bob", "pw"));
        assert!(c.is_token("t") && !c.is_token("pw"));
        assert!(!Credentials::default().is_token(""));
    }
}
