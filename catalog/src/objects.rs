//! Definitions of Flywheel objects as the registry stores them (JSON), and their listings as Arrow.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray, TimestampMicrosecondArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::{Deserialize, Serialize};

pub use flywheel_sql::ast::ObjectKind;

use crate::{Registry, Result};

/// Registry kind of entities.
pub const KIND_ENTITY: &str = ObjectKind::Entity.registry_kind();
/// Registry kind of feature views.
pub const KIND_FEATURE_VIEW: &str = ObjectKind::FeatureView.registry_kind();
/// Registry kind of labels.
pub const KIND_LABEL: &str = ObjectKind::Label.registry_kind();
/// Registry kind of training sets.
pub const KIND_TRAINING_SET: &str = ObjectKind::TrainingSet.registry_kind();
/// Registry kind of one built version of a training set (its lineage); named `set@version`.
pub const KIND_TRAINING_SET_VERSION: &str = "training_set_version";

/// A feature view's or a label's stored definition (a label has no TTL and no options).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FeatureViewDefinition {
    pub entity: String,
    pub event_time: String,
    pub ttl: Option<String>,
    pub options: Vec<(String, String)>,
    pub query: String,
    pub sql: String,
}

/// One item of a training set's feature list.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FeatureItem {
    pub view: String,
    pub column: Option<String>,
}

/// A training set's stored definition.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainingSetDefinition {
    pub label: String,
    pub features: Vec<FeatureItem>,
    pub sql: String,
}

/// What one version of a training set was built from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Lineage {
    pub version: u64,
    /// Input name -> the Delta version read.
    pub inputs: std::collections::BTreeMap<String, u64>,
    pub query: String,
}

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
            o.decode().unwrap_or(EntityDefinition {
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

fn utc_micros(values: Vec<i64>) -> TimestampMicrosecondArray {
    TimestampMicrosecondArray::from(values).with_timezone("UTC")
}

fn created_field() -> Field {
    Field::new(
        "created_at",
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        false,
    )
}

/// `flywheel.feature_views` (`labels` when `kind` is [`KIND_LABEL`]): one row per object.
pub fn keyed_batch(registry: &Registry, kind: &str) -> Result<RecordBatch> {
    let objects = registry.objects(kind);
    let defs: Vec<Option<FeatureViewDefinition>> =
        objects.iter().map(|o| o.decode().ok()).collect();
    let text = |f: &dyn Fn(&FeatureViewDefinition) -> Option<String>| -> ArrayRef {
        Arc::new(
            defs.iter()
                .map(|d| d.as_ref().and_then(f))
                .collect::<StringArray>(),
        )
    };
    let schema = Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("entity", DataType::Utf8, true),
        Field::new("event_time", DataType::Utf8, true),
        Field::new("ttl", DataType::Utf8, true),
        Field::new("query", DataType::Utf8, true),
        Field::new("definition_version", DataType::UInt64, false),
        created_field(),
        Field::new("sql", DataType::Utf8, true),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(
            objects
                .iter()
                .map(|o| Some(o.name.clone()))
                .collect::<StringArray>(),
        ),
        text(&|d| Some(d.entity.clone())),
        text(&|d| Some(d.event_time.clone())),
        text(&|d| d.ttl.clone()),
        text(&|d| Some(d.query.clone())),
        Arc::new(
            objects
                .iter()
                .map(|o| Some(o.definition_version))
                .collect::<UInt64Array>(),
        ),
        Arc::new(utc_micros(
            objects.iter().map(|o| o.created_at_us).collect(),
        )),
        text(&|d| Some(d.sql.clone())),
    ];
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// `flywheel.training_sets`: one row per training set.
pub fn training_sets_batch(registry: &Registry) -> Result<RecordBatch> {
    let objects = registry.objects(KIND_TRAINING_SET);
    let defs: Vec<Option<TrainingSetDefinition>> =
        objects.iter().map(|o| o.decode().ok()).collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("label", DataType::Utf8, true),
        Field::new("features", DataType::Utf8, true),
        Field::new("definition_version", DataType::UInt64, false),
        created_field(),
        Field::new("sql", DataType::Utf8, true),
    ]));
    let features = |d: &TrainingSetDefinition| {
        d.features
            .iter()
            .map(|f| match &f.column {
                Some(c) => format!("{}.{c}", f.view),
                None => f.view.clone(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(
            objects
                .iter()
                .map(|o| Some(o.name.clone()))
                .collect::<StringArray>(),
        ),
        Arc::new(
            defs.iter()
                .map(|d| d.as_ref().map(|d| d.label.clone()))
                .collect::<StringArray>(),
        ),
        Arc::new(
            defs.iter()
                .map(|d| d.as_ref().map(features))
                .collect::<StringArray>(),
        ),
        Arc::new(
            objects
                .iter()
                .map(|o| Some(o.definition_version))
                .collect::<UInt64Array>(),
        ),
        Arc::new(utc_micros(
            objects.iter().map(|o| o.created_at_us).collect(),
        )),
        Arc::new(
            defs.iter()
                .map(|d| d.as_ref().map(|d| d.sql.clone()))
                .collect::<StringArray>(),
        ),
    ];
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// `flywheel.tables`: one row per table of the warehouse: its name, `managed` or `external`, the
/// Flywheel object whose table it is (`feature_view`, `label`, `training_set`; NULL for a plain
/// table) and its location (what other Delta readers open: managed tables live in folders named
/// by ids, not by their names).
pub fn tables_batch(registry: &Registry) -> Result<RecordBatch> {
    let names = registry.table_names();
    let entries: Vec<_> = names.iter().filter_map(|n| registry.table(n)).collect();
    let object = |name: &str| {
        [KIND_FEATURE_VIEW, KIND_LABEL, KIND_TRAINING_SET]
            .into_iter()
            .find(|k| registry.object(k, name).is_some())
    };
    let schema = Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("object", DataType::Utf8, true),
        Field::new("location", DataType::Utf8, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(
            entries
                .iter()
                .map(|e| Some(e.name.clone()))
                .collect::<StringArray>(),
        ),
        Arc::new(
            entries
                .iter()
                .map(|e| {
                    Some(match e.kind {
                        crate::TableKind::Managed => "managed",
                        crate::TableKind::External => "external",
                        crate::TableKind::Files(crate::FileFormat::Parquet) => "external parquet",
                        crate::TableKind::Files(crate::FileFormat::Csv { .. }) => "external csv",
                        crate::TableKind::Files(crate::FileFormat::Json) => "external json",
                    })
                })
                .collect::<StringArray>(),
        ),
        Arc::new(
            entries
                .iter()
                .map(|e| object(&e.name))
                .collect::<StringArray>(),
        ),
        Arc::new(
            entries
                .iter()
                .map(|e| Some(e.location.to_string()))
                .collect::<StringArray>(),
        ),
    ];
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// `flywheel.lineage`: one row per (training set version, input) with the input's Delta version.
pub fn lineage_batch(registry: &Registry) -> Result<RecordBatch> {
    let mut rows: Vec<(String, u64, String, u64)> = Vec::new();
    for o in registry.objects(KIND_TRAINING_SET_VERSION) {
        let Some((set, _)) = o.name.rsplit_once('@') else {
            continue;
        };
        let Ok(l) = o.decode::<Lineage>() else {
            continue;
        };
        for (input, v) in &l.inputs {
            rows.push((set.to_string(), l.version, input.clone(), *v));
        }
    }
    rows.sort();
    let schema = Arc::new(Schema::new(vec![
        Field::new("training_set", DataType::Utf8, false),
        Field::new("version", DataType::UInt64, false),
        Field::new("input", DataType::Utf8, false),
        Field::new("input_version", DataType::UInt64, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(
            rows.iter()
                .map(|r| Some(r.0.clone()))
                .collect::<StringArray>(),
        ),
        Arc::new(rows.iter().map(|r| Some(r.1)).collect::<UInt64Array>()),
        Arc::new(
            rows.iter()
                .map(|r| Some(r.2.clone()))
                .collect::<StringArray>(),
        ),
        Arc::new(rows.iter().map(|r| Some(r.3)).collect::<UInt64Array>()),
    ];
    Ok(RecordBatch::try_new(schema, columns)?)
}
