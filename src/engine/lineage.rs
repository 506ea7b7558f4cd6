//! Lineage at work: what each build read, what is stale, and refreshes that follow the graph.
//!
//! Every build of a feature view, label or training set reads each input at a pinned Delta version
//! ([`pin_query`] rewrites a query's table references to `VERSION AS OF` their current versions)
//! and writes those versions into the Delta commit of the version it makes
//! ([`LINEAGE_METADATA_KEY`]): the record travels with the data and cannot be lost between two
//! commits. An object is **stale** when an input's current version differs from the one its latest
//! build read ([`staleness`]).
//!
//! `REFRESH <kind> x` refreshes x's stale upstream objects first, inputs before the objects that
//! read them (the graph is `flywheel_catalog::lineage`), then x; `REFRESH <kind> x ONLY` refreshes x
//! alone; `REFRESH ALL` refreshes every stale object in that order. Each refresh is its own Delta
//! commit: when one fails, the ones before it keep their new versions and the error names the
//! object that failed.

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use flywheel_catalog::lineage::{self, DERIVED_KINDS};
use flywheel_catalog::load_table;
use flywheel_catalog::objects::{KIND_FEATURE_VIEW, KIND_LABEL, KIND_TRAINING_SET, Lineage};
use sqlparser::ast::{Expr, TableFactor, TableVersion, Value, VisitorMut};

use super::feature_views::{self, Keyed};
use super::{Engine, Output, training_sets};
use crate::{Error, Result};

/// The key of a version's lineage in its Delta commit's metadata (`commitInfo`).
pub(crate) const LINEAGE_METADATA_KEY: &str = "flywheel.lineage";

/// The latest Delta version of the warehouse table `name`.
pub(super) async fn table_version(engine: &Engine, name: &str) -> Result<u64> {
    let entry = engine.registry().table(name).ok_or_else(|| {
        Error::Invalid(format!(
            "the table of `{name}` is missing; REFRESH or re-create it"
        ))
    })?;
    Ok(load_table(&entry, None)
        .await?
        .version()
        .unwrap_or_default())
}

/// `sql` with every reference to a warehouse table that names no version pinned at the table's
/// current version (`t` becomes `t VERSION AS OF 7`), and the versions pinned.
pub(super) async fn pin_query(
    engine: &Engine,
    sql: &str,
) -> Result<(String, BTreeMap<String, u64>)> {
    let mut versions = BTreeMap::new();
    for name in lineage::query_relations(sql) {
        if engine.registry().table(&name).is_some() {
            versions.insert(name.clone(), table_version(engine, &name).await?);
        }
    }
    let mut statements = engine.parse(sql)?;
    let [flywheel_sql::FlywheelStatement::DataFusion(statement)] = statements.as_mut_slice() else {
        return Err(Error::NotOneStatement {
            found: statements.len(),
        });
    };
    super::visit_statement_mut(statement, &mut Pin(&versions))?;
    Ok((statement.to_string(), versions))
}

/// Pins unversioned table references whose names are in its map.
struct Pin<'a>(&'a BTreeMap<String, u64>);

impl VisitorMut for Pin<'_> {
    type Break = Error;

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<Error> {
        if let TableFactor::Table { name, version, .. } = factor
            && version.is_none()
            && let Some(ident) = name.0.last().and_then(|part| part.as_ident())
            && let Some(v) = self.0.get(&super::object_name(ident))
        {
            *version = Some(TableVersion::VersionAsOf(Expr::value(Value::Number(
                v.to_string(),
                false,
            ))));
        }
        ControlFlow::Continue(())
    }
}

/// The lineage recorded in the Delta commit of `version` of `table`, if any.
pub(super) async fn lineage_in_commit(
    table: &deltalake::DeltaTable,
    version: u64,
) -> Option<Lineage> {
    let bytes = table.log_store().read_commit_entry(version).await.ok()??;
    let text = std::str::from_utf8(&bytes).ok()?;
    let mut lineage: Lineage = text.lines().find_map(|line| {
        let action: serde_json::Value = serde_json::from_str(line).ok()?;
        let recorded = action.get("commitInfo")?.get(LINEAGE_METADATA_KEY)?;
        serde_json::from_value(recorded.clone()).ok()
    })?;
    lineage.version = version;
    Some(lineage)
}

/// What the latest build of object `name` read, from its table's latest commit (`None`: built
/// before builds recorded it, or no table).
pub(super) async fn latest_build(engine: &Engine, name: &str) -> Result<Option<Lineage>> {
    let Some(entry) = engine.registry().table(name) else {
        return Ok(None);
    };
    let table = load_table(&entry, None).await?;
    Ok(lineage_in_commit(&table, table.version().unwrap_or_default()).await)
}

/// Whether object `name` (of registry kind `kind`) is stale, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Staleness {
    /// Every input is at the version its latest build read.
    Fresh,
    /// These inputs moved: (input, version read, version now).
    Stale(Vec<(String, u64, u64)>),
    /// Its latest build recorded nothing (built by an older Flywheel): treated as stale.
    Unknown,
}

impl Staleness {
    fn is_fresh(&self) -> bool {
        matches!(self, Staleness::Fresh)
    }

    /// How `DESCRIBE` says it.
    pub(super) fn describe(&self) -> String {
        match self {
            Staleness::Fresh => "no".into(),
            Staleness::Unknown => {
                "unknown: its latest build recorded no input versions (REFRESH records them)".into()
            }
            Staleness::Stale(moved) => {
                let list: Vec<String> = moved
                    .iter()
                    .map(|(input, was, now)| format!("{input} (built from {was}, now {now})"))
                    .collect();
                format!("yes: {}", list.join(", "))
            }
        }
    }
}

/// Compares the inputs' current versions with what the latest build of `name` read.
pub(super) async fn staleness(engine: &Engine, kind: &str, name: &str) -> Result<Staleness> {
    let Some(built) = latest_build(engine, name).await? else {
        return Ok(Staleness::Unknown);
    };
    let mut moved = Vec::new();
    for input in lineage::inputs_of(engine.registry(), kind, name) {
        let now = table_version(engine, &input).await?;
        match built.inputs.get(&input) {
            Some(&was) if was == now => {}
            Some(&was) => moved.push((input, was, now)),
            None => return Ok(Staleness::Unknown),
        }
    }
    Ok(if moved.is_empty() {
        Staleness::Fresh
    } else {
        Staleness::Stale(moved)
    })
}

/// `built_from` as `DESCRIBE` says it: `events@3, user@0`.
pub(super) fn built_from(built: &Option<Lineage>) -> String {
    match built {
        Some(l) => l
            .inputs
            .iter()
            .map(|(k, v)| format!("{k}@{v}"))
            .collect::<Vec<_>>()
            .join(", "),
        None => String::new(),
    }
}

/// Refuses a definition of `name` (a `noun`) reading `inputs` that would make it read itself.
pub(super) fn refuse_cycle(
    engine: &Engine,
    noun: &str,
    name: &str,
    inputs: &[String],
) -> Result<()> {
    match lineage::find_cycle(engine.registry(), name, inputs) {
        None => Ok(()),
        Some(path) => Err(Error::Invalid(format!(
            "{noun} `{name}` would read itself: {}; an object cannot depend on its own output",
            path.join(" -> ")
        ))),
    }
}

/// The SQL words of a registry kind (`FEATURE VIEW`).
fn sql_kind(kind: &str) -> &'static str {
    match kind {
        KIND_FEATURE_VIEW => "FEATURE VIEW",
        KIND_LABEL => "LABEL",
        _ => "TRAINING SET",
    }
}

/// Refreshes one object from its inputs' current versions.
async fn refresh_one(engine: &Engine, kind: &str, name: &str) -> Result<()> {
    match kind {
        KIND_FEATURE_VIEW => feature_views::refresh(engine, name).await.map(|_| ()),
        KIND_LABEL => feature_views::refresh_label(engine, name).await,
        _ => training_sets::refresh(engine, name).await.map(|_| ()),
    }
}

/// `REFRESH <kind> name [ONLY]`.
pub(super) async fn refresh(
    engine: &Engine,
    keyed: Option<Keyed>,
    name: &str,
    only: bool,
) -> Result<Output> {
    let kind = match keyed {
        Some(Keyed::FeatureView) => KIND_FEATURE_VIEW,
        Some(Keyed::Label) => KIND_LABEL,
        None => KIND_TRAINING_SET,
    };
    if engine.registry().object(kind, name).is_none() {
        return Err(Error::NotFound(format!(
            "{} `{name}` not found; SHOW {}S lists them",
            sql_kind(kind).to_lowercase(),
            sql_kind(kind)
        )));
    }
    let mut done = Vec::new();
    if !only {
        for (up_kind, up) in lineage::upstream(engine.registry(), name) {
            if staleness(engine, up_kind, &up).await?.is_fresh() {
                continue;
            }
            refresh_one(engine, up_kind, &up)
                .await
                .map_err(|e| stopped_at(name, up_kind, &up, &done, e))?;
            done.push(up);
        }
    }
    refresh_one(engine, kind, name).await.map_err(|e| {
        if done.is_empty() {
            e
        } else {
            stopped_at(name, kind, name, &done, e)
        }
    })?;
    Ok(Output::empty())
}

/// `REFRESH ALL`: every stale object, inputs first.
pub(super) async fn refresh_all(engine: &Engine) -> Result<Output> {
    let mut done = Vec::new();
    for (kind, name) in lineage::all_in_order(engine.registry()) {
        if !DERIVED_KINDS.contains(&kind) || staleness(engine, kind, &name).await?.is_fresh() {
            continue;
        }
        refresh_one(engine, kind, &name)
            .await
            .map_err(|e| stopped_at("ALL", kind, &name, &done, e))?;
        done.push(name);
    }
    Ok(Output::empty())
}

/// The error of a refresh of `target` that failed at `failed`, saying what was refreshed before
/// (the failure's own error, and its status, inside).
fn stopped_at(target: &str, kind: &str, failed: &str, done: &[String], e: Error) -> Error {
    let before = if done.is_empty() {
        "nothing was refreshed before it".to_string()
    } else {
        format!(
            "{} refreshed before it and keep their new versions",
            done.iter()
                .map(|d| format!("`{d}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    Error::Stopped {
        context: format!(
            "REFRESH {target} stopped at {} `{failed}` ({before})",
            sql_kind(kind).to_lowercase()
        ),
        cause: Box::new(e),
    }
}
