//! Entities: `CREATE [OR REPLACE] ENTITY [IF NOT EXISTS] e (key TYPE, ...)`, `DESCRIBE ENTITY`,
//! and the keys other objects join on.

use std::sync::Arc;

use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use flywheel_catalog::objects::{EntityDefinition, EntityKey, KIND_ENTITY};
use flywheel_sql::ast::{CreateEntity, FlywheelDdl, ObjectKind};
use sqlparser::ast::DataType as SqlType;

use super::{Engine, Output, object_name};
use crate::{Error, Result};

pub(super) fn not_found(name: &str) -> Error {
    Error::NotFound {
        kind: ObjectKind::Entity,
        name: name.to_string(),
    }
}

/// The Arrow type a SQL type maps to, as DataFusion's planner maps it.
async fn arrow_type(engine: &Engine, column: &str, t: &SqlType) -> Result<DataType> {
    let plan = engine
        .context()
        .state()
        .create_logical_plan(&format!("SELECT CAST(NULL AS {t})"))
        .await
        .map_err(|e| {
            Error::InvalidInput(format!(
                "entity key `{column}` has type {t}, which Flywheel does not know: {}",
                Error::from_datafusion(e).user_message()
            ))
        })?;
    Ok(plan.schema().field(0).data_type().clone())
}

pub(super) async fn create_entity(engine: &Engine, c: CreateEntity) -> Result<Output> {
    let name = object_name(&c.name);
    let registry = engine.registry();
    if c.mode.if_not_exists && registry.object(KIND_ENTITY, &name).is_some() {
        return Ok(Output::empty());
    }
    if c.keys.is_empty() {
        return Err(Error::InvalidInput(format!(
            "entity `{name}` needs at least one key column, e.g. CREATE ENTITY {name} (id BIGINT)"
        )));
    }
    let mut keys: Vec<EntityKey> = Vec::with_capacity(c.keys.len());
    for k in &c.keys {
        let column = object_name(&k.name);
        if keys.iter().any(|x| x.name == column) {
            return Err(Error::InvalidInput(format!(
                "entity `{name}` names key `{column}` twice"
            )));
        }
        let arrow = arrow_type(engine, &column, &k.data_type).await?;
        keys.push(EntityKey {
            name: column,
            sql_type: k.data_type.to_string(),
            arrow_type: arrow.to_string(),
        });
    }
    let sql = FlywheelDdl::CreateEntity(c.clone()).to_string();
    let definition = serde_json::to_string(&EntityDefinition { keys, sql })
        .map_err(|e| Error::InvalidInput(format!("cannot store entity `{name}`: {e}")))?;
    match registry
        .create_object(KIND_ENTITY, &name, definition, c.mode.or_replace)
        .await
    {
        Ok(()) => Ok(Output::empty()),
        // Created by another statement since the check above.
        Err(flywheel_catalog::Error::ObjectExists { .. }) if c.mode.if_not_exists => {
            Ok(Output::empty())
        }
        Err(flywheel_catalog::Error::ObjectExists { .. }) => Err(Error::AlreadyExists {
            kind: ObjectKind::Entity,
            name: name.to_string(),
            hint: format!(
                "use CREATE OR REPLACE ENTITY, CREATE ENTITY IF NOT EXISTS, or DROP ENTITY {name} first"
            ),
        }),
        Err(e) => Err(e.into()),
    }
}

/// The stored definition of entity `name`.
pub(super) fn entity_definition(engine: &Engine, name: &str) -> Result<EntityDefinition> {
    engine
        .registry()
        .definition(KIND_ENTITY, name)?
        .ok_or_else(|| not_found(name))
}

impl Engine {
    /// The key column names of entity `name`, in its order.
    pub fn entity_keys(&self, name: &str) -> Result<Vec<String>> {
        Ok(entity_definition(self, name)?
            .keys
            .into_iter()
            .map(|k| k.name)
            .collect())
    }
}

pub(super) fn describe_entity(engine: &Engine, name: &str) -> Result<Output> {
    let def = entity_definition(engine, name)?;
    let schema = Arc::new(Schema::new(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("sql_type", DataType::Utf8, false),
        Field::new("arrow_type", DataType::Utf8, false),
    ]));
    let col = |f: fn(&EntityKey) -> &str| -> StringArray {
        def.keys.iter().map(|k| Some(f(k))).collect()
    };
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(col(|k| &k.name)),
            Arc::new(col(|k| &k.sql_type)),
            Arc::new(col(|k| &k.arrow_type)),
        ],
    )?;
    Ok(Output::Batch(batch))
}
