//! Flywheel's Rust integration tests, in one binary (one link) with a module per area.
//!
//! Servers are real: bound on 127.0.0.1 port 0, over a warehouse in a temp dir, driven by the
//! arrow-flight Flight SQL client or by the `flywheel` binary itself.

mod asof;
mod cli;
mod common;
mod corrections;
mod flight_sql;
mod hardening;
mod incremental;
mod online;
mod persistence;
mod schedules;
mod serving;
mod windows;
