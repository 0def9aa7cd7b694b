//! TLS termination shared by order-service's gRPC listener and the status-client gateway's
//! HTTPS listener: PEM files (certificate chain, key, optionally a client CA) turned into a
//! rustls server configuration, and kept current when the files are renewed ([`reload`]).
//!
//! Every configuration is built with ring, named explicitly: it is the one crypto provider
//! linked into this workspace (tonic's `tls-ring`), and rustls refuses to guess when two are.

pub mod reload;

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// ALPN `h2`: gRPC is HTTP/2, and grpc-go ≥ 1.67 refuses a server that does not say so.
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN `http/1.1`, what the gateway serves.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// The files a TLS listener is configured from, and what to call them in messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, the server's own certificate first.
    pub cert: PathBuf,
    /// PEM private key of that certificate (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA bundle; when set, every client must present a certificate signed by it.
    pub client_ca: Option<PathBuf>,
    /// The only application protocol offered in ALPN.
    pub alpn: &'static [u8],
    /// The settings (variables) that name the files, for messages.
    pub settings: SettingNames,
}

/// The names of the settings that point at the TLS files, so that a message says which to fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SettingNames {
    /// The certificate chain's.
    pub cert: &'static str,
    /// The key's.
    pub key: &'static str,
    /// The client CA's.
    pub client_ca: &'static str,
}

/// Why TLS files cannot be used; the message names the setting and the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("{setting} {path}: cannot read it")]
    Read {
        /// The setting that names the file.
        setting: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file holds no usable PEM item of the kind expected.
    #[error("{setting} {path}: {problem}")]
    Content {
        /// The setting that names the file.
        setting: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// rustls refused the combination (e.g. the key does not belong to the certificate).
    #[error("{what}")]
    Rustls {
        /// What was being built.
        what: String,
        /// rustls's reason.
        #[source]
        source: rustls::Error,
    },
    /// The client CA bundle does not make a usable verifier.
    #[error("{setting} {path}: cannot verify client certificates with it")]
    ClientVerifier {
        /// The setting that names the file.
        setting: &'static str,
        /// The file.
        path: PathBuf,
        /// rustls's reason.
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
}

/// The crypto provider of every TLS configuration in this workspace.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Makes ring the process-wide default provider too, for any rustls user that does not name
/// one. Harmless when already installed.
pub fn install_crypto_provider() {
    let _already_installed = rustls::crypto::ring::default_provider().install_default();
}

/// Reads the files and builds the server configuration: certificate chain and key (which must
/// match), the ALPN protocol, and a client certificate verifier when a client CA is given.
pub fn load(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let names = files.settings;
    let chain = read_certificates(names.cert, &files.cert)?;
    let key_pem = read(names.key, &files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|error| TlsError::Content {
        setting: names.key,
        path: files.key.clone(),
        problem: format!("no private key in it ({error})"),
    })?;
    let provider = crypto_provider();
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Rustls {
            what: "the TLS protocol versions".into(),
            source,
        })?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for certificate in read_certificates(names.client_ca, path)? {
                roots.add(certificate).map_err(|source| TlsError::Rustls {
                    what: format!(
                        "{} {}: a certificate is not a usable CA",
                        names.client_ca,
                        path.display()
                    ),
                    source,
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|source| TlsError::ClientVerifier {
                    setting: names.client_ca,
                    path: path.clone(),
                    source,
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|source| TlsError::Rustls {
            what: format!(
                "{} {} with {} {}: not a usable pair",
                names.cert,
                files.cert.display(),
                names.key,
                files.key.display()
            ),
            source,
        })?;
    config.alpn_protocols = vec![files.alpn.to_vec()];
    Ok(Arc::new(config))
}

fn read(setting: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        setting,
        path: path.to_owned(),
        source,
    })
}

/// Every certificate in a PEM file; none at all is an error.
fn read_certificates(
    setting: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(setting, path)?;
    let problem = |problem: String| TlsError::Content {
        setting,
        path: path.to_owned(),
        problem,
    };
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| problem(format!("not a PEM certificate file ({error})")))?;
    if certificates.is_empty() {
        return Err(problem(
            "no certificate in it (-----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    Ok(certificates)
}
