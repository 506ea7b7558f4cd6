//! The pgwire handlers: the simple query protocol (`psql`, psycopg2, dbt), the extended one
//! (prepared statements and parameters: psycopg 3, JDBC, node `pg`), and what both share.
//!
//! Every statement goes to the same engine entry points as Flight SQL ([`Engine::plan`],
//! [`Engine::run`]); a prepared statement is planned when it is parsed (to describe its parameters
//! and columns) and planned again when it runs, so it always reads the tables' current versions.

use std::fmt::Debug;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use arrow_pg::datatypes::df::deserialize_parameters;
use arrow_pg::datatypes::into_pg_type;
use async_trait::async_trait;
use datafusion::common::{ParamValues, ScalarValue};
use flywheel_engine::{Engine, Error, ErrorClass};
use futures::Sink;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, Response, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, ConnectionHandle, Type};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::types::format::FormatOptions;

use crate::results::{self, respond};
use crate::settings::Settings;
use crate::sqlstate::{refusal, to_pg};
use crate::statements::{Completion, Parsed, Parser, completion, is_read_only_listing};

/// Runs clients' statements on the engine.
pub struct Service {
    /// The engine and the parser, shared with the extended protocol's Parse step.
    parser: Arc<StatementParser>,
}

impl Service {
    pub fn new(engine: Engine) -> Self {
        Self {
            parser: Arc::new(StatementParser {
                engine,
                parser: Parser::new(),
            }),
        }
    }

    fn engine(&self) -> &Engine {
        &self.parser.engine
    }

    /// Runs one parsed statement, with `params` bound (extended protocol), answering in `format`.
    async fn run<C>(
        &self,
        client: &mut C,
        parsed: &Parsed,
        params: Option<RecordBatch>,
        format: &Format,
        rows_described: bool,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + Send + Sync,
    {
        let settings = client
            .session_extensions()
            .get_or_insert_with(Settings::default);
        match parsed {
            Parsed::Begin => Ok(Response::TransactionStart(Tag::new("BEGIN"))),
            Parsed::Commit => Ok(Response::TransactionEnd(Tag::new("COMMIT"))),
            Parsed::Rollback => Ok(Response::TransactionEnd(Tag::new("ROLLBACK"))),
            Parsed::Set { name, value } => {
                settings.set(name, value);
                Ok(Response::Execution(Tag::new("SET")))
            }
            Parsed::Show(name) => match settings.get(name) {
                Some(value) => Ok(Response::Query(
                    results::one_value(name, &value, format).await?,
                )),
                None => Err(refusal(
                    ErrorClass::UndefinedObject,
                    format!("unrecognized configuration parameter \"{name}\""),
                )),
            },
            Parsed::Accepted(tag) => Ok(Response::Execution(Tag::new(tag))),
            Parsed::Engine(statement) => {
                let completion = completion(statement);
                let mut planned = self.engine().plan(statement.clone()).await.map_err(to_pg)?;
                if let Some(params) = params {
                    planned = planned.bind(&params).map_err(to_pg)?;
                }
                let output = self.engine().run(planned).await.map_err(to_pg)?;
                let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
                let cancel = client
                    .session_extensions()
                    .get::<Arc<ConnectionHandle>>()
                    .map(|handle| Arc::clone(&*handle));
                respond(output, &completion, format, options, rows_described, cancel).await
            }
        }
    }
}

#[async_trait]
impl SimpleQueryHandler for Service {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let statements = self
            .parser
            .parser
            .parse(self.engine(), query)
            .map_err(to_pg)?;
        let mut responses = Vec::with_capacity(statements.len());
        // Like PostgreSQL: the statements before a failing one keep their answers; the ones after
        // it do not run.
        for parsed in &statements {
            match self
                .run(client, parsed, None, &Format::UnifiedText, true)
                .await
            {
                Ok(response) => responses.push(response),
                Err(e) => {
                    responses.push(Response::Error(Box::new(e.into())));
                    break;
                }
            }
        }
        Ok(responses)
    }
}

/// A statement the client prepared: parsed and planned once, to describe it.
#[derive(Debug)]
pub struct Prepared {
    parsed: Parsed,
    /// The types of `$1`, `$2`, ... as planning inferred them (`Null`: not inferred).
    parameters: Vec<DataType>,
    /// The columns of the rows it returns (none for commands).
    columns: SchemaRef,
}

/// Parses and describes prepared statements.
pub struct StatementParser {
    engine: Engine,
    parser: Parser,
}

#[async_trait]
impl QueryParser for StatementParser {
    type Statement = Arc<Prepared>;

    async fn parse_sql<C>(
        &self,
        _client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let mut statements = self.parser.parse(&self.engine, sql).map_err(to_pg)?;
        if statements.len() > 1 {
            return Err(refusal(
                ErrorClass::Syntax,
                "cannot insert multiple commands into a prepared statement",
            ));
        }
        let Some(parsed) = statements.pop() else {
            return Ok(None);
        };
        let (parameters, columns) = match &parsed {
            Parsed::Engine(statement) => {
                let planned = self.engine.plan(statement.clone()).await.map_err(to_pg)?;
                let parameters = planned.parameter_types().map_err(to_pg)?;
                let columns = if is_read_only_listing(statement) {
                    // Flywheel's listings know their columns only when they run.
                    self.engine.run(planned).await.map_err(to_pg)?.schema()
                } else if completion(statement) == Completion::Rows {
                    planned.schema()
                } else {
                    Arc::new(Schema::empty())
                };
                (parameters, columns)
            }
            Parsed::Show(name) => (
                Vec::new(),
                Arc::new(Schema::new(vec![Field::new(name, DataType::Utf8, true)])),
            ),
            _ => (Vec::new(), Arc::new(Schema::empty())),
        };
        Ok(Some(Arc::new(Prepared {
            parsed,
            parameters,
            columns,
        })))
    }

    fn get_parameter_types(&self, stmt: &Self::Statement) -> PgWireResult<Vec<Type>> {
        stmt.parameters
            .iter()
            .map(|t| match t {
                DataType::Null => Ok(Type::UNKNOWN),
                t => into_pg_type(t),
            })
            .collect()
    }

    fn get_result_schema(
        &self,
        stmt: &Self::Statement,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        results::fields(
            &stmt.columns,
            column_format.unwrap_or(&Format::UnifiedText),
            None,
        )
    }
}

#[async_trait]
impl ExtendedQueryHandler for Service {
    type Statement = Arc<Prepared>;
    type QueryParser = StatementParser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        Arc::clone(&self.parser)
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let prepared = Arc::clone(&portal.statement.statement);
        let params = if portal.parameter_len() > 0 {
            Some(parameter_row(portal, &prepared.parameters)?)
        } else {
            None
        };
        let described = !prepared.columns.fields().is_empty();
        self.run(
            client,
            &prepared.parsed,
            params,
            &portal.result_column_format,
            described,
        )
        .await
    }
}

/// The portal's parameter values (at least one) as one row (columns `$1`, `$2`, ...), each cast
/// to the type planning inferred for it (clients send a Python `int` as `int8` for an `INT`
/// column).
fn parameter_row(
    portal: &Portal<Arc<Prepared>>,
    inferred: &[DataType],
) -> PgWireResult<RecordBatch> {
    let hints: Vec<Option<&DataType>> = inferred
        .iter()
        .map(|t| (!matches!(t, DataType::Null)).then_some(t))
        .collect();
    let values = match deserialize_parameters(portal, &hints)? {
        ParamValues::List(values) => values,
        ParamValues::Map(_) => {
            return Err(refusal(
                ErrorClass::Invalid,
                "named parameters are not supported; use $1, $2, ...",
            ));
        }
    };
    let mut fields = Vec::with_capacity(values.len());
    let mut columns = Vec::with_capacity(values.len());
    for (i, value) in values.into_iter().enumerate() {
        let mut value: ScalarValue = value.value;
        if let Some(Some(want)) = hints.get(i)
            && value.data_type() != **want
            && !value.is_null()
        {
            value = value.cast_to(want).map_err(|e| {
                to_pg(Error::InvalidInput(format!(
                    "parameter ${} does not convert to {want}: {e}",
                    i + 1
                )))
            })?;
        }
        let column = if value.is_null()
            && let Some(Some(want)) = hints.get(i)
        {
            arrow::array::new_null_array(want, 1)
        } else {
            value
                .to_array_of_size(1)
                .map_err(|e| to_pg(Error::from_datafusion(e)))?
        };
        fields.push(Field::new(
            format!("${}", i + 1),
            column.data_type().clone(),
            true,
        ));
        columns.push(column);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| to_pg(Error::Arrow(e)))
}
