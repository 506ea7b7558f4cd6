//! The online store in SQL, so BI tools can inspect what is served:
//! - `online(view [, key, ...])` (the function is `flywheel_udfs::online`; its rows come from
//!   the store here);
//! - `flywheel.online_freshness`: per online feature view, the rows served, the latest event time
//!   served, when it was loaded and with which cut-off.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::error::{DataFusionError, Result as DFResult};
use flywheel_catalog::{Registry, SystemTableFn};
use flywheel_udfs::online::{OnlineKey, OnlineRows};

use super::{LookupRequest, OnlineStore};

/// `online(view [, key, ...])`, answered from `store` (see `flywheel_udfs::online`).
pub fn online_function(
    store: Arc<OnlineStore>,
    registry: Arc<Registry>,
) -> Arc<dyn datafusion::catalog::TableFunctionImpl> {
    flywheel_udfs::online::online_function(Arc::new(StoreRows { store, registry }))
}

/// The online store's rows, as `online(...)` shows them.
#[derive(Debug)]
struct StoreRows {
    store: Arc<OnlineStore>,
    /// Says why a view has nothing online.
    registry: Arc<Registry>,
}

fn external(e: crate::Error) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

impl OnlineRows for StoreRows {
    fn served(&self, view: &str) -> DFResult<RecordBatch> {
        let now_us = chrono::Utc::now().timestamp_micros();
        match self.store.cached(view).map_err(external)? {
            // The keys a lookup would find: values past the view's TTL are not served.
            Some(s) => s.served(now_us).map_err(external),
            None => Err(external(crate::not_served(&self.registry, view))),
        }
    }

    fn lookup(&self, view: &str, key: Vec<OnlineKey>) -> DFResult<RecordBatch> {
        let now_us = chrono::Utc::now().timestamp_micros();
        let key = key
            .into_iter()
            .map(|k| match k {
                OnlineKey::Int(v) => serde_json::json!(v),
                OnlineKey::Str(v) => serde_json::json!(v),
            })
            .collect();
        let request = LookupRequest {
            features: vec![view.to_string()],
            keys: vec![serde_json::Value::Array(key)],
            keys_arrow: None,
        };
        self.store
            .lookup_cached(&request, now_us)
            .map_err(|e| external(crate::explain_online(&self.registry, e)))
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
