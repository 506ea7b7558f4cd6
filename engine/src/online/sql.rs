//! The online store in SQL, so BI tools can inspect what is served:
//! - `SELECT * FROM online('user_spend')`: every served row of a view (keys, event time, features);
//! - `SELECT * FROM online('user_spend', 42)`: one key (composite keys: one argument per key
//!   column), answered exactly as a lookup is (`<view>__found`, TTL applied now);
//! - `flywheel.online_freshness`: per online feature view, the rows served, the latest event time
//!   served, when it was loaded and with which cut-off.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{ScalarValue, plan_err};
use datafusion::datasource::MemTable;
use datafusion::error::{DataFusionError, Result as DFResult};
use datafusion::logical_expr::Expr;
use flywheel_catalog::{Registry, SystemTableFn};

use super::{LookupRequest, OnlineStore};

/// `online(view [, key, ...])`.
pub fn online_function(
    store: Arc<OnlineStore>,
    registry: Arc<Registry>,
) -> Arc<dyn TableFunctionImpl> {
    Arc::new(OnlineFunction { store, registry })
}

#[derive(Debug)]
struct OnlineFunction {
    store: Arc<OnlineStore>,
    /// Says why a view has nothing online.
    registry: Arc<Registry>,
}

fn literal(e: &Expr) -> Option<&ScalarValue> {
    match e {
        Expr::Literal(v, _) => Some(v),
        _ => None,
    }
}

fn external(e: crate::Error) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

impl TableFunctionImpl for OnlineFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> DFResult<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        let view = match exprs.first().and_then(literal) {
            Some(ScalarValue::Utf8(Some(v)) | ScalarValue::Utf8View(Some(v))) => v.clone(),
            _ => {
                return plan_err!(
                    "online('view' [, key, ...]): the first argument is an online feature view's name"
                );
            }
        };
        let now_us = chrono::Utc::now().timestamp_micros();
        let batch = if exprs.len() == 1 {
            match self.store.cached(&view).map_err(external)? {
                // The keys a lookup would find: values past the view's TTL are not served.
                Some(s) => {
                    let live: BooleanArray = (0..s.batch.num_rows())
                        .map(|i| Some(!s.expired(i, now_us)))
                        .collect();
                    arrow::compute::filter_record_batch(&s.batch, &live)?
                }
                None => return Err(external(crate::not_served(&self.registry, &view))),
            }
        } else {
            let key = exprs[1..]
                .iter()
                .map(|e| match literal(e) {
                    Some(ScalarValue::Int64(Some(v))) => Ok(serde_json::json!(v)),
                    Some(ScalarValue::Int32(Some(v))) => Ok(serde_json::json!(v)),
                    Some(ScalarValue::Utf8(Some(v)) | ScalarValue::Utf8View(Some(v))) => {
                        Ok(serde_json::json!(v))
                    }
                    _ => plan_err!("online(): keys are integer or string literals, got {e}"),
                })
                .collect::<DFResult<Vec<_>>>()?;
            let request = LookupRequest {
                features: vec![view],
                keys: vec![serde_json::Value::Array(key)],
                keys_arrow: None,
            };
            self.store
                .lookup_cached(&request, now_us)
                .map_err(|e| external(crate::explain_online(&self.registry, e)))?
        };
        Ok(Arc::new(MemTable::try_new(
            batch.schema(),
            vec![vec![batch]],
        )?))
    }
}

/// `flywheel.online_freshness`.
pub fn freshness_table(
    store: Arc<OnlineStore>,
    registry: Arc<Registry>,
) -> (String, SystemTableFn) {
    let f = flywheel_catalog::batch_table(move || freshness(&store, &registry));
    ("online_freshness".to_string(), f)
}

fn freshness(store: &OnlineStore, registry: &Registry) -> DFResult<RecordBatch> {
    let mut views = Vec::new();
    let mut loaded = Vec::new();
    let mut rows = Vec::new();
    let mut latest = Vec::new();
    let mut loaded_at = Vec::new();
    let mut cutoff = Vec::new();
    for view in crate::online_views(registry) {
        let snapshot = store.cached(&view).map_err(external)?;
        views.push(view);
        loaded.push(snapshot.is_some());
        rows.push(snapshot.as_ref().map(|s| s.batch.num_rows() as i64));
        latest.push(snapshot.as_ref().and_then(|s| s.max_event_time_us()));
        loaded_at.push(snapshot.as_ref().map(|s| s.loaded_at_us));
        cutoff.push(
            snapshot
                .as_ref()
                .map(|s| s.cutoff_us)
                .filter(|c| *c != i64::MAX),
        );
    }
    let ts = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let schema = Arc::new(Schema::new(vec![
        Field::new("feature_view", DataType::Utf8, false),
        Field::new("loaded", DataType::Boolean, false),
        Field::new("rows", DataType::Int64, true),
        Field::new("latest_event_time", ts(), true),
        Field::new("loaded_at", ts(), true),
        Field::new("cutoff", ts(), true),
    ]));
    let utc = |v: Vec<Option<i64>>| -> ArrayRef {
        Arc::new(TimestampMicrosecondArray::from(v).with_timezone("UTC"))
    };
    Ok(RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(views)),
            Arc::new(BooleanArray::from(loaded)),
            Arc::new(Int64Array::from(rows)),
            utc(latest),
            utc(loaded_at),
            utc(cutoff),
        ],
    )?)
}
