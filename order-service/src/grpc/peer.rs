//! The client certificate a connection presented, as much of it as authorization uses: its
//! subject alternative names. The accept loop takes it from the TLS session once the handshake
//! has completed (so rustls has verified it against the client CA) and puts it into every
//! request of that connection; it never comes from anything the client sends in a request.

use rustls_pki_types::CertificateDer;
use std::sync::Arc;

/// The SAN names of a verified client certificate.
#[derive(Debug, Clone)]
pub struct PeerCertificate(Arc<Names>);

#[derive(Debug)]
struct Names {
    uris: Vec<String>,
    dns: Vec<String>,
}

impl PeerCertificate {
    /// The names of `der`, an end-entity certificate; `None` when it does not parse (rustls
    /// would not have accepted it then).
    pub fn from_der(der: &CertificateDer<'_>) -> Option<Self> {
        let certificate = webpki::EndEntityCert::try_from(der).ok()?;
        Some(PeerCertificate::new(
            certificate.valid_uri_names().map(str::to_owned).collect(),
            certificate.valid_dns_names().map(str::to_owned).collect(),
        ))
    }

    /// A certificate with these URI and DNS names.
    pub fn new(uris: Vec<String>, dns: Vec<String>) -> Self {
        PeerCertificate(Arc::new(Names { uris, dns }))
    }

    /// Its URI SANs (SPIFFE IDs, for one).
    pub fn uri_names(&self) -> &[String] {
        &self.0.uris
    }

    /// Its DNS SANs.
    pub fn dns_names(&self) -> &[String] {
        &self.0.dns
    }
}
