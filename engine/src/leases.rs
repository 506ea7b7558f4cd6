//! Refresh leases: which server runs which scheduled refresh, for how long.
//!
//! The leases are one small Delta table of the warehouse (`_flywheel/refresh_leases/`), one row per
//! scheduled object, rewritten whole by each change (an overwrite: the table keeps one live file,
//! so reading it stays cheap however many refreshes ran; the log is checkpointed by delta-rs). A
//! change is a compare-and-swap: it is committed at the version after the one read, with no retry,
//! so of two servers changing the table at once one commit wins and the other re-reads and checks
//! again. They are kept out of the registry, whose log every statement re-reads when it moved: a
//! lease changes twice per scheduled run.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use chrono::{DateTime, Utc};
use datafusion::prelude::SessionContext;
use deltalake::DeltaTable;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::protocol::SaveMode;
use flywheel_catalog::{Registry, Warehouse};

use crate::{Error, Result};

/// A lease on refreshing one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Lease {
    /// The server (scheduler) holding or last holding it.
    pub holder: String,
    /// The tick it was taken for (an `on change` run: the time it was taken).
    pub tick_us: i64,
    /// When it lapses unless renewed.
    pub expires_us: i64,
    /// The holder is done with it.
    pub released: bool,
    /// The run it was taken for failed.
    pub failed: bool,
}

/// Every lease, by object, and the table version they were read at (`None`: no table yet).
pub(crate) type Leases = (Option<u64>, BTreeMap<String, Lease>);

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("object", DataType::Utf8, false),
        Field::new("holder", DataType::Utf8, false),
        Field::new("tick_us", DataType::Int64, false),
        Field::new("expires_us", DataType::Int64, false),
        Field::new("released", DataType::Boolean, false),
        Field::new("failed", DataType::Boolean, false),
    ]))
}

async fn open(registry: &Registry) -> Result<DeltaTable> {
    let location = registry.warehouse().refresh_leases_location()?;
    Warehouse::ensure_dir(&location)?;
    Ok(DeltaTable::try_from_url(location).await?)
}

/// Reads every lease.
pub(crate) async fn read(registry: &Registry) -> Result<Leases> {
    let mut table = open(registry).await?;
    match table.load().await {
        Ok(()) => {}
        Err(deltalake::DeltaTableError::NotATable(_)) => return Ok((None, BTreeMap::new())),
        Err(e) => return Err(e.into()),
    }
    let version = table.version();
    let batches = SessionContext::new()
        .read_table(table.table_provider().await?)?
        .collect()
        .await?;
    let mut out = BTreeMap::new();
    for batch in batches {
        let column = |name: &str, to: &DataType| -> Result<ArrayRef> {
            let c = batch.column_by_name(name).ok_or_else(|| {
                Error::InvalidInput(format!("the refresh leases table has no column `{name}`"))
            })?;
            Ok(arrow::compute::cast(c, to)?)
        };
        let (object, holder) = (
            column("object", &DataType::Utf8)?,
            column("holder", &DataType::Utf8)?,
        );
        let (tick, expires) = (
            column("tick_us", &DataType::Int64)?,
            column("expires_us", &DataType::Int64)?,
        );
        let (released, failed) = (
            column("released", &DataType::Boolean)?,
            column("failed", &DataType::Boolean)?,
        );
        let text = |a: &ArrayRef| a.as_any().downcast_ref::<StringArray>().cloned();
        let int = |a: &ArrayRef| a.as_any().downcast_ref::<Int64Array>().cloned();
        let flag = |a: &ArrayRef| a.as_any().downcast_ref::<BooleanArray>().cloned();
        let (Some(object), Some(holder), Some(tick), Some(expires), Some(released), Some(failed)) = (
            text(&object),
            text(&holder),
            int(&tick),
            int(&expires),
            flag(&released),
            flag(&failed),
        ) else {
            return Err(Error::InvalidInput(
                "the refresh leases table has unexpected column types".into(),
            ));
        };
        for i in 0..batch.num_rows() {
            if object.is_null(i) {
                continue;
            }
            out.insert(
                object.value(i).to_string(),
                Lease {
                    holder: holder.value(i).to_string(),
                    tick_us: tick.value(i),
                    expires_us: expires.value(i),
                    released: released.value(i),
                    failed: failed.value(i),
                },
            );
        }
    }
    Ok((version, out))
}

/// Writes `leases` as the whole table, only if it is still at `read_at` (the version they were
/// read at). `Ok(false)`: another server changed the table first; nothing was written.
pub(crate) async fn swap(
    registry: &Registry,
    read_at: Option<u64>,
    leases: &BTreeMap<String, Lease>,
) -> Result<bool> {
    let mut table = open(registry).await?;
    if let Some(v) = read_at {
        table.load_version(v).await?;
    }
    let rows: Vec<(&String, &Lease)> = leases.iter().collect();
    let batch = RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(
                rows.iter()
                    .map(|(o, _)| Some(o.as_str()))
                    .collect::<StringArray>(),
            ),
            Arc::new(
                rows.iter()
                    .map(|(_, l)| Some(l.holder.as_str()))
                    .collect::<StringArray>(),
            ),
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|(_, l)| l.tick_us),
            )),
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|(_, l)| l.expires_us),
            )),
            Arc::new(
                rows.iter()
                    .map(|(_, l)| Some(l.released))
                    .collect::<BooleanArray>(),
            ),
            Arc::new(
                rows.iter()
                    .map(|(_, l)| Some(l.failed))
                    .collect::<BooleanArray>(),
            ),
        ],
    )?;
    let mode = if read_at.is_some() {
        SaveMode::Overwrite
    } else {
        SaveMode::ErrorIfExists
    };
    let written = table
        .write(vec![batch])
        .with_save_mode(mode)
        .with_commit_properties(CommitProperties::default().with_max_retries(0))
        .await;
    match written {
        Ok(_) => Ok(true),
        Err(e) if flywheel_catalog::is_commit_race(&e) => Ok(false),
        // Two servers creating the table at once: the other one's table is there now.
        Err(e) if read_at.is_none() && e.to_string().contains("already exists") => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// When the latest scheduled run of `name` was for (its lease's tick), if it ran.
pub(crate) fn last_tick(leases: &Leases, name: &str) -> Option<DateTime<Utc>> {
    leases
        .1
        .get(name)
        .and_then(|l| DateTime::from_timestamp_micros(l.tick_us))
}
