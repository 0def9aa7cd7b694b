//! What each request carries into its call: the caller's `Authorization` (passed on as is),
//! its deadline (the service's limit, shortened by an incoming `grpc-timeout` header) and its
//! `Idempotency-Key`.

use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use orders_proto::grpc_timeout;
use tonic::metadata::AsciiMetadataValue;

use super::errors::ApiError;
use super::routes::AppState;
use crate::client::CallOptions;

/// The per-request call options.
#[derive(Debug, Clone)]
pub(crate) struct CallContext {
    pub(crate) options: CallOptions,
    pub(crate) idempotency_key: Option<String>,
    /// The caller's `Authorization`, also in `options`: event streams share upstream watches
    /// only between callers presenting the very same value.
    pub(crate) authorization: Option<AsciiMetadataValue>,
    /// The request's deadline, also in `options`.
    pub(crate) timeout: Duration,
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
                    .and_then(grpc_timeout::parse)
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
        let mut authorization = None;
        if let Some(value) = parts.headers.get(axum::http::header::AUTHORIZATION) {
            let value = AsciiMetadataValue::try_from(value.as_bytes()).map_err(|_| {
                ApiError::bad_request(
                    "the Authorization header is not ASCII",
                    "INVALID_AUTHORIZATION",
                )
            })?;
            options = options.authorization(value.clone());
            authorization = Some(value);
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
            authorization,
            timeout,
        })
    }
}
