//! Flywheel objects' definitions, read from the registry as types: feature views and labels
//! ([`Keyed`], [`FeatureViewDefinition`]) and training sets ([`TrainingSetDefinition`]), and the
//! questions answered from them alone (which objects read a table, which use an entity). Every
//! module that needs a definition reads it here, so none of them depends on another object's
//! module for it.

use flywheel_catalog::objects::{
    FeatureViewDefinition, KIND_FEATURE_VIEW, KIND_LABEL, KIND_TRAINING_SET, TrainingSetDefinition,
};
use flywheel_sql::ast::ObjectKind;

use super::Engine;
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

    /// The object kind.
    pub(super) fn kind(self) -> ObjectKind {
        match self {
            Keyed::FeatureView => ObjectKind::FeatureView,
            Keyed::Label => ObjectKind::Label,
        }
    }

    pub(super) fn registry_kind(self) -> &'static str {
        self.kind().registry_kind()
    }

    pub(super) fn noun(self) -> &'static str {
        self.kind().noun()
    }

    pub(super) fn sql(self) -> &'static str {
        self.kind().sql()
    }
}

pub(super) fn not_found(kind: Keyed, name: &str) -> Error {
    Error::NotFound {
        kind: kind.kind(),
        name: name.to_string(),
    }
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
    registry
        .definition(kind.registry_kind(), name)?
        .ok_or_else(|| not_found(kind, name))
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

/// The feature views and labels whose queries read the table `table`, by kind and name.
pub(super) fn reading_table(engine: &Engine, table: &str) -> Vec<(Keyed, String)> {
    flywheel_catalog::lineage::dependencies(engine.registry())
        .into_iter()
        .filter(|d| d.input == table)
        .filter_map(|d| match d.kind {
            KIND_FEATURE_VIEW => Some((Keyed::FeatureView, d.object)),
            KIND_LABEL => Some((Keyed::Label, d.object)),
            _ => None,
        })
        .collect()
}

/// The feature views and labels keyed by `entity` (`feature view `v``, ...).
pub(super) fn using_entity(engine: &Engine, entity: &str) -> Vec<String> {
    let mut out = Vec::new();
    for kind in [Keyed::FeatureView, Keyed::Label] {
        for (o, d) in engine
            .registry()
            .definitions::<FeatureViewDefinition>(kind.registry_kind())
        {
            if d.entity == entity {
                out.push(format!("{} `{}`", kind.noun(), o.name));
            }
        }
    }
    out
}

pub(super) fn training_set_definition(
    engine: &Engine,
    name: &str,
) -> Result<TrainingSetDefinition> {
    engine
        .registry()
        .definition(KIND_TRAINING_SET, name)?
        .ok_or_else(|| training_set_not_found(name))
}

pub(super) fn training_set_not_found(name: &str) -> Error {
    Error::NotFound {
        kind: ObjectKind::TrainingSet,
        name: name.to_string(),
    }
}

impl Engine {
    /// `Ok` when training set `name` exists; otherwise the error naming it.
    pub fn require_training_set(&self, name: &str) -> Result<()> {
        if is_training_set(self, name) {
            Ok(())
        } else {
            Err(training_set_not_found(name))
        }
    }
}

/// Whether `name` is a training set (DROP TABLE refuses its table).
pub(super) fn is_training_set(engine: &Engine, name: &str) -> bool {
    engine.registry().object(KIND_TRAINING_SET, name).is_some()
}

/// The training sets that read the label or feature view `input`, sorted.
pub(super) fn training_sets_reading(engine: &Engine, input: &str) -> Vec<String> {
    engine
        .registry()
        .definitions::<TrainingSetDefinition>(KIND_TRAINING_SET)
        .into_iter()
        .filter(|(_, d)| d.label == input || d.features.iter().any(|f| f.view == input))
        .map(|(o, _)| o.name)
        .collect()
}
