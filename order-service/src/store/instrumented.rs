//! A store decorator that gives every store operation a span (a child of the call's server span)
//! and a latency measurement, whichever database is behind it.
//!
//! The span is made only when spans are exported: without an exporter nothing would read it
//! (the store logs nothing inside it that needs its own span id; lines carry the call's), and
//! making, entering and closing it cost GetOrder about a tenth of its instructions.

use super::{LiveReceiver, LogBounds, OrderStore};
use crate::domain::{
    Change, Error, ListQuery, Order, OrderEvent, OrderId, Page, Write, WriteOutcome,
};
use order_status_telemetry::Metrics;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

/// Wraps a store with spans and latency metrics.
pub struct InstrumentedStore {
    inner: Arc<dyn OrderStore>,
    /// `db.system.name` of the spans, e.g. `sqlite`.
    system: &'static str,
    metrics: Metrics,
    /// Whether each operation gets a span (when spans are exported).
    spans: bool,
}

impl InstrumentedStore {
    /// Observes `inner`, a `system` database, into `metrics`; with `spans`, every operation
    /// also gets a span.
    pub fn new(
        inner: Arc<dyn OrderStore>,
        system: &'static str,
        metrics: Metrics,
        spans: bool,
    ) -> Self {
        InstrumentedStore {
            inner,
            system,
            metrics,
            spans,
        }
    }

    async fn observe<T>(
        &self,
        operation: &'static str,
        work: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        let started = Instant::now();
        let (result, span) = if self.spans {
            let span = tracing::info_span!(
                "store",
                otel.name = operation,
                db.system.name = self.system,
                db.operation.name = operation,
                otel.status_code = tracing::field::Empty,
                error.type = tracing::field::Empty,
            );
            (work.instrument(span.clone()).await, Some(span))
        } else {
            (work.await, None)
        };
        // A refusal by the rules (not found, bad transition…) is the store working; only a
        // store that could not do its job counts as failed.
        let failure = match &result {
            Err(Error::Unavailable(_)) => Some("unavailable"),
            Err(Error::Internal(_)) => Some("internal"),
            _ => None,
        };
        if let (Some(kind), Some(span)) = (failure, &span) {
            span.record("otel.status_code", "ERROR");
            span.record("error.type", kind);
        }
        self.metrics
            .record_store_operation(operation, started.elapsed(), failure.is_none());
        result
    }
}

#[async_trait::async_trait]
impl OrderStore for InstrumentedStore {
    async fn write(&self, write: Write, deadline: Option<Instant>) -> Result<WriteOutcome, Error> {
        let operation = match write.change {
            Change::Create(_) => "create_order",
            Change::UpdateStatus(_) => "update_order_status",
        };
        self.observe(operation, self.inner.write(write, deadline))
            .await
    }

    async fn order(&self, id: &OrderId) -> Result<Order, Error> {
        self.observe("get_order", self.inner.order(id)).await
    }

    async fn list(&self, query: &ListQuery) -> Result<Page, Error> {
        self.observe("list_orders", self.inner.list(query)).await
    }

    async fn events_after(
        &self,
        after: u64,
        order: Option<&OrderId>,
        limit: usize,
    ) -> Result<Vec<OrderEvent>, Error> {
        self.observe("events_after", self.inner.events_after(after, order, limit))
            .await
    }

    async fn latest_event(&self, order: &OrderId) -> Result<Option<OrderEvent>, Error> {
        self.observe("latest_event", self.inner.latest_event(order))
            .await
    }

    async fn log_bounds(&self) -> Result<LogBounds, Error> {
        self.observe("log_bounds", self.inner.log_bounds()).await
    }

    fn subscribe(&self) -> LiveReceiver {
        self.inner.subscribe()
    }

    async fn ping(&self) -> Result<(), Error> {
        // Health checks every few seconds would drown the traces; measure them only.
        let started = Instant::now();
        let result = self.inner.ping().await;
        self.metrics
            .record_store_operation("ping", started.elapsed(), result.is_ok());
        result
    }

    async fn prune(&self) -> Result<(), Error> {
        self.observe("prune", self.inner.prune()).await
    }
}
