//! The baseline server: tonic serving the same `orders.v1.OrderService` with canned answers,
//! no authentication, no storage, no logging — the cost of gRPC itself on this machine.

use crate::canned;
use orders_proto::v1 as pb;
use std::sync::atomic::{AtomicU64, Ordering};
use tonic::{Request, Response, Status};

/// Canned `orders.v1.OrderService`: GetOrder and CreateOrder answer at once with an order of
/// the benchmark's shape; the calls the benchmark does not load are refused as UNIMPLEMENTED.
#[derive(Debug, Default)]
pub struct BareOrders {
    /// Makes every created order's id distinct, as the real service's are.
    created: AtomicU64,
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

    type WatchOrdersStream = tokio_stream::Empty<Result<pb::OrderEvent, Status>>;

    async fn watch_orders(
        &self,
        _request: Request<pb::WatchOrdersRequest>,
    ) -> Result<Response<Self::WatchOrdersStream>, Status> {
        Err(not_measured("WatchOrders"))
    }
}
