//! [`FlywheelCatalogProvider`]: the warehouse as a DataFusion catalog.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use datafusion::catalog::{CatalogProvider, SchemaProvider};
use datafusion::error::{DataFusionError, Result as DFResult};

use crate::{
    Registry, SYSTEM_SCHEMA, SystemSchemaProvider, TIME_TRAVEL_SCHEMA, TimeTravelSchemaProvider,
    WarehouseSchemaProvider,
};

/// The name of Flywheel's catalog.
pub const DEFAULT_CATALOG: &str = "flywheel";
/// The schema that holds the warehouse's tables.
pub const DEFAULT_SCHEMA: &str = "public";

/// Catalog `flywheel`: schema `public` (the tables), schema `flywheel` (system tables over the
/// registry) and the hidden time-travel schema; front doors may add hidden schemas of their own
/// (the Postgres one adds `pg_catalog`), which live in this process only.
#[derive(Debug)]
pub struct FlywheelCatalogProvider {
    public: Arc<WarehouseSchemaProvider>,
    system: Arc<SystemSchemaProvider>,
    time_travel: Arc<TimeTravelSchemaProvider>,
    added: RwLock<BTreeMap<String, Arc<dyn SchemaProvider>>>,
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
            added: RwLock::default(),
        }
    }
}

impl CatalogProvider for FlywheelCatalogProvider {
    /// The warehouse's schemas. Schemas front doors added are not listed (`SHOW TABLES` and
    /// `information_schema` stay the warehouse's, whichever door is open), but resolve by name.
    fn schema_names(&self) -> Vec<String> {
        vec![DEFAULT_SCHEMA.to_string(), SYSTEM_SCHEMA.to_string()]
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        match name {
            DEFAULT_SCHEMA => Some(Arc::clone(&self.public) as _),
            SYSTEM_SCHEMA => Some(Arc::clone(&self.system) as _),
            TIME_TRAVEL_SCHEMA => Some(Arc::clone(&self.time_travel) as _),
            _ => self.added.read().ok()?.get(name).cloned(),
        }
    }

    /// Adds (or replaces) a schema of a front door's; the warehouse's own schemas cannot be.
    fn register_schema(
        &self,
        name: &str,
        schema: Arc<dyn SchemaProvider>,
    ) -> DFResult<Option<Arc<dyn SchemaProvider>>> {
        if [DEFAULT_SCHEMA, SYSTEM_SCHEMA, TIME_TRAVEL_SCHEMA].contains(&name) {
            return Err(DataFusionError::Plan(format!(
                "schema `{name}` is the warehouse's own; it cannot be replaced"
            )));
        }
        let mut added = self
            .added
            .write()
            .map_err(|_| DataFusionError::Internal("the schema table is poisoned".into()))?;
        Ok(added.insert(name.to_string(), schema))
    }
}
