//! [`WarehouseSchemaProvider`]: the registry's tables as a DataFusion schema.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::error::Result as DFResult;
use datafusion::logical_expr::TableType;

use crate::Registry;
use crate::objects::{KIND_FEATURE_VIEW, KIND_LABEL, KIND_TRAINING_SET};
use crate::tables::open_provider;

/// Resolves table names to Delta table providers at their latest version.
#[derive(Debug)]
pub struct WarehouseSchemaProvider {
    registry: Arc<Registry>,
}

impl WarehouseSchemaProvider {
    pub fn new(registry: Arc<Registry>) -> Self {
        Self { registry }
    }
}

#[async_trait]
impl SchemaProvider for WarehouseSchemaProvider {
    fn table_names(&self) -> Vec<String> {
        self.registry.table_names()
    }

    async fn table(&self, name: &str) -> DFResult<Option<Arc<dyn TableProvider>>> {
        match self.registry.table(name) {
            None => Ok(None),
            Some(entry) => Ok(Some(open_provider(&entry, None).await?)),
        }
    }

    fn table_exist(&self, name: &str) -> bool {
        self.registry.table(name).is_some()
    }

    /// What `information_schema.tables` says a table is, without opening it: `VIEW` for the table
    /// of a feature view, label or training set (each is a materialized view of its definition;
    /// `flywheel.tables` and Flight SQL's table types say which), `BASE TABLE` otherwise.
    async fn table_type(&self, name: &str) -> DFResult<Option<TableType>> {
        if self.registry.table(name).is_none() {
            return Ok(None);
        }
        let is_object = [KIND_FEATURE_VIEW, KIND_LABEL, KIND_TRAINING_SET]
            .iter()
            .any(|kind| self.registry.object(kind, name).is_some());
        Ok(Some(if is_object {
            TableType::View
        } else {
            TableType::Base
        }))
    }
}
