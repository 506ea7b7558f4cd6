//! `CommandStatementIngest` (ADBC `cursor.adbc_ingest(table, data, mode=...)`): batches streamed
//! by the client into a Delta table, one commit.
//!
//! ADBC's modes map onto the command's table-definition options: `create` (fail if the table
//! exists), `append` (fail if it does not), `replace` (create or overwrite) and `create_append`
//! (create or append).

use arrow_flight::sql::server::PeekableFlightDataStream;
use arrow_flight::sql::{CommandStatementIngest, TableExistsOption, TableNotExistOption};
use datafusion::error::DataFusionError;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use flywheel_catalog::{DEFAULT_CATALOG, DEFAULT_SCHEMA};
use futures::{StreamExt, TryStreamExt, stream};
use tonic::Status;

use super::to_status;
use flywheel_engine::{Engine, Error};
use flywheel_engine::{IfExists, IfMissing, IngestTarget};

/// Runs one ingest; returns the number of rows written.
pub async fn ingest(
    engine: &Engine,
    command: CommandStatementIngest,
    data: PeekableFlightDataStream,
) -> Result<i64, Status> {
    let target = target(&command).map_err(to_status)?;
    let mut batches = crate::untrusted::put_batches(data);
    // The schema arrives with the first message; read up to the first batch to learn it.
    let first = batches
        .next()
        .await
        .transpose()
        .map_err(|e| to_status(Error::InvalidInput(format!("bad ingest data: {e}"))))?;
    let schema = match (batches.schema(), &first) {
        (Some(s), _) => s.clone(),
        (None, Some(b)) => b.schema(),
        (None, None) => {
            return Err(to_status(Error::InvalidInput(
                "the ingest stream carried no schema and no rows".into(),
            )));
        }
    };
    let rest = batches.map_err(|e| DataFusionError::External(Box::new(e)));
    let all = stream::iter(first.map(Ok)).chain(rest);
    let source = Box::pin(RecordBatchStreamAdapter::new(schema.clone(), all));
    let rows = engine
        .ingest(&target, schema, source)
        .await
        .map_err(to_status)?;
    Ok(i64::try_from(rows).unwrap_or(i64::MAX))
}

/// The table and the modes an ingest command asks for.
fn target(command: &CommandStatementIngest) -> Result<IngestTarget, Error> {
    if command.temporary {
        return Err(Error::Unsupported {
            what: "temporary tables".into(),
            hint: "ingest into a regular table (every table is a Delta table)".into(),
        });
    }
    if command.transaction_id.is_some() {
        return Err(Error::Unsupported {
            what: "transactions".into(),
            hint: "each ingest is its own commit".into(),
        });
    }
    let outside = command
        .catalog
        .as_deref()
        .is_some_and(|c| c != DEFAULT_CATALOG)
        || command
            .schema
            .as_deref()
            .is_some_and(|s| s != DEFAULT_SCHEMA);
    if outside {
        return Err(Error::Unsupported {
            what: format!(
                "ingest into `{}.{}.{}`",
                command.catalog.as_deref().unwrap_or(DEFAULT_CATALOG),
                command.schema.as_deref().unwrap_or(DEFAULT_SCHEMA),
                command.table
            ),
            hint: format!("tables live in `{DEFAULT_CATALOG}.{DEFAULT_SCHEMA}`"),
        });
    }
    if command.table.is_empty() {
        return Err(Error::InvalidInput(
            "the ingest command names no table".into(),
        ));
    }
    let options = command.table_definition_options.unwrap_or_default();
    let if_missing = match options.if_not_exist() {
        TableNotExistOption::Fail => IfMissing::Fail,
        TableNotExistOption::Create | TableNotExistOption::Unspecified => IfMissing::Create,
    };
    let if_exists = match options.if_exists() {
        TableExistsOption::Append => IfExists::Append,
        TableExistsOption::Replace => IfExists::Replace,
        TableExistsOption::Fail | TableExistsOption::Unspecified => IfExists::Fail,
    };
    Ok(IngestTarget {
        table: command.table.clone(),
        if_missing,
        if_exists,
    })
}
