//! Online lookups: "the features of these keys, now", in one record batch.
//!
//! A lookup names feature views (`user_txn`) or single features (`user_txn.amount`) of views on the
//! same entity, and a list of entity keys. The answer has one row per requested key, in request
//! order: the key columns, then per view a `<view>__found` column (`true` when a value was served:
//! the key is in the view and its value is within the view's TTL) and the features. A feature is
//! named as in the view, or `<view>__<column>` when two views share a name (the training-set rule).
//! Missing keys and values older than the TTL are NULL.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};

use arrow::array::{
    Array, ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray, UInt32Array,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
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
        // Each view is asked for once per lookup (with Redis, asking is a round trip).
        let mut fetched: Vec<(String, Option<Arc<Snapshot>>)> = Vec::new();
        if let Some(plan) = self.plans.get(&request.features) {
            let mut snapshots = Vec::with_capacity(plan.views.len());
            for view in &plan.views {
                snapshots.push(self.get(&view.name).await?);
            }
            if plan.is_current(&snapshots) {
                let snapshots: Vec<Arc<Snapshot>> = snapshots.into_iter().flatten().collect();
                return plan.answer(&snapshots, request, now_us, self.max_keys);
            }
            fetched = plan
                .views
                .iter()
                .map(|v| v.name.clone())
                .zip(snapshots)
                .collect();
        }
        let items = parse_items(&request.features)?;
        let mut snapshots = Vec::with_capacity(items.len());
        for item in &items {
            let known = fetched.iter().find(|(name, _)| *name == item.view);
            let snapshot = match known {
                Some((_, s)) => s.clone(),
                None => {
                    let s = self.get(&item.view).await?;
                    fetched.push((item.view.clone(), s.clone()));
                    s
                }
            };
            snapshots.push(snapshot);
        }
        let (plan, snapshots) = LookupPlan::new(&items, snapshots)?;
        let plan = self.plans.insert(&request.features, plan);
        plan.answer(&snapshots, request, now_us, self.max_keys)
    }

    /// Answers `request` from the snapshots this server holds (for SQL, which cannot wait on the
    /// backend).
    pub fn lookup_cached(&self, request: &LookupRequest, now_us: i64) -> Result<RecordBatch> {
        let items = parse_items(&request.features)?;
        let snapshots = items
            .iter()
            .map(|i| self.cached(&i.view))
            .collect::<Result<Vec<_>>>()?;
        let (plan, snapshots) = LookupPlan::new(&items, snapshots)?;
        plan.answer(&snapshots, request, now_us, self.max_keys)
    }
}

/// How to answer one list of requested features from the snapshots current when it was made: the
/// answer's schema, and per view the snapshot's columns to take. Lookups from a service ask the
/// same features call after call, so plans are kept ([`LookupPlans`]) and the answer's schema is
/// the same `Arc` every time (the server encodes it once, see `server::messages`).
#[derive(Debug)]
pub(super) struct LookupPlan {
    views: Vec<ViewPlan>,
    schema: SchemaRef,
}

#[derive(Debug)]
struct ViewPlan {
    name: String,
    /// The snapshot planned for; weak, so a kept plan does not keep a replaced snapshot's rows.
    snapshot: Weak<Snapshot>,
    /// Column indices in the snapshot's batch, in answer order.
    columns: Vec<usize>,
}

impl LookupPlan {
    /// The plan for `items`, given the snapshot (if any) of each item's view; also returns the
    /// snapshots of the plan's views, in plan order.
    fn new(
        items: &[Item],
        snapshots: Vec<Option<Arc<Snapshot>>>,
    ) -> Result<(Self, Vec<Arc<Snapshot>>)> {
        let mut views: Vec<(String, Arc<Snapshot>, Vec<String>)> = Vec::new();
        for (item, snapshot) in items.iter().zip(snapshots) {
            let snapshot = snapshot.ok_or_else(|| Error::NotServed {
                view: item.view.clone(),
                reason: "is not served online".into(),
            })?;
            let columns = match &item.column {
                Some(c) => {
                    if !feature_columns(&snapshot).contains(c) {
                        return Err(Error::InvalidInput(format!(
                            "feature view `{}` has no column `{c}`",
                            item.view
                        )));
                    }
                    vec![c.clone()]
                }
                None => feature_columns(&snapshot),
            };
            match views.iter_mut().find(|(v, _, _)| *v == item.view) {
                // A feature asked for twice (`v.a` and `v`, or `v` twice) is answered once.
                Some((_, _, cols)) => {
                    for c in columns {
                        if !cols.contains(&c) {
                            cols.push(c);
                        }
                    }
                }
                None => views.push((item.view.clone(), snapshot, columns)),
            }
        }
        let Some((_, first, _)) = views.first() else {
            return Err(Error::InvalidInput(
                "a lookup names at least one feature view".into(),
            ));
        };
        let keys = first.keys.clone();
        if let Some((v, _, _)) = views.iter().find(|(_, s, _)| s.keys != keys) {
            return Err(Error::InvalidInput(format!(
                "feature views `{}` and `{v}` have different entity keys; look them up separately",
                first.view
            )));
        }
        let mut fields: Vec<Field> = keys
            .iter()
            .zip(first.key_types())
            .map(|(k, t)| Field::new(k, t.clone(), true))
            .collect();
        let mut seen: HashSet<String> = keys.iter().cloned().collect();
        let all_names: Vec<&String> = views.iter().flat_map(|(_, _, c)| c).collect();
        let mut planned = Vec::with_capacity(views.len());
        for (view, snapshot, wanted) in &views {
            fields.push(Field::new(
                format!("{view}__found"),
                DataType::Boolean,
                false,
            ));
            let schema = feature_schema(snapshot);
            let mut columns = Vec::with_capacity(wanted.len());
            for name in wanted {
                let shared = all_names.iter().filter(|n| **n == name).count() > 1;
                let out_name = if shared || seen.contains(name) {
                    format!("{view}__{name}")
                } else {
                    name.clone()
                };
                seen.insert(out_name.clone());
                let (index, field) = schema.column_with_name(name).ok_or_else(|| {
                    Error::InvalidInput(format!("no column `{name}` in `{view}`"))
                })?;
                fields.push(Field::new(out_name, field.data_type().clone(), true));
                columns.push(index);
            }
            planned.push(ViewPlan {
                name: view.clone(),
                snapshot: Arc::downgrade(snapshot),
                columns,
            });
        }
        let plan = Self {
            views: planned,
            schema: Arc::new(Schema::new(fields)),
        };
        Ok((plan, views.into_iter().map(|(_, s, _)| s).collect()))
    }

    /// Whether `snapshots` (of the plan's views, in order) are the ones planned for.
    fn is_current(&self, snapshots: &[Option<Arc<Snapshot>>]) -> bool {
        snapshots.len() == self.views.len()
            && self.views.iter().zip(snapshots).all(|(v, s)| {
                s.as_ref()
                    .is_some_and(|s| std::ptr::eq(v.snapshot.as_ptr(), Arc::as_ptr(s)))
            })
    }

    /// The answer to `request` from `snapshots` (those the plan was made for); a request for more
    /// than `max_keys` keys is refused.
    fn answer(
        &self,
        snapshots: &[Arc<Snapshot>],
        request: &LookupRequest,
        now_us: i64,
        max_keys: usize,
    ) -> Result<RecordBatch> {
        let first = snapshots.first().ok_or_else(|| {
            Error::InvalidInput("a lookup names at least one feature view".into())
        })?;
        let mut columns = key_columns(request, &first.keys, first.key_types(), max_keys)?;
        for (view, snapshot) in self.views.iter().zip(snapshots) {
            let rows: Vec<Option<u32>> = snapshot
                .find(&columns[..first.keys.len()])?
                .into_iter()
                .map(|r| r.filter(|&i| !snapshot.expired(i as usize, now_us)))
                .collect();
            columns.push(Arc::new(BooleanArray::from(
                rows.iter().map(Option::is_some).collect::<Vec<_>>(),
            )));
            if let Some(events) = snapshot.windows() {
                // Aggregate features: evaluated now, over each key's events.
                let probes: Vec<(Option<u32>, Option<i64>)> =
                    rows.iter().map(|r| (*r, Some(now_us))).collect();
                columns.extend(events.evaluate(&probes, &view.columns, 1)?);
                continue;
            }
            let take = UInt32Array::from(rows);
            for &index in &view.columns {
                columns.push(arrow::compute::take(
                    snapshot.batch.column(index).as_ref(),
                    &take,
                    None,
                )?);
            }
        }
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }
}

/// Plans of recent lookups, by their list of requested features.
#[derive(Debug, Default)]
pub(super) struct LookupPlans {
    plans: Mutex<HashMap<Vec<String>, Arc<LookupPlan>>>,
}

/// Distinct feature lists kept; past it the plans start over (a service asks a handful).
const KEPT_PLANS: usize = 256;

impl LookupPlans {
    fn get(&self, features: &[String]) -> Option<Arc<LookupPlan>> {
        self.plans.lock().ok()?.get(features).cloned()
    }

    fn insert(&self, features: &[String], plan: LookupPlan) -> Arc<LookupPlan> {
        let plan = Arc::new(plan);
        if let Ok(mut plans) = self.plans.lock() {
            if plans.len() >= KEPT_PLANS {
                plans.clear();
            }
            plans.insert(features.to_vec(), Arc::clone(&plan));
        }
        plan
    }
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
            _ => Err(Error::InvalidInput(format!(
                "`{f}` is not a feature: write `view` or `view.column`"
            ))),
        })
        .collect()
}

/// A view's features: every column but its keys and event time, or its aggregate features.
fn feature_columns(s: &Snapshot) -> Vec<String> {
    feature_schema(s)
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .filter(|n| !s.keys.contains(n) && *n != s.event_time)
        .collect()
}

/// The columns a lookup takes from `s`: its batch's, or (aggregate features) one per aggregate,
/// whose index is the aggregate's.
fn feature_schema(s: &Snapshot) -> SchemaRef {
    match s.windows() {
        Some(events) => Arc::new(Schema::new(
            events
                .aggregates()
                .zip(events.output_types())
                .map(|(a, t)| Field::new(&a.name, t, true))
                .collect::<Vec<_>>(),
        )),
        None => s.batch.schema(),
    }
}

/// The requested keys, one array per key column, cast to the view's key types; more than
/// `max_keys` keys are refused.
fn key_columns(
    request: &LookupRequest,
    keys: &[String],
    types: &[arrow::datatypes::DataType],
    max_keys: usize,
) -> Result<Vec<ArrayRef>> {
    let too_many = |n: usize| {
        Error::Limit(format!(
            "the lookup asks for {n} keys; the most one lookup may ask for is {max_keys} \
             (max_lookup_keys): split it into several lookups"
        ))
    };
    if request.keys.len() > max_keys {
        return Err(too_many(request.keys.len()));
    }
    let raw: Vec<ArrayRef> = match &request.keys_arrow {
        Some(b64) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| Error::InvalidInput(format!("keys_arrow is not base64: {e}")))?;
            let (schema, batches) = crate::untrusted::read_ipc_stream(&bytes, |e| {
                Error::InvalidInput(format!("keys_arrow is not an Arrow IPC stream: {e}"))
            })?;
            let batch = arrow::compute::concat_batches(&schema, &batches)?;
            keys.iter()
                .map(|k| {
                    batch.column_by_name(k).cloned().ok_or_else(|| {
                        Error::InvalidInput(format!("keys_arrow has no column `{k}`"))
                    })
                })
                .collect::<Result<_>>()?
        }
        None => json_keys(&request.keys, keys)?,
    };
    if let Some(n) = raw.first().map(|c| c.len()).filter(|n| *n > max_keys) {
        return Err(too_many(n));
    }
    raw.iter()
        .zip(keys)
        .zip(types)
        .map(|((column, key), to)| key_as(column, key, to))
        .collect()
}

/// The requested values of key column `key` as the view's key type `to`. A value that does not
/// convert (`"x"` or `4.2` for an integer key, an integer out of range) is refused, naming it: looked
/// up as NULL it would come back as a key the view does not know, hiding the caller's mistake.
fn key_as(column: &ArrayRef, key: &str, to: &DataType) -> Result<ArrayRef> {
    let from = column.data_type();
    if from == to {
        return Ok(Arc::clone(column));
    }
    if from.is_floating() && to.is_integer() {
        return Err(Error::InvalidInput(format!(
            "keys_arrow column `{key}` is {from}, but the key is {to}: send integers"
        )));
    }
    let cast = arrow::compute::cast(column, to)?;
    if cast.null_count() > column.null_count()
        && let Some(i) = (0..column.len()).find(|&i| column.is_valid(i) && cast.is_null(i))
    {
        let value = arrow::util::display::array_value_to_string(column, i)?;
        return Err(Error::InvalidInput(format!(
            "key {i} of the request: `{key}` = {value} does not convert to the key's type, {to}; \
             nothing was looked up"
        )));
    }
    Ok(cast)
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
                        .ok_or_else(|| Error::InvalidInput(format!("key {row} has no `{k}`")))
                })
                .collect::<Result<_>>()?,
            v if keys.len() == 1 && !v.is_array() => vec![v.clone()],
            _ => {
                return Err(Error::InvalidInput(format!(
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
