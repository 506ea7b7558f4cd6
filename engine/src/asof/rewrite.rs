//! AST rewrite: `a ASOF JOIN b MATCH_CONDITION (m) ON k` becomes
//! `a LEFT JOIN b ON (k) AND __flywheel_asof_match(m)`, which DataFusion plans; the analyzer then
//! turns it into an [`AsOfJoinNode`](super::AsOfJoinNode).

use std::ops::ControlFlow;

use datafusion::sql::parser::Statement as DFStatement;
use flywheel_sql::FlywheelDialect;
use sqlparser::ast::{
    BinaryOperator, Expr, JoinConstraint, JoinOperator, Query, SetExpr, TableFactor,
    TableWithJoins, VisitorMut,
};
use sqlparser::parser::Parser;

use super::ASOF_MATCH_FN;
use crate::visit_statement_mut;
use crate::{Error, Result};

/// Rewrites every `ASOF JOIN` of `statement` in place.
pub fn rewrite_asof_joins(statement: &mut DFStatement) -> Result<()> {
    visit_statement_mut(statement, &mut Rewriter)
}

struct Rewriter;

impl VisitorMut for Rewriter {
    type Break = Error;

    // Every query (top level, subqueries, CTEs, derived tables) is visited, so rewriting the joins
    // of its body is enough.
    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<Error> {
        match rewrite_set_expr(&mut query.body) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => ControlFlow::Break(e),
        }
    }
}

fn rewrite_set_expr(body: &mut SetExpr) -> Result<()> {
    match body {
        SetExpr::Select(select) => select
            .from
            .iter_mut()
            .try_for_each(rewrite_table_with_joins),
        SetExpr::SetOperation { left, right, .. } => {
            rewrite_set_expr(left)?;
            rewrite_set_expr(right)
        }
        _ => Ok(()),
    }
}

fn rewrite_table_with_joins(twj: &mut TableWithJoins) -> Result<()> {
    rewrite_factor(&mut twj.relation)?;
    for join in &mut twj.joins {
        rewrite_factor(&mut join.relation)?;
        let JoinOperator::AsOf {
            match_condition,
            constraint,
        } = &join.join_operator
        else {
            continue;
        };
        let marker = marker_expr(match_condition)?;
        let on = match constraint {
            JoinConstraint::On(keys) => Expr::BinaryOp {
                left: Box::new(Expr::Nested(Box::new(keys.clone()))),
                op: BinaryOperator::And,
                right: Box::new(marker),
            },
            JoinConstraint::None => marker,
            JoinConstraint::Using(_) | JoinConstraint::Natural => {
                return Err(Error::Unsupported {
                    what: "ASOF JOIN with USING or NATURAL".into(),
                    hint: "name the keys: ASOF JOIN r MATCH_CONDITION (l.t >= r.t) ON l.k = r.k"
                        .into(),
                });
            }
        };
        join.join_operator = JoinOperator::LeftOuter(JoinConstraint::On(on));
    }
    Ok(())
}

fn rewrite_factor(factor: &mut TableFactor) -> Result<()> {
    match factor {
        TableFactor::NestedJoin {
            table_with_joins, ..
        } => rewrite_table_with_joins(table_with_joins),
        _ => Ok(()),
    }
}

/// `__flywheel_asof_match(<condition>)`, built by parsing so that it matches what the parser makes.
fn marker_expr(condition: &Expr) -> Result<Expr> {
    let text = format!("{ASOF_MATCH_FN}({condition})");
    Parser::new(&FlywheelDialect)
        .try_with_sql(&text)
        .and_then(|mut p| p.parse_expr())
        .map_err(|e| {
            Error::InvalidInput(format!(
                "invalid ASOF JOIN MATCH_CONDITION `{condition}`: {e}"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(sql: &str) -> String {
        let mut s = flywheel_sql::parse_sql(sql).expect("parses");
        let Some(flywheel_sql::FlywheelStatement::DataFusion(mut st)) = s.pop_front() else {
            panic!("not a DataFusion statement")
        };
        rewrite_asof_joins(&mut st).expect("rewrites");
        st.to_string()
    }

    #[test]
    fn asof_becomes_a_marked_left_join() {
        let s =
            rewritten("SELECT * FROM l ASOF JOIN r MATCH_CONDITION (l.ts >= r.ts) ON l.k = r.k");
        assert_eq!(
            s,
            "SELECT * FROM l LEFT OUTER JOIN r ON (l.k = r.k) AND __flywheel_asof_match(l.ts >= r.ts)"
        );
    }

    #[test]
    fn nested_and_subquery_joins_are_rewritten() {
        let s = rewritten(
            "SELECT * FROM (SELECT * FROM a ASOF JOIN b MATCH_CONDITION (a.t > b.t)) x \
             WHERE x.k IN (SELECT k FROM c ASOF JOIN d MATCH_CONDITION (c.t >= d.t) ON c.k = d.k)",
        );
        assert_eq!(s.matches(ASOF_MATCH_FN).count(), 2, "{s}");
        assert!(!s.contains("ASOF"), "{s}");
    }
}
