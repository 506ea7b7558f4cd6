//! Rewrites `t VERSION AS OF n` / `t TIMESTAMP AS OF '...'` into names DataFusion can resolve.
//!
//! DataFusion's planner parses but ignores table versions. Before planning, every versioned table
//! reference becomes a reference into the catalog's hidden time-travel schema (see
//! `flywheel_catalog::TravelTarget`), aliased with the original table name so that qualified columns
//! (`t.a`) keep working.

use std::ops::ControlFlow;

use datafusion::sql::parser::Statement as DFStatement;
use flywheel_catalog::{DEFAULT_CATALOG, DEFAULT_SCHEMA, TIME_TRAVEL_SCHEMA, TravelTarget};
use sqlparser::ast::{
    Expr, Ident, ObjectName, ObjectNamePart, TableAlias, TableFactor, TableVersion, Value,
    VisitMut, VisitorMut,
};

use crate::{Error, Result};

/// Rewrites every versioned table reference of `statement` in place.
pub(super) fn rewrite(statement: &mut DFStatement) -> Result<()> {
    visit_statement_mut(statement, &mut Rewriter)
}

/// Runs `visitor` over the SQL of `statement` (also inside `EXPLAIN`), stopping at its first error.
pub(crate) fn visit_statement_mut<V: VisitorMut<Break = Error>>(
    statement: &mut DFStatement,
    visitor: &mut V,
) -> Result<()> {
    let flow = match statement {
        DFStatement::Statement(s) => s.visit(visitor),
        DFStatement::Explain(e) => match e.statement.as_mut() {
            DFStatement::Statement(s) => s.visit(visitor),
            _ => ControlFlow::Continue(()),
        },
        _ => ControlFlow::Continue(()),
    };
    match flow {
        ControlFlow::Break(e) => Err(e),
        ControlFlow::Continue(()) => Ok(()),
    }
}

struct Rewriter;

impl VisitorMut for Rewriter {
    type Break = Error;

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<Error> {
        let TableFactor::Table {
            name,
            alias,
            version,
            ..
        } = factor
        else {
            return ControlFlow::Continue(());
        };
        let Some(v) = version.take() else {
            return ControlFlow::Continue(());
        };
        match rewrite_one(name, alias, v) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => ControlFlow::Break(e),
        }
    }
}

fn rewrite_one(
    name: &mut ObjectName,
    alias: &mut Option<TableAlias>,
    version: TableVersion,
) -> Result<()> {
    let target = target_of(&version)?;
    let parts: Vec<Ident> = name
        .0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(i) => Ok(i.clone()),
            other => Err(Error::InvalidInput(format!(
                "time travel needs a plain table name, found `{other}`"
            ))),
        })
        .collect::<Result<_>>()?;
    let Some(table) = parts.last().cloned() else {
        return Err(Error::InvalidInput("time travel needs a table name".into()));
    };
    let prefix: Vec<String> = parts[..parts.len() - 1]
        .iter()
        .map(super::object_name)
        .collect();
    let ok_prefix = match prefix.as_slice() {
        [] => true,
        [s] => s == DEFAULT_SCHEMA,
        [c, s] => c == DEFAULT_CATALOG && s == DEFAULT_SCHEMA,
        _ => false,
    };
    if !ok_prefix {
        return Err(Error::Unsupported {
            what: format!("time travel on `{name}`"),
            hint: format!(
                "only tables of the warehouse ({DEFAULT_CATALOG}.{DEFAULT_SCHEMA}) have versions"
            ),
        });
    }
    let encoded = target.encode(&super::object_name(&table));
    *name = ObjectName::from(vec![
        Ident::new(DEFAULT_CATALOG),
        Ident::new(TIME_TRAVEL_SCHEMA),
        Ident::with_quote('"', encoded),
    ]);
    if alias.is_none() {
        *alias = Some(TableAlias {
            explicit: false,
            name: table,
            columns: vec![],
            at: None,
        });
    }
    Ok(())
}

fn target_of(version: &TableVersion) -> Result<TravelTarget> {
    match version {
        TableVersion::VersionAsOf(e) => match e {
            Expr::Value(v) => match &v.value {
                Value::Number(n, _) => n
                    .parse::<u64>()
                    .map(TravelTarget::Version)
                    .map_err(|_| bad_version(e)),
                _ => Err(bad_version(e)),
            },
            _ => Err(bad_version(e)),
        },
        TableVersion::TimestampAsOf(e) => {
            let text = match e {
                Expr::Value(v) => match &v.value {
                    Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
                    _ => return Err(bad_timestamp(e)),
                },
                Expr::TypedString(t) => match &t.value.value {
                    Value::SingleQuotedString(s) => s.clone(),
                    _ => return Err(bad_timestamp(e)),
                },
                _ => return Err(bad_timestamp(e)),
            };
            Ok(TravelTarget::Timestamp(
                parse_timestamp(&text).ok_or_else(|| bad_timestamp(e))?,
            ))
        }
        other => Err(Error::Unsupported {
            what: format!("`{other}`"),
            hint: "use `VERSION AS OF <n>` or `TIMESTAMP AS OF '<RFC 3339 timestamp>'`".into(),
        }),
    }
}

/// Accepts RFC 3339 (`2026-11-01T00:00:00Z`), or a date-time / date without zone taken as UTC.
fn parse_timestamp(text: &str) -> Option<String> {
    use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};
    let t = text.trim();
    let utc = if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        dt.with_timezone(&Utc)
    } else if let Ok(dt) = NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f"))
    {
        dt.and_utc()
    } else {
        NaiveDate::parse_from_str(t, "%Y-%m-%d")
            .ok()?
            .and_hms_opt(0, 0, 0)?
            .and_utc()
    };
    Some(utc.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

fn bad_version(e: &Expr) -> Error {
    Error::InvalidInput(format!(
        "VERSION AS OF takes a non-negative integer literal (a Delta table version), found `{e}`; e.g. `t VERSION AS OF 3`"
    ))
}

fn bad_timestamp(e: &Expr) -> Error {
    Error::InvalidInput(format!(
        "TIMESTAMP AS OF takes a timestamp literal, found `{e}`; e.g. `t TIMESTAMP AS OF '2026-11-01T00:00:00Z'`"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(sql: &str) -> Result<String> {
        let mut s = flywheel_sql::parse_sql(sql).expect("parses");
        let Some(flywheel_sql::FlywheelStatement::DataFusion(mut st)) = s.pop_front() else {
            panic!("not a DataFusion statement")
        };
        rewrite(&mut st)?;
        Ok(st.to_string())
    }

    #[test]
    fn versions_become_hidden_schema_names() {
        let s = rewritten("SELECT t.a FROM t VERSION AS OF 3").expect("ok");
        assert!(
            s.contains("flywheel.__flywheel_time_travel.\"t@v3\" t"),
            "{s}"
        );
        let s = rewritten("SELECT * FROM public.T TIMESTAMP AS OF '2026-11-01 00:00:00' AS x")
            .expect("ok");
        assert!(s.contains("\"t@ts2026-11-01T00:00:00Z\" AS x"), "{s}");
    }

    #[test]
    fn bad_versions_are_explained() {
        let e = rewritten("SELECT * FROM t VERSION AS OF 1.5")
            .expect_err("bad")
            .to_string();
        assert!(e.contains("non-negative integer"), "{e}");
        let e = rewritten("SELECT * FROM t TIMESTAMP AS OF 'yesterday'")
            .expect_err("bad")
            .to_string();
        assert!(e.contains("timestamp literal"), "{e}");
        let e = rewritten("SELECT * FROM other.t VERSION AS OF 1")
            .expect_err("bad")
            .to_string();
        assert!(e.contains("only tables of the warehouse"), "{e}");
    }
}
