//! [`FlywheelCatalogProvider`]: the warehouse as a DataFusion catalog.

use std::sync::Arc;

use datafusion::catalog::{CatalogProvider, SchemaProvider};

use crate::{
    Registry, SYSTEM_SCHEMA, SystemSchemaProvider, TIME_TRAVEL_SCHEMA, TimeTravelSchemaProvider,
    WarehouseSchemaProvider,
};

/// The name of Flywheel's catalog.
pub const DEFAULT_CATALOG: &str = "flywheel";
/// The schema that holds the warehouse's tables.
pub const DEFAULT_SCHEMA: &str = "public";

/// Catalog `flywheel`: schema `public` (the tables), schema `flywheel` (system tables over the
/// registry) and the hidden time-travel schema.
#[derive(Debug)]
pub struct FlywheelCatalogProvider {
    public: Arc<WarehouseSchemaProvider>,
    system: Arc<SystemSchemaProvider>,
    time_travel: Arc<TimeTravelSchemaProvider>,
}

impl FlywheelCatalogProvider {
    pub fn new(registry: Arc<Registry>) -> Self {
        Self::with_system_tables(registry, Vec::new())
    }

    /// The catalog, with `extra` tables in the system schema.
    pub fn with_system_tables(
        registry: Arc<Registry>,
        extra: Vec<(String, crate::SystemTableFn)>,
    ) -> Self {
        Self {
            public: Arc::new(WarehouseSchemaProvider::new(Arc::clone(&registry))),
            system: Arc::new(SystemSchemaProvider::with_tables(
                Arc::clone(&registry),
                extra,
            )),
            time_travel: Arc::new(TimeTravelSchemaProvider::new(registry)),
        }
    }
}

impl CatalogProvider for FlywheelCatalogProvider {
    fn schema_names(&self) -> Vec<String> {
        vec![DEFAULT_SCHEMA.to_string(), SYSTEM_SCHEMA.to_string()]
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        match name {
            DEFAULT_SCHEMA => Some(Arc::clone(&self.public) as _),
            SYSTEM_SCHEMA => Some(Arc::clone(&self.system) as _),
            TIME_TRAVEL_SCHEMA => Some(Arc::clone(&self.time_travel) as _),
            _ => None,
        }
    }
}
