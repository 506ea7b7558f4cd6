//! [`AsOfJoinAnalyzer`]: turns the marked `LEFT JOIN`s that [`rewrite`](super::rewrite) produced into
//! [`AsOfJoinNode`]s, after type coercion (so keys and times already have common types).

use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchema, Result, plan_err};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::utils::split_conjunction_owned;
use datafusion::logical_expr::{
    BinaryExpr, Expr, Extension, Join, JoinType, LogicalPlan, Operator, Projection,
};
use datafusion::optimizer::AnalyzerRule;

use super::{ASOF_MATCH_FN, AsOfJoinNode, MatchOp, commit_order};

/// The analyzer rule; it must run after DataFusion's type coercion.
#[derive(Debug, Default)]
pub struct AsOfJoinAnalyzer;

impl AnalyzerRule for AsOfJoinAnalyzer {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        plan.transform_up_with_subqueries(|plan| match plan {
            LogicalPlan::Join(join) if is_marked(&join) => Ok(Transformed::yes(to_asof(join)?)),
            other => Ok(Transformed::no(other)),
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "flywheel_asof_join"
    }
}

fn is_marker(e: &Expr) -> bool {
    matches!(e, Expr::ScalarFunction(ScalarFunction { func, .. }) if func.name() == ASOF_MATCH_FN)
}

fn is_marked(join: &Join) -> bool {
    join.filter.as_ref().is_some_and(has_marker)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Left,
    Right,
    /// No columns (a constant) or columns of both sides.
    Neither,
}

fn side(e: &Expr, left: &DFSchema, right: &DFSchema) -> Side {
    let cols = e.column_refs();
    if cols.is_empty() {
        return Side::Neither;
    }
    if cols.iter().all(|c| left.has_column(c)) {
        Side::Left
    } else if cols.iter().all(|c| right.has_column(c)) {
        Side::Right
    } else {
        Side::Neither
    }
}

/// A column, possibly under the casts that type coercion adds.
fn is_column(e: &Expr) -> bool {
    match e {
        Expr::Column(_) => true,
        Expr::Cast(c) => is_column(&c.expr),
        Expr::TryCast(c) => is_column(&c.expr),
        Expr::Alias(a) => is_column(&a.expr),
        _ => false,
    }
}

const SUPPORTED_MATCH: &str = "ASOF JOIN supports MATCH_CONDITION (l.t >= r.t) (the latest right row at or before \
     the left time) and (l.t > r.t) (strictly before), also written (r.t <= l.t) / (r.t < l.t), where l.t is \
     a column of the left table and r.t a column of the right one";

fn match_condition(e: &Expr, left: &DFSchema, right: &DFSchema) -> Result<(Expr, Expr, MatchOp)> {
    let inner = match e {
        Expr::ScalarFunction(ScalarFunction { args, .. }) if args.len() == 1 => &args[0],
        _ => return plan_err!("{SUPPORTED_MATCH}"),
    };
    let Expr::BinaryExpr(BinaryExpr {
        left: a,
        op,
        right: b,
    }) = strip_alias(inner)
    else {
        return plan_err!("{SUPPORTED_MATCH}; found `{inner}`");
    };
    if !is_column(a) || !is_column(b) {
        return plan_err!(
            "{SUPPORTED_MATCH}; found `{inner}`, which compares an expression, not columns"
        );
    }
    let (sa, sb) = (side(a, left, right), side(b, left, right));
    let (l, r, op) = match (sa, *op, sb) {
        (Side::Left, Operator::GtEq, Side::Right) => (a, b, MatchOp::AtOrBefore),
        (Side::Left, Operator::Gt, Side::Right) => (a, b, MatchOp::StrictlyBefore),
        (Side::Right, Operator::LtEq, Side::Left) => (b, a, MatchOp::AtOrBefore),
        (Side::Right, Operator::Lt, Side::Left) => (b, a, MatchOp::StrictlyBefore),
        (Side::Left, Operator::LtEq | Operator::Lt, Side::Right)
        | (Side::Right, Operator::GtEq | Operator::Gt, Side::Left) => {
            return plan_err!(
                "{SUPPORTED_MATCH}; found `{inner}`, which points the wrong way (it would look for right rows \
                 after the left time, leaking the future)"
            );
        }
        _ => return plan_err!("{SUPPORTED_MATCH}; found `{inner}`"),
    };
    Ok(((**l).clone(), (**r).clone(), op))
}

fn strip_alias(e: &Expr) -> &Expr {
    match e {
        Expr::Alias(a) => strip_alias(&a.expr),
        other => other,
    }
}

const SUPPORTED_ON: &str = "the ON clause of an ASOF JOIN takes equalities between a left and a right expression, \
     joined by AND (e.g. ON l.user_id = r.user_id AND l.region = r.region)";

fn to_asof(join: Join) -> Result<LogicalPlan> {
    if join.join_type != JoinType::Left {
        return plan_err!(
            "ASOF JOIN is always a left outer join; it cannot be combined with another join type"
        );
    }
    let (left_schema, right_schema) = (join.left.schema().clone(), join.right.schema().clone());
    let mut keys: Vec<(Expr, Expr)> = join.on.clone();
    let mut matched = None;
    let conjuncts = join
        .filter
        .clone()
        .map(split_conjunction_owned)
        .unwrap_or_default();
    for c in conjuncts {
        if is_marker(&c) {
            if matched.is_some() {
                return plan_err!("an ASOF JOIN takes one MATCH_CONDITION");
            }
            matched = Some(match_condition(&c, &left_schema, &right_schema)?);
            continue;
        }
        if let Expr::BinaryExpr(BinaryExpr {
            left: a,
            op: Operator::Eq,
            right: b,
        }) = strip_alias(&c)
        {
            match (
                side(a, &left_schema, &right_schema),
                side(b, &left_schema, &right_schema),
            ) {
                (Side::Left, Side::Right) => {
                    keys.push(((**a).clone(), (**b).clone()));
                    continue;
                }
                (Side::Right, Side::Left) => {
                    keys.push(((**b).clone(), (**a).clone()));
                    continue;
                }
                _ => {}
            }
        }
        if has_marker(&c) {
            return plan_err!(
                "an ASOF JOIN's MATCH_CONDITION cannot be combined with OR or negated"
            );
        }
        return plan_err!("{SUPPORTED_ON}; found `{c}`");
    }
    let Some((left_time, right_time, op)) = matched else {
        return plan_err!("an ASOF JOIN needs a MATCH_CONDITION");
    };
    // On equal times the later commit's row wins: the right side also gives each row's file when
    // it is a Delta table; the column is dropped above the join.
    let Some((right, file, ranks)) = commit_order::with_file_column(&join.right) else {
        let node = AsOfJoinNode::try_new(
            Arc::unwrap_or_clone(join.left),
            Arc::unwrap_or_clone(join.right),
            keys,
            left_time,
            right_time,
            op,
        )?;
        return Ok(LogicalPlan::Extension(Extension {
            node: Arc::new(node),
        }));
    };
    let columns: Vec<Expr> = join
        .schema
        .columns()
        .into_iter()
        .map(Expr::Column)
        .collect();
    let node = AsOfJoinNode::try_new(
        Arc::unwrap_or_clone(join.left),
        right,
        keys,
        left_time,
        right_time,
        op,
    )?
    .with_right_file(Expr::Column(file), commit_order::SharedRanks(ranks));
    let joined = LogicalPlan::Extension(Extension {
        node: Arc::new(node),
    });
    Ok(LogicalPlan::Projection(Projection::try_new(
        columns,
        Arc::new(joined),
    )?))
}

fn has_marker(e: &Expr) -> bool {
    let mut found = false;
    let _ = e.apply(|x| {
        if is_marker(x) {
            found = true;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}
