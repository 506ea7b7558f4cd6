//! What a client's SQL text becomes: statements for the engine, or the session statements
//! Postgres clients send that this front door answers itself (`BEGIN`, `SET`, `SHOW`, ...).
//!
//! Text is parsed by the engine's parser, the same as over Flight, so every Flywheel statement
//! works. The catalog queries of `psql`, JDBC and BI tools are written in PostgreSQL's dialect and
//! read `pg_catalog`: those (text naming `pg_` relations, `information_schema` or oid casts) go
//! through `datafusion-pg-catalog`'s compatibility parser first, which rewrites what DataFusion does
//! not plan (oid casts, `OPERATOR(pg_catalog.~)`, array comparisons) into what it does. Text the
//! engine's parser refuses is tried with the compatibility parser before the syntax error is
//! returned.

use datafusion::sql::parser::Statement as DFStatement;
use datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use flywheel_engine::{Engine, Error, Result};
use flywheel_sql::FlywheelStatement;
use flywheel_sql::ast::FlywheelDdl;
use sqlparser::ast::{Expr, Set, Statement, Value};

use crate::compat;

/// One statement of a client's text.
#[derive(Debug, Clone)]
pub enum Parsed {
    /// `BEGIN` / `START TRANSACTION`: accepted; every statement still commits on its own.
    Begin,
    /// `COMMIT` / `END`.
    Commit,
    /// `ROLLBACK` / `ABORT`: nothing is undone (each statement committed when it ran).
    Rollback,
    /// `SET name = value` / `SET TIME ZONE value`: kept for the connection, shown by `SHOW`.
    Set { name: String, value: String },
    /// `SHOW name`.
    Show(String),
    /// A session statement with nothing to do here (`DISCARD ALL`, `DEALLOCATE`, `RESET`,
    /// savepoints, other `SET` forms), answered with its command tag.
    Accepted(&'static str),
    /// A statement for the engine.
    Engine(FlywheelStatement),
}

/// Parses client text; see the module docs.
#[derive(Debug, Default)]
pub struct Parser {
    compat: PostgresCompatibilityParser,
}

impl Parser {
    pub fn new() -> Self {
        Self::default()
    }

    /// The statements of `sql`, in order.
    pub fn parse(&self, engine: &Engine, sql: &str) -> Result<Vec<Parsed>> {
        let catalog_query = reads_pg_catalog(sql);
        if catalog_query && let Some(statements) = self.compat_parse(engine, sql)? {
            return Ok(statements);
        }
        match engine.parse(sql) {
            Ok(statements) => Ok(statements.into_iter().map(classify).collect()),
            // (A catalog query has been through the compatibility parser already.)
            Err(e @ Error::Sql(_)) if !catalog_query => match self.compat_parse(engine, sql)? {
                Some(statements) => Ok(statements),
                None => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// `sql` through the compatibility parser (`None` if it does not parse there either).
    fn compat_parse(&self, engine: &Engine, sql: &str) -> Result<Option<Vec<Parsed>>> {
        engine.limits().check_text(sql)?;
        match self.compat.parse(sql) {
            Ok(statements) if !statements.is_empty() => Ok(Some(
                statements
                    .into_iter()
                    .map(|s| {
                        classify(FlywheelStatement::DataFusion(Box::new(
                            DFStatement::Statement(Box::new(s)),
                        )))
                    })
                    .collect(),
            )),
            _ => Ok(None),
        }
    }
}

/// Whether `sql` looks like a catalog query of a Postgres client.
fn reads_pg_catalog(sql: &str) -> bool {
    let lower = sql.to_ascii_lowercase();
    [
        "pg_",
        "::reg",
        "information_schema",
        "current_schema",
        "format_type",
    ]
    .iter()
    .any(|needle| lower.contains(needle))
}

fn classify(mut statement: FlywheelStatement) -> Parsed {
    if let FlywheelStatement::DataFusion(df) = &mut statement
        && let DFStatement::Statement(s) = df.as_mut()
    {
        compat::rewrite(s);
    }
    let FlywheelStatement::DataFusion(df) = &statement else {
        return Parsed::Engine(statement);
    };
    let DFStatement::Statement(s) = df.as_ref() else {
        return Parsed::Engine(statement);
    };
    match s.as_ref() {
        Statement::StartTransaction { .. } => Parsed::Begin,
        Statement::Commit { .. } => Parsed::Commit,
        Statement::Rollback {
            savepoint: None, ..
        } => Parsed::Rollback,
        // Savepoints mark nothing: each statement has already committed.
        Statement::Rollback { .. } => Parsed::Accepted("ROLLBACK"),
        Statement::Savepoint { .. } => Parsed::Accepted("SAVEPOINT"),
        Statement::ReleaseSavepoint { .. } => Parsed::Accepted("RELEASE"),
        Statement::Set(Set::SingleAssignment {
            variable, values, ..
        }) => Parsed::Set {
            name: variable.to_string().to_ascii_lowercase(),
            value: values
                .iter()
                .map(setting_value)
                .collect::<Vec<_>>()
                .join(", "),
        },
        Statement::Set(Set::SetTimeZone { value, .. }) => Parsed::Set {
            name: "timezone".into(),
            value: setting_value(value),
        },
        Statement::Set(_) => Parsed::Accepted("SET"),
        Statement::ShowVariable { variable } => Parsed::Show(
            variable
                .iter()
                .map(|i| i.value.to_ascii_lowercase())
                .collect::<Vec<_>>()
                .join(" "),
        ),
        Statement::Discard { .. } => Parsed::Accepted("DISCARD ALL"),
        Statement::Deallocate { .. } => Parsed::Accepted("DEALLOCATE"),
        Statement::Reset(_) => Parsed::Accepted("RESET"),
        _ => Parsed::Engine(statement),
    }
}

/// A `SET` value as `SHOW` prints it: strings without their quotes.
fn setting_value(e: &Expr) -> String {
    match e {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
            other => other.to_string(),
        },
        Expr::Identifier(i) => i.value.clone(),
        other => other.to_string(),
    }
}

/// What a statement's completion says (`CommandComplete`), for statements that return no rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// `INSERT 0 n`: the count is the statement's one value.
    Insert,
    /// `COPY n`, likewise.
    Copy,
    /// A query (`SELECT n`).
    Rows,
    /// A command and its tag (`CREATE TABLE`, `CREATE FEATURE VIEW`, ...).
    Command(String),
}

/// How `statement` completes.
pub fn completion(statement: &FlywheelStatement) -> Completion {
    match statement {
        FlywheelStatement::Flywheel(ddl) => match ddl.as_ref() {
            FlywheelDdl::CreateEntity(_) => Completion::Command("CREATE ENTITY".into()),
            FlywheelDdl::CreateFeatureView(_) => Completion::Command("CREATE FEATURE VIEW".into()),
            FlywheelDdl::CreateLabel(_) => Completion::Command("CREATE LABEL".into()),
            FlywheelDdl::CreateTrainingSet(_) => Completion::Command("CREATE TRAINING SET".into()),
            FlywheelDdl::Alter { kind, .. } => Completion::Command(format!("ALTER {kind}")),
            FlywheelDdl::Drop { kind, .. } => Completion::Command(format!("DROP {kind}")),
            FlywheelDdl::Refresh { .. } | FlywheelDdl::RefreshAll { .. } => {
                Completion::Command("REFRESH".into())
            }
            FlywheelDdl::Show { .. } | FlywheelDdl::Describe { .. } => Completion::Rows,
        },
        FlywheelStatement::DataFusion(df) => match df.as_ref() {
            DFStatement::Statement(s) => match s.as_ref() {
                Statement::Insert(_) => Completion::Insert,
                Statement::Query(_) | Statement::Explain { .. } => Completion::Rows,
                Statement::CreateTable(_) => Completion::Command("CREATE TABLE".into()),
                Statement::Drop { object_type, .. } => {
                    Completion::Command(format!("DROP {object_type}"))
                }
                Statement::Copy { .. } => Completion::Copy,
                Statement::CreateView(_) => Completion::Command("CREATE VIEW".into()),
                _ => Completion::Rows,
            },
            DFStatement::CreateExternalTable(_) => {
                Completion::Command("CREATE EXTERNAL TABLE".into())
            }
            DFStatement::CopyTo(_) => Completion::Copy,
            _ => Completion::Rows,
        },
    }
}

/// Whether a Flywheel statement returns rows (`SHOW`, `DESCRIBE`) and changes nothing, so it can
/// be run to learn its columns when a client describes it before executing.
pub fn is_read_only_listing(statement: &FlywheelStatement) -> bool {
    matches!(
        statement,
        FlywheelStatement::Flywheel(ddl)
            if matches!(ddl.as_ref(), FlywheelDdl::Show { .. } | FlywheelDdl::Describe { .. })
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(sql: &str) -> Parsed {
        let mut parsed = flywheel_sql::parse_sql(sql).expect("parses");
        classify(parsed.pop_front().expect("one statement"))
    }

    #[test]
    fn session_statements_are_answered_here() {
        assert!(matches!(one("BEGIN"), Parsed::Begin));
        assert!(matches!(one("START TRANSACTION"), Parsed::Begin));
        assert!(matches!(one("COMMIT"), Parsed::Commit));
        assert!(matches!(one("ROLLBACK"), Parsed::Rollback));
        match one("SET application_name = 'psql'") {
            Parsed::Set { name, value } => assert_eq!(
                (name.as_str(), value.as_str()),
                ("application_name", "psql")
            ),
            other => panic!("{other:?}"),
        }
        match one("SET TIME ZONE 'UTC'") {
            Parsed::Set { name, value } => {
                assert_eq!((name.as_str(), value.as_str()), ("timezone", "UTC"))
            }
            other => panic!("{other:?}"),
        }
        match one("SHOW transaction isolation level") {
            Parsed::Show(name) => assert_eq!(name, "transaction isolation level"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(one("SELECT 1"), Parsed::Engine(_)));
        assert!(matches!(one("SHOW TABLES"), Parsed::Engine(_)));
    }

    #[test]
    fn completions_name_the_command() {
        let c = |sql: &str| {
            let mut parsed = flywheel_sql::parse_sql(sql).expect("parses");
            completion(&parsed.pop_front().expect("one"))
        };
        assert_eq!(c("INSERT INTO t VALUES (1)"), Completion::Insert);
        assert_eq!(c("SELECT 1"), Completion::Rows);
        assert_eq!(
            c("CREATE TABLE t (a INT)"),
            Completion::Command("CREATE TABLE".into())
        );
        assert_eq!(
            c("CREATE ENTITY user (user_id BIGINT)"),
            Completion::Command("CREATE ENTITY".into())
        );
        assert_eq!(
            c("DROP FEATURE VIEW v"),
            Completion::Command("DROP FEATURE VIEW".into())
        );
    }
}
