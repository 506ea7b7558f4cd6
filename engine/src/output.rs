//! [`Output`]: what a statement returns.

use std::sync::Arc;

use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::dataframe::DataFrame;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::{TryStreamExt as _, stream};

use super::limits::Limits;

use crate::{Error, Result};

/// The result of one statement.
#[derive(Debug)]
pub enum Output {
    /// A query, not yet executed: stream it with [`Output::into_stream`].
    Query(Box<Query>),
    /// The (small) result of a statement that already ran: row counts of DML, nothing for DDL.
    Batch(RecordBatch),
}

/// A planned query and the limits it runs under.
#[derive(Debug)]
pub struct Query {
    df: DataFrame,
    limits: Limits,
    started: tokio::time::Instant,
}

impl Output {
    /// A query that runs under `limits` (its time counted from now) when streamed.
    pub(super) fn query(df: DataFrame, limits: Limits) -> Self {
        Output::Query(Box::new(Query {
            df,
            limits,
            started: tokio::time::Instant::now(),
        }))
    }

    /// A finished result from collected batches.
    pub fn batches(schema: SchemaRef, batches: Vec<RecordBatch>) -> Result<Self> {
        Ok(Output::Batch(arrow::compute::concat_batches(
            &schema, &batches,
        )?))
    }

    /// An empty result (DDL).
    pub fn empty() -> Self {
        Output::Batch(RecordBatch::new_empty(Arc::new(
            arrow::datatypes::Schema::empty(),
        )))
    }

    /// The schema of the rows.
    pub fn schema(&self) -> SchemaRef {
        match self {
            Output::Query(q) => Arc::clone(q.df.schema().inner()),
            Output::Batch(b) => b.schema(),
        }
    }

    /// Whether this is an unexecuted query.
    pub fn is_query(&self) -> bool {
        matches!(self, Output::Query(_))
    }

    /// The rows as a stream; a query starts executing here.
    pub async fn into_stream(self) -> Result<SendableRecordBatchStream> {
        match self {
            Output::Query(q) => {
                let stream =
                    q.df.execute_stream()
                        .await
                        .map_err(Error::from_datafusion)?;
                Ok(q.limits.timed_stream(stream, q.started))
            }
            Output::Batch(b) => {
                let schema = b.schema();
                Ok(Box::pin(RecordBatchStreamAdapter::new(
                    schema,
                    stream::iter([Ok(b)]),
                )))
            }
        }
    }

    /// Every row, collected (for small results, the shell and tests).
    pub async fn collect(self) -> Result<Vec<RecordBatch>> {
        match self {
            Output::Query(_) => {
                let stream = self.into_stream().await?;
                stream.try_collect().await.map_err(Error::from_datafusion)
            }
            Output::Batch(b) => Ok(vec![b]),
        }
    }

    /// The affected-row count of DML (`count` column), if this is one.
    pub fn row_count(&self) -> Option<u64> {
        let Output::Batch(b) = self else { return None };
        let col = b.column_by_name("count")?;
        let counts = col.as_any().downcast_ref::<arrow::array::UInt64Array>()?;
        Some(counts.iter().flatten().sum())
    }
}

/// A two-column (`a`, `b`) string result.
pub(super) fn two_columns(a: &str, b: &str, rows: Vec<(String, String)>) -> Result<Output> {
    let schema = Arc::new(Schema::new(vec![
        Field::new(a, DataType::Utf8, false),
        Field::new(b, DataType::Utf8, false),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(
                rows.iter()
                    .map(|r| Some(r.0.clone()))
                    .collect::<StringArray>(),
            ),
            Arc::new(
                rows.iter()
                    .map(|r| Some(r.1.clone()))
                    .collect::<StringArray>(),
            ),
        ],
    )?;
    Ok(Output::Batch(batch))
}
