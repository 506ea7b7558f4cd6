//! Flight SQL catalog metadata: catalogs, schemas, tables (with Flywheel's object types), table
//! types and primary keys.
//!
//! Everything is read from the engine's DataFusion catalogs after a registry refresh, so a table or
//! feature view created by another server is listed too. Table types tell Flywheel's objects apart:
//! a feature view is listed as `FEATURE VIEW`, a label as `LABEL`, a training set as
//! `TRAINING SET`, the registry's system tables as `SYSTEM TABLE`.

use std::sync::Arc;

use arrow::array::{Int32Builder, RecordBatch, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow_flight::sql::metadata::{GetCatalogsBuilder, GetDbSchemasBuilder, GetTablesBuilder};
use arrow_flight::sql::{CommandGetDbSchemas, CommandGetPrimaryKeys, CommandGetTables};
use flywheel_catalog::objects::{KIND_FEATURE_VIEW, KIND_LABEL, KIND_TRAINING_SET};
use flywheel_catalog::{DEFAULT_SCHEMA, SYSTEM_SCHEMA};

use flywheel_engine::{Engine, Error, Result};

/// The table types Flywheel lists, in the order `GetTableTypes` returns them.
pub const TABLE_TYPES: &[&str] = &[TABLE, FEATURE_VIEW, LABEL, TRAINING_SET, SYSTEM_TABLE, VIEW];

const TABLE: &str = "TABLE";
const FEATURE_VIEW: &str = "FEATURE VIEW";
const LABEL: &str = "LABEL";
const TRAINING_SET: &str = "TRAINING SET";
const SYSTEM_TABLE: &str = "SYSTEM TABLE";
const VIEW: &str = "VIEW";

/// A failure to build a metadata answer (a bug, not a user error).
pub(super) fn flight(e: arrow_flight::error::FlightError) -> Error {
    Error::Transport(format!("cannot build a metadata answer: {e}"))
}

/// `GetCatalogs`.
pub fn catalogs(engine: &Engine) -> Result<RecordBatch> {
    let mut b = GetCatalogsBuilder::new();
    let mut names = engine.context().catalog_names();
    names.sort();
    for name in names {
        b.append(name);
    }
    b.build().map_err(flight)
}

/// `GetDbSchemas`, filters applied.
pub fn schemas(engine: &Engine, query: CommandGetDbSchemas) -> Result<RecordBatch> {
    let mut b: GetDbSchemasBuilder = query.into_builder();
    for (catalog, schema) in all_schemas(engine) {
        b.append(catalog, schema);
    }
    b.build().map_err(flight)
}

/// `GetTables`, filters applied; table schemas are loaded only for tables that pass the filters.
pub async fn tables(engine: &Engine, query: CommandGetTables) -> Result<RecordBatch> {
    engine.registry().refresh().await?;
    let include_schema = query.include_schema;
    let wanted_types = query.table_types.clone();
    let catalog_filter = query.catalog.clone();
    let schema_filter = query.db_schema_filter_pattern.clone();
    let name_filter = query.table_name_filter_pattern.clone();
    let mut b: GetTablesBuilder = query.into_builder();
    for (catalog, schema) in all_schemas(engine) {
        if catalog_filter.as_ref().is_some_and(|c| *c != catalog)
            || schema_filter.as_ref().is_some_and(|p| !like(p, &schema))
        {
            continue;
        }
        let Some(provider) = engine
            .context()
            .catalog(&catalog)
            .and_then(|c| c.schema(&schema))
        else {
            continue;
        };
        let mut names = provider.table_names();
        names.sort();
        for name in names {
            let table_type = table_type(engine, &schema, &name);
            if name_filter.as_ref().is_some_and(|p| !like(p, &name))
                || (!wanted_types.is_empty() && !wanted_types.iter().any(|t| t == table_type))
            {
                continue;
            }
            let table_schema = if include_schema {
                match provider
                    .table(&name)
                    .await
                    .map_err(Error::from_datafusion)?
                {
                    // As a query's answer has it (dictionary columns decoded).
                    Some(t) => Arc::new(super::column_metadata::of_table(
                        super::wire_types::sql_wire_schema(&t.schema()),
                        &catalog,
                        &schema,
                        &name,
                    )),
                    // Dropped between listing and loading.
                    None => continue,
                }
            } else {
                Arc::new(Schema::empty())
            };
            b.append(&catalog, &schema, &name, table_type, &table_schema)
                .map_err(flight)?;
        }
    }
    b.build().map_err(flight)
}

/// `GetTableTypes`.
pub fn table_types() -> Result<RecordBatch> {
    let mut b = arrow_flight::sql::CommandGetTableTypes {}.into_builder();
    for t in TABLE_TYPES {
        b.append(t);
    }
    b.build().map_err(flight)
}

/// The schema of a `GetPrimaryKeys` answer (Flight SQL's `CommandGetPrimaryKeys`).
pub fn primary_keys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("catalog_name", DataType::Utf8, true),
        Field::new("db_schema_name", DataType::Utf8, true),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("column_name", DataType::Utf8, false),
        Field::new("key_name", DataType::Utf8, true),
        Field::new("key_sequence", DataType::Int32, false),
    ]))
}

/// `GetPrimaryKeys`: a feature view's or a label's rows are keyed by its entity's key columns and
/// its event time (one value per entity and time); the key is named after the entity. Other tables
/// have no declared key.
pub async fn primary_keys(engine: &Engine, query: CommandGetPrimaryKeys) -> Result<RecordBatch> {
    engine.registry().refresh().await?;
    let catalog = engine.context().state().config_options().catalog.clone();
    let mut catalogs = StringBuilder::new();
    let mut schemas = StringBuilder::new();
    let mut tables = StringBuilder::new();
    let mut columns = StringBuilder::new();
    let mut key_names = StringBuilder::new();
    let mut sequence = Int32Builder::new();
    let in_scope = query
        .catalog
        .as_ref()
        .is_none_or(|c| *c == catalog.default_catalog)
        && query.db_schema.as_ref().is_none_or(|s| s == DEFAULT_SCHEMA);
    if let Some(def) = in_scope
        .then(|| engine.keyed_definition(&query.table))
        .flatten()
    {
        let entity = &def.entity;
        let key_columns = engine
            .entity_keys(entity)?
            .into_iter()
            .chain(std::iter::once(def.event_time.clone()));
        for (i, column) in key_columns.enumerate() {
            catalogs.append_value(&catalog.default_catalog);
            schemas.append_value(DEFAULT_SCHEMA);
            tables.append_value(&query.table);
            columns.append_value(column);
            key_names.append_value(entity);
            sequence.append_value(i32::try_from(i + 1).unwrap_or(i32::MAX));
        }
    }
    Ok(RecordBatch::try_new(
        primary_keys_schema(),
        vec![
            Arc::new(catalogs.finish()),
            Arc::new(schemas.finish()),
            Arc::new(tables.finish()),
            Arc::new(columns.finish()),
            Arc::new(key_names.finish()),
            Arc::new(sequence.finish()),
        ],
    )?)
}

/// Every (catalog, schema) pair, sorted.
fn all_schemas(engine: &Engine) -> Vec<(String, String)> {
    let ctx = engine.context();
    let mut out = Vec::new();
    for catalog in ctx.catalog_names() {
        if let Some(provider) = ctx.catalog(&catalog) {
            for schema in provider.schema_names() {
                out.push((catalog.clone(), schema));
            }
        }
    }
    out.sort();
    out
}

/// The table type of `schema.name`.
fn table_type(engine: &Engine, schema: &str, name: &str) -> &'static str {
    match schema {
        DEFAULT_SCHEMA => {
            let registry = engine.registry();
            if registry.object(KIND_FEATURE_VIEW, name).is_some() {
                FEATURE_VIEW
            } else if registry.object(KIND_LABEL, name).is_some() {
                LABEL
            } else if registry.object(KIND_TRAINING_SET, name).is_some() {
                TRAINING_SET
            } else {
                TABLE
            }
        }
        SYSTEM_SCHEMA => SYSTEM_TABLE,
        _ => VIEW,
    }
}

/// SQL `LIKE` as Flight SQL filter patterns use it: `%` any run, `_` any one character.
fn like(pattern: &str, s: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = s.chars().collect();
    // Classic two-pointer wildcard match with backtracking to the last `%`.
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while j < t.len() {
        if i < p.len() && (p[i] == '_' || p[i] == t[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '%' {
            star = Some((i, j));
            i += 1;
        } else if let Some((si, sj)) = star {
            i = si + 1;
            j = sj + 1;
            star = Some((si, sj + 1));
        } else {
            return false;
        }
    }
    p[i..].iter().all(|c| *c == '%')
}

#[cfg(test)]
mod tests {
    use super::like;

    #[test]
    fn like_patterns() {
        assert!(like("%", ""));
        assert!(like("user%", "user_txn"));
        assert!(like("u_er", "user"));
        assert!(like("%txn", "user_txn"));
        assert!(like("%s%t%", "user_txn_set"));
        assert!(!like("user", "users"));
        assert!(!like("_", ""));
        assert!(!like("a%b", "acbd"));
    }
}
