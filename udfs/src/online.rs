//! `online(view [, key, ...])`: the online store in SQL, so BI tools can inspect what is served.
//!
//! - `SELECT * FROM online('user_spend')`: every served row of a view (keys, event time,
//!   features; values past the view's TTL are not served);
//! - `SELECT * FROM online('user_spend', 42)`: one key (composite keys: one argument per key
//!   column), answered exactly as a lookup is (`<view>__found`, TTL applied now).
//!
//! This module reads the arguments; the rows come from an [`OnlineRows`], which the engine
//! implements over its online store.

use std::fmt::Debug;
use std::sync::Arc;

use arrow::array::RecordBatch;
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{ScalarValue, plan_err};
use datafusion::datasource::MemTable;
use datafusion::error::Result;
use datafusion::logical_expr::Expr;

/// One key column's value in `online(view, key, ...)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnlineKey {
    Int(i64),
    Str(String),
}

/// What answers `online(...)`.
pub trait OnlineRows: Debug + Send + Sync {
    /// Every row `view` serves now.
    fn served(&self, view: &str) -> Result<RecordBatch>;

    /// The answer of a lookup of one key of `view`, now.
    fn lookup(&self, view: &str, key: Vec<OnlineKey>) -> Result<RecordBatch>;
}

/// `online(view [, key, ...])` over `rows`.
pub fn online_function(rows: Arc<dyn OnlineRows>) -> Arc<dyn TableFunctionImpl> {
    Arc::new(OnlineFunction { rows })
}

#[derive(Debug)]
struct OnlineFunction {
    rows: Arc<dyn OnlineRows>,
}

fn literal(e: &Expr) -> Option<&ScalarValue> {
    match e {
        Expr::Literal(v, _) => Some(v),
        _ => None,
    }
}

impl TableFunctionImpl for OnlineFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        let view = match exprs.first().and_then(literal) {
            Some(ScalarValue::Utf8(Some(v)) | ScalarValue::Utf8View(Some(v))) => v.clone(),
            _ => {
                return plan_err!(
                    "online('view' [, key, ...]): the first argument is an online feature view's name"
                );
            }
        };
        let batch = if exprs.len() == 1 {
            self.rows.served(&view)?
        } else {
            let key = exprs[1..]
                .iter()
                .map(|e| match literal(e) {
                    Some(ScalarValue::Int64(Some(v))) => Ok(OnlineKey::Int(*v)),
                    Some(ScalarValue::Int32(Some(v))) => Ok(OnlineKey::Int(i64::from(*v))),
                    Some(ScalarValue::Utf8(Some(v)) | ScalarValue::Utf8View(Some(v))) => {
                        Ok(OnlineKey::Str(v.clone()))
                    }
                    _ => plan_err!("online(): keys are integer or string literals, got {e}"),
                })
                .collect::<Result<Vec<_>>>()?;
            self.rows.lookup(&view, key)?
        };
        Ok(Arc::new(MemTable::try_new(
            batch.schema(),
            vec![vec![batch]],
        )?))
    }
}
