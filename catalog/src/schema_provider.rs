//! [`WarehouseSchemaProvider`]: the registry's tables as a DataFusion schema.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::error::Result as DFResult;
use datafusion::logical_expr::TableType;
use deltalake::DeltaTable;

use crate::bounded_pushdown::BoundedPushdownProvider;
use crate::objects::{KIND_FEATURE_VIEW, KIND_LABEL, KIND_TRAINING_SET};
use crate::registry::is_not_a_table;
use crate::snapshots;
use crate::time_travel::TravelTarget;
use crate::{Error, Registry, Result, TableEntry};

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

/// Loads `entry` at its latest version, or at `target`, as a table provider (whose scan is not
/// offered oversized filters: [`BoundedPushdownProvider`]).
pub(crate) async fn open_provider(
    entry: &TableEntry,
    target: Option<&TravelTarget>,
) -> Result<Arc<dyn TableProvider>> {
    let table = load_table(entry, target).await?;
    let provider = table.table_provider().await?;
    Ok(Arc::new(BoundedPushdownProvider::of_delta(provider, table)))
}

/// Loads the Delta table of `entry`, at its latest version or at `target`. Snapshots loaded
/// before are reused ([`crate::snapshots`]).
pub async fn load_table(entry: &TableEntry, target: Option<&TravelTarget>) -> Result<DeltaTable> {
    match target {
        None => load_latest(entry).await,
        Some(TravelTarget::Version(v)) => {
            if let Some(table) = snapshots::at_version(&entry.location, *v).await {
                return Ok(table);
            }
            let latest_table = load_latest(entry).await?;
            let latest = latest_table.version().unwrap_or_default();
            if *v > latest {
                return Err(Error::VersionNotFound {
                    name: entry.name.clone(),
                    version: *v,
                    latest,
                });
            }
            if *v == latest {
                return Ok(latest_table);
            }
            let mut table = latest_table;
            table.load_version(*v).await.map_err(|e| match e {
                deltalake::DeltaTableError::InvalidVersion(_) => Error::VersionNotFound {
                    name: entry.name.clone(),
                    version: *v,
                    latest,
                },
                other => Error::Delta(other),
            })?;
            snapshots::keep(&table).await;
            Ok(table)
        }
        Some(TravelTarget::Timestamp(ts)) => {
            let mut table = load_latest(entry).await?;
            let parsed = chrono::DateTime::parse_from_rfc3339(ts)
                .map_err(|e| Error::TimestampNotFound {
                    name: entry.name.clone(),
                    timestamp: ts.clone(),
                    reason: format!("not an RFC 3339 timestamp ({e})"),
                })?
                .with_timezone(&chrono::Utc);
            let not_found = |reason: String| Error::TimestampNotFound {
                name: entry.name.clone(),
                timestamp: ts.clone(),
                reason,
            };
            table
                .load_with_datetime(parsed)
                .await
                .map_err(|e| not_found(e.to_string()))?;
            // deltalake falls back to the first version when the timestamp precedes the table.
            let version = table.version().unwrap_or_default();
            let committed_ms = table.snapshot()?.version_timestamp(version);
            if let Some(ms) = committed_ms
                && ms > parsed.timestamp_millis()
            {
                let first = chrono::DateTime::from_timestamp_millis(ms)
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_else(|| ms.to_string());
                return Err(not_found(format!(
                    "its earliest readable version {version} was committed at {first}"
                )));
            }
            Ok(table)
        }
    }
}

/// `entry` at its latest version: a cached snapshot brought forward, or the table opened.
async fn load_latest(entry: &TableEntry) -> Result<DeltaTable> {
    if let Some(table) = snapshots::latest(&entry.location).await {
        return Ok(table);
    }
    let table = deltalake::open_table(entry.location.clone())
        .await
        .map_err(|e| {
            if is_not_a_table(&e) {
                Error::NotADeltaTable {
                    location: entry.location.to_string(),
                    reason: e.to_string(),
                }
            } else {
                Error::Delta(e)
            }
        })?;
    snapshots::keep(&table).await;
    Ok(table)
}
