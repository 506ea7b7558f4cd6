//! Bulk ingest: a stream of record batches into a warehouse table, as one Delta commit.
//!
//! This is the log-observation path: product services send events, served features and predictions
//! straight into Delta (Flight SQL `CommandStatementIngest`, ADBC's `cursor.adbc_ingest`). The
//! batches are never collected: they stream through a one-shot DataFusion source into the same
//! writers `CREATE TABLE AS`, `INSERT` ([`append`]) and `CREATE OR REPLACE TABLE` use, so the
//! ingest inherits their guarantees (one commit; a failed create leaves nothing, a failed append
//! commits nothing).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::datatypes::SchemaRef;
use datafusion::common::{Constraints, TableReference};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::{CreateMemoryTable, LogicalPlan};

use super::one_shot::one_shot_plan;
use super::{Engine, append, ddl};
use crate::Result;

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
        let input = one_shot_plan("ingest", schema, batches, Some(Arc::clone(&rows)))?;
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
