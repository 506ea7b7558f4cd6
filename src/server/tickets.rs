//! Ticket and prepared-statement handle formats.
//!
//! Both are self-contained byte strings, so the server keeps no per-client state and any server on
//! the same warehouse can redeem them:
//! - a [`Statement`] (a statement handle, and a prepared-statement handle) is `Q`, the SQL text's
//!   length as a little-endian `u32`, the UTF-8 SQL text, then optionally the bound parameter rows as
//!   an Arrow IPC stream: the query is planned and run when the ticket is redeemed (`DoGet`);
//! - a result handle is `R` followed by an Arrow IPC stream: the (small) result of a statement that
//!   already ran when its `FlightInfo` was asked for (DDL, DML), so redeeming it never runs it twice.

use arrow::array::RecordBatch;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use bytes::Bytes;

use crate::{Error, Result};

/// A statement to run, with the parameter rows bound to it (if any).
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    pub sql: String,
    pub params: Option<RecordBatch>,
}

impl Statement {
    pub fn new(sql: impl Into<String>) -> Self {
        Self {
            sql: sql.into(),
            params: None,
        }
    }

    pub fn encode(&self) -> Result<Bytes> {
        let len = u32::try_from(self.sql.len())
            .map_err(|_| Error::Invalid("statement text longer than 4 GiB".into()))?;
        let mut out = Vec::with_capacity(self.sql.len() + 5);
        out.push(b'Q');
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(self.sql.as_bytes());
        if let Some(params) = &self.params {
            write_ipc(&mut out, params)?;
        }
        Ok(out.into())
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let Some((b'Q', rest)) = bytes.split_first() else {
            return Err(malformed());
        };
        let (len, rest) = rest.split_first_chunk::<4>().ok_or_else(malformed)?;
        let len = u32::from_le_bytes(*len) as usize;
        if rest.len() < len {
            return Err(malformed());
        }
        let (sql, params) = rest.split_at(len);
        let sql = String::from_utf8(sql.to_vec()).map_err(|_| malformed())?;
        let params = if params.is_empty() {
            None
        } else {
            Some(read_ipc(params)?)
        };
        Ok(Self { sql, params })
    }
}

/// What a statement ticket asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum StatementTicket {
    /// Run this statement and stream its rows.
    Query(Statement),
    /// Stream this already computed result.
    Result(RecordBatch),
}

impl StatementTicket {
    pub fn encode(&self) -> Result<Bytes> {
        match self {
            StatementTicket::Query(statement) => statement.encode(),
            StatementTicket::Result(batch) => {
                let mut out = vec![b'R'];
                write_ipc(&mut out, batch)?;
                Ok(out.into())
            }
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        match bytes.split_first() {
            Some((b'Q', _)) => Statement::decode(bytes).map(StatementTicket::Query),
            Some((b'R', ipc)) => read_ipc(ipc).map(StatementTicket::Result),
            _ => Err(malformed()),
        }
    }
}

fn malformed() -> Error {
    Error::Invalid("malformed statement ticket or handle: it was not issued by Flywheel".into())
}

fn write_ipc(out: &mut Vec<u8>, batch: &RecordBatch) -> Result<()> {
    let mut w = StreamWriter::try_new(out, &batch.schema())?;
    w.write(batch)?;
    w.finish()?;
    Ok(())
}

fn read_ipc(bytes: &[u8]) -> Result<RecordBatch> {
    let mut reader = StreamReader::try_new(bytes, None).map_err(|_| malformed())?;
    let schema = reader.schema();
    match reader.next() {
        Some(b) => b.map_err(|_| malformed()),
        None => Ok(RecordBatch::new_empty(schema)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn roundtrip() {
        let q = StatementTicket::Query(Statement::new("SELECT 1"));
        assert_eq!(
            StatementTicket::decode(&q.encode().expect("enc")).expect("dec"),
            q
        );
        let batch = RecordBatch::try_from_iter([(
            "count",
            Arc::new(arrow::array::UInt64Array::from(vec![3])) as _,
        )])
        .expect("batch");
        let r = StatementTicket::Result(batch.clone());
        assert_eq!(
            StatementTicket::decode(&r.encode().expect("enc")).expect("dec"),
            r
        );
        let bound = StatementTicket::Query(Statement {
            sql: "SELECT $1".into(),
            params: Some(batch.clone()),
        });
        assert_eq!(
            StatementTicket::decode(&bound.encode().expect("enc")).expect("dec"),
            bound
        );
        assert!(StatementTicket::decode(b"garbage").is_err());
        assert!(StatementTicket::decode(b"Q\xff\xff\x00\x00short").is_err());
    }
}
