//! Sharded reads over plain Arrow Flight: training sets, tables and queries split into endpoints.
//!
//! A training worker asks for a dataset with a path descriptor and gets one endpoint per shard;
//! each `DoGet` streams that shard only, and the shards together hold every row exactly once (see
//! `engine::shards`).
//!
//! Descriptor paths (`FlightDescriptor.for_path(...)`):
//! - `training_set`, NAME, [`version=V`], [`shards=N`]: a training set, pinned at version `V`
//!   (default: its latest version when asked); `N` defaults to its number of data files;
//! - `table`, NAME, [`version=V`], [`shards=N`]: the same for any table (feature views included);
//! - `sql`, QUERY, [`shards=N`]: any query (`N` defaults to 1).
//!
//! Tickets are a protobuf `Any` with type URL [`SHARD_TICKET_TYPE`] whose value is JSON:
//! `{"sql": "SELECT * FROM \"fraud_train\" VERSION AS OF 3", "shard": 0, "shards": 4,
//! "partitions": 8}` (`partitions`: what every shard's plan is split into; shard `k` runs the
//! partitions `p` with `p % shards == k`). They are
//! self-contained, so any process may redeem any ticket, and a table read names its version, so
//! shards of one `FlightInfo` always come from the same snapshot.

use arrow::array::{Array, Int64Array};
use arrow_flight::sql::Any;
use arrow_flight::{FlightDescriptor, FlightEndpoint, FlightInfo, Ticket};
use prost::Message;
use serde::{Deserialize, Serialize};

use crate::engine::{MAX_SHARDS, PinnedTable};
use crate::{Engine, Error, Result};

/// The type URL of a shard ticket.
pub const SHARD_TICKET_TYPE: &str = "type.googleapis.com/flywheel.ShardTicket";

/// What a path descriptor asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatasetRequest {
    TrainingSet {
        name: String,
        version: Option<u64>,
        shards: Option<usize>,
    },
    Table {
        name: String,
        version: Option<u64>,
        shards: Option<usize>,
    },
    Sql {
        query: String,
        shards: Option<usize>,
    },
}

impl DatasetRequest {
    /// Parses a descriptor's path.
    pub fn from_path(path: &[String]) -> Result<Self> {
        let usage = || {
            Error::Invalid(format!(
                "unknown descriptor path {path:?}: use [\"training_set\", NAME, \"version=V\"?, \
                 \"shards=N\"?], [\"table\", NAME, ...] or [\"sql\", QUERY, \"shards=N\"?]"
            ))
        };
        let [kind, subject, options @ ..] = path else {
            return Err(usage());
        };
        let mut version = None;
        let mut shards = None;
        for option in options {
            let name = option.split_once('=').map(|(name, _)| name);
            if options
                .iter()
                .filter(|o| o.split_once('=').map(|(n, _)| n) == name)
                .count()
                > 1
            {
                return Err(Error::Invalid(format!(
                    "descriptor option `{}` is given more than once: give it once",
                    name.unwrap_or(option)
                )));
            }
            match option.split_once('=') {
                Some(("version", v)) => version = Some(parse_number(option, v)?),
                Some(("shards", n)) => {
                    let n = parse_number(option, n)?;
                    if n == 0 || n > MAX_SHARDS as u64 {
                        return Err(Error::Invalid(format!(
                            "`{option}`: ask for 1 to {MAX_SHARDS} shards"
                        )));
                    }
                    shards = Some(n as usize);
                }
                _ => {
                    return Err(Error::Invalid(format!(
                        "unknown descriptor option `{option}`: use `version=V` or `shards=N`"
                    )));
                }
            }
        }
        match kind.as_str() {
            "training_set" => Ok(Self::TrainingSet {
                name: subject.clone(),
                version,
                shards,
            }),
            "table" => Ok(Self::Table {
                name: subject.clone(),
                version,
                shards,
            }),
            "sql" if version.is_none() => Ok(Self::Sql {
                query: subject.clone(),
                shards,
            }),
            "sql" => Err(Error::Invalid(
                "`version=` does not apply to a query: write `VERSION AS OF` in its SQL".into(),
            )),
            _ => Err(usage()),
        }
    }
}

fn parse_number(option: &str, v: &str) -> Result<u64> {
    v.parse()
        .map_err(|_| Error::Invalid(format!("`{option}`: expected a non-negative integer")))
}

/// One shard of one query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardTicket {
    pub sql: String,
    pub shard: usize,
    pub shards: usize,
    /// The partition count every shard of the read plans for.
    pub partitions: usize,
}

impl ShardTicket {
    pub fn to_ticket(&self) -> Result<Ticket> {
        let value = serde_json::to_vec(self)
            .map_err(|e| Error::Invalid(format!("cannot encode a shard ticket: {e}")))?;
        let any = Any {
            type_url: SHARD_TICKET_TYPE.to_string(),
            value: value.into(),
        };
        Ok(Ticket::new(any.encode_to_vec()))
    }

    /// Decodes the value of an `Any` whose type URL is [`SHARD_TICKET_TYPE`].
    pub fn from_any_value(value: &[u8]) -> Result<Self> {
        serde_json::from_slice(value).map_err(|e| {
            Error::Invalid(format!(
                "malformed shard ticket ({e}): it was not issued by Flywheel"
            ))
        })
    }
}

/// The `FlightInfo` of a dataset request: schema, row count when known, one endpoint per shard.
pub async fn flight_info(
    engine: &Engine,
    request: DatasetRequest,
    descriptor: FlightDescriptor,
) -> Result<FlightInfo> {
    let (sql, shards, rows) = match request {
        DatasetRequest::TrainingSet {
            name,
            version,
            shards,
        } => {
            engine.require_training_set(&name)?;
            pinned(engine, &name, version, shards).await?
        }
        DatasetRequest::Table {
            name,
            version,
            shards,
        } => pinned(engine, &name, version, shards).await?,
        DatasetRequest::Sql { query, shards } => (query, shards.unwrap_or(1), -1),
    };
    let mut statements = engine.parse(&sql)?;
    if statements.len() != 1 {
        return Err(Error::NotOneStatement {
            found: statements.len(),
        });
    }
    let planned = engine.plan(statements.remove(0)).await?;
    if !matches!(planned, crate::engine::Planned::Query(_)) {
        return Err(Error::Invalid(
            "a sharded read takes a query (SELECT ...); run statements through Flight SQL".into(),
        ));
    }
    let mut info = FlightInfo::new()
        .try_with_schema(&super::messages::wire_schema(&planned.schema()))?
        .with_descriptor(descriptor)
        .with_total_records(rows)
        .with_total_bytes(-1);
    let partitions = engine.shard_partitions(shards);
    for shard in 0..shards {
        let ticket = ShardTicket {
            sql: sql.clone(),
            shard,
            shards,
            partitions,
        }
        .to_ticket()?;
        info = info.with_endpoint(FlightEndpoint::new().with_ticket(ticket));
    }
    Ok(info)
}

/// A table read pinned at one version: its query, shard count and row count.
async fn pinned(
    engine: &Engine,
    name: &str,
    version: Option<u64>,
    shards: Option<usize>,
) -> Result<(String, usize, i64)> {
    let table: PinnedTable = engine.pin_table(name, version).await?;
    let sql = table.query();
    let rows = row_count(engine, &sql).await?;
    let shards = shards.unwrap_or(table.files.clamp(1, MAX_SHARDS));
    Ok((sql, shards, rows))
}

/// `count(*)` of a query (answered from Delta statistics when it can be).
async fn row_count(engine: &Engine, sql: &str) -> Result<i64> {
    let batches = engine
        .sql(&format!("SELECT count(*) FROM ({sql})"))
        .await?
        .collect()
        .await?;
    Ok(batches
        .first()
        .and_then(|b| b.column(0).as_any().downcast_ref::<Int64Array>().cloned())
        .filter(|a| !a.is_empty())
        .map(|a| a.value(0))
        .unwrap_or(-1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn paths_parse_with_options() {
        assert_eq!(
            DatasetRequest::from_path(&path(&["training_set", "t", "version=3", "shards=4"]))
                .expect("ok"),
            DatasetRequest::TrainingSet {
                name: "t".into(),
                version: Some(3),
                shards: Some(4)
            }
        );
        assert_eq!(
            DatasetRequest::from_path(&path(&["sql", "SELECT 1"])).expect("ok"),
            DatasetRequest::Sql {
                query: "SELECT 1".into(),
                shards: None
            }
        );
        for bad in [
            &["training_set"][..],
            &["model", "m"],
            &["table", "t", "shards=0"],
            &["table", "t", "shards=x"],
            &["table", "t", "colour=red"],
            &["sql", "SELECT 1", "version=2"],
        ] {
            assert!(DatasetRequest::from_path(&path(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tickets_roundtrip() {
        let t = ShardTicket {
            sql: "SELECT 1".into(),
            shard: 1,
            shards: 2,
            partitions: 4,
        };
        let ticket = t.to_ticket().expect("encodes");
        let any = Any::decode(ticket.ticket).expect("an Any");
        assert_eq!(any.type_url, SHARD_TICKET_TYPE);
        assert_eq!(ShardTicket::from_any_value(&any.value).expect("decodes"), t);
    }
}
