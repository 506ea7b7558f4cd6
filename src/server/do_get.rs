//! `DoGet`, served beside tonic's generated Flight service so that answers leave without tonic's
//! copy.
//!
//! Every other RPC goes on to the generated service, `GetFlightInfo` after a look at its
//! descriptor (a command that is not a protobuf `Any`, such as SQL text, is answered here with
//! what to send instead, rather than with a protobuf decoder's error). A `DoGet` is read here (its
//! one request message is the ticket). Tickets answered by a stream of record batches (statements, shard
//! reads, online lookups) are encoded by [`messages`](super::messages) from the batches' own
//! buffers; other tickets (catalog metadata) run through the Flight SQL dispatch as before, and
//! only their framing is done here. Shard reads of pinned table versions go through the
//! [`download_cache`](super::download_cache) when the server has one. Credentials are already
//! checked: this route sits inside the authentication interceptor.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use arrow::datatypes::SchemaRef;
use arrow_flight::flight_descriptor::DescriptorType;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::Any;
use arrow_flight::{FlightDescriptor, Ticket};
use bytes::{Buf, Bytes};
use futures::future::{BoxFuture, ready};
use futures::stream::{self, BoxStream};
use futures::{FutureExt, StreamExt, TryStreamExt};
use http_body_util::{BodyExt, Limited};
use prost::Message as _;
use tonic::Status;
use tonic::body::Body;
use tonic::metadata::MetadataMap;
use tonic::server::NamedService;
use tower_service::Service;

use super::download_cache::Lookup;
use super::grpc_body;
use super::messages::{self, Message, SchemaMessages};
use super::service::{BatchStream, FlywheelFlightSqlService, encode};
use super::shards::SHARD_TICKET_TYPE;

/// The gRPC path of `DoGet`.
const DO_GET_PATH: &str = "/arrow.flight.protocol.FlightService/DoGet";

/// The gRPC path of `GetFlightInfo`, whose command descriptors are checked here first.
const GET_FLIGHT_INFO_PATH: &str = "/arrow.flight.protocol.FlightService/GetFlightInfo";

/// Routes `DoGet` to [`do_get`] and everything else to `inner`.
#[derive(Debug, Clone)]
pub(super) struct DoGetRoute<S> {
    inner: S,
    /// Shared: the router clones this route for every call.
    service: Arc<FlywheelFlightSqlService>,
    max_request_bytes: usize,
}

impl<S> DoGetRoute<S> {
    pub(super) fn new(
        inner: S,
        service: FlywheelFlightSqlService,
        max_request_bytes: usize,
    ) -> Self {
        Self {
            inner,
            service: Arc::new(service),
            max_request_bytes,
        }
    }
}

impl<S: NamedService> NamedService for DoGetRoute<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for DoGetRoute<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let limit = self.max_request_bytes;
        match request.uri().path() {
            DO_GET_PATH => {
                let service = Arc::clone(&self.service);
                async move {
                    Ok(do_get(service, request, limit)
                        .await
                        .unwrap_or_else(Status::into_http))
                }
                .boxed()
            }
            GET_FLIGHT_INFO_PATH => {
                // The service that was polled ready takes the call; its clone stays for the next.
                let ready = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, ready);
                async move {
                    let (parts, body) = request.into_parts();
                    let checked = read_body(body, limit, "GetFlightInfo")
                        .await
                        .and_then(|body| check_descriptor(&body).map(|()| body));
                    match checked {
                        Ok(body) => {
                            let body = Body::new(http_body_util::Full::new(body));
                            inner.call(http::Request::from_parts(parts, body)).await
                        }
                        Err(status) => Ok(status.into_http()),
                    }
                }
                .boxed()
            }
            _ => self.inner.call(request).boxed(),
        }
    }
}

/// Refuses a command descriptor that is not a protobuf `Any` (what arrow-flight would answer with
/// a decoder's debug output): most often SQL text from `FlightDescriptor.for_command(sql)`.
fn check_descriptor(body: &Bytes) -> Result<(), Status> {
    let descriptor = FlightDescriptor::decode(one_message(body.clone(), "GetFlightInfo")?)
        .map_err(|e| Status::invalid_argument(format!("malformed flight descriptor: {e}")))?;
    let is_command = descriptor.r#type == DescriptorType::Cmd as i32;
    let is_any = Any::decode(descriptor.cmd).is_ok_and(|any| !any.type_url.is_empty());
    if is_command && !is_any {
        return Err(Status::invalid_argument(
            "this command descriptor does not hold a Flight SQL command (a protobuf Any): \
             from pyarrow.flight, ask for a query with FlightDescriptor.for_path(\"sql\", QUERY), \
             for a table or training set with for_path(\"table\" or \"training_set\", NAME) (see \
             the README's Serving training data), or use a Flight SQL client (ADBC)",
        ));
    }
    Ok(())
}

/// Answers one `DoGet`.
async fn do_get(
    service: Arc<FlywheelFlightSqlService>,
    request: http::Request<Body>,
    limit: usize,
) -> Result<http::Response<Body>, Status> {
    let (parts, body) = request.into_parts();
    let ticket = read_ticket(body, limit).await?;
    let command = Any::decode(ticket.ticket.clone())
        .ok()
        .filter(|c| !c.type_url.is_empty())
        .ok_or_else(|| {
            Status::invalid_argument(
                "this ticket is not one Flywheel reads: redeem the tickets of GetFlightInfo's \
                 endpoints as they are, or send a lookup ticket (a protobuf Any with type URL \
                 type.googleapis.com/flywheel.OnlineLookup; see the README's Online lookups)",
            )
        })?;
    let mut recorder = None;
    if let Some(cache) = service.download_cache()
        && command.type_url == SHARD_TICKET_TYPE
        && let Some((key, share)) = service.shard_cache_key(&command.value).await?
    {
        cache.expect_at_least(&key, share);
        match cache.lookup(&key).await {
            Lookup::Hit(entry) => return Ok(grpc_body::response(entry.replay())),
            Lookup::Miss(r) => recorder = Some(r),
            Lookup::NoRoom | Lookup::Uncached => {}
        }
    }
    let messages = match service.ticket_batches(&command).await {
        Some(batches) => {
            let (schema, batches) = batches?;
            // A lookup's schema is its plan's, the same for every call asking the same features.
            let lookup = command.type_url == crate::online::LOOKUP_TICKET_TYPE;
            batch_messages(schema, batches, lookup.then(|| service.schema_messages()))
        }
        None => {
            let request = tonic::Request::from_parts(
                MetadataMap::from_headers(parts.headers),
                parts.extensions,
                ticket,
            );
            FlightService::do_get(&*service, request)
                .await?
                .into_inner()
                .map(|data| data.and_then(messages::flight_data_message))
                .boxed()
        }
    };
    let messages = match recorder {
        Some(recorder) => recorder.tee(messages),
        None => messages,
    };
    Ok(grpc_body::response(messages))
}

/// The schema message (from `schemas` when given), then each batch's messages (dictionaries
/// decoded, as arrow-flight's encoder also does).
pub(super) fn batch_messages(
    schema: SchemaRef,
    batches: BatchStream,
    schemas: Option<&SchemaMessages>,
) -> BoxStream<'static, Result<Message, Status>> {
    let sent = if messages::shares_buffers(&schema) {
        Arc::clone(&schema)
    } else if let Some(hydrated) = messages::hydrated(&schema) {
        hydrated
    } else {
        return encode(schema, batches)
            .map(|data| data.and_then(messages::flight_data_message))
            .boxed();
    };
    let head = match schemas {
        Some(schemas) => schemas.get(&sent),
        None => messages::schema_message(&sent),
    };
    let head = stream::once(ready(head));
    let body = batches
        .map_err(Status::from)
        .and_then(move |batch| {
            ready(
                messages::hydrate(batch, &sent)
                    .and_then(|batch| messages::batch_messages(&batch))
                    .map(|m| stream::iter(m.into_iter().map(Ok::<_, Status>))),
            )
        })
        .try_flatten();
    head.chain(body).boxed()
}

/// Reads the request: one uncompressed gRPC message holding a `Ticket`.
async fn read_ticket(body: Body, limit: usize) -> Result<Ticket, Status> {
    let message = one_message(read_body(body, limit, "DoGet").await?, "DoGet")?;
    Ticket::decode(message).map_err(|e| Status::invalid_argument(format!("malformed ticket: {e}")))
}

/// The whole body of a unary request to `rpc`, at most `limit` bytes.
async fn read_body(body: Body, limit: usize, rpc: &str) -> Result<Bytes, Status> {
    Ok(Limited::new(body, limit)
        .collect()
        .await
        .map_err(|e| match e.downcast::<Status>() {
            Ok(status) => *status,
            Err(e) => Status::resource_exhausted(format!(
                "the {rpc} request is larger than {limit} bytes or could not be read: {e}"
            )),
        })?
        .to_bytes())
}

/// The one message of a unary request body (gRPC framing: a compression flag, a length, the
/// message).
fn one_message(mut bytes: Bytes, rpc: &str) -> Result<Bytes, Status> {
    if bytes.len() < 5 {
        return Err(Status::invalid_argument(format!(
            "the {rpc} request carries no message"
        )));
    }
    let compressed = bytes.get_u8();
    let len = bytes.get_u32() as usize;
    if compressed != 0 {
        return Err(Status::unimplemented(format!(
            "compressed {rpc} requests are not supported: send the request uncompressed"
        )));
    }
    if len != bytes.len() {
        return Err(Status::invalid_argument(format!(
            "the {rpc} request must be exactly one message"
        )));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, DictionaryArray, Int64Array, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Int32Type, Schema};
    use arrow_flight::FlightData;
    use arrow_flight::utils::flight_data_to_batches;

    use super::*;

    #[tokio::test]
    async fn dictionary_columns_are_sent_decoded() {
        let dict = DictionaryArray::<Int32Type>::try_new(
            vec![1, 0, 1, 1].into(),
            Arc::new(StringArray::from(vec!["eu", "us"])),
        )
        .expect("dictionary");
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("region", dict.data_type().clone(), false),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![Arc::new(Int64Array::from(vec![1, 2, 3, 4])), Arc::new(dict)],
        )
        .expect("batch");
        let sent: Vec<Message> = batch_messages(schema, stream::iter([Ok(batch)]).boxed(), None)
            .try_collect()
            .await
            .expect("messages");
        let data: Vec<FlightData> = sent
            .iter()
            .map(|m| {
                let bytes: Vec<u8> = m.iter().flat_map(|p| p.iter().copied()).collect();
                FlightData::decode(&bytes[5..]).expect("FlightData")
            })
            .collect();
        let read = flight_data_to_batches(&data).expect("decodes");
        let regions = read[0].column(1);
        assert_eq!(regions.data_type(), &DataType::Utf8);
        let regions: Vec<_> = regions
            .as_any()
            .downcast_ref::<StringArray>()
            .expect("strings")
            .iter()
            .collect();
        assert_eq!(
            regions,
            vec![Some("us"), Some("eu"), Some("us"), Some("us")]
        );
    }
}
