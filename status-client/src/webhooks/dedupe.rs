//! The ids of the deliveries a receiver printed most recently, to drop repeats of them, in
//! bounded memory: the oldest id is forgotten when a new one would exceed the capacity.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

/// The last `capacity` distinct ids seen, oldest first out.
#[derive(Debug)]
pub(crate) struct RecentIds {
    set: HashSet<Arc<str>>,
    order: VecDeque<Arc<str>>,
    capacity: usize,
}

impl RecentIds {
    /// Remembers up to `capacity` ids (0: none, every delivery is printed).
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            set: HashSet::new(),
            order: VecDeque::new(),
            capacity,
        }
    }

    pub(crate) fn contains(&self, id: &str) -> bool {
        self.set.contains(id)
    }

    /// Adds `id`, forgetting the oldest one when full; an id already known changes nothing.
    pub(crate) fn insert(&mut self, id: &str) {
        if self.capacity == 0 || self.set.contains(id) {
            return;
        }
        if self.order.len() == self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.set.remove(&oldest);
        }
        let id: Arc<str> = Arc::from(id);
        self.set.insert(Arc::clone(&id));
        self.order.push_back(id);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_id_is_forgotten_first() {
        let mut ids = RecentIds::new(3);
        for id in ["a", "b", "c", "b"] {
            ids.insert(id);
        }
        assert_eq!(ids.len(), 3);
        ids.insert("d");
        assert!(!ids.contains("a"), "a was the oldest");
        assert!(ids.contains("b") && ids.contains("c") && ids.contains("d"));
        assert_eq!(ids.len(), 3);
    }

    #[test]
    fn capacity_zero_remembers_nothing() {
        let mut ids = RecentIds::new(0);
        ids.insert("a");
        assert!(!ids.contains("a"));
        assert_eq!(ids.len(), 0);
    }

    #[test]
    fn memory_stays_bounded_over_many_ids() {
        let mut ids = RecentIds::new(1000);
        for n in 0..50_000 {
            ids.insert(&format!("evt_{n}"));
        }
        assert_eq!(ids.len(), 1000);
        assert_eq!(ids.set.len(), 1000);
        assert!(ids.contains("evt_49999") && !ids.contains("evt_48999"));
    }
}
