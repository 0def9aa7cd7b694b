//! The `orders.v1.OrderService` routes, with `WatchOrders` answered here rather than by tonic's
//! generated server: its response body sends each event's gRPC frame as it was made, once, for
//! every stream ([`EncodedOrderEvent::grpc_frame`]). tonic's response encoder would copy every
//! event into a buffer of its own per stream first, which with thousands of streams cost more
//! than anything else the service does per delivery (a buffer and its reference count touched per
//! stream and event). The request side is tonic's (its decoder, its errors); every other method
//! goes to the generated server unchanged, and the layers in front see the same calls.

use super::orders::OrdersApi;
use super::watch::EventStream;
use bytes::{Bytes, BytesMut};
use futures::future::{BoxFuture, Either};
use http::header::{CONTENT_TYPE, HeaderValue};
use http_body::Frame;
use orders_proto::encoded::order_service_server::{OrderService, OrderServiceServer};
use orders_proto::encoded::{
    EncodedOrderEvent, GRPC_PREFIX_BYTES, ServerCodec, YIELD_THRESHOLD_BYTES as GATHER_BYTES,
};
use orders_proto::v1 as pb;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::body::Body;
use tonic::codec::{Codec, Streaming};
use tonic::server::NamedService;
use tonic::{Request, Status};
use tower::Service;

/// The path of `WatchOrders`.
const WATCH_ORDERS: &str = "/orders.v1.OrderService/WatchOrders";

/// `OrderService` with `WatchOrders` served by [`FramedEvents`]; the rest by tonic's server.
#[derive(Clone)]
pub struct OrderRoutes {
    generated: OrderServiceServer<OrdersApi>,
    api: Arc<OrdersApi>,
    limits: Limits,
}

/// The message size limits the generated server is given, kept for `WatchOrders`.
#[derive(Debug, Clone, Copy)]
struct Limits {
    decoding: usize,
    encoding: usize,
}

impl OrderRoutes {
    /// The routes of `api`, refusing requests over `max_decoding` bytes and never sending a
    /// message over `max_encoding`.
    pub fn new(api: OrdersApi, max_decoding: usize, max_encoding: usize) -> Self {
        let api = Arc::new(api);
        OrderRoutes {
            generated: OrderServiceServer::from_arc(Arc::clone(&api))
                .max_decoding_message_size(max_decoding)
                .max_encoding_message_size(max_encoding),
            api,
            limits: Limits {
                decoding: max_decoding,
                encoding: max_encoding,
            },
        }
    }
}

impl NamedService for OrderRoutes {
    const NAME: &'static str = <OrderServiceServer<OrdersApi> as NamedService>::NAME;
}

impl Service<http::Request<Body>> for OrderRoutes {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Either<
        <OrderServiceServer<OrdersApi> as Service<http::Request<Body>>>::Future,
        BoxFuture<'static, Result<http::Response<Body>, Infallible>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Service::<http::Request<Body>>::poll_ready(&mut self.generated, cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if request.uri().path() != WATCH_ORDERS {
            return Either::Left(self.generated.call(request));
        }
        let (api, limits) = (Arc::clone(&self.api), self.limits);
        Either::Right(Box::pin(async move {
            Ok(watch_orders(&api, request, limits)
                .await
                .unwrap_or_else(Status::into_http))
        }))
    }
}

/// Decodes the request as tonic would, runs the handler, and answers with [`FramedEvents`].
async fn watch_orders(
    api: &OrdersApi,
    request: http::Request<Body>,
    limits: Limits,
) -> Result<http::Response<Body>, Status> {
    if let Some(encoding) = request.headers().get("grpc-encoding")
        && encoding != "identity"
    {
        // tonic's answer for a compression it was not configured to accept, naming the one
        // it does.
        let mut status = Status::unimplemented(format!(
            "Content is compressed with `{}` which isn't supported",
            String::from_utf8_lossy(encoding.as_bytes())
        ));
        status.metadata_mut().insert(
            "grpc-accept-encoding",
            tonic::metadata::MetadataValue::from_static("identity"),
        );
        return Err(status);
    }
    let (parts, body) = request.into_parts();
    let mut messages = Streaming::new_request(
        ServerCodec::<EncodedOrderEvent, pb::WatchOrdersRequest>::default().decoder(),
        body,
        None,
        Some(limits.decoding),
    );
    let message = messages
        .message()
        .await?
        .ok_or_else(|| Status::internal("Missing request message."))?;
    let request = Request::from_http(http::Request::from_parts(parts, message));
    let (metadata, events, extensions) = api.watch_orders(request).await?.into_parts();
    let mut response = http::Response::new(Body::new(FramedEvents::new(events, limits.encoding)));
    *response.headers_mut() = metadata.into_headers();
    *response.extensions_mut() = extensions;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    Ok(response)
}

/// A `WatchOrders` response body: each event's shared gRPC frame as a DATA frame of its own (or
/// several ready at once, a page of a replay, gathered into one of up to tonic's
/// [`GATHER_BYTES`], as its encoder does), then the trailers of how the stream ended.
struct FramedEvents {
    events: EventStream,
    max_message: usize,
    /// How the stream ended, once it has: sent as trailers after the data before it.
    end: Option<Status>,
    /// The trailers were sent.
    finished: bool,
}

impl FramedEvents {
    fn new(events: EventStream, max_message: usize) -> Self {
        FramedEvents {
            events,
            max_message,
            end: None,
            finished: false,
        }
    }

    /// The next event's frame, `None` when nothing is ready now or the stream ended (`end`).
    fn poll_event(&mut self, cx: &mut Context<'_>) -> Option<Bytes> {
        if self.end.is_some() {
            return None;
        }
        match self.events.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(event))) => {
                let frame = event.grpc_frame();
                let message_len = frame.len() - GRPC_PREFIX_BYTES;
                if message_len > self.max_message {
                    // tonic's refusal of an oversized response message.
                    self.end = Some(Status::out_of_range(format!(
                        "Error, encoded message length too large: found {message_len} bytes, \
                         the limit is: {} bytes",
                        self.max_message
                    )));
                    return None;
                }
                Some(frame.clone())
            }
            Poll::Ready(Some(Err(status))) => {
                self.end = Some(status);
                None
            }
            Poll::Ready(None) => {
                self.end = Some(Status::ok(""));
                None
            }
            Poll::Pending => None,
        }
    }
}

impl http_body::Body for FramedEvents {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        if this.finished {
            return Poll::Ready(None);
        }
        if let Some(first) = this.poll_event(cx) {
            let Some(second) = this.poll_event(cx) else {
                // The usual case of a live watch: one event, its shared bytes as they are.
                return Poll::Ready(Some(Ok(Frame::data(first))));
            };
            let mut gathered =
                BytesMut::with_capacity(GATHER_BYTES.max(first.len() + second.len()));
            gathered.extend_from_slice(&first);
            gathered.extend_from_slice(&second);
            while gathered.len() < GATHER_BYTES {
                match this.poll_event(cx) {
                    Some(frame) => gathered.extend_from_slice(&frame),
                    None => break,
                }
            }
            return Poll::Ready(Some(Ok(Frame::data(gathered.freeze()))));
        }
        match this.end.take() {
            Some(status) => {
                this.finished = true;
                let mut trailers = http::HeaderMap::with_capacity(3);
                status.add_header(&mut trailers)?;
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
            None => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.finished
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tonic::Code;

    fn event(sequence: u64) -> EncodedOrderEvent {
        EncodedOrderEvent::new(&pb::OrderEvent {
            sequence,
            ..pb::OrderEvent::default()
        })
    }

    fn body_of(items: Vec<Result<EncodedOrderEvent, Status>>) -> FramedEvents {
        FramedEvents::new(Box::pin(tokio_stream::iter(items)), 1024)
    }

    /// The frames of `body` until its end: (data frames, trailers).
    async fn frames(mut body: FramedEvents) -> (Vec<Bytes>, http::HeaderMap) {
        let mut data = Vec::new();
        while let Some(frame) = body.frame().await {
            match frame.unwrap().into_data() {
                Ok(bytes) => data.push(bytes),
                Err(frame) => return (data, frame.into_trailers().unwrap()),
            }
        }
        panic!("the body ended without trailers");
    }

    /// The next frame of `body`, which must be its trailers.
    async fn next_trailers(body: &mut FramedEvents) -> http::HeaderMap {
        let frame = body.frame().await.expect("a frame").expect("not an error");
        frame.into_trailers().expect("trailers")
    }

    #[tokio::test]
    async fn a_lone_event_goes_out_as_its_shared_frame_without_a_copy() {
        let shared = event(7);
        let mut body = body_of(vec![Ok(shared.clone())]);
        // One event ready, then the end: the data frame is the event's own bytes.
        let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(frame.as_ptr(), shared.grpc_frame().as_ptr());
        assert_eq!(frame, *shared.grpc_frame());
        let trailers = next_trailers(&mut body).await;
        assert_eq!(trailers["grpc-status"], "0");
        assert!(http_body::Body::is_end_stream(&body));
        assert!(body.frame().await.is_none());
    }

    #[tokio::test]
    async fn events_ready_together_are_gathered_in_order_then_the_error_ends_the_stream() {
        let events: Vec<EncodedOrderEvent> = (1..=3000).map(event).collect();
        let mut items: Vec<_> = events.iter().cloned().map(Ok).collect();
        items.push(Err(Status::unavailable("shutting down")));
        let (data, trailers) = frames(body_of(items)).await;
        assert!(
            data.len() > 1,
            "more than one gathered frame for 3,000 events"
        );
        assert!(data.iter().all(|frame| frame.len() <= GATHER_BYTES + 64));
        let expected: Vec<u8> = events
            .iter()
            .flat_map(|event| event.grpc_frame().to_vec())
            .collect();
        assert_eq!(data.concat(), expected);
        let status = Status::from_header_map(&trailers).unwrap();
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(status.message(), "shutting down");
    }

    #[tokio::test]
    async fn an_event_over_the_message_limit_ends_the_stream_as_tonic_would() {
        let mut body = FramedEvents::new(Box::pin(tokio_stream::iter(vec![Ok(event(1))])), 1);
        let trailers = next_trailers(&mut body).await;
        let status = Status::from_header_map(&trailers).unwrap();
        assert_eq!(status.code(), Code::OutOfRange);
    }
}
