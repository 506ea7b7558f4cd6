//! Opening a registered table's Delta log, at its latest version or at a [`TravelTarget`], as a
//! `DeltaTable` ([`load_table`]) or as a DataFusion table provider ([`open_provider`]). The
//! warehouse schema and the hidden time-travel schema both open tables here. A table of plain
//! files (Parquet, CSV, JSON) opens as DataFusion's listing table, its schema inferred from the
//! files; it has no Delta log, so [`load_table`] refuses it.

use std::sync::Arc;

use datafusion::catalog::TableProvider;
use deltalake::DeltaTable;

use crate::bounded_pushdown::BoundedPushdownProvider;
use crate::registry::is_not_a_table;
use crate::snapshots;
use crate::{Error, FileFormat, Result, TableEntry, TableKind};

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
    if let TableKind::Files(format) = entry.kind {
        if target.is_some() {
            return Err(not_delta(entry, format));
        }
        return open_files(entry, format).await;
    }
    let table = load_table(entry, target).await?;
    let provider = table.table_provider().await?;
    Ok(Arc::new(BoundedPushdownProvider::of_delta(provider, table)))
}

/// The files of a [`TableKind::Files`] table as a listing table. Its schema is inferred from the
/// files each time it is opened, so files added since are read.
pub async fn open_files(entry: &TableEntry, format: FileFormat) -> Result<Arc<dyn TableProvider>> {
    use datafusion::datasource::file_format::csv::CsvFormat;
    use datafusion::datasource::file_format::json::JsonFormat;
    use datafusion::datasource::file_format::parquet::ParquetFormat;
    use datafusion::datasource::listing::{
        ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
    };
    let files = |e: datafusion::error::DataFusionError| Error::Files {
        name: entry.name.clone(),
        location: entry.location.to_string(),
        message: e.strip_backtrace(),
    };
    let url = ListingTableUrl::parse(entry.location.as_str()).map_err(files)?;
    let (file_format, extension): (Arc<dyn datafusion::datasource::file_format::FileFormat>, _) =
        match format {
            FileFormat::Parquet => (Arc::new(ParquetFormat::default()), ".parquet"),
            FileFormat::Csv {
                has_header,
                delimiter,
            } => (
                Arc::new(
                    CsvFormat::default()
                        .with_has_header(has_header)
                        .with_delimiter(delimiter),
                ),
                ".csv",
            ),
            FileFormat::Json => (Arc::new(JsonFormat::default()), ".json"),
        };
    // A folder is read for the files of the format's extension; a file named is read whatever
    // its name.
    let extension = if url.is_collection() { extension } else { "" };
    let options = ListingOptions::new(file_format).with_file_extension(extension);
    // Inference needs the object store and the configuration only, not the functions a full
    // session registers.
    let state = datafusion::execution::SessionStateBuilder::new().build();
    let schema = options.infer_schema(&state, &url).await.map_err(files)?;
    let config = ListingTableConfig::new(url)
        .with_listing_options(options)
        .with_schema(schema);
    Ok(Arc::new(ListingTable::try_new(config).map_err(files)?))
}

/// The refusal of Delta operations (versions, appends, lineage) on a table of plain files.
fn not_delta(entry: &TableEntry, format: FileFormat) -> Error {
    Error::FilesNotDelta {
        name: entry.name.clone(),
        format: format.sql(),
    }
}

/// Loads the Delta table of `entry`, at its latest version or at `target`. Snapshots loaded
/// before are reused ([`crate::snapshots`]).
pub async fn load_table(entry: &TableEntry, target: Option<&TravelTarget>) -> Result<DeltaTable> {
    if let TableKind::Files(format) = entry.kind {
        return Err(not_delta(entry, format));
    }
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
