//! [`Config`]: Flywheel's settings.
//!
//! Precedence, lowest first: built-in defaults, a TOML file (`--config PATH` or `FLYWHEEL_CONFIG`),
//! environment variables (`FLYWHEEL_LISTEN`, `FLYWHEEL_WAREHOUSE`, `FLYWHEEL_LOG`,
//! `FLYWHEEL_AUTH_TOKEN`, `FLYWHEEL_AUTH_USER`, `FLYWHEEL_AUTH_PASSWORD`, `FLYWHEEL_TLS_CERT`,
//! `FLYWHEEL_TLS_KEY`, `FLYWHEEL_ONLINE_STORE`, `FLYWHEEL_MEMORY_LIMIT`,
//! `FLYWHEEL_PARQUET_DATA_PAGES`, `FLYWHEEL_ALLOWED_PATHS` (comma-separated),
//! `FLYWHEEL_STATEMENT_TIMEOUT`, `FLYWHEEL_MAX_STATEMENT_SIZE`, `FLYWHEEL_MAX_EXPRESSION_DEPTH`,
//! `FLYWHEEL_MAX_LOOKUP_KEYS`), command-line flags.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::engine::DataPages;
use crate::engine::limits::{self, Limits};
use crate::{Error, Result};

/// Settings shared by `flywheel serve` and `flywheel sql`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the Flight SQL server listens on.
    pub listen: String,
    /// Address the Postgres wire front door listens on, e.g. `127.0.0.1:5433` (default: none, the
    /// door is closed). It takes the same credentials and TLS certificate as Flight.
    pub pg_listen: Option<String>,
    /// Warehouse root: a local folder or an object-store URL.
    pub warehouse: String,
    /// Log filter in `tracing`'s env-filter syntax (`info`, `flywheel=debug`, ...).
    pub log: String,
    /// A bearer token every client must send (`authorization: Bearer <token>`).
    pub auth_token: Option<String>,
    /// A user clients may authenticate as with Basic credentials (needs `auth_password`).
    pub auth_user: Option<String>,
    /// The password of `auth_user`.
    pub auth_password: Option<String>,
    /// PEM certificate chain: with `tls_key`, the server speaks TLS (`grpc+tls://`).
    pub tls_cert: Option<String>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<String>,
    /// The online store: `embedded` (default) or a `redis://` URL shared by several servers.
    pub online_store: Option<String>,
    /// The most memory queries may hold, e.g. `4GiB`, `512MiB` or a byte count (default: half of
    /// the machine's memory, or of the container's limit when it has one). Over it, sorts and
    /// aggregates spill to disk, ASOF JOINs match their right side in passes, and what cannot
    /// spill is refused (`RESOURCE_EXHAUSTED`).
    pub memory_limit: Option<String>,
    /// How long one statement may run before it is cancelled, e.g. `30s`, `15m`, `2h`; `0` for no
    /// limit (default: 1h for `flywheel serve`, none for `flywheel sql`).
    pub statement_timeout: Option<String>,
    /// The longest SQL text one request may carry, e.g. `16MiB` (the default).
    pub max_statement_size: Option<String>,
    /// The deepest nesting of expressions and subqueries in one statement (default: 2500).
    pub max_expression_depth: Option<usize>,
    /// The most entity keys one online lookup may ask for (default: 100000).
    pub max_lookup_keys: Option<usize>,
    /// Retired (the download cache was removed in 0.2): accepted so that older configuration
    /// files still load, and ignored with a warning ([`Config::retired_settings`]).
    pub download_cache_size: Option<String>,
    /// Retired, as `download_cache_size`.
    pub download_cache_dir: Option<String>,
    /// The Parquet data pages of the tables Flywheel writes: `v2` (default; pages compression
    /// does not shrink are stored uncompressed) or `v1` (for readers without V2 support).
    pub parquet_data_pages: Option<String>,
    /// Retired, as `download_cache_size`.
    pub warm_training_sets: Option<bool>,
    /// Folders (or object-store URL prefixes) outside the warehouse that clients of `flywheel
    /// serve` may use in `COPY ... TO` and as external tables' `LOCATION`s (default: none, only
    /// the warehouse). The local `flywheel sql` shell is not restricted.
    pub allowed_paths: Vec<String>,
    /// Whether `flywheel serve` runs the refresh scheduler (objects with `refresh = 'every ...'`,
    /// `'cron: ...'` or `'on change'`): `true` (default) or `false`.
    pub scheduler: Option<bool>,
    /// How often the scheduler polls the inputs of `on change` objects, e.g. `5s` (the default).
    pub on_change_poll_interval: Option<String>,
    /// How long a server's claim on a scheduled refresh lasts unless it renews it (a server that
    /// died holding one loses it after this), e.g. `5m` (the default).
    pub schedule_lease_timeout: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:50051".into(),
            pg_listen: None,
            warehouse: "./warehouse".into(),
            log: "info".into(),
            auth_token: None,
            auth_user: None,
            auth_password: None,
            tls_cert: None,
            tls_key: None,
            online_store: None,
            memory_limit: None,
            statement_timeout: None,
            max_statement_size: None,
            max_expression_depth: None,
            max_lookup_keys: None,
            download_cache_size: None,
            download_cache_dir: None,
            parquet_data_pages: None,
            warm_training_sets: None,
            allowed_paths: Vec::new(),
            scheduler: None,
            on_change_poll_interval: None,
            schedule_lease_timeout: None,
        }
    }
}

/// Values given on the command line; `None` keeps the value from the layers below.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config_file: Option<String>,
    pub listen: Option<String>,
    pub pg_listen: Option<String>,
    pub warehouse: Option<String>,
    pub auth_token: Option<String>,
    pub auth_user: Option<String>,
    pub auth_password: Option<String>,
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    pub online_store: Option<String>,
    pub memory_limit: Option<String>,
    pub statement_timeout: Option<String>,
}

impl Config {
    /// Parses a TOML document.
    pub fn from_toml(text: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| Error::Config(e.to_string()))
    }

    /// Builds the configuration from every layer; `env` looks up environment variables.
    pub fn resolve(flags: &Overrides, env: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let file = flags.config_file.clone().or_else(|| env("FLYWHEEL_CONFIG"));
        let mut config = match file {
            Some(path) => {
                let text = std::fs::read_to_string(Path::new(&path))
                    .map_err(|e| Error::Config(format!("cannot read config file `{path}`: {e}")))?;
                Self::from_toml(&text).map_err(|e| Error::Config(format!("in `{path}`: {e}")))?
            }
            None => Self::default(),
        };
        if let Some(v) = env("FLYWHEEL_LISTEN") {
            config.listen = v;
        }
        if let Some(v) = env("FLYWHEEL_WAREHOUSE") {
            config.warehouse = v;
        }
        if let Some(v) = env("FLYWHEEL_LOG") {
            config.log = v;
        }
        if let Some(v) = &flags.listen {
            config.listen = v.clone();
        }
        if let Some(v) = &flags.warehouse {
            config.warehouse = v.clone();
        }
        let optional = [
            (
                "FLYWHEEL_AUTH_TOKEN",
                &flags.auth_token,
                &mut config.auth_token,
            ),
            (
                "FLYWHEEL_AUTH_USER",
                &flags.auth_user,
                &mut config.auth_user,
            ),
            (
                "FLYWHEEL_AUTH_PASSWORD",
                &flags.auth_password,
                &mut config.auth_password,
            ),
            ("FLYWHEEL_TLS_CERT", &flags.tls_cert, &mut config.tls_cert),
            ("FLYWHEEL_TLS_KEY", &flags.tls_key, &mut config.tls_key),
            (
                "FLYWHEEL_PG_LISTEN",
                &flags.pg_listen,
                &mut config.pg_listen,
            ),
            (
                "FLYWHEEL_ONLINE_STORE",
                &flags.online_store,
                &mut config.online_store,
            ),
            (
                "FLYWHEEL_MEMORY_LIMIT",
                &flags.memory_limit,
                &mut config.memory_limit,
            ),
            (
                "FLYWHEEL_STATEMENT_TIMEOUT",
                &flags.statement_timeout,
                &mut config.statement_timeout,
            ),
            (
                "FLYWHEEL_MAX_STATEMENT_SIZE",
                &None,
                &mut config.max_statement_size,
            ),
            (
                "FLYWHEEL_PARQUET_DATA_PAGES",
                &None,
                &mut config.parquet_data_pages,
            ),
            (
                "FLYWHEEL_ON_CHANGE_POLL_INTERVAL",
                &None,
                &mut config.on_change_poll_interval,
            ),
            (
                "FLYWHEEL_SCHEDULE_LEASE_TIMEOUT",
                &None,
                &mut config.schedule_lease_timeout,
            ),
        ];
        for (var, flag, field) in optional {
            if let Some(v) = flag.clone().or_else(|| env(var)) {
                *field = Some(v);
            }
        }
        for (var, field) in [
            (
                "FLYWHEEL_MAX_EXPRESSION_DEPTH",
                &mut config.max_expression_depth,
            ),
            ("FLYWHEEL_MAX_LOOKUP_KEYS", &mut config.max_lookup_keys),
        ] {
            if let Some(v) = env(var) {
                *field = Some(v.trim().parse().map_err(|_| {
                    Error::Config(format!("{var} `{v}` is not a positive whole number"))
                })?);
            }
        }
        if let Some(v) = env("FLYWHEEL_ALLOWED_PATHS") {
            config.allowed_paths = v
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect();
        }
        for (var, field) in [("FLYWHEEL_SCHEDULER", &mut config.scheduler)] {
            if let Some(v) = env(var) {
                *field = Some(match v.as_str() {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => {
                        return Err(Error::Config(format!("{var} `{v}` is not true or false")));
                    }
                });
            }
        }
        config.check()?;
        Ok(config)
    }

    /// Settings that only make sense together.
    fn check(&self) -> Result<()> {
        if self.auth_user.is_some() != self.auth_password.is_some() {
            return Err(Error::Config(
                "auth_user and auth_password go together: set both, or neither".into(),
            ));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(Error::Config(
                "tls_cert and tls_key go together: set both (PEM files), or neither".into(),
            ));
        }
        if self.auth_token.as_deref() == Some("") {
            return Err(Error::Config("auth_token is empty".into()));
        }
        self.memory_limit_bytes()?;
        self.limits(None)?;
        if self.max_lookup_keys == Some(0) {
            return Err(Error::Config("max_lookup_keys must be at least 1".into()));
        }
        self.data_pages()?;
        crate::engine::FileAccess::restricted_to(&self.allowed_paths)?;
        Ok(())
    }

    /// `parquet_data_pages` (default: V2).
    pub fn data_pages(&self) -> Result<DataPages> {
        self.parquet_data_pages
            .as_deref()
            .map_or(Ok(DataPages::default()), str::parse)
            .map_err(Error::Config)
    }

    /// `memory_limit` in bytes: the configured size, or half of the memory this process may use
    /// (`None` only when that cannot be read).
    pub fn memory_limit_bytes(&self) -> Result<Option<usize>> {
        let Some(text) = self.memory_limit.as_deref() else {
            return Ok(available_memory().map(|m| usize::try_from(m / 2).unwrap_or(usize::MAX)));
        };
        match parse_size(text) {
            Some(b) if b > 0 => Ok(Some(usize::try_from(b).unwrap_or(usize::MAX))),
            _ => Err(Error::Config(format!(
                "memory_limit `{text}` is not a size; e.g. 4GiB, 512MiB or 1073741824"
            ))),
        }
    }

    /// The limits statements run under; `default_timeout` when `statement_timeout` is not set.
    pub fn limits(&self, default_timeout: Option<Duration>) -> Result<Limits> {
        let statement_timeout = match self.statement_timeout.as_deref() {
            None => default_timeout,
            Some(text) => parse_duration(text).ok_or_else(|| {
                Error::Config(format!(
                    "statement_timeout `{text}` is not a duration; e.g. 30s, 15m, 2h, or 0 for \
                     no limit"
                ))
            })?,
        };
        let max_statement_bytes = match self.max_statement_size.as_deref() {
            None => limits::DEFAULT_MAX_STATEMENT_BYTES,
            Some(text) => parse_size(text)
                .filter(|b| *b > 0)
                .map(|b| usize::try_from(b).unwrap_or(usize::MAX))
                .ok_or_else(|| {
                    Error::Config(format!(
                        "max_statement_size `{text}` is not a size; e.g. 16MiB"
                    ))
                })?,
        };
        let max_expression_depth = match self.max_expression_depth {
            None => limits::DEFAULT_MAX_EXPRESSION_DEPTH,
            Some(0) => {
                return Err(Error::Config(
                    "max_expression_depth must be at least 1".into(),
                ));
            }
            Some(d) => d,
        };
        Ok(Limits {
            max_statement_bytes,
            max_expression_depth,
            statement_timeout,
            max_lookup_keys: self
                .max_lookup_keys
                .unwrap_or(crate::online::DEFAULT_MAX_LOOKUP_KEYS),
        })
    }

    /// How `flywheel serve` runs the refresh scheduler; `None` when `scheduler = false`.
    pub fn scheduler_options(&self) -> Result<Option<crate::engine::SchedulerOptions>> {
        if self.scheduler == Some(false) {
            return Ok(None);
        }
        let defaults = crate::engine::SchedulerOptions::default();
        let duration = |key: &str, value: &Option<String>, default: Duration| match value {
            None => Ok(default),
            Some(text) => parse_duration(text).flatten().ok_or_else(|| {
                Error::Config(format!(
                    "{key} `{text}` is not a duration; e.g. 500ms, 5s, 5m"
                ))
            }),
        };
        Ok(Some(crate::engine::SchedulerOptions {
            poll_interval: duration(
                "on_change_poll_interval",
                &self.on_change_poll_interval,
                defaults.poll_interval,
            )?,
            lease_timeout: duration(
                "schedule_lease_timeout",
                &self.schedule_lease_timeout,
                defaults.lease_timeout,
            )?,
        }))
    }

    /// The retired settings this configuration sets: they are ignored, and `flywheel serve` says
    /// so once at start.
    pub fn retired_settings(&self) -> Vec<&'static str> {
        let set = [
            self.download_cache_size.is_some(),
            self.download_cache_dir.is_some(),
            self.warm_training_sets.is_some(),
        ];
        Self::retired_settings_names()
            .into_iter()
            .zip(set)
            .filter_map(|(name, set)| set.then_some(name))
            .collect()
    }

    /// Every retired setting's name.
    pub fn retired_settings_names() -> [&'static str; 3] {
        [
            "download_cache_size",
            "download_cache_dir",
            "warm_training_sets",
        ]
    }

    /// How the Flight front door serves: credentials, and TLS (the certificate and key files are
    /// read here).
    pub fn serve_options(&self) -> Result<crate::server::ServeOptions> {
        let read = |what: &str, path: &str| {
            std::fs::read(path)
                .map_err(|e| Error::Config(format!("cannot read the TLS {what} `{path}`: {e}")))
        };
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some((read("certificate", cert)?, read("key", key)?)),
            _ => None,
        };
        Ok(crate::server::ServeOptions {
            credentials: self.credentials(),
            tls,
        })
    }

    /// The credentials clients must present (none configured: everyone is accepted).
    pub fn credentials(&self) -> crate::server::Credentials {
        crate::server::Credentials {
            token: self.auth_token.clone(),
            user: self.auth_user.clone().zip(self.auth_password.clone()),
        }
    }

    /// How the Postgres front door serves (`None`: `pg_listen` is not set): its address, and the
    /// credentials and TLS certificate of `flight` (the Flight front door's [`Config::serve_options`]).
    pub fn pg_options(
        &self,
        flight: &crate::server::ServeOptions,
    ) -> Result<Option<(SocketAddr, flywheel_pg::PgOptions)>> {
        let Some(listen) = &self.pg_listen else {
            return Ok(None);
        };
        let addr = listen.parse().map_err(|e| {
            Error::Config(format!(
                "pg_listen address `{listen}` is not HOST:PORT ({e}); e.g. 127.0.0.1:5433"
            ))
        })?;
        Ok(Some((
            addr,
            flywheel_pg::PgOptions {
                credentials: flight.credentials.clone(),
                tls: flight.tls.clone(),
                max_connections: 0,
            },
        )))
    }

    /// The listen address, parsed.
    pub fn listen_addr(&self) -> Result<SocketAddr> {
        self.listen.parse().map_err(|e| {
            Error::Config(format!(
                "listen address `{}` is not HOST:PORT ({e}); e.g. 127.0.0.1:50051",
                self.listen
            ))
        })
    }
}

/// The memory this process may use: the container's limit (cgroup v2 `memory.max`) when there is
/// one, otherwise the machine's (`MemTotal`); `None` where neither can be read.
fn available_memory() -> Option<u64> {
    let machine = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| kib * 1024)
    });
    let container = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok());
    match (machine, container) {
        (Some(m), Some(c)) => Some(m.min(c)),
        (m, c) => m.or(c),
    }
}

/// A duration with a unit (`500ms`, `30s`, `15m`, `2h`, `1d`): `Some(None)` for `0` (no limit),
/// `None` when it is not one.
fn parse_duration(text: &str) -> Option<Option<Duration>> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: u64 = number.parse().ok()?;
    let millis: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" if n == 0 => 0,
        "ms" => 1,
        "s" | "sec" => 1000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    let total = n.checked_mul(millis)?;
    Some((total > 0).then(|| Duration::from_millis(total)))
}

/// A byte count with an optional unit (`4GiB`, `512 MB`, `1000`); `None` when it is not one.
fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return None,
    };
    number.parse::<u64>().ok()?.checked_mul(factor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn layers_apply_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("flywheel.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:1\"\nwarehouse = \"/from/file\"\n",
        )
        .expect("write");
        let env: HashMap<&str, &str> = [("FLYWHEEL_WAREHOUSE", "/from/env")].into();
        let flags = Overrides {
            config_file: Some(file.display().to_string()),
            listen: Some("127.0.0.1:2".into()),
            auth_token: Some("from-flag".into()),
            ..Overrides::default()
        };
        let c = Config::resolve(&flags, |k| env.get(k).map(|v| v.to_string())).expect("resolves");
        assert_eq!(c.listen, "127.0.0.1:2");
        assert_eq!(c.warehouse, "/from/env");
        assert_eq!(c.log, "info");
        assert_eq!(c.auth_token.as_deref(), Some("from-flag"));
    }

    #[test]
    fn half_configured_pairs_are_refused() {
        let env: HashMap<&str, &str> = [("FLYWHEEL_AUTH_USER", "ada")].into();
        let e = Config::resolve(&Overrides::default(), |k| env.get(k).map(|v| v.to_string()))
            .expect_err("no password");
        assert!(e.to_string().contains("auth_password"), "{e}");
        let env: HashMap<&str, &str> = [("FLYWHEEL_TLS_CERT", "c.pem")].into();
        assert!(
            Config::resolve(&Overrides::default(), |k| env.get(k).map(|v| v.to_string())).is_err()
        );
    }

    #[test]
    fn parquet_data_pages_default_to_v2_and_take_v1_from_the_environment() {
        assert_eq!(Config::default().data_pages().ok(), Some(DataPages::V2));
        let env: HashMap<&str, &str> = [("FLYWHEEL_PARQUET_DATA_PAGES", "v1")].into();
        let config = Config::resolve(&Overrides::default(), |k| env.get(k).map(|v| v.to_string()))
            .expect("resolves");
        assert_eq!(config.data_pages().ok(), Some(DataPages::V1));
        let config = Config::from_toml("parquet_data_pages = \"v7\"").expect("parses");
        let error = config.data_pages().expect_err("no such version");
        assert!(error.to_string().contains("parquet_data_pages"), "{error}");
        let env: HashMap<&str, &str> = [("FLYWHEEL_PARQUET_DATA_PAGES", "v7")].into();
        assert!(
            Config::resolve(&Overrides::default(), |k| env.get(k).map(|v| v.to_string())).is_err()
        );
    }

    #[test]
    fn retired_settings_still_load_and_are_named() {
        let config =
            Config::from_toml("download_cache_size = \"8GiB\"\nwarm_training_sets = false")
                .expect("older files load");
        assert_eq!(
            config.retired_settings(),
            ["download_cache_size", "warm_training_sets"]
        );
        assert!(Config::default().retired_settings().is_empty());
    }

    #[test]
    fn memory_limit_takes_units_and_refuses_nonsense() {
        let with = |v: &str| Config {
            memory_limit: Some(v.into()),
            ..Config::default()
        };
        assert_eq!(with("4GiB").memory_limit_bytes().ok(), Some(Some(4 << 30)));
        assert_eq!(
            with("512 MB").memory_limit_bytes().ok(),
            Some(Some(512 << 20))
        );
        assert_eq!(with("1000").memory_limit_bytes().ok(), Some(Some(1000)));
        let default = Config::default().memory_limit_bytes().ok().flatten();
        assert!(
            default.is_some_and(|b| b > 0),
            "half the machine's memory: {default:?}"
        );
        for bad in ["lots", "4 parsecs", "0", "GiB"] {
            let err = with(bad).check().expect_err(bad).to_string();
            assert!(err.contains("e.g. 4GiB"), "{err}");
        }
    }

    #[test]
    fn statement_limits_take_units_and_defaults() {
        let c = Config::default();
        let limits = c.limits(Some(Duration::from_secs(3600))).expect("defaults");
        assert_eq!(limits.statement_timeout, Some(Duration::from_secs(3600)));
        assert_eq!(limits.max_statement_bytes, 16 << 20);
        let with = |t: &str| Config {
            statement_timeout: Some(t.into()),
            ..Config::default()
        };
        let timeout = |t: &str| with(t).limits(None).map(|l| l.statement_timeout);
        assert_eq!(timeout("90s").ok(), Some(Some(Duration::from_secs(90))));
        assert_eq!(timeout("15m").ok(), Some(Some(Duration::from_secs(900))));
        assert_eq!(timeout("0").ok(), Some(None));
        for bad in ["soon", "5 parsecs", "-1s", ""] {
            let e = timeout(bad).expect_err(bad).to_string();
            assert!(e.contains("statement_timeout"), "{e}");
        }
        let env: HashMap<&str, &str> = [
            ("FLYWHEEL_MAX_EXPRESSION_DEPTH", "100"),
            ("FLYWHEEL_MAX_STATEMENT_SIZE", "1MiB"),
        ]
        .into();
        let c = Config::resolve(&Overrides::default(), |k| env.get(k).map(|v| v.to_string()))
            .expect("resolves");
        let limits = c.limits(None).expect("limits");
        assert_eq!(
            (limits.max_expression_depth, limits.max_statement_bytes),
            (100, 1 << 20)
        );
        let env: HashMap<&str, &str> = [("FLYWHEEL_MAX_EXPRESSION_DEPTH", "deep")].into();
        assert!(
            Config::resolve(&Overrides::default(), |k| env.get(k).map(|v| v.to_string())).is_err()
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = Config::from_toml("listne = \"x\"").expect_err("typo");
        assert!(e.to_string().contains("unknown field `listne`"), "{e}");
    }

    #[test]
    fn bad_listen_address_says_the_expected_form() {
        let c = Config {
            listen: "localhost".into(),
            ..Config::default()
        };
        assert!(
            c.listen_addr()
                .expect_err("bad")
                .to_string()
                .contains("HOST:PORT")
        );
    }
}
