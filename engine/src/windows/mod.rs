//! Aggregate features: `sum(amount) OVER (RANGE INTERVAL '7 days' PRECEDING) AS spend_7d` in a
//! feature view, evaluated when the view is read, over the key's events with time in
//! `(t - 7 days, t]`: at each label's time in a training set, at the lookup's arrival time
//! online, at a given time in `window_features(...)`.
//!
//! - [`spec`]: which select items are aggregate features, and the query of their inputs that the
//!   view's table (its event log) is built from;
//! - [`events`]: the events grouped by key and sorted by time once, and the sweep that evaluates
//!   every aggregate at many probe times (prefix sums, monotonic deques, sliding multisets);
//! - [`node`] / [`planner`] / [`exec`]: the logical node a training set plans with, and its
//!   physical operator;
//! - [`adhoc`]: the `window_features(view, time [, key ...])` table function.
//!
//! The online store keeps each key's events of the longest window and evaluates them with the
//! same [`Events`] at each lookup (`online::snapshot`), so online and offline values agree.

pub mod adhoc;
mod events;
mod exec;
mod node;
mod planner;
mod spec;

pub use events::{Events, time_literal, times_us};
pub use exec::{Probes, WindowAggExec};
pub use node::WindowAggNode;
pub use planner::WindowAggPlanner;
pub use spec::{Aggregate, ColumnKind, Func, MAX_LAST_K, Split};

use flywheel_catalog::objects::FeatureViewDefinition;

use crate::{Engine, Result};

impl Engine {
    /// Feature view `name`'s query split into its aggregate features and the query of their
    /// inputs ([`spec::split`]); a view without them comes back with no aggregates.
    pub(crate) fn split_view(&self, name: &str, def: &FeatureViewDefinition) -> Result<Split> {
        let keys = self.entity_keys(&def.entity)?;
        split_with_keys(self, name, def, &keys)
    }
}

/// [`Engine::split_view`] with the entity's keys given.
pub(crate) fn split_with_keys(
    engine: &Engine,
    name: &str,
    def: &FeatureViewDefinition,
    keys: &[String],
) -> Result<Split> {
    spec::split(name, &def.query, keys, &def.event_time, &|text| {
        crate::plans::interval_us(engine, text)
    })
}
