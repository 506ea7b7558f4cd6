//! `flywheel.freshness`: one row per feature view, label and training set saying how fresh it is:
//! the version read, what it was built from and whether an input moved since (stale), how old its
//! newest event is, its last refresh (when, how, whether it failed) and its schedule.
//!
//! Computed on each read from the registry, the objects' Delta logs (what each build read) and
//! `flywheel.refresh_history`; the newest event time is a `max` over the object's event-time
//! column (a scan of that one column).

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, DurationMicrosecondArray, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::Utc;
use datafusion::catalog::TableProvider;
use datafusion::datasource::MemTable;
use datafusion::functions_aggregate::expr_fn::max;
use datafusion::prelude::{SessionContext, col};
use flywheel_catalog::lineage;
use flywheel_catalog::objects::{KIND_TRAINING_SET, TrainingSetDefinition};
use flywheel_catalog::{Registry, SystemTableFn, load_table};

use super::definitions::{Keyed, registry_definition};
use super::lineage::{Staleness, latest_build, noun, staleness_of, table_version};
use super::{leases, refresh_history, schedules};
use crate::{Error, Result};

fn schema() -> SchemaRef {
    let ts = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("object", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("version", DataType::Int64, true),
        Field::new("built_from", DataType::Utf8, false),
        Field::new("stale", DataType::Boolean, false),
        Field::new("stale_inputs", DataType::Utf8, false),
        Field::new("newest_event_time", ts(), true),
        Field::new(
            "event_time_lag",
            DataType::Duration(TimeUnit::Microsecond),
            true,
        ),
        Field::new("last_refresh_at", ts(), true),
        Field::new("last_refresh_mode", DataType::Utf8, true),
        Field::new("last_refresh_why", DataType::Utf8, true),
        Field::new("refresh", DataType::Utf8, false),
        Field::new("suspended", DataType::Boolean, false),
        Field::new("next_run", ts(), true),
        Field::new("last_status", DataType::Utf8, true),
        Field::new("last_error", DataType::Utf8, true),
    ]))
}

/// One object's row.
struct Row {
    object: String,
    kind: &'static str,
    version: Option<i64>,
    built_from: String,
    staleness: Staleness,
    stale_inputs: String,
    newest_event_us: Option<i64>,
    lag_us: Option<i64>,
    last: Option<refresh_history::RefreshRecord>,
    refresh: String,
    suspended: bool,
    next_run_us: Option<i64>,
}

/// The event-time column of object `name` (of registry kind `kind`): a training set's is its
/// label's.
fn event_time_column(registry: &Registry, kind: &str, name: &str) -> Option<String> {
    if kind == KIND_TRAINING_SET {
        let def: TrainingSetDefinition = registry.definition(KIND_TRAINING_SET, name).ok()??;
        return registry_definition(registry, Keyed::Label, &def.label)
            .ok()
            .map(|d| d.event_time);
    }
    let keyed = if kind == flywheel_catalog::objects::KIND_LABEL {
        Keyed::Label
    } else {
        Keyed::FeatureView
    };
    registry_definition(registry, keyed, name)
        .ok()
        .map(|d| d.event_time)
}

/// The newest value of `column` in the table of `name` (at `version`, or its latest), in UTC
/// microseconds, if it is a time (a timestamp without zone counts as UTC).
pub(super) async fn newest_event(
    registry: &Registry,
    name: &str,
    column: &str,
    version: Option<u64>,
) -> Result<Option<i64>> {
    let Some(entry) = registry.table(name) else {
        return Ok(None);
    };
    let target = version.map(flywheel_catalog::TravelTarget::Version);
    let table = load_table(&entry, target.as_ref()).await?;
    let ctx = SessionContext::new();
    let batches = ctx
        .read_table(table.table_provider().await?)?
        .aggregate(
            vec![],
            vec![max(col(format!("\"{column}\""))).alias("newest")],
        )?
        .collect()
        .await?;
    let Some(batch) = batches.first().filter(|b| b.num_rows() == 1) else {
        return Ok(None);
    };
    let utc = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let Ok(newest) = arrow::compute::cast(batch.column(0), &utc) else {
        return Ok(None);
    };
    let newest = newest
        .as_any()
        .downcast_ref::<TimestampMicrosecondArray>()
        .filter(|a| a.is_valid(0))
        .map(|a| a.value(0));
    Ok(newest)
}

async fn rows(registry: &Registry) -> Result<Vec<Row>> {
    registry.refresh().await?;
    let history = refresh_history::latest(registry).await?;
    let leases = leases::read(registry).await?;
    let mut out = Vec::new();
    for (kind, name) in lineage::all_in_order(registry) {
        let last = history.get(&name).cloned();
        out.push(row(registry, &leases, kind, name, last).await?);
    }
    Ok(out)
}

/// The freshness of one object (of registry kind `kind`) whose latest refresh was `last`.
async fn row(
    registry: &Registry,
    leases: &leases::Leases,
    kind: &'static str,
    name: String,
    last: Option<refresh_history::RefreshRecord>,
) -> Result<Row> {
    let now = Utc::now();
    let built = latest_build(registry, &name).await?;
    // The latest build's lineage was read from the table's latest commit: its version.
    let version = match (&built, registry.table(&name)) {
        (Some(b), _) => Some(b.version as i64),
        (None, Some(_)) => Some(table_version(registry, &name).await? as i64),
        (None, None) => None,
    };
    let staleness = staleness_of(registry, kind, &name, built.as_ref()).await?;
    let stale_inputs = match &staleness {
        Staleness::Stale(moved) => moved
            .iter()
            .map(|(input, was, now)| format!("{input}@{was} -> {input}@{now}"))
            .collect::<Vec<_>>()
            .join(", "),
        Staleness::Unknown => "unknown (its latest build recorded no input versions)".into(),
        Staleness::Fresh => String::new(),
    };
    let newest_event_us = match event_time_column(registry, kind, &name) {
        Some(column) => newest_event(registry, &name, &column, None)
            .await
            .unwrap_or_else(|e| {
                tracing::debug!(object = %name, error = %e, "no newest event time");
                None
            }),
        None => None,
    };
    let schedule = schedules::entry(registry, &name).filter(|e| e.object_kind == kind);
    let next_run_us = schedule.as_ref().and_then(|e| {
        schedules::next_run(e, leases::last_tick(leases, &name), now).map(|t| t.timestamp_micros())
    });
    Ok(Row {
        kind: noun(kind),
        version,
        built_from: built
            .as_ref()
            .map(|b| refresh_history::versions_text(&b.inputs))
            .unwrap_or_default(),
        staleness,
        stale_inputs,
        newest_event_us,
        lag_us: newest_event_us.map(|t| now.timestamp_micros() - t),
        last,
        refresh: schedule
            .as_ref()
            .map_or_else(|| "manual".to_string(), |e| e.refresh.clone()),
        suspended: schedule.as_ref().is_some_and(|e| e.suspended),
        next_run_us,
        object: name,
    })
}

/// What `DESCRIBE` says about an object's freshness: (property, value) rows, from `built_from`
/// and `stale` on.
pub(super) async fn describe_rows(
    registry: &Registry,
    kind: &'static str,
    name: &str,
) -> Result<Vec<(String, String)>> {
    let last = refresh_history::latest(registry).await?.remove(name);
    let leases = leases::read(registry).await?;
    let r = row(registry, &leases, kind, name.to_string(), last).await?;
    let time = |us: Option<i64>| {
        us.and_then(chrono::DateTime::from_timestamp_micros)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .unwrap_or_default()
    };
    let mut rows = vec![
        ("built_from".to_string(), r.built_from.clone()),
        ("stale".to_string(), r.staleness.describe()),
        ("newest_event_time".to_string(), time(r.newest_event_us)),
        (
            "event_time_lag".to_string(),
            r.lag_us.map(human_duration).unwrap_or_default(),
        ),
        ("refresh".to_string(), r.refresh.clone()),
        ("suspended".to_string(), r.suspended.to_string()),
        ("next_run".to_string(), time(r.next_run_us)),
    ];
    let (last, error) = match &r.last {
        Some(l) => (
            format!(
                "{} ({}, {}, {})",
                time(Some(l.finished_at_us)),
                l.trigger,
                l.mode,
                l.status
            ),
            l.error.clone().unwrap_or_default(),
        ),
        None => (String::new(), String::new()),
    };
    rows.push(("last_refresh".to_string(), last));
    rows.push(("last_error".to_string(), error));
    Ok(rows)
}

/// `3 days 04:05:06` (a negative lag, an event stamped in the future, gets a `-`).
fn human_duration(us: i64) -> String {
    let sign = if us < 0 { "-" } else { "" };
    let s = us.unsigned_abs() / 1_000_000;
    let (days, h, m, sec) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60, s % 60);
    if days > 0 {
        format!(
            "{sign}{days} day{} {h:02}:{m:02}:{sec:02}",
            if days == 1 { "" } else { "s" }
        )
    } else {
        format!("{sign}{h:02}:{m:02}:{sec:02}")
    }
}

fn to_batch(rows: &[Row]) -> Result<RecordBatch> {
    let text = |f: &dyn Fn(&Row) -> Option<String>| -> ArrayRef {
        Arc::new(rows.iter().map(f).collect::<StringArray>())
    };
    let time = |f: &dyn Fn(&Row) -> Option<i64>| -> ArrayRef {
        Arc::new(
            TimestampMicrosecondArray::from(rows.iter().map(f).collect::<Vec<_>>())
                .with_timezone("UTC"),
        )
    };
    let flag = |f: &dyn Fn(&Row) -> bool| -> ArrayRef {
        Arc::new(rows.iter().map(|r| Some(f(r))).collect::<BooleanArray>())
    };
    Ok(RecordBatch::try_new(
        schema(),
        vec![
            text(&|r| Some(r.object.clone())),
            text(&|r| Some(r.kind.to_string())),
            Arc::new(rows.iter().map(|r| r.version).collect::<Int64Array>()),
            text(&|r| Some(r.built_from.clone())),
            flag(&|r| r.staleness != Staleness::Fresh),
            text(&|r| Some(r.stale_inputs.clone())),
            time(&|r| r.newest_event_us),
            Arc::new(DurationMicrosecondArray::from(
                rows.iter().map(|r| r.lag_us).collect::<Vec<_>>(),
            )),
            time(&|r| r.last.as_ref().map(|l| l.finished_at_us)),
            text(&|r| r.last.as_ref().map(|l| l.mode.clone())),
            text(&|r| r.last.as_ref().and_then(|l| l.why.clone())),
            text(&|r| Some(r.refresh.clone())),
            flag(&|r| r.suspended),
            time(&|r| r.next_run_us),
            text(&|r| r.last.as_ref().map(|l| l.status.clone())),
            text(&|r| r.last.as_ref().and_then(|l| l.error.clone())),
        ],
    )?)
}

/// The freshness of every object, as `flywheel.freshness` holds it.
pub(crate) async fn batch(registry: &Registry) -> Result<RecordBatch> {
    to_batch(&rows(registry).await?)
}

/// `flywheel.freshness`.
pub(crate) fn system_table(registry: Arc<Registry>) -> (String, SystemTableFn) {
    let f: SystemTableFn = Arc::new(move || {
        let registry = Arc::clone(&registry);
        Box::pin(async move {
            let batch = batch(&registry)
                .await
                .map_err(|e: Error| datafusion::error::DataFusionError::External(Box::new(e)))?;
            Ok(
                Arc::new(MemTable::try_new(batch.schema(), vec![vec![batch]])?)
                    as Arc<dyn TableProvider>,
            )
        })
    });
    ("freshness".to_string(), f)
}
