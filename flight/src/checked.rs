//! [`CheckedFlightService`]: the Flight service tonic serves, which is the Flight SQL dispatch
//! ([`FlywheelFlightSqlService`]) with two envelopes checked first.
//!
//! arrow-flight's Flight SQL dispatch decodes a `GetFlightInfo` command and a `DoGet` ticket as a
//! protobuf `Any` and answers bytes that are not one with the decoder's debug output. The most
//! common such request is SQL text sent as a command (`FlightDescriptor.for_command(sql)` in
//! pyarrow); here it is answered with what to send instead. Every RPC then goes to the dispatch
//! unchanged.

use arrow_flight::flight_descriptor::DescriptorType;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::Any;
use arrow_flight::{
    Action, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo, HandshakeRequest, PollInfo,
    SchemaResult, Ticket,
};
use prost::Message as _;
use tonic::{Request, Response, Status, Streaming};

use flywheel_engine::Error;

use super::service::FlywheelFlightSqlService;
use super::to_status;

/// The Flight service over [`FlywheelFlightSqlService`], with commands and tickets checked.
#[derive(Debug, Clone)]
pub struct CheckedFlightService(pub FlywheelFlightSqlService);

type Inner = FlywheelFlightSqlService;

/// Whether `bytes` decode as a protobuf `Any` naming a type.
fn is_any(bytes: &[u8]) -> bool {
    Any::decode(bytes).is_ok_and(|any| !any.type_url.is_empty())
}

/// Refuses a command descriptor that is not a protobuf `Any`: most often SQL text.
fn check_descriptor(descriptor: &FlightDescriptor) -> Result<(), Status> {
    if descriptor.r#type == DescriptorType::Cmd as i32 && !is_any(&descriptor.cmd) {
        return Err(to_status(Error::InvalidInput(
            "this command descriptor does not hold a Flight SQL command (a protobuf Any): \
             from pyarrow.flight, ask for a query with FlightDescriptor.for_path(\"sql\", QUERY), \
             for a table or training set with for_path(\"table\" or \"training_set\", NAME) (see \
             docs/serving.md), or use a Flight SQL client (ADBC)"
                .into(),
        )));
    }
    Ok(())
}

/// Refuses a ticket that is not a protobuf `Any`.
fn check_ticket(ticket: &Ticket) -> Result<(), Status> {
    if !is_any(&ticket.ticket) {
        return Err(to_status(Error::InvalidInput(
            "this ticket is not one Flywheel reads: redeem the tickets of GetFlightInfo's \
             endpoints as they are, or send a lookup ticket (a protobuf Any with type URL \
             type.googleapis.com/flywheel.OnlineLookup; see docs/serving.md)"
                .into(),
        )));
    }
    Ok(())
}

#[tonic::async_trait]
impl FlightService for CheckedFlightService {
    type HandshakeStream = <Inner as FlightService>::HandshakeStream;
    type ListFlightsStream = <Inner as FlightService>::ListFlightsStream;
    type DoGetStream = <Inner as FlightService>::DoGetStream;
    type DoPutStream = <Inner as FlightService>::DoPutStream;
    type DoExchangeStream = <Inner as FlightService>::DoExchangeStream;
    type DoActionStream = <Inner as FlightService>::DoActionStream;
    type ListActionsStream = <Inner as FlightService>::ListActionsStream;

    async fn handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        FlightService::handshake(&self.0, request).await
    }

    async fn list_flights(
        &self,
        request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        FlightService::list_flights(&self.0, request).await
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        check_descriptor(request.get_ref())?;
        FlightService::get_flight_info(&self.0, request).await
    }

    async fn poll_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        check_descriptor(request.get_ref())?;
        FlightService::poll_flight_info(&self.0, request).await
    }

    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        check_descriptor(request.get_ref())?;
        FlightService::get_schema(&self.0, request).await
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        check_ticket(request.get_ref())?;
        FlightService::do_get(&self.0, request).await
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        FlightService::do_put(&self.0, request).await
    }

    async fn do_exchange(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        FlightService::do_exchange(&self.0, request).await
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        FlightService::do_action(&self.0, request).await
    }

    async fn list_actions(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        FlightService::list_actions(&self.0, request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_text_is_not_a_command_nor_a_ticket() {
        let sql = FlightDescriptor::new_cmd("SELECT * FROM big");
        assert!(check_descriptor(&sql).is_err());
        let path = FlightDescriptor::new_path(vec!["sql".into(), "SELECT 1".into()]);
        assert!(check_descriptor(&path).is_ok());
        let command = Any {
            type_url: "type.googleapis.com/arrow.flight.protocol.sql.CommandStatementQuery".into(),
            value: Default::default(),
        };
        assert!(check_descriptor(&FlightDescriptor::new_cmd(command.encode_to_vec())).is_ok());
        assert!(check_ticket(&Ticket::new("SELECT 1")).is_err());
        assert!(check_ticket(&Ticket::new(command.encode_to_vec())).is_ok());
    }
}
