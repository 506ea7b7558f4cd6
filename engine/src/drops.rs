//! `DROP FEATURE VIEW` and `DROP LABEL`, with the training sets that read the object: named in
//! the error, or dropped first with `CASCADE`. Above both object modules, so neither depends on
//! the other to drop.

use super::definitions::{Keyed, not_found, training_sets_reading};
use super::{Engine, Output, feature_views, training_sets};
use crate::{Error, Result};

/// `DROP FEATURE VIEW|LABEL [IF EXISTS] v`: forgets the object and removes its table.
/// Training sets that read it are named in the error, or dropped first with `CASCADE`.
pub(super) async fn drop_keyed(
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
    let dependents = training_sets_reading(engine, name);
    if !dependents.is_empty() && !cascade {
        return Err(Error::InvalidInput(format!(
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
        training_sets::drop(engine, &d, true).await?;
    }
    feature_views::drop_with_table(engine, kind.registry_kind(), name).await?;
    if kind == Keyed::FeatureView {
        engine.online().remove(name).await?;
    }
    Ok(Output::empty())
}
