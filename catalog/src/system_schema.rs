//! The `flywheel` schema: system tables over the registry (`entities`, `feature_views`, `labels`,
//! `training_sets`, `lineage`), for any SQL or BI client.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::datasource::MemTable;
use datafusion::error::Result as DFResult;

use crate::Registry;
use crate::objects::{
    KIND_FEATURE_VIEW, KIND_LABEL, entities_batch, keyed_batch, lineage_batch, training_sets_batch,
};

/// The name of the system schema.
pub const SYSTEM_SCHEMA: &str = "flywheel";

const TABLES: [&str; 5] = [
    "entities",
    "feature_views",
    "labels",
    "training_sets",
    "lineage",
];

/// The system tables; each read is a snapshot of the registry at that moment.
#[derive(Debug)]
pub struct SystemSchemaProvider {
    registry: Arc<Registry>,
}

impl SystemSchemaProvider {
    pub fn new(registry: Arc<Registry>) -> Self {
        Self { registry }
    }
}

#[async_trait]
impl SchemaProvider for SystemSchemaProvider {
    fn table_names(&self) -> Vec<String> {
        TABLES.iter().map(|t| t.to_string()).collect()
    }

    async fn table(&self, name: &str) -> DFResult<Option<Arc<dyn TableProvider>>> {
        let batch = match name {
            "entities" => entities_batch(&self.registry)?,
            "feature_views" => keyed_batch(&self.registry, KIND_FEATURE_VIEW)?,
            "labels" => keyed_batch(&self.registry, KIND_LABEL)?,
            "training_sets" => training_sets_batch(&self.registry)?,
            "lineage" => lineage_batch(&self.registry)?,
            _ => return Ok(None),
        };
        let table = MemTable::try_new(batch.schema(), vec![vec![batch]])?;
        Ok(Some(Arc::new(table)))
    }

    fn table_exist(&self, name: &str) -> bool {
        TABLES.contains(&name)
    }
}
