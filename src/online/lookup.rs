//! Online lookups: "the features of these keys, now", in one record batch.
//!
//! A lookup names feature views (`user_txn`) or single features (`user_txn.amount`) of views on the
//! same entity, and a list of entity keys. The answer has one row per requested key, in request
//! order: the key columns, then per view a `<view>__found` column (`true` when a value was served:
//! the key is in the view and its value is within the view's TTL) and the features. A feature is
//! named as in the view, or `<view>__<column>` when two views share a name (the training-set rule).
//! Missing keys and values older than the TTL are NULL.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray, UInt32Array,
};
use arrow::datatypes::{Field, Schema};
use base64::Engine as _;
use serde::Deserialize;

use super::{OnlineStore, Snapshot};
use crate::{Error, Result};

/// The type URL of a lookup ticket (a protobuf `Any` whose value is a [`LookupRequest`] as JSON).
pub const LOOKUP_TICKET_TYPE: &str = "type.googleapis.com/flywheel.OnlineLookup";

/// A lookup, as clients send it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupRequest {
    /// `view` or `view.column` items.
    pub features: Vec<String>,
    /// Keys as JSON: `[[42], [43]]` (values in the entity's key order) or
    /// `[{"user_id": 42}]`.
    #[serde(default)]
    pub keys: Vec<serde_json::Value>,
    /// Keys as an Arrow IPC stream (base64), one column per entity key, named as the keys.
    #[serde(default)]
    pub keys_arrow: Option<String>,
}

struct Item {
    view: String,
    column: Option<String>,
}

impl OnlineStore {
    /// Answers `request` at `now_us` from the latest published snapshots.
    pub async fn lookup(&self, request: &LookupRequest, now_us: i64) -> Result<RecordBatch> {
        let items = parse_items(&request.features)?;
        let mut snapshots = Vec::new();
        for item in &items {
            snapshots.push(self.get(&item.view).await?);
        }
        answer(request, &items, snapshots, now_us)
    }

    /// Answers `request` from the snapshots this server holds (for SQL, which cannot wait on the
    /// backend).
    pub fn lookup_cached(&self, request: &LookupRequest, now_us: i64) -> Result<RecordBatch> {
        let items = parse_items(&request.features)?;
        let snapshots = items
            .iter()
            .map(|i| self.cached(&i.view))
            .collect::<Result<Vec<_>>>()?;
        answer(request, &items, snapshots, now_us)
    }
}

/// The answer to `request`, given the snapshot (if any) of each item's view.
fn answer(
    request: &LookupRequest,
    items: &[Item],
    snapshots: Vec<Option<Arc<Snapshot>>>,
    now_us: i64,
) -> Result<RecordBatch> {
    let mut views: Vec<(String, Arc<Snapshot>, Vec<String>)> = Vec::new();
    for (item, snapshot) in items.iter().zip(snapshots) {
        let snapshot = snapshot.ok_or_else(|| {
            Error::Catalog(flywheel_catalog::Error::ObjectNotFound {
                kind: "online feature view".into(),
                name: item.view.clone(),
            })
        })?;
        let columns = match &item.column {
            Some(c) => {
                if snapshot.batch.column_by_name(c).is_none() {
                    return Err(Error::Invalid(format!(
                        "feature view `{}` has no column `{c}`",
                        item.view
                    )));
                }
                vec![c.clone()]
            }
            None => feature_columns(&snapshot),
        };
        match views.iter_mut().find(|(v, _, _)| *v == item.view) {
            Some((_, _, cols)) => cols.extend(columns),
            None => views.push((item.view.clone(), snapshot, columns)),
        }
    }
    let Some((_, first, _)) = views.first() else {
        return Err(Error::Invalid(
            "a lookup names at least one feature view".into(),
        ));
    };
    let keys = first.keys.clone();
    if let Some((v, _, _)) = views.iter().find(|(_, s, _)| s.keys != keys) {
        return Err(Error::Invalid(format!(
            "feature views `{}` and `{v}` have different entity keys; look them up separately",
            first.view
        )));
    }
    let key_columns = key_columns(request, &keys, &first.converter_types())?;

    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for (k, c) in keys.iter().zip(&key_columns) {
        fields.push(Field::new(k, c.data_type().clone(), true));
        columns.push(Arc::clone(c));
    }
    let mut seen: HashSet<String> = keys.iter().cloned().collect();
    let all_names: Vec<&String> = views.iter().flat_map(|(_, _, c)| c).collect();
    for (view, snapshot, wanted) in &views {
        let rows: Vec<Option<u32>> = snapshot
            .find(&key_columns)?
            .into_iter()
            .map(|r| r.filter(|&i| !snapshot.expired(i as usize, now_us)))
            .collect();
        fields.push(Field::new(
            format!("{view}__found"),
            arrow::datatypes::DataType::Boolean,
            false,
        ));
        columns.push(Arc::new(BooleanArray::from(
            rows.iter().map(|r| r.is_some()).collect::<Vec<_>>(),
        )));
        let take = UInt32Array::from(rows);
        for name in wanted {
            let shared = all_names.iter().filter(|n| **n == name).count() > 1;
            let out_name = if shared || seen.contains(name) {
                format!("{view}__{name}")
            } else {
                name.clone()
            };
            seen.insert(out_name.clone());
            let source = snapshot
                .batch
                .column_by_name(name)
                .ok_or_else(|| Error::Invalid(format!("no column `{name}` in `{view}`")))?;
            let values = arrow::compute::take(source.as_ref(), &take, None)?;
            fields.push(Field::new(out_name, values.data_type().clone(), true));
            columns.push(values);
        }
    }
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

fn parse_items(features: &[String]) -> Result<Vec<Item>> {
    features
        .iter()
        .map(|f| match f.split_once('.') {
            Some((view, column)) if !view.is_empty() && !column.is_empty() => Ok(Item {
                view: view.to_string(),
                column: Some(column.to_string()),
            }),
            None if !f.is_empty() => Ok(Item {
                view: f.clone(),
                column: None,
            }),
            _ => Err(Error::Invalid(format!(
                "`{f}` is not a feature: write `view` or `view.column`"
            ))),
        })
        .collect()
}

/// A view's features: every column but its keys and event time.
fn feature_columns(s: &Snapshot) -> Vec<String> {
    s.batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .filter(|n| !s.keys.contains(n) && *n != s.event_time)
        .collect()
}

/// The requested keys, one array per key column, cast to the view's key types.
fn key_columns(
    request: &LookupRequest,
    keys: &[String],
    types: &[arrow::datatypes::DataType],
) -> Result<Vec<ArrayRef>> {
    let raw: Vec<ArrayRef> = match &request.keys_arrow {
        Some(b64) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| Error::Invalid(format!("keys_arrow is not base64: {e}")))?;
            let reader = arrow::ipc::reader::StreamReader::try_new(bytes.as_slice(), None)?;
            let schema = reader.schema();
            let batches: Vec<RecordBatch> = reader.collect::<std::result::Result<_, _>>()?;
            let batch = arrow::compute::concat_batches(&schema, &batches)?;
            keys.iter()
                .map(|k| {
                    batch
                        .column_by_name(k)
                        .cloned()
                        .ok_or_else(|| Error::Invalid(format!("keys_arrow has no column `{k}`")))
                })
                .collect::<Result<_>>()?
        }
        None => json_keys(&request.keys, keys)?,
    };
    raw.iter()
        .zip(types)
        .map(|(c, t)| arrow::compute::cast(c, t).map_err(Error::from))
        .collect()
}

fn json_keys(rows: &[serde_json::Value], keys: &[String]) -> Result<Vec<ArrayRef>> {
    let mut columns: Vec<Vec<serde_json::Value>> = vec![Vec::with_capacity(rows.len()); keys.len()];
    for row in rows {
        let values: Vec<serde_json::Value> = match row {
            serde_json::Value::Array(a) if a.len() == keys.len() => a.clone(),
            serde_json::Value::Object(o) => keys
                .iter()
                .map(|k| {
                    o.get(k)
                        .cloned()
                        .ok_or_else(|| Error::Invalid(format!("key {row} has no `{k}`")))
                })
                .collect::<Result<_>>()?,
            v if keys.len() == 1 && !v.is_array() => vec![v.clone()],
            _ => {
                return Err(Error::Invalid(format!(
                    "key {row} does not match the entity's keys ({})",
                    keys.join(", ")
                )));
            }
        };
        for (c, v) in columns.iter_mut().zip(values) {
            c.push(v);
        }
    }
    columns
        .into_iter()
        .map(|values| {
            if values.iter().all(|v| v.is_i64() || v.is_null()) {
                Ok(Arc::new(Int64Array::from(
                    values.iter().map(|v| v.as_i64()).collect::<Vec<_>>(),
                )) as ArrayRef)
            } else {
                Ok(Arc::new(StringArray::from(
                    values
                        .iter()
                        .map(|v| match v {
                            serde_json::Value::Null => None,
                            serde_json::Value::String(s) => Some(s.clone()),
                            other => Some(other.to_string()),
                        })
                        .collect::<Vec<_>>(),
                )) as ArrayRef)
            }
        })
        .collect()
}
