//! [`Config`]: Flywheel's settings.
//!
//! Precedence, lowest first: built-in defaults, a TOML file (`--config PATH` or `FLYWHEEL_CONFIG`),
//! environment variables (`FLYWHEEL_LISTEN`, `FLYWHEEL_WAREHOUSE`, `FLYWHEEL_LOG`), command-line flags.

use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;

use crate::{Error, Result};

/// Settings shared by `flywheel serve` and `flywheel sql`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the Flight SQL server listens on.
    pub listen: String,
    /// Warehouse root: a local folder or an object-store URL.
    pub warehouse: String,
    /// Log filter in `tracing`'s env-filter syntax (`info`, `flywheel=debug`, ...).
    pub log: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:50051".into(),
            warehouse: "./warehouse".into(),
            log: "info".into(),
        }
    }
}

/// Values given on the command line; `None` keeps the value from the layers below.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config_file: Option<String>,
    pub listen: Option<String>,
    pub warehouse: Option<String>,
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
        Ok(config)
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
            warehouse: None,
        };
        let c = Config::resolve(&flags, |k| env.get(k).map(|v| v.to_string())).expect("resolves");
        assert_eq!(c.listen, "127.0.0.1:2");
        assert_eq!(c.warehouse, "/from/env");
        assert_eq!(c.log, "info");
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
