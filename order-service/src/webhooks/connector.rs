//! The connector of webhook deliveries: resolves the URL's host, refuses every resolved address
//! in a non-public range (unless an allowed network contains it) — checked here, on the
//! addresses actually connected to, so neither a saved URL nor DNS rebinding can reach inside —
//! then opens TCP and, for https://, TLS through rustls on ring with the system's roots.

use super::network::{AllowedNetworks, TargetUrl};
use rustls_pki_types::ServerName;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Why no connection was made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Every address of the host is in a range webhooks may not reach.
    #[error("refused: {host} resolves to {address}, {range}")]
    Refused {
        /// The URL's host.
        host: String,
        /// The address refused.
        address: SocketAddr,
        /// The range it is in.
        range: &'static str,
    },
    /// The name does not resolve.
    #[error("cannot resolve {host}")]
    Resolve {
        /// The URL's host.
        host: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// TCP or TLS failed.
    #[error("cannot connect to {host}")]
    Connect {
        /// The URL's host.
        host: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A connection, plain or TLS.
pub enum Connection {
    /// http://
    Plain(TcpStream),
    /// https://
    Tls(Box<TlsStream<TcpStream>>),
}

/// Opens checked connections.
#[derive(Clone)]
pub struct Connector {
    allowed: AllowedNetworks,
    tls: TlsConnector,
}

impl Connector {
    /// A connector that reaches public addresses and those inside `allowed`.
    pub fn new(allowed: AllowedNetworks) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        for error in &found.errors {
            tracing::warn!(%error, "a system trust store certificate could not be read");
        }
        let (added, _ignored) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            tracing::warn!(
                "the system trust store has no usable certificate: https:// webhooks will fail"
            );
        }
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Connector {
            allowed,
            tls: TlsConnector::from(Arc::new(config)),
        }
    }

    /// The allowed networks.
    pub fn allowed(&self) -> &AllowedNetworks {
        &self.allowed
    }

    /// Resolves, checks and connects to `target`.
    pub async fn connect(&self, target: &TargetUrl) -> Result<Connection, ConnectError> {
        let host = target.host.clone();
        let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), target.port))
            .await
            .map_err(|source| ConnectError::Resolve {
                host: host.clone(),
                source,
            })?
            .collect();
        let mut refused = None;
        let mut last_error = None;
        for address in addresses {
            let refusal = match self.allowed.refusal(address.ip()) {
                // Plain http:// only inside the allowed networks, never across the internet.
                None if !target.tls && !self.allowed.allows(address.ip()) => {
                    Some("outside the allowed networks, which http:// URLs must stay inside")
                }
                refusal => refusal,
            };
            if let Some(range) = refusal {
                refused.get_or_insert(ConnectError::Refused {
                    host: host.clone(),
                    address,
                    range,
                });
                continue;
            }
            match TcpStream::connect(address).await {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    return self.secure(target, stream).await;
                }
                Err(error) => last_error = Some(error),
            }
        }
        Err(match (last_error, refused) {
            (Some(source), _) => ConnectError::Connect { host, source },
            (None, Some(refused)) => refused,
            (None, None) => ConnectError::Resolve {
                host,
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no addresses"),
            },
        })
    }

    async fn secure(
        &self,
        target: &TargetUrl,
        stream: TcpStream,
    ) -> Result<Connection, ConnectError> {
        if !target.tls {
            return Ok(Connection::Plain(stream));
        }
        let failed = |source: std::io::Error| ConnectError::Connect {
            host: target.host.clone(),
            source,
        };
        let name = ServerName::try_from(target.host.clone()).map_err(|error| {
            failed(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                error.to_string(),
            ))
        })?;
        let stream = self.tls.connect(name, stream).await.map_err(failed)?;
        Ok(Connection::Tls(Box::new(stream)))
    }
}
