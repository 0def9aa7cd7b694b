//! `order-service healthcheck`: asks a running server for its overall gRPC health, for container
//! health checks in an image that has no shell or probe binary.

use crate::config::HealthcheckArgs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// Whether the server at `args.addr` answered SERVING within `args.timeout`; the error says
/// what happened otherwise.
pub async fn check(args: &HealthcheckArgs) -> anyhow::Result<()> {
    let addr = reachable(args.addr);
    let probe = async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .connect()
            .await?;
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

/// A listen address turned into one to connect to: 0.0.0.0 and [::] mean this host.
fn reachable(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}
