//! The `orders.v1.OrderService` handlers: decode and validate, call the store, encode. Auth,
//! deadlines, admission and logging happen in the layers in front of them.

use super::context::{deadline, principal};
use super::convert::{self, CreateRequest, UpdateRequest};
use super::watch::{EventStream, WatchOptions, open_watch};
use crate::domain::{Change, CreateOrder, Error, ListQuery, OrderId, UnixMicros, Write};
use crate::store::OrderStore;
use order_status_telemetry::Metrics;
use orders_proto::v1 as pb;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The service's handlers over one store.
pub struct OrdersApi {
    store: Arc<dyn OrderStore>,
    watch: WatchOptions,
    metrics: Metrics,
}

impl OrdersApi {
    /// Handlers over `store`; watch streams follow `watch`; replays are counted in `metrics`.
    pub fn new(store: Arc<dyn OrderStore>, watch: WatchOptions, metrics: Metrics) -> Self {
        OrdersApi {
            store,
            watch,
            metrics,
        }
    }
}

#[tonic::async_trait]
impl orders_proto::encoded::order_service_server::OrderService for OrdersApi {
    async fn create_order(
        &self,
        request: Request<pb::CreateOrderRequest>,
    ) -> Result<Response<pb::Order>, Status> {
        let (principal, deadline) = (principal(&request)?, deadline(&request));
        let create = CreateRequest::try_from(request.into_inner())?;
        let write = Write {
            principal,
            request_id: create.request_id,
            change: Change::Create(CreateOrder {
                order_id: OrderId::generate(),
                order: create.order,
            }),
            now: UnixMicros::now(),
            trace_parent: order_status_telemetry::propagation::current_traceparent(),
        };
        let outcome = self.store.write(write, deadline).await?;
        if outcome.replayed {
            self.metrics.record_idempotent_replay("CreateOrder");
            tracing::info!(order_id = %outcome.order.id, "idempotent replay of CreateOrder");
        }
        Ok(Response::new(outcome.order.into()))
    }

    async fn get_order(
        &self,
        request: Request<pb::GetOrderRequest>,
    ) -> Result<Response<pb::Order>, Status> {
        let id = convert::order_id(&request.get_ref().order_id)?;
        let order = self.store.order(&id).await?;
        Ok(Response::new(order.into()))
    }

    async fn list_orders(
        &self,
        request: Request<pb::ListOrdersRequest>,
    ) -> Result<Response<pb::ListOrdersResponse>, Status> {
        let query = ListQuery::try_from(request.into_inner())?;
        let page = self.store.list(&query).await?;
        Ok(Response::new(pb::ListOrdersResponse {
            next_page_token: page
                .next_after
                .map(|after| query.page_token(after))
                .unwrap_or_default(),
            orders: page.orders.into_iter().map(Into::into).collect(),
        }))
    }

    async fn update_order_status(
        &self,
        request: Request<pb::UpdateOrderStatusRequest>,
    ) -> Result<Response<pb::Order>, Status> {
        let (principal, deadline) = (principal(&request)?, deadline(&request));
        let update = UpdateRequest::try_from(request.into_inner())?;
        let write = Write {
            principal,
            request_id: update.request_id,
            change: Change::UpdateStatus(update.update),
            now: UnixMicros::now(),
            trace_parent: order_status_telemetry::propagation::current_traceparent(),
        };
        let outcome = self.store.write(write, deadline).await?;
        if outcome.replayed {
            self.metrics.record_idempotent_replay("UpdateOrderStatus");
            tracing::info!(order_id = %outcome.order.id, "idempotent replay of UpdateOrderStatus");
        }
        Ok(Response::new(outcome.order.into()))
    }

    type WatchOrdersStream = EventStream;

    async fn watch_orders(
        &self,
        request: Request<pb::WatchOrdersRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let request = request.into_inner();
        let filter = convert::watch_filter(&request.order_id)?;
        let opened = open_watch(
            Arc::clone(&self.store),
            &self.watch,
            filter,
            request.after_sequence,
        )
        .await
        .map_err(|error: WatchError| match error {
            WatchError::Store(error) => Status::from(error),
            WatchError::Refused(status) => status,
        })?;
        let mut response = Response::new(opened.events);
        response.metadata_mut().insert(
            orders_proto::WATCH_FROM_METADATA,
            tonic::metadata::MetadataValue::from(opened.watch_from),
        );
        Ok(response)
    }
}

/// Why a watch could not be opened.
pub(crate) enum WatchError {
    /// The store said no (unknown order, expired resume token, database down).
    Store(Error),
    /// The service said no (too many watchers, shutting down).
    Refused(Status),
}

impl From<Error> for WatchError {
    fn from(error: Error) -> Self {
        WatchError::Store(error)
    }
}
