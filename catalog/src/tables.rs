//! Opening a registered table's Delta log, at its latest version or at a [`TravelTarget`], as a
//! `DeltaTable` ([`load_table`]) or as a DataFusion table provider ([`open_provider`]). The
//! warehouse schema and the hidden time-travel schema both open tables here.

use std::sync::Arc;

use datafusion::catalog::TableProvider;
use deltalake::DeltaTable;

use crate::bounded_pushdown::BoundedPushdownProvider;
use crate::registry::is_not_a_table;
use crate::snapshots;
use crate::{Error, Result, TableEntry};

/// Which past state of a table to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TravelTarget {
    /// A Delta table version.
    Version(u64),
    /// The latest version committed at or before an RFC 3339 timestamp.
    Timestamp(String),
}

impl TravelTarget {
    /// The name under which [`TimeTravelSchemaProvider`] resolves `table` at this target.
    pub fn encode(&self, table: &str) -> String {
        match self {
            TravelTarget::Version(v) => format!("{table}@v{v}"),
            TravelTarget::Timestamp(ts) => format!("{table}@ts{ts}"),
        }
    }

    /// The inverse of [`TravelTarget::encode`].
    pub fn decode(name: &str) -> Option<(&str, TravelTarget)> {
        let (table, rest) = name.rsplit_once('@')?;
        if let Some(ts) = rest.strip_prefix("ts") {
            return Some((table, TravelTarget::Timestamp(ts.to_string())));
        }
        let v = rest.strip_prefix('v')?.parse().ok()?;
        Some((table, TravelTarget::Version(v)))
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
