//! What a statement's [`Output`] becomes on the wire: rows (encoded from Arrow by `arrow-pg`, in
//! text or binary as the client asked, batch by batch as the engine streams them) or a command's
//! completion tag.
//!
//! pgwire honours a client's cancel request only while a statement is planned (`do_query`); rows
//! stream after that, so the row stream listens for the connection's cancel request itself
//! ([`Cancel`]) and ends with `57014 query_canceled`, dropping the query's execution.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch};
use flywheel_engine::{Error, Output};
use futures::{StreamExt as _, stream};
use pgwire::api::ConnectionHandle;
use pgwire::api::portal::Format;
use pgwire::api::results::{FieldInfo, QueryResponse, Response, Tag};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::data::DataRow;
use pgwire::types::format::FormatOptions;

use crate::sqlstate::to_pg;
use crate::statements::Completion;

/// The columns of `schema` as the client is told them.
pub fn fields(
    schema: &Schema,
    format: &Format,
    options: Option<Arc<FormatOptions>>,
) -> PgWireResult<Vec<FieldInfo>> {
    arrow_schema_to_pg_fields(schema, format, options)
}

/// The connection's cancel handle, if the connection registered one (pgwire's startup does).
pub type Cancel = Option<Arc<ConnectionHandle>>;

/// The response to a statement that ran: rows, or `completion`'s tag. `rows_described` says
/// whether the client was told (or will be told) the statement's columns: a command that returns a
/// report (`REFRESH`) sends it as rows only then.
pub async fn respond(
    output: Output,
    completion: &Completion,
    format: &Format,
    options: Arc<FormatOptions>,
    rows_described: bool,
    cancel: Cancel,
) -> PgWireResult<Response> {
    let count = || output.row_count().unwrap_or(0) as usize;
    match (completion, &output) {
        (Completion::Insert, Output::Batch(_)) => Ok(Response::Execution(
            Tag::new("INSERT").with_oid(0).with_rows(count()),
        )),
        (Completion::Copy, Output::Batch(_)) => {
            Ok(Response::Execution(Tag::new("COPY").with_rows(count())))
        }
        (Completion::Command(tag), Output::Batch(batch))
            if batch.num_columns() == 0 || !rows_described =>
        {
            Ok(Response::Execution(Tag::new(tag)))
        }
        _ => rows(output, format, options, cancel)
            .await
            .map(Response::Query),
    }
}

/// The rows of `output`, streamed until they end or the client cancels.
pub async fn rows(
    output: Output,
    format: &Format,
    options: Arc<FormatOptions>,
    cancel: Cancel,
) -> PgWireResult<QueryResponse> {
    let schema = output.schema();
    let fields = Arc::new(fields(&schema, format, Some(options))?);
    let batches = output.into_stream().await.map_err(to_pg)?;
    let encode_with = Arc::clone(&fields);
    let rows = batches
        .map(move |batch| {
            let rows: Box<dyn Iterator<Item = PgWireResult<DataRow>> + Send + Sync> = match batch {
                Ok(batch) => encode_recordbatch(Arc::clone(&encode_with), batch),
                Err(e) => Box::new(std::iter::once(Err(to_pg(Error::from_datafusion(e))))),
            };
            stream::iter(rows)
        })
        .flatten();
    Ok(QueryResponse::new(fields, until_cancelled(rows, cancel)))
}

/// `rows`, ended by an error when the connection's cancel request arrives. The listener is
/// installed at the first poll, after pgwire's own (around planning) is done with.
fn until_cancelled<S>(rows: S, cancel: Cancel) -> impl futures::Stream<Item = PgWireResult<DataRow>>
where
    S: futures::Stream<Item = PgWireResult<DataRow>> + Send + Unpin,
{
    let cancelled = Box::pin(async move {
        if let Some(handle) = cancel
            && handle.start_query().await.await.is_ok()
        {
            return;
        }
        // No handle, or a later statement replaced the listener: never cancelled here.
        std::future::pending::<()>().await
    });
    stream::unfold(Some((rows, cancelled)), |state| async move {
        let (mut rows, mut cancelled) = state?;
        tokio::select! {
            biased;
            () = &mut cancelled => Some((
                Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                    "ERROR".to_owned(),
                    "57014".to_owned(),
                    "canceling statement due to user request".to_owned(),
                )))),
                None,
            )),
            next = rows.next() => next.map(|row| (row, Some((rows, cancelled)))),
        }
    })
}

/// One text column `name` holding `value`: the answer to `SHOW name`.
pub async fn one_value(name: &str, value: &str, format: &Format) -> PgWireResult<QueryResponse> {
    let schema: SchemaRef = Arc::new(Schema::new(vec![Field::new(name, DataType::Utf8, true)]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![Arc::new(arrow::array::StringArray::from(vec![value]))],
    )
    .map_err(|e| to_pg(Error::Arrow(e)))?;
    let output = Output::batches(schema, vec![batch]).map_err(to_pg)?;
    rows(output, format, Arc::new(FormatOptions::default()), None).await
}
