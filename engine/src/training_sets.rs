//! Training sets: `CREATE [OR REPLACE] TRAINING SET t LABEL l FEATURES v1, v2.col`, `REFRESH TRAINING
//! SET`, `SHOW TRAINING SETS`, `DESCRIBE TRAINING SET`, `DROP TRAINING SET`.
//!
//! A training set is the label's rows, each joined AS OF its event time with every listed feature
//! view on that view's entity keys (`ASOF JOIN`, `>=`), the view's TTL honoured (an older value is
//! NULL). Columns: the label's, then the features'; a feature column whose name is taken is renamed
//! `view__column`. Every build reads each input at a pinned Delta version and writes one version of
//! the training set's Delta table; the input versions are recorded (lineage), so an old version of
//! the training set is never changed and says what it was built from.

use std::collections::{BTreeMap, HashSet};

use datafusion::logical_expr::{Expr, JoinType, LogicalPlan, LogicalPlanBuilder, lit, when};
use flywheel_catalog::Change;
use flywheel_catalog::load_table;
use flywheel_catalog::objects::{
    EntityDefinition, FeatureItem, KIND_ENTITY, KIND_TRAINING_SET, KIND_TRAINING_SET_VERSION,
    Lineage, TrainingSetDefinition,
};
use flywheel_sql::ast::{CreateTrainingSet, ObjectKind};

use super::definitions::{Keyed, definition};
use super::definitions::{training_set_definition, training_set_not_found};
use super::feature_views::{
    Materialized, after_lost_race, commit_object, lost_create_race, materialize, until_settled,
};
use super::incremental::{self, Decision, Outcome};
use super::lineage::{lineage_in_commit, table_version};
use super::plans::{asof_match, column, interval, names_of, pinned_scan};
use super::schedules::{self, Schedule};
use super::{Engine, Output, object_name};
use crate::{Error, Result};

/// The training set's plan, every input scanned at its current version: the label's rows (`l`),
/// left-joined AS OF their event time with each feature view (`f0`, `f1`, ...) on its entity's
/// keys, the views' TTLs applied. Returns the plan and the versions read.
async fn build_plan(
    engine: &Engine,
    name: &str,
    def: &TrainingSetDefinition,
) -> Result<(LogicalPlan, BTreeMap<String, u64>)> {
    let df = |e| Error::from_datafusion(e);
    let label = definition(engine, Keyed::Label, &def.label)?;
    let mut inputs = BTreeMap::new();
    let lv = table_version(engine.registry(), &def.label).await?;
    inputs.insert(def.label.clone(), lv);
    let label_scan = pinned_scan(engine, &def.label, lv, "l").await?;
    let label_cols = names_of(&label_scan);
    let mut taken: HashSet<String> = label_cols.iter().cloned().collect();
    let mut select: Vec<Expr> = label_cols.iter().map(|c| column("l", c)).collect();
    let mut plan = LogicalPlanBuilder::from(label_scan);
    // Whole views first expand to their columns; `view.column` items pick one.
    let mut by_view: Vec<(String, Vec<Option<String>>)> = Vec::new();
    for f in &def.features {
        match by_view.iter_mut().find(|(v, _)| v == &f.view) {
            Some((_, cols)) => cols.push(f.column.clone()),
            None => by_view.push((f.view.clone(), vec![f.column.clone()])),
        }
    }
    for (i, (view, items)) in by_view.iter().enumerate() {
        let vdef = definition(engine, Keyed::FeatureView, view).map_err(|_| {
            Error::InvalidInput(format!(
                "training set `{name}` lists feature view `{view}`, which does not exist; SHOW FEATURE VIEWS lists them"
            ))
        })?;
        let entity = engine
            .registry()
            .definition::<EntityDefinition>(KIND_ENTITY, &vdef.entity)
            .ok()
            .flatten()
            .ok_or_else(|| {
                Error::InvalidInput(format!(
                    "feature view `{view}` names a missing entity `{}`",
                    vdef.entity
                ))
            })?;
        let alias = format!("f{i}");
        let vv = table_version(engine.registry(), view).await?;
        inputs.insert(view.clone(), vv);
        let view_scan = pinned_scan(engine, view, vv, &alias).await?;
        let view_cols = names_of(&view_scan);
        let keys: Vec<String> = entity.keys.iter().map(|k| k.name.clone()).collect();
        for k in &keys {
            if !label_cols.contains(k) {
                return Err(Error::InvalidInput(format!(
                    "training set `{name}`: feature view `{view}` joins on entity `{}` key `{k}`, which label `{}` does not have; its columns are {}",
                    vdef.entity,
                    def.label,
                    label_cols.join(", ")
                )));
            }
        }
        let split = engine.split_view(view, &vdef)?;
        if !split.aggregates.is_empty() {
            // Aggregate features: evaluated at each label row's time.
            let mut chosen: Vec<crate::windows::Aggregate> = Vec::new();
            if items.iter().any(|c| c.is_none()) {
                chosen = split.aggregates.clone();
            } else {
                for c in items.iter().flatten() {
                    let Some(a) = split.aggregates.iter().find(|a| &a.name == c) else {
                        let names: Vec<&str> =
                            split.aggregates.iter().map(|a| a.name.as_str()).collect();
                        return Err(Error::InvalidInput(format!(
                            "training set `{name}`: feature view `{view}` has no feature `{c}`; its features are {}",
                            names.join(", ")
                        )));
                    };
                    if !chosen.contains(a) {
                        chosen.push(a.clone());
                    }
                }
            }
            for a in &chosen {
                select.push(column(&alias, &a.name).alias(output_name(&mut taken, view, &a.name)));
            }
            let node = crate::windows::WindowAggNode::try_new(
                plan.build().map_err(df)?,
                view_scan,
                keys.iter()
                    .map(|k| (column("l", k), column(&alias, k)))
                    .collect(),
                column("l", &label.event_time),
                column(&alias, &vdef.event_time),
                chosen
                    .into_iter()
                    .map(|a| {
                        let input = column(&alias, &a.name);
                        (a, input)
                    })
                    .collect(),
                Some(datafusion::common::TableReference::bare(alias.as_str())),
            )
            .map_err(df)?;
            plan = LogicalPlanBuilder::from(LogicalPlan::Extension(
                datafusion::logical_expr::Extension {
                    node: std::sync::Arc::new(node),
                },
            ));
            continue;
        }
        let wanted: Vec<String> = if items.iter().any(|c| c.is_none()) {
            view_cols
                .iter()
                .filter(|c| !keys.contains(c) && **c != vdef.event_time)
                .cloned()
                .collect()
        } else {
            let mut out = Vec::new();
            for c in items.iter().flatten() {
                if !view_cols.contains(c) {
                    return Err(Error::InvalidInput(format!(
                        "training set `{name}`: feature view `{view}` has no column `{c}`; its columns are {}",
                        view_cols.join(", ")
                    )));
                }
                out.push(c.clone());
            }
            out
        };
        // Within the TTL: the feature's event time is at most `ttl` before the label's.
        let fresh = match &vdef.ttl {
            Some(ttl) => Some(
                column(&alias, &vdef.event_time)
                    .gt_eq(column("l", &label.event_time) - lit(interval(engine, ttl)?)),
            ),
            None => None,
        };
        for c in wanted {
            let out_name = output_name(&mut taken, view, &c);
            let value = column(&alias, &c);
            let expr = match &fresh {
                Some(cond) => when(cond.clone(), value).end().map_err(df)?,
                None => value,
            };
            select.push(expr.alias(out_name));
        }
        let matched =
            asof_match(column("l", &label.event_time).gt_eq(column(&alias, &vdef.event_time)));
        let on = keys
            .iter()
            .map(|k| column("l", k).eq(column(&alias, k)))
            .chain([matched])
            .reduce(Expr::and);
        plan = plan.join_on(view_scan, JoinType::Left, on).map_err(df)?;
    }
    let plan = plan
        .project(select)
        .and_then(LogicalPlanBuilder::build)
        .map_err(df)?;
    Ok((plan, inputs))
}

/// The training set's plan with every input pinned at its current version, and the lineage its
/// build records (the versions read, and the plan as text).
async fn plan_query(
    engine: &Engine,
    name: &str,
    def: &TrainingSetDefinition,
) -> Result<(LogicalPlan, Lineage)> {
    let (plan, inputs) = build_plan(engine, name, def).await?;
    let lineage = Lineage {
        version: 0,
        inputs,
        query: plan.display_indent().to_string(),
    };
    Ok((plan, lineage))
}

fn lineage_change(name: &str, lineage: &Lineage) -> Result<Change> {
    Ok(Change::CreateObject {
        kind: KIND_TRAINING_SET_VERSION.to_string(),
        name: format!("{name}@{}", lineage.version),
        definition: serde_json::to_string(lineage)
            .map_err(|e| Error::InvalidInput(format!("cannot store lineage of `{name}`: {e}")))?,
        replace: true,
    })
}

/// Builds (or rebuilds) the training set's table; returns what was written and the registry
/// change recording the new version's lineage (to be committed with the caller's other changes).
async fn build(
    engine: &Engine,
    name: &str,
    def: &TrainingSetDefinition,
) -> Result<(Materialized, Change)> {
    let (plan, mut lineage) = plan_query(engine, name, def).await?;
    let metadata = super::lineage::commit_metadata(name, &lineage)?;
    let materialized = materialize(engine, name, plan, metadata).await?;
    lineage.version = materialized.version();
    Ok((materialized, lineage_change(name, &lineage)?))
}

/// `CREATE [OR REPLACE] TRAINING SET [IF NOT EXISTS] ...`: the table, its first version's
/// lineage and the definition are registered in one registry commit, so a crash while building
/// leaves no trace but an unregistered folder (the name stays free).
pub(super) async fn create(engine: &Engine, c: CreateTrainingSet) -> Result<Output> {
    until_settled(|| create_once(engine, &c)).await
}

/// One try of [`create`]; `Ok(None)` when it lost the race for the name and is to run again.
async fn create_once(engine: &Engine, c: &CreateTrainingSet) -> Result<Option<Output>> {
    let name = object_name(&c.name);
    let registry = engine.registry();
    let Some(exists) =
        super::feature_views::create_prologue(engine, ObjectKind::TrainingSet, &name, c.mode)?
    else {
        return Ok(Some(Output::empty()));
    };
    let options = schedules::only_refresh_option("training set", &name, &c.options)?;
    let schedule =
        schedules::from_options("training set", &name, &options)?.unwrap_or(Schedule::Manual);
    let label = object_name(&c.label);
    if registry
        .object(flywheel_catalog::objects::KIND_LABEL, &label)
        .is_none()
    {
        return Err(Error::InvalidInput(format!(
            "training set `{name}` names label `{label}`, which does not exist; SHOW LABELS lists them"
        )));
    }
    let def = TrainingSetDefinition {
        label,
        features: c
            .features
            .iter()
            .map(|f| FeatureItem {
                view: object_name(&f.view),
                column: f.column.as_ref().map(object_name),
            })
            .collect(),
        sql: flywheel_sql::ast::FlywheelDdl::CreateTrainingSet(c.clone()).to_string(),
    };
    let inputs: Vec<String> = std::iter::once(def.label.clone())
        .chain(def.features.iter().map(|f| f.view.clone()))
        .collect();
    super::lineage::refuse_cycle(engine, "training set", &name, &inputs)?;
    let (materialized, lineage) = build(engine, &name, &def).await?;
    let json = serde_json::to_string(&def)
        .map_err(|e| Error::InvalidInput(format!("cannot store training set `{name}`: {e}")))?;
    let definition = Change::CreateObject {
        kind: KIND_TRAINING_SET.to_string(),
        name: name.clone(),
        definition: json,
        replace: exists,
    };
    let schedule = schedules::set_change(KIND_TRAINING_SET, &name, &schedule)?;
    match commit_object(engine, materialized, vec![lineage, definition, schedule]).await {
        Ok(()) => {}
        Err(e) if lost_create_race(&e) => {
            return after_lost_race(engine, ObjectKind::TrainingSet, &name, c.mode).await;
        }
        Err(e) => return Err(e),
    }
    Ok(Some(Output::empty()))
}

/// `REFRESH TRAINING SET t` (`ONLY`): a new version from the inputs' current versions. When only
/// its label gained rows, the new rows' point-in-time features are appended (each label row's
/// features depend on that row and the feature views alone); otherwise, or with `full`, it is
/// rebuilt ([`incremental`]).
pub(super) async fn refresh(engine: &Engine, name: &str, full: bool) -> Result<Outcome> {
    let def = training_set_definition(engine, name)?;
    super::conflicts::retry(name, || refresh_once(engine, name, &def, full)).await
}

async fn refresh_once(
    engine: &Engine,
    name: &str,
    def: &TrainingSetDefinition,
    full: bool,
) -> Result<Outcome> {
    let registry = engine.registry();
    let (plan, mut lineage) = plan_query(engine, name, def).await?;
    let metadata = super::lineage::commit_metadata(name, &lineage)?;
    match incremental::decide(registry, name, &lineage.inputs, &plan, full).await? {
        Decision::Unchanged => Ok(Outcome::unchanged(lineage.inputs)),
        Decision::Append {
            built,
            entry,
            gained,
        } => {
            let plan = incremental::over_appended_rows(registry, plan, &gained).await?;
            lineage.version =
                super::table_writes::append_version(engine, &entry, &plan, metadata, built.version)
                    .await?;
            registry
                .commit(vec![lineage_change(name, &lineage)?])
                .await?;
            let why = format!(
                "only its label gained rows ({}): their features were appended",
                incremental::gained_text(&gained)
            );
            Ok(Outcome::appended(
                why,
                built.inputs,
                (built.version, lineage.version),
            ))
        }
        Decision::Full(why) => {
            let materialized = materialize(engine, name, plan, metadata).await?;
            lineage.version = materialized.version();
            commit_object(engine, materialized, vec![lineage_change(name, &lineage)?]).await?;
            Ok(Outcome::full(why))
        }
    }
}

/// `DROP TRAINING SET [IF EXISTS] t`: the definition and the table in one registry commit.
pub(super) async fn drop(engine: &Engine, name: &str, if_exists: bool) -> Result<Output> {
    if engine.registry().object(KIND_TRAINING_SET, name).is_none() {
        if if_exists {
            return Ok(Output::empty());
        }
        return Err(training_set_not_found(name));
    }
    super::feature_views::drop_with_table(engine, KIND_TRAINING_SET, name).await?;
    Ok(Output::empty())
}

/// `SHOW TRAINING SETS`: name and label (`flywheel.training_sets` has every column).
pub(super) fn show(engine: &Engine) -> Result<Output> {
    let all = flywheel_catalog::objects::training_sets_batch(engine.registry())?;
    Ok(Output::Batch(all.project(&[0, 1])?))
}

/// `DESCRIBE TRAINING SET t`: its definition, then the lineage of each version.
pub(super) async fn describe(engine: &Engine, name: &str) -> Result<Output> {
    let def = training_set_definition(engine, name)?;
    let mut rows = vec![
        ("label".to_string(), def.label.clone()),
        (
            "features".to_string(),
            def.features
                .iter()
                .map(|f| match &f.column {
                    Some(c) => format!("{}.{c}", f.view),
                    None => f.view.clone(),
                })
                .collect::<Vec<_>>()
                .join(", "),
        ),
        ("sql".to_string(), def.sql.clone()),
    ];
    // Every version is listed below with what it was built from, the latest included.
    let freshness =
        super::freshness::describe_rows(engine.registry(), KIND_TRAINING_SET, name).await?;
    rows.extend(freshness.into_iter().filter(|(p, _)| p != "built_from"));
    for l in lineages(engine, name).await? {
        rows.push((
            format!("version {}", l.version),
            format!(
                "built from {}",
                super::refresh_history::versions_text(&l.inputs)
            ),
        ));
    }
    super::output::two_columns("property", "value", rows)
}

/// The lineage of every version of training set `name`, oldest first: from the registry and, for
/// a version whose registry commit never happened (its build stopped between its Delta commit
/// and its registry commit), from the version's own Delta commit ([`LINEAGE_METADATA_KEY`]).
async fn lineages(engine: &Engine, name: &str) -> Result<Vec<Lineage>> {
    let mut versions: BTreeMap<u64, Lineage> = engine
        .registry()
        .definitions::<Lineage>(KIND_TRAINING_SET_VERSION)
        .into_iter()
        .filter(|(o, _)| o.name.rsplit_once('@').is_some_and(|(set, _)| set == name))
        .map(|(_, l)| (l.version, l))
        .collect();
    let Some(entry) = engine.registry().table(name) else {
        return Ok(versions.into_values().collect());
    };
    let table = load_table(&entry, None).await?;
    for version in 0..=table.version().unwrap_or_default() {
        if versions.contains_key(&version) {
            continue;
        }
        if let Some(lineage) = lineage_in_commit(&table, version).await {
            versions.insert(version, lineage);
        }
    }
    Ok(versions.into_values().collect())
}

/// The output column of feature `feature` of `view`: its own name, or `view__feature` when an
/// earlier column took it; recorded in `taken`.
fn output_name(taken: &mut HashSet<String>, view: &str, feature: &str) -> String {
    let name = if taken.contains(feature) {
        format!("{view}__{feature}")
    } else {
        feature.to_string()
    };
    taken.insert(name.clone());
    name
}
