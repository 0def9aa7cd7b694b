//! Wall-clock instants as stored and sent: microseconds since the Unix epoch.

use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since 1970-01-01T00:00:00Z. Microseconds, because that is what both SQLite
/// integers and PostgreSQL `timestamptz` keep exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixMicros(pub i64);

impl UnixMicros {
    /// The current time.
    pub fn now() -> Self {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        UnixMicros(i64::try_from(since_epoch.as_micros()).unwrap_or(i64::MAX))
    }

    /// Whole seconds and the nanoseconds within the second, as `google.protobuf.Timestamp` wants.
    pub fn seconds_and_nanos(self) -> (i64, i32) {
        let seconds = self.0.div_euclid(1_000_000);
        let nanos = (self.0.rem_euclid(1_000_000) * 1_000) as i32;
        (seconds, nanos)
    }

    /// This instant moved back by `micros` (saturating).
    pub fn minus_micros(self, micros: i64) -> Self {
        UnixMicros(self.0.saturating_sub(micros))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_into_seconds_and_nanos_before_and_after_the_epoch() {
        assert_eq!(UnixMicros(1_500_000).seconds_and_nanos(), (1, 500_000_000));
        assert_eq!(UnixMicros(-1).seconds_and_nanos(), (-1, 999_999_000));
    }
}
