//! The tables a statement reads, checked before planning: a missing one is
//! [`flywheel_catalog::Error::TableNotFound`], a structured error naming it, instead of the text of
//! DataFusion's planning error (which a front door could only classify by reading it).
//!
//! Tables read in `FROM` and `JOIN` clauses and the target of an `INSERT` are checked (not table
//! functions, not the names of the statement's own common table expressions, not the name a
//! `CREATE` makes). `information_schema` belongs to DataFusion and is left to it.

use std::collections::HashSet;
use std::ops::ControlFlow;

use datafusion::common::TableReference;
use datafusion::execution::session_state::SessionState;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::planner::object_name_to_table_reference;
use flywheel_catalog::TIME_TRAVEL_SCHEMA;
use sqlparser::ast::{Query, Statement, TableFactor, TableObject, Visit, Visitor};

use crate::Result;

/// Fails with [`flywheel_catalog::Error::TableNotFound`] for the first table `statement` reads
/// that no schema of the session holds.
pub(crate) fn check_tables_exist(state: &SessionState, statement: &DFStatement) -> Result<()> {
    let mut found = ReadTables::default();
    let _ = match statement {
        DFStatement::Statement(s) => s.visit(&mut found),
        DFStatement::Explain(e) => match e.statement.as_ref() {
            DFStatement::Statement(s) => s.visit(&mut found),
            _ => ControlFlow::Continue(()),
        },
        _ => ControlFlow::Continue(()),
    };
    let normalize = state.config_options().sql_parser.enable_ident_normalization;
    for name in found.tables {
        let Ok(reference) = object_name_to_table_reference(name, normalize) else {
            // Left to the planner, which says what is wrong with the name.
            continue;
        };
        if matches!(&reference, TableReference::Bare { table } if found.ctes.contains(table.as_ref()))
        {
            continue;
        }
        let catalog = &state.config_options().catalog;
        let resolved = reference
            .clone()
            .resolve(&catalog.default_catalog, &catalog.default_schema);
        if resolved.schema.as_ref() == "information_schema" {
            continue;
        }
        let exists = state
            .schema_for_ref(reference.clone())
            .is_ok_and(|s| s.table_exist(&resolved.table));
        if !exists {
            // A time-travel reference names its table as the user wrote it.
            let name = match flywheel_catalog::TravelTarget::decode(&resolved.table) {
                Some((table, _)) if resolved.schema.as_ref() == TIME_TRAVEL_SCHEMA => {
                    table.to_string()
                }
                _ => reference.to_string(),
            };
            return Err(flywheel_catalog::Error::TableNotFound { name }.into());
        }
    }
    Ok(())
}

/// The names of the tables a statement reads or inserts into, and of its common table
/// expressions.
#[derive(Default)]
struct ReadTables {
    tables: Vec<sqlparser::ast::ObjectName>,
    ctes: HashSet<String>,
}

impl Visitor for ReadTables {
    type Break = ();

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        if let Some(with) = &query.with {
            for cte in &with.cte_tables {
                self.ctes.insert(cte.alias.name.value.clone());
                self.ctes.insert(cte.alias.name.value.to_lowercase());
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_statement(&mut self, statement: &Statement) -> ControlFlow<()> {
        if let Statement::Insert(insert) = statement
            && let TableObject::TableName(name) = &insert.table
        {
            self.tables.push(name.clone());
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
        if let TableFactor::Table {
            name, args: None, ..
        } = factor
        {
            self.tables.push(name.clone());
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use crate::{Engine, Error};

    #[tokio::test]
    async fn missing_tables_are_named_and_ctes_and_functions_are_not_tables() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = Engine::open(dir.path().to_str().expect("utf-8"))
            .await
            .expect("opens");
        engine
            .sql("CREATE TABLE t AS SELECT 1 AS x")
            .await
            .expect("creates");
        for ok in [
            "WITH c AS (SELECT x FROM t) SELECT * FROM c",
            "SELECT * FROM generate_series(1, 3)",
            "SELECT * FROM t VERSION AS OF 0",
            "SELECT * FROM information_schema.tables",
            "SELECT * FROM flywheel.tables",
            "INSERT INTO t VALUES (2)",
        ] {
            engine.sql(ok).await.unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for (missing, name) in [
            ("SELECT * FROM nope", "nope"),
            ("SELECT * FROM t JOIN nope ON true", "nope"),
            ("SELECT * FROM nope VERSION AS OF 1", "nope"),
            ("INSERT INTO nope VALUES (1)", "nope"),
            ("EXPLAIN SELECT * FROM flywheel.nope", "flywheel.nope"),
        ] {
            match engine.sql(missing).await {
                Err(Error::Catalog(flywheel_catalog::Error::TableNotFound { name: n })) => {
                    assert_eq!(n, name, "{missing}")
                }
                other => panic!("{missing}: {other:?}"),
            }
        }
    }
}
