//! DDL on the warehouse: `CREATE TABLE [AS]`, `CREATE EXTERNAL TABLE ... STORED AS DELTA`, `DROP TABLE`.
//!
//! Each statement is at most one Delta commit of table data plus one registry commit. A new managed
//! table is written first, in a folder of its own (`tables/<id>/`, never a path made of its name),
//! and registered last, so a failure at any step leaves no registered half-table, and the clean-up
//! of a failed or losing `CREATE` removes only the folder it wrote. The tables of feature views,
//! labels and training sets are written the same way and registered in the same commit as their
//! object ([`register`]).

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::common::TableReference;
use datafusion::logical_expr::{
    CreateExternalTable, CreateMemoryTable, DropTable, LogicalPlan, WriteOp,
};
use deltalake::DeltaTable;
use deltalake::kernel::StructField;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::operations::write::WriteBuilder;
use deltalake::protocol::SaveMode;
use flywheel_catalog::{
    DEFAULT_CATALOG, DEFAULT_SCHEMA, TableEntry, TableKind, Warehouse, load_table,
};
use tracing::info;

use super::{Engine, Output, conflicts, delta_types, parquet_files};
use crate::{Error, Result};

/// The bare table name of a reference in the warehouse's schema; `None` for other schemas.
pub(super) fn warehouse_name(r: &TableReference) -> Option<String> {
    let ok = match r {
        TableReference::Bare { .. } => true,
        TableReference::Partial { schema, .. } => schema.as_ref() == DEFAULT_SCHEMA,
        TableReference::Full {
            catalog, schema, ..
        } => catalog.as_ref() == DEFAULT_CATALOG && schema.as_ref() == DEFAULT_SCHEMA,
    };
    ok.then(|| r.table().to_string())
}

/// The bare table name of a reference in the warehouse's schema; other schemas are refused.
fn table_name(r: &TableReference) -> Result<String> {
    warehouse_name(r).ok_or_else(|| Error::Unsupported {
        what: format!("table `{r}` outside the warehouse"),
        hint: format!("tables live in `{DEFAULT_CATALOG}.{DEFAULT_SCHEMA}`; use a bare name"),
    })
}

/// `CREATE TABLE t (...)` and `CREATE TABLE t AS SELECT ...`: a managed Delta table.
pub(super) async fn create_table(engine: &Engine, c: CreateMemoryTable) -> Result<Output> {
    let name = table_name(&c.name)?;
    if c.temporary {
        return Err(Error::Unsupported {
            what: "CREATE TEMPORARY TABLE".into(),
            hint: "every table is a Delta table in the warehouse; create a regular table".into(),
        });
    }
    if !c.column_defaults.is_empty() {
        return Err(Error::Unsupported {
            what: format!("column DEFAULT values (table `{name}`)"),
            hint: "give every column's value in INSERT".into(),
        });
    }
    flywheel_catalog::check_name("table", &name)?;
    let registry = engine.registry();
    if let Some(existing) = registry.table(&name) {
        if c.if_not_exists {
            return Ok(Output::empty());
        }
        if c.or_replace && existing.kind == TableKind::Managed {
            replace_table(engine, &existing, &c.input, Default::default()).await?;
            return Ok(Output::empty());
        }
        return Err(flywheel_catalog::Error::TableExists { name }.into());
    }
    let written = write_new_table(engine, &name, &c.input, Default::default()).await?;
    match register(engine, &written, Vec::new()).await {
        Ok(()) => {}
        // Another statement created the name while this one wrote (this one's files are gone).
        Err(Error::Catalog(flywheel_catalog::Error::TableExists { .. })) if c.if_not_exists => {}
        Err(Error::Catalog(flywheel_catalog::Error::TableExists { .. })) if c.or_replace => {
            return Box::pin(create_table(engine, c)).await;
        }
        Err(e) => return Err(e),
    }
    info!(table = %name, location = %written.location, "created table");
    Ok(Output::empty())
}

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
    let partition: Arc<dyn datafusion::physical_plan::streaming::PartitionStream> =
        Arc::new(OneStream {
            schema: Arc::clone(&schema),
            stream: std::sync::Mutex::new(Some(stream)),
        });
    let table = datafusion::catalog::streaming::StreamingTable::try_new(schema, vec![partition])
        .map_err(Error::from_datafusion)?;
    let plan = datafusion::logical_expr::LogicalPlanBuilder::scan(
        "__flywheel_ordered_rows",
        datafusion::datasource::provider_as_source(Arc::new(table)),
        None,
    )
    .and_then(datafusion::logical_expr::LogicalPlanBuilder::build)
    .map_err(Error::from_datafusion)?;
    let state = engine.context().state();
    let config = state.config().clone().with_target_partitions(1);
    let state = datafusion::execution::SessionStateBuilder::new_from_existing(state)
        .with_config(config)
        .build();
    Ok((plan, Arc::new(state)))
}

/// A stream already running, read once as the one partition of a table.
struct OneStream {
    schema: arrow::datatypes::SchemaRef,
    stream: std::sync::Mutex<Option<datafusion::execution::SendableRecordBatchStream>>,
}

impl std::fmt::Debug for OneStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OneStream").finish_non_exhaustive()
    }
}

impl datafusion::physical_plan::streaming::PartitionStream for OneStream {
    fn schema(&self) -> &arrow::datatypes::SchemaRef {
        &self.schema
    }

    fn execute(
        &self,
        _ctx: Arc<datafusion::execution::TaskContext>,
    ) -> datafusion::execution::SendableRecordBatchStream {
        let taken = self.stream.lock().ok().and_then(|mut s| s.take());
        match taken {
            Some(stream) => stream,
            None => Box::pin(
                datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(
                    Arc::clone(&self.schema),
                    futures::stream::once(async {
                        Err(datafusion::error::DataFusionError::Execution(
                            "the ordered rows of a write were read twice".into(),
                        ))
                    }),
                ),
            ),
        }
    }
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

/// `CREATE EXTERNAL TABLE x STORED AS DELTA LOCATION 'path'`: registers an existing Delta table.
pub(super) async fn create_external_table(
    engine: &Engine,
    c: CreateExternalTable,
) -> Result<Output> {
    let name = table_name(&c.name)?;
    let format = c.file_type.to_ascii_uppercase();
    if format != "DELTA" && format != "DELTATABLE" {
        return Err(Error::Unsupported {
            what: format!("STORED AS {} (table `{name}`)", c.file_type),
            hint: "external tables are Delta tables: STORED AS DELTA LOCATION '<path or URL>'"
                .into(),
        });
    }
    let [location] = c.locations.as_slice() else {
        return Err(Error::InvalidInput(format!(
            "external table `{name}` needs exactly one LOCATION, found {}",
            c.locations.len()
        )));
    };
    let registry = engine.registry();
    if registry.table(&name).is_some() {
        if c.if_not_exists {
            return Ok(Output::empty());
        }
        return Err(flywheel_catalog::Error::TableExists { name }.into());
    }
    let url = engine.file_access.check(
        registry.warehouse(),
        location,
        super::file_access::Use::ExternalTable,
    )?;
    let entry = TableEntry {
        name: name.clone(),
        location: url,
        kind: TableKind::External,
    };
    // Refuse a location that holds no Delta table now, rather than at the first query.
    load_table(&entry, None).await?;
    registry.create_table(&entry).await?;
    info!(table = %name, location = %entry.location, "registered external table");
    Ok(Output::empty())
}

/// What a statement does to a table, for [`refuse_object_table`].
#[derive(Debug, Clone, Copy)]
pub(super) enum TableChange {
    Drop,
    /// `INSERT`, `CREATE OR REPLACE TABLE`, bulk ingest.
    Write,
}

/// Refuses `change` of the table `name` when it is the table of a training set, feature view or
/// label: its rows come from the object's definition (and its versions are what training sets are
/// rebuilt from), so only the object's own statements change it.
pub(super) fn refuse_object_table(engine: &Engine, name: &str, change: TableChange) -> Result<()> {
    let (noun, sql) = if super::training_sets::exists(engine, name) {
        ("training set", "TRAINING SET")
    } else if let Some(kind) = super::feature_views::keyed_object(engine, name) {
        (kind.noun(), kind.sql())
    } else {
        return Ok(());
    };
    let hint = match change {
        TableChange::Drop => format!("use DROP {sql} {name}"),
        TableChange::Write if sql == "LABEL" => format!(
            "its rows come from its definition; change them with CREATE OR REPLACE LABEL {name}"
        ),
        TableChange::Write => format!(
            "its rows come from its definition; use REFRESH {sql} {name} (or CREATE OR REPLACE \
             {sql} {name})"
        ),
    };
    Err(Error::InvalidInput(format!(
        "`{name}` is the table of a {noun}; {hint}"
    )))
}

/// The error for a row-changing statement Flywheel does not run (`DELETE`, `UPDATE`, `TRUNCATE`,
/// `MERGE`) on a warehouse table, with what to do instead: a managed table takes appends and whole
/// replacements (each one Delta version), an external one is changed by the writer that owns it.
/// `None` for inserts and for names that are not warehouse tables (DataFusion answers those).
pub(super) fn unsupported_change(
    engine: &Engine,
    op: &WriteOp,
    table: &TableReference,
) -> Option<Error> {
    let statement = match op {
        WriteOp::Delete => "DELETE",
        WriteOp::Update => "UPDATE",
        WriteOp::Truncate => "TRUNCATE",
        WriteOp::MergeInto(_) => "MERGE",
        _ => return None,
    };
    let name = warehouse_name(table)?;
    let entry = engine.registry().table(&name)?;
    let hint = match entry.kind {
        TableKind::Managed => format!(
            "tables take appends and whole replacements: write the rows to keep with CREATE OR \
             REPLACE TABLE {name} AS SELECT ... FROM {name} (one new version; the earlier ones \
             stay readable by time travel)"
        ),
        TableKind::External => format!(
            "`{name}` is an external Delta table: change its rows with the writer that owns it \
             (Spark, delta-rs); Flywheel appends to it and reads its new versions"
        ),
    };
    Some(Error::Unsupported {
        what: format!("{statement} on table `{name}`"),
        hint,
    })
}

/// `DROP TABLE [IF EXISTS] t [CASCADE]`: forgets the table; a managed table's files are deleted
/// too. A table that feature views or labels read is refused, naming them, unless `cascade`, which
/// drops them first (and the training sets that read them).
pub(super) async fn drop_table(engine: &Engine, d: DropTable, cascade: bool) -> Result<Output> {
    let name = table_name(&d.name)?;
    refuse_object_table(engine, &name, TableChange::Drop)?;
    let readers = super::feature_views::reading_table(engine, &name);
    if !readers.is_empty() && engine.registry().table(&name).is_some() {
        if !cascade {
            let list: Vec<String> = readers
                .iter()
                .map(|(kind, n)| format!("{} `{n}`", kind.noun()))
                .collect();
            return Err(Error::InvalidInput(format!(
                "table `{name}` is read by {}; drop them first, or DROP TABLE {name} CASCADE to \
                 drop them (and the training sets that read them) with it",
                list.join(", ")
            )));
        }
        for (kind, reader) in readers {
            super::feature_views::drop(engine, kind, &reader, true, true).await?;
        }
    }
    let registry = engine.registry();
    let entry = match registry.drop_table(&name).await {
        Ok(entry) => entry,
        Err(flywheel_catalog::Error::TableNotFound { .. }) if d.if_exists => {
            return Ok(Output::empty());
        }
        Err(e) => return Err(e.into()),
    };
    if entry.kind == TableKind::Managed {
        remove_files(engine, &entry).await?;
    }
    info!(table = %name, "dropped table");
    Ok(Output::empty())
}

/// Deletes the files of managed table `entry` (already dropped from the registry).
pub(super) async fn remove_files(engine: &Engine, entry: &TableEntry) -> Result<()> {
    engine
        .registry()
        .warehouse()
        .remove_table_files(&entry.location)?;
    Ok(())
}
