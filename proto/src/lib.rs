//! Rust types, clients and servers for the `orders.v1` API, generated from
//! `proto/orders/v1/orders.proto` and `webhooks.proto`, with the proto3 JSON mapping (serde) for every message, and the
//! encoded file descriptor set that server reflection serves.

/// The `orders.v1` package: messages, `order_service_client`/`_server` and
/// `webhook_service_client`/`_server`.
pub mod v1 {
    #![allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
    tonic::include_proto!("orders.v1");
    include!(concat!(env!("OUT_DIR"), "/orders.v1.serde.rs"));
}

mod timestamp;

pub mod encoded;

pub mod grpc_timeout;
pub mod reason;

/// Well-known protobuf types as the generated code uses them.
pub mod wkt {
    pub use crate::timestamp::Timestamp;
}

/// The encoded `FileDescriptorSet` of `orders.v1` (with its imports), for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/orders_descriptor.bin"));

/// The fully qualified name of the order service, as health checks and reflection name it.
pub const ORDER_SERVICE_NAME: &str = "orders.v1.OrderService";

/// The fully qualified name of the webhook service, as health checks and reflection name it.
pub const WEBHOOK_SERVICE_NAME: &str = "orders.v1.WebhookService";

/// The initial metadata of every `WatchOrders` response: the decimal sequence N such that the
/// stream delivers every matching event with a greater sequence (after the snapshot event of a
/// one-order watch started at 0). For a live watch it is the last sequence committed when the
/// stream opened: a client cut off before its first event resumes with `after_sequence = N`.
pub const WATCH_FROM_METADATA: &str = "orders-watch-from";
