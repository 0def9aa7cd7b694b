//! Deadlines. The caller's `grpc-timeout` bounds the whole call, body included: a response
//! stream still open when it expires ends with DEADLINE_EXCEEDED. The server's own maximum bounds
//! the work of producing a response, so no handler runs forever even when the client set no
//! deadline. On expiry the gate drops the handler's future (abandoning its work; the store skips
//! writes whose caller is gone) and answers DEADLINE_EXCEEDED, the code the gRPC spec asks for;
//! tonic's own timeout would say CANCELLED, which is why the header is parsed here and tonic's
//! server is not used.

use super::error::status;
use super::wire::{Body, error_response};
use http::HeaderMap;
use http_body::{Body as HttpBody, Frame, SizeHint};
use orders_proto::{grpc_timeout, reason};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};
use tonic::Code;

/// The deadlines of one call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CallDeadlines {
    /// The caller's, from `grpc-timeout`: bounds the whole call, response body included.
    call: Option<Instant>,
    /// The earlier of the caller's and the server's maximum: bounds the handler's work.
    pub(crate) work: Instant,
    /// Whose deadline `work` is, for the error message.
    whose: &'static str,
}

impl CallDeadlines {
    /// The deadlines of a call with these request headers, starting now.
    pub(crate) fn new(headers: &HeaderMap, max: Duration) -> Self {
        let now = Instant::now();
        let call = parse_grpc_timeout(headers).map(|timeout| now + timeout);
        let server = now + max;
        match call {
            Some(client) if client <= server => CallDeadlines {
                call,
                work: client,
                whose: "the call's deadline",
            },
            _ => CallDeadlines {
                call,
                work: server,
                whose: "the server's maximum call duration",
            },
        }
    }

    /// The answer when the handler did not finish by [`CallDeadlines::work`].
    pub(crate) fn expired(&self) -> http::Response<Body> {
        error_response(status(
            Code::DeadlineExceeded,
            reason::DEADLINE_EXCEEDED,
            format!("{} passed before the server answered", self.whose),
        ))
    }

    /// The response with its body cut off by DEADLINE_EXCEEDED trailers at the call's deadline.
    pub(crate) fn bound_body(&self, response: http::Response<Body>) -> http::Response<Body> {
        match self.call {
            Some(deadline) => response.map(|body| Body::new(DeadlineBody::new(body, deadline))),
            None => response,
        }
    }
}

/// The caller's timeout from `grpc-timeout`. A malformed value is ignored, as other gRPC servers
/// do.
fn parse_grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    grpc_timeout::parse(headers.get("grpc-timeout")?.to_str().ok()?)
}

pin_project_lite::pin_project! {
    /// A response body that ends with DEADLINE_EXCEEDED trailers if it is still open when the
    /// call's deadline passes.
    struct DeadlineBody {
        #[pin]
        inner: Body,
        #[pin]
        expiry: Sleep,
        ended: bool,
    }
}

impl DeadlineBody {
    fn new(inner: Body, deadline: Instant) -> Self {
        DeadlineBody {
            inner,
            expiry: tokio::time::sleep_until(deadline),
            ended: false,
        }
    }
}

impl HttpBody for DeadlineBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        if *this.ended {
            return Poll::Ready(None);
        }
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            if frame.is_none() {
                *this.ended = true;
            }
            return Poll::Ready(frame);
        }
        if this.expiry.poll(cx).is_ready() {
            *this.ended = true;
            let mut trailers = HeaderMap::new();
            status(
                Code::DeadlineExceeded,
                reason::DEADLINE_EXCEEDED,
                "the call's deadline passed",
            )
            .add_header(&mut trailers)
            .ok();
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
