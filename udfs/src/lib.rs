//! Flywheel's SQL functions for feature engineering, registered into a session by [`register_all`].
//!
//! The set starts empty: DataFusion's built-in functions cover the foundation. Feature-engineering
//! functions land here as the issues that need them add them.

use datafusion::prelude::SessionContext;

/// Registers every Flywheel function into `ctx`.
pub fn register_all(_ctx: &SessionContext) {}
