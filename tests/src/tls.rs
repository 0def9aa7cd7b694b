//! Certificates for the TLS tests, made with the `openssl` command line in a test's own
//! directory: a CA, server certificates for 127.0.0.1, and client certificates carrying a URI or
//! DNS subject alternative name. Plus a bare TLS client that reports what a server presents
//! (its certificate and the negotiated ALPN protocol), and an HTTPS request for the gateway.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use anyhow::{Context, bail};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM, PKCS#8).
    pub key: PathBuf,
}

impl Issued {
    /// The certificate's PEM text.
    pub fn cert_pem(&self) -> Vec<u8> {
        std::fs::read(&self.cert).expect("reading a test certificate")
    }

    /// The key's PEM text.
    pub fn key_pem(&self) -> Vec<u8> {
        std::fs::read(&self.key).expect("reading a test key")
    }

    /// The certificate in DER, as a TLS peer presents it.
    pub fn cert_der(&self) -> CertificateDer<'static> {
        CertificateDer::from_pem_file(&self.cert).expect("a PEM certificate")
    }
}

/// A certificate authority in a directory of its own.
#[derive(Debug)]
pub struct TestCa {
    dir: PathBuf,
    name: String,
    /// The CA's certificate (and key).
    pub issued: Issued,
}

impl TestCa {
    /// Makes a CA called `name` with its files in `dir` (files are prefixed with `name`).
    pub fn new(dir: &Path, name: &str) -> anyhow::Result<Self> {
        let cert = dir.join(format!("{name}-ca.pem"));
        let key = dir.join(format!("{name}-ca.key"));
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN={name} test CA"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
                "-keyout",
                path_arg(&key)?,
                "-out",
                path_arg(&cert)?,
            ],
        )?;
        Ok(TestCa {
            dir: dir.to_owned(),
            name: name.to_owned(),
            issued: Issued { cert, key },
        })
    }

    /// The CA certificate's PEM file, for `--ca-cert`, grpcurl's `-cacert` or a client CA.
    pub fn cert(&self) -> &Path {
        &self.issued.cert
    }

    /// A server certificate for 127.0.0.1 and localhost, named `file_stem`.
    pub fn server(&self, file_stem: &str) -> anyhow::Result<Issued> {
        self.issue(
            file_stem,
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        )
    }

    /// A client certificate whose SAN is `san` (`URI:spiffe://…` or `DNS:name`).
    pub fn client(&self, file_stem: &str, san: &str) -> anyhow::Result<Issued> {
        self.issue(
            file_stem,
            &format!("subjectAltName={san}\nextendedKeyUsage=clientAuth\n"),
        )
    }

    fn issue(&self, file_stem: &str, extensions: &str) -> anyhow::Result<Issued> {
        let stem = format!("{}-{file_stem}", self.name);
        let cert = self.dir.join(format!("{stem}.pem"));
        let key = self.dir.join(format!("{stem}.key"));
        let csr = self.dir.join(format!("{stem}.csr"));
        let ext = self.dir.join(format!("{stem}.ext"));
        std::fs::write(
            &ext,
            format!("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n{extensions}"),
        )?;
        openssl(
            &self.dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-subj",
                &format!("/CN={file_stem}"),
                "-keyout",
                path_arg(&key)?,
                "-out",
                path_arg(&csr)?,
            ],
        )?;
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-days",
                "2",
                "-in",
                path_arg(&csr)?,
                "-CA",
                path_arg(&self.issued.cert)?,
                "-CAkey",
                path_arg(&self.issued.key)?,
                "-set_serial",
                &format!("{}", rand_serial()),
                "-extfile",
                path_arg(&ext)?,
                "-out",
                path_arg(&cert)?,
            ],
        )?;
        Ok(Issued { cert, key })
    }
}

/// A serial number unlike the previous ones (two certificates of one CA must differ).
fn rand_serial() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.subsec_nanos());
    (u64::from(nanos) << 16) | NEXT.fetch_add(1, Ordering::Relaxed)
}

fn path_arg(path: &Path) -> anyhow::Result<&str> {
    path.to_str().context("test paths are UTF-8")
}

fn openssl(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .context("the openssl command line is needed to make test certificates")?;
    if !output.status.success() {
        bail!(
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// A TLS client configuration trusting `ca`, presenting `client` when given, offering `alpn`.
fn client_config(
    ca: &Path,
    client: Option<&Issued>,
    alpn: &[&[u8]],
) -> anyhow::Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(ca)? {
        roots.add(certificate?)?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut config = match client {
        None => builder.with_no_client_auth(),
        Some(issued) => builder.with_client_auth_cert(
            vec![issued.cert_der()],
            rustls::pki_types::PrivateKeyDer::from_pem_file(&issued.key)?,
        )?,
    };
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    Ok(config)
}

/// Sends one HTTP/1.1 request over a new TLS connection to `addr`, trusting `ca`.
pub async fn https_request(
    addr: SocketAddr,
    ca: &Path,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> anyhow::Result<crate::status_client_process::HttpResponse> {
    let config = client_config(ca, None, &[b"http/1.1"])?;
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
        .context("TLS handshake")?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = crate::status_client_process::http1_request(addr, method, path, headers, body)?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await?.to_bytes();
    Ok(crate::status_client_process::HttpResponse {
        status,
        headers,
        body: String::from_utf8(body.to_vec())?,
    })
}

/// What a TLS server presented to a fresh connection.
#[derive(Debug)]
pub struct Presented {
    /// Its certificate (the first of its chain).
    pub certificate: CertificateDer<'static>,
    /// The application protocol it agreed to, if any.
    pub alpn: Option<Vec<u8>>,
}

/// Opens a new TLS connection to `addr` offering ALPN `h2` and `http/1.1`, trusting `ca`, and
/// reports what the server presented; `client` is presented when given. The connection is
/// closed afterwards.
pub async fn handshake(
    addr: SocketAddr,
    ca: &Path,
    client: Option<&Issued>,
) -> anyhow::Result<Presented> {
    let config = client_config(ca, client, &[b"h2", b"http/1.1"])?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let stream = connector
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
        .context("TLS handshake")?;
    let session = stream.get_ref().1;
    let certificate = session
        .peer_certificates()
        .and_then(<[_]>::first)
        .context("the server presented no certificate")?
        .clone()
        .into_owned();
    Ok(Presented {
        certificate,
        alpn: session.alpn_protocol().map(<[u8]>::to_vec),
    })
}
