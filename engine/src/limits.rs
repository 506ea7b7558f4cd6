//! What one statement may ask of the engine: text size, expression depth, running time.
//!
//! A server answers statements from clients it does not control; one statement must not take it
//! down or hold it forever. Checked here, before and while a statement runs:
//! - **text size** ([`Limits::max_statement_bytes`]): refused before parsing;
//! - **expression depth** ([`Limits::max_expression_depth`]): DataFusion names, prints and evaluates
//!   expressions recursively, so `1 + 1 + ... + 1` with thousands of terms needs a stack frame per
//!   term in code no guard protects; the nesting of expressions and subqueries is measured on the
//!   parsed statement (by sqlparser's visitor, which grows its own stack) and refused past the
//!   limit. The `flywheel` binary's threads have [`super::THREAD_STACK_BYTES`] of stack, enough
//!   for the default limit in a debug build;
//! - **running time** ([`Limits::statement_timeout`]): a query's stream ends with an error once the
//!   statement has run that long (a recursive CTE without end), and a command (DDL, DML, a
//!   refresh) is cancelled: nothing it did not commit stays visible.
//!
//! Refusals are [`Error::Limit`] (`INVALID_ARGUMENT` at the server), cancellations
//! [`Error::Timeout`] (`DEADLINE_EXCEEDED`); both name the setting.

use std::ops::ControlFlow;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use datafusion::error::DataFusionError;
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream};
use datafusion::sql::parser::{CopyToSource, Statement as DFStatement};
use futures::{Stream, StreamExt as _};
use sqlparser::ast::{Expr, Query, Visit, Visitor};

use crate::{Error, Result};

/// Default of [`Limits::max_statement_bytes`]: 16 MiB of SQL text.
pub const DEFAULT_MAX_STATEMENT_BYTES: usize = 16 << 20;

/// Default of [`Limits::max_expression_depth`].
pub const DEFAULT_MAX_EXPRESSION_DEPTH: usize = 2_500;

/// The limits every statement of an engine runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The longest SQL text of one request, in bytes.
    pub max_statement_bytes: usize,
    /// The deepest nesting of expressions and subqueries in one statement.
    pub max_expression_depth: usize,
    /// How long one statement may run (`None`: no limit).
    pub statement_timeout: Option<Duration>,
    /// The most entity keys one online lookup may ask for.
    pub max_lookup_keys: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_statement_bytes: DEFAULT_MAX_STATEMENT_BYTES,
            max_expression_depth: DEFAULT_MAX_EXPRESSION_DEPTH,
            statement_timeout: None,
            max_lookup_keys: crate::online::DEFAULT_MAX_LOOKUP_KEYS,
        }
    }
}

impl Limits {
    /// Refuses SQL text longer than [`Limits::max_statement_bytes`].
    pub fn check_text(&self, sql: &str) -> Result<()> {
        if sql.len() > self.max_statement_bytes {
            return Err(Error::Limit(format!(
                "the statement is {} bytes long; the most this server takes is {} \
                 (max_statement_bytes): load large inputs into a table (bulk ingest) and join it",
                sql.len(),
                self.max_statement_bytes
            )));
        }
        Ok(())
    }

    /// Refuses a statement whose expressions and subqueries nest deeper than
    /// [`Limits::max_expression_depth`].
    pub(super) fn check_depth(&self, statement: &DFStatement) -> Result<()> {
        let mut depth = Depth {
            current: 0,
            limit: self.max_expression_depth,
        };
        let flow = match statement {
            DFStatement::Statement(s) => s.visit(&mut depth),
            DFStatement::CopyTo(copy) => match &copy.source {
                CopyToSource::Query(q) => q.visit(&mut depth),
                CopyToSource::Relation(_) => ControlFlow::Continue(()),
            },
            DFStatement::Explain(explain) => return self.check_depth(&explain.statement),
            DFStatement::CreateExternalTable(_) | DFStatement::Reset(_) => {
                ControlFlow::Continue(())
            }
        };
        self.within_depth(flow)
    }

    /// The answer to a depth measurement that stopped (`Break`) past the limit or did not.
    fn within_depth(&self, flow: ControlFlow<()>) -> Result<()> {
        match flow {
            ControlFlow::Continue(()) => Ok(()),
            ControlFlow::Break(()) => Err(Error::Limit(format!(
                "the statement nests expressions more than {} levels deep (max_expression_depth); \
                 write long lists as `x IN (...)`, or put the values in a table and join it",
                self.max_expression_depth
            ))),
        }
    }

    /// [`Limits::check_depth`] for the query inside a Flywheel statement (a feature view's or a
    /// label's), checked before anything prints or plans it.
    pub(super) fn check_flywheel_depth(&self, ddl: &flywheel_sql::ast::FlywheelDdl) -> Result<()> {
        use flywheel_sql::ast::{FlywheelDdl, LabelSource};
        let query = match ddl {
            FlywheelDdl::CreateFeatureView(c) => &c.query,
            FlywheelDdl::CreateLabel(c) => match &c.source {
                LabelSource::Query(q) => q,
                LabelSource::Table(_) => return Ok(()),
            },
            _ => return Ok(()),
        };
        let mut depth = Depth {
            current: 0,
            limit: self.max_expression_depth,
        };
        self.within_depth(query.visit(&mut depth))
    }

    /// `stream`, ending with an error once the statement started at `started` has run for
    /// [`Limits::statement_timeout`].
    pub(super) fn timed_stream(
        &self,
        stream: SendableRecordBatchStream,
        started: tokio::time::Instant,
    ) -> SendableRecordBatchStream {
        match self.statement_timeout {
            None => stream,
            Some(timeout) => Box::pin(TimedStream {
                schema: stream.schema(),
                inner: Some(stream),
                deadline: Box::pin(tokio::time::sleep_until(started + timeout)),
                timeout,
            }),
        }
    }

    /// Runs `command` (DDL, DML) to completion, or cancels it at [`Limits::statement_timeout`].
    pub(super) async fn timed<T>(&self, command: impl Future<Output = Result<T>>) -> Result<T> {
        match self.statement_timeout {
            None => command.await,
            Some(timeout) => tokio::time::timeout(timeout, command)
                .await
                .map_err(|_| timed_out(timeout))?,
        }
    }
}

/// The error of a statement that ran past `timeout`.
fn timed_out(timeout: Duration) -> Error {
    Error::Timeout(format!(
        "the statement was cancelled after running for {} (statement_timeout); nothing it had not \
         committed was kept",
        humantime(timeout)
    ))
}

/// `90s` as `1m 30s`.
fn humantime(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, s) if d.subsec_millis() > 0 && s < 10 => format!("{} ms", d.as_millis()),
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m {s}s"),
        (h, 0, 0) => format!("{h}h"),
        (h, m, _) => format!("{h}h {m}m"),
    }
}

/// Measures the nesting of expressions and queries, stopping past `limit`.
struct Depth {
    current: usize,
    limit: usize,
}

impl Depth {
    fn enter(&mut self) -> ControlFlow<()> {
        self.current += 1;
        if self.current > self.limit {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }

    fn leave(&mut self) -> ControlFlow<()> {
        self.current = self.current.saturating_sub(1);
        ControlFlow::Continue(())
    }
}

impl Visitor for Depth {
    type Break = ();

    fn pre_visit_expr(&mut self, _: &Expr) -> ControlFlow<()> {
        self.enter()
    }

    fn post_visit_expr(&mut self, _: &Expr) -> ControlFlow<()> {
        self.leave()
    }

    fn pre_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
        self.enter()
    }

    fn post_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
        self.leave()
    }
}

/// A stream that ends with [`timed_out`] at its deadline (its inner stream is dropped, which
/// cancels the query's remaining work).
struct TimedStream {
    schema: SchemaRef,
    inner: Option<SendableRecordBatchStream>,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
}

impl Stream for TimedStream {
    type Item = datafusion::error::Result<arrow::array::RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        if let Poll::Ready(item) = inner.poll_next_unpin(cx) {
            if item.is_none() {
                self.inner = None;
            }
            return Poll::Ready(item);
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            self.inner = None;
            let e = timed_out(self.timeout);
            return Poll::Ready(Some(Err(DataFusionError::External(Box::new(e)))));
        }
        Poll::Pending
    }
}

impl RecordBatchStream for TimedStream {
    fn schema(&self) -> SchemaRef {
        std::sync::Arc::clone(&self.schema)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth_of(sql: &str, limit: usize) -> Result<()> {
        let limits = Limits {
            max_expression_depth: limit,
            ..Limits::default()
        };
        let statements = flywheel_sql::parse_sql(sql).expect("parses");
        for s in statements {
            if let flywheel_sql::FlywheelStatement::DataFusion(s) = s {
                limits.check_depth(&s)?;
            }
        }
        Ok(())
    }

    #[test]
    fn deep_expressions_are_refused_naming_the_limit() {
        let sum = format!("SELECT {}", vec!["1"; 300].join(" + "));
        assert!(depth_of(&sum, 400).is_ok());
        let e = depth_of(&sum, 100).expect_err("too deep");
        assert!(e.to_string().contains("max_expression_depth"), "{e}");
        let list = format!(
            "SELECT 1 WHERE 1 IN ({})",
            (0..5000)
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
        assert!(depth_of(&list, 10).is_ok(), "a long list is not deep");
        assert!(depth_of("EXPLAIN SELECT 1 + 1 + 1 + 1", 3).is_err());
        let view = format!(
            "CREATE FEATURE VIEW v ENTITY e EVENT TIME ts AS SELECT {} AS x",
            vec!["1"; 300].join(" + ")
        );
        let Some(flywheel_sql::FlywheelStatement::Flywheel(ddl)) =
            flywheel_sql::parse_sql(&view).expect("parses").pop_front()
        else {
            panic!("a Flywheel statement")
        };
        let limits = Limits {
            max_expression_depth: 100,
            ..Limits::default()
        };
        assert!(limits.check_flywheel_depth(&ddl).is_err());
    }

    #[test]
    fn long_text_is_refused_naming_the_limit() {
        let limits = Limits {
            max_statement_bytes: 10,
            ..Limits::default()
        };
        assert!(limits.check_text("SELECT 1").is_ok());
        let e = limits.check_text("SELECT 1 + 1 + 1").expect_err("too long");
        assert!(e.to_string().contains("max_statement_bytes"), "{e}");
    }

    #[tokio::test]
    async fn a_command_past_the_timeout_is_cancelled() {
        let limits = Limits {
            statement_timeout: Some(Duration::from_millis(20)),
            ..Limits::default()
        };
        let e = limits
            .timed(async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(())
            })
            .await
            .expect_err("times out");
        assert!(e.to_string().contains("statement_timeout"), "{e}");
        assert_eq!(humantime(Duration::from_secs(90)), "1m 30s");
        assert_eq!(humantime(Duration::from_secs(3600)), "1h");
    }
}
