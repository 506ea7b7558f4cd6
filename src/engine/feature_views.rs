//! Feature views and labels: `CREATE [OR REPLACE] FEATURE VIEW`, `REFRESH FEATURE VIEW`,
//! `CREATE LABEL ... FROM`, and `DROP`, `SHOW`, `DESCRIBE` of both.
//!
//! A feature view is a query keyed by an entity and an event time. Creating one checks the query's
//! columns against the entity, then materializes it into a managed Delta table of the same name
//! (so `SELECT * FROM v` reads its latest materialization and `VERSION AS OF` its history); each
//! `REFRESH` overwrites it as one new Delta version.

use std::sync::Arc;

use arrow::datatypes::DataType;
use datafusion::common::TableReference;
use datafusion::logical_expr::{CreateMemoryTable, LogicalPlan};
use flywheel_catalog::objects::{
    EntityDefinition, FeatureViewDefinition, KIND_ENTITY, KIND_FEATURE_VIEW, KIND_LABEL,
};
use flywheel_sql::ast::CreateFeatureView;

use super::{Engine, Output, Planned, ddl, object_name};
use crate::{Error, Result};

/// The two kinds of keyed, time-stamped, materialized queries: feature views and labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Keyed {
    FeatureView,
    Label,
}

impl Keyed {
    /// The keyed kind of a statement's object kind; only `FEATURE VIEW` and `LABEL` are passed here.
    pub(super) fn of(kind: flywheel_sql::ast::ObjectKind) -> Self {
        match kind {
            flywheel_sql::ast::ObjectKind::FeatureView => Keyed::FeatureView,
            _ => Keyed::Label,
        }
    }

    fn registry_kind(self) -> &'static str {
        match self {
            Keyed::FeatureView => KIND_FEATURE_VIEW,
            Keyed::Label => KIND_LABEL,
        }
    }

    pub(super) fn noun(self) -> &'static str {
        match self {
            Keyed::FeatureView => "feature view",
            Keyed::Label => "label",
        }
    }

    pub(super) fn sql(self) -> &'static str {
        match self {
            Keyed::FeatureView => "FEATURE VIEW",
            Keyed::Label => "LABEL",
        }
    }

    fn plural_sql(self) -> &'static str {
        match self {
            Keyed::FeatureView => "FEATURE VIEWS",
            Keyed::Label => "LABELS",
        }
    }
}

fn is_integer_or_string(t: &DataType) -> Option<&'static str> {
    if t.is_integer() {
        Some("integer")
    } else if matches!(t, DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8) {
        Some("string")
    } else {
        None
    }
}

/// The type of a column's values: a dictionary column's value type (a partitioned Delta table's
/// partition columns come back dictionary-encoded), any other column's own type.
fn value_type(t: &DataType) -> &DataType {
    match t {
        DataType::Dictionary(_, value) => value,
        other => other,
    }
}

/// Whether a column of type `found` can carry an entity key declared as `declared` (an Arrow type
/// name): the same type, or the same family (integers, strings), dictionary-encoded or not.
fn key_type_fits(declared: &str, found: &DataType) -> bool {
    let found = value_type(found);
    if found.to_string() == declared {
        return true;
    }
    let declared_family = match declared {
        "Int8" | "Int16" | "Int32" | "Int64" | "UInt8" | "UInt16" | "UInt32" | "UInt64" => {
            Some("integer")
        }
        "Utf8" | "Utf8View" | "LargeUtf8" => Some("string"),
        _ => None,
    };
    declared_family.is_some() && declared_family == is_integer_or_string(found)
}

/// Plans the view's query and checks it against the entity; returns the plan.
async fn plan_and_check(
    engine: &Engine,
    kind: Keyed,
    name: &str,
    def: &FeatureViewDefinition,
) -> Result<LogicalPlan> {
    let noun = kind.noun();
    let entity = engine.registry().object(KIND_ENTITY, &def.entity).ok_or_else(|| {
        Error::Invalid(format!(
            "{noun} `{name}` names entity `{}`, which does not exist; CREATE ENTITY it first (SHOW ENTITIES lists them)",
            def.entity
        ))
    })?;
    let entity: EntityDefinition = serde_json::from_str(&entity.definition).map_err(|e| {
        Error::Invalid(format!(
            "entity `{}` has an unreadable definition: {e}",
            def.entity
        ))
    })?;
    let mut statements = engine.parse(&def.query)?;
    let statement = match statements.len() {
        1 => statements.remove(0),
        n => return Err(Error::NotOneStatement { found: n }),
    };
    let plan = match engine.plan(statement).await? {
        Planned::Query(plan) => plan,
        _ => {
            return Err(Error::Invalid(format!(
                "feature view `{name}` must be defined by a query (AS SELECT ...)"
            )));
        }
    };
    let schema = plan.schema();
    let find = |column: &str| schema.fields().iter().find(|f| f.name() == column).cloned();
    let columns = || {
        schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    for key in &entity.keys {
        let Some(field) = find(&key.name) else {
            return Err(Error::Invalid(format!(
                "{noun} `{name}`: its query has no column `{}`, a key of entity `{}` ({}); its columns are {}",
                key.name,
                def.entity,
                key.sql_type,
                columns()
            )));
        };
        if !key_type_fits(&key.arrow_type, field.data_type()) {
            return Err(Error::Invalid(format!(
                "{noun} `{name}`: column `{}` is {}, but entity `{}` declares it {} ({})",
                key.name,
                field.data_type(),
                def.entity,
                key.sql_type,
                key.arrow_type
            )));
        }
    }
    let Some(time) = find(&def.event_time) else {
        return Err(Error::Invalid(format!(
            "{noun} `{name}`: its query has no event time column `{}`; its columns are {}",
            def.event_time,
            columns()
        )));
    };
    let time_type = value_type(time.data_type());
    let ok_time = matches!(
        time_type,
        DataType::Timestamp(..) | DataType::Date32 | DataType::Date64
    ) || time_type.is_integer();
    if !ok_time {
        return Err(Error::Invalid(format!(
            "{noun} `{name}`: event time column `{}` is {}; it must be a timestamp, a date or an integer",
            def.event_time,
            time.data_type()
        )));
    }
    Ok(plan)
}

/// `CREATE [OR REPLACE] FEATURE VIEW [IF NOT EXISTS] ...`.
pub(super) async fn create(engine: &Engine, c: CreateFeatureView) -> Result<Output> {
    let name = object_name(&c.name);
    let Some(exists) = super::feature_views::create_prologue(
        engine,
        KIND_FEATURE_VIEW,
        "feature view",
        "FEATURE VIEW",
        &name,
        c.mode,
    )?
    else {
        return Ok(Output::empty());
    };
    let ttl = match &c.ttl {
        Some(t) => {
            // Checked by planning it: a TTL must be an interval.
            let sql = format!("SELECT {t}");
            let plan = engine
                .context()
                .state()
                .create_logical_plan(&sql)
                .await
                .map_err(Error::from_datafusion)?;
            if !matches!(plan.schema().field(0).data_type(), DataType::Interval(_)) {
                return Err(Error::Invalid(format!(
                    "feature view `{name}`: TTL must be an interval, e.g. TTL INTERVAL '30 days'; found {t}"
                )));
            }
            Some(t.to_string())
        }
        None => None,
    };
    let def = FeatureViewDefinition {
        entity: object_name(&c.entity),
        event_time: object_name(&c.event_time),
        ttl,
        options: c
            .options
            .iter()
            .map(|o| (object_name(&o.key), o.value.to_string()))
            .collect(),
        query: c.query.to_string(),
        sql: flywheel_sql::ast::FlywheelDdl::CreateFeatureView(Box::new(c.clone())).to_string(),
    };
    let plan = plan_and_check(engine, Keyed::FeatureView, &name, &def).await?;
    materialize(engine, &name, plan, exists).await?;
    store(engine, &name, &def).await?;
    Ok(Output::empty())
}

/// Records a feature view's (new) definition, then loads it into the online store or takes it
/// out, as its options say.
async fn store(engine: &Engine, name: &str, def: &FeatureViewDefinition) -> Result<()> {
    let json = serde_json::to_string(def)
        .map_err(|e| Error::Invalid(format!("cannot store feature view `{name}`: {e}")))?;
    engine
        .registry()
        .create_object(KIND_FEATURE_VIEW, name, json, true)
        .await?;
    engine
        .sync_online(name, def)
        .await
        .map_err(|e| online_load_failed(name, "recorded", e))
}

/// `e`, from loading `view` into the online store after its definition (and table) were
/// committed, saying so: the statement is not to be run again, the view is to be refreshed.
fn online_load_failed(view: &str, done: &str, e: Error) -> Error {
    let say = |why: String| {
        format!(
            "feature view `{view}` was {done}, but loading it into the online store failed: \
             {why}; REFRESH FEATURE VIEW {view} loads it again"
        )
    };
    match e {
        Error::Unavailable(why) => Error::Unavailable(say(why)),
        Error::Transport(why) => Error::Transport(say(why)),
        other => other,
    }
}

/// Writes the view's rows as its table: a new table, or one overwrite commit of the existing one.
pub(super) async fn materialize(
    engine: &Engine,
    name: &str,
    plan: LogicalPlan,
    replace: bool,
) -> Result<()> {
    let create = CreateMemoryTable {
        name: TableReference::bare(name),
        constraints: Default::default(),
        input: Arc::new(plan),
        if_not_exists: false,
        or_replace: replace,
        column_defaults: vec![],
        temporary: false,
    };
    ddl::create_table(engine, create).await.map(|_| ())
}

fn not_found(kind: Keyed, name: &str) -> Error {
    Error::NotFound(format!(
        "{} `{name}` not found; SHOW {} lists them",
        kind.noun(),
        kind.plural_sql()
    ))
}

pub(super) fn definition(
    engine: &Engine,
    kind: Keyed,
    name: &str,
) -> Result<FeatureViewDefinition> {
    registry_definition(engine.registry(), kind, name)
}

/// [`definition`], from the registry alone (the online store's SQL function holds no engine).
pub(super) fn registry_definition(
    registry: &flywheel_catalog::Registry,
    kind: Keyed,
    name: &str,
) -> Result<FeatureViewDefinition> {
    let entry = registry
        .object(kind.registry_kind(), name)
        .ok_or_else(|| not_found(kind, name))?;
    serde_json::from_str(&entry.definition).map_err(|e| {
        Error::Invalid(format!(
            "{} `{name}` has an unreadable definition: {e}",
            kind.noun()
        ))
    })
}

/// `REFRESH FEATURE VIEW v`: re-runs the query into a new version of its table.
pub(super) async fn refresh(engine: &Engine, name: &str) -> Result<Output> {
    let def = definition(engine, Keyed::FeatureView, name)?;
    let plan = plan_and_check(engine, Keyed::FeatureView, name, &def).await?;
    materialize(engine, name, plan, true).await?;
    engine
        .sync_online(name, &def)
        .await
        .map_err(|e| online_load_failed(name, "refreshed", e))?;
    Ok(Output::empty())
}

/// `ALTER FEATURE VIEW v SET (key = value, ...)`: sets options; `online = true|false` loads the
/// view into the online store or takes it out.
pub(super) async fn alter(
    engine: &Engine,
    name: &str,
    options: Vec<flywheel_sql::ast::SqlOption>,
) -> Result<Output> {
    let mut def = definition(engine, Keyed::FeatureView, name)?;
    for o in options {
        let key = object_name(&o.key);
        let value = o.value.to_string();
        if key.eq_ignore_ascii_case("online")
            && !value.eq_ignore_ascii_case("true")
            && !value.eq_ignore_ascii_case("false")
        {
            return Err(Error::Invalid(format!(
                "feature view `{name}`: online must be true or false, not {value}"
            )));
        }
        def.options.retain(|(k, _)| !k.eq_ignore_ascii_case(&key));
        def.options.push((key, value));
    }
    store(engine, name, &def).await?;
    Ok(Output::empty())
}

/// `DROP FEATURE VIEW|LABEL [IF EXISTS] v`: forgets the object and removes its table.
/// Training sets that read it are named in the error, or dropped first with `CASCADE`.
pub(super) async fn drop(
    engine: &Engine,
    kind: Keyed,
    name: &str,
    if_exists: bool,
    cascade: bool,
) -> Result<Output> {
    if engine
        .registry()
        .object(kind.registry_kind(), name)
        .is_none()
    {
        if if_exists {
            return Ok(Output::empty());
        }
        return Err(not_found(kind, name));
    }
    let dependents = super::training_sets::reading(engine, name);
    if !dependents.is_empty() && !cascade {
        return Err(Error::Invalid(format!(
            "{} `{name}` is read by training set(s) {}; drop them first, or DROP {} {name} CASCADE",
            kind.noun(),
            dependents
                .iter()
                .map(|d| format!("`{d}`"))
                .collect::<Vec<_>>()
                .join(", "),
            kind.sql()
        )));
    }
    for d in dependents {
        super::training_sets::drop(engine, &d, true).await?;
    }
    engine
        .registry()
        .drop_object(kind.registry_kind(), name)
        .await?;
    let entry = engine.registry().drop_table(name).await?;
    super::ddl::remove_files(engine, &entry).await?;
    if kind == Keyed::FeatureView {
        engine.online().remove(name).await?;
    }
    Ok(Output::empty())
}

/// `SHOW FEATURE VIEWS` / `SHOW LABELS`: name, entity, event time, TTL, query (the system tables
/// `flywheel.feature_views` / `flywheel.labels` have every column).
pub(super) fn show(engine: &Engine, kind: Keyed) -> Result<Output> {
    let all = flywheel_catalog::objects::keyed_batch(engine.registry(), kind.registry_kind())?;
    Ok(Output::Batch(all.project(&[0, 1, 2, 3, 4])?))
}

/// `DESCRIBE FEATURE VIEW v`: one (property, value) row per part of its definition.
pub(super) fn describe(engine: &Engine, kind: Keyed, name: &str) -> Result<Output> {
    let def = definition(engine, kind, name)?;
    let version = engine
        .registry()
        .object(kind.registry_kind(), name)
        .map(|o| o.definition_version.to_string())
        .unwrap_or_default();
    let mut rows: Vec<(String, String)> = vec![
        ("entity".into(), def.entity.clone()),
        ("event_time".into(), def.event_time.clone()),
        ("ttl".into(), def.ttl.clone().unwrap_or_default()),
        ("query".into(), def.query.clone()),
        ("definition_version".into(), version),
        ("sql".into(), def.sql.clone()),
    ];
    rows.extend(
        def.options
            .iter()
            .map(|(k, v)| (format!("option.{k}"), v.clone())),
    );
    super::training_sets::two_columns("property", "value", rows)
}

/// The kind of keyed object whose table `name` is, if any (DROP TABLE refuses those).
pub(super) fn keyed_object(engine: &Engine, name: &str) -> Option<Keyed> {
    [Keyed::FeatureView, Keyed::Label]
        .into_iter()
        .find(|k| engine.registry().object(k.registry_kind(), name).is_some())
}

impl Engine {
    /// The definition of the feature view or label `name`, if there is one.
    pub fn keyed_definition(&self, name: &str) -> Option<FeatureViewDefinition> {
        let kind = keyed_object(self, name)?;
        definition(self, kind, name).ok()
    }
}

/// The feature views and labels keyed by `entity` (`feature view `v``, ...).
pub(super) fn using_entity(engine: &Engine, entity: &str) -> Vec<String> {
    let mut out = Vec::new();
    for kind in [Keyed::FeatureView, Keyed::Label] {
        for o in engine.registry().objects(kind.registry_kind()) {
            if serde_json::from_str::<FeatureViewDefinition>(&o.definition)
                .is_ok_and(|d| d.entity == entity)
            {
                out.push(format!("{} `{}`", kind.noun(), o.name));
            }
        }
    }
    out
}

/// `CREATE [OR REPLACE] LABEL [IF NOT EXISTS] l ENTITY e EVENT TIME ts FROM (query) | FROM table`:
/// checked like a feature view and materialized as a Delta table of its name.
pub(super) async fn create_label(
    engine: &Engine,
    c: flywheel_sql::ast::CreateLabel,
) -> Result<Output> {
    let name = object_name(&c.name);
    let registry = engine.registry();
    let Some(exists) =
        super::feature_views::create_prologue(engine, KIND_LABEL, "label", "LABEL", &name, c.mode)?
    else {
        return Ok(Output::empty());
    };
    let query = match &c.source {
        flywheel_sql::ast::LabelSource::Query(q) => q.to_string(),
        flywheel_sql::ast::LabelSource::Table(t) => format!("SELECT * FROM {t}"),
    };
    let def = FeatureViewDefinition {
        entity: object_name(&c.entity),
        event_time: object_name(&c.event_time),
        ttl: None,
        options: vec![],
        query,
        sql: flywheel_sql::ast::FlywheelDdl::CreateLabel(Box::new(c.clone())).to_string(),
    };
    let plan = plan_and_check(engine, Keyed::Label, &name, &def).await?;
    materialize(engine, &name, plan, exists).await?;
    let json = serde_json::to_string(&def)
        .map_err(|e| Error::Invalid(format!("cannot store label `{name}`: {e}")))?;
    registry
        .create_object(KIND_LABEL, &name, json, true)
        .await?;
    Ok(Output::empty())
}

/// The common start of a `CREATE` of a materialized object: `Ok(None)` when `IF NOT EXISTS` finds
/// it (nothing to do), `Ok(Some(exists))` otherwise; an error when the name is taken.
pub(super) fn create_prologue(
    engine: &Engine,
    registry_kind: &str,
    noun: &str,
    sql_kind: &str,
    name: &str,
    mode: flywheel_sql::ast::CreateMode,
) -> Result<Option<bool>> {
    let registry = engine.registry();
    let exists = registry.object(registry_kind, name).is_some();
    if exists && mode.if_not_exists {
        return Ok(None);
    }
    if exists && !mode.or_replace {
        return Err(Error::Exists(format!(
            "{noun} `{name}` already exists; use CREATE OR REPLACE {sql_kind}, IF NOT EXISTS, or DROP {sql_kind} {name} first"
        )));
    }
    if !exists && registry.table(name).is_some() {
        return Err(Error::Exists(format!(
            "a table named `{name}` already exists; a {noun} is materialized as a table of its name, so pick another name"
        )));
    }
    Ok(Some(exists))
}
