//! Flywheel's SQL functions, registered into a session by [`register_all`].
//!
//! - [`bounded`]: DataFusion's built-ins whose output size the caller picks (`repeat`, `lpad`,
//!   `array_repeat`, `range`, ...), replaced by wrappers that refuse a call producing more than
//!   [`bounded::MAX_OUTPUT_BYTES`]: such values are allocated outside the memory pool that
//!   `memory_limit` bounds.
//!
//! - [`asof_marker`]: the marker that carries an `ASOF JOIN`'s match condition from the SQL text
//!   to the engine's analyzer rule.
//! - [`online`]: the `online(view [, key, ...])` table function, over any [`online::OnlineRows`]
//!   (the engine's online store).
//!
//! - [`last_k`]: `last_k(value, k)`, the `k` most recent values, newest first (also an
//!   aggregate feature of feature views).
//!
//! Feature-engineering functions land here as the issues that need them add them.

pub mod asof_marker;
pub mod bounded;
pub mod last_k;
pub mod online;

use std::sync::Arc;

use datafusion::logical_expr::{AggregateUDF, ScalarUDF};
use datafusion::prelude::SessionContext;

/// Registers every Flywheel function into `ctx` (replacing the built-ins it bounds).
pub fn register_all(ctx: &SessionContext) {
    for (name, sizing) in bounded::BOUNDED {
        let inner = ctx.state().scalar_functions().get(name).cloned();
        if let Some(inner) = inner {
            let udf = bounded::BoundedUdf::new(Arc::clone(&inner), sizing);
            ctx.register_udf(ScalarUDF::new_from_impl(udf));
        }
    }
    ctx.register_udaf(AggregateUDF::new_from_impl(last_k::LastK::default()));
}
