//! [`FlywheelFlightSqlService`]: the Flight SQL RPCs, plus sharded dataset reads over plain Flight.
//!
//! Each RPC translates its command and hands over to the engine or to a sibling module:
//! statements and prepared statements here, catalog metadata in [`super::metadata`], bulk ingest in
//! [`super::ingest`], sharded reads in [`super::shards`], credentials in [`super::auth`].

use std::pin::Pin;
use std::sync::Arc;

use crate::untrusted::put_batches;
use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::encode::{FlightDataEncoderBuilder, GRPC_TARGET_MAX_FLIGHT_SIZE_BYTES};
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::metadata::SqlInfoData;
use arrow_flight::sql::server::{DoPutError, FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, Any, Command, CommandGetCatalogs, CommandGetDbSchemas,
    CommandGetPrimaryKeys, CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables,
    CommandGetXdbcTypeInfo, CommandPreparedStatementQuery, CommandPreparedStatementUpdate,
    CommandStatementIngest, CommandStatementQuery, CommandStatementUpdate,
    DoPutPreparedStatementResult, ProstMessageExt, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{
    Action, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse,
    IpcMessage, SchemaAsIpc, Ticket, flight_descriptor,
};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt, stream};
use prost::Message;
use tonic::{Request, Response, Status, Streaming};
use tracing::instrument;

use super::auth::Authenticator;
use super::sql_info::{SQL_INFO, XDBC_TYPE_INFO};
use super::tickets::{SHARD_TICKET_TYPE, ShardTicket, Statement, StatementTicket};
use super::wire_types;
use super::{ingest, metadata, shards, to_status};
use flywheel_engine::Planned;
use flywheel_engine::{Engine, Error, Output};

type DoGetStream = <FlywheelFlightSqlService as FlightService>::DoGetStream;

/// Record batches on their way to a client.
type BatchStream = BoxStream<'static, Result<RecordBatch, FlightError>>;

/// A ticket's answer before encoding: its schema and its batches.
type Batches = (SchemaRef, BatchStream);

/// Flight SQL over one shared [`Engine`].
#[derive(Debug, Clone)]
pub struct FlywheelFlightSqlService {
    engine: Engine,
    auth: Arc<Authenticator>,
}

impl FlywheelFlightSqlService {
    /// A service that accepts every caller.
    pub fn new(engine: Engine) -> Self {
        Self::with_auth(engine, Authenticator::new(Default::default()))
    }

    /// A service whose handshake checks and issues credentials with `auth`.
    pub fn with_auth(engine: Engine, auth: Arc<Authenticator>) -> Self {
        Self { engine, auth }
    }

    /// Parses, plans and binds a statement.
    async fn plan(&self, statement: &Statement) -> Result<Planned, Status> {
        let parsed = self.engine.parse_one(&statement.sql).map_err(to_status)?;
        let planned = self.engine.plan(parsed).await.map_err(to_status)?;
        match &statement.params {
            Some(params) => planned.bind(params).map_err(to_status),
            None => Ok(planned),
        }
    }

    /// Plans a statement; a query becomes a ticket to run it later, anything else runs now and its
    /// result travels in the ticket.
    async fn flight_info_for(
        &self,
        statement: Statement,
        descriptor: FlightDescriptor,
    ) -> Result<FlightInfo, Status> {
        let planned = self.plan(&statement).await?;
        let (schema, ticket) = match planned {
            Planned::Query(_) => (planned.schema(), StatementTicket::Query(statement)),
            command @ (Planned::Command(_)
            | Planned::Flywheel(_)
            | Planned::DropTableCascade(_)) => {
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
        Ok(
            schema_info(&wire_types::sql_wire_schema(&schema), descriptor)?
                .with_endpoint(endpoint)
                .with_total_records(-1),
        )
    }

    /// Runs a statement to completion and returns the affected-row count.
    async fn execute_update(&self, statement: &Statement) -> Result<i64, Status> {
        let planned = self.plan(statement).await?;
        let output = self.engine.run(planned).await.map_err(to_status)?;
        if let Some(n) = output.row_count() {
            return Ok(i64::try_from(n).unwrap_or(i64::MAX));
        }
        // A query sent as an update: run it and count its rows.
        let batches = output.collect().await.map_err(to_status)?;
        Ok(batches.iter().map(|b| b.num_rows() as i64).sum())
    }

    /// The answer of a ticket whose answer is a stream of record batches (statements, shard
    /// reads, online lookups): its schema and batches, not yet encoded. `None` for other tickets
    /// (catalog metadata), which the Flight SQL dispatch answers.
    async fn ticket_batches(&self, ticket: &Any) -> Option<Result<Batches, Status>> {
        let batches = match ticket.type_url.as_str() {
            SHARD_TICKET_TYPE => self.shard_batches(&ticket.value).await,
            flywheel_engine::online::LOOKUP_TICKET_TYPE => self.lookup_batches(&ticket.value).await,
            url if url == TicketStatementQuery::type_url() => {
                match TicketStatementQuery::decode(ticket.value.clone()) {
                    Ok(query) => self.statement_batches(&query.statement_handle).await,
                    Err(e) => Err(to_status(Error::InvalidInput(format!(
                        "malformed statement ticket: {e}"
                    )))),
                }
            }
            _ => return None,
        };
        Some(batches)
    }

    /// A statement ticket: the query runs now, or its result travelled in the ticket.
    async fn statement_batches(&self, handle: &[u8]) -> Result<Batches, Status> {
        let output = match StatementTicket::decode(handle).map_err(to_status)? {
            StatementTicket::Query(statement) => {
                let planned = self.plan(&statement).await?;
                self.engine.run(planned).await.map_err(to_status)?
            }
            StatementTicket::Result(batch) => Output::Batch(batch),
        };
        // Sent as announced: views as plain strings (see `wire_types::sql_wire_schema`).
        let schema = Arc::new(wire_types::sql_wire_schema(&output.schema()));
        let batches = output.into_stream().await.map_err(to_status)?;
        let sent = Arc::clone(&schema);
        let batches = engine_batches(batches)
            .and_then(move |batch| {
                futures::future::ready(wire_types::hydrate(batch, &sent).map_err(FlightError::from))
            })
            .boxed();
        Ok((schema, batches))
    }

    /// A shard of a sharded read.
    async fn shard_batches(&self, ticket: &[u8]) -> Result<Batches, Status> {
        let ticket = ShardTicket::from_any_value(ticket).map_err(to_status)?;
        let batches = self
            .engine
            .read_shard(&ticket.source, ticket.spec)
            .await
            .map_err(to_status)?;
        let schema = batches.schema();
        let pieces = engine_batches(batches)
            .map_ok(|b| {
                stream::iter(
                    wire_types::compact_views(b, GRPC_TARGET_MAX_FLIGHT_SIZE_BYTES)
                        .into_iter()
                        .map(Ok),
                )
            })
            .try_flatten()
            .boxed();
        Ok((schema, pieces))
    }

    /// One online lookup: the answer is one record batch.
    async fn lookup_batches(&self, request: &[u8]) -> Result<Batches, Status> {
        let request: flywheel_engine::online::LookupRequest = serde_json::from_slice(request)
            .map_err(|e| {
                to_status(Error::InvalidInput(format!(
                    "malformed lookup request: {e}"
                )))
            })?;
        let now_us = chrono::Utc::now().timestamp_micros();
        let batch = self
            .engine
            .online_lookup(&request, now_us)
            .await
            .map_err(to_status)?;
        Ok((batch.schema(), stream::iter([Ok(batch)]).boxed()))
    }

    /// A metadata command's `FlightInfo`: its answer's schema, and the command itself as ticket.
    fn command_info(
        &self,
        command: Any,
        schema: &Schema,
        descriptor: FlightDescriptor,
    ) -> Result<FlightInfo, Status> {
        let endpoint = FlightEndpoint::new().with_ticket(Ticket::new(command.encode_to_vec()));
        Ok(schema_info(schema, descriptor)?.with_endpoint(endpoint))
    }
}

fn schema_info(schema: &Schema, descriptor: FlightDescriptor) -> Result<FlightInfo, Status> {
    Ok(FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|e| to_status(Error::Internal(format!("cannot encode a schema: {e}"))))?
        .with_descriptor(descriptor)
        .with_total_records(-1)
        .with_total_bytes(-1))
}

fn output_schema(batches: &[RecordBatch]) -> SchemaRef {
    batches
        .first()
        .map(|b| b.schema())
        .unwrap_or_else(|| Arc::new(Schema::empty()))
}

/// Encodes a stream of record batches as Flight data, batch by batch.
fn encode(schema: SchemaRef, batches: BatchStream) -> DoGetStream {
    let stream = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(batches)
        .map_err(Status::from);
    Box::pin(stream)
}

fn engine_batches(batches: datafusion::execution::SendableRecordBatchStream) -> BatchStream {
    batches
        .map_err(|e| FlightError::from(to_status(Error::from_datafusion(e))))
        .boxed()
}

/// Encodes one metadata batch.
fn encode_batch(batch: Result<RecordBatch, Error>) -> Result<Response<DoGetStream>, Status> {
    let batch = batch.map_err(to_status)?;
    Ok(Response::new(encode(
        batch.schema(),
        stream::iter([Ok(batch)]).boxed(),
    )))
}

/// The parameter rows a client sent in a `DoPut` (empty when it sent none), concatenated.
async fn parameter_rows(request: Request<PeekableFlightDataStream>) -> Result<RecordBatch, Status> {
    let mut batches = put_batches(request.into_inner());
    let mut rows = Vec::new();
    while let Some(batch) = batches.next().await {
        rows.push(
            batch.map_err(|e| to_status(Error::InvalidInput(format!("bad parameters: {e}"))))?,
        );
    }
    let schema = batches
        .schema()
        .cloned()
        .unwrap_or_else(|| output_schema(&rows));
    arrow::compute::concat_batches(&schema, &rows)
        .map_err(|e| to_status(Error::InvalidInput(format!("bad parameters: {e}"))))
}

fn sql_info() -> Result<&'static SqlInfoData, Status> {
    SQL_INFO.as_ref().ok_or_else(|| {
        to_status(Error::Internal(
            "server information could not be built".into(),
        ))
    })
}

fn decode_statement(handle: &[u8]) -> Result<Statement, Status> {
    Statement::decode(handle).map_err(to_status)
}

#[tonic::async_trait]
impl FlightSqlService for FlywheelFlightSqlService {
    type FlightService = FlywheelFlightSqlService;

    /// Exchanges the caller's credentials (checked before the call got here) for a bearer token,
    /// sent back in the `authorization` header and as the payload.
    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        let token = self.auth.handshake(request.metadata())?;
        let response = HandshakeResponse {
            protocol_version: 0,
            payload: token.clone().unwrap_or_default().into_bytes().into(),
        };
        let mut response: Response<
            Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>,
        > = Response::new(Box::pin(stream::iter([Ok(response)])));
        if let Some(token) = token {
            response
                .metadata_mut()
                .insert("authorization", Authenticator::bearer_header(&token)?);
        }
        Ok(response)
    }

    #[instrument(skip_all)]
    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let info = self
            .flight_info_for(Statement::new(query.query), request.into_inner())
            .await?;
        Ok(Response::new(info))
    }

    #[instrument(skip_all)]
    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let statement = decode_statement(&query.prepared_statement_handle)?;
        let info = self
            .flight_info_for(statement, request.into_inner())
            .await?;
        Ok(Response::new(info))
    }

    /// Path descriptors: sharded reads of training sets, tables and queries.
    #[instrument(skip_all)]
    async fn get_flight_info_fallback(
        &self,
        cmd: Command,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let descriptor = request.into_inner();
        if descriptor.r#type != flight_descriptor::DescriptorType::Path as i32 {
            return Err(to_status(Error::Unsupported {
                what: format!("command `{}`", cmd.type_url()),
                hint: "Flywheel serves Flight SQL commands and path descriptors \
                       ([\"training_set\", NAME], [\"table\", NAME], [\"sql\", QUERY])"
                    .into(),
            }));
        }
        let dataset = shards::DatasetRequest::from_path(&descriptor.path).map_err(to_status)?;
        let info = shards::flight_info(&self.engine, dataset, descriptor)
            .await
            .map_err(to_status)?;
        Ok(Response::new(info))
    }

    #[instrument(skip_all)]
    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let (schema, batches) = self.statement_batches(&ticket.statement_handle).await?;
        Ok(Response::new(encode(schema, batches)))
    }

    /// Shard and online-lookup tickets.
    #[instrument(skip_all)]
    async fn do_get_fallback(
        &self,
        _request: Request<Ticket>,
        message: Any,
    ) -> Result<Response<DoGetStream>, Status> {
        let (schema, batches) = self.ticket_batches(&message).await.unwrap_or_else(|| {
            Err(to_status(Error::InvalidInput(format!(
                "unknown ticket type `{}`: redeem tickets from a Flywheel FlightInfo",
                message.type_url
            ))))
        })?;
        Ok(Response::new(encode(schema, batches)))
    }

    #[instrument(skip_all)]
    async fn do_put_statement_update(
        &self,
        command: CommandStatementUpdate,
        _request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        self.execute_update(&Statement::new(command.query)).await
    }

    /// `executemany`: the parameter rows travel in this call's stream.
    #[instrument(skip_all)]
    async fn do_put_prepared_statement_update(
        &self,
        query: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let mut statement = decode_statement(&query.prepared_statement_handle)?;
        let rows = parameter_rows(request).await?;
        if rows.num_columns() > 0 {
            statement.params = Some(rows);
        }
        self.execute_update(&statement).await
    }

    /// Binds parameter rows to a prepared query: the new handle carries them.
    #[instrument(skip_all)]
    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let mut statement = decode_statement(&query.prepared_statement_handle)?;
        let rows = parameter_rows(request).await?;
        statement.params = (rows.num_columns() > 0).then_some(rows);
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(statement.encode().map_err(to_status)?),
        })
    }

    /// A `DoPut` whose stream names no command. ADBC's bulk ingest of a table without rows sends
    /// no message at all, so the server cannot tell what was meant: say so, and how to get an empty
    /// table.
    async fn do_put_error_callback(
        &self,
        _request: Request<PeekableFlightDataStream>,
        error: DoPutError,
    ) -> Result<Response<<Self as FlightService>::DoPutStream>, Status> {
        Err(to_status(Error::InvalidInput(
            match error {
                DoPutError::MissingCommand => {
                    "DoPut sent no messages, so it names no command (ADBC's adbc_ingest of a table \
                 without rows sends none): to create an empty table run CREATE TABLE name \
                 (columns); appending no rows needs no call"
                }
                DoPutError::MissingFlightDescriptor => {
                    "DoPut's first message has no flight descriptor: it must carry the Flight SQL \
                 command (CommandStatementUpdate, CommandStatementIngest, a prepared statement)"
                }
            }
            .into(),
        )))
    }

    #[instrument(skip_all)]
    async fn do_put_statement_ingest(
        &self,
        command: CommandStatementIngest,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        ingest::ingest(&self.engine, command, request.into_inner()).await
    }

    /// Prepares a statement: checks and plans it (returning its result and parameter schemas)
    /// without running it. The handle is the statement itself (see [`super::tickets`]).
    #[instrument(skip_all)]
    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        _request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let statement = Statement::new(query.query);
        let planned = self.plan(&statement).await?;
        let schema = match &planned {
            Planned::Query(_) => planned.schema(),
            Planned::Command(_) | Planned::Flywheel(_) | Planned::DropTableCascade(_) => {
                Arc::new(Schema::empty())
            }
        };
        let parameters = planned.parameter_schema().map_err(to_status)?;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: statement.encode().map_err(to_status)?,
            dataset_schema: ipc_schema(&wire_types::sql_wire_schema(&schema))?,
            parameter_schema: if parameters.fields().is_empty() {
                Default::default()
            } else {
                ipc_schema(&parameters)?
            },
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
        let schema = query.clone().into_builder(sql_info()?).schema();
        let info = self.command_info(query.as_any(), &schema, request.into_inner())?;
        Ok(Response::new(info))
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        encode_batch(
            query
                .into_builder(sql_info()?)
                .build()
                .map_err(metadata::flight),
        )
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        let info = self.command_info(query.as_any(), &schema, request.into_inner())?;
        Ok(Response::new(info))
    }

    async fn do_get_catalogs(
        &self,
        _query: CommandGetCatalogs,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        encode_batch(metadata::catalogs(&self.engine))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        let info = self.command_info(query.as_any(), &schema, request.into_inner())?;
        Ok(Response::new(info))
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        encode_batch(metadata::schemas(&self.engine, query))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        let info = self.command_info(query.as_any(), &schema, request.into_inner())?;
        Ok(Response::new(info))
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        encode_batch(metadata::tables(&self.engine, query).await)
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        let info = self.command_info(query.as_any(), &schema, request.into_inner())?;
        Ok(Response::new(info))
    }

    async fn do_get_table_types(
        &self,
        _query: CommandGetTableTypes,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        encode_batch(metadata::table_types())
    }

    async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = metadata::primary_keys_schema();
        let info = self.command_info(query.as_any(), &schema, request.into_inner())?;
        Ok(Response::new(info))
    }

    async fn do_get_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        encode_batch(metadata::primary_keys(&self.engine, query).await)
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder(xdbc_types()?).schema();
        let info = self.command_info(query.as_any(), &schema, request.into_inner())?;
        Ok(Response::new(info))
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        encode_batch(
            query
                .into_builder(xdbc_types()?)
                .build()
                .map_err(metadata::flight),
        )
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

fn xdbc_types() -> Result<&'static arrow_flight::sql::metadata::XdbcTypeInfoData, Status> {
    XDBC_TYPE_INFO.as_ref().ok_or_else(|| {
        to_status(Error::Internal(
            "type information could not be built".into(),
        ))
    })
}

fn ipc_schema(schema: &Schema) -> Result<bytes::Bytes, Status> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e| to_status(Error::Internal(format!("cannot encode a schema: {e}"))))?;
    Ok(bytes)
}
