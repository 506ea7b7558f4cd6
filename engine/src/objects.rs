//! Flywheel's own statements, dispatched to the module of each object kind: `entities`,
//! `feature_views` (and `labels`), `training_sets`; `REFRESH` and schedules to `refresh`, drops that
//! cascade to `drops`.

use flywheel_catalog::objects::{KIND_ENTITY, entities_batch};
use flywheel_sql::ast::{AlterAction, FlywheelDdl, ObjectKind};

use super::definitions::Keyed;
use super::entities::{create_entity, describe_entity, not_found};
use super::feature_views;
use super::{Engine, Output, object_name, training_sets};
use crate::{Error, Result};

/// Runs one Flywheel statement.
pub(super) async fn execute(engine: &Engine, ddl: FlywheelDdl) -> Result<Output> {
    match ddl {
        FlywheelDdl::CreateEntity(c) => create_entity(engine, c).await,
        FlywheelDdl::Show {
            kind: ObjectKind::Entity,
        } => Ok(Output::Batch(entities_batch(engine.registry())?)),
        FlywheelDdl::Describe {
            kind: ObjectKind::Entity,
            name,
        } => describe_entity(engine, &object_name(&name)),
        FlywheelDdl::Drop {
            kind: ObjectKind::Entity,
            name,
            if_exists,
            cascade: _,
        } => {
            let name = object_name(&name);
            let users = super::definitions::using_entity(engine, &name);
            if !users.is_empty() {
                return Err(Error::InvalidInput(format!(
                    "entity `{name}` is used by {}; drop them first",
                    users.join(", ")
                )));
            }
            match engine.registry().drop_object(KIND_ENTITY, &name).await {
                Ok(_) => Ok(Output::empty()),
                Err(flywheel_catalog::Error::ObjectNotFound { .. }) if if_exists => {
                    Ok(Output::empty())
                }
                Err(flywheel_catalog::Error::ObjectNotFound { .. }) => Err(not_found(&name)),
                Err(e) => Err(e.into()),
            }
        }
        FlywheelDdl::CreateFeatureView(c) => feature_views::create(engine, *c).await,
        FlywheelDdl::Refresh {
            kind: kind @ (ObjectKind::FeatureView | ObjectKind::Label),
            name,
            only,
            full,
        } => {
            let keyed = Some(Keyed::of(kind));
            super::refresh::refresh(engine, keyed, &object_name(&name), only, full).await
        }
        FlywheelDdl::Refresh {
            kind: ObjectKind::TrainingSet,
            name,
            only,
            full,
        } => super::refresh::refresh(engine, None, &object_name(&name), only, full).await,
        FlywheelDdl::RefreshAll { full } => super::refresh::refresh_all(engine, full).await,
        FlywheelDdl::CreateLabel(c) => super::labels::create_label(engine, *c).await,
        FlywheelDdl::Alter {
            kind: ObjectKind::FeatureView,
            name,
            action: AlterAction::Set(options),
        } => feature_views::alter(engine, &object_name(&name), options).await,
        FlywheelDdl::Alter { kind, name, action } => {
            super::refresh::alter_schedule(engine, kind, &object_name(&name), action).await
        }
        FlywheelDdl::Drop {
            kind: kind @ (ObjectKind::FeatureView | ObjectKind::Label),
            name,
            if_exists,
            cascade,
        } => {
            let keyed = Keyed::of(kind);
            super::drops::drop_keyed(engine, keyed, &object_name(&name), if_exists, cascade).await
        }
        FlywheelDdl::Show {
            kind: kind @ (ObjectKind::FeatureView | ObjectKind::Label),
        } => feature_views::show(engine, Keyed::of(kind)),
        FlywheelDdl::Describe {
            kind: kind @ (ObjectKind::FeatureView | ObjectKind::Label),
            name,
        } => feature_views::describe(engine, Keyed::of(kind), &object_name(&name)).await,
        FlywheelDdl::CreateTrainingSet(c) => training_sets::create(engine, c).await,
        FlywheelDdl::Drop {
            kind: ObjectKind::TrainingSet,
            name,
            if_exists,
            cascade: _,
        } => training_sets::drop(engine, &object_name(&name), if_exists).await,
        FlywheelDdl::Show {
            kind: ObjectKind::TrainingSet,
        } => training_sets::show(engine),
        FlywheelDdl::Describe {
            kind: ObjectKind::TrainingSet,
            name,
        } => training_sets::describe(engine, &object_name(&name)).await,
        other => Err(Error::Unsupported {
            what: format!("`{other}`"),
            hint: "REFRESH applies to feature views, labels and training sets".into(),
        }),
    }
}
