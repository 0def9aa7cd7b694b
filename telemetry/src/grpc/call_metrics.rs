//! The call metrics of each gRPC method, bound once to their attributes.
//!
//! Recording with an attribute slice makes the SDK sort, hash and look up the attribute set on
//! every measurement, and the call first had to build that slice (owned strings for the
//! service and method names). A method's instruments are instead bound to
//! `rpc.system`/`rpc.service`/`rpc.method` (and, for durations, each status code) the first
//! time the method is called and kept in a small table shared by all calls of a layer; a call
//! then records with one atomic update per instrument.
//!
//! Any path can be called, so the table holds at most [`MAX_METHODS`] methods; the instruments
//! of a call to any other are bound for that call alone.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{BoundHistogram, BoundUpDownCounter, Histogram, UpDownCounter};
use tonic::Code;

use super::call::{Side, split_path};
use crate::metrics::Metrics;

/// Methods whose bound instruments are kept (the project's services have fewer than 20).
const MAX_METHODS: usize = 256;

/// gRPC status codes 0 to 16.
const CODES: usize = 17;

/// The bound instruments of one method on one side.
pub(crate) struct MethodMetrics {
    /// `service/method`, as the access line names the call.
    path: Box<str>,
    /// Where `service` ends in `path`.
    service_len: usize,
    /// `rpc.system`, `rpc.service`, `rpc.method`.
    attributes: [KeyValue; 3],
    active: BoundUpDownCounter<i64>,
    duration: Histogram<f64>,
    durations: [OnceLock<BoundHistogram<f64>>; CODES],
}

impl MethodMetrics {
    fn new(
        active: &UpDownCounter<i64>,
        duration: &Histogram<f64>,
        service: &str,
        method: &str,
    ) -> Self {
        let attributes = [
            KeyValue::new("rpc.system", "grpc"),
            KeyValue::new("rpc.service", service.to_owned()),
            KeyValue::new("rpc.method", method.to_owned()),
        ];
        Self {
            path: format!("{service}/{method}").into_boxed_str(),
            service_len: service.len(),
            active: active.bind(&attributes),
            duration: duration.clone(),
            durations: Default::default(),
            attributes,
        }
    }

    /// `service/method`.
    pub(crate) fn path(&self) -> &str {
        &self.path
    }

    /// The service, e.g. `orders.v1.OrderService`.
    pub(crate) fn service(&self) -> &str {
        &self.path[..self.service_len]
    }

    /// The method, e.g. `GetOrder`.
    pub(crate) fn method(&self) -> &str {
        &self.path[self.service_len + 1..]
    }

    /// A call started.
    pub(crate) fn started(&self) {
        self.active.add(1);
    }

    /// A call that took `seconds` ended with `code`.
    pub(crate) fn finished(&self, code: Code, seconds: f64) {
        self.active.add(-1);
        let Some(slot) = self.durations.get(code as usize) else {
            return;
        };
        slot.get_or_init(|| {
            let [system, service, method] = self.attributes.clone();
            self.duration.bind(&[
                system,
                service,
                method,
                KeyValue::new("rpc.grpc.status_code", code as i64),
            ])
        })
        .record(seconds);
    }
}

/// The [`MethodMetrics`] of the methods a layer has seen.
pub(crate) struct MethodTable {
    active: UpDownCounter<i64>,
    duration: Histogram<f64>,
    methods: RwLock<HashMap<Box<str>, Arc<MethodMetrics>>>,
}

impl MethodTable {
    /// The table of `side`'s instruments in `metrics`.
    pub(crate) fn new(metrics: &Metrics, side: Side) -> Self {
        let (active, duration) = match side {
            Side::Server => (&metrics.server_active, &metrics.server_duration),
            Side::Client => (&metrics.client_active, &metrics.client_duration),
        };
        Self {
            active: active.clone(),
            duration: duration.clone(),
            methods: RwLock::new(HashMap::new()),
        }
    }

    /// The instruments of the call to `path` (`/service/method`).
    pub(crate) fn method(&self, path: &str) -> Arc<MethodMetrics> {
        if let Some(found) = self
            .methods
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(path)
        {
            return Arc::clone(found);
        }
        let (service, method) = split_path(path);
        let made = Arc::new(MethodMetrics::new(
            &self.active,
            &self.duration,
            service,
            method,
        ));
        let mut methods = self
            .methods
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(found) = methods.get(path) {
            return Arc::clone(found);
        }
        if methods.len() < MAX_METHODS {
            methods.insert(path.into(), Arc::clone(&made));
        }
        made
    }
}

impl std::fmt::Debug for MethodTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MethodTable").finish_non_exhaustive()
    }
}
