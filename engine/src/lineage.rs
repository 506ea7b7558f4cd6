//! Lineage at work: what each build read and what is stale (the refreshes that follow the graph
//! are `refresh`).
//!
//! Every build of a feature view, label or training set reads each input at a pinned Delta version
//! ([`pin_query`] rewrites a query's table references to `VERSION AS OF` their current versions)
//! and writes those versions into the Delta commit of the version it makes
//! ([`LINEAGE_METADATA_KEY`]): the record travels with the data and cannot be lost between two
//! commits. An object is **stale** when an input's current version differs from the one its latest
//! build read ([`staleness`]).
//!

use std::collections::{BTreeMap, HashMap};
use std::ops::ControlFlow;

use flywheel_catalog::lineage;
use flywheel_catalog::objects::Lineage;
use flywheel_catalog::{Registry, load_table};
use flywheel_sql::FlywheelStatement;
use flywheel_sql::ast::ObjectKind;
use sqlparser::ast::{Expr, TableFactor, TableVersion, Value, VisitorMut};

use super::Engine;
use crate::{Error, Result};

/// The key of a version's lineage in its Delta commit's metadata (`commitInfo`).
pub(crate) const LINEAGE_METADATA_KEY: &str = "flywheel.lineage";

/// The latest Delta version of the warehouse table `name`.
pub(super) async fn table_version(registry: &Registry, name: &str) -> Result<u64> {
    let entry = registry.table(name).ok_or_else(|| {
        Error::InvalidInput(format!(
            "the table of `{name}` is missing; REFRESH or re-create it"
        ))
    })?;
    Ok(load_table(&entry, None)
        .await?
        .version()
        .unwrap_or_default())
}

/// The Delta commit metadata that records `lineage` (what a build of `name` read) in the commit of
/// the version it writes.
pub(super) fn commit_metadata(
    name: &str,
    lineage: &Lineage,
) -> Result<HashMap<String, serde_json::Value>> {
    let recorded = serde_json::to_value(lineage)
        .map_err(|e| Error::InvalidInput(format!("cannot record the lineage of `{name}`: {e}")))?;
    Ok(HashMap::from([(
        LINEAGE_METADATA_KEY.to_string(),
        recorded,
    )]))
}

/// The one statement of `sql`, with every reference to a warehouse table that names no version
/// pinned at the table's current version (`t` becomes `t VERSION AS OF 7`); its text; and the
/// versions pinned.
pub(super) async fn pin_query(
    engine: &Engine,
    sql: &str,
) -> Result<(FlywheelStatement, String, BTreeMap<String, u64>)> {
    let mut versions = BTreeMap::new();
    for name in lineage::query_relations(sql) {
        if engine.registry().table(&name).is_some() {
            versions.insert(name.clone(), table_version(engine.registry(), &name).await?);
        }
    }
    let mut statement = engine.parse_one(sql)?;
    if let FlywheelStatement::DataFusion(s) = &mut statement {
        super::visit_statement_mut(s, &mut Pin(&versions))?;
    }
    let text = statement.to_string();
    Ok((statement, text, versions))
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

/// The `commitInfo` action of `version` of `table`, if it can be read.
pub(super) async fn commit_info(
    table: &deltalake::DeltaTable,
    version: u64,
) -> Option<serde_json::Value> {
    let bytes = table.log_store().read_commit_entry(version).await.ok()??;
    let text = std::str::from_utf8(&bytes).ok()?;
    text.lines().find_map(|line| {
        let mut action: serde_json::Value = serde_json::from_str(line).ok()?;
        action.get_mut("commitInfo").map(serde_json::Value::take)
    })
}

/// The lineage recorded in the Delta commit of `version` of `table`, if any.
pub(super) async fn lineage_in_commit(
    table: &deltalake::DeltaTable,
    version: u64,
) -> Option<Lineage> {
    let info = commit_info(table, version).await?;
    let mut lineage: Lineage =
        serde_json::from_value(info.get(LINEAGE_METADATA_KEY)?.clone()).ok()?;
    lineage.version = version;
    Some(lineage)
}

/// The rows the Delta commit of `version` of `table` added (its write metrics), if recorded.
pub(super) async fn rows_added(table: &deltalake::DeltaTable, version: u64) -> Option<u64> {
    let info = commit_info(table, version).await?;
    let metrics = info.get("operationMetrics")?;
    let added = metrics.get("num_added_rows")?;
    added
        .as_u64()
        .or_else(|| added.as_str().and_then(|s| s.parse().ok()))
}

/// The rows of `input` at `version`, from its files' statistics (`None` when a file has none).
pub(super) async fn rows_at(engine: &Engine, input: &str, version: u64) -> Option<u64> {
    let entry = engine.registry().table(input)?;
    let target = flywheel_catalog::TravelTarget::Version(version);
    let table = load_table(&entry, Some(&target)).await.ok()?;
    let snapshot = table.snapshot().ok()?;
    snapshot
        .log_data()
        .iter()
        .map(|f| f.num_records().map(|n| n as u64))
        .sum()
}

/// What the latest build of object `name` read, from its table's latest commit (`None`: built
/// before builds recorded it, or no table).
pub(super) async fn latest_build(registry: &Registry, name: &str) -> Result<Option<Lineage>> {
    let Some(entry) = registry.table(name) else {
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
    pub(super) fn is_fresh(&self) -> bool {
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
pub(super) async fn staleness(registry: &Registry, kind: &str, name: &str) -> Result<Staleness> {
    let built = latest_build(registry, name).await?;
    staleness_of(registry, kind, name, built.as_ref()).await
}

/// [`staleness`], given what the latest build of `name` read (`built`, from [`latest_build`]).
pub(super) async fn staleness_of(
    registry: &Registry,
    kind: &str,
    name: &str,
    built: Option<&Lineage>,
) -> Result<Staleness> {
    let Some(built) = built else {
        return Ok(Staleness::Unknown);
    };
    let mut moved = Vec::new();
    for input in lineage::inputs_of(registry, kind, name) {
        let now = table_version(registry, &input).await?;
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

/// Refuses a definition of `name` (a `noun`) reading `inputs` that would make it read itself.
pub(super) fn refuse_cycle(
    engine: &Engine,
    noun: &str,
    name: &str,
    inputs: &[String],
) -> Result<()> {
    match lineage::find_cycle(engine.registry(), name, inputs) {
        None => Ok(()),
        Some(path) => Err(Error::InvalidInput(format!(
            "{noun} `{name}` would read itself: {}; an object cannot depend on its own output",
            path.join(" -> ")
        ))),
    }
}

/// The object kind of a registry kind of derived objects (feature views, labels, training sets).
pub(super) fn object_kind(kind: &str) -> ObjectKind {
    ObjectKind::from_registry_kind(kind).unwrap_or(ObjectKind::TrainingSet)
}

/// How messages name a registry kind (`feature view`).
pub(super) fn noun(kind: &str) -> &'static str {
    object_kind(kind).noun()
}
