//! Flywheel: a SQL-native feature platform over Delta Lake and Arrow Flight.
//!
//! - [`asof`]: the point-in-time `ASOF JOIN` (AST rewrite, logical node, analyzer rule, operator).
//! - [`engine`]: one DataFusion session over a warehouse of Delta tables; parses with
//!   `flywheel-sql`, executes DDL/DML as Delta commits, resolves time travel.
//! - [`server`]: the Arrow Flight SQL service over the engine.
//! - [`cli`]: the `flywheel sql` shell and the `flywheel serve` command.
//! - [`config`]: settings from defaults, a TOML file, the environment and flags.

pub mod asof;
pub mod cli;
pub mod config;
pub mod engine;
pub mod error;
pub mod online;
pub mod server;
pub mod untrusted;

pub use config::Config;
pub use engine::{Engine, EngineOptions, Output};
pub use error::{Error, Result};
