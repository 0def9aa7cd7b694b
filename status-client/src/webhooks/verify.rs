//! Verifying a received delivery from its HTTP headers and body: what `webhooks listen` does
//! for each request, and what an internal service calls from its own handler.

use std::time::Duration;

use http::HeaderMap;
use order_status_webhooks::{
    DEFAULT_TOLERANCE, HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, Secret, VerifyError,
    WebhookHeaders, unix_now, verify,
};

/// A delivery whose signature and timestamp checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedDelivery {
    /// The `webhook-id` header: the same on every attempt of one event, so the key to drop
    /// duplicates by.
    pub webhook_id: String,
    /// The `webhook-timestamp` header, Unix seconds of this attempt.
    pub timestamp: i64,
}

/// Checks Standard Webhooks deliveries against an endpoint's secret(s) — during a rotation,
/// give both the new and the old one.
///
/// ```
/// use status_client::webhooks::{Secret, Verifier, sign};
///
/// let secret: Secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".parse().unwrap();
/// let verifier = Verifier::new(vec![secret.clone()]);
/// // In a handler: the request's headers and its body, unchanged.
/// let body = br#"{"type":"order.created"}"#;
/// let now = status_client::webhooks::unix_now();
/// let mut headers = http::HeaderMap::new();
/// headers.insert("webhook-id", "evt_1".parse().unwrap());
/// headers.insert("webhook-timestamp", now.to_string().parse().unwrap());
/// headers.insert("webhook-signature", sign(&[&secret], "evt_1", now, body).parse().unwrap());
/// match verifier.verify(&headers, body) {
///     Ok(delivery) => println!("{} verified", delivery.webhook_id), // answer 2xx
///     Err(why) => println!("401: {why}"),                            // answer 401
/// }
/// ```
#[derive(Debug, Clone)]
pub struct Verifier {
    secrets: Vec<Secret>,
    tolerance: Duration,
}

impl Verifier {
    /// A verifier accepting a signature by any of `secrets`, with the default tolerance of
    /// ±5 minutes.
    pub fn new(secrets: Vec<Secret>) -> Self {
        Self {
            secrets,
            tolerance: DEFAULT_TOLERANCE,
        }
    }

    /// How far a delivery's timestamp may be from this machine's clock, either way.
    #[must_use]
    pub fn with_tolerance(mut self, tolerance: Duration) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// The tolerance in use.
    pub fn tolerance(&self) -> Duration {
        self.tolerance
    }

    /// Verifies a request's headers and raw body (before any parsing) against the system clock.
    ///
    /// # Errors
    /// What is wrong, fit for a one-line 401 body.
    pub fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<VerifiedDelivery, VerifyError> {
        self.verify_at(headers, body, unix_now())
    }

    /// [`verify`](Self::verify) at the given time (Unix seconds).
    ///
    /// # Errors
    /// What is wrong, fit for a one-line 401 body.
    pub fn verify_at(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: i64,
    ) -> Result<VerifiedDelivery, VerifyError> {
        let secrets: Vec<&Secret> = self.secrets.iter().collect();
        verify_request(&secrets, headers, body, now, self.tolerance)
    }
}

/// Verifies a Standard Webhooks request, its headers as an [`http::HeaderMap`] (hyper's, axum's,
/// tonic's) and its raw body, at `now` (Unix seconds, e.g. [`unix_now`]): the headers are
/// present, the timestamp within `tolerance`, and a `v1` signature by one of `secrets` matches.
///
/// # Errors
/// What is wrong, fit for a one-line 401 body.
pub fn verify_request(
    secrets: &[&Secret],
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
    tolerance: Duration,
) -> Result<VerifiedDelivery, VerifyError> {
    let header = |name: &'static str| {
        headers
            .get(name)
            .ok_or(VerifyError::MissingHeader(name))?
            .to_str()
            .map_err(|_| VerifyError::HeaderNotText(name))
    };
    let parts = WebhookHeaders {
        id: header(HEADER_ID)?,
        timestamp: header(HEADER_TIMESTAMP)?,
        signature: header(HEADER_SIGNATURE)?,
    };
    verify(secrets, &parts, body, now, tolerance)?;
    Ok(VerifiedDelivery {
        webhook_id: parts.id.to_owned(),
        // verify() parsed it already; it cannot fail here.
        timestamp: parts.timestamp.parse().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use order_status_webhooks::sign;

    fn headers(id: &str, timestamp: &str, signature: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in [
            (HEADER_ID, id),
            (HEADER_TIMESTAMP, timestamp),
            (HEADER_SIGNATURE, signature),
        ] {
            map.insert(name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn a_signed_request_verifies_and_gives_its_id() {
        let secret = Secret::generate();
        let signature = sign(&[&secret], "evt_9", 1_000, b"{}");
        let verifier = Verifier::new(vec![secret]);
        assert_eq!(
            verifier.verify_at(&headers("evt_9", "1000", &signature), b"{}", 1_100),
            Ok(VerifiedDelivery {
                webhook_id: "evt_9".into(),
                timestamp: 1_000
            })
        );
    }

    #[test]
    fn missing_and_non_text_headers_are_named() {
        let verifier = Verifier::new(vec![Secret::generate()]);
        let mut map = headers("evt", "1", "v1,");
        map.remove(HEADER_TIMESTAMP);
        assert_eq!(
            verifier.verify_at(&map, b"", 1),
            Err(VerifyError::MissingHeader("webhook-timestamp"))
        );
        let mut map = headers("evt", "1", "v1,");
        map.insert(
            HEADER_ID,
            http::HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
        );
        assert_eq!(
            verifier.verify_at(&map, b"", 1).unwrap_err().to_string(),
            "header webhook-id is not text"
        );
    }

    #[test]
    fn the_tolerance_is_the_verifiers() {
        let secret = Secret::generate();
        let signature = sign(&[&secret], "evt", 1_000, b"");
        let verifier = Verifier::new(vec![secret]).with_tolerance(Duration::from_secs(10));
        let map = headers("evt", "1000", &signature);
        assert!(verifier.verify_at(&map, b"", 1_010).is_ok());
        assert!(matches!(
            verifier.verify_at(&map, b"", 1_011),
            Err(VerifyError::TimestampOutOfTolerance { .. })
        ));
    }
}
