//! A fresh bearer token for one benchmark run and the tokens file that lets order-service
//! accept it (the service stores only the token's SHA-256).

use rand::RngCore;
use sha2::{Digest, Sha256};
use std::path::Path;

/// Principal the benchmark's token belongs to.
pub const PRINCIPAL: &str = "bench";

/// A random token (64 hex characters).
pub fn generate() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Writes the TOML tokens file giving `token` both order scopes.
pub fn write_tokens_file(path: &Path, token: &str) -> std::io::Result<()> {
    write_tokens_file_with_scopes(path, token, &["orders.read", "orders.write"])
}

/// Writes the TOML tokens file giving `token` the scopes named (such as `webhooks.admin`).
pub fn write_tokens_file_with_scopes(
    path: &Path,
    token: &str,
    scopes: &[&str],
) -> std::io::Result<()> {
    let hash = hex::encode(Sha256::digest(token.as_bytes()));
    let scopes = scopes
        .iter()
        .map(|scope| format!("\"{scope}\""))
        .collect::<Vec<_>>()
        .join(", ");
    std::fs::write(
        path,
        format!(
            "[[token]]\nprincipal = \"{PRINCIPAL}\"\nscopes = [{scopes}]\nsha256 = \"{hash}\"\n"
        ),
    )
}
