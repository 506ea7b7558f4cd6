//! Feature views and labels: `CREATE [OR REPLACE] FEATURE VIEW`, `REFRESH FEATURE VIEW`,
//! `CREATE LABEL ... FROM`, and `DROP`, `SHOW`, `DESCRIBE` of both.
//!
//! A feature view is a query keyed by an entity and an event time. Creating one checks the query's
//! columns against the entity, then materializes it into a managed Delta table of the same name
//! (so `SELECT * FROM v` reads its latest materialization and `VERSION AS OF` its history); each
//! `REFRESH` overwrites it as one new Delta version.

use std::collections::HashMap;

use arrow::datatypes::DataType;
use datafusion::logical_expr::LogicalPlan;
use flywheel_catalog::objects::{
    EntityDefinition, FeatureViewDefinition, KIND_ENTITY, KIND_FEATURE_VIEW, Lineage,
};
use flywheel_catalog::{Change, TableEntry};
use flywheel_sql::ast::{CreateFeatureView, ObjectKind};

use super::definitions::{Keyed, definition};
use super::incremental::{self, Decision, Outcome};
use super::refresh_history::Mode;
use super::schedules::{self, Schedule};
use super::{Engine, Output, Planned, lineage, object_name};
use crate::delta_types::value_type;
use crate::{Error, Result};

fn is_integer_or_string(t: &DataType) -> Option<&'static str> {
    if t.is_integer() {
        Some("integer")
    } else if matches!(t, DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8) {
        Some("string")
    } else {
        None
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

/// Plans the view's query, with every input pinned at its current version, and checks it against
/// the entity; returns the plan and the lineage to record in the commit of the version it builds.
pub(super) async fn plan_and_check(
    engine: &Engine,
    kind: Keyed,
    name: &str,
    def: &FeatureViewDefinition,
) -> Result<(LogicalPlan, Lineage)> {
    let noun = kind.noun();
    let entity: EntityDefinition = engine
        .registry()
        .definition(KIND_ENTITY, &def.entity)?
        .ok_or_else(|| {
            Error::InvalidInput(format!(
                "{noun} `{name}` names entity `{}`, which does not exist; CREATE ENTITY it first (SHOW ENTITIES lists them)",
                def.entity
            ))
        })?;
    // A view with aggregate features materializes their inputs (its event log).
    let split = match kind {
        Keyed::FeatureView => {
            let keys: Vec<String> = entity.keys.iter().map(|k| k.name.clone()).collect();
            Some(crate::windows::split_with_keys(engine, name, def, &keys)?)
        }
        Keyed::Label => None,
    };
    let aggregates = split
        .as_ref()
        .map(|s| s.aggregates.clone())
        .unwrap_or_default();
    if !aggregates.is_empty()
        && let Some(ttl) = &def.ttl
    {
        return Err(Error::InvalidInput(format!(
            "feature view `{name}`: TTL {ttl} does not apply to aggregate features (their windows bound the events they read); drop the TTL"
        )));
    }
    let query = split.map(|s| s.query).unwrap_or_else(|| def.query.clone());
    let (statement, pinned, inputs) = lineage::pin_query(engine, &query).await?;
    let record = Lineage {
        version: 0,
        inputs,
        query: pinned,
    };
    let plan = match engine.plan(statement).await? {
        Planned::Query(plan) => plan,
        _ => {
            return Err(Error::InvalidInput(format!(
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
            return Err(Error::InvalidInput(format!(
                "{noun} `{name}`: its query has no column `{}`, a key of entity `{}` ({}); its columns are {}",
                key.name,
                def.entity,
                key.sql_type,
                columns()
            )));
        };
        if !key_type_fits(&key.arrow_type, field.data_type()) {
            return Err(Error::InvalidInput(format!(
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
        return Err(Error::InvalidInput(format!(
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
        return Err(Error::InvalidInput(format!(
            "{noun} `{name}`: event time column `{}` is {}; it must be a timestamp, a date or an integer",
            def.event_time,
            time.data_type()
        )));
    }
    if !aggregates.is_empty() && time_type.is_integer() {
        return Err(Error::InvalidInput(format!(
            "{noun} `{name}`: aggregate features need a timestamp or date event time; `{}` is {}",
            def.event_time,
            time.data_type()
        )));
    }
    for a in &aggregates {
        if let Some(field) = find(&a.name) {
            a.func.output_type(&a.name, value_type(field.data_type()))?;
        }
    }
    Ok((plan, record))
}

/// `CREATE [OR REPLACE] FEATURE VIEW [IF NOT EXISTS] ...`.
pub(super) async fn create(engine: &Engine, c: CreateFeatureView) -> Result<Output> {
    until_settled(|| create_once(engine, &c)).await
}

/// One try of [`create`]; `Ok(None)` when it lost the race for the name and is to run again.
async fn create_once(engine: &Engine, c: &CreateFeatureView) -> Result<Option<Output>> {
    let name = object_name(&c.name);
    let Some(exists) = create_prologue(engine, ObjectKind::FeatureView, &name, c.mode)? else {
        return Ok(Some(Output::empty()));
    };
    let ttl = match &c.ttl {
        Some(t) => {
            // A TTL is an interval literal: training sets and online loads read it as one.
            if super::plans::interval(engine, &t.to_string()).is_err() {
                return Err(Error::InvalidInput(format!(
                    "feature view `{name}`: TTL must be an interval, e.g. TTL INTERVAL '30 days'; found {t}"
                )));
            }
            Some(t.to_string())
        }
        None => None,
    };
    let mut options = checked_options(&name, &c.options)?;
    let schedule = schedules::from_options("feature view", &name, &options)?;
    options.retain(|(k, _)| !k.eq_ignore_ascii_case("refresh"));
    let def = FeatureViewDefinition {
        entity: object_name(&c.entity),
        event_time: object_name(&c.event_time),
        ttl,
        options,
        query: c.query.to_string(),
        sql: flywheel_sql::ast::FlywheelDdl::CreateFeatureView(Box::new(c.clone())).to_string(),
    };
    lineage::refuse_cycle(
        engine,
        "feature view",
        &name,
        &registered_inputs(engine, &def),
    )?;
    let (plan, record) = plan_and_check(engine, Keyed::FeatureView, &name, &def).await?;
    let metadata = lineage::commit_metadata(&name, &record)?;
    let materialized = materialize(engine, &name, plan, metadata).await?;
    let changes = vec![
        object_change(KIND_FEATURE_VIEW, &name, &def, exists)?,
        schedules::set_change(
            KIND_FEATURE_VIEW,
            &name,
            &schedule.unwrap_or(Schedule::Manual),
        )?,
    ];
    match commit_object(engine, materialized, changes).await {
        Ok(()) => {}
        Err(e) if lost_create_race(&e) => {
            return after_lost_race(engine, ObjectKind::FeatureView, &name, c.mode).await;
        }
        Err(e) => return Err(e),
    }
    engine
        .sync_online(&name, &def)
        .await
        .map_err(|e| online_load_failed(&name, "recorded", e))?;
    Ok(Some(Output::empty()))
}

/// The options a feature view takes in `WITH (...)` and `ALTER FEATURE VIEW ... SET (...)`, with
/// the values each accepts.
const OPTIONS: [(&str, &str); 2] = [
    ("online", "true or false"),
    (
        "refresh",
        "a schedule such as 'every 15 minutes', 'cron: */15 * * * *', 'on change' or 'manual'",
    ),
];

/// The options of a `WITH (...)` or `SET (...)` as stored (`(key, value)`); options a feature view
/// does not know (a misspelled `onlin = true` would otherwise be stored and the view silently not
/// served) and values they do not take are refused.
pub(super) fn checked_options(
    name: &str,
    options: &[flywheel_sql::ast::SqlOption],
) -> Result<Vec<(String, String)>> {
    let options: Vec<(String, String)> = options
        .iter()
        .map(|o| (object_name(&o.key), o.value.to_string()))
        .collect();
    for (key, value) in &options {
        let Some((_, values)) = OPTIONS.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)) else {
            let valid: Vec<String> = OPTIONS
                .iter()
                .map(|(k, v)| format!("`{k}` ({v})"))
                .collect();
            return Err(Error::InvalidInput(format!(
                "feature view `{name}`: unknown option `{key}`; the options are {}",
                valid.join(", ")
            )));
        };
        if key.eq_ignore_ascii_case("online")
            && !value.eq_ignore_ascii_case("true")
            && !value.eq_ignore_ascii_case("false")
        {
            return Err(Error::InvalidInput(format!(
                "feature view `{name}`: online must be {values}, not {value}"
            )));
        }
    }
    Ok(options)
}

/// Records a feature view's (new) definition, then loads it into the online store or takes it
/// out, as its options say.
pub(super) async fn store(engine: &Engine, name: &str, def: &FeatureViewDefinition) -> Result<()> {
    let change = object_change(KIND_FEATURE_VIEW, name, def, true)?;
    engine.registry().commit(vec![change]).await?;
    engine
        .sync_online(name, def)
        .await
        .map_err(|e| online_load_failed(name, "recorded", e))
}

/// The registry change that records `def` as the definition of `kind`/`name`.
pub(super) fn object_change(
    kind: &str,
    name: &str,
    def: &FeatureViewDefinition,
    replace: bool,
) -> Result<Change> {
    let definition = serde_json::to_string(def)
        .map_err(|e| Error::InvalidInput(format!("cannot store `{name}`: {e}")))?;
    Ok(Change::CreateObject {
        kind: kind.to_string(),
        name: name.to_string(),
        definition,
        replace,
    })
}

/// `e`, from loading `view` into the online store after its definition (and table) were
/// committed, saying so: the statement is not to be run again, the view is to be refreshed.
pub(super) fn online_load_failed(view: &str, done: &str, e: Error) -> Error {
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

/// What [`materialize`] wrote.
#[derive(Debug)]
pub(super) enum Materialized {
    /// A new table (version 0) in a folder of its own, not yet registered: [`commit_object`]
    /// registers it with its object in one registry commit.
    New(TableEntry),
    /// A new version of the object's registered table.
    Version(u64),
}

impl Materialized {
    /// The Delta version written.
    pub(super) fn version(&self) -> u64 {
        match self {
            Materialized::New(_) => 0,
            Materialized::Version(v) => *v,
        }
    }
}

/// Writes an object's rows as its table, with `metadata` in the Delta commit: a new table when
/// the name has none, otherwise one overwrite commit of the existing one. Rows read from one Delta
/// table are written in the commit order of their source rows, so a correction stays after the
/// row it corrects ([`crate::asof::in_commit_order`]).
pub(super) async fn materialize(
    engine: &Engine,
    name: &str,
    plan: LogicalPlan,
    metadata: HashMap<String, serde_json::Value>,
) -> Result<Materialized> {
    let plan = crate::asof::in_commit_order(plan);
    match engine.registry().table(name) {
        Some(existing) => Ok(Materialized::Version(
            super::table_writes::replace_table(engine, &existing, &plan, metadata).await?,
        )),
        None => Ok(Materialized::New(
            super::table_writes::write_new_table(engine, name, &plan, metadata).await?,
        )),
    }
}

/// Records `changes` (an object's definition, its lineage) in one registry commit, with the
/// object's table when it is new: a crash leaves the object entirely there or entirely absent.
pub(super) async fn commit_object(
    engine: &Engine,
    materialized: Materialized,
    changes: Vec<Change>,
) -> Result<()> {
    match materialized {
        Materialized::New(entry) => super::table_writes::register(engine, &entry, changes).await,
        Materialized::Version(_) => {
            engine.registry().commit(changes).await?;
            Ok(())
        }
    }
}

/// Whether a `CREATE` failed because another statement registered the name while it wrote.
pub(super) fn lost_create_race(e: &Error) -> bool {
    matches!(
        e,
        Error::Catalog(
            flywheel_catalog::Error::TableExists { .. }
                | flywheel_catalog::Error::ObjectExists { .. }
        )
    )
}

/// What a `CREATE` that lost the race for its name answers: `IF NOT EXISTS` succeeds (the
/// object exists), `OR REPLACE` is to run again (`Ok(None)`: it now replaces the winner), a
/// plain `CREATE` says the name is taken.
pub(super) async fn after_lost_race(
    engine: &Engine,
    kind: ObjectKind,
    name: &str,
    mode: flywheel_sql::ast::CreateMode,
) -> Result<Option<Output>> {
    engine.registry().refresh().await?;
    let exists = engine
        .registry()
        .object(kind.registry_kind(), name)
        .is_some();
    if exists && mode.if_not_exists {
        return Ok(Some(Output::empty()));
    }
    if exists && mode.or_replace {
        return Ok(None);
    }
    create_prologue(engine, kind, name, mode)?;
    Err(Error::AlreadyExists {
        kind,
        name: name.to_string(),
        hint: "another statement created it at the same moment".into(),
    })
}

/// Runs a `CREATE` again while it loses the race for its name and is to replace the winner
/// (`OR REPLACE`), a few times at most.
pub(super) async fn until_settled<F, Fut>(mut create: F) -> Result<Output>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<Output>>>,
{
    for _ in 0..4 {
        if let Some(output) = create().await? {
            return Ok(output);
        }
    }
    Err(Error::Conflict(
        "other statements kept creating the same name while this one replaced it; run it again"
            .into(),
    ))
}

/// `REFRESH FEATURE VIEW v` / `REFRESH LABEL l` (`ONLY`): a new version from the inputs' current
/// versions, appended from what they gained when that gives what a full refresh would
/// ([`incremental`]), else recomputed whole (always with `full`).
pub(super) async fn refresh(
    engine: &Engine,
    kind: Keyed,
    name: &str,
    full: bool,
) -> Result<Outcome> {
    let def = definition(engine, kind, name)?;
    let outcome =
        super::conflicts::retry(name, || refresh_once(engine, kind, name, &def, full)).await?;
    if kind == Keyed::FeatureView {
        // An incremental refresh that appended updates only the keys of the rows it appended.
        let synced = match (outcome.mode, outcome.appended) {
            (Mode::Incremental, Some(appended)) => {
                engine.sync_online_appended(name, &def, appended).await
            }
            _ => engine.sync_online(name, &def).await,
        };
        synced.map_err(|e| online_load_failed(name, "refreshed", e))?;
    }
    Ok(outcome)
}

async fn refresh_once(
    engine: &Engine,
    kind: Keyed,
    name: &str,
    def: &FeatureViewDefinition,
    full: bool,
) -> Result<Outcome> {
    let registry = engine.registry();
    let (plan, record) = plan_and_check(engine, kind, name, def).await?;
    let metadata = lineage::commit_metadata(name, &record)?;
    match incremental::decide(registry, name, &record.inputs, &plan, full).await? {
        Decision::Unchanged => Ok(Outcome::unchanged(record.inputs)),
        Decision::Append {
            built,
            entry,
            gained,
        } => {
            let plan = incremental::over_appended_rows(registry, plan, &gained).await?;
            let plan = crate::asof::in_commit_order(plan);
            let written =
                super::table_writes::append_version(engine, &entry, &plan, metadata, built.version)
                    .await?;
            let why = format!(
                "its inputs only gained rows ({})",
                incremental::gained_text(&gained)
            );
            Ok(Outcome::appended(
                why,
                built.inputs,
                (built.version, written),
            ))
        }
        Decision::Full(why) => {
            materialize(engine, name, plan, metadata).await?;
            Ok(Outcome::full(why))
        }
    }
}

/// The tables and objects a feature view's or label's query reads, per the registry now.
pub(super) fn registered_inputs(engine: &Engine, def: &FeatureViewDefinition) -> Vec<String> {
    flywheel_catalog::lineage::query_relations(&def.query)
        .into_iter()
        .filter(|n| engine.registry().table(n).is_some())
        .collect()
}

/// `ALTER FEATURE VIEW v SET (key = value, ...)`: sets options; `online = true|false` loads the
/// view into the online store or takes it out, `refresh = '...'` sets its schedule.
pub(super) async fn alter(
    engine: &Engine,
    name: &str,
    options: Vec<flywheel_sql::ast::SqlOption>,
) -> Result<Output> {
    let mut def = definition(engine, Keyed::FeatureView, name)?;
    let checked = checked_options(name, &options)?;
    if let Some(schedule) = schedules::from_options("feature view", name, &checked)? {
        schedules::set(engine, KIND_FEATURE_VIEW, name, &schedule).await?;
    }
    let others: Vec<(String, String)> = checked
        .into_iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("refresh"))
        .collect();
    if others.is_empty() {
        return Ok(Output::empty());
    }
    for (key, value) in others {
        def.options.retain(|(k, _)| !k.eq_ignore_ascii_case(&key));
        def.options.push((key, value));
    }
    store(engine, name, &def).await?;
    Ok(Output::empty())
}

/// Forgets the object `kind`/`name` and its table in one registry commit, then removes the
/// table's files.
pub(super) async fn drop_with_table(engine: &Engine, kind: &str, name: &str) -> Result<()> {
    let mut changes = vec![
        Change::DropObject {
            kind: kind.to_string(),
            name: name.to_string(),
        },
        schedules::drop_change(name),
    ];
    if engine.registry().table(name).is_some() {
        changes.push(Change::DropTable {
            name: name.to_string(),
        });
    }
    let committed = engine.registry().commit(changes).await?;
    for entry in committed.dropped_tables {
        super::table_writes::remove_files(engine, &entry).await?;
    }
    Ok(())
}

/// `SHOW FEATURE VIEWS` / `SHOW LABELS`: name, entity, event time, TTL, query (the system tables
/// `flywheel.feature_views` / `flywheel.labels` have every column).
pub(super) fn show(engine: &Engine, kind: Keyed) -> Result<Output> {
    let all = flywheel_catalog::objects::keyed_batch(engine.registry(), kind.registry_kind())?;
    Ok(Output::Batch(all.project(&[0, 1, 2, 3, 4])?))
}

/// `DESCRIBE FEATURE VIEW v`: one (property, value) row per part of its definition, then what its
/// latest version was built from and whether an input moved since.
pub(super) async fn describe(engine: &Engine, kind: Keyed, name: &str) -> Result<Output> {
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
    if kind == Keyed::FeatureView
        && let Ok(split) = engine.split_view(name, &def)
    {
        rows.extend(
            split
                .columns
                .iter()
                .map(|(column, k)| (format!("column.{column}"), k.describe())),
        );
    }
    rows.extend(
        super::freshness::describe_rows(engine.registry(), kind.registry_kind(), name).await?,
    );
    super::output::two_columns("property", "value", rows)
}

/// The common start of a `CREATE` of a materialized object: `Ok(None)` when `IF NOT EXISTS` finds
/// it (nothing to do), `Ok(Some(exists))` otherwise; an error when the name is taken.
pub(super) fn create_prologue(
    engine: &Engine,
    kind: ObjectKind,
    name: &str,
    mode: flywheel_sql::ast::CreateMode,
) -> Result<Option<bool>> {
    let registry = engine.registry();
    let exists = registry.object(kind.registry_kind(), name).is_some();
    if exists && mode.if_not_exists {
        return Ok(None);
    }
    if exists && !mode.or_replace {
        let sql = kind.sql();
        return Err(Error::AlreadyExists {
            kind,
            name: name.to_string(),
            hint: format!("use CREATE OR REPLACE {sql}, IF NOT EXISTS, or DROP {sql} {name} first"),
        });
    }
    if !exists && registry.table(name).is_some() {
        return Err(Error::NameTaken {
            kind,
            name: name.to_string(),
        });
    }
    Ok(Some(exists))
}
