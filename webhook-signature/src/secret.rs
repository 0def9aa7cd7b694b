//! `whsec_` signing secrets: parsing, generation, display; never shown by `Debug`.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use ring::rand::{SecureRandom as _, SystemRandom};

/// The prefix of a secret's text form.
pub const SECRET_PREFIX: &str = "whsec_";
/// The fewest decoded bytes a secret may have (Standard Webhooks: 24 to 64).
pub const MIN_SECRET_BYTES: usize = 24;
/// How many random bytes [`Secret::generate`] draws.
pub const GENERATED_SECRET_BYTES: usize = 32;
/// The most decoded bytes a secret may have (Standard Webhooks' upper bound).
const MAX_SECRET_BYTES: usize = 64;

/// Standard base64 that accepts the text with or without its `=` padding.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// An endpoint's signing key: the decoded bytes of `whsec_<base64>`.
///
/// `Display` gives the `whsec_…` text (to show once, on creation or rotation); `Debug` never shows
/// the bytes, so a secret inside a logged struct stays hidden.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    bytes: Vec<u8>,
}

/// Why a text or byte string is not a secret.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    /// The text does not start with `whsec_`.
    #[error("a webhook secret starts with \"{SECRET_PREFIX}\"")]
    MissingPrefix,
    /// The part after the prefix is not base64.
    #[error("the webhook secret after \"{SECRET_PREFIX}\" is not base64")]
    NotBase64(#[source] base64::DecodeError),
    /// Too few or too many bytes.
    #[error(
        "a webhook secret has {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes, this one has {len}"
    )]
    BadLength {
        /// The decoded length.
        len: usize,
    },
}

impl Secret {
    /// A new secret of [`GENERATED_SECRET_BYTES`] bytes from the system's random generator.
    ///
    /// # Panics
    /// If the operating system's random source fails, which ring treats as unrecoverable too.
    #[must_use]
    pub fn generate() -> Self {
        let mut bytes = vec![0u8; GENERATED_SECRET_BYTES];
        SystemRandom::new()
            .fill(&mut bytes)
            .expect("the operating system's random generator failed");
        Self { bytes }
    }

    /// A secret from its decoded bytes (as stored), checking the length.
    ///
    /// # Errors
    /// [`SecretError::BadLength`] outside 24..=64 bytes.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, SecretError> {
        if !(MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&bytes.len()) {
            return Err(SecretError::BadLength { len: bytes.len() });
        }
        Ok(Self { bytes })
    }

    /// The key bytes (what the HMAC uses; what a store keeps, encrypted or not).
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl FromStr for Secret {
    type Err = SecretError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let encoded = text
            .trim()
            .strip_prefix(SECRET_PREFIX)
            .ok_or(SecretError::MissingPrefix)?;
        let bytes = LENIENT.decode(encoded).map_err(SecretError::NotBase64)?;
        Self::from_bytes(bytes)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SECRET_PREFIX}{}", STANDARD.encode(&self.bytes))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes, redacted)", self.bytes.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_round_trip_through_their_text() {
        let secret = Secret::generate();
        assert_eq!(secret.as_bytes().len(), GENERATED_SECRET_BYTES);
        let text = secret.to_string();
        assert!(text.starts_with("whsec_"), "{text}");
        assert_eq!(text.parse::<Secret>().unwrap(), secret);
        assert_ne!(
            Secret::generate(),
            secret,
            "two generated secrets are equal"
        );
    }

    #[test]
    fn debug_never_shows_the_bytes() {
        let secret: Secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".parse().unwrap();
        let debug = format!("{secret:?}");
        assert_eq!(debug, "Secret(24 bytes, redacted)");
        assert!(!debug.contains("MfKQ"));
    }

    #[test]
    fn malformed_secrets_say_what_is_wrong() {
        assert_eq!(
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".parse::<Secret>(),
            Err(SecretError::MissingPrefix)
        );
        assert!(matches!(
            "whsec_not base64!".parse::<Secret>(),
            Err(SecretError::NotBase64(_))
        ));
        // 18 bytes: too short.
        assert_eq!(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZI".parse::<Secret>(),
            Err(SecretError::BadLength { len: 18 })
        );
        assert_eq!(
            Secret::from_bytes(vec![7; 65]),
            Err(SecretError::BadLength { len: 65 })
        );
        // Padding is optional when parsing.
        let padded: Secret = format!("whsec_{}", STANDARD.encode([1u8; 32]))
            .parse()
            .unwrap();
        let unpadded: Secret =
            format!("whsec_{}", STANDARD.encode([1u8; 32]).trim_end_matches('='))
                .parse()
                .unwrap();
        assert_eq!(padded, unpadded);
    }
}
