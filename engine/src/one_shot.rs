//! A logical plan over a stream that is already running, read once: the rows a client uploads (bulk
//! ingest, appends) and the ordered rows of a write ([`crate::table_writes`]) reach DataFusion and
//! delta-rs as the one partition of a streaming table. A second execution is an error, never a
//! silent empty read.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arrow::datatypes::SchemaRef;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::datasource::provider_as_source;
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{LogicalPlan, LogicalPlanBuilder};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use futures::{StreamExt, stream};

use crate::{Error, Result};

/// A plan named `name` that reads `batches` once, counting rows into `rows` when given.
pub(crate) fn one_shot_plan(
    name: &str,
    schema: SchemaRef,
    batches: SendableRecordBatchStream,
    rows: Option<Arc<AtomicU64>>,
) -> Result<LogicalPlan> {
    let source = OneShot {
        schema: Arc::clone(&schema),
        stream: Mutex::new(Some(batches)),
        rows,
    };
    let table =
        StreamingTable::try_new(schema, vec![Arc::new(source)]).map_err(Error::from_datafusion)?;
    LogicalPlanBuilder::scan(name, provider_as_source(Arc::new(table)), None)
        .and_then(|b| b.build())
        .map_err(Error::from_datafusion)
}

/// A partition that hands out its stream once.
struct OneShot {
    schema: SchemaRef,
    stream: Mutex<Option<SendableRecordBatchStream>>,
    rows: Option<Arc<AtomicU64>>,
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
        match (taken, &self.rows) {
            (Some(inner), None) => inner,
            (Some(inner), Some(rows)) => {
                let rows = Arc::clone(rows);
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
            (None, _) => Box::pin(RecordBatchStreamAdapter::new(
                Arc::clone(&self.schema),
                stream::once(async {
                    Err(DataFusionError::Execution(
                        "a stream that is read once was read twice".into(),
                    ))
                }),
            )),
        }
    }
}
