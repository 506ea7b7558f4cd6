//! The `flywheel` binary's library: the command line and the configuration, over the crates that
//! are the architecture.
//!
//! - [`engine`] (`flywheel-engine`): one DataFusion session over a warehouse of Delta tables, the
//!   Flywheel objects, the point-in-time `ASOF JOIN` ([`asof`]), the online store ([`online`]),
//!   refreshes and the scheduler. No network protocol.
//! - [`server`] (`flywheel-flight`): the Arrow Flight SQL front door over the engine.
//! - [`cli`]: the `flywheel sql` shell and the `flywheel serve`/`refresh` commands.
//! - [`config`]: settings from defaults, a TOML file, the environment and flags.

pub mod cli;
pub mod config;

pub use config::Config;
pub use flywheel_engine as engine;
pub use flywheel_engine::{Engine, EngineOptions, Error, Output, Result, asof, error, online};
pub use flywheel_flight as server;
