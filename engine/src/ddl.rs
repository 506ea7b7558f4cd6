//! DDL on the warehouse: `CREATE TABLE [AS]`, `CREATE EXTERNAL TABLE ... STORED AS
//! DELTA|PARQUET|CSV|JSON`, `DROP TABLE`.
//!
//! Each statement is at most one Delta commit of table data plus one registry commit. A new managed
//! table is written first, in a folder of its own (`tables/<id>/`, never a path made of its name),
//! and registered last, so a failure at any step leaves no registered half-table, and the clean-up
//! of a failed or losing `CREATE` removes only the folder it wrote. The tables of feature views,
//! labels and training sets are written the same way and registered in the same commit as their
//! object ([`register`]); the writes themselves are in `table_writes`.

use datafusion::common::TableReference;
use datafusion::logical_expr::{CreateExternalTable, CreateMemoryTable, DropTable, WriteOp};
use flywheel_catalog::{
    DEFAULT_CATALOG, DEFAULT_SCHEMA, FileFormat, TableEntry, TableKind, load_table, open_files,
};
use tracing::info;

use super::table_writes::{register, remove_files, replace_table, write_new_table};
use super::{Engine, Output};
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

/// `CREATE EXTERNAL TABLE x STORED AS DELTA LOCATION 'path'`: registers an existing Delta table;
/// `STORED AS PARQUET|CSV|JSON`: registers files, read-only (no versions, no appends), to read
/// or to copy into a Delta table with `CREATE TABLE t AS SELECT * FROM x`.
pub(super) async fn create_external_table(
    engine: &Engine,
    c: CreateExternalTable,
) -> Result<Output> {
    let name = table_name(&c.name)?;
    let kind = match c.file_type.to_ascii_uppercase().as_str() {
        "DELTA" | "DELTATABLE" => TableKind::External,
        "PARQUET" | "CSV" | "JSON" | "NDJSON" => TableKind::Files(file_format(&name, &c)?),
        _ => {
            return Err(Error::Unsupported {
                what: format!("STORED AS {} (table `{name}`)", c.file_type),
                hint: "external tables are Delta tables (STORED AS DELTA) or files (STORED AS \
                       PARQUET, CSV or JSON)"
                    .into(),
            });
        }
    };
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
    let mut url = url;
    // Locations are checked as folders; files name a file unless they name a folder.
    if matches!(kind, TableKind::Files(_))
        && !location.ends_with('/')
        && !url.to_file_path().is_ok_and(|p| p.is_dir())
    {
        let file = url.path().trim_end_matches('/').to_string();
        url.set_path(&file);
    }
    let entry = TableEntry {
        name: name.clone(),
        location: url,
        kind,
    };
    // Refuse a location that holds no table now, rather than at the first query.
    match kind {
        TableKind::Files(format) => {
            open_files(&entry, format).await?;
        }
        _ => {
            load_table(&entry, None).await?;
        }
    }
    registry.create_table(&entry).await?;
    info!(table = %name, location = %entry.location, "registered external table");
    Ok(Output::empty())
}

/// The format of files `STORED AS PARQUET|CSV|JSON`, from the statement's options: CSV takes
/// `'format.has_header'` (default true) and `'format.delimiter'` (default `,`). Columns are read
/// from the files, so a column list or partition columns are refused.
fn file_format(name: &str, c: &CreateExternalTable) -> Result<FileFormat> {
    if !c.schema.fields().is_empty() || !c.table_partition_cols.is_empty() {
        return Err(Error::Unsupported {
            what: format!(
                "a column list in CREATE EXTERNAL TABLE {name} STORED AS {}",
                c.file_type
            ),
            hint: "the columns are read from the files: leave the list out".into(),
        });
    }
    let format = c.file_type.to_ascii_uppercase();
    let mut has_header = true;
    let mut delimiter = b',';
    for (key, value) in &c.options {
        match (format.as_str(), key.to_ascii_lowercase().as_str()) {
            ("CSV", "format.has_header") => {
                has_header = value.parse().map_err(|_| {
                    Error::InvalidInput(format!(
                        "'format.has_header' of table `{name}` is `{value}`; use 'true' or 'false'"
                    ))
                })?;
            }
            ("CSV", "format.delimiter") => match value.as_bytes() {
                [d] => delimiter = *d,
                _ => {
                    return Err(Error::InvalidInput(format!(
                        "'format.delimiter' of table `{name}` is `{value}`; use one character"
                    )));
                }
            },
            _ => {
                return Err(Error::InvalidInput(format!(
                    "option '{key}' of table `{name}` is not one Flywheel reads; STORED AS CSV \
                     takes 'format.has_header' and 'format.delimiter', PARQUET and JSON none"
                )));
            }
        }
    }
    Ok(match format.as_str() {
        "PARQUET" => FileFormat::Parquet,
        "CSV" => FileFormat::Csv {
            has_header,
            delimiter,
        },
        _ => FileFormat::Json,
    })
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
    let (noun, sql) = if super::definitions::is_training_set(engine, name) {
        ("training set", "TRAINING SET")
    } else if let Some(kind) = super::definitions::keyed_object(engine, name) {
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
        WriteOp::Insert(_) => "INSERT",
        _ => return None,
    };
    let name = warehouse_name(table)?;
    let entry = engine.registry().table(&name)?;
    let hint = match entry.kind {
        TableKind::Files(format) => format!(
            "`{name}` is an external {} table (plain files, read-only here): make it a Delta \
             table with CREATE TABLE <name> AS SELECT * FROM {name}",
            format.sql()
        ),
        _ if statement == "INSERT" => return None,
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
    let readers = super::definitions::reading_table(engine, &name);
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
            super::drops::drop_keyed(engine, kind, &reader, true, true).await?;
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
