//! Labels: `CREATE [OR REPLACE] LABEL [IF NOT EXISTS] l ENTITY e EVENT TIME ts FROM (query) |
//! FROM table`. A label is keyed and time-stamped like a feature view and shares its machinery
//! (checks, materialization, refresh, drop: `feature_views`); this module holds what differs.

use flywheel_catalog::objects::{FeatureViewDefinition, KIND_LABEL};
use flywheel_sql::ast::ObjectKind;

use super::definitions::Keyed;
use super::feature_views::{
    after_lost_race, commit_object, create_prologue, lost_create_race, materialize, object_change,
    plan_and_check, registered_inputs, until_settled,
};
use super::schedules::{self, Schedule};
use super::{Engine, Output, lineage, object_name};
use crate::Result;

/// `CREATE [OR REPLACE] LABEL [IF NOT EXISTS] l ENTITY e EVENT TIME ts FROM (query) | FROM table`:
/// checked like a feature view and materialized as a Delta table of its name.
pub(super) async fn create_label(
    engine: &Engine,
    c: flywheel_sql::ast::CreateLabel,
) -> Result<Output> {
    until_settled(|| create_label_once(engine, &c)).await
}

/// One try of [`create_label`]; `Ok(None)` when it lost the race for the name and is to run again.
async fn create_label_once(
    engine: &Engine,
    c: &flywheel_sql::ast::CreateLabel,
) -> Result<Option<Output>> {
    let name = object_name(&c.name);
    let Some(exists) = create_prologue(engine, ObjectKind::Label, &name, c.mode)? else {
        return Ok(Some(Output::empty()));
    };
    let query = match &c.source {
        flywheel_sql::ast::LabelSource::Query(q) => q.to_string(),
        flywheel_sql::ast::LabelSource::Table(t) => format!("SELECT * FROM {t}"),
    };
    let options = schedules::only_refresh_option("label", &name, &c.options)?;
    let schedule = schedules::from_options("label", &name, &options)?.unwrap_or(Schedule::Manual);
    let def = FeatureViewDefinition {
        entity: object_name(&c.entity),
        event_time: object_name(&c.event_time),
        ttl: None,
        options: vec![],
        query,
        sql: flywheel_sql::ast::FlywheelDdl::CreateLabel(Box::new(c.clone())).to_string(),
    };
    lineage::refuse_cycle(engine, "label", &name, &registered_inputs(engine, &def))?;
    let (plan, record) = plan_and_check(engine, Keyed::Label, &name, &def).await?;
    let metadata = lineage::commit_metadata(&name, &record)?;
    let materialized = materialize(engine, &name, plan, metadata).await?;
    let changes = vec![
        object_change(KIND_LABEL, &name, &def, exists)?,
        schedules::set_change(KIND_LABEL, &name, &schedule)?,
    ];
    match commit_object(engine, materialized, changes).await {
        Ok(()) => Ok(Some(Output::empty())),
        Err(e) if lost_create_race(&e) => {
            after_lost_race(engine, ObjectKind::Label, &name, c.mode).await
        }
        Err(e) => Err(e),
    }
}
