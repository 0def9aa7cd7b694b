//! Where a `WatchOrders` stream starts, decided from its request.

use super::OrderId;

/// The starting point of a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchStart {
    /// Only events from the moment the stream opens.
    Live,
    /// The order's latest stored event (its current state), then live events.
    LatestOf(OrderId),
    /// Every stored event with a greater sequence, then live events.
    After(u64),
}

impl WatchStart {
    /// Decides the start from the request's `after_sequence` and optional order filter.
    pub fn new(after_sequence: u64, order: Option<&OrderId>) -> Self {
        match (after_sequence, order) {
            (0, None) => WatchStart::Live,
            (0, Some(order)) => WatchStart::LatestOf(order.clone()),
            (after, _) => WatchStart::After(after),
        }
    }
}
