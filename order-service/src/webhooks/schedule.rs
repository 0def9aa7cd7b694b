//! When a failed delivery is tried again: Standard Webhooks' schedule (immediately, then 5 s,
//! 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h and 24 h after the previous attempt), each wait
//! stretched by up to 10 % of jitter so endpoints that failed together do not retry together,
//! and never shorter than the receiver's `Retry-After`. After the last attempt the endpoint is
//! disabled.

use std::time::Duration;

/// The waits after attempts 1, 2, … of one event; its length + 1 is the number of attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule(Vec<Duration>);

impl Default for RetrySchedule {
    fn default() -> Self {
        const MIN: u64 = 60;
        const HOUR: u64 = 3600;
        RetrySchedule(
            [
                5,
                5 * MIN,
                30 * MIN,
                2 * HOUR,
                5 * HOUR,
                10 * HOUR,
                14 * HOUR,
                20 * HOUR,
                24 * HOUR,
            ]
            .into_iter()
            .map(Duration::from_secs)
            .collect(),
        )
    }
}

/// Longest `Retry-After` honoured; a larger one waits this long.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

impl RetrySchedule {
    /// A schedule of these waits (tests and deployments that want it shorter).
    pub fn new(waits: Vec<Duration>) -> Self {
        RetrySchedule(waits)
    }

    /// Parses a comma-separated list of durations (`5s,5m,30m`).
    pub fn parse(text: &str) -> Result<Self, String> {
        text.split(',')
            .map(|part| {
                humantime::parse_duration(part.trim()).map_err(|e| format!("{part:?}: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(RetrySchedule)
    }

    /// Attempts made of one event before the endpoint is disabled.
    pub fn attempts(&self) -> u32 {
        self.0.len() as u32 + 1
    }

    /// The wait after failed attempt `attempt` (1-based), with `jitter` in [0, 1) stretching
    /// it by up to 10 %, and at least `retry_after`; `None` when it was the last attempt.
    pub fn wait_after(
        &self,
        attempt: u32,
        jitter: f64,
        retry_after: Option<Duration>,
    ) -> Option<Duration> {
        let base = *self.0.get(attempt.checked_sub(1)? as usize)?;
        let stretched = base.mul_f64(1.0 + 0.1 * jitter.clamp(0.0, 1.0));
        Some(stretched.max(retry_after.unwrap_or_default().min(MAX_RETRY_AFTER)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_schedule_is_standard_webhooks() {
        let schedule = RetrySchedule::default();
        assert_eq!(schedule.attempts(), 10);
        assert_eq!(
            schedule.wait_after(1, 0.0, None),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            schedule.wait_after(9, 0.0, None),
            Some(Duration::from_secs(24 * 3600))
        );
        assert_eq!(schedule.wait_after(10, 0.0, None), None);
        assert_eq!(
            schedule.wait_after(1, 0.99, None).unwrap().as_millis(),
            5495
        );
        assert_eq!(
            schedule.wait_after(1, 0.0, Some(Duration::from_secs(60))),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            schedule.wait_after(1, 0.0, Some(Duration::from_secs(10 * 24 * 3600))),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(
            RetrySchedule::parse("1s, 2m").unwrap(),
            RetrySchedule::new(vec![Duration::from_secs(1), Duration::from_secs(120)])
        );
    }
}
