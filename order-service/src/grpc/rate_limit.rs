//! Per-principal rate limits: each principal of the tokens file may make so many calls per second,
//! with bursts up to a size, and a call over that is refused before any work with
//! RESOURCE_EXHAUSTED (reason `RATE_LIMITED`), a `google.rpc.RetryInfo` saying when a call would
//! be allowed and a `google.rpc.QuotaFailure` naming the principal and its limit.
//!
//! The limit belongs to the principal, not to a credential: every token (or, with mutual TLS,
//! certificate) of one principal draws on the same allowance, and they must all name the same
//! limit. [`PrincipalLimits`] collects those from the tokens file; [`RateLimiter`] enforces them.
//!
//! The limiter is GCRA (the generic cell rate algorithm, a token bucket kept as one timestamp):
//! each principal has one atomic "theoretical arrival time", advanced by a compare-and-swap per
//! allowed call, so principals never contend with each other and one principal's calls contend
//! only on its own cache line. Its memory is fixed when the server starts: one cell per principal
//! of the tokens file, and nothing is added per call, per token string or per unknown caller (a
//! principal without a limit has no cell at all).

use orders_proto::reason;
use serde::Deserialize;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// Highest `per_second` accepted: one call per nanosecond, the limiter's resolution.
const MAX_PER_SECOND: f64 = 1e9;
/// Lowest `per_second` accepted: one call in 1000 s.
const MIN_PER_SECOND: f64 = 0.001;
/// Largest `burst` accepted. With [`MIN_PER_SECOND`] a full burst spans 10^18 ns (32 years), so
/// arrival times stay far inside the `u64` nanoseconds they are kept in.
const MAX_BURST: u32 = 1_000_000;

/// A `rate_limit` table as written in the tokens file: `{ per_second = 50, burst = 100 }`.
///
/// The numbers are read as they are written and checked by [`RateLimit::try_from`], so that a
/// wrong one is reported with the entry it belongs to rather than as a bare TOML type error.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitEntry {
    /// Calls per second allowed in the long run (fractions allowed: 0.5 is one every 2 s).
    per_second: f64,
    /// Calls allowed at once after an idle spell.
    burst: i64,
}

/// A checked rate limit: `per_second` calls per second on average, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    per_second: f64,
    burst: u32,
    /// Time between two calls at the sustained rate, in nanoseconds (at least 1).
    interval_nanos: u64,
}

impl RateLimit {
    /// A limit of `per_second` calls per second with bursts of `burst`, or what is wrong with it.
    pub fn new(per_second: f64, burst: i64) -> Result<RateLimit, String> {
        if !(per_second.is_finite() && per_second > 0.0) {
            return Err(format!(
                "rate_limit.per_second must be a positive number, not {per_second}"
            ));
        }
        if !(MIN_PER_SECOND..=MAX_PER_SECOND).contains(&per_second) {
            return Err(format!(
                "rate_limit.per_second must be from {MIN_PER_SECOND} to {MAX_PER_SECOND:e}, \
                 not {per_second}"
            ));
        }
        let burst = u32::try_from(burst)
            .ok()
            .filter(|burst| (1..=MAX_BURST).contains(burst))
            .ok_or_else(|| {
                format!(
                    "rate_limit.burst must be a whole number from 1 to {MAX_BURST}, not {burst}"
                )
            })?;
        // From 1 to 10^12 ns, by the bounds above.
        let interval_nanos = (1e9 / per_second).round().max(1.0) as u64;
        Ok(RateLimit {
            per_second,
            burst,
            interval_nanos,
        })
    }

    /// Calls per second allowed in the long run.
    pub fn per_second(&self) -> f64 {
        self.per_second
    }

    /// Calls allowed at once.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// How far ahead of now a principal's arrival time may run: `burst` intervals.
    fn tolerance_nanos(&self) -> u64 {
        self.interval_nanos.saturating_mul(u64::from(self.burst))
    }
}

impl TryFrom<&RateLimitEntry> for RateLimit {
    type Error = String;

    fn try_from(entry: &RateLimitEntry) -> Result<RateLimit, String> {
        RateLimit::new(entry.per_second, entry.burst)
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} requests per second, bursts of up to {}",
            self.per_second, self.burst
        )
    }
}

/// The limit of every principal, gathered entry by entry from the tokens file.
#[derive(Debug, Clone, Default)]
pub struct PrincipalLimits {
    /// Every principal seen, with its limit (`None`: unlimited), so that a second entry of the
    /// same principal can be checked against the first.
    limits: HashMap<String, Option<RateLimit>>,
}

impl PrincipalLimits {
    /// Records the limit of one entry of `principal`: its own `rate_limit` if it has one, else
    /// the file's `default`, else none. Every entry of one principal must come to the same
    /// limit, since they share one allowance; the error says what is wrong.
    pub fn assign(
        &mut self,
        principal: &str,
        own: Option<&RateLimitEntry>,
        default: Option<RateLimit>,
    ) -> Result<(), String> {
        let limit = match own {
            Some(entry) => Some(RateLimit::try_from(entry)?),
            None => default,
        };
        match self.limits.entry(principal.to_owned()) {
            Entry::Vacant(vacant) => {
                vacant.insert(limit);
                Ok(())
            }
            Entry::Occupied(earlier) if *earlier.get() == limit => Ok(()),
            Entry::Occupied(earlier) => Err(format!(
                "gives principal {principal} the rate limit {}, but an earlier entry gave it {}; \
                 every entry of one principal must have the same limit (they share it)",
                describe(limit),
                describe(*earlier.get()),
            )),
        }
    }

    /// The limit of `principal`, if it has one.
    pub fn of(&self, principal: &str) -> Option<RateLimit> {
        self.limits.get(principal).copied().flatten()
    }
}

fn describe(limit: Option<RateLimit>) -> String {
    limit.map_or_else(|| "none".to_owned(), |limit| format!("({limit})"))
}

/// Enforces [`PrincipalLimits`]: a fixed table of one GCRA cell per limited principal.
#[derive(Debug)]
pub struct RateLimiter {
    /// Arrival times are nanoseconds since this instant.
    origin: Instant,
    buckets: HashMap<Box<str>, Bucket>,
}

#[derive(Debug)]
struct Bucket {
    limit: RateLimit,
    cell: GcraCell,
}

/// A principal's theoretical arrival time: when its next call would be on schedule at the
/// sustained rate. On a cache line of its own, so that two busy principals' cells never share
/// one.
#[derive(Debug, Default)]
#[repr(align(64))]
struct GcraCell {
    arrival_nanos: AtomicU64,
}

/// A call refused because its principal is over its limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimited {
    /// The limit that was reached.
    pub limit: RateLimit,
    /// How long until a call of this principal would be allowed.
    pub retry_after: Duration,
}

impl RateLimiter {
    /// A limiter for `limits`, every principal starting with its full burst.
    pub fn new(limits: &PrincipalLimits) -> RateLimiter {
        RateLimiter::starting_at(limits, Instant::now())
    }

    /// Like [`RateLimiter::new`], with time counted from `origin` (for tests with their own
    /// clock); no `now` passed to [`RateLimiter::check_at`] may be earlier.
    pub fn starting_at(limits: &PrincipalLimits, origin: Instant) -> RateLimiter {
        let buckets = limits
            .limits
            .iter()
            .filter_map(|(principal, limit)| {
                let bucket = Bucket {
                    limit: (*limit)?,
                    cell: GcraCell::default(),
                };
                Some((principal.as_str().into(), bucket))
            })
            .collect();
        RateLimiter { origin, buckets }
    }

    /// Takes one call from `principal`'s allowance now, or says how long until it could.
    pub fn check(&self, principal: &str) -> Result<(), RateLimited> {
        self.check_at(principal, Instant::now())
    }

    /// Takes one call from `principal`'s allowance at `now`, or says how long until it could.
    /// A principal without a limit is always allowed.
    pub fn check_at(&self, principal: &str, now: Instant) -> Result<(), RateLimited> {
        let Some(bucket) = self.buckets.get(principal) else {
            return Ok(());
        };
        let now = u64::try_from(now.saturating_duration_since(self.origin).as_nanos())
            .unwrap_or(u64::MAX);
        bucket
            .cell
            .acquire(&bucket.limit, now)
            .map_err(|wait_nanos| RateLimited {
                limit: bucket.limit,
                retry_after: Duration::from_nanos(wait_nanos),
            })
    }
}

impl GcraCell {
    /// GCRA: a call at `now` moves the arrival time to `max(arrival, now) + interval`, and is
    /// allowed if that lands at most `burst` intervals ahead of `now`. A refused call changes
    /// nothing; it is told how long until the move would be allowed.
    fn acquire(&self, limit: &RateLimit, now: u64) -> Result<(), u64> {
        let tolerance = limit.tolerance_nanos();
        let mut arrival = self.arrival_nanos.load(Ordering::Relaxed);
        loop {
            let next = arrival.max(now).saturating_add(limit.interval_nanos);
            let allowed_from = next.saturating_sub(tolerance);
            if allowed_from > now {
                return Err(allowed_from - now);
            }
            // Relaxed: the cell guards no other memory; only its own value must not be lost.
            match self.arrival_nanos.compare_exchange_weak(
                arrival,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(current) => arrival = current,
            }
        }
    }
}

impl RateLimited {
    /// The status a call of `principal` is refused with: RESOURCE_EXHAUSTED with ErrorInfo
    /// `RATE_LIMITED`, `RetryInfo` and `QuotaFailure`.
    pub fn status(&self, principal: &str) -> Status {
        let metadata = HashMap::from([
            ("principal".to_owned(), principal.to_owned()),
            ("per_second".to_owned(), self.limit.per_second.to_string()),
            ("burst".to_owned(), self.limit.burst.to_string()),
        ]);
        let message = format!(
            "principal {principal} is over its rate limit ({}); retry in {}",
            self.limit,
            humantime::format_duration(round_up_to_millis(self.retry_after)),
        );
        let mut details = ErrorDetails::new();
        details
            .set_error_info(reason::RATE_LIMITED, reason::DOMAIN, metadata)
            .set_retry_info(Some(self.retry_after))
            .add_quota_failure_violation(principal, format!("rate limit of {}", self.limit));
        Status::with_error_details(Code::ResourceExhausted, message, details)
    }
}

/// For messages: a wait of 1.2 ms reads "2ms", never less than the real wait.
fn round_up_to_millis(duration: Duration) -> Duration {
    Duration::from_millis(u64::try_from(duration.as_micros().div_ceil(1000)).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    fn limits(pairs: &[(&str, Option<(f64, i64)>)]) -> PrincipalLimits {
        let mut limits = PrincipalLimits::default();
        for (principal, limit) in pairs {
            let limit = limit.map(|(per_second, burst)| RateLimit::new(per_second, burst).unwrap());
            limits.assign(principal, None, limit).unwrap();
        }
        limits
    }

    fn at(origin: Instant, millis: u64) -> Instant {
        origin + Duration::from_millis(millis)
    }

    #[test]
    fn a_burst_is_allowed_then_calls_come_back_at_the_sustained_rate() {
        let origin = Instant::now();
        let limiter = RateLimiter::starting_at(&limits(&[("p", Some((10.0, 3)))]), origin);
        for _ in 0..3 {
            limiter.check_at("p", at(origin, 0)).unwrap();
        }
        let refused = limiter.check_at("p", at(origin, 0)).unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_millis(100));
        // Halfway there: still refused, and told the rest of the wait.
        let refused = limiter.check_at("p", at(origin, 40)).unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_millis(60));
        // When it said: one call, and one only.
        limiter.check_at("p", at(origin, 100)).unwrap();
        assert_eq!(
            limiter
                .check_at("p", at(origin, 100))
                .unwrap_err()
                .retry_after,
            Duration::from_millis(100)
        );
        // After an idle spell as long as the burst takes to refill, the whole burst again.
        for _ in 0..3 {
            limiter.check_at("p", at(origin, 500)).unwrap();
        }
        assert!(limiter.check_at("p", at(origin, 500)).is_err());
    }

    #[test]
    fn refused_calls_do_not_push_the_next_allowed_call_back() {
        let origin = Instant::now();
        let limiter = RateLimiter::starting_at(&limits(&[("p", Some((1.0, 1)))]), origin);
        limiter.check_at("p", at(origin, 0)).unwrap();
        for millis in [1, 10, 500, 999] {
            let refused = limiter.check_at("p", at(origin, millis)).unwrap_err();
            assert_eq!(refused.retry_after, Duration::from_millis(1000 - millis));
        }
        limiter.check_at("p", at(origin, 1000)).unwrap();
    }

    #[test]
    fn principals_have_separate_allowances_and_the_unlimited_have_none() {
        let origin = Instant::now();
        let limiter = RateLimiter::starting_at(
            &limits(&[("a", Some((1.0, 1))), ("b", Some((1.0, 1))), ("free", None)]),
            origin,
        );
        limiter.check_at("a", at(origin, 0)).unwrap();
        assert!(limiter.check_at("a", at(origin, 0)).is_err());
        limiter.check_at("b", at(origin, 0)).unwrap();
        for _ in 0..10_000 {
            limiter.check_at("free", at(origin, 0)).unwrap();
            limiter.check_at("not-in-the-file", at(origin, 0)).unwrap();
        }
        // Only the limited principals have a cell; callers add none.
        assert_eq!(limiter.buckets.len(), 2);
    }

    #[test]
    fn concurrent_calls_of_one_principal_get_exactly_the_burst() {
        let origin = Instant::now();
        let limiter = RateLimiter::starting_at(&limits(&[("p", Some((1.0, 1000)))]), origin);
        let allowed = AtomicU32::new(0);
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for _ in 0..500 {
                        if limiter.check_at("p", origin).is_ok() {
                            allowed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(allowed.into_inner(), 1000);
    }

    #[test]
    fn the_extreme_limits_allowed_are_enforced_exactly() {
        let origin = Instant::now();
        let limiter = RateLimiter::starting_at(
            &limits(&[
                ("slow", Some((0.5, 1))),
                ("slowest", Some((MIN_PER_SECOND, 2))),
                ("widest", Some((MIN_PER_SECOND, MAX_BURST.into()))),
                ("fastest", Some((MAX_PER_SECOND, 1))),
            ]),
            origin,
        );
        limiter.check_at("slow", origin).unwrap();
        assert_eq!(
            limiter.check_at("slow", origin).unwrap_err().retry_after,
            Duration::from_secs(2)
        );
        limiter.check_at("slowest", origin).unwrap();
        limiter.check_at("slowest", origin).unwrap();
        assert_eq!(
            limiter.check_at("slowest", origin).unwrap_err().retry_after,
            Duration::from_secs(1000)
        );
        // A whole burst 32 years long, a century into the server's life.
        let late = origin + Duration::from_secs(100 * 365 * 24 * 3600);
        for _ in 0..MAX_BURST {
            limiter.check_at("widest", late).unwrap();
        }
        assert_eq!(
            limiter.check_at("widest", late).unwrap_err().retry_after,
            Duration::from_secs(1000)
        );
        limiter.check_at("fastest", origin).unwrap();
        assert_eq!(
            limiter.check_at("fastest", origin).unwrap_err().retry_after,
            Duration::from_nanos(1)
        );
        limiter
            .check_at("fastest", origin + Duration::from_nanos(1))
            .unwrap();
    }

    #[test]
    fn bad_limits_say_what_is_wrong() {
        for (per_second, burst, expected) in [
            (0.0, 10, "per_second must be a positive number"),
            (-5.0, 10, "per_second must be a positive number"),
            (f64::NAN, 10, "per_second must be a positive number"),
            (f64::INFINITY, 10, "per_second must be a positive number"),
            (2e9, 10, "per_second must be from 0.001 to 1e9"),
            (0.0009, 10, "per_second must be from 0.001 to 1e9"),
            (10.0, 0, "burst must be a whole number from 1 to 1000000"),
            (10.0, -1, "burst must be a whole number from 1"),
            (
                10.0,
                i64::from(MAX_BURST) + 1,
                "burst must be a whole number from 1",
            ),
        ] {
            let error = RateLimit::new(per_second, burst).unwrap_err();
            assert!(error.contains(expected), "{per_second}/{burst}: {error}");
        }
    }

    #[test]
    fn entries_of_one_principal_must_agree() {
        let ten = RateLimit::new(10.0, 10).ok();
        let mut limits = PrincipalLimits::default();
        limits.assign("p", None, ten).unwrap();
        limits.assign("p", None, ten).unwrap();
        let error = limits.assign("p", None, None).unwrap_err();
        assert!(error.contains("principal p"), "{error}");
        limits.assign("q", None, None).unwrap();
        assert!(limits.assign("q", None, ten).is_err());
        assert_eq!(limits.of("p"), ten);
        assert_eq!(limits.of("q"), None);
    }

    #[test]
    fn the_refusal_carries_retry_info_and_quota_failure() {
        let refused = RateLimited {
            limit: RateLimit::new(50.0, 100).unwrap(),
            retry_after: Duration::from_micros(1200),
        };
        let status = refused.status("billing");
        assert_eq!(status.code(), Code::ResourceExhausted);
        let details = status.get_error_details();
        let info = details.error_info().unwrap();
        assert_eq!(info.reason, reason::RATE_LIMITED);
        assert_eq!(info.domain, reason::DOMAIN);
        assert_eq!(info.metadata["principal"], "billing");
        assert_eq!(
            details.retry_info().unwrap().retry_delay,
            Some(Duration::from_micros(1200))
        );
        let violation = &details.quota_failure().unwrap().violations[0];
        assert_eq!(violation.subject, "billing");
        assert!(violation.description.contains("50 requests per second"));
        assert!(
            status.message().contains("retry in 2ms"),
            "{}",
            status.message()
        );
    }
}
