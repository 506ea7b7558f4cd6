//! [`FlywheelFlightSqlService`]: the Flight SQL RPCs.

use std::pin::Pin;

use arrow::datatypes::Schema;
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, CommandGetSqlInfo, CommandPreparedStatementQuery,
    CommandPreparedStatementUpdate, CommandStatementQuery, CommandStatementUpdate, ProstMessageExt,
    SqlInfo, TicketStatementQuery,
};
use arrow_flight::{
    FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, IpcMessage,
    SchemaAsIpc, Ticket,
};
use futures::{Stream, TryStreamExt, stream};
use prost::Message;
use tonic::{Request, Response, Status, Streaming};
use tracing::instrument;

use super::sql_info::SQL_INFO;
use super::tickets::StatementTicket;
use super::to_status;
use crate::engine::Planned;
use crate::{Engine, Error, Output};

type DoGetStream = <FlywheelFlightSqlService as FlightService>::DoGetStream;

/// Flight SQL over one shared [`Engine`].
#[derive(Debug, Clone)]
pub struct FlywheelFlightSqlService {
    engine: Engine,
}

impl FlywheelFlightSqlService {
    pub fn new(engine: Engine) -> Self {
        Self { engine }
    }

    /// Plans `sql`; a query becomes a ticket to run it later, anything else runs now and its result
    /// travels in the ticket.
    async fn flight_info_for_sql(
        &self,
        sql: &str,
        descriptor: FlightDescriptor,
    ) -> Result<FlightInfo, Status> {
        let statement = one_statement(&self.engine, sql)?;
        let planned = self.engine.plan(statement).await.map_err(to_status)?;
        let (schema, ticket) = match planned {
            Planned::Query(_) => (planned.schema(), StatementTicket::Query(sql.to_string())),
            command @ (Planned::Command(_) | Planned::Flywheel(_)) => {
                let output = self.engine.run(command).await.map_err(to_status)?;
                let batch = output.collect().await.map_err(to_status)?;
                let schema = output_schema(&batch);
                let batch = arrow::compute::concat_batches(&schema, &batch)
                    .map_err(|e| to_status(e.into()))?;
                (schema, StatementTicket::Result(batch))
            }
        };
        let handle = ticket.encode().map_err(to_status)?;
        let ticket = TicketStatementQuery {
            statement_handle: handle,
        };
        let endpoint =
            FlightEndpoint::new().with_ticket(Ticket::new(ticket.as_any().encode_to_vec()));
        FlightInfo::new()
            .try_with_schema(&schema)
            .map_err(|e| Status::internal(format!("cannot encode schema: {e}")))
            .map(|info| {
                info.with_endpoint(endpoint)
                    .with_descriptor(descriptor)
                    .with_total_records(-1)
                    .with_total_bytes(-1)
            })
    }

    /// Runs `sql` to completion and returns the affected-row count (`-1` when unknown).
    async fn execute_update(&self, sql: &str) -> Result<i64, Status> {
        let output = self.engine.sql(sql).await.map_err(to_status)?;
        if let Some(n) = output.row_count() {
            return Ok(i64::try_from(n).unwrap_or(i64::MAX));
        }
        // A query sent as an update: run it and count its rows.
        let batches = output.collect().await.map_err(to_status)?;
        Ok(batches.iter().map(|b| b.num_rows() as i64).sum())
    }
}

fn output_schema(batches: &[arrow::array::RecordBatch]) -> arrow::datatypes::SchemaRef {
    batches
        .first()
        .map(|b| b.schema())
        .unwrap_or_else(|| std::sync::Arc::new(Schema::empty()))
}

fn one_statement(engine: &Engine, sql: &str) -> Result<flywheel_sql::FlywheelStatement, Status> {
    let mut statements = engine.parse(sql).map_err(to_status)?;
    if statements.len() != 1 {
        return Err(to_status(Error::NotOneStatement {
            found: statements.len(),
        }));
    }
    Ok(statements.remove(0))
}

/// Encodes a stream of record batches as Flight data, batch by batch.
fn encode(
    schema: arrow::datatypes::SchemaRef,
    batches: impl Stream<Item = Result<arrow::array::RecordBatch, FlightError>> + Send + 'static,
) -> DoGetStream {
    let stream = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(batches)
        .map_err(Status::from);
    Box::pin(stream)
}

#[tonic::async_trait]
impl FlightSqlService for FlywheelFlightSqlService {
    type FlightService = FlywheelFlightSqlService;

    /// Without authentication configured, the handshake accepts everyone and returns no token.
    async fn do_handshake(
        &self,
        _request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        let response = HandshakeResponse {
            protocol_version: 0,
            payload: Default::default(),
        };
        Ok(Response::new(Box::pin(stream::iter([Ok(response)]))))
    }

    #[instrument(skip_all)]
    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let info = self
            .flight_info_for_sql(&query.query, request.into_inner())
            .await?;
        Ok(Response::new(info))
    }

    #[instrument(skip_all)]
    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let sql = prepared_sql(&query.prepared_statement_handle)?;
        let info = self.flight_info_for_sql(&sql, request.into_inner()).await?;
        Ok(Response::new(info))
    }

    #[instrument(skip_all)]
    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let output = match StatementTicket::decode(&ticket.statement_handle).map_err(to_status)? {
            StatementTicket::Query(sql) => self.engine.sql(&sql).await.map_err(to_status)?,
            StatementTicket::Result(batch) => Output::Batch(batch),
        };
        let schema = output.schema();
        let batches = output.into_stream().await.map_err(to_status)?;
        let batches = batches.map_err(|e| FlightError::from(to_status(Error::from_datafusion(e))));
        Ok(Response::new(encode(schema, batches)))
    }

    #[instrument(skip_all)]
    async fn do_put_statement_update(
        &self,
        command: CommandStatementUpdate,
        _request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        self.execute_update(&command.query).await
    }

    #[instrument(skip_all)]
    async fn do_put_prepared_statement_update(
        &self,
        query: CommandPreparedStatementUpdate,
        _request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let sql = prepared_sql(&query.prepared_statement_handle)?;
        self.execute_update(&sql).await
    }

    /// Prepares a statement: checks and plans it (a query's result schema is returned) without
    /// running it. The handle is the SQL text.
    #[instrument(skip_all)]
    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        _request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let statement = one_statement(&self.engine, &query.query)?;
        let planned = self.engine.plan(statement).await.map_err(to_status)?;
        let schema = match &planned {
            Planned::Query(_) => planned.schema(),
            Planned::Command(_) | Planned::Flywheel(_) => std::sync::Arc::new(Schema::empty()),
        };
        let IpcMessage(dataset_schema) = SchemaAsIpc::new(&schema, &IpcWriteOptions::default())
            .try_into()
            .map_err(|e| Status::internal(format!("cannot encode schema: {e}")))?;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: query.query.into_bytes().into(),
            dataset_schema,
            parameter_schema: Default::default(),
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        _query: ActionClosePreparedStatementRequest,
        _request: Request<Action>,
    ) -> Result<(), Status> {
        // Handles hold no server state.
        Ok(())
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let info_data = sql_info()?;
        let endpoint =
            FlightEndpoint::new().with_ticket(Ticket::new(query.as_any().encode_to_vec()));
        let info = FlightInfo::new()
            .try_with_schema(query.into_builder(info_data).schema().as_ref())
            .map_err(|e| Status::internal(format!("cannot encode schema: {e}")))?
            .with_endpoint(endpoint)
            .with_descriptor(request.into_inner());
        Ok(Response::new(info))
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let builder = query.into_builder(sql_info()?);
        let schema = builder.schema();
        let batch = builder.build();
        Ok(Response::new(encode(schema, stream::iter([batch]))))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

use arrow_flight::Action;

fn sql_info() -> Result<&'static arrow_flight::sql::metadata::SqlInfoData, Status> {
    SQL_INFO
        .as_ref()
        .ok_or_else(|| Status::internal("server information could not be built"))
}

fn prepared_sql(handle: &[u8]) -> Result<String, Status> {
    String::from_utf8(handle.to_vec()).map_err(|_| {
        Status::invalid_argument(
            "malformed prepared statement handle: it was not issued by Flywheel",
        )
    })
}
