//! When and how soon a failed attempt is tried again, in the spirit of gRFC A6: exponential
//! backoff with full jitter, a short list of retryable codes (refined by the server's ErrorInfo
//! reason), server pushback, and a token-bucket throttle shared by all calls of one client.
//!
//! The attempt limit and the throttle ration requests a server received. An attempt that never
//! reached one (no connection could be made) is repeated with this backoff until the call's
//! deadline instead, as gRPC's wait-for-ready does: nothing was processed, and a server that is
//! restarting is back within seconds.

use std::sync::Mutex;
use std::time::Duration;

use orders_proto::reason;
use rand::Rng;
use tonic::Code;

use crate::error::ClientError;
use crate::settings::SettingsError;

/// Backoff and attempt limits for one logical call.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts that reach a server, the first included (gRFC A6 caps this at 5). Attempts
    /// that reach none are not counted: they are repeated until the deadline.
    pub max_attempts: u32,
    /// Upper bound of the first backoff.
    pub initial_backoff: Duration,
    /// Upper bound of any backoff.
    pub max_backoff: Duration,
    /// Growth of the upper bound per retry.
    pub multiplier: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(3),
            multiplier: 2.0,
        }
    }
}

impl RetryPolicy {
    /// A policy that never sends a request again once a server has received it (an attempt
    /// that reached no server is still repeated until the deadline).
    pub fn no_retries() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    pub(crate) fn validate(&self) -> Result<(), SettingsError> {
        if self.max_attempts == 0 {
            return Err(SettingsError::InvalidRetry(
                "max_attempts must be at least 1".into(),
            ));
        }
        if self.initial_backoff.is_zero() || self.max_backoff < self.initial_backoff {
            return Err(SettingsError::InvalidRetry(
                "backoffs must be positive, and max_backoff >= initial_backoff".into(),
            ));
        }
        if !(self.multiplier.is_finite() && self.multiplier >= 1.0) {
            return Err(SettingsError::InvalidRetry(
                "multiplier must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// The upper bound of the wait before retry number `retry` (1 for the first retry).
    pub fn backoff_ceiling(&self, retry: u32) -> Duration {
        let exponent = i32::try_from(retry.saturating_sub(1)).unwrap_or(i32::MAX);
        let ceiling = self.initial_backoff.as_secs_f64() * self.multiplier.powi(exponent);
        Duration::from_secs_f64(ceiling.min(self.max_backoff.as_secs_f64()))
    }

    /// The wait before retry number `retry`: uniformly random below the ceiling ("full
    /// jitter"), so that clients failing together do not come back together.
    pub fn backoff(&self, retry: u32) -> Duration {
        let ceiling = self.backoff_ceiling(retry);
        if ceiling.is_zero() {
            return ceiling;
        }
        rand::rng().random_range(Duration::ZERO..=ceiling)
    }
}

/// Whether an attempt that failed with `error` may be tried again at all.
///
/// `UNAVAILABLE` means the request was not processed (or a replica went away) and is always
/// worth another attempt; `RESOURCE_EXHAUSTED` and `ABORTED` only when the server's reason says
/// a retry helps (for `RATE_LIMITED`, after the server's `RetryInfo` delay: see
/// [`is_rate_limited`]). Every other code is final: the same request would fail the same way.
pub fn is_retryable(error: &ClientError) -> bool {
    match error.code() {
        Code::Unavailable => true,
        Code::ResourceExhausted => matches!(
            error.reason(),
            Some(reason::OVERLOADED | reason::RATE_LIMITED)
        ),
        Code::Aborted => error.reason() == Some(reason::REQUEST_IN_PROGRESS),
        _ => false,
    }
}

/// Whether `error` is the server refusing the caller's principal for its rate limit. Such a
/// call is tried again after the `RetryInfo` delay, if that fits in its deadline, and fails at
/// once otherwise. The refusal is the server working as configured, not failing, so it neither
/// takes nor is stopped by the retry throttle's tokens; it does count as an attempt.
pub fn is_rate_limited(error: &ClientError) -> bool {
    error.code() == Code::ResourceExhausted && error.reason() == Some(reason::RATE_LIMITED)
}

/// Whether a watch stream that ended with `error` should be resumed from its last sequence.
pub fn is_resumable_watch_error(error: &ClientError) -> bool {
    is_retryable(error)
        || (error.code() == Code::ResourceExhausted
            && error.reason() == Some(reason::WATCHER_TOO_SLOW))
}

/// Settings of the retry throttle (gRFC A6 `retryThrottling`).
#[derive(Debug, Clone, PartialEq)]
pub struct ThrottleSettings {
    /// Size of the bucket; retries stop while it holds half of this or less.
    pub max_tokens: f64,
    /// Tokens given back by each successful attempt.
    pub token_ratio: f64,
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        Self {
            max_tokens: 10.0,
            token_ratio: 0.1,
        }
    }
}

impl ThrottleSettings {
    pub(crate) fn validate(&self) -> Result<(), SettingsError> {
        if !(self.max_tokens.is_finite() && self.max_tokens > 0.0 && self.max_tokens <= 1000.0) {
            return Err(SettingsError::InvalidRetry(
                "max_tokens must be in (0, 1000]".into(),
            ));
        }
        if !(self.token_ratio.is_finite() && self.token_ratio > 0.0) {
            return Err(SettingsError::InvalidRetry(
                "token_ratio must be positive".into(),
            ));
        }
        Ok(())
    }
}

/// The token bucket of gRFC A6: every failed attempt takes a token, every success gives back
/// `token_ratio`; retries are allowed only while more than half the bucket is left. One per
/// client, so a server that fails most calls sees mostly first attempts, not a storm of retries.
#[derive(Debug)]
pub struct RetryThrottle {
    settings: ThrottleSettings,
    tokens: Mutex<f64>,
}

impl RetryThrottle {
    /// A full bucket.
    pub fn new(settings: ThrottleSettings) -> Self {
        Self {
            tokens: Mutex::new(settings.max_tokens),
            settings,
        }
    }

    /// Records a failed attempt (one with a retryable code).
    pub fn record_failure(&self) {
        let mut tokens = self.lock();
        *tokens = (*tokens - 1.0).max(0.0);
    }

    /// Records a successful attempt.
    pub fn record_success(&self) {
        let mut tokens = self.lock();
        *tokens = (*tokens + self.settings.token_ratio).min(self.settings.max_tokens);
    }

    /// Whether a retry may be sent now.
    pub fn allows_retry(&self) -> bool {
        *self.lock() > self.settings.max_tokens / 2.0
    }

    /// Tokens currently in the bucket.
    pub fn tokens(&self) -> f64 {
        *self.lock()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, f64> {
        // The value is a plain number: a panic elsewhere cannot leave it half-written.
        self.tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The wait the server asked for in `grpc-retry-pushback-ms`: `Some(Ok(d))` to wait `d`,
/// `Some(Err(()))` when the server said not to retry (a negative or malformed value), `None`
/// when it said nothing.
pub fn pushback(metadata: &tonic::metadata::MetadataMap) -> Option<Result<Duration, ()>> {
    let value = metadata.get("grpc-retry-pushback-ms")?;
    Some(
        value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_millis)
            .ok_or(()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let policy = RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(350),
            multiplier: 2.0,
        };
        assert_eq!(policy.backoff_ceiling(1), Duration::from_millis(100));
        assert_eq!(policy.backoff_ceiling(2), Duration::from_millis(200));
        assert_eq!(policy.backoff_ceiling(3), Duration::from_millis(350));
        for retry in 1..10 {
            assert!(policy.backoff(retry) <= policy.backoff_ceiling(retry));
        }
    }

    #[test]
    fn throttle_stops_retries_at_half_the_bucket_and_recovers_with_successes() {
        let throttle = RetryThrottle::new(ThrottleSettings::default());
        for _ in 0..4 {
            throttle.record_failure();
        }
        assert!(throttle.allows_retry(), "6 of 10 tokens left");
        throttle.record_failure();
        assert!(
            !throttle.allows_retry(),
            "5 of 10 tokens left is not more than half"
        );
        throttle.record_success();
        assert!(throttle.allows_retry());
    }

    #[test]
    fn only_codes_where_retrying_helps_are_retried() {
        let with = |code, reason: Option<&str>| ClientError::synthetic(code, "x", reason);
        assert!(is_retryable(&with(Code::Unavailable, None)));
        assert!(is_retryable(&with(
            Code::ResourceExhausted,
            Some(reason::OVERLOADED)
        )));
        assert!(!is_retryable(&with(Code::ResourceExhausted, None)));
        let rate_limited = with(Code::ResourceExhausted, Some(reason::RATE_LIMITED));
        assert!(is_retryable(&rate_limited) && is_rate_limited(&rate_limited));
        assert!(!is_rate_limited(&with(
            Code::ResourceExhausted,
            Some(reason::OVERLOADED)
        )));
        assert!(is_retryable(&with(
            Code::Aborted,
            Some(reason::REQUEST_IN_PROGRESS)
        )));
        assert!(!is_retryable(&with(
            Code::Aborted,
            Some("VERSION_MISMATCH")
        )));
        for code in [
            Code::InvalidArgument,
            Code::NotFound,
            Code::FailedPrecondition,
            Code::PermissionDenied,
            Code::Unauthenticated,
            Code::DeadlineExceeded,
        ] {
            assert!(!is_retryable(&with(code, None)), "{code:?} was retryable");
        }
        assert!(is_resumable_watch_error(&with(
            Code::ResourceExhausted,
            Some(reason::WATCHER_TOO_SLOW)
        )));
    }

    #[test]
    fn pushback_is_read_from_trailers() {
        let mut md = tonic::metadata::MetadataMap::new();
        assert_eq!(pushback(&md), None);
        md.insert("grpc-retry-pushback-ms", "250".parse().unwrap());
        assert_eq!(pushback(&md), Some(Ok(Duration::from_millis(250))));
        md.insert("grpc-retry-pushback-ms", "-1".parse().unwrap());
        assert_eq!(pushback(&md), Some(Err(())));
    }
}
