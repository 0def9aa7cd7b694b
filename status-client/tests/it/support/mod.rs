//! A scripted order-service for the client's tests: each RPC answers from a list of
//! prepared outcomes and records what it was sent, so a test sees exactly what went over the
//! wire on each attempt. Served on a real socket, with or without TLS.

#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use orders_proto::v1::order_service_server::{OrderService, OrderServiceServer};
use orders_proto::v1::{
    CreateOrderRequest, GetOrderRequest, ListOrdersRequest, ListOrdersResponse, Order, OrderEvent,
    UpdateOrderStatusRequest, WatchOrdersRequest,
};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status};

/// One prepared answer of a unary RPC.
pub type Outcome = Result<Order, Status>;
/// One prepared watch stream: events, then how it ends (None: the server keeps it open).
pub type WatchScript = (Vec<OrderEvent>, Option<Status>);

#[derive(Default)]
pub struct Script {
    pub creates: VecDeque<Outcome>,
    pub watches: VecDeque<WatchScript>,
    /// WatchOrders calls to refuse, by number (1 for the first call), and how; a refused call
    /// takes nothing from `watches`.
    pub watch_refusals: BTreeMap<usize, Status>,
    /// (request_id, grpc-timeout header) of every CreateOrder attempt.
    pub create_calls: Vec<(String, Option<String>)>,
    /// The metadata of every CreateOrder attempt (trace context, baggage, …).
    pub create_metadata: Vec<tonic::metadata::MetadataMap>,
    /// after_sequence of every WatchOrders call.
    pub watch_calls: Vec<u64>,
    /// `orders-watch-from` of successive WatchOrders responses (none sent once it runs out).
    pub watch_from: VecDeque<u64>,
}

#[derive(Clone, Default)]
pub struct Scripted(pub Arc<Mutex<Script>>);

#[tonic::async_trait]
impl OrderService for Scripted {
    async fn create_order(
        &self,
        request: Request<CreateOrderRequest>,
    ) -> Result<Response<Order>, Status> {
        let timeout = request
            .metadata()
            .get("grpc-timeout")
            .map(|v| v.to_str().unwrap().to_owned());
        let mut script = self.0.lock().unwrap();
        script
            .create_calls
            .push((request.get_ref().request_id.clone(), timeout));
        script.create_metadata.push(request.metadata().clone());
        script
            .creates
            .pop_front()
            .unwrap_or_else(|| Err(Status::internal("script exhausted")))
            .map(Response::new)
    }

    async fn get_order(&self, _: Request<GetOrderRequest>) -> Result<Response<Order>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn list_orders(
        &self,
        _: Request<ListOrdersRequest>,
    ) -> Result<Response<ListOrdersResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn update_order_status(
        &self,
        _: Request<UpdateOrderStatusRequest>,
    ) -> Result<Response<Order>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    type WatchOrdersStream = futures::stream::BoxStream<'static, Result<OrderEvent, Status>>;

    async fn watch_orders(
        &self,
        request: Request<WatchOrdersRequest>,
    ) -> Result<Response<Self::WatchOrdersStream>, Status> {
        let mut script = self.0.lock().unwrap();
        script.watch_calls.push(request.get_ref().after_sequence);
        let call = script.watch_calls.len();
        if let Some(refusal) = script.watch_refusals.remove(&call) {
            return Err(refusal);
        }
        let watch_from = script.watch_from.pop_front();
        let (events, end) = script.watches.pop_front().unwrap_or_default();
        let events = futures::stream::iter(events.into_iter().map(Ok));
        let stream = match end {
            Some(status) => events.chain(futures::stream::iter([Err(status)])).boxed(),
            None => events.chain(futures::stream::pending()).boxed(),
        };
        let mut response = Response::new(stream);
        if let Some(from) = watch_from {
            response.metadata_mut().insert(
                orders_proto::WATCH_FROM_METADATA,
                from.to_string().parse().unwrap(),
            );
        }
        Ok(response)
    }
}

/// Serves `script` on a free port of 127.0.0.1.
pub async fn start(script: Scripted) -> SocketAddr {
    start_on(script, "127.0.0.1:0".parse().unwrap()).await
}

/// Serves `script` on `addr` (e.g. a port a client has been failing to reach).
pub async fn start_on(script: Scripted, addr: SocketAddr) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        Server::builder()
            .add_service(OrderServiceServer::new(script))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    addr
}

/// Serves `script` over TLS with the PEM `certificate` and `key`.
pub async fn start_tls(script: Scripted, certificate: &[u8], key: &[u8]) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::builder()
        .tls_config(ServerTlsConfig::new().identity(Identity::from_pem(certificate, key)))
        .unwrap()
        .add_service(OrderServiceServer::new(script))
        .serve_with_incoming(TcpListenerStream::new(listener));
    tokio::spawn(server);
    addr
}
