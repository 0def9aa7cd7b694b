//! Turning measured windows into the figures the benchmark prints: rate, p50/p99 latency,
//! server CPU per call, errors, and ratios between a target and its baseline.

use crate::load::LoadResult;
use std::fmt::Write as _;
use std::time::Duration;

/// The figures of one or more measured windows against one target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Figures {
    /// Successful calls per second.
    pub per_second: f64,
    /// Median latency of successful calls.
    pub p50: Duration,
    /// 99th percentile latency of successful calls.
    pub p99: Duration,
    /// Server CPU time per successful call, when it could be read.
    pub server_cpu_per_call: Option<Duration>,
    /// Client (load generator) CPU time per successful call, when it could be read.
    pub client_cpu_per_call: Option<Duration>,
    /// Database server CPU time per successful call, when it was asked for and could be read.
    pub database_cpu_per_call: Option<Duration>,
    /// Successful calls per WAL flush of the database server, when its flushes were read.
    pub calls_per_wal_flush: Option<f64>,
    /// Failed calls.
    pub errors: u64,
}

impl Figures {
    /// Computes the figures of `result` (sorting its latencies).
    pub fn of(result: &mut LoadResult) -> Self {
        result.latencies_us.sort_unstable();
        let per_call = |cpu: Option<Duration>| {
            cpu.filter(|_| result.ok > 0)
                .map(|cpu| cpu / u32::try_from(result.ok).unwrap_or(u32::MAX))
        };
        Figures {
            per_second: result.ok as f64 / result.window.as_secs_f64(),
            p50: percentile(&result.latencies_us, 0.50),
            p99: percentile(&result.latencies_us, 0.99),
            server_cpu_per_call: per_call(result.server_cpu),
            client_cpu_per_call: per_call(result.client_cpu),
            database_cpu_per_call: per_call(result.database_cpu),
            calls_per_wal_flush: result
                .wal_flushes
                .filter(|&flushes| flushes > 0)
                .map(|flushes| result.ok as f64 / flushes as f64),
            errors: result.error_count(),
        }
    }

    /// One line: rate, latencies, CPU per call, errors.
    pub fn line(&self, unit: &str) -> String {
        let mut line = format!(
            "{:>9.0} {unit}/s  p50 {:>7}  p99 {:>7}",
            self.per_second,
            millis(self.p50),
            millis(self.p99)
        );
        if let Some(cpu) = self.server_cpu_per_call {
            let _ = write!(line, "  server CPU {:>5.1} µs/call", micros(cpu));
        }
        if let Some(cpu) = self.database_cpu_per_call {
            let _ = write!(line, "  database CPU {:>5.1} µs/call", micros(cpu));
        }
        if let Some(cpu) = self.client_cpu_per_call {
            let _ = write!(line, "  client CPU {:>5.1} µs/call", micros(cpu));
        }
        if let Some(calls) = self.calls_per_wal_flush {
            let _ = write!(line, "  {calls:.1} calls/WAL flush");
        }
        let _ = write!(line, "  errors {}", self.errors);
        line
    }
}

/// The value at quantile `q` (0..=1) of ascending `sorted` microseconds (nearest rank).
pub fn percentile(sorted: &[u32], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    let index = rank.clamp(1, sorted.len()) - 1;
    Duration::from_micros(u64::from(sorted[index]))
}

/// `d` as milliseconds with two decimals and a unit.
pub fn millis(d: Duration) -> String {
    format!("{:.2}ms", d.as_secs_f64() * 1e3)
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Lines describing the errors of `result`, one per status code, with an example message.
pub fn error_lines(result: &LoadResult) -> Vec<String> {
    result
        .errors
        .iter()
        .map(|(code, tally)| format!("{code} x{}: {}", tally.count, tally.example))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let sorted: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&sorted, 0.50), Duration::from_micros(50));
        assert_eq!(percentile(&sorted, 0.99), Duration::from_micros(99));
        assert_eq!(percentile(&[7], 0.99), Duration::from_micros(7));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }

    #[test]
    fn figures_count_only_successful_calls() {
        let mut result = LoadResult {
            ok: 4,
            latencies_us: vec![400, 100, 300, 200],
            window: Duration::from_secs(2),
            server_cpu: Some(Duration::from_micros(80)),
            ..LoadResult::default()
        };
        result.errors.entry("Unavailable".into()).or_default().count = 3;
        let figures = Figures::of(&mut result);
        assert_eq!(figures.per_second, 2.0);
        assert_eq!(figures.p50, Duration::from_micros(200));
        assert_eq!(figures.p99, Duration::from_micros(400));
        assert_eq!(figures.server_cpu_per_call, Some(Duration::from_micros(20)));
        assert_eq!(figures.client_cpu_per_call, None);
        assert_eq!(figures.database_cpu_per_call, None);
        assert_eq!(figures.calls_per_wal_flush, None);
        assert_eq!(figures.errors, 3);
    }
}
