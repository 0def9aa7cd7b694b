//! The store's latency histogram bound once to each operation and outcome.
//!
//! Recording with an attribute slice makes the SDK sort, hash and look up the attribute set on
//! every measurement; the store's operations are a small fixed set, so each (operation,
//! outcome) pair is bound the first time it is recorded and later measurements are one atomic
//! update. An operation outside the set is recorded with its attributes, as before.

use std::sync::OnceLock;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{BoundHistogram, Histogram};

/// The operations the order store reports (`db.operation.name`).
const OPERATIONS: [&str; 9] = [
    "get_order",
    "create_order",
    "update_order_status",
    "list_orders",
    "events_after",
    "latest_event",
    "log_bounds",
    "ping",
    "prune",
];

/// `outcome` values, by index: a succeeded operation, a failed one.
const OUTCOMES: [&str; 2] = ["ok", "error"];

/// `orders.store.operation.duration`, bound per operation and outcome on first use.
pub(crate) struct StoreDurations {
    histogram: Histogram<f64>,
    bound: [[OnceLock<BoundHistogram<f64>>; OUTCOMES.len()]; OPERATIONS.len()],
}

impl StoreDurations {
    pub(crate) fn new(histogram: Histogram<f64>) -> Self {
        Self {
            histogram,
            bound: Default::default(),
        }
    }

    /// `operation` took `seconds`; `ok` tells whether it succeeded.
    pub(crate) fn record(&self, operation: &'static str, seconds: f64, ok: bool) {
        let outcome = usize::from(!ok);
        let attributes = || {
            [
                KeyValue::new("db.operation.name", operation),
                KeyValue::new("outcome", OUTCOMES[outcome]),
            ]
        };
        match OPERATIONS.iter().position(|known| *known == operation) {
            Some(index) => self.bound[index][outcome]
                .get_or_init(|| self.histogram.bind(&attributes()))
                .record(seconds),
            None => self.histogram.record(seconds, &attributes()),
        }
    }
}

impl std::fmt::Debug for StoreDurations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreDurations").finish_non_exhaustive()
    }
}
