//! The statement parser: Flywheel's statements first, DataFusion's parser for everything else.

use std::collections::VecDeque;
use std::fmt;

use datafusion::sql::parser::{DFParser, DFParserBuilder, Statement as DFStatement};
use sqlparser::tokenizer::Token;

use crate::ast::FlywheelDdl;
use crate::{FlywheelDialect, Result};

/// One parsed statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlywheelStatement {
    /// A statement of DataFusion's SQL (queries, DML, tables, `EXPLAIN`, ...), parsed by `DFParser`.
    DataFusion(Box<DFStatement>),
    /// One of Flywheel's statements (entities, feature views, labels, training sets).
    Flywheel(Box<FlywheelDdl>),
}

impl fmt::Display for FlywheelStatement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlywheelStatement::DataFusion(s) => write!(f, "{s}"),
            FlywheelStatement::Flywheel(s) => write!(f, "{s}"),
        }
    }
}

/// Parses SQL text into Flywheel statements; see [`parse_sql`].
pub struct FlywheelParser<'a> {
    df: DFParser<'a>,
}

const DIALECT: FlywheelDialect = FlywheelDialect;

impl<'a> FlywheelParser<'a> {
    /// A parser over `sql`, tokenized with [`FlywheelDialect`].
    pub fn new(sql: &'a str) -> Result<Self> {
        let df = DFParserBuilder::new(sql).with_dialect(&DIALECT).build()?;
        Ok(Self { df })
    }

    /// Parses every statement in the text; empty statements (`;;`) are skipped.
    pub fn parse_statements(&mut self) -> Result<VecDeque<FlywheelStatement>> {
        let mut out = VecDeque::new();
        let mut expecting_delimiter = false;
        loop {
            while self.df.parser.consume_token(&Token::SemiColon) {
                expecting_delimiter = false;
            }
            let next = self.df.parser.peek_token();
            if next.token == Token::EOF {
                break;
            }
            if expecting_delimiter {
                return Err(crate::Error::Syntax {
                    message: format!(
                        "Expected: end of statement, found: {next}{}",
                        next.span.start
                    ),
                });
            }
            out.push_back(self.parse_statement()?);
            expecting_delimiter = true;
        }
        Ok(out)
    }

    /// Parses one statement at the current position.
    pub fn parse_statement(&mut self) -> Result<FlywheelStatement> {
        let ours = crate::ddl_parser::try_parse(&mut self.df.parser).map_err(|e| {
            crate::Error::Syntax {
                message: match e {
                    sqlparser::parser::ParserError::ParserError(m)
                    | sqlparser::parser::ParserError::TokenizerError(m) => m,
                    other => other.to_string(),
                },
            }
        })?;
        if let Some(ddl) = ours {
            return Ok(FlywheelStatement::Flywheel(Box::new(ddl)));
        }
        Ok(FlywheelStatement::DataFusion(Box::new(
            self.df.parse_statement()?,
        )))
    }
}

/// Parses `sql` (one or more statements separated by `;`).
pub fn parse_sql(sql: &str) -> Result<VecDeque<FlywheelStatement>> {
    FlywheelParser::new(sql)?.parse_statements()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::ast::{Statement, TableFactor, TableVersion};

    fn one(sql: &str) -> FlywheelStatement {
        let mut v = parse_sql(sql).expect("parses");
        assert_eq!(v.len(), 1, "{sql}");
        v.pop_front().expect("one statement")
    }

    fn roundtrip(sql: &str) {
        let first = one(sql);
        let printed = first.to_string();
        let second = one(&printed);
        assert_eq!(first, second, "`{sql}` printed as `{printed}`");
    }

    fn table_version(sql: &str) -> Option<TableVersion> {
        let FlywheelStatement::DataFusion(s) = one(sql) else {
            panic!("not a DataFusion statement")
        };
        let DFStatement::Statement(s) = *s else {
            panic!("not a sqlparser statement")
        };
        let Statement::Query(q) = *s else {
            panic!("not a query")
        };
        let sqlparser::ast::SetExpr::Select(sel) = *q.body else {
            panic!("not a select")
        };
        match &sel.from[0].relation {
            TableFactor::Table { version, .. } => version.clone(),
            _ => None,
        }
    }

    #[test]
    fn version_as_of_parses() {
        assert!(matches!(
            table_version("SELECT * FROM t VERSION AS OF 3"),
            Some(TableVersion::VersionAsOf(_))
        ));
        assert!(matches!(
            table_version("SELECT * FROM t TIMESTAMP AS OF '2026-11-01T00:00:00Z'"),
            Some(TableVersion::TimestampAsOf(_))
        ));
        assert_eq!(table_version("SELECT * FROM t"), None);
    }

    #[test]
    fn statements_roundtrip() {
        for sql in [
            "SELECT a, b FROM t WHERE a > 1",
            "SELECT * FROM t VERSION AS OF 3",
            "SELECT * FROM t TIMESTAMP AS OF '2026-11-01T00:00:00Z'",
            "CREATE TABLE t (a BIGINT, b VARCHAR)",
            "CREATE TABLE t AS SELECT 1 AS a",
            "INSERT INTO t VALUES (1, 'x'), (2, 'y')",
            "DROP TABLE IF EXISTS t",
            "CREATE EXTERNAL TABLE x STORED AS DELTA LOCATION '/tmp/x'",
            "EXPLAIN SELECT 1",
            "CREATE ENTITY user (user_id BIGINT)",
            "CREATE OR REPLACE ENTITY IF NOT EXISTS merchant_user (merchant_id VARCHAR, user_id BIGINT)",
            "CREATE FEATURE VIEW user_txn ENTITY user EVENT TIME ts TTL INTERVAL '30 days' AS SELECT user_id, ts, amount FROM transactions",
            "CREATE FEATURE VIEW s ENTITY user EVENT TIME ts WITH (online = true, refresh = 'every 15 minutes') AS SELECT * FROM t",
            "CREATE LABEL is_fraud ENTITY user EVENT TIME ts FROM (SELECT user_id, ts, is_fraud FROM chargebacks)",
            "CREATE LABEL churned ENTITY user EVENT TIME ts FROM churn_events",
            "CREATE TRAINING SET fraud_train LABEL is_fraud FEATURES user_txn, user_profile.age",
            "REFRESH FEATURE VIEW user_txn",
            "ALTER FEATURE VIEW user_txn SET (online = true)",
            "REFRESH TRAINING SET fraud_train",
            "REFRESH LABEL is_fraud",
            "REFRESH TRAINING SET fraud_train ONLY",
            "REFRESH ALL",
            "SHOW ENTITIES",
            "SHOW FEATURE VIEWS",
            "SHOW LABELS",
            "SHOW TRAINING SETS",
            "DESCRIBE FEATURE VIEW user_txn",
            "DROP FEATURE VIEW IF EXISTS user_txn CASCADE",
            "DROP ENTITY user",
        ] {
            roundtrip(sql);
        }
    }

    #[test]
    fn flywheel_statements_are_recognized_and_others_are_not() {
        assert!(matches!(
            one("create feature view v entity e event time ts as select 1"),
            FlywheelStatement::Flywheel(_)
        ));
        assert!(matches!(
            one("SHOW TABLES"),
            FlywheelStatement::DataFusion(_)
        ));
        assert!(matches!(
            one("CREATE VIEW v AS SELECT 1"),
            FlywheelStatement::DataFusion(_)
        ));
        assert!(matches!(
            one("DROP TABLE t"),
            FlywheelStatement::DataFusion(_)
        ));
        let e = parse_sql("CREATE FEATURE VIEW v ENTITY e AS SELECT 1")
            .expect_err("no event time")
            .to_string();
        assert!(e.contains("Expected: EVENT"), "{e}");
        let e = parse_sql("REFRESH ENTITY e")
            .expect_err("not refreshable")
            .to_string();
        assert!(
            e.contains("REFRESH applies to FEATURE VIEW, LABEL and TRAINING SET (or ALL)"),
            "{e}"
        );
    }

    #[test]
    fn several_statements_and_empty_ones() {
        assert_eq!(parse_sql("SELECT 1;; SELECT 2;").expect("parses").len(), 2);
        assert!(parse_sql("").expect("parses").is_empty());
    }

    #[test]
    fn syntax_error_names_the_position() {
        let e = parse_sql("SELECT * FORM t")
            .expect_err("bad sql")
            .to_string();
        assert!(e.contains("Line: 1, Column"), "{e}");
    }

    /// Fuzzing the parser with what a hostile client may send: it answers every input with
    /// statements or an error, never a panic, and what it parses prints back as SQL that parses.
    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        /// Fragments of Flywheel's and DataFusion's grammar, so that inputs get deep into both.
        const WORDS: &[&str] = &[
            "CREATE",
            "OR",
            "REPLACE",
            "FEATURE",
            "VIEW",
            "LABEL",
            "TRAINING",
            "SET",
            "ENTITY",
            "EVENT",
            "TIME",
            "TTL",
            "INTERVAL",
            "'1 day'",
            "AS",
            "SELECT",
            "FROM",
            "WHERE",
            "ASOF",
            "JOIN",
            "MATCH_CONDITION",
            "ON",
            "VERSION",
            "TIMESTAMP",
            "OF",
            "REFRESH",
            "DROP",
            "TABLE",
            "IF",
            "NOT",
            "EXISTS",
            "CASCADE",
            "WITH",
            "(",
            ")",
            ",",
            ";",
            "=",
            ">=",
            "+",
            "*",
            "1",
            "'x'",
            "t",
            "\"q\"",
            "user_id",
            "ts",
            "FEATURES",
            "DESCRIBE",
            "SHOW",
            "ENTITIES",
            "ALTER",
            "COPY",
            "TO",
            "INSERT",
            "INTO",
            "VALUES",
            "$1",
            "NULL",
        ];

        fn token_soup() -> impl Strategy<Value = String> {
            prop::collection::vec(prop::sample::select(WORDS), 0..40).prop_map(|w| w.join(" "))
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
                let _ = parse_sql(&text);
            }

            #[test]
            fn grammar_soup_never_panics_and_round_trips(text in token_soup()) {
                if let Ok(statements) = parse_sql(&text) {
                    for s in statements {
                        if let FlywheelStatement::Flywheel(_) = &s {
                            let printed = s.to_string();
                            let again = parse_sql(&printed);
                            prop_assert!(again.is_ok(), "`{}` printed as `{}`", text, printed);
                        }
                    }
                }
            }

            #[test]
            fn deep_nesting_is_refused_not_overflowed(depth in 1usize..400) {
                let nested = format!("SELECT {}1{}", "(".repeat(depth), ")".repeat(depth));
                let _ = parse_sql(&nested);
            }
        }
    }
}
