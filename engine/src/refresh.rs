//! `REFRESH`: following the lineage graph, running each object's refresh and recording it.
//!
//! `REFRESH <kind> x` refreshes x's stale upstream objects first, inputs before the objects that
//! read them (the graph is `flywheel_catalog::lineage`), then x; `REFRESH <kind> x ONLY` refreshes x
//! alone; `REFRESH ALL` refreshes every stale object in that order. Each refresh is its own Delta
//! commit: when one fails, the ones before it keep their new versions and the error names the
//! object that failed. Every refresh, done or failed, is a row of `flywheel.refresh_history`.

use flywheel_catalog::lineage::{self, DERIVED_KINDS};
use flywheel_catalog::load_table;
use flywheel_catalog::objects::{KIND_FEATURE_VIEW, KIND_LABEL, KIND_TRAINING_SET};
use flywheel_sql::ast::{AlterAction, ObjectKind};

use super::definitions::Keyed;
use super::feature_views;
use std::collections::BTreeMap;

use super::lineage::{lineage_in_commit, noun, object_kind, rows_added, rows_at, staleness};
use super::refresh_history::{self, Mode, RefreshRecord, Trigger};
use super::{Engine, Output, schedules, training_sets};
use crate::{Error, Result};

/// Refreshes one object from its inputs' current versions (recomputed whole with `full`).
async fn refresh_one(
    engine: &Engine,
    kind: &str,
    name: &str,
    full: bool,
) -> Result<super::incremental::Outcome> {
    match kind {
        KIND_FEATURE_VIEW => feature_views::refresh(engine, Keyed::FeatureView, name, full).await,
        KIND_LABEL => feature_views::refresh(engine, Keyed::Label, name, full).await,
        _ => training_sets::refresh(engine, name, full).await,
    }
}

/// What a refresh asks for (`REFRESH`, `flywheel refresh`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshScope {
    /// These objects (feature views, labels, training sets, by name), each after its stale
    /// upstream objects; with `only`, the named objects alone.
    Objects { names: Vec<String>, only: bool },
    /// Every stale object (`REFRESH ALL`).
    Stale,
    /// Every object, stale or not.
    All,
}

/// One object a refresh built.
#[derive(Debug, Clone, PartialEq)]
pub struct Refreshed {
    /// `feature view`, `label` or `training set`.
    pub kind: &'static str,
    pub name: String,
    /// The Delta version written.
    pub version: u64,
    /// How it was computed.
    pub mode: Mode,
    /// The rows the new version holds or added (as its Delta commit recorded), if known.
    pub rows_written: Option<u64>,
    pub elapsed: std::time::Duration,
}

/// What a refresh is about to do, for progress reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshStep {
    /// `feature view`, `label` or `training set`.
    pub kind: &'static str,
    pub name: String,
    /// 1-based position among the objects the refresh may build, and their count.
    pub position: usize,
    pub of: usize,
}

/// One step of a refresh: an object, and whether it is refreshed only when stale.
type Step = (&'static str, String, bool);

/// The steps of `scope`, inputs before the objects that read them.
fn steps(engine: &Engine, scope: &RefreshScope) -> Result<Vec<Step>> {
    let registry = engine.registry();
    match scope {
        RefreshScope::Stale => Ok(lineage::all_in_order(registry)
            .into_iter()
            .map(|(k, n)| (k, n, true))
            .collect()),
        RefreshScope::All => Ok(lineage::all_in_order(registry)
            .into_iter()
            .map(|(k, n)| (k, n, false))
            .collect()),
        RefreshScope::Objects { names, only } => {
            for name in names {
                match lineage::kind_of(registry, name) {
                    Some(k) if DERIVED_KINDS.contains(&k) => {}
                    Some(_) => {
                        return Err(Error::InvalidInput(format!(
                            "`{name}` is a table, not a feature view, label or training set: only \
                             those are refreshed"
                        )));
                    }
                    None => return Err(Error::NotRefreshable { name: name.clone() }),
                }
            }
            let wanted = |n: &String| names.contains(n);
            let mut needed: Vec<String> = names.clone();
            if !*only {
                for name in names {
                    needed.extend(
                        lineage::upstream(registry, name)
                            .into_iter()
                            .map(|(_, n)| n),
                    );
                }
            }
            Ok(lineage::all_in_order(registry)
                .into_iter()
                .filter(|(_, n)| needed.contains(n))
                .map(|(k, n)| {
                    let if_stale = !wanted(&n);
                    (k, n, if_stale)
                })
                .collect())
        }
    }
}

impl Engine {
    /// Refreshes what `scope` names, inputs first, one Delta commit per object (incrementally
    /// where that gives what a full refresh would, unless `full`); `progress` hears
    /// of each object before it is built. Returns what was built. When one fails, those before it
    /// keep their new versions and the error names the one that failed ([`Error::Stopped`]).
    /// Each refresh is recorded in `flywheel.refresh_history` as asked for by `trigger` (objects
    /// refreshed because something downstream was: `upstream`).
    pub async fn refresh(
        &self,
        scope: RefreshScope,
        trigger: Trigger,
        full: bool,
        mut progress: impl FnMut(&RefreshStep) + Send,
    ) -> Result<Vec<Refreshed>> {
        let target = match &scope {
            RefreshScope::Objects { names, .. } => names.join(", "),
            RefreshScope::Stale => "ALL".into(),
            RefreshScope::All => "every object".into(),
        };
        // A single object failing on its own, with nothing refreshed before: its own error.
        let alone = match &scope {
            RefreshScope::Objects { names, .. } if names.len() == 1 => names.first().cloned(),
            _ => None,
        };
        let named = |n: &str| match &scope {
            RefreshScope::Objects { names, .. } => names.iter().any(|x| x == n),
            _ => true,
        };
        let steps = steps(self, &scope)?;
        let of = steps.len();
        let mut done: Vec<Refreshed> = Vec::new();
        for (position, (kind, name, if_stale)) in steps.into_iter().enumerate() {
            if if_stale && staleness(&self.registry, kind, &name).await?.is_fresh() {
                continue;
            }
            progress(&RefreshStep {
                kind: noun(kind),
                name: name.clone(),
                position: position + 1,
                of,
            });
            let trigger = if named(&name) {
                trigger
            } else {
                Trigger::Upstream
            };
            let refreshed = refresh_recorded(self, kind, &name, trigger, full).await;
            let refreshed = refreshed.map_err(|e| {
                if done.is_empty() && alone.as_ref() == Some(&name) {
                    return e;
                }
                let names: Vec<String> = done.iter().map(|d| d.name.clone()).collect();
                stopped_at(&target, kind, &name, &names, e)
            })?;
            done.push(refreshed);
        }
        Ok(done)
    }
}

/// Refreshes one object and records it (done or failed) in `flywheel.refresh_history`.
async fn refresh_recorded(
    engine: &Engine,
    kind: &str,
    name: &str,
    trigger: Trigger,
    full: bool,
) -> Result<Refreshed> {
    let started = std::time::Instant::now();
    let started_at_us = chrono::Utc::now().timestamp_micros();
    let mut outcome = None;
    let built = async {
        outcome = Some(refresh_one(engine, kind, name, full).await?);
        let entry = engine.registry().table(name).ok_or_else(|| {
            Error::InvalidInput(format!(
                "the table of `{name}` vanished while it was refreshed"
            ))
        })?;
        let table = load_table(&entry, None).await?;
        let version = table.version().unwrap_or_default();
        let lineage = lineage_in_commit(&table, version).await;
        let rows_written = match outcome.as_ref().and_then(|o| o.rows_written) {
            Some(n) => Some(n),
            None => rows_added(&table, version).await,
        };
        Ok::<_, Error>((version, lineage, rows_written))
    }
    .await;
    let base = outcome.as_ref().and_then(|o| o.base.clone());
    let (mode, why) = match outcome {
        Some(o) => (o.mode, o.why),
        None => (
            if full { Mode::Full } else { Mode::Incremental },
            "it failed before its mode was chosen".to_string(),
        ),
    };
    let mut record = RefreshRecord {
        object: name.to_string(),
        kind: noun(kind).to_string(),
        trigger: trigger.as_str().to_string(),
        scheduled_for_us: match trigger {
            Trigger::Schedule { tick_us } => Some(tick_us),
            _ => None,
        },
        started_at_us,
        finished_at_us: chrono::Utc::now().timestamp_micros(),
        mode: mode.as_str().to_string(),
        why: Some(why),
        inputs: BTreeMap::new(),
        rows_read: None,
        rows_written: None,
        version: None,
        status: "ok".into(),
        error: None,
    };
    match built {
        Ok((version, lineage, rows_written)) => {
            let inputs = lineage.map(|l| l.inputs).unwrap_or_default();
            // A full refresh reads each input whole; an incremental one what the inputs that
            // moved gained (and the others whole).
            let mut rows_read = Some(0u64);
            for (input, v) in &inputs {
                let was = base.as_ref().and_then(|b| b.get(input)).copied();
                let read = match was {
                    Some(was) if was == *v => Some(0),
                    Some(was) => match (
                        rows_at(engine, input, *v).await,
                        rows_at(engine, input, was).await,
                    ) {
                        (Some(now), Some(before)) => Some(now.saturating_sub(before)),
                        _ => None,
                    },
                    None => rows_at(engine, input, *v).await,
                };
                rows_read = match (rows_read, read) {
                    (Some(sum), Some(n)) => Some(sum + n),
                    _ => None,
                };
            }
            record.inputs = inputs;
            record.rows_read = rows_read;
            record.rows_written = rows_written;
            record.version = Some(version);
            refresh_history::record(engine.registry(), &record).await;
            Ok(Refreshed {
                kind: noun(kind),
                name: name.to_string(),
                version,
                mode,
                rows_written,
                elapsed: started.elapsed(),
            })
        }
        Err(e) => {
            record.status = "failed".into();
            record.error = Some(e.to_string());
            refresh_history::record(engine.registry(), &record).await;
            Err(e)
        }
    }
}

/// The registry kind of a statement's object kind (feature views, labels, training sets).
fn registry_kind(kind: ObjectKind) -> &'static str {
    kind.registry_kind()
}

/// The error for a `kind` object `name` that does not exist.
fn not_found(kind: &str, name: &str) -> Error {
    Error::NotFound {
        kind: object_kind(kind),
        name: name.to_string(),
    }
}

/// `REFRESH <kind> name [ONLY] [FULL]`.
pub(super) async fn refresh(
    engine: &Engine,
    keyed: Option<Keyed>,
    name: &str,
    only: bool,
    full: bool,
) -> Result<Output> {
    let kind = match keyed {
        Some(Keyed::FeatureView) => KIND_FEATURE_VIEW,
        Some(Keyed::Label) => KIND_LABEL,
        None => KIND_TRAINING_SET,
    };
    if engine.registry().object(kind, name).is_none() {
        return Err(not_found(kind, name));
    }
    let scope = RefreshScope::Objects {
        names: vec![name.to_string()],
        only,
    };
    engine.refresh(scope, Trigger::Manual, full, |_| {}).await?;
    Ok(Output::empty())
}

/// `REFRESH ALL [FULL]`: every stale object, inputs first.
pub(super) async fn refresh_all(engine: &Engine, full: bool) -> Result<Output> {
    engine
        .refresh(RefreshScope::Stale, Trigger::Manual, full, |_| {})
        .await?;
    Ok(Output::empty())
}

/// `ALTER <kind> x SET (refresh = ...)`, `SUSPEND`, `RESUME` (labels and training sets; a
/// feature view's `SET` goes through its other options first).
pub(super) async fn alter_schedule(
    engine: &Engine,
    kind: ObjectKind,
    name: &str,
    action: AlterAction,
) -> Result<Output> {
    let kind = registry_kind(kind);
    if engine.registry().object(kind, name).is_none() {
        return Err(not_found(kind, name));
    }
    match action {
        AlterAction::Set(options) => {
            let options = schedules::only_refresh_option(noun(kind), name, &options)?;
            if let Some(schedule) = schedules::from_options(noun(kind), name, &options)? {
                schedules::set(engine, kind, name, &schedule).await?;
            }
        }
        AlterAction::Suspend => schedules::suspend(engine, (kind, noun(kind)), name, true).await?,
        AlterAction::Resume => schedules::suspend(engine, (kind, noun(kind)), name, false).await?,
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
            noun(kind)
        ),
        cause: Box::new(e),
    }
}
