//! The `flywheel` schema: system tables over the registry (`tables`, `dependencies`, `entities`,
//! `feature_views`, `labels`, `training_sets`, `lineage`), for any SQL or BI client, plus tables
//! computed outside this crate ([`SystemTableFn`]: `freshness`, `refresh_history`,
//! `online_freshness`).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::datasource::MemTable;
use datafusion::error::Result as DFResult;

use crate::Registry;
use crate::objects::{
    KIND_FEATURE_VIEW, KIND_LABEL, entities_batch, keyed_batch, lineage_batch, tables_batch,
    training_sets_batch,
};

/// The name of the system schema.
pub const SYSTEM_SCHEMA: &str = "flywheel";

const TABLES: [&str; 7] = [
    "tables",
    "dependencies",
    "entities",
    "feature_views",
    "labels",
    "training_sets",
    "lineage",
];

/// A system table computed by code outside this crate (the online store's freshness, the refresh
/// history, ...): each read calls it for a fresh table.
pub type SystemTableFn = Arc<
    dyn Fn() -> futures::future::BoxFuture<'static, DFResult<Arc<dyn TableProvider>>>
        + Send
        + Sync
        + 'static,
>;

/// A [`SystemTableFn`] whose table is one batch computed on each read.
pub fn batch_table(
    f: impl Fn() -> DFResult<arrow::array::RecordBatch> + Send + Sync + 'static,
) -> SystemTableFn {
    let f = Arc::new(f);
    Arc::new(move || {
        let f = Arc::clone(&f);
        Box::pin(async move { mem_table(f()?) })
    })
}

fn mem_table(batch: arrow::array::RecordBatch) -> DFResult<Arc<dyn TableProvider>> {
    Ok(Arc::new(MemTable::try_new(
        batch.schema(),
        vec![vec![batch]],
    )?))
}

/// The system tables; each read is a snapshot of the registry at that moment.
pub struct SystemSchemaProvider {
    registry: Arc<Registry>,
    extra: Vec<(String, SystemTableFn)>,
}

impl std::fmt::Debug for SystemSchemaProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SystemSchemaProvider")
            .field(
                "extra",
                &self.extra.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl SystemSchemaProvider {
    pub fn new(registry: Arc<Registry>) -> Self {
        Self::with_tables(registry, Vec::new())
    }

    /// The registry's system tables plus `extra` ones.
    pub fn with_tables(registry: Arc<Registry>, extra: Vec<(String, SystemTableFn)>) -> Self {
        Self { registry, extra }
    }
}

#[async_trait]
impl SchemaProvider for SystemSchemaProvider {
    fn table_names(&self) -> Vec<String> {
        TABLES
            .iter()
            .map(|t| t.to_string())
            .chain(self.extra.iter().map(|(n, _)| n.clone()))
            .collect()
    }

    async fn table(&self, name: &str) -> DFResult<Option<Arc<dyn TableProvider>>> {
        let batch = match name {
            "tables" => tables_batch(&self.registry)?,
            "dependencies" => crate::lineage::dependencies_batch(&self.registry)?,
            "entities" => entities_batch(&self.registry)?,
            "feature_views" => keyed_batch(&self.registry, KIND_FEATURE_VIEW)?,
            "labels" => keyed_batch(&self.registry, KIND_LABEL)?,
            "training_sets" => training_sets_batch(&self.registry)?,
            "lineage" => lineage_batch(&self.registry)?,
            other => match self.extra.iter().find(|(n, _)| n == other) {
                Some((_, f)) => return f().await.map(Some),
                None => return Ok(None),
            },
        };
        mem_table(batch).map(Some)
    }

    fn table_exist(&self, name: &str) -> bool {
        TABLES.contains(&name) || self.extra.iter().any(|(n, _)| n == name)
    }
}
