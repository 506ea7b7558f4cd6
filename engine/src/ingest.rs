//! Bulk ingest: a stream of record batches into a warehouse table, as one Delta commit.
//!
//! This is the log-observation path: product services send events, served features and predictions
//! straight into Delta (Flight SQL `CommandStatementIngest`, ADBC's `cursor.adbc_ingest`). The
//! batches are never collected: they stream through a one-shot DataFusion source into the same
//! writers `CREATE TABLE AS`, `INSERT` ([`append`]) and `CREATE OR REPLACE TABLE` use, so the
//! ingest inherits their guarantees (one commit; a failed create leaves nothing, a failed append
//! commits nothing).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arrow::datatypes::SchemaRef;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::common::{Constraints, TableReference};
use datafusion::datasource::provider_as_source;
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{CreateMemoryTable, LogicalPlan, LogicalPlanBuilder};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use futures::{StreamExt, stream};

use super::{Engine, append, ddl};
use crate::{Error, Result};

/// What to do when the target table does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfMissing {
    Create,
    Fail,
}

/// What to do when the target table exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfExists {
    Fail,
    Append,
    /// Replace the table's rows and schema in one overwrite commit (older versions stay readable).
    Replace,
}

/// Where and how to ingest.
#[derive(Debug, Clone)]
pub struct IngestTarget {
    pub table: String,
    pub if_missing: IfMissing,
    pub if_exists: IfExists,
}

impl Engine {
    /// Writes `batches` (of `schema`) into `target` as one commit; returns the number of rows.
    pub async fn ingest(
        &self,
        target: &IngestTarget,
        schema: SchemaRef,
        batches: SendableRecordBatchStream,
    ) -> Result<u64> {
        self.registry().refresh().await?;
        let rows = Arc::new(AtomicU64::new(0));
        let input = one_shot_plan(schema, batches, Arc::clone(&rows))?;
        let name = &target.table;
        let existing = self.registry().table(name);
        if existing.is_some() && target.if_exists != IfExists::Fail {
            // Appending to or replacing a table Flywheel's objects own.
            ddl::refuse_object_table(self, name, ddl::TableChange::Write)?;
        }
        match (existing, target.if_missing, target.if_exists) {
            (None, IfMissing::Fail, _) => {
                return Err(flywheel_catalog::Error::TableNotFound { name: name.clone() }.into());
            }
            (Some(_), _, IfExists::Fail) => {
                return Err(flywheel_catalog::Error::TableExists { name: name.clone() }.into());
            }
            (Some(_), _, IfExists::Replace) => {
                ddl::create_table(self, create_statement(name, input, true)).await?;
            }
            (None, IfMissing::Create, _) => {
                ddl::create_table(self, create_statement(name, input, false)).await?;
            }
            (Some(entry), _, IfExists::Append) => {
                append::append(self, &entry, input).await?;
            }
        }
        Ok(rows.load(Ordering::Relaxed))
    }
}

fn create_statement(name: &str, input: LogicalPlan, or_replace: bool) -> CreateMemoryTable {
    CreateMemoryTable {
        name: TableReference::bare(name),
        constraints: Constraints::default(),
        input: Arc::new(input),
        if_not_exists: false,
        or_replace,
        column_defaults: Vec::new(),
        temporary: false,
    }
}

/// A logical plan that reads `batches` once, counting rows into `rows`.
pub(super) fn one_shot_plan(
    schema: SchemaRef,
    batches: SendableRecordBatchStream,
    rows: Arc<AtomicU64>,
) -> Result<LogicalPlan> {
    let source = OneShot {
        schema: Arc::clone(&schema),
        stream: Mutex::new(Some(batches)),
        rows,
    };
    let table =
        StreamingTable::try_new(schema, vec![Arc::new(source)]).map_err(Error::from_datafusion)?;
    LogicalPlanBuilder::scan("ingest", provider_as_source(Arc::new(table)), None)
        .and_then(|b| b.build())
        .map_err(Error::from_datafusion)
}

/// A partition that hands out its stream once; a second execution is an error, never a silent
/// empty read.
struct OneShot {
    schema: SchemaRef,
    stream: Mutex<Option<SendableRecordBatchStream>>,
    rows: Arc<AtomicU64>,
}

impl std::fmt::Debug for OneShot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OneShot").finish_non_exhaustive()
    }
}

impl PartitionStream for OneShot {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let taken = self.stream.lock().ok().and_then(|mut s| s.take());
        match taken {
            Some(inner) => {
                let rows = Arc::clone(&self.rows);
                let counted = inner.map(move |b| {
                    if let Ok(b) = &b {
                        rows.fetch_add(b.num_rows() as u64, Ordering::Relaxed);
                    }
                    b
                });
                Box::pin(RecordBatchStreamAdapter::new(
                    Arc::clone(&self.schema),
                    counted,
                ))
            }
            None => Box::pin(RecordBatchStreamAdapter::new(
                Arc::clone(&self.schema),
                stream::once(async {
                    Err(DataFusionError::Execution(
                        "the ingested data was already read".into(),
                    ))
                }),
            )),
        }
    }
}
