//! The replicas a client talks to: one lazily connected tonic `Channel` per endpoint (TLS for
//! `https://`), picked round-robin, with a replica whose connection just failed passed over for
//! a while so that calls go to the live ones.
//!
//! Why not `Channel::balance_list`: tower's balancer drops an endpoint whose first connection
//! fails and a static list never adds it back, so a replica that is down when the client starts
//! stays unused forever; and its choice is hidden from the retry loop, which wants its next
//! attempt to go to a *different* replica. Per-endpoint channels keep both decisions here.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use order_status_telemetry::Metrics;
use order_status_telemetry::grpc::GrpcClientLayer;
use tonic::body::Body;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use tower::util::BoxCloneSyncService;

/// What every attempt to one replica goes through: tonic's channel behind the client's tower
/// layers, built in [`replica_service`], the one place channels are built. Today that is the
/// telemetry layer: a client span per attempt (under the logical call's span), `traceparent`
/// injected into the request, attempt duration and attempts in flight measured.
pub(crate) type ReplicaService =
    BoxCloneSyncService<http::Request<Body>, http::Response<Body>, tonic::transport::Error>;

use crate::settings::{ClientIdentity, EndpointUrl, SettingsError};

/// The set of replicas and their recent health.
#[derive(Debug)]
pub(crate) struct Replicas {
    replicas: Vec<Replica>,
    next: AtomicUsize,
    ejection_time: Duration,
}

#[derive(Debug)]
struct Replica {
    url: EndpointUrl,
    channel: ReplicaService,
    /// Until when this replica is passed over after a failed connection.
    ejected_until: Mutex<Option<Instant>>,
}

/// The replica chosen for one attempt.
#[derive(Debug, Clone)]
pub(crate) struct Pick {
    pub(crate) index: usize,
    pub(crate) channel: ReplicaService,
}

impl Replicas {
    /// Builds one lazy channel per endpoint, each attempt observed into `metrics`. Must run
    /// inside a tokio runtime.
    pub(crate) fn new(
        endpoints: &[EndpointUrl],
        ejection_time: Duration,
        connect_timeout: Duration,
        ca_certificate_pem: Option<&[u8]>,
        client_identity: Option<&ClientIdentity>,
        metrics: &Metrics,
    ) -> Result<Self, SettingsError> {
        let replicas = endpoints
            .iter()
            .map(|url| {
                Ok(Replica {
                    channel: replica_service(
                        endpoint(url, connect_timeout, ca_certificate_pem, client_identity)?
                            .connect_lazy(),
                        url,
                        metrics,
                    ),
                    url: url.clone(),
                    ejected_until: Mutex::new(None),
                })
            })
            .collect::<Result<Vec<_>, SettingsError>>()?;
        Ok(Self {
            replicas,
            next: AtomicUsize::new(0),
            ejection_time,
        })
    }

    /// The next replica in turn that is not ejected and not `avoid` (the one the previous
    /// attempt of the same call failed on). When every replica is ejected, the one whose
    /// ejection ends first is used anyway: a call must always have somewhere to go.
    pub(crate) fn pick(&self, avoid: Option<usize>) -> Pick {
        let count = self.replicas.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        // Preference, best first: not ejected, then not the one to avoid, then the ejection
        // that ends soonest; ties go round-robin (the first in rotation order wins).
        let index = (0..count)
            .map(|offset| (start + offset) % count)
            .min_by_key(|&i| {
                let ejected_until = self.replicas[i]
                    .ejected_until()
                    .filter(|&until| until > now);
                (
                    ejected_until.is_some(),
                    count > 1 && Some(i) == avoid,
                    ejected_until,
                )
            })
            .unwrap_or(0);
        Pick {
            index,
            channel: self.replicas[index].channel.clone(),
        }
    }

    /// Records that an attempt on replica `index` could not reach it.
    pub(crate) fn eject(&self, index: usize) {
        let replica = &self.replicas[index];
        tracing::debug!(endpoint = %replica.url, "replica unreachable; passing it over for a while");
        *replica.lock() = Some(Instant::now() + self.ejection_time);
    }

    /// Records that replica `index` answered.
    pub(crate) fn mark_healthy(&self, index: usize) {
        *self.replicas[index].lock() = None;
    }

    /// Every replica's channel, for checks that ask them all.
    pub(crate) fn all(&self) -> Vec<ReplicaService> {
        self.replicas.iter().map(|r| r.channel.clone()).collect()
    }
}

impl Replica {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.ejected_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn ejected_until(&self) -> Option<Instant> {
        *self.lock()
    }
}

/// The service stack of one replica's channel (see [`ReplicaService`]). The replica's URL
/// names the server in the attempt spans (`server.address`, `server.port`): tonic adds the
/// origin inside the channel, so requests passing the layer carry only the path.
fn replica_service(
    channel: tonic::transport::Channel,
    url: &EndpointUrl,
    metrics: &Metrics,
) -> ReplicaService {
    BoxCloneSyncService::new(
        tower::ServiceBuilder::new()
            .layer(GrpcClientLayer::new(metrics.clone()).with_server(url.uri()))
            .service(channel),
    )
}

/// The tonic endpoint for one URL.
fn endpoint(
    url: &EndpointUrl,
    connect_timeout: Duration,
    ca_certificate_pem: Option<&[u8]>,
    client_identity: Option<&ClientIdentity>,
) -> Result<Endpoint, SettingsError> {
    let transport = |source| SettingsError::Transport {
        endpoint: url.to_string(),
        source,
    };
    let mut endpoint = Endpoint::from(url.uri().clone())
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        // Detects a replica that vanished without closing its connections (a paused process, a
        // dead host), so that a long watch stream fails over instead of hanging forever.
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true);
    if url.is_tls() {
        let mut tls = match ca_certificate_pem {
            Some(pem) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)),
            None => ClientTlsConfig::new().with_native_roots(),
        };
        if let Some(identity) = client_identity {
            tls = tls.identity(Identity::from_pem(
                &identity.certificate_pem,
                &identity.key_pem,
            ));
        }
        endpoint = endpoint.tls_config(tls).map_err(transport)?;
    }
    Ok(endpoint)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replicas(n: usize) -> Replicas {
        let urls: Vec<EndpointUrl> = (0..n)
            .map(|i| format!("http://127.0.0.1:{}", 1000 + i).parse().unwrap())
            .collect();
        Replicas::new(
            &urls,
            Duration::from_secs(60),
            Duration::from_secs(1),
            None,
            None,
            &Metrics::global(),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn picks_rotate_and_skip_ejected_replicas() {
        let r = replicas(3);
        let first: Vec<usize> = (0..3).map(|_| r.pick(None).index).collect();
        assert_eq!(first, [0, 1, 2]);
        r.eject(1);
        let picks: Vec<usize> = (0..6).map(|_| r.pick(None).index).collect();
        assert!(!picks.contains(&1), "{picks:?}");
        r.mark_healthy(1);
        assert!((0..3).map(|_| r.pick(None).index).any(|i| i == 1));
    }

    #[tokio::test]
    async fn https_endpoints_get_tls() {
        let urls: Vec<EndpointUrl> = vec!["https://orders.example.com:443".parse().unwrap()];
        assert!(urls[0].is_tls());
        // The TLS configuration (system roots, server name from the URL) is accepted.
        Replicas::new(
            &urls,
            Duration::from_secs(1),
            Duration::from_secs(1),
            None,
            None,
            &Metrics::global(),
        )
        .unwrap();
    }

    #[tokio::test]
    async fn a_retry_avoids_the_replica_that_just_failed() {
        let r = replicas(2);
        for _ in 0..4 {
            assert_eq!(r.pick(Some(0)).index, 1);
        }
        r.eject(0);
        r.eject(1);
        // Everything is ejected: still a pick, and not the one to avoid.
        assert_eq!(r.pick(Some(1)).index, 0);
        // A live replica is better than an ejected one, even if it is the one to avoid.
        r.mark_healthy(0);
        assert_eq!(r.pick(Some(0)).index, 0);
        let single = replicas(1);
        single.eject(0);
        assert_eq!(single.pick(Some(0)).index, 0);
    }
}
