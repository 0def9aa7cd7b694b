//! The connections that carry `serve`'s upstream watch streams, kept apart from the one that
//! carries its unary calls.
//!
//! order-service allows a bounded number of concurrent streams per HTTP/2 connection (1,024
//! today); a stream beyond it waits for a free slot. When watches and unary calls shared one
//! connection, 1,024 open event streams made every `GET` wait until its deadline. Here each
//! [`Client`] of the pool owns its own connection per replica and carries at most
//! `streams_per_connection` watch streams; one more opens another `Client`. The gateway's
//! unary calls go through a separate `Client` whose connections never carry a watch.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use order_status_telemetry::Metrics;
use orders_proto::v1::{OrderEvent, WatchOrdersRequest};
use tonic::metadata::AsciiMetadataValue;

use super::errors::ApiError;
use crate::client::{CallOptions, Client};
use crate::error::ClientError;
use crate::settings::Settings;
use crate::watch::OrderEventStream;

/// Clients for watch streams, each carrying a bounded number of them.
#[derive(Debug)]
pub(crate) struct WatchPool {
    settings: Settings,
    metrics: Metrics,
    streams_per_connection: usize,
    connections: Mutex<Vec<Arc<WatchConnection>>>,
}

#[derive(Debug)]
struct WatchConnection {
    client: Client,
    /// Watch streams open on this client (each one stream at a time, also while resuming).
    streams: AtomicUsize,
}

/// One watch stream of the pool; its slot is given back when it is dropped.
pub(crate) struct PooledStream {
    stream: OrderEventStream,
    _lease: Lease,
}

struct Lease(Arc<WatchConnection>);

impl Drop for Lease {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::AcqRel);
    }
}

impl WatchPool {
    /// A pool whose clients are built from `settings` (validated by the caller), at most
    /// `streams_per_connection` streams on each.
    pub(crate) fn new(settings: Settings, metrics: Metrics, streams_per_connection: usize) -> Self {
        Self {
            settings,
            metrics,
            streams_per_connection: streams_per_connection.max(1),
            connections: Mutex::new(Vec::new()),
        }
    }

    /// Opens a watch of `order_id` (empty: all orders) after `after_sequence` as the holder of
    /// `authorization`, waiting at most `timeout` for the first stream to open (see
    /// [`Client::open_watch`]).
    pub(crate) async fn open(
        &self,
        order_id: &str,
        after_sequence: u64,
        authorization: Option<&AsciiMetadataValue>,
        timeout: Duration,
    ) -> Result<PooledStream, ApiError> {
        let (client, lease) = self.lease()?;
        let mut options = CallOptions::new().timeout(timeout);
        if let Some(value) = authorization {
            options = options.authorization(value.clone());
        }
        let request = WatchOrdersRequest {
            order_id: order_id.to_owned(),
            after_sequence,
        };
        let stream = client.open_watch(request, options).await?;
        Ok(PooledStream {
            stream,
            _lease: lease,
        })
    }

    /// A slot on the first client with room, packing streams onto the oldest connections.
    fn lease(&self) -> Result<(Client, Lease), ApiError> {
        let mut connections = self
            .connections
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let with_room = connections
            .iter()
            .find(|c| c.streams.load(Ordering::Acquire) < self.streams_per_connection)
            .cloned();
        let connection = match with_room {
            Some(connection) => connection,
            None => {
                let client = Client::with_metrics(self.settings.clone(), self.metrics.clone())
                    .map_err(|error| {
                        ApiError::local(
                            tonic::Code::Internal,
                            format!("cannot create a watch client: {error}"),
                            "WATCH_CLIENT_FAILED",
                        )
                    })?;
                let connection = Arc::new(WatchConnection {
                    client,
                    streams: AtomicUsize::new(0),
                });
                connections.push(connection.clone());
                tracing::debug!(
                    connections = connections.len(),
                    "watch streams fill the existing connections; opening another"
                );
                connection
            }
        };
        connection.streams.fetch_add(1, Ordering::AcqRel);
        Ok((connection.client.clone(), Lease(connection)))
    }
}

impl PooledStream {
    /// See [`OrderEventStream::resume_point`]: every matching event after it is still to come
    /// (0 while unknown).
    pub(crate) fn resume_point(&self) -> u64 {
        self.stream.resume_point()
    }
}

impl Stream for PooledStream {
    type Item = Result<OrderEvent, ClientError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.stream.poll_next_unpin(cx)
    }
}
