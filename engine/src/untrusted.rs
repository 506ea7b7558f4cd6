//! Decoding Arrow IPC bytes that clients sent.
//!
//! Two faults of arrow-rs 59's IPC readers, found by the ticket fuzz tests, make client bytes
//! dangerous: the blocking `StreamReader` allocates a message body of the length its header claims
//! before reading it (a forged length of 4 EiB aborts the whole process), and decoding panics on
//! some corrupt batches (a validity buffer shorter than its array, in `BooleanBuffer::new`).
//! Parameters bound to prepared statements and lookup keys sent as Arrow are decoded here with the
//! push-based `StreamDecoder`, which only ever holds the bytes it was given, under
//! [`std::panic::catch_unwind`]; front doors guard the streams they decode the same way (the
//! Flight front door's bulk ingest). A corrupt input is an error for its request, never a panic
//! of the task serving it.

use std::panic::{AssertUnwindSafe, catch_unwind};

use arrow::array::RecordBatch;
use arrow::buffer::Buffer;
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::ipc::reader::StreamDecoder;

use crate::{Error, Result};

/// Every record batch of the Arrow IPC stream `bytes`, with its schema; a corrupt stream is
/// `malformed()`.
pub fn read_ipc_stream(
    bytes: &[u8],
    malformed: impl Fn(String) -> Error,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let decoded = catch_unwind(AssertUnwindSafe(|| {
        let mut decoder = StreamDecoder::new();
        let mut buffer = Buffer::from(bytes.to_vec());
        let mut batches = Vec::new();
        while !buffer.is_empty() {
            if let Some(batch) = decoder.decode(&mut buffer)? {
                batches.push(batch);
            }
        }
        decoder.finish()?;
        let schema = decoder
            .schema()
            .ok_or_else(|| ArrowError::IpcError("the stream has no schema".into()))?;
        Ok::<_, ArrowError>((schema, batches))
    }));
    match decoded {
        Ok(Ok(decoded)) => Ok(decoded),
        Ok(Err(e)) => Err(malformed(e.to_string())),
        Err(_) => Err(malformed("the Arrow IPC data is corrupt".into())),
    }
}
