//! Signing secrets at rest. With a key file (`--webhook-secrets-key-file`: 32 bytes, raw or as
//! 64 hex digits or base64) each secret is sealed with AES-256-GCM (ring) under a fresh random
//! nonce, the endpoint id as associated data (a sealed secret copied to another endpoint does
//! not open): `aes256gcm:<base64 nonce‖ciphertext‖tag>`. Without one it is kept as
//! `plain:whsec_…`. Either form opens with a key configured, so a key can be added later;
//! sealed secrets need the key.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use order_status_webhooks::Secret;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use std::path::Path;
use std::sync::Arc;

const PLAIN: &str = "plain:";
const SEALED: &str = "aes256gcm:";

/// Why a secret or the key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// The key file is unusable.
    #[error("webhook secrets key file {path}: {problem}")]
    KeyFile {
        /// The file.
        path: String,
        /// What is wrong.
        problem: String,
    },
    /// A stored secret does not open.
    #[error("the stored secret of webhook endpoint {endpoint} does not open: {problem}")]
    Open {
        /// The endpoint.
        endpoint: String,
        /// Why.
        problem: &'static str,
    },
}

/// Seals and opens secrets.
#[derive(Clone)]
pub struct SecretBox {
    key: Option<Arc<LessSafeKey>>,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretBox")
            .field("encrypted", &self.key.is_some())
            .finish()
    }
}

impl SecretBox {
    /// Keeps secrets as they are.
    pub fn plain() -> Self {
        SecretBox { key: None }
    }

    /// Seals with the key in `path`.
    pub fn from_key_file(path: &Path) -> Result<Self, SecretsError> {
        let problem = |problem: String| SecretsError::KeyFile {
            path: path.display().to_string(),
            problem,
        };
        let raw =
            std::fs::read(path).map_err(|error| problem(format!("cannot read it: {error}")))?;
        let text = String::from_utf8_lossy(&raw);
        let text = text.trim();
        let key = if raw.len() == 32 {
            raw.clone()
        } else if let Ok(bytes) = hex::decode(text) {
            bytes
        } else if let Ok(bytes) = STANDARD.decode(text) {
            bytes
        } else {
            return Err(problem(
                "must hold 32 bytes: raw, as 64 hex digits, or base64".into(),
            ));
        };
        let key = UnboundKey::new(&AES_256_GCM, &key)
            .map_err(|_| problem(format!("must hold 32 bytes (AES-256), found {}", key.len())))?;
        Ok(SecretBox {
            key: Some(Arc::new(LessSafeKey::new(key))),
        })
    }

    /// The stored form of `secret` of `endpoint`.
    pub fn seal(&self, endpoint: &str, secret: &Secret) -> String {
        let text = secret.to_string();
        let Some(key) = &self.key else {
            return format!("{PLAIN}{text}");
        };
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .expect("the system random generator works");
        let mut sealed = text.into_bytes();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(endpoint.as_bytes()),
            &mut sealed,
        )
        .expect("AES-GCM seals any secret-sized input");
        let mut stored = nonce.to_vec();
        stored.extend_from_slice(&sealed);
        format!("{SEALED}{}", STANDARD.encode(stored))
    }

    /// The secret of `endpoint` from its stored form.
    pub fn open(&self, endpoint: &str, stored: &str) -> Result<Secret, SecretsError> {
        let fail = |problem| SecretsError::Open {
            endpoint: endpoint.to_owned(),
            problem,
        };
        let text = if let Some(plain) = stored.strip_prefix(PLAIN) {
            plain.to_owned()
        } else if let Some(sealed) = stored.strip_prefix(SEALED) {
            let key = self
                .key
                .as_ref()
                .ok_or_else(|| fail("it is encrypted and no key file is configured"))?;
            let mut bytes = STANDARD.decode(sealed).map_err(|_| fail("not base64"))?;
            if bytes.len() < NONCE_LEN {
                return Err(fail("too short"));
            }
            let mut ciphertext = bytes.split_off(NONCE_LEN);
            let nonce = Nonce::try_assume_unique_for_key(&bytes).map_err(|_| fail("bad nonce"))?;
            let opened = key
                .open_in_place(nonce, Aad::from(endpoint.as_bytes()), &mut ciphertext)
                .map_err(|_| fail("the key does not open it (another key, or altered)"))?;
            String::from_utf8(opened.to_vec()).map_err(|_| fail("not text"))?
        } else {
            return Err(fail("unknown stored form"));
        };
        text.parse().map_err(|_| fail("not a whsec_ secret"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_with_their_key_and_endpoint_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, hex::encode([7u8; 32])).unwrap();
        let sealed_box = SecretBox::from_key_file(&path).unwrap();
        let secret = Secret::generate();
        let stored = sealed_box.seal("we_1", &secret);
        assert!(stored.starts_with(SEALED));
        assert!(!stored.contains(&secret.to_string()));
        assert_eq!(
            sealed_box.open("we_1", &stored).unwrap().to_string(),
            secret.to_string()
        );
        assert!(sealed_box.open("we_2", &stored).is_err());
        assert!(SecretBox::plain().open("we_1", &stored).is_err());
        let plain = SecretBox::plain().seal("we_1", &secret);
        assert_eq!(
            sealed_box.open("we_1", &plain).unwrap().to_string(),
            secret.to_string()
        );
        std::fs::write(&path, "short").unwrap();
        assert!(SecretBox::from_key_file(&path).is_err());
    }
}
