//! Tokens already authenticated, so a client presenting the same token on every call (all of
//! them do) costs a keyed hash and a constant-time comparison instead of a SHA-256 per call.
//!
//! Entries are found by a keyed hash of the token (`RandomState`: a process-secret SipHash
//! key, so a caller cannot aim at an entry) and confirmed by comparing the whole token in
//! constant time, as the hashes of the tokens file are. Only tokens that matched an entry of
//! the file are remembered, at most [`MAX_TOKENS`] of them: unknown tokens never take room.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::hash::RandomState;
use std::sync::RwLock;
use subtle::ConstantTimeEq;

/// Distinct valid tokens remembered; a tokens file rarely holds more than a handful.
const MAX_TOKENS: usize = 256;

/// A remembered token and the index of its credential, by the keyed hash of the token.
type Remembered = HashMap<u64, (Box<[u8]>, usize)>;

/// Valid tokens seen, each with the index of its credential.
#[derive(Debug, Default)]
pub(super) struct KnownTokens {
    keys: RandomState,
    tokens: RwLock<Remembered>,
}

impl KnownTokens {
    /// The credential index of `token`, if it was remembered.
    pub(super) fn get(&self, token: &[u8]) -> Option<usize> {
        let key = self.keys.hash_one(token);
        let tokens = self
            .tokens
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (known, index) = tokens.get(&key)?;
        bool::from(known.ct_eq(token)).then_some(*index)
    }

    /// Remembers that `token` authenticates as credential `index`.
    pub(super) fn remember(&self, token: &[u8], index: usize) {
        let key = self.keys.hash_one(token);
        let mut tokens = self
            .tokens
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if tokens.len() < MAX_TOKENS {
            tokens.insert(key, (token.into(), index));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_token_is_found() {
        let known = KnownTokens::default();
        assert_eq!(known.get(b"secret"), None);
        known.remember(b"secret", 3);
        assert_eq!(known.get(b"secret"), Some(3));
        assert_eq!(known.get(b"secreT"), None);
        assert_eq!(known.get(b"secret "), None);
        assert_eq!(known.get(b""), None);
    }
}
