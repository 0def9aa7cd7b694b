//! The current state of recently written orders, in memory, so `GetOrder` for them needs no
//! SQLite query and no hop to a blocking thread.
//!
//! Only the writer puts orders here, right after their transaction commits and before the
//! caller hears back, so a cached order is never older than the database: the writer is the only
//! one that changes orders, and the file lock of [`super::SqliteStore::open`] keeps a second
//! process away. Readers that miss go to SQLite and do not fill the cache (a read that raced a
//! commit could otherwise put back an older state). Past its capacity the cache forgets the
//! orders it learned about first.

use crate::domain::{Order, OrderId};
use std::collections::{HashMap, VecDeque};
use std::sync::RwLock;

/// Recently written orders by id.
pub(super) struct OrderCache {
    capacity: usize,
    inner: RwLock<Entries>,
}

#[derive(Default)]
struct Entries {
    orders: HashMap<OrderId, Order>,
    /// Ids in the order they were first cached; the front is forgotten first.
    arrival: VecDeque<OrderId>,
}

impl OrderCache {
    /// A cache of at most `capacity` orders.
    pub(super) fn new(capacity: usize) -> Self {
        OrderCache {
            capacity,
            inner: RwLock::new(Entries::default()),
        }
    }

    /// The cached state of `id`.
    pub(super) fn get(&self, id: &OrderId) -> Option<Order> {
        self.inner
            .read()
            .expect("order cache lock poisoned")
            .orders
            .get(id)
            .cloned()
    }

    /// Records the committed state of an order (writer only).
    pub(super) fn put(&self, order: Order) {
        if self.capacity == 0 {
            return;
        }
        let mut entries = self.inner.write().expect("order cache lock poisoned");
        let id = order.id.clone();
        if entries.orders.insert(id.clone(), order).is_none() {
            entries.arrival.push_back(id);
            while entries.arrival.len() > self.capacity {
                if let Some(oldest) = entries.arrival.pop_front() {
                    entries.orders.remove(&oldest);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{NewOrder, RawLineItem, UnixMicros, Violations};

    fn order(id: &str, version: i64) -> Order {
        let mut violations = Violations::default();
        let item = RawLineItem {
            sku: "A",
            quantity: 1,
            unit_price_cents: 1,
        };
        let new = NewOrder::parse("c", [item].into_iter(), "EUR", &mut violations).unwrap();
        let mut order = new.into_order(OrderId::parse(id).unwrap(), UnixMicros(0));
        order.version = version;
        order
    }

    #[test]
    fn keeps_the_latest_state_and_forgets_the_oldest_orders_first() {
        let cache = OrderCache::new(2);
        cache.put(order("a", 1));
        cache.put(order("b", 1));
        cache.put(order("a", 2));
        let a = OrderId::parse("a").unwrap();
        assert_eq!(cache.get(&a).unwrap().version, 2);
        cache.put(order("c", 1));
        assert!(cache.get(&a).is_none(), "a arrived first and is forgotten");
        assert!(cache.get(&OrderId::parse("b").unwrap()).is_some());
        assert!(cache.get(&OrderId::parse("c").unwrap()).is_some());
    }
}
