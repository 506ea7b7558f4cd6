//! Building blocks of the plans Flywheel builds itself (training sets, online loads) with
//! DataFusion's `LogicalPlanBuilder`, never through SQL text: qualified column references, scans of
//! a table at a pinned version, and the `ASOF JOIN` condition the analyzer rule turns into the AS OF
//! node ([`crate::asof`]).

use std::sync::Arc;

use datafusion::common::{Column, ScalarValue, TableReference};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, ScalarUDF};
use flywheel_udfs::asof_marker::AsOfMatchUdf;

use super::Engine;
use crate::{Error, Result};

/// Column `name` of the relation aliased `relation`.
pub(crate) fn column(relation: &str, name: &str) -> Expr {
    Expr::Column(Column::new(Some(TableReference::bare(relation)), name))
}

/// `condition` marked as an `ASOF JOIN`'s match condition, as the SQL rewrite of
/// `MATCH_CONDITION` marks it: a left join whose condition holds it is planned as the AS OF node.
pub(crate) fn asof_match(condition: Expr) -> Expr {
    Expr::ScalarFunction(ScalarFunction::new_udf(
        Arc::new(ScalarUDF::new_from_impl(AsOfMatchUdf::default())),
        vec![condition],
    ))
}

/// A scan of table `name` at `version`, aliased `alias`.
pub(crate) async fn pinned_scan(
    engine: &Engine,
    name: &str,
    version: u64,
    alias: &str,
) -> Result<LogicalPlan> {
    LogicalPlanBuilder::from(engine.table_version_plan(name, version).await?)
        .alias(alias)
        .and_then(LogicalPlanBuilder::build)
        .map_err(Error::from_datafusion)
}

/// The column names of a plan's output.
pub(crate) fn names_of(plan: &LogicalPlan) -> Vec<String> {
    plan.schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect()
}

/// A stored SQL interval (a TTL: `INTERVAL '30 days'`) as an expression; anything but an
/// interval literal is refused.
pub(crate) fn interval(engine: &Engine, text: &str) -> Result<ScalarValue> {
    interval_literal(engine, text, "TTL")
}

/// An interval literal (`INTERVAL '30 days'`) in microseconds (a month counts 30 days).
pub(crate) fn interval_us(engine: &Engine, text: &str) -> Result<i64> {
    let value = interval_literal(engine, text, "the interval")?
        .cast_to(&arrow::datatypes::DataType::Interval(
            arrow::datatypes::IntervalUnit::MonthDayNano,
        ))
        .map_err(Error::from_datafusion)?;
    let ScalarValue::IntervalMonthDayNano(Some(value)) = value else {
        return Err(Error::InvalidInput(format!("`{text}` is not an interval")));
    };
    let micros = i128::from(value.months) * 30 * 86_400_000_000
        + i128::from(value.days) * 86_400_000_000
        + i128::from(value.nanoseconds / 1_000);
    i64::try_from(micros).map_err(|_| {
        Error::InvalidInput(format!(
            "the interval `{text}` is too long: at most about 292,000 years fit in microseconds"
        ))
    })
}

fn interval_literal(engine: &Engine, text: &str, what: &str) -> Result<ScalarValue> {
    let parsed = engine
        .context()
        .parse_sql_expr(text, &datafusion::common::DFSchema::empty())
        .map_err(Error::from_datafusion)?;
    match parsed {
        Expr::Literal(
            v @ (ScalarValue::IntervalMonthDayNano(Some(_))
            | ScalarValue::IntervalDayTime(Some(_))
            | ScalarValue::IntervalYearMonth(Some(_))),
            _,
        ) => Ok(v),
        _ => Err(Error::InvalidInput(format!(
            "{what} `{text}` is not an interval"
        ))),
    }
}
