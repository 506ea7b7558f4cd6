//! `flywheel.refresh_history`: one row per refresh of a feature view, label or training set,
//! whoever asked for it (a statement, the CLI, a schedule, an input's change, a refresh of an
//! object downstream).
//!
//! The history is a Delta table of its own in the warehouse (`_flywheel/refresh_history/`), so
//! every server on the warehouse and any Delta reader sees it, and it outlives the process. A row
//! is appended after the refresh it describes ends (done or failed); failing to append one is
//! logged and never fails the refresh (the refreshed data is what matters).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::TableProvider;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use deltalake::DeltaTable;
use deltalake::protocol::SaveMode;
use flywheel_catalog::{Registry, SystemTableFn};

use crate::{Error, Result};

/// Who asked for a refresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// A `REFRESH` statement naming the object.
    Manual,
    /// `flywheel refresh` naming it (or `--stale` / `--all`).
    Cli,
    /// Its time schedule (`every ...`, `cron: ...`) came due: the tick it ran for (UTC
    /// microseconds).
    Schedule { tick_us: i64 },
    /// Its schedule is `on change` and an input committed.
    OnChange,
    /// A refresh of an object downstream of it, which refreshes stale inputs first.
    Upstream,
}

impl Trigger {
    /// How the history says it.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Manual => "manual",
            Trigger::Cli => "cli",
            Trigger::Schedule { .. } => "schedule",
            Trigger::OnChange => "on change",
            Trigger::Upstream => "upstream",
        }
    }
}

/// How a refresh computed its new version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The object's query over its inputs' whole current versions.
    Full,
    /// The object's query over the rows its inputs gained since its last build, appended.
    Incremental,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Full => "full",
            Mode::Incremental => "incremental",
        }
    }
}

/// One refresh of one object, as the history records it.
#[derive(Debug, Clone, PartialEq)]
pub struct RefreshRecord {
    pub object: String,
    /// `feature view`, `label` or `training set`.
    pub kind: String,
    pub trigger: String,
    /// The tick a scheduled refresh ran for.
    pub scheduled_for_us: Option<i64>,
    pub started_at_us: i64,
    pub finished_at_us: i64,
    /// `full` or `incremental` (what ran, or what was to run when it failed).
    pub mode: String,
    /// Why that mode.
    pub why: Option<String>,
    /// The input versions read: input name -> Delta version.
    pub inputs: BTreeMap<String, u64>,
    pub rows_read: Option<u64>,
    pub rows_written: Option<u64>,
    /// The Delta version written (none when it failed).
    pub version: Option<u64>,
    /// `ok` or `failed`.
    pub status: String,
    pub error: Option<String>,
}

/// The history's columns.
pub fn schema() -> SchemaRef {
    let ts = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("object", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("trigger", DataType::Utf8, false),
        Field::new("scheduled_for", ts(), true),
        Field::new("started_at", ts(), false),
        Field::new("finished_at", ts(), false),
        Field::new("mode", DataType::Utf8, false),
        Field::new("why", DataType::Utf8, true),
        Field::new("input_versions", DataType::Utf8, false),
        Field::new("rows_read", DataType::Int64, true),
        Field::new("rows_written", DataType::Int64, true),
        Field::new("result_version", DataType::Int64, true),
        Field::new("status", DataType::Utf8, false),
        Field::new("error", DataType::Utf8, true),
    ]))
}

/// `a@3, b@7`, as `built_from` and the history write input versions.
pub(crate) fn versions_text(inputs: &BTreeMap<String, u64>) -> String {
    inputs
        .iter()
        .map(|(k, v)| format!("{k}@{v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The inverse of [`versions_text`] (names holding `@` keep all but the last one).
fn parse_versions(text: &str) -> BTreeMap<String, u64> {
    text.split(", ")
        .filter_map(|item| {
            let (name, version) = item.rsplit_once('@')?;
            Some((name.to_string(), version.parse().ok()?))
        })
        .collect()
}

fn to_batch(records: &[RefreshRecord]) -> Result<RecordBatch> {
    let text = |f: &dyn Fn(&RefreshRecord) -> Option<String>| -> ArrayRef {
        Arc::new(records.iter().map(f).collect::<StringArray>())
    };
    let int = |f: &dyn Fn(&RefreshRecord) -> Option<u64>| -> ArrayRef {
        Arc::new(
            records
                .iter()
                .map(|r| f(r).map(|v| i64::try_from(v).unwrap_or(i64::MAX)))
                .collect::<Int64Array>(),
        )
    };
    let time = |f: &dyn Fn(&RefreshRecord) -> Option<i64>| -> ArrayRef {
        Arc::new(
            TimestampMicrosecondArray::from(records.iter().map(f).collect::<Vec<_>>())
                .with_timezone("UTC"),
        )
    };
    Ok(RecordBatch::try_new(
        schema(),
        vec![
            text(&|r| Some(r.object.clone())),
            text(&|r| Some(r.kind.clone())),
            text(&|r| Some(r.trigger.clone())),
            time(&|r| r.scheduled_for_us),
            time(&|r| Some(r.started_at_us)),
            time(&|r| Some(r.finished_at_us)),
            text(&|r| Some(r.mode.clone())),
            text(&|r| r.why.clone()),
            text(&|r| Some(versions_text(&r.inputs))),
            int(&|r| r.rows_read),
            int(&|r| r.rows_written),
            int(&|r| r.version),
            text(&|r| Some(r.status.clone())),
            text(&|r| r.error.clone()),
        ],
    )?)
}

/// The history table, if any refresh was recorded yet.
async fn open(registry: &Registry) -> Result<Option<DeltaTable>> {
    let location = registry.warehouse().refresh_history_location()?;
    flywheel_catalog::Warehouse::ensure_dir(&location)?;
    let mut table = DeltaTable::try_from_url(location).await?;
    match table.load().await {
        Ok(()) => Ok(Some(table)),
        Err(deltalake::DeltaTableError::NotATable(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Appends `record` to the history (creating the table with the first one).
pub(crate) async fn append(registry: &Registry, record: &RefreshRecord) -> Result<()> {
    let location = registry.warehouse().refresh_history_location()?;
    flywheel_catalog::Warehouse::ensure_dir(&location)?;
    let batch = to_batch(std::slice::from_ref(record))?;
    // Two servers creating the table at once: one creates it, the other appends on its next try.
    let mut last = None;
    for _ in 0..3 {
        let mut table = DeltaTable::try_from_url(location.clone()).await?;
        let table = match table.load().await {
            Ok(()) | Err(deltalake::DeltaTableError::NotATable(_)) => table,
            Err(e) => return Err(e.into()),
        };
        match table
            .write(vec![batch.clone()])
            .with_save_mode(SaveMode::Append)
            .await
        {
            Ok(written) => {
                compact_now_and_then(written).await;
                return Ok(());
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.map_or_else(
        || Error::Conflict("the refresh history is busy".into()),
        Error::from,
    ))
}

/// Every this many versions the history's small files (one per refresh) are compacted, so reading
/// it stays cheap with schedules that refresh every few seconds.
const COMPACT_EVERY: u64 = 200;

/// Compacts the history's files when its version is a multiple of [`COMPACT_EVERY`], and deletes
/// those compacted away long ago (logged, never failing the refresh).
async fn compact_now_and_then(table: DeltaTable) {
    let version = table.version().unwrap_or_default();
    if version == 0 || !version.is_multiple_of(COMPACT_EVERY) {
        return;
    }
    let compacted = match table.optimize().await {
        Ok((table, _)) => table,
        Err(e) => {
            tracing::warn!(error = %e, "could not compact flywheel.refresh_history");
            return;
        }
    };
    // Files compacted away more than the table's retention (7 days) ago are deleted.
    if let Err(e) = compacted.vacuum().await {
        tracing::warn!(error = %e, "could not vacuum flywheel.refresh_history");
    }
}

/// [`append`], logging instead of failing: the refresh it records is done either way.
pub(crate) async fn record(registry: &Registry, record: &RefreshRecord) {
    if let Err(e) = append(registry, record).await {
        tracing::warn!(object = %record.object, error = %e, "could not record a refresh in flywheel.refresh_history");
    }
}

/// Every recorded refresh, oldest first.
pub(crate) async fn read(registry: &Registry) -> Result<Vec<RefreshRecord>> {
    let Some(table) = open(registry).await? else {
        return Ok(Vec::new());
    };
    let ctx = SessionContext::new();
    let batches = ctx
        .read_table(table.table_provider().await?)?
        .collect()
        .await?;
    let mut out = Vec::new();
    for batch in batches {
        out.extend(from_batch(&normalized(&batch)?)?);
    }
    out.sort_by_key(|r| (r.finished_at_us, r.started_at_us));
    Ok(out)
}

/// `batch` with the history's column types (a Delta scan may hand strings back as views).
fn normalized(batch: &RecordBatch) -> Result<RecordBatch> {
    let schema = schema();
    let columns = schema
        .fields()
        .iter()
        .map(|f| {
            let column = batch.column_by_name(f.name()).ok_or_else(|| {
                Error::InvalidInput(format!(
                    "flywheel.refresh_history has no column `{}`",
                    f.name()
                ))
            })?;
            Ok(arrow::compute::cast(column, f.data_type())?)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(schema, columns)?)
}

fn from_batch(batch: &RecordBatch) -> Result<Vec<RefreshRecord>> {
    let unreadable =
        || Error::InvalidInput("flywheel.refresh_history has an unexpected schema".into());
    let text = |i: usize| {
        batch
            .column(i)
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(unreadable)
    };
    let int = |i: usize| {
        batch
            .column(i)
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(unreadable)
    };
    let time = |i: usize| {
        batch
            .column(i)
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .ok_or_else(unreadable)
    };
    let (object, kind, trigger, scheduled, started, finished, mode, why, inputs) = (
        text(0)?,
        text(1)?,
        text(2)?,
        time(3)?,
        time(4)?,
        time(5)?,
        text(6)?,
        text(7)?,
        text(8)?,
    );
    let (read, written, version, status, error) =
        (int(9)?, int(10)?, int(11)?, text(12)?, text(13)?);
    let s = |a: &StringArray, i: usize| (!a.is_null(i)).then(|| a.value(i).to_string());
    let n = |a: &Int64Array, i: usize| {
        (!a.is_null(i)).then(|| u64::try_from(a.value(i)).unwrap_or_default())
    };
    Ok((0..batch.num_rows())
        .map(|i| RefreshRecord {
            object: object.value(i).to_string(),
            kind: kind.value(i).to_string(),
            trigger: trigger.value(i).to_string(),
            scheduled_for_us: (!scheduled.is_null(i)).then(|| scheduled.value(i)),
            started_at_us: started.value(i),
            finished_at_us: finished.value(i),
            mode: mode.value(i).to_string(),
            why: s(why, i),
            inputs: parse_versions(inputs.value(i)),
            rows_read: n(read, i),
            rows_written: n(written, i),
            version: n(version, i),
            status: status.value(i).to_string(),
            error: s(error, i),
        })
        .collect())
}

/// The latest recorded refresh of each object.
pub(crate) async fn latest(registry: &Registry) -> Result<HashMap<String, RefreshRecord>> {
    Ok(read(registry)
        .await?
        .into_iter()
        .map(|r| (r.object.clone(), r))
        .collect())
}

/// `flywheel.refresh_history`: the Delta table itself (an empty table before the first refresh).
pub(crate) fn system_table(registry: Arc<Registry>) -> (String, SystemTableFn) {
    let f: SystemTableFn = Arc::new(move || {
        let registry = Arc::clone(&registry);
        Box::pin(async move {
            let table = open(&registry)
                .await
                .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
            Ok(match table {
                Some(t) => t.table_provider().await? as Arc<dyn TableProvider>,
                None => Arc::new(MemTable::try_new(schema(), vec![vec![]])?),
            })
        })
    });
    ("refresh_history".to_string(), f)
}
