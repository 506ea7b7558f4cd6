//! Definitions of Flywheel objects as the registry stores them (JSON), and their listings as Arrow.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray, TimestampMicrosecondArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::{Deserialize, Serialize};

use crate::{Registry, Result};

/// Registry kind of entities.
pub const KIND_ENTITY: &str = "entity";

/// One key column of an entity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityKey {
    pub name: String,
    /// The type as written in SQL (`BIGINT`).
    pub sql_type: String,
    /// The Arrow type it maps to (`Int64`).
    pub arrow_type: String,
}

/// An entity: the named, typed join keys that feature views and labels declare.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityDefinition {
    pub keys: Vec<EntityKey>,
    /// The statement that created it.
    pub sql: String,
}

impl EntityDefinition {
    /// `user_id BIGINT, region VARCHAR`.
    pub fn keys_sql(&self) -> String {
        self.keys
            .iter()
            .map(|k| format!("{} {}", k.name, k.sql_type))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The schema of `SHOW ENTITIES` and `flywheel.entities`.
pub fn entities_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("keys", DataType::Utf8, false),
        Field::new("definition_version", DataType::UInt64, false),
        Field::new(
            "created_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("sql", DataType::Utf8, false),
    ]))
}

/// Every entity of the registry, one row each, sorted by name.
pub fn entities_batch(registry: &Registry) -> Result<RecordBatch> {
    let objects = registry.objects(KIND_ENTITY);
    let defs: Vec<EntityDefinition> = objects
        .iter()
        .map(|o| {
            serde_json::from_str(&o.definition).unwrap_or(EntityDefinition {
                keys: vec![],
                sql: String::new(),
            })
        })
        .collect();
    let names: StringArray = objects.iter().map(|o| Some(o.name.clone())).collect();
    let keys: StringArray = defs.iter().map(|d| Some(d.keys_sql())).collect();
    let versions: UInt64Array = objects.iter().map(|o| Some(o.definition_version)).collect();
    let created = TimestampMicrosecondArray::from(
        objects.iter().map(|o| o.created_at_us).collect::<Vec<_>>(),
    )
    .with_timezone("UTC");
    let sql: StringArray = defs.iter().map(|d| Some(d.sql.clone())).collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(names),
        Arc::new(keys),
        Arc::new(versions),
        Arc::new(created),
        Arc::new(sql),
    ];
    Ok(RecordBatch::try_new(entities_schema(), columns)?)
}
