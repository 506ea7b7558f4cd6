//! The HTTP/2 body of a streamed gRPC answer, sent from [`Message`] pieces.
//!
//! Large pieces (column buffers) go to HTTP/2 as they are; small ones (prefixes, headers,
//! padding, short answers) are gathered into one frame, together with whatever following messages
//! are already waiting, so a one-batch answer such as an online lookup leaves as a single data
//! frame and its trailers. The stream ends with `grpc-status` trailers: `0`, or the error that
//! stopped it (the client then sees the error after the batches already sent).

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::BoxStream;
use http::{HeaderMap, HeaderValue};
use http_body::Frame;
use tonic::Status;

use super::messages::Message;

/// Pieces below this size are copied together rather than sent as frames of their own.
const SMALL: usize = 32 * 1024;

/// A gRPC response body over a stream of messages.
pub(super) struct MessageBody {
    messages: BoxStream<'static, Result<Message, Status>>,
    /// Pieces ready to send, in order.
    ready: VecDeque<Bytes>,
    /// Small pieces gathered since the last large one.
    small: BytesMut,
    trailers: Option<HeaderMap>,
    finished: bool,
}

/// The successful HTTP response that streams `messages`.
pub(super) fn response(
    messages: BoxStream<'static, Result<Message, Status>>,
) -> http::Response<tonic::body::Body> {
    let body = MessageBody {
        messages,
        ready: VecDeque::new(),
        small: BytesMut::new(),
        trailers: None,
        finished: false,
    };
    let mut response = http::Response::new(tonic::body::Body::new(body));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    response
}

impl MessageBody {
    fn push(&mut self, message: Message) {
        for piece in message {
            if piece.len() < SMALL {
                self.small.extend_from_slice(&piece);
                if self.small.len() >= SMALL {
                    self.flush();
                }
            } else {
                self.flush();
                self.ready.push_back(piece);
            }
        }
    }

    fn flush(&mut self) {
        if !self.small.is_empty() {
            self.ready.push_back(self.small.split().freeze());
        }
    }

    fn finish(&mut self, status: &Status) {
        self.flush();
        self.finished = true;
        let mut trailers = HeaderMap::new();
        if status.add_header(&mut trailers).is_err() {
            // Only a message that cannot be percent-encoded lands here; the code still can.
            trailers.clear();
            trailers.insert("grpc-status", HeaderValue::from(status.code() as i32));
        }
        self.trailers = Some(trailers);
    }
}

impl http_body::Body for MessageBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        loop {
            if let Some(piece) = this.ready.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(piece))));
            }
            if let Some(trailers) = this.trailers.take() {
                return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
            }
            if this.finished {
                return Poll::Ready(None);
            }
            match this.messages.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(message))) => this.push(message),
                Poll::Ready(Some(Err(status))) => this.finish(&status),
                Poll::Ready(None) => this.finish(&Status::ok("")),
                // Send what is gathered rather than wait with it.
                Poll::Pending if !this.small.is_empty() => this.flush(),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.finished && self.ready.is_empty() && self.trailers.is_none()
    }
}
