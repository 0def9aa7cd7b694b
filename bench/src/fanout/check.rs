//! What the fan-out benchmark checks of its watchers: every watcher receives every event of the
//! benchmark's creates exactly once and in sequence order, and all watchers agree on which
//! sequence each create's event has. A lost, duplicated or reordered event is a bug.

use std::collections::HashMap;

/// The events one watch stream has received, checked as they arrive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamCheck {
    /// The sequence of the last event received (at first the stream's `orders-watch-from`:
    /// every event it delivers must be above it).
    last_sequence: u64,
    /// Events received.
    received: u64,
    /// Events whose sequence was not above the previous one's (duplicated or reordered).
    out_of_order: u64,
    /// Events no create of the benchmark made.
    foreign: u64,
}

impl StreamCheck {
    /// A stream that delivers the events after `watch_from`.
    pub fn new(watch_from: u64) -> Self {
        StreamCheck {
            last_sequence: watch_from,
            ..StreamCheck::default()
        }
    }

    /// Notes an event with `sequence`; `from_benchmark` says whether one of the benchmark's
    /// creates made it.
    pub fn record(&mut self, sequence: u64, from_benchmark: bool) {
        self.received += 1;
        if sequence <= self.last_sequence {
            self.out_of_order += 1;
        }
        self.last_sequence = self.last_sequence.max(sequence);
        if !from_benchmark {
            self.foreign += 1;
        }
    }

    /// Events received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// What is wrong with this stream when `expected` events should have reached it.
    pub fn problems(&self, expected: u64) -> StreamProblems {
        StreamProblems {
            missing: expected.saturating_sub(self.received),
            extra: self.received.saturating_sub(expected),
            out_of_order: self.out_of_order,
            foreign: self.foreign,
        }
    }
}

/// Counts of what went wrong on one or more streams; all zero when every event came exactly
/// once and in order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamProblems {
    /// Events that did not arrive.
    pub missing: u64,
    /// Events beyond the expected number (duplicates or strangers).
    pub extra: u64,
    /// Events not above the previous one's sequence.
    pub out_of_order: u64,
    /// Events no create of the benchmark made.
    pub foreign: u64,
}

impl StreamProblems {
    /// Whether nothing went wrong.
    pub fn is_clean(&self) -> bool {
        *self == StreamProblems::default()
    }

    /// Adds another stream's counts.
    pub fn add(&mut self, other: StreamProblems) {
        self.missing += other.missing;
        self.extra += other.extra;
        self.out_of_order += other.out_of_order;
        self.foreign += other.foreign;
    }
}

/// The sequence each create's event has, as the first watcher to receive it saw it; every
/// other watcher must see the same.
#[derive(Debug, Clone, Default)]
pub struct SequenceAgreement {
    sequences: HashMap<u32, u64>,
    disagreements: u64,
}

impl SequenceAgreement {
    /// Notes that a watcher received create `create`'s event as `sequence`.
    pub fn observe(&mut self, create: u32, sequence: u64) {
        let first = *self.sequences.entry(create).or_insert(sequence);
        if first != sequence {
            self.disagreements += 1;
        }
    }

    /// Deliveries whose sequence differed from the first one seen for the same create.
    pub fn disagreements(&self) -> u64 {
        self.disagreements
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fed(watch_from: u64, sequences: &[u64]) -> StreamCheck {
        let mut check = StreamCheck::new(watch_from);
        for &sequence in sequences {
            check.record(sequence, true);
        }
        check
    }

    #[test]
    fn every_event_once_in_order_is_clean() {
        assert!(fed(10, &[11, 12, 15, 16]).problems(4).is_clean());
        // Sequences may have gaps (events of other orders' watchers filter away elsewhere).
        assert!(fed(0, &[3, 9]).problems(2).is_clean());
    }

    #[test]
    fn a_lost_event_is_missing() {
        let problems = fed(10, &[11, 13]).problems(3);
        assert_eq!(problems.missing, 1);
        assert!(!problems.is_clean());
    }

    #[test]
    fn a_duplicate_is_out_of_order_and_extra() {
        let problems = fed(10, &[11, 12, 12, 13]).problems(3);
        assert_eq!(problems.out_of_order, 1);
        assert_eq!(problems.extra, 1);
    }

    #[test]
    fn a_reordering_is_out_of_order() {
        assert_eq!(fed(10, &[12, 11, 13]).problems(3).out_of_order, 1);
    }

    #[test]
    fn an_event_at_or_before_the_watch_start_is_out_of_order() {
        assert_eq!(fed(10, &[10, 11]).problems(2).out_of_order, 1);
    }

    #[test]
    fn a_stranger_is_foreign() {
        let mut check = StreamCheck::new(0);
        check.record(1, true);
        check.record(2, false);
        let problems = check.problems(1);
        assert_eq!(problems.foreign, 1);
        assert_eq!(problems.extra, 1);
    }

    #[test]
    fn watchers_must_agree_on_each_creates_sequence() {
        let mut agreement = SequenceAgreement::default();
        agreement.observe(1, 100);
        agreement.observe(1, 100);
        agreement.observe(2, 101);
        assert_eq!(agreement.disagreements(), 0);
        agreement.observe(2, 102);
        assert_eq!(agreement.disagreements(), 1);
    }
}
