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
//! Each endpoint's ticket is a [`ShardTicket`]: self-contained, so any process may redeem it, and
//! a table read names its version, so shards of one `FlightInfo` always come from the same
//! snapshot.

use arrow_flight::{FlightDescriptor, FlightEndpoint, FlightInfo};

use super::tickets::ShardTicket;
use flywheel_engine::{Engine, Error, Result};
use flywheel_engine::{MAX_SHARDS, ShardSource, ShardSpec};

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
            Error::InvalidInput(format!(
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
                return Err(Error::InvalidInput(format!(
                    "descriptor option `{}` is given more than once: give it once",
                    name.unwrap_or(option)
                )));
            }
            match option.split_once('=') {
                Some(("version", v)) => version = Some(parse_number(option, v)?),
                Some(("shards", n)) => {
                    let n = parse_number(option, n)?;
                    if n == 0 || n > MAX_SHARDS as u64 {
                        return Err(Error::InvalidInput(format!(
                            "`{option}`: ask for 1 to {MAX_SHARDS} shards"
                        )));
                    }
                    shards = Some(n as usize);
                }
                _ => {
                    return Err(Error::InvalidInput(format!(
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
            "sql" => Err(Error::InvalidInput(
                "`version=` does not apply to a query: write `VERSION AS OF` in its SQL".into(),
            )),
            _ => Err(usage()),
        }
    }
}

fn parse_number(option: &str, v: &str) -> Result<u64> {
    v.parse()
        .map_err(|_| Error::InvalidInput(format!("`{option}`: expected a non-negative integer")))
}

/// The `FlightInfo` of a dataset request: schema, row count when known, one endpoint per shard.
pub async fn flight_info(
    engine: &Engine,
    request: DatasetRequest,
    descriptor: FlightDescriptor,
) -> Result<FlightInfo> {
    let (source, shards, rows) = match request {
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
        DatasetRequest::Sql { query, shards } => {
            (ShardSource::Query(query), shards.unwrap_or(1), -1)
        }
    };
    let plan = engine.source_plan(&source).await?;
    let schema = super::wire_types::wire_schema(plan.schema().as_arrow());
    let mut info = FlightInfo::new()
        .try_with_schema(&schema)?
        .with_descriptor(descriptor)
        .with_total_records(rows)
        .with_total_bytes(-1);
    let partitions = engine.shard_partitions(shards);
    for shard in 0..shards {
        let ticket = ShardTicket {
            source: source.clone(),
            spec: ShardSpec {
                shard,
                shards,
                partitions,
            },
        }
        .to_ticket()?;
        info = info.with_endpoint(FlightEndpoint::new().with_ticket(ticket));
    }
    Ok(info)
}

/// A table read pinned at one version: its source, shard count and row count (`-1`: unknown).
async fn pinned(
    engine: &Engine,
    name: &str,
    version: Option<u64>,
    shards: Option<usize>,
) -> Result<(ShardSource, usize, i64)> {
    let table = engine.pin_table(name, version).await?;
    let shards = shards.unwrap_or(table.files.clamp(1, MAX_SHARDS));
    let rows = table.rows.and_then(|n| i64::try_from(n).ok()).unwrap_or(-1);
    let source = ShardSource::Table {
        name: table.name,
        version: table.version,
    };
    Ok((source, shards, rows))
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
}
