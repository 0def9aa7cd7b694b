//! Signing (`sign`) and verifying (`verify`) a delivery's `webhook-signature` header.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::hmac;

use crate::{HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, Secret};

/// How far a delivery's timestamp may be from the receiver's clock, either way (Standard
/// Webhooks' recommendation): older deliveries are refused as possible replays.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// The length of an HMAC-SHA256 tag.
const TAG_LEN: usize = 32;

/// The three Standard Webhooks headers of one delivery, as received (text, not yet checked).
#[derive(Debug, Clone, Copy)]
pub struct WebhookHeaders<'a> {
    /// `webhook-id`.
    pub id: &'a str,
    /// `webhook-timestamp`: Unix seconds, decimal.
    pub timestamp: &'a str,
    /// `webhook-signature`: space-separated `version,base64` entries.
    pub signature: &'a str,
}

/// Why a delivery does not verify. Every variant says what was wrong, in a line fit for a
/// 401 response body.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    /// A header is absent.
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    /// A header is not visible ASCII / UTF-8.
    #[error("header {0} is not text")]
    HeaderNotText(&'static str),
    /// `webhook-id` is empty.
    #[error("header {HEADER_ID} is empty")]
    EmptyId,
    /// `webhook-timestamp` is not a decimal integer.
    #[error("header {HEADER_TIMESTAMP} is not Unix seconds: {0:?}")]
    MalformedTimestamp(String),
    /// The timestamp is further from `now` than the tolerance.
    #[error("timestamp {timestamp} is outside now ({now}) ± {tolerance_secs}s")]
    TimestampOutOfTolerance {
        /// The delivery's timestamp.
        timestamp: i64,
        /// The receiver's clock.
        now: i64,
        /// The tolerance, in seconds.
        tolerance_secs: u64,
    },
    /// An entry of `webhook-signature` is not `version,signature`.
    #[error("header {HEADER_SIGNATURE} entry {0:?} is not \"version,signature\"")]
    MalformedSignature(String),
    /// `webhook-signature` holds no `v1,` entry.
    #[error("header {HEADER_SIGNATURE} has no v1 signature")]
    NoV1Signature,
    /// No `v1,` entry matches any of the secrets.
    #[error("no v1 signature matches")]
    NoMatch,
    /// The receiver was given no secret to verify with.
    #[error("no secret to verify with")]
    NoSecrets,
}

/// The raw HMAC-SHA256 tag of `{id}.{timestamp}.{body}` under one secret.
fn tag(secret: &Secret, id: &str, timestamp: i64, body: &[u8]) -> hmac::Tag {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    hmac::sign(&key, &signed_content(id, timestamp, body))
}

/// One `v1,<base64>` entry: the signature of `{id}.{timestamp}.{body}` under `secret`.
#[must_use]
pub fn signature_entry(secret: &Secret, id: &str, timestamp: i64, body: &[u8]) -> String {
    format!(
        "v1,{}",
        STANDARD.encode(tag(secret, id, timestamp, body).as_ref())
    )
}

/// The `webhook-signature` header value: one `v1,` entry per secret, space-separated (two while
/// a rotation's grace period lets the old secret sign beside the new one).
#[must_use]
pub fn sign(secrets: &[&Secret], id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .map(|secret| signature_entry(secret, id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Checks a delivery: well-formed headers, a timestamp within `tolerance` of `now` (Unix
/// seconds) either way, and at least one `v1,` entry equal — compared in constant time — to the
/// signature under one of `secrets`. Entries of other versions (e.g. `v1a`) are ignored; an
/// entry with an empty or undecodable signature never matches.
///
/// # Errors
/// The first thing found wrong, as a [`VerifyError`].
pub fn verify(
    secrets: &[&Secret],
    headers: &WebhookHeaders<'_>,
    body: &[u8],
    now: i64,
    tolerance: Duration,
) -> Result<(), VerifyError> {
    if secrets.is_empty() {
        return Err(VerifyError::NoSecrets);
    }
    if headers.id.is_empty() {
        return Err(VerifyError::EmptyId);
    }
    let timestamp = parse_timestamp(headers.timestamp)?;
    let tolerance_secs = tolerance.as_secs();
    if timestamp.abs_diff(now) > tolerance_secs {
        return Err(VerifyError::TimestampOutOfTolerance {
            timestamp,
            now,
            tolerance_secs,
        });
    }
    let mut candidates = Vec::new();
    for entry in headers.signature.split_ascii_whitespace() {
        let (version, encoded) = entry
            .split_once(',')
            .ok_or_else(|| VerifyError::MalformedSignature(entry.to_owned()))?;
        if version != "v1" {
            continue;
        }
        // Empty, undecodable or wrong-length entries are candidates that can never match: they
        // still count as "a v1 entry was present" so the error says "no match", not "absent".
        candidates.push(
            STANDARD
                .decode(encoded)
                .ok()
                .filter(|tag| tag.len() == TAG_LEN),
        );
    }
    if candidates.is_empty() {
        return Err(VerifyError::NoV1Signature);
    }
    let message = signed_content(headers.id, timestamp, body);
    for secret in secrets {
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
        for candidate in candidates.iter().flatten() {
            if hmac::verify(&key, &message, candidate).is_ok() {
                return Ok(());
            }
        }
    }
    Err(VerifyError::NoMatch)
}

/// `{id}.{timestamp}.{body}`, the bytes the signature covers.
fn signed_content(id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
    let timestamp = timestamp.to_string();
    let mut message = Vec::with_capacity(id.len() + timestamp.len() + body.len() + 2);
    message.extend_from_slice(id.as_bytes());
    message.push(b'.');
    message.extend_from_slice(timestamp.as_bytes());
    message.push(b'.');
    message.extend_from_slice(body);
    message
}

/// A decimal Unix-seconds timestamp (an optional leading `-`, then digits only).
fn parse_timestamp(text: &str) -> Result<i64, VerifyError> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(VerifyError::MalformedTimestamp(text.to_owned()));
    }
    text.parse()
        .map_err(|_| VerifyError::MalformedTimestamp(text.to_owned()))
}

/// The system clock as Unix seconds (0 if it is set before 1970), for `verify`'s `now`.
#[must_use]
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
        })
}
