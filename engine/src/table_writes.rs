//! Writing the Delta tables of the warehouse: a new managed table in a folder of its own
//! ([`write_new_table`], registered last with [`register`]), a replacement as one overwrite commit
//! ([`replace_table`]), an append pinned to the version it read ([`append_version`]), and the
//! removal of a dropped table's files ([`remove_files`]). Tables, feature views, labels and
//! training sets are all written here, so a failure at any step leaves no registered half-table,
//! and rows whose order matters reach delta-rs as one ordered stream ([`write_source`]).

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::logical_expr::LogicalPlan;
use deltalake::DeltaTable;
use deltalake::kernel::StructField;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::operations::write::WriteBuilder;
use deltalake::protocol::SaveMode;
use flywheel_catalog::{TableEntry, TableKind, Warehouse, load_table};

use super::one_shot::one_shot_plan;
use super::{Engine, conflicts, delta_types, parquet_files};
use crate::{Error, Result};

/// Records the new table `written` together with `changes` in one registry commit. When the
/// commit fails (the name was taken meanwhile, the registry is unreachable), the table's files are
/// removed: they are in a folder of their own that nothing else refers to.
pub(super) async fn register(
    engine: &Engine,
    written: &TableEntry,
    changes: Vec<flywheel_catalog::Change>,
) -> Result<()> {
    let mut all = vec![flywheel_catalog::Change::CreateTable(written.clone())];
    all.extend(changes);
    if let Err(e) = engine.registry().commit(all).await {
        discard(engine, written);
        return Err(e.into());
    }
    Ok(())
}

/// Removes the files of a table this statement wrote and did not register.
fn discard(engine: &Engine, written: &TableEntry) {
    if let Err(e) = engine
        .registry()
        .warehouse()
        .remove_table_files(&written.location)
    {
        tracing::warn!(table = %written.name, location = %written.location, error = %e,
            "could not remove the files of a table this statement did not register");
    }
}

/// Whether a CREATE TABLE's input is a bare column list (no rows to write).
fn is_column_list(input: &LogicalPlan) -> bool {
    matches!(input, LogicalPlan::EmptyRelation(e) if !e.produce_one_row)
}

/// Writes the rows of `input` as a new managed table `name` (version 0) in a new folder of its
/// own, with `metadata` in its commit; returns its (not yet registered) entry. A failed write
/// removes what it wrote.
pub(super) async fn write_new_table(
    engine: &Engine,
    name: &str,
    input: &LogicalPlan,
    metadata: HashMap<String, serde_json::Value>,
) -> Result<TableEntry> {
    let warehouse = engine.registry().warehouse();
    let entry = TableEntry {
        name: name.to_string(),
        location: warehouse.new_table_location()?,
        kind: TableKind::Managed,
    };
    Warehouse::ensure_dir(&entry.location)?;
    let written = async {
        let table = DeltaTable::try_from_url(entry.location.clone()).await?;
        let commit = CommitProperties::default().with_metadata(metadata);
        if is_column_list(input) {
            table
                .create()
                .with_table_name(name)
                .with_columns(delta_columns(input)?)
                .with_save_mode(SaveMode::ErrorIfExists)
                .with_commit_properties(commit)
                .await?;
        } else {
            let input = delta_types::storable_plan(input.clone())?;
            let properties = parquet_files::writer_properties(
                input.schema().as_arrow().fields(),
                engine.data_pages,
            );
            let (input, session) = write_source(engine, input).await?;
            WriteBuilder::new(table.log_store(), None)
                .with_input_plan(input)
                .with_table_name(name)
                .with_save_mode(SaveMode::ErrorIfExists)
                .with_writer_properties(properties)
                .with_commit_properties(commit)
                .with_session_state(session)
                .await
                .map_err(|e| value_refused(name, e))?;
        }
        Ok::<_, Error>(())
    }
    .await;
    match written {
        Ok(()) => Ok(entry),
        Err(e) => {
            discard(engine, &entry);
            Err(e)
        }
    }
}

/// A value that does not fit its column's Delta type (a `uint64` above `BIGINT`'s maximum) said as
/// such: delta-rs reports it as a failure to convert the schema.
fn value_refused(table: &str, e: deltalake::DeltaTableError) -> Error {
    let text = e.to_string();
    match text.find("Cast error: ") {
        Some(at) => Error::InvalidInput(format!(
            "cannot create table `{table}`: {}; nothing was written",
            &text[at..]
        )),
        None => e.into(),
    }
}

/// `CREATE OR REPLACE TABLE` on a managed table (and a refresh of an object's table): one
/// overwrite commit (schema included) with `metadata` in it, so readers see the old or the new
/// table, and the old data stays reachable by time travel. Returns the new version. A writer that
/// committed to the table meanwhile is retried over ([`conflicts`]).
pub(super) async fn replace_table(
    engine: &Engine,
    existing: &TableEntry,
    input: &LogicalPlan,
    metadata: HashMap<String, serde_json::Value>,
) -> Result<u64> {
    let plan = if is_column_list(input) {
        // No rows: an empty relation with the new schema.
        LogicalPlan::EmptyRelation(datafusion::logical_expr::EmptyRelation {
            produce_one_row: false,
            schema: Arc::clone(input.schema()),
        })
    } else {
        delta_types::storable_plan(input.clone())?
    };
    let properties =
        parquet_files::writer_properties(plan.schema().as_arrow().fields(), engine.data_pages);
    conflicts::retry(&existing.name, || async {
        let table = load_table(existing, None).await?;
        let snapshot = table.snapshot()?.snapshot().clone();
        let (input, session) = write_source(engine, plan.clone()).await?;
        let written = WriteBuilder::new(table.log_store(), Some(snapshot))
            .with_input_plan(input)
            .with_save_mode(SaveMode::Overwrite)
            .with_schema_mode(deltalake::operations::write::SchemaMode::Overwrite)
            .with_writer_properties(properties.clone())
            .with_commit_properties(CommitProperties::default().with_metadata(metadata.clone()))
            .with_session_state(session)
            .await?;
        Ok(written.version().unwrap_or_default())
    })
    .await
}

/// Appends `input`'s rows to `existing` as one commit carrying `metadata`, only if the table is
/// still at version `expected` (no retry: a commit race fails it, see
/// [`conflicts::is_conflict`]). Returns the version written.
pub(super) async fn append_version(
    engine: &Engine,
    existing: &TableEntry,
    input: &LogicalPlan,
    metadata: HashMap<String, serde_json::Value>,
    expected: u64,
) -> Result<u64> {
    let plan = delta_types::storable_plan(input.clone())?;
    let properties =
        parquet_files::writer_properties(plan.schema().as_arrow().fields(), engine.data_pages);
    let target = flywheel_catalog::TravelTarget::Version(expected);
    let table = load_table(existing, Some(&target)).await?;
    let snapshot = table.snapshot()?.snapshot().clone();
    let (input, session) = write_source(engine, plan).await?;
    let written = WriteBuilder::new(table.log_store(), Some(snapshot))
        .with_input_plan(input)
        .with_save_mode(SaveMode::Append)
        .with_writer_properties(properties)
        .with_commit_properties(
            CommitProperties::default()
                .with_metadata(metadata)
                .with_max_retries(0),
        )
        .with_session_state(session)
        .await?;
    Ok(written.version().unwrap_or_default())
}

/// The plan and session a write reads `input` with. delta-rs's write drops a sort that nothing above
/// it asks for, so rows whose order matters (a `Sort` under the plan's top projections, as
/// [`crate::asof::in_commit_order`] makes) are sorted here and handed to delta-rs as one ordered
/// stream, read with a single-partition session so nothing splits it again. (delta-rs writes
/// through one writer either way; the sort itself runs on all cores.)
async fn write_source(
    engine: &Engine,
    input: LogicalPlan,
) -> Result<(LogicalPlan, Arc<datafusion::execution::SessionState>)> {
    let mut top = &input;
    while let LogicalPlan::Projection(p) = top {
        top = p.input.as_ref();
    }
    let sorted =
        !std::ptr::eq(top, &input) && matches!(top, LogicalPlan::Sort(s) if s.fetch.is_none());
    if !sorted {
        return Ok((input, Arc::new(engine.context().state())));
    }
    let schema = Arc::clone(input.schema().inner());
    let stream = engine.stream(input).await?;
    let plan = one_shot_plan("__flywheel_ordered_rows", schema, stream, None)?;
    let state = engine.context().state();
    let config = state.config().clone().with_target_partitions(1);
    let state = datafusion::execution::SessionStateBuilder::new_from_existing(state)
        .with_config(config)
        .build();
    Ok((plan, Arc::new(state)))
}

fn delta_columns(input: &LogicalPlan) -> Result<Vec<StructField>> {
    let fields = delta_types::storable_fields(input.schema().as_arrow().fields())?;
    let st: deltalake::kernel::StructType = (&arrow::datatypes::Schema::new(fields))
        .try_into_kernel()
        .map_err(|e| {
            Error::InvalidInput(format!("a column type has no Delta Lake equivalent: {e}"))
        })?;
    Ok(st.fields().cloned().collect())
}

/// Deletes the files of managed table `entry` (already dropped from the registry).
pub(super) async fn remove_files(engine: &Engine, entry: &TableEntry) -> Result<()> {
    engine
        .registry()
        .warehouse()
        .remove_table_files(&entry.location)?;
    Ok(())
}
