//! Flywheel's SQL front end.
//!
//! SQL text enters through [`parse_sql`], which tokenizes it with [`FlywheelDialect`] and returns typed
//! [`FlywheelStatement`]s. Statements that DataFusion understands are parsed by DataFusion's own
//! parser (`DFParser`) and wrapped unchanged; Flywheel's statements (entities, feature views, ...) are
//! recognized here by peeking at the leading tokens. Every statement prints back as SQL that re-parses
//! to an equal statement.

pub mod ast;
mod ddl_parser;
mod dialect;
mod error;
mod parser;

pub use dialect::FlywheelDialect;
pub use error::{Error, Result};
pub use parser::{FlywheelParser, FlywheelStatement, parse_sql};

/// Re-exported so that downstream crates name the exact sqlparser version this crate parses with.
pub use sqlparser;
