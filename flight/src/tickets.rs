//! Every ticket and prepared-statement handle the server hands out, one typed definition each.
//!
//! All are self-contained byte strings, so the server keeps no per-client state and any server on
//! the same warehouse can redeem them:
//! - a [`ShardTicket`] (plain Flight, from a path descriptor's `FlightInfo`) is a protobuf `Any`
//!   with type URL [`SHARD_TICKET_TYPE`] whose value is JSON: `{"table": "fraud_train",
//!   "version": 3, "shard": 0, "shards": 4, "partitions": 8}` for a table version, or
//!   `{"sql": "SELECT ...", "shard": 0, "shards": 1, "partitions": 2}` for a query (the form
//!   every ticket had before 0.2, still redeemed);
//! - an online lookup ticket is a protobuf `Any` with type URL
//!   [`LOOKUP_TICKET_TYPE`](flywheel_engine::online::LOOKUP_TICKET_TYPE) whose value is a JSON
//!   [`LookupRequest`](flywheel_engine::online::LookupRequest);
//! - a [`Statement`] (a statement handle, and a prepared-statement handle) is `Q`, the SQL text's
//!   length as a little-endian `u32`, the UTF-8 SQL text, then optionally the bound parameter rows as
//!   an Arrow IPC stream: the query is planned and run when the ticket is redeemed (`DoGet`);
//! - a result handle is `R` followed by an Arrow IPC stream: the (small) result of a statement that
//!   already ran when its `FlightInfo` was asked for (DDL, DML), so redeeming it never runs it twice.

use arrow::array::RecordBatch;
use arrow::ipc::writer::StreamWriter;
use arrow_flight::Ticket;
use arrow_flight::sql::Any;
use bytes::Bytes;
use prost::Message as _;
use serde::{Deserialize, Serialize};

use flywheel_engine::{Error, Result};
use flywheel_engine::{ShardSource, ShardSpec};

/// The type URL of a shard ticket.
pub const SHARD_TICKET_TYPE: &str = "type.googleapis.com/flywheel.ShardTicket";

/// One shard of a sharded read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardTicket {
    pub source: ShardSource,
    pub spec: ShardSpec,
}

/// A shard ticket's JSON: a table version, or a query.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShardTicketJson {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    table: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sql: Option<String>,
    shard: usize,
    shards: usize,
    partitions: usize,
}

impl ShardTicket {
    /// The ticket as a protobuf `Any` of type [`SHARD_TICKET_TYPE`].
    pub fn to_ticket(&self) -> Result<Ticket> {
        let (table, version, sql) = match &self.source {
            ShardSource::Table { name, version } => (Some(name.clone()), Some(*version), None),
            ShardSource::Query(sql) => (None, None, Some(sql.clone())),
        };
        let json = ShardTicketJson {
            table,
            version,
            sql,
            shard: self.spec.shard,
            shards: self.spec.shards,
            partitions: self.spec.partitions,
        };
        let value = serde_json::to_vec(&json)
            .map_err(|e| Error::InvalidInput(format!("cannot encode a shard ticket: {e}")))?;
        let any = Any {
            type_url: SHARD_TICKET_TYPE.to_string(),
            value: value.into(),
        };
        Ok(Ticket::new(any.encode_to_vec()))
    }

    /// Decodes the value of an `Any` whose type URL is [`SHARD_TICKET_TYPE`]. The numbers are
    /// checked when the shard is read ([`flywheel_engine::Engine::read_shard`]).
    pub fn from_any_value(value: &[u8]) -> Result<Self> {
        let malformed = |why: String| {
            Error::InvalidInput(format!(
                "malformed shard ticket ({why}): it was not issued by Flywheel"
            ))
        };
        let json: ShardTicketJson =
            serde_json::from_slice(value).map_err(|e| malformed(e.to_string()))?;
        let source = match (json.table, json.version, json.sql) {
            (Some(name), Some(version), None) => ShardSource::Table { name, version },
            (None, None, Some(sql)) => ShardSource::Query(sql),
            _ => {
                return Err(malformed(
                    "it names neither a table version nor a query".into(),
                ));
            }
        };
        Ok(Self {
            source,
            spec: ShardSpec {
                shard: json.shard,
                shards: json.shards,
                partitions: json.partitions,
            },
        })
    }
}

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
            .map_err(|_| Error::InvalidInput("statement text longer than 4 GiB".into()))?;
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
    Error::InvalidInput(
        "malformed statement ticket or handle: it was not issued by Flywheel".into(),
    )
}

fn write_ipc(out: &mut Vec<u8>, batch: &RecordBatch) -> Result<()> {
    let mut w = StreamWriter::try_new(out, &batch.schema())?;
    w.write(batch)?;
    w.finish()?;
    Ok(())
}

fn read_ipc(bytes: &[u8]) -> Result<RecordBatch> {
    let (schema, batches) = flywheel_engine::untrusted::read_ipc_stream(bytes, |_| malformed())?;
    match batches.into_iter().next() {
        Some(b) => Ok(b),
        None => Ok(RecordBatch::new_empty(schema)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn shard_tickets_roundtrip() {
        for source in [
            ShardSource::Query("SELECT 1".into()),
            ShardSource::Table {
                name: "odd \"name\"".into(),
                version: 7,
            },
        ] {
            let t = ShardTicket {
                source,
                spec: ShardSpec {
                    shard: 1,
                    shards: 2,
                    partitions: 4,
                },
            };
            let ticket = t.to_ticket().expect("encodes");
            let any = Any::decode(ticket.ticket).expect("an Any");
            assert_eq!(any.type_url, SHARD_TICKET_TYPE);
            assert_eq!(ShardTicket::from_any_value(&any.value).expect("decodes"), t);
        }
        // The documented query form, as clients write it.
        let legacy = br#"{"sql": "SELECT * FROM \"t\" VERSION AS OF 3", "shard": 0, "shards": 4, "partitions": 8}"#;
        let t = ShardTicket::from_any_value(legacy).expect("decodes");
        assert_eq!(
            t.source,
            ShardSource::Query("SELECT * FROM \"t\" VERSION AS OF 3".into())
        );
        for bad in [
            &br#"{"table": "t", "shard": 0, "shards": 1, "partitions": 1}"#[..],
            br#"{"table": "t", "version": 1, "sql": "SELECT 1", "shard": 0, "shards": 1, "partitions": 1}"#,
            br#"{"sql": "SELECT 1", "shard": 0, "shards": 1, "partitions": 1, "colour": 1}"#,
        ] {
            assert!(ShardTicket::from_any_value(bad).is_err());
        }
    }

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

    /// Fuzzing the decoders of what clients send back (tickets and handles): any bytes are
    /// answered with a ticket or an error, never a panic.
    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        fn valid_tickets() -> Vec<Vec<u8>> {
            let batch = RecordBatch::try_from_iter([(
                "v",
                Arc::new(arrow::array::Int64Array::from(vec![1, 2, 3])) as _,
            )])
            .expect("batch");
            [
                StatementTicket::Query(Statement::new("SELECT 1")),
                StatementTicket::Query(Statement {
                    sql: "SELECT $1".into(),
                    params: Some(batch.clone()),
                }),
                StatementTicket::Result(batch),
            ]
            .iter()
            .map(|t| t.encode().expect("encodes").to_vec())
            .collect()
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1024))]

            #[test]
            fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
                let _ = StatementTicket::decode(&bytes);
                let _ = crate::ShardTicket::from_any_value(&bytes);
            }

            #[test]
            fn corrupted_tickets_never_panic(
                which in 0usize..3,
                flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
                cut in any::<prop::sample::Index>(),
            ) {
                let mut bytes = valid_tickets().swap_remove(which);
                for (at, value) in flips {
                    let i = at.index(bytes.len());
                    bytes[i] = value;
                }
                let _ = StatementTicket::decode(&bytes);
                let keep = cut.index(bytes.len() + 1);
                let _ = StatementTicket::decode(&bytes[..keep]);
            }

            #[test]
            fn shard_ticket_json_never_panics(
                shard in any::<i64>(), shards in any::<i64>(), partitions in any::<i64>(),
                sql in "\\PC{0,40}",
            ) {
                let json = serde_json::json!({
                    "sql": sql, "shard": shard, "shards": shards, "partitions": partitions
                });
                let _ = crate::ShardTicket::from_any_value(json.to_string().as_bytes());
            }

            #[test]
            fn descriptor_paths_never_panic(path in prop::collection::vec("\\PC{0,20}", 0..6)) {
                let _ = crate::shards::DatasetRequest::from_path(&path);
            }
        }
    }
}
