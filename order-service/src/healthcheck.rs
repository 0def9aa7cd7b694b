//! `order-service healthcheck`: asks a running server for its overall gRPC health, for container
//! health checks in an image that has no shell or probe binary. Plaintext by default; over TLS
//! (and mutual TLS) when given the CA that signed the server's certificate.

use crate::config::HealthcheckArgs;
use anyhow::Context;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// Whether the server at `args.addr` answered SERVING within `args.timeout`; the error says
/// what happened otherwise.
pub async fn check(args: &HealthcheckArgs) -> anyhow::Result<()> {
    let addr = reachable(args.addr);
    let endpoint = endpoint(addr, args)?;
    let probe = async {
        let channel = endpoint.connect().await?;
        let mut request = tonic::Request::new(HealthCheckRequest {
            service: String::new(),
        });
        request.set_timeout(args.timeout);
        let response = HealthClient::new(channel).check(request).await?;
        anyhow::Ok(response.into_inner().status())
    };
    let status = tokio::time::timeout(args.timeout, probe)
        .await
        .map_err(|_| anyhow::anyhow!("no answer from {addr} within {:?}", args.timeout))??;
    anyhow::ensure!(
        status == ServingStatus::Serving,
        "{addr} is {}",
        status.as_str_name()
    );
    Ok(())
}

/// The endpoint to probe: `http://` unless a CA is given, then `https://` trusting only that
/// CA, presenting the client certificate when there is one.
fn endpoint(addr: SocketAddr, args: &HealthcheckArgs) -> anyhow::Result<Endpoint> {
    let Some(ca_cert) = &args.ca_cert else {
        return Ok(Endpoint::from_shared(format!("http://{addr}"))?);
    };
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca_cert)?));
    if let (Some(cert), Some(key)) = (&args.client_cert, &args.client_key) {
        tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
    }
    if let Some(name) = &args.tls_server_name {
        tls = tls.domain_name(name.clone());
    }
    Endpoint::from_shared(format!("https://{addr}"))?
        .tls_config(tls)
        .with_context(|| format!("TLS settings for {addr}"))
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

/// A listen address turned into one to connect to: 0.0.0.0 and [::] mean this host.
fn reachable(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}
