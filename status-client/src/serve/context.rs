//! What each request carries into its call: the caller's `Authorization` (passed on as is),
//! its deadline (the service's limit, shortened by an incoming `grpc-timeout` header) and its
//! `Idempotency-Key`.

use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use tonic::metadata::AsciiMetadataValue;

use super::errors::ApiError;
use super::routes::AppState;
use crate::client::CallOptions;

/// The per-request call options.
#[derive(Debug, Clone)]
pub(crate) struct CallContext {
    pub(crate) options: CallOptions,
    pub(crate) idempotency_key: Option<String>,
}

impl FromRequestParts<AppState> for CallContext {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let timeout = match parts.headers.get("grpc-timeout") {
            None => state.request_timeout,
            Some(value) => {
                let asked = value
                    .to_str()
                    .ok()
                    .and_then(parse_grpc_timeout)
                    .ok_or_else(|| {
                        ApiError::bad_request(
                            "invalid grpc-timeout header (e.g. 500m, 2S)",
                            "INVALID_TIMEOUT",
                        )
                    })?;
                asked.min(state.request_timeout)
            }
        };
        let mut options = CallOptions::new().timeout(timeout);
        if let Some(value) = parts.headers.get(axum::http::header::AUTHORIZATION) {
            let value = AsciiMetadataValue::try_from(value.as_bytes()).map_err(|_| {
                ApiError::bad_request(
                    "the Authorization header is not ASCII",
                    "INVALID_AUTHORIZATION",
                )
            })?;
            options = options.authorization(value);
        }
        let idempotency_key = match parts.headers.get("idempotency-key") {
            None => None,
            Some(value) => Some(
                value
                    .to_str()
                    .map_err(|_| {
                        ApiError::bad_request(
                            "the Idempotency-Key header is not ASCII",
                            "INVALID_IDEMPOTENCY_KEY",
                        )
                    })?
                    .to_owned(),
            ),
        };
        Ok(Self {
            options,
            idempotency_key,
        })
    }
}

/// Parses a gRPC timeout value: up to 8 digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
pub(crate) fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let value = value.trim();
    let unit = value.chars().last()?;
    let digits = &value[..value.len() - unit.len_utf8()];
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    let duration = match unit {
        'H' => Duration::from_secs(amount * 3600),
        'M' => Duration::from_secs(amount * 60),
        'S' => Duration::from_secs(amount),
        'm' => Duration::from_millis(amount),
        'u' => Duration::from_micros(amount),
        'n' => Duration::from_nanos(amount),
        _ => return None,
    };
    (!duration.is_zero()).then_some(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse() {
        assert_eq!(parse_grpc_timeout("500m"), Some(Duration::from_millis(500)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        for bad in ["", "5", "m", "123456789S", "5s", "0m", "-1S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }
}
