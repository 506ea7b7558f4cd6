//! Time travel: `t VERSION AS OF n` and `t TIMESTAMP AS OF '...'` as table references.
//!
//! DataFusion's planner ignores the version of a table reference, so the engine rewrites each
//! versioned reference into a name in the hidden schema [`TIME_TRAVEL_SCHEMA`] that carries the
//! target: `t@v3` or `t@ts2026-11-01T00:00:00Z`. [`TimeTravelSchemaProvider`] decodes such names and
//! loads the table at that version. Nothing is registered per query, so concurrent queries share it.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::error::Result as DFResult;

use crate::tables::{TravelTarget, open_provider};
use crate::{Error, Registry};

/// The hidden schema that answers encoded time-travel names.
pub const TIME_TRAVEL_SCHEMA: &str = "__flywheel_time_travel";

/// Resolves encoded time-travel names; lists nothing.
#[derive(Debug)]
pub struct TimeTravelSchemaProvider {
    registry: Arc<Registry>,
}

impl TimeTravelSchemaProvider {
    pub fn new(registry: Arc<Registry>) -> Self {
        Self { registry }
    }
}

#[async_trait]
impl SchemaProvider for TimeTravelSchemaProvider {
    fn table_names(&self) -> Vec<String> {
        Vec::new()
    }

    async fn table(&self, name: &str) -> DFResult<Option<Arc<dyn TableProvider>>> {
        let Some((table, target)) = TravelTarget::decode(name) else {
            return Ok(None);
        };
        let entry = self
            .registry
            .table(table)
            .ok_or_else(|| Error::TableNotFound {
                name: table.to_string(),
            })?;
        Ok(Some(open_provider(&entry, Some(&target)).await?))
    }

    fn table_exist(&self, name: &str) -> bool {
        TravelTarget::decode(name).is_some_and(|(t, _)| self.registry.table(t).is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode() {
        for t in [
            TravelTarget::Version(3),
            TravelTarget::Timestamp("2026-11-01T00:00:00Z".into()),
        ] {
            let name = t.encode("my@table");
            assert_eq!(TravelTarget::decode(&name), Some(("my@table", t)));
        }
        assert_eq!(TravelTarget::decode("plain"), None);
    }
}
