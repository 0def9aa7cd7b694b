//! The baseline server: tonic serving the same `orders.v1.OrderService` with canned answers,
//! no authentication, no storage, no logging — the cost of gRPC itself on this machine.
//! WatchOrders (all orders, live) is fanned out the plain tonic way: a tokio broadcast channel
//! carries one `pb::OrderEvent` per CreateOrder, and every stream encodes its own copy.

use crate::canned;
use orders_proto::v1 as pb;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::{Stream, StreamExt as _};
use tonic::{Request, Response, Status};

/// Events one watch stream may fall behind before it is ended with RESOURCE_EXHAUSTED (the
/// order-service's default watch buffer).
pub const WATCH_BUFFER: usize = 4096;

/// Canned `orders.v1.OrderService`: GetOrder and CreateOrder answer at once with an order of
/// the benchmark's shape, and every CreateOrder sends an `OrderEvent` of the real service's
/// shape to every open WatchOrders stream; the calls the benchmark does not load are refused
/// as UNIMPLEMENTED.
#[derive(Debug)]
pub struct BareOrders {
    /// Makes every created order's id distinct, as the real service's are.
    created: AtomicU64,
    /// The last event sequence handed out and the channel to the watchers, locked together so
    /// events are sent in sequence order and a new watcher knows where it starts.
    events: Mutex<EventLog>,
}

#[derive(Debug)]
struct EventLog {
    last_sequence: u64,
    watchers: broadcast::Sender<pb::OrderEvent>,
}

impl Default for BareOrders {
    fn default() -> Self {
        BareOrders {
            created: AtomicU64::new(0),
            events: Mutex::new(EventLog {
                last_sequence: 0,
                watchers: broadcast::channel(WATCH_BUFFER).0,
            }),
        }
    }
}

impl BareOrders {
    /// Sends the created `order` to every watcher (when there is one) as the next event.
    fn publish(&self, order: &pb::Order) {
        let mut log = self
            .events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if log.watchers.receiver_count() == 0 {
            // Nobody listens: GetOrder/CreateOrder baselines pay nothing for the fan-out.
            return;
        }
        log.last_sequence += 1;
        let event = pb::OrderEvent {
            sequence: log.last_sequence,
            order: Some(order.clone()),
            previous_status: pb::OrderStatus::Unspecified as i32,
            event_time: order.create_time,
        };
        // An error means the last watcher left meanwhile: nothing to deliver.
        let _ = log.watchers.send(event);
    }
}

fn not_measured(call: &str) -> Status {
    Status::unimplemented(format!(
        "bare-server is a benchmark baseline: it answers GetOrder and CreateOrder, not {call}"
    ))
}

#[tonic::async_trait]
impl pb::order_service_server::OrderService for BareOrders {
    async fn create_order(
        &self,
        request: Request<pb::CreateOrderRequest>,
    ) -> Result<Response<pb::Order>, Status> {
        let number = self.created.fetch_add(1, Ordering::Relaxed);
        let request = request.into_inner();
        let mut order = canned::pending_order(format!("bare-{number:016x}"), request.items);
        order.customer_id = request.customer_id;
        order.currency = request.currency;
        self.publish(&order);
        Ok(Response::new(order))
    }

    async fn get_order(
        &self,
        request: Request<pb::GetOrderRequest>,
    ) -> Result<Response<pb::Order>, Status> {
        let order_id = request.into_inner().order_id;
        Ok(Response::new(canned::pending_order(
            order_id,
            canned::line_items(),
        )))
    }

    async fn list_orders(
        &self,
        _request: Request<pb::ListOrdersRequest>,
    ) -> Result<Response<pb::ListOrdersResponse>, Status> {
        Err(not_measured("ListOrders"))
    }

    async fn update_order_status(
        &self,
        _request: Request<pb::UpdateOrderStatusRequest>,
    ) -> Result<Response<pb::Order>, Status> {
        Err(not_measured("UpdateOrderStatus"))
    }

    type WatchOrdersStream = Pin<Box<dyn Stream<Item = Result<pb::OrderEvent, Status>> + Send>>;

    async fn watch_orders(
        &self,
        request: Request<pb::WatchOrdersRequest>,
    ) -> Result<Response<Self::WatchOrdersStream>, Status> {
        let request = request.into_inner();
        if !request.order_id.is_empty() || request.after_sequence != 0 {
            return Err(not_measured(
                "WatchOrders of one order or from a sequence (only live watches of all orders)",
            ));
        }
        let (watch_from, receiver) = {
            let log = self
                .events
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            (log.last_sequence, log.watchers.subscribe())
        };
        let events = BroadcastStream::new(receiver).map(|received| match received {
            Ok(event) => Ok(event),
            Err(BroadcastStreamRecvError::Lagged(missed)) => Err(Status::resource_exhausted(
                format!("this watcher fell {missed} events behind; resume from its last sequence"),
            )),
        });
        // tonic ends the response with the first error's status, so a lagging watcher's stream
        // stops there.
        let mut response = Response::new(Box::pin(events) as Self::WatchOrdersStream);
        response.metadata_mut().insert(
            orders_proto::WATCH_FROM_METADATA,
            tonic::metadata::MetadataValue::from(watch_from),
        );
        Ok(response)
    }
}
