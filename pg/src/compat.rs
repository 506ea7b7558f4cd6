//! Rewrites of what Postgres clients write into what DataFusion plans, beyond
//! `datafusion-pg-catalog`'s own rules: `LIKE ... ESCAPE` with another escape character than the
//! backslash (SQLAlchemy's inspector), and correlated scalar subqueries that are not aggregates
//! (SQLAlchemy's column query, psql's `\d`): DataFusion plans a correlated scalar subquery only
//! when it aggregates, so one that picks a single catalog row is read through `max(...)`, and one
//! that builds JSON (`json_build_object`, identity columns, which Flywheel does not have) is NULL;
//! and `unnest` / `generate_subscripts` over `pg_index`'s vectors (SQLAlchemy's key and index queries)
//! are NULL: Flywheel tables have no indexes, so `pg_index` has no rows to expand; a parameter
//! cast to `regclass` (`CAST($1 AS REGCLASS)`, whose text names a relation) becomes the lookup of
//! that relation's oid in `pg_class` (`datafusion-pg-catalog` resolves literals, not parameters).

use std::ops::ControlFlow;

use sqlparser::ast::{
    Expr, Function, FunctionArg, FunctionArgExpr, FunctionArgumentList, FunctionArguments, Ident,
    ObjectName, Query, SelectItem, SetExpr, Statement, Value, VisitMut, VisitorMut,
};
use sqlparser::dialect::GenericDialect;

/// Applies every rewrite of this module to `statement`.
pub fn rewrite(statement: &mut Statement) {
    let _ = statement.visit(&mut LikeEscapes);
    let _ = statement.visit(&mut ScalarSubqueries);
    let _ = statement.visit(&mut IndexKeys);
    let _ = statement.visit(&mut RegclassParameters);
}

/// See the module docs.
struct RegclassParameters;

impl VisitorMut for RegclassParameters {
    type Break = ();

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        if let Expr::Cast {
            expr: inner,
            data_type,
            ..
        } = expr
            && data_type.to_string().eq_ignore_ascii_case("regclass")
            && let Expr::Value(v) = inner.as_ref()
            && let Value::Placeholder(p) = &v.value
        {
            let sql = format!(
                "(SELECT max(c.oid) FROM pg_catalog.pg_class c WHERE c.relname = \
                 regexp_replace(CAST({p} AS TEXT), '^.*[.]', ''))"
            );
            if let Ok(lookup) = sqlparser::parser::Parser::new(&GenericDialect {})
                .try_with_sql(&sql)
                .and_then(|mut p| p.parse_expr())
            {
                *expr = lookup;
            }
        }
        ControlFlow::Continue(())
    }
}

/// See the module docs.
struct IndexKeys;

impl VisitorMut for IndexKeys {
    type Break = ();

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        if let Expr::Function(f) = expr
            && let Some(name) = f.name.0.last().and_then(|p| p.as_ident())
            && ["unnest", "generate_subscripts"]
                .iter()
                .any(|n| name.value.eq_ignore_ascii_case(n))
            && ["indkey", "indclass", "indoption", "indcollation"]
                .iter()
                .any(|c| f.args.to_string().to_ascii_lowercase().contains(c))
        {
            *expr = Expr::Value(Value::Null.into());
        }
        ControlFlow::Continue(())
    }
}

/// Rewrites `x LIKE p ESCAPE '/'` (SQLAlchemy's inspector writes it) to the backslash escapes
/// DataFusion takes: `x LIKE replace(replace(p, '\', '\\'), '/', '\')`. (A doubled escape
/// character, `//`, then means a backslash rather than the character itself.)
struct LikeEscapes;

impl VisitorMut for LikeEscapes {
    type Break = ();

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        if let Expr::Like {
            pattern,
            escape_char,
            ..
        }
        | Expr::ILike {
            pattern,
            escape_char,
            ..
        } = expr
            && let Some(escape) = escape_char
            && let Value::SingleQuotedString(c) = &escape.value
            && c.chars().count() == 1
            && c != "\\"
        {
            let quoted = c.replace('\'', "''");
            let sql = format!("replace(replace(({pattern}), '\\', '\\\\'), '{quoted}', '\\')");
            if let Ok(rewritten) = sqlparser::parser::Parser::new(&GenericDialect {})
                .try_with_sql(&sql)
                .and_then(|mut p| p.parse_expr())
            {
                **pattern = rewritten;
                *escape_char = None;
            }
        }
        ControlFlow::Continue(())
    }
}

/// See the module docs.
struct ScalarSubqueries;

/// Functions DataFusion does not have that clients call inside such subqueries.
const UNAVAILABLE: &[&str] = &[
    "json_build_object",
    "jsonb_build_object",
    "pg_get_serial_sequence",
];

impl VisitorMut for ScalarSubqueries {
    type Break = ();

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        let Expr::Subquery(query) = expr else {
            return ControlFlow::Continue(());
        };
        if mentions(query, UNAVAILABLE) {
            *expr = Expr::Value(Value::Null.into());
            return ControlFlow::Continue(());
        }
        if let SetExpr::Select(select) = query.body.as_mut()
            && select.projection.len() == 1
            && matches!(select.group_by, sqlparser::ast::GroupByExpr::Expressions(ref e, _) if e.is_empty())
            && !aggregates(&select.projection[0])
        {
            let wrap = |e: Expr| {
                Expr::Function(Function {
                    name: ObjectName::from(vec![Ident::new("max")]),
                    uses_odbc_syntax: false,
                    parameters: FunctionArguments::None,
                    args: FunctionArguments::List(FunctionArgumentList {
                        duplicate_treatment: None,
                        args: vec![FunctionArg::Unnamed(FunctionArgExpr::Expr(e))],
                        clauses: vec![],
                    }),
                    filter: None,
                    null_treatment: None,
                    over: None,
                    within_group: vec![],
                })
            };
            select.projection[0] = match select.projection[0].clone() {
                SelectItem::UnnamedExpr(e) => SelectItem::UnnamedExpr(wrap(e)),
                SelectItem::ExprWithAlias { expr, alias } => SelectItem::ExprWithAlias {
                    expr: wrap(expr),
                    alias,
                },
                other => other,
            };
        }
        ControlFlow::Continue(())
    }
}

/// Whether `query` calls one of `functions`.
fn mentions(query: &Query, functions: &[&str]) -> bool {
    struct Finder<'a>(&'a [&'a str]);
    impl sqlparser::ast::Visitor for Finder<'_> {
        type Break = ();
        fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
            if let Expr::Function(f) = expr
                && let Some(name) = f.name.0.last().and_then(|p| p.as_ident())
                && self.0.iter().any(|n| name.value.eq_ignore_ascii_case(n))
            {
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
    }
    sqlparser::ast::Visit::visit(query, &mut Finder(functions)).is_break()
}

/// Whether a projection item is already an aggregate (`count(*)`, `max(x)`, ...), or a constant.
fn aggregates(item: &SelectItem) -> bool {
    let expr = match item {
        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => e,
        _ => return true,
    };
    match expr {
        Expr::Function(f) => f.name.0.last().and_then(|p| p.as_ident()).is_some_and(|n| {
            [
                "count",
                "max",
                "min",
                "sum",
                "avg",
                "array_agg",
                "string_agg",
                "bool_or",
                "bool_and",
                "first_value",
                "last_value",
            ]
            .iter()
            .any(|a| n.value.eq_ignore_ascii_case(a))
        }),
        Expr::Value(_) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(sql: &str) -> String {
        let mut s = sqlparser::parser::Parser::parse_sql(&GenericDialect {}, sql)
            .expect("parses")
            .remove(0);
        rewrite(&mut s);
        s.to_string()
    }

    #[test]
    fn like_with_another_escape_character_uses_backslashes() {
        assert_eq!(
            rewritten("SELECT 1 WHERE 'pg_x' NOT LIKE 'pg/_' || '%' ESCAPE '/'"),
            "SELECT 1 WHERE 'pg_x' NOT LIKE replace(replace(('pg/_' || '%'), '\\', '\\\\'), '/', '\\')"
        );
    }

    #[test]
    fn scalar_subqueries_aggregate_and_json_ones_are_null() {
        assert_eq!(
            rewritten("SELECT (SELECT b.x AS y FROM b WHERE b.id = a.id) AS d FROM a"),
            "SELECT (SELECT max(b.x) AS y FROM b WHERE b.id = a.id) AS d FROM a"
        );
        assert_eq!(
            rewritten("SELECT (SELECT count(*) FROM b WHERE b.id = a.id) FROM a"),
            "SELECT (SELECT count(*) FROM b WHERE b.id = a.id) FROM a"
        );
        assert_eq!(
            rewritten("SELECT (SELECT json_build_object('a', 1) FROM b) AS j FROM a"),
            "SELECT NULL AS j FROM a"
        );
    }

    #[test]
    fn regclass_parameters_are_looked_up() {
        assert_eq!(
            rewritten("SELECT 1 WHERE x = CAST($1 AS REGCLASS)"),
            "SELECT 1 WHERE x = (SELECT max(c.oid) FROM pg_catalog.pg_class c WHERE c.relname = \
             regexp_replace(CAST($1 AS TEXT), '^.*[.]', ''))"
        );
    }

    #[test]
    fn index_key_expansions_are_null() {
        assert_eq!(
            rewritten(
                "SELECT unnest(i.indkey) AS k, generate_subscripts(i.indkey, 1) FROM pg_index i"
            ),
            "SELECT NULL AS k, NULL FROM pg_index i"
        );
    }
}
