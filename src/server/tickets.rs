//! Ticket and prepared-statement handle formats.
//!
//! Both are self-contained byte strings, so the server keeps no per-client state:
//! - a statement handle is `Q` followed by the UTF-8 SQL text: the query is planned and run when the
//!   ticket is redeemed (`DoGet`);
//! - a result handle is `R` followed by an Arrow IPC stream: the (small) result of a statement that
//!   already ran when its `FlightInfo` was asked for (DDL, DML), so redeeming it never runs it twice.
//!
//! Prepared-statement handles are the SQL text itself.

use arrow::array::RecordBatch;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use bytes::Bytes;

use crate::{Error, Result};

/// What a statement ticket asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum StatementTicket {
    /// Run this SQL query and stream its rows.
    Query(String),
    /// Stream this already computed result.
    Result(RecordBatch),
}

impl StatementTicket {
    pub fn encode(&self) -> Result<Bytes> {
        match self {
            StatementTicket::Query(sql) => {
                let mut out = Vec::with_capacity(sql.len() + 1);
                out.push(b'Q');
                out.extend_from_slice(sql.as_bytes());
                Ok(out.into())
            }
            StatementTicket::Result(batch) => {
                let mut out = vec![b'R'];
                let mut w = StreamWriter::try_new(&mut out, &batch.schema())?;
                w.write(batch)?;
                w.finish()?;
                drop(w);
                Ok(out.into())
            }
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let invalid =
            || Error::Invalid("malformed statement ticket: it was not issued by Flywheel".into());
        match bytes.split_first() {
            Some((b'Q', sql)) => Ok(StatementTicket::Query(
                String::from_utf8(sql.to_vec()).map_err(|_| invalid())?,
            )),
            Some((b'R', ipc)) => {
                let mut reader = StreamReader::try_new(ipc, None).map_err(|_| invalid())?;
                let schema = reader.schema();
                let batch = match reader.next() {
                    Some(b) => b.map_err(|_| invalid())?,
                    None => RecordBatch::new_empty(schema),
                };
                Ok(StatementTicket::Result(batch))
            }
            _ => Err(invalid()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn roundtrip() {
        let q = StatementTicket::Query("SELECT 1".into());
        assert_eq!(
            StatementTicket::decode(&q.encode().expect("enc")).expect("dec"),
            q
        );
        let batch = RecordBatch::try_from_iter([(
            "count",
            Arc::new(arrow::array::UInt64Array::from(vec![3])) as _,
        )])
        .expect("batch");
        let r = StatementTicket::Result(batch);
        assert_eq!(
            StatementTicket::decode(&r.encode().expect("enc")).expect("dec"),
            r
        );
        assert!(StatementTicket::decode(b"garbage").is_err());
    }
}
