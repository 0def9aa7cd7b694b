//! Idempotency: who is asking, the key they send, and the fingerprint of what they asked, so a
//! repeated request can be told from a different one under the same key.

use super::validation::char_count;
use sha2::{Digest, Sha256};
use std::fmt;

/// The authenticated caller, as named in the tokens file. Idempotency keys are scoped to it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Principal(String);

impl Principal {
    /// A principal with this name (already authenticated by the transport).
    pub fn new(name: impl Into<String>) -> Self {
        Principal(name.into())
    }

    /// The principal's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A client-chosen idempotency key: 1-128 characters of `[A-Za-z0-9_-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestId(String);

impl RequestId {
    /// Validates a key; the error says what is wrong with it.
    pub fn parse(value: &str) -> Result<Self, String> {
        char_count(value, 1, 128)?;
        if let Some(bad) = value
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
        {
            return Err(format!(
                "may contain only A-Z, a-z, 0-9, '_' and '-', found {bad:?}"
            ));
        }
        Ok(RequestId(value.to_owned()))
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// SHA-256 over a canonical encoding of a request's meaningful fields (not its key, not its
/// time): equal fingerprints mean "the same request".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// Hashes `parts` with each part length-prefixed, so `("ab","c")` and `("a","bc")` differ.
    pub fn of(parts: &[&[u8]]) -> Self {
        let mut fingerprinter = Fingerprinter::default();
        for part in parts {
            fingerprinter.part(part);
        }
        fingerprinter.finish()
    }
}

/// Builds a [`Fingerprint`] one part at a time, without gathering the parts first: the same
/// hash as [`Fingerprint::of`] over the same parts. Stored fingerprints are compared with new
/// ones, so the hash of given parts must never change.
#[derive(Default)]
pub(super) struct Fingerprinter(Sha256);

impl Fingerprinter {
    /// Adds the next part (length-prefixed).
    pub(super) fn part(&mut self, part: &[u8]) -> &mut Self {
        self.0.update((part.len() as u64).to_be_bytes());
        self.0.update(part);
        self
    }

    /// The fingerprint of the parts added.
    pub(super) fn finish(self) -> Fingerprint {
        Fingerprint(self.0.finalize().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_accept_the_documented_alphabet_only() {
        assert!(RequestId::parse("abc-DEF_123").is_ok());
        assert!(RequestId::parse(&"a".repeat(128)).is_ok());
        assert!(RequestId::parse(&"a".repeat(129)).is_err());
        assert!(RequestId::parse("").is_err());
        assert!(RequestId::parse("a b").is_err());
        assert!(RequestId::parse("ключ").is_err());
    }

    #[test]
    fn a_fingerprint_built_part_by_part_is_the_fingerprint_of_the_parts() {
        let mut fingerprinter = Fingerprinter::default();
        fingerprinter.part(b"ab").part(b"").part(b"c");
        assert_eq!(fingerprinter.finish(), Fingerprint::of(&[b"ab", b"", b"c"]));
    }

    #[test]
    fn fingerprints_separate_their_parts() {
        assert_ne!(
            Fingerprint::of(&[b"ab", b"c"]),
            Fingerprint::of(&[b"a", b"bc"])
        );
        assert_eq!(Fingerprint::of(&[b"x"]), Fingerprint::of(&[b"x"]));
    }
}
