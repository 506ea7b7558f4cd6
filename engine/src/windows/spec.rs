//! Which columns of a feature view's query are aggregate features, and the query that
//! materializes their inputs.
//!
//! In a feature view's select list, a window aggregate with no `PARTITION BY` / `ORDER BY` whose
//! frame is `RANGE <interval> PRECEDING` (or `RANGE BETWEEN <interval> PRECEDING AND CURRENT
//! ROW`) is an aggregate feature ([`Aggregate`]). Such a view's table is its event log: the keys,
//! the event time, and per feature its input at each event (the argument where the `FILTER`
//! holds, else NULL; `1` for `count(*)`). The aggregate is evaluated when the view is read, over
//! the key's events with time in `(t - window, t]` ([`super::events`]). [`split`] finds the
//! features and rewrites the query; every reader calls it on the stored query, so the stored
//! definition stays the user's SQL.

use arrow::datatypes::{DataType, Field};
use serde::{Deserialize, Serialize};
use sqlparser::ast::{
    CaseWhen, DuplicateTreatment, Expr, FunctionArg, FunctionArgExpr, FunctionArguments,
    NullTreatment, SelectItem, SetExpr, Statement, WindowFrameBound, WindowFrameUnits, WindowType,
};
use sqlparser::tokenizer::Span;

use crate::{Error, Result};

/// An aggregate a window feature computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Func {
    /// `count(*)` / `count(x)`: non-NULL inputs (`count(*)`'s input is never NULL).
    Count,
    /// `count(DISTINCT x)`, exact.
    CountDistinct,
    /// `approx_distinct(x)`: computed exactly, typed as DataFusion's (`UInt64`).
    ApproxDistinct,
    Sum,
    Avg,
    Min,
    Max,
    StddevSamp,
    VarSamp,
    /// The oldest non-NULL input in the window.
    FirstValue,
    /// The newest non-NULL input in the window.
    LastValue,
    /// The `k` newest non-NULL inputs, newest first.
    LastK(usize),
}

/// The largest `k` of `last_k(x, k)`.
pub const MAX_LAST_K: usize = 1_000;

impl Func {
    /// The SQL name of the function.
    pub fn sql(&self) -> &'static str {
        match self {
            Func::Count => "count",
            Func::CountDistinct => "count(DISTINCT)",
            Func::ApproxDistinct => "approx_distinct",
            Func::Sum => "sum",
            Func::Avg => "avg",
            Func::Min => "min",
            Func::Max => "max",
            Func::StddevSamp => "stddev_samp",
            Func::VarSamp => "var_samp",
            Func::FirstValue => "first_value",
            Func::LastValue => "last_value",
            Func::LastK(_) => "last_k",
        }
    }

    /// Whether the aggregate is a count (0 on an empty window, never NULL).
    pub fn is_count(&self) -> bool {
        matches!(
            self,
            Func::Count | Func::CountDistinct | Func::ApproxDistinct
        )
    }

    /// The type of the feature, given its input's type; an input the aggregate cannot take is
    /// refused, naming the feature.
    pub fn output_type(&self, feature: &str, input: &DataType) -> Result<DataType> {
        let numeric = input.is_numeric() || matches!(input, DataType::Null);
        let refuse = |needs: &str| {
            Err(Error::InvalidInput(format!(
                "aggregate feature `{feature}`: {} needs {needs}; its input is {input}",
                self.sql()
            )))
        };
        Ok(match self {
            Func::Count | Func::CountDistinct => DataType::Int64,
            Func::ApproxDistinct => DataType::UInt64,
            Func::Sum if input.is_integer() => DataType::Int64,
            Func::Sum | Func::Avg | Func::StddevSamp | Func::VarSamp => {
                if !numeric {
                    return refuse("numbers");
                }
                DataType::Float64
            }
            Func::Min | Func::Max => {
                if input.is_nested() {
                    return refuse("values that order (numbers, strings, times)");
                }
                input.clone()
            }
            Func::FirstValue | Func::LastValue => input.clone(),
            Func::LastK(_) => {
                DataType::List(std::sync::Arc::new(Field::new("item", input.clone(), true)))
            }
        })
    }
}

/// One aggregate feature of a view.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Serialize, Deserialize)]
pub struct Aggregate {
    /// The feature's name; also the name of its input column in the view's table.
    pub name: String,
    pub func: Func,
    /// The window as written (`INTERVAL '7 days'`).
    pub window: String,
    /// The window in microseconds (a month counts 30 days).
    pub window_us: i64,
    /// The `FILTER (WHERE ...)`, as written.
    pub filter: Option<String>,
    /// The argument as written (`*` for `count(*)`).
    pub argument: String,
}

impl Aggregate {
    /// How `EXPLAIN` shows the aggregate over its input: `s7 := sum(s7) over INTERVAL '7 days'`.
    pub fn explain(&self, input: &dyn std::fmt::Display) -> String {
        format!(
            "{} := {}({input}) over {}",
            self.name,
            self.func.sql(),
            self.window
        )
    }

    /// How `DESCRIBE FEATURE VIEW` says what the feature is: `sum(amount) over 7 days`.
    pub fn describe(&self) -> String {
        let call = match self.func {
            Func::CountDistinct => format!("count(DISTINCT {})", self.argument),
            Func::LastK(k) => format!("last_k({}, {k})", self.argument),
            f => format!("{}({})", f.sql(), self.argument),
        };
        let filter = self
            .filter
            .as_ref()
            .map(|f| format!(" FILTER (WHERE {f})"))
            .unwrap_or_default();
        format!(
            "aggregate feature: {call}{filter} over the {} before the time it is read",
            self.window.trim_start_matches("INTERVAL ")
        )
    }
}

/// What kind of column of a feature view a select item is, for `DESCRIBE`.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnKind {
    Key,
    EventTime,
    Aggregate(Box<Aggregate>),
    /// A window function evaluated at each event row (`OVER (PARTITION BY ... ORDER BY ...)`).
    RowWindow,
    /// A value of each event row.
    Plain,
}

impl ColumnKind {
    pub fn describe(&self) -> String {
        match self {
            ColumnKind::Key => "entity key".into(),
            ColumnKind::EventTime => "event time".into(),
            ColumnKind::Aggregate(a) => a.describe(),
            ColumnKind::RowWindow => {
                "window function, evaluated at each event row (not at the time it is read)".into()
            }
            ColumnKind::Plain => "feature (the value of each event row)".into(),
        }
    }
}

/// A feature view's query, split: its aggregate features and the query of their inputs.
#[derive(Debug, Clone)]
pub struct Split {
    /// The query the view's table is built from (the aggregates replaced by their inputs).
    pub query: String,
    pub aggregates: Vec<Aggregate>,
    /// Each output column and its kind, in select-list order.
    pub columns: Vec<(String, ColumnKind)>,
}

/// The parts of a feature view `view` (entity keys `keys`, event time `event_time`) defined by
/// `query`. `interval_us` turns an interval literal into microseconds. A view without aggregate
/// features gets `aggregates` empty and its query unchanged.
pub fn split(
    view: &str,
    query: &str,
    keys: &[String],
    event_time: &str,
    interval_us: &dyn Fn(&str) -> Result<i64>,
) -> Result<Split> {
    // The dialect every statement is parsed with (`t VERSION AS OF 3` in a view's query).
    let mut statements =
        sqlparser::parser::Parser::parse_sql(&flywheel_sql::FlywheelDialect, query)
            .map_err(|e| Error::InvalidInput(format!("feature view `{view}`: {e}")))?;
    let unchanged = |columns| Split {
        query: query.to_string(),
        aggregates: Vec::new(),
        columns,
    };
    let Some(Statement::Query(q)) = statements.first_mut() else {
        return Ok(unchanged(Vec::new()));
    };
    let SetExpr::Select(select) = q.body.as_mut() else {
        return Ok(unchanged(Vec::new()));
    };
    let mut aggregates = Vec::new();
    let mut columns = Vec::new();
    let mut plain: Option<String> = None;
    for item in select.projection.iter_mut() {
        let (expr, name) = match item {
            SelectItem::ExprWithAlias { expr, alias } => (expr, Some(crate::object_name(alias))),
            SelectItem::UnnamedExpr(expr) => {
                let name = match &*expr {
                    Expr::Identifier(i) => Some(crate::object_name(i)),
                    Expr::CompoundIdentifier(parts) => parts.last().map(crate::object_name),
                    _ => None,
                };
                (expr, name)
            }
            other => {
                plain.get_or_insert_with(|| other.to_string());
                continue;
            }
        };
        let label = name.clone().unwrap_or_else(|| expr.to_string());
        match aggregate_of(view, &label, expr, interval_us)? {
            Some((aggregate, input)) => {
                let Some(name) = name else {
                    return Err(Error::InvalidInput(format!(
                        "feature view `{view}`: the aggregate feature `{expr}` needs a name: add AS <name>"
                    )));
                };
                *expr = input;
                let aggregate = Aggregate { name, ..aggregate };
                columns.push((
                    aggregate.name.clone(),
                    ColumnKind::Aggregate(Box::new(aggregate.clone())),
                ));
                aggregates.push(aggregate);
            }
            None => {
                let kind = if keys.contains(&label) {
                    ColumnKind::Key
                } else if label == event_time {
                    ColumnKind::EventTime
                } else if has_window(expr) {
                    ColumnKind::RowWindow
                } else {
                    ColumnKind::Plain
                };
                if !matches!(kind, ColumnKind::Key | ColumnKind::EventTime) {
                    plain.get_or_insert_with(|| label.clone());
                }
                columns.push((label, kind));
            }
        }
    }
    if aggregates.is_empty() {
        return Ok(unchanged(columns));
    }
    if let Some(column) = plain {
        return Err(Error::InvalidInput(format!(
            "feature view `{view}`: column `{column}` is neither an entity key, the event time nor \
             an aggregate feature; a view with aggregate features (OVER (RANGE INTERVAL ... \
             PRECEDING)) holds only those: put `{column}` in another feature view"
        )));
    }
    Ok(Split {
        query: q.to_string(),
        aggregates,
        columns,
    })
}

/// Whether `expr` calls a window function.
fn has_window(expr: &Expr) -> bool {
    sqlparser::ast::visit_expressions(expr, |e| match e {
        Expr::Function(f) if f.over.is_some() => std::ops::ControlFlow::Break(()),
        _ => std::ops::ControlFlow::Continue(()),
    })
    .is_break()
}

/// The aggregate feature `expr` defines, with the expression of its input, if it is one; an
/// error when it is a window over the view's keys and time that is not a valid one.
fn aggregate_of(
    view: &str,
    column: &str,
    expr: &Expr,
    interval_us: &dyn Fn(&str) -> Result<i64>,
) -> Result<Option<(Aggregate, Expr)>> {
    let Expr::Function(f) = expr else {
        return Ok(None);
    };
    let Some(WindowType::WindowSpec(spec)) = &f.over else {
        return Ok(None);
    };
    if spec.window_name.is_some() || !spec.partition_by.is_empty() || !spec.order_by.is_empty() {
        // An ordinary window function, evaluated at each event row.
        return Ok(None);
    }
    let refuse = |why: String| {
        Err(Error::InvalidInput(format!(
            "feature view `{view}`, column `{column}`: {why}"
        )))
    };
    let Some(frame) = &spec.window_frame else {
        return Ok(None);
    };
    let window = match (&frame.units, &frame.start_bound, &frame.end_bound) {
        (
            WindowFrameUnits::Range,
            WindowFrameBound::Preceding(Some(w)),
            None | Some(WindowFrameBound::CurrentRow),
        ) => w,
        _ => {
            return refuse(format!(
                "an aggregate feature's window is OVER (RANGE INTERVAL '<n> <unit>' PRECEDING); \
                 found OVER ({spec}). For a window evaluated at each event row, add PARTITION \
                 BY and ORDER BY"
            ));
        }
    };
    let window_text = window.to_string();
    let window_us = match window.as_ref() {
        Expr::Interval(_) => interval_us(&window_text)?,
        _ => {
            return refuse(format!(
                "the window must be an interval, e.g. RANGE INTERVAL '7 days' PRECEDING; found {window_text}"
            ));
        }
    };
    if window_us <= 0 {
        return refuse(format!("the window {window_text} must be longer than zero"));
    }
    let name = f.name.to_string().to_lowercase();
    let FunctionArguments::List(list) = &f.args else {
        return refuse(format!("{name} needs an argument"));
    };
    let distinct = matches!(list.duplicate_treatment, Some(DuplicateTreatment::Distinct));
    if !list.clauses.is_empty() {
        return refuse(format!(
            "{name}(...) with ORDER BY or other clauses is not an aggregate feature"
        ));
    }
    if matches!(f.null_treatment, Some(NullTreatment::RespectNulls)) {
        return refuse(
            "aggregate features skip NULL inputs; RESPECT NULLS is not supported".to_string(),
        );
    }
    let args: Vec<&FunctionArg> = list.args.iter().collect();
    let arg_expr = |a: &FunctionArg| match a {
        FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e.clone()),
        _ => None,
    };
    let is_star = matches!(
        args.as_slice(),
        [FunctionArg::Unnamed(FunctionArgExpr::Wildcard)]
    );
    let (func, argument) = match (name.as_str(), distinct, args.as_slice()) {
        ("count", false, _) if is_star => (Func::Count, None),
        ("count", true, [a]) => (Func::CountDistinct, arg_expr(a)),
        ("count", false, [a]) => (Func::Count, arg_expr(a)),
        ("approx_distinct", false, [a]) => (Func::ApproxDistinct, arg_expr(a)),
        ("sum", false, [a]) => (Func::Sum, arg_expr(a)),
        ("avg" | "mean", false, [a]) => (Func::Avg, arg_expr(a)),
        ("min", false, [a]) => (Func::Min, arg_expr(a)),
        ("max", false, [a]) => (Func::Max, arg_expr(a)),
        ("stddev_samp" | "stddev", false, [a]) => (Func::StddevSamp, arg_expr(a)),
        ("var_samp" | "variance" | "var", false, [a]) => (Func::VarSamp, arg_expr(a)),
        ("first_value", false, [a]) => (Func::FirstValue, arg_expr(a)),
        ("last_value", false, [a]) => (Func::LastValue, arg_expr(a)),
        ("last_k", false, [a, k]) => {
            let k = arg_expr(k)
                .and_then(|k| k.to_string().parse::<usize>().ok())
                .filter(|k| (1..=MAX_LAST_K).contains(k));
            let Some(k) = k else {
                return refuse(format!(
                    "last_k(value, k) takes k as an integer from 1 to {MAX_LAST_K}"
                ));
            };
            (Func::LastK(k), arg_expr(a))
        }
        (
            "count" | "approx_distinct" | "sum" | "avg" | "mean" | "min" | "max" | "stddev_samp"
            | "stddev" | "var_samp" | "variance" | "var" | "first_value" | "last_value" | "last_k",
            _,
            _,
        ) => {
            return refuse(format!(
                "{} is not an aggregate feature; each takes one argument (last_k: two), and only count takes DISTINCT",
                f.to_string().split(" OVER").next().unwrap_or(&name)
            ));
        }
        _ => {
            return refuse(format!(
                "{name} is not an aggregate Flywheel evaluates over a time window; the aggregates \
                 are count, count(DISTINCT), approx_distinct, sum, avg, min, max, stddev_samp, \
                 var_samp, first_value, last_value and last_k"
            ));
        }
    };
    let (argument_text, input) = match (func, argument) {
        (Func::Count, None) => ("*".to_string(), number_one()),
        (_, Some(e)) => (e.to_string(), e),
        (_, None) => {
            return refuse(format!(
                "{name}(...) needs a plain expression as its argument"
            ));
        }
    };
    let input = match &f.filter {
        Some(condition) => Expr::Case {
            case_token: sqlparser::ast::helpers::attached_token::AttachedToken::empty(),
            end_token: sqlparser::ast::helpers::attached_token::AttachedToken::empty(),
            operand: None,
            conditions: vec![CaseWhen {
                condition: condition.as_ref().clone(),
                result: input,
            }],
            else_result: None,
        },
        None => input,
    };
    let aggregate = Aggregate {
        name: String::new(),
        func,
        window: window_text,
        window_us,
        filter: f.filter.as_ref().map(|e| e.to_string()),
        argument: argument_text,
    };
    Ok(Some((aggregate, input)))
}

fn number_one() -> Expr {
    Expr::Value(sqlparser::ast::ValueWithSpan {
        value: sqlparser::ast::Value::Number("1".into(), false),
        span: Span::empty(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn days(text: &str) -> Result<i64> {
        let n: i64 = text
            .split('\'')
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(1);
        Ok(n * 86_400_000_000)
    }

    fn run(query: &str) -> Result<Split> {
        split("v", query, &["user_id".into()], "ts", &days)
    }

    #[test]
    fn window_aggregates_become_features_and_their_inputs_the_query() {
        let s = run("SELECT user_id, ts, sum(amount) OVER (RANGE INTERVAL '7 days' PRECEDING) AS s7, \
             count(*) FILTER (WHERE cat = 'x') OVER (RANGE BETWEEN INTERVAL '1 day' PRECEDING AND CURRENT ROW) AS c1, \
             last_k(m, 3) OVER (RANGE INTERVAL '30 days' PRECEDING) AS lm FROM t WHERE amount > 0")
        .expect("splits");
        assert_eq!(s.aggregates.len(), 3);
        assert_eq!(s.aggregates[0].func, Func::Sum);
        assert_eq!(s.aggregates[0].window_us, 7 * 86_400_000_000);
        assert_eq!(s.aggregates[1].func, Func::Count);
        assert_eq!(s.aggregates[2].func, Func::LastK(3));
        assert_eq!(
            s.query,
            "SELECT user_id, ts, amount AS s7, CASE WHEN cat = 'x' THEN 1 END AS c1, m AS lm FROM t WHERE amount > 0"
        );
    }

    #[test]
    fn plain_columns_beside_aggregates_and_bad_windows_are_refused_by_name() {
        let e = run("SELECT user_id, ts, amount, sum(amount) OVER (RANGE INTERVAL '7 days' PRECEDING) AS s FROM t")
            .expect_err("refused")
            .to_string();
        assert!(e.contains("column `amount` is neither"), "{e}");
        let e = run("SELECT user_id, ts, sum(amount) OVER (ROWS 5 PRECEDING) AS s FROM t")
            .expect_err("refused")
            .to_string();
        assert!(e.contains("RANGE INTERVAL"), "{e}");
        let e = run(
            "SELECT user_id, ts, median(amount) OVER (RANGE INTERVAL '7 days' PRECEDING) AS s FROM t",
        )
        .expect_err("refused")
        .to_string();
        assert!(e.contains("median is not an aggregate"), "{e}");
    }

    #[test]
    fn queries_in_flywheel_sql_split_and_keep_their_time_travel() {
        let s = run("SELECT user_id, ts, sum(a) OVER (RANGE INTERVAL '7 days' PRECEDING) AS s FROM t VERSION AS OF 3")
            .expect("splits");
        assert_eq!(s.query, "SELECT user_id, ts, a AS s FROM t VERSION AS OF 3");
        let s =
            run("SELECT user_id, ts, 'a OVER b' AS note FROM t VERSION AS OF 3").expect("splits");
        assert!(s.aggregates.is_empty());
        assert_eq!(s.columns[2].1, ColumnKind::Plain);
    }

    #[test]
    fn windows_with_partitions_stay_row_windows() {
        let s = run("SELECT user_id, ts, sum(a) OVER (PARTITION BY user_id ORDER BY ts RANGE BETWEEN INTERVAL '7 days' PRECEDING AND CURRENT ROW) AS s FROM t").expect("splits");
        assert!(s.aggregates.is_empty());
        assert_eq!(s.columns[2].1, ColumnKind::RowWindow);
    }
}
