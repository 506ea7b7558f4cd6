//! The session settings of one connection: what clients `SET` on connect (`application_name`,
//! `DateStyle`, `TimeZone`, `extra_float_digits`, ...) and read back with `SHOW`. They are kept and
//! shown, and change nothing in how statements run: every connection shares the engine's session
//! (times are UTC, text is UTF-8).

use std::collections::BTreeMap;
use std::sync::Mutex;

/// The settings a new connection starts with, as `SHOW` names them (lowercase).
const DEFAULTS: &[(&str, &str)] = &[
    ("server_version", SERVER_VERSION),
    ("server_version_num", "160006"),
    ("server_encoding", "UTF8"),
    ("client_encoding", "UTF8"),
    ("datestyle", "ISO, MDY"),
    ("intervalstyle", "postgres"),
    ("timezone", "UTC"),
    ("standard_conforming_strings", "on"),
    ("integer_datetimes", "on"),
    ("transaction isolation level", "read committed"),
    ("transaction_isolation", "read committed"),
    ("transaction_read_only", "off"),
    ("default_transaction_read_only", "off"),
    ("search_path", "public"),
    ("application_name", ""),
    ("extra_float_digits", "1"),
    ("max_identifier_length", "63"),
    ("statement_timeout", "0"),
    ("lc_collate", "C"),
    ("lc_ctype", "C"),
    ("bytea_output", "hex"),
    ("is_superuser", "on"),
];

/// The PostgreSQL version Flywheel reports (clients check it to choose their catalog queries).
pub const SERVER_VERSION: &str = "16.6";

/// One connection's settings.
#[derive(Debug, Default)]
pub struct Settings {
    set: Mutex<BTreeMap<String, String>>,
}

impl Settings {
    /// Keeps `name = value` (`DEFAULT` forgets it).
    pub fn set(&self, name: &str, value: &str) {
        let Ok(mut set) = self.set.lock() else {
            return;
        };
        if value.eq_ignore_ascii_case("default") {
            set.remove(name);
        } else {
            set.insert(name.to_owned(), value.to_owned());
        }
    }

    /// The value of `name` (`None`: no such setting).
    pub fn get(&self, name: &str) -> Option<String> {
        let name = name.to_ascii_lowercase();
        if let Ok(set) = self.set.lock()
            && let Some(v) = set.get(&name)
        {
            return Some(v.clone());
        }
        DEFAULTS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| (*v).to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_values_shadow_the_defaults_until_reset() {
        let s = Settings::default();
        assert_eq!(s.get("TimeZone").as_deref(), Some("UTC"));
        s.set("timezone", "Europe/Paris");
        assert_eq!(s.get("timezone").as_deref(), Some("Europe/Paris"));
        s.set("timezone", "DEFAULT");
        assert_eq!(s.get("timezone").as_deref(), Some("UTC"));
        s.set("my.setting", "1");
        assert_eq!(s.get("my.setting").as_deref(), Some("1"));
        assert_eq!(s.get("no_such_setting"), None);
    }
}
