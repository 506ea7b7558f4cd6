//! Bulk-ingest streams a client uploaded, decoded under [`std::panic::catch_unwind`].
//!
//! arrow-rs 59's IPC decoding panics on some corrupt batches (a validity buffer shorter than its
//! array); arrow-flight decodes `DoPut` messages (already bounded by the gRPC message size), and
//! [`GuardedBatches`] polls that decoder under `catch_unwind`, so a corrupt upload ends its own
//! stream with `INVALID_ARGUMENT` instead of panicking the task (see
//! `flywheel_engine::untrusted` for bytes decoded by the engine).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::sql::server::PeekableFlightDataStream;
use futures::{Stream, StreamExt as _, TryStreamExt as _};

/// The record batches of a Flight data stream a client uploaded (`DoPut`): a panic while
/// decoding one ends the stream with an `INVALID_ARGUMENT` error as its last item.
pub struct GuardedBatches {
    inner: FlightRecordBatchStream,
    failed: bool,
}

impl GuardedBatches {
    pub fn new(inner: FlightRecordBatchStream) -> Self {
        Self {
            inner,
            failed: false,
        }
    }

    /// The stream's schema, once its first message was read.
    pub fn schema(&self) -> Option<&SchemaRef> {
        self.inner.schema()
    }
}

impl Stream for GuardedBatches {
    type Item = std::result::Result<RecordBatch, FlightError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.failed {
            return Poll::Ready(None);
        }
        let inner = &mut self.inner;
        match catch_unwind(AssertUnwindSafe(|| inner.poll_next_unpin(cx))) {
            Ok(poll) => poll,
            Err(_) => {
                self.failed = true;
                Poll::Ready(Some(Err(FlightError::Tonic(Box::new(crate::to_status(
                    flywheel_engine::Error::InvalidInput(
                        "the uploaded Arrow data is corrupt".into(),
                    ),
                ))))))
            }
        }
    }
}

/// The record batches of a `DoPut` stream. Messages without an IPC header (a first message that
/// only carries the descriptor, as some clients send) are skipped.
/// Decoded from the client's bytes, so a corrupt message ends the stream with an error instead of
/// panicking the task.
pub(crate) fn put_batches(data: PeekableFlightDataStream) -> GuardedBatches {
    let data = data
        .try_filter(|d| futures::future::ready(!d.data_header.is_empty()))
        .map_err(FlightError::from);
    GuardedBatches::new(FlightRecordBatchStream::new_from_flight_data(data))
}
