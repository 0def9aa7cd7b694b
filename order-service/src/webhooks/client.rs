//! One delivery attempt over HTTP/1.1: a POST through the checked [`Connector`], the whole
//! attempt (connect, send, response and its body) bounded by the attempt timeout, the response
//! body read up to a cap and dropped. [`Transport`] is the seam the dispatcher calls, so its
//! schedule can be tested without a network.

use super::connector::{Connection, Connector};
use super::network::check_url;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

/// Response bytes read at most; the rest is not read.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// One POST to make.
#[derive(Debug, Clone)]
pub struct Post {
    /// Where.
    pub url: String,
    /// Extra headers (the Standard Webhooks ones).
    pub headers: Vec<(&'static str, String)>,
    /// The JSON body.
    pub body: Bytes,
    /// How long the whole attempt may take.
    pub timeout: Duration,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The receiver answered.
    Response {
        /// Its status.
        status: u16,
        /// Its `Retry-After`, when it sent one that parses.
        retry_after: Option<Duration>,
    },
    /// No answer within the attempt timeout.
    Timeout,
    /// The target is not allowed (URL rules or address ranges): retried like a network error,
    /// since DNS may change, but reported as what it is.
    Refused(String),
    /// Resolving, connecting, TLS or the exchange failed.
    Network(String),
}

impl Outcome {
    /// The metrics label of this outcome.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Response { status, .. } if (200..300).contains(status) => "delivered",
            Outcome::Response { .. } => "http_error",
            Outcome::Timeout => "timeout",
            Outcome::Refused(_) => "refused",
            Outcome::Network(_) => "network_error",
        }
    }
}

/// Makes delivery attempts.
#[async_trait::async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Makes one attempt.
    async fn post(&self, post: Post) -> Outcome;
}

/// The real transport: HTTP/1.1 over the checked connector.
#[derive(Clone)]
pub struct HttpTransport {
    connector: Connector,
}

impl HttpTransport {
    /// Attempts through `connector`.
    pub fn new(connector: Connector) -> Self {
        HttpTransport { connector }
    }
}

#[async_trait::async_trait]
impl Transport for HttpTransport {
    async fn post(&self, post: Post) -> Outcome {
        let deadline = Instant::now() + post.timeout;
        match tokio::time::timeout_at(deadline, self.attempt(post)).await {
            Ok(outcome) => outcome,
            Err(_elapsed) => Outcome::Timeout,
        }
    }
}

impl HttpTransport {
    async fn attempt(&self, post: Post) -> Outcome {
        let target = match check_url(&post.url, self.connector.allowed()) {
            Ok(target) => target,
            Err(problem) => return Outcome::Refused(format!("the URL {problem}")),
        };
        let connection = match self.connector.connect(&target).await {
            Ok(connection) => connection,
            Err(error @ super::connector::ConnectError::Refused { .. }) => {
                return Outcome::Refused(error.to_string());
            }
            Err(error) => {
                return Outcome::Network(crate::error_chain::DisplayChain(&error).to_string());
            }
        };
        let authority = target
            .uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_else(|| target.host.clone());
        let path = target
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let mut request = http::Request::post(path)
            .header(http::header::HOST, authority)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, "order-service-webhooks/1");
        for (name, value) in &post.headers {
            request = request.header(*name, value.as_str());
        }
        let request = match request.body(Full::new(post.body)) {
            Ok(request) => request,
            Err(error) => return Outcome::Network(format!("cannot build the request: {error}")),
        };
        let exchanged = match connection {
            Connection::Plain(stream) => exchange(stream, request).await,
            Connection::Tls(stream) => exchange(*stream, request).await,
        };
        match exchanged {
            Ok(outcome) => outcome,
            Err(error) => Outcome::Network(crate::error_chain::DisplayChain(&error).to_string()),
        }
    }
}

async fn exchange<IO>(io: IO, request: http::Request<Full<Bytes>>) -> Result<Outcome, hyper::Error>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let response = sender.send_request(request).await;
    let outcome = match response {
        Ok(response) => {
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .and_then(parse_retry_after);
            // Read (and drop) at most the cap: a receiver may answer with anything.
            let _ = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await;
            Ok(Outcome::Response {
                status,
                retry_after,
            })
        }
        Err(error) => Err(error),
    };
    driver.abort();
    outcome
}

/// `Retry-After` as seconds or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
