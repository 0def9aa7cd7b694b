//! Typed client settings: the order-service endpoints, the bearer token, the per-call deadline
//! and the retry policy, validated once so that a `Client` can only be built from good values.

use std::time::Duration;

use http::Uri;

use crate::retry::{RetryPolicy, ThrottleSettings};

/// The endpoint used when none is configured (contract section 4).
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:50051";
/// The deadline of one call, all retries included, when none is configured (contract section 4).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long opening one connection to one replica may take, when not configured. Well under a
/// call's deadline, so that a replica whose address no longer answers (a stopped container, a
/// host gone) costs an attempt that then goes to another replica, not the whole call.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Everything a [`Client`](crate::Client) needs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The order-service replicas; calls are spread over them and a dead one is skipped.
    pub endpoints: Vec<EndpointUrl>,
    /// Bearer token sent on every call that does not carry its own `authorization`.
    pub token: Option<String>,
    /// Overall deadline of one logical call: every attempt and every backoff fit inside it.
    pub timeout: Duration,
    /// How failed attempts are retried.
    pub retry: RetryPolicy,
    /// The token bucket that stops retries when most attempts fail.
    pub throttle: ThrottleSettings,
    /// How long a replica whose connection failed is passed over before it is tried again.
    pub ejection_time: Duration,
    /// How long opening one connection to one replica may take before that attempt counts as
    /// not having reached it (and the call tries another).
    pub connect_timeout: Duration,
    /// For `https://` endpoints: the CA certificate(s), PEM, to trust instead of the system's
    /// roots (an internal CA; also what works in a scratch container without system roots).
    pub ca_certificate_pem: Option<Vec<u8>>,
    /// For `https://` endpoints that require mutual TLS: the certificate and key to present.
    pub client_identity: Option<ClientIdentity>,
}

/// A client certificate (PEM chain) and its private key (PEM), presented to servers that ask
/// for one (mutual TLS). Its `Debug` never shows the key.
#[derive(Clone)]
pub struct ClientIdentity {
    /// The certificate chain, the client's own certificate first.
    pub certificate_pem: Vec<u8>,
    /// The certificate's private key.
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity")
            .field(
                "certificate_pem",
                &format_args!("{} bytes", self.certificate_pem.len()),
            )
            .field("key_pem", &format_args!("<redacted>"))
            .finish()
    }
}

impl Settings {
    /// Settings for the given endpoints with the defaults of the contract for everything else.
    pub fn new(endpoints: Vec<EndpointUrl>) -> Self {
        Self {
            endpoints,
            token: None,
            timeout: DEFAULT_TIMEOUT,
            retry: RetryPolicy::default(),
            throttle: ThrottleSettings::default(),
            ejection_time: Duration::from_secs(2),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            ca_certificate_pem: None,
            client_identity: None,
        }
    }

    /// Parses a comma-separated endpoint list (the form of `STATUS_CLIENT_ENDPOINT`).
    pub fn from_endpoint_list(list: &str) -> Result<Self, SettingsError> {
        Ok(Self::new(parse_endpoint_list(list)?))
    }

    /// Sets the bearer token.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Sets the overall deadline of one call.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets how long opening one connection to one replica may take.
    pub fn with_connect_timeout(mut self, connect_timeout: Duration) -> Self {
        self.connect_timeout = connect_timeout;
        self
    }

    /// Trusts the CA certificate(s) in `pem` instead of the system's roots for `https://`.
    pub fn with_ca_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_certificate_pem = Some(pem.into());
        self
    }

    /// Presents this certificate and key (both PEM) to `https://` endpoints (mutual TLS).
    pub fn with_client_identity(
        mut self,
        certificate_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.client_identity = Some(ClientIdentity {
            certificate_pem: certificate_pem.into(),
            key_pem: key_pem.into(),
        });
        self
    }

    /// Sets the retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Sets the retry throttle.
    pub fn with_throttle(mut self, throttle: ThrottleSettings) -> Self {
        self.throttle = throttle;
        self
    }

    /// Checks the values that cannot be expressed in types.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.endpoints.is_empty() {
            return Err(SettingsError::NoEndpoint);
        }
        if self.timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(SettingsError::ZeroTimeout);
        }
        if let Some(token) = &self.token
            && (token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(SettingsError::InvalidToken);
        }
        if let Some(pem) = &self.ca_certificate_pem
            && !String::from_utf8_lossy(pem).contains("-----BEGIN CERTIFICATE-----")
        {
            return Err(SettingsError::InvalidCaCertificate);
        }
        if let Some(identity) = &self.client_identity
            && (!String::from_utf8_lossy(&identity.certificate_pem)
                .contains("-----BEGIN CERTIFICATE-----")
                || !String::from_utf8_lossy(&identity.key_pem).contains("PRIVATE KEY-----"))
        {
            return Err(SettingsError::InvalidClientIdentity);
        }
        self.retry.validate()?;
        self.throttle.validate()?;
        Ok(())
    }
}

/// One order-service URL: `http://host:port` or `https://host:port` (TLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointUrl(Uri);

impl EndpointUrl {
    /// The URL as given.
    pub fn uri(&self) -> &Uri {
        &self.0
    }

    /// Whether calls to this endpoint use TLS.
    pub fn is_tls(&self) -> bool {
        self.0.scheme_str() == Some("https")
    }
}

impl std::fmt::Display for EndpointUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for EndpointUrl {
    type Err = SettingsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |why: &str| SettingsError::InvalidEndpoint {
            endpoint: s.to_owned(),
            why: why.to_owned(),
        };
        let uri: Uri = s
            .trim()
            .parse()
            .map_err(|e: http::uri::InvalidUri| invalid(&e.to_string()))?;
        match uri.scheme_str() {
            Some("http" | "https") => {}
            Some(_) => return Err(invalid("the scheme must be http or https")),
            None => return Err(invalid("expected a URL such as http://127.0.0.1:50051")),
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(invalid("the URL has no host"));
        }
        if uri
            .path_and_query()
            .is_some_and(|p| p.as_str() != "/" && !p.as_str().is_empty())
        {
            return Err(invalid("the URL must not have a path"));
        }
        Ok(Self(uri))
    }
}

/// Parses `http://a:1,http://b:2` into endpoints; blanks around commas are ignored.
pub fn parse_endpoint_list(list: &str) -> Result<Vec<EndpointUrl>, SettingsError> {
    let endpoints = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect::<Result<Vec<EndpointUrl>, _>>()?;
    if endpoints.is_empty() {
        return Err(SettingsError::NoEndpoint);
    }
    Ok(endpoints)
}

/// Parses a duration such as `2s`, `500ms` or `1m 30s` (humantime syntax); zero is refused.
pub fn parse_timeout(s: &str) -> Result<Duration, SettingsError> {
    let duration =
        humantime::parse_duration(s.trim()).map_err(|e| SettingsError::InvalidDuration {
            value: s.to_owned(),
            why: e.to_string(),
        })?;
    if duration.is_zero() {
        return Err(SettingsError::ZeroTimeout);
    }
    Ok(duration)
}

/// Why settings were refused.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// No endpoint was given.
    #[error("no order-service endpoint given")]
    NoEndpoint,
    /// An endpoint is not a usable URL.
    #[error("invalid endpoint {endpoint:?}: {why}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        why: String,
    },
    /// A duration could not be parsed.
    #[error("invalid duration {value:?}: {why} (examples: 2s, 500ms)")]
    InvalidDuration {
        /// The value as given.
        value: String,
        /// What is wrong with it.
        why: String,
    },
    /// A deadline of zero would fail every call.
    #[error("the timeout must be greater than zero")]
    ZeroTimeout,
    /// The token cannot be sent as an HTTP header.
    #[error("the token must be non-empty printable ASCII without spaces")]
    InvalidToken,
    /// The CA certificate is not PEM.
    #[error("the CA certificate must be PEM (-----BEGIN CERTIFICATE-----)")]
    InvalidCaCertificate,
    /// The client certificate or its key is not PEM.
    #[error(
        "the client certificate must be PEM (-----BEGIN CERTIFICATE-----) and its key a PEM \
         private key (-----BEGIN PRIVATE KEY-----)"
    )]
    InvalidClientIdentity,
    /// A retry or throttle setting is out of range.
    #[error("invalid retry setting: {0}")]
    InvalidRetry(String),
    /// The TLS configuration of an endpoint was refused by the transport.
    #[error("cannot configure endpoint {endpoint}: {source}")]
    Transport {
        /// The endpoint.
        endpoint: String,
        /// The transport's error.
        #[source]
        source: tonic::transport::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_lists_split_on_commas() {
        let list = parse_endpoint_list("http://a:1, https://b:2,").unwrap();
        assert_eq!(list.len(), 2);
        assert!(!list[0].is_tls());
        assert!(list[1].is_tls());
    }

    #[test]
    fn bad_endpoints_are_refused_with_a_reason() {
        for bad in [
            "",
            "127.0.0.1:50051",
            "ftp://a:1",
            "http://a:1/path",
            "http://",
        ] {
            assert!(parse_endpoint_list(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn timeouts_use_humantime_syntax() {
        assert_eq!(parse_timeout("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_timeout("500ms").unwrap(), Duration::from_millis(500));
        assert!(matches!(
            parse_timeout("0s"),
            Err(SettingsError::ZeroTimeout)
        ));
        assert!(parse_timeout("soon").is_err());
    }
}
