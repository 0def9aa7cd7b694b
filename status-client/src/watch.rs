//! A watch of order events that survives disconnects: when the stream breaks in a way that a
//! new stream can repair (`UNAVAILABLE`, a server restart, a replica going away, a
//! `WATCHER_TOO_SLOW` end, a `RATE_LIMITED` refusal to re-open, after its `RetryInfo` delay),
//! it re-opens with backoff, on another replica when there is one, asking for the events after
//! its resume point. Sequences are strictly increasing, so anything at or below that point is
//! dropped: every event is seen once.
//!
//! The resume point starts at the request's `after_sequence`; when a stream opens, the server's
//! `orders-watch-from` raises it (for a live watch: the last sequence committed when the stream
//! opened), so a watch cut off before its first event resumes from there and misses nothing
//! committed during the cut; each delivered event then moves it to that event's sequence.
//!
//! Opening a stream is a logical call like a unary one (one client span, its attempts
//! beneath); the span of a stream re-opened later hangs under the span that was current when
//! the watch was created, so a long watch stays one trace.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use futures::stream::BoxStream;
use order_status_telemetry::grpc::{AttemptNumber, finish_logical_call, logical_call_span};
use orders_proto::v1::{OrderEvent, WatchOrdersRequest};
use tonic::metadata::MetadataMap;
use tonic::{Code, Request, Streaming};
use tracing::Instrument;

use crate::client::{CallOptions, Client, SERVICE};
use crate::error::{ClientError, readable};
use crate::retry::{is_rate_limited, is_resumable_watch_error};

/// The stream returned by [`Client::watch_orders`]. Ends after yielding an error that cannot be
/// repaired by re-opening; otherwise runs until dropped.
pub struct OrderEventStream {
    inner: BoxStream<'static, Result<OrderEvent, ClientError>>,
    /// The resume point, kept up to date by the stream's state (which the stream owns while an
    /// event is being awaited, hence shared).
    resume_point: Arc<AtomicU64>,
}

impl std::fmt::Debug for OrderEventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderEventStream").finish_non_exhaustive()
    }
}

impl OrderEventStream {
    pub(crate) fn new(client: Client, request: WatchOrdersRequest, options: CallOptions) -> Self {
        Self::from_state(Resuming::new(client, request, options))
    }

    /// Opens the first stream before returning, so that a watch the server refuses (unknown
    /// order, no permission, resume point too old) fails here rather than in the stream.
    /// Resumable failures are retried with backoff until the options' timeout; a `RATE_LIMITED`
    /// refusal after its `RetryInfo` delay, or at once with that error when the delay would
    /// not end before the timeout.
    pub(crate) async fn open(
        client: Client,
        request: WatchOrdersRequest,
        options: CallOptions,
    ) -> Result<Self, ClientError> {
        let mut state = Resuming::new(client, request, options);
        let span = logical_call_span(SERVICE, METHOD);
        let mut attempts = 0;
        let opened = state
            .open_first(&mut attempts)
            .instrument(span.clone())
            .await;
        finish_logical_call(
            &span,
            attempts,
            opened
                .as_ref()
                .map(|_| ())
                .map_err(|error| (error.code(), error.message())),
        );
        opened.map(|()| Self::from_state(state))
    }

    fn from_state(state: Resuming) -> Self {
        let resume_point = Arc::clone(&state.shared_resume_point);
        let inner = futures::stream::unfold(state, |mut state| async move {
            let item = state.next_event().await?;
            Some((item, state))
        });
        Self {
            inner: Box::pin(inner),
            resume_point,
        }
    }

    /// The sequence after which this stream will still deliver every matching event: the
    /// server's `orders-watch-from` (or the request's `after_sequence`) until the first event,
    /// then the sequence of the last event delivered. A new watch with the same `order_id` and
    /// this as its `after_sequence` continues exactly where this one stands: it is the resume
    /// token to keep, or an SSE stream's first `id:`.
    ///
    /// 0 means no position is fixed yet: the stream has not opened (a
    /// [`Client::watch_orders`] stream opens on its first poll), the server does not send
    /// `orders-watch-from`, or this is a one-order watch started at 0 whose first event (the
    /// order's current state) has not been delivered; re-opened, such a watch starts again from
    /// the order's current state.
    pub fn resume_point(&self) -> u64 {
        self.resume_point.load(Ordering::Acquire)
    }
}

/// The method name, as in span names and metric labels.
const METHOD: &str = "WatchOrders";

impl Resuming {
    fn new(client: Client, request: WatchOrdersRequest, options: CallOptions) -> Self {
        Self {
            parent_span: tracing::Span::current(),
            open_timeout: options.timeout_or(client.timeout()),
            client,
            options,
            snapshot_pending: !request.order_id.is_empty() && request.after_sequence == 0,
            order_id: request.order_id,
            resume_point: request.after_sequence,
            shared_resume_point: Arc::new(AtomicU64::new(request.after_sequence)),
            open: None,
            failures: 0,
            avoid: None,
            finished: false,
        }
    }

    /// Opens the first stream within the open timeout, retrying resumable failures with
    /// backoff until then; `attempts` counts the attempts made. A watch not open by the
    /// deadline fails with DEADLINE_EXCEEDED, whose message names the last failure.
    async fn open_first(&mut self, attempts: &mut u32) -> Result<(), ClientError> {
        let deadline = tokio::time::Instant::now() + self.open_timeout;
        let mut last_error = None;
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() {
                return Err(ClientError::deadline_exceeded(
                    self.open_timeout,
                    *attempts,
                    last_error.as_ref(),
                ));
            }
            *attempts += 1;
            match self.open_stream(deadline, *attempts).await {
                Ok(opened) => {
                    self.open = Some(opened);
                    return Ok(());
                }
                Err(OpenFailure::NoAnswer) => {
                    return Err(ClientError::deadline_exceeded(
                        self.open_timeout,
                        *attempts,
                        last_error.as_ref(),
                    ));
                }
                Err(OpenFailure::Failed(error)) if !is_resumable_watch_error(&error) => {
                    return Err(error);
                }
                Err(OpenFailure::Failed(error)) => {
                    self.failures += 1;
                    let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
                    let wait = match rate_limit_delay(&error) {
                        // The server will not take it before the deadline: say so now.
                        Some(delay) if delay >= remaining => return Err(error),
                        Some(delay) => delay,
                        None => self.client.retry_policy().backoff(self.failures),
                    };
                    // A wait that reaches the deadline ends the watch there, not in a retry.
                    if wait < remaining {
                        self.client.metrics().record_retry(METHOD, error.code());
                    }
                    tokio::time::sleep(wait.min(remaining)).await;
                    last_error = Some(error);
                }
            }
        }
    }

    /// Opens a stream after the watch was interrupted: one logical call of one attempt,
    /// under the span the watch was created in. No answer within the open timeout is a
    /// failure like any other here: the watch goes on trying.
    async fn reopen(&mut self) -> Result<(usize, Streaming<OrderEvent>), ClientError> {
        let span = self
            .parent_span
            .in_scope(|| logical_call_span(SERVICE, METHOD));
        let deadline = tokio::time::Instant::now() + self.open_timeout;
        let opened = self
            .open_stream(deadline, 1)
            .instrument(span.clone())
            .await
            .map_err(|failure| match failure {
                OpenFailure::Failed(error) => error,
                OpenFailure::NoAnswer => ClientError::synthetic(
                    Code::Unavailable,
                    format!(
                        "no answer opening the watch within {}",
                        readable(self.open_timeout)
                    ),
                    None,
                ),
            });
        finish_logical_call(
            &span,
            1,
            opened
                .as_ref()
                .map(|_| ())
                .map_err(|error| (error.code(), error.message())),
        );
        opened
    }
}

/// Why an attempt to open a stream failed.
enum OpenFailure {
    /// No answer before the attempt's deadline.
    NoAnswer,
    /// The transport or the server said no.
    Failed(ClientError),
}

impl Stream for OrderEventStream {
    type Item = Result<OrderEvent, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

struct Resuming {
    client: Client,
    /// The span current when the watch was created: the parent of re-opened streams' spans.
    parent_span: tracing::Span,
    options: CallOptions,
    open_timeout: Duration,
    order_id: String,
    /// A one-order watch started at 0 that has not delivered its first event (the order's
    /// current state): it re-opens at 0, for the then current state, and ignores
    /// `orders-watch-from` (which names the sequence of a snapshot it never received).
    snapshot_pending: bool,
    /// Every matching event after this sequence is still to be delivered: the caller's start,
    /// raised by the server's `orders-watch-from`, then the last event delivered.
    resume_point: u64,
    /// `resume_point` as [`OrderEventStream::resume_point`] reads it.
    shared_resume_point: Arc<AtomicU64>,
    /// The current stream and the replica it is on.
    open: Option<(usize, Streaming<OrderEvent>)>,
    /// Consecutive failed or broken streams, for the backoff.
    failures: u32,
    avoid: Option<usize>,
    finished: bool,
}

impl Resuming {
    async fn next_event(&mut self) -> Option<Result<OrderEvent, ClientError>> {
        if self.finished {
            return None;
        }
        loop {
            let Some((replica, stream)) = &mut self.open else {
                match self.reopen().await {
                    Ok(opened) => self.open = Some(opened),
                    Err(error) => {
                        if let Some(final_error) = self.after_failure(error, None).await {
                            return Some(Err(final_error));
                        }
                    }
                }
                continue;
            };
            let replica = *replica;
            match stream.message().await {
                Ok(Some(event)) => {
                    self.failures = 0;
                    if event.sequence <= self.resume_point {
                        continue;
                    }
                    self.snapshot_pending = false;
                    self.move_resume_point(event.sequence);
                    return Some(Ok(event));
                }
                Ok(None) => {
                    // A stream that ends without an error is a server letting go of it (e.g.
                    // draining); the watch is not over for the caller.
                    self.open = None;
                    let ended = ClientError::synthetic(
                        Code::Unavailable,
                        "watch stream ended by the server",
                        None,
                    );
                    self.after_failure(ended, Some(replica)).await;
                }
                Err(status) => {
                    self.open = None;
                    if let Some(final_error) =
                        self.after_failure(status.into(), Some(replica)).await
                    {
                        return Some(Err(final_error));
                    }
                }
            }
        }
    }

    /// Attempt number `attempt` to open a stream, waiting for the server's answer until
    /// `deadline`.
    async fn open_stream(
        &mut self,
        deadline: tokio::time::Instant,
        attempt: u32,
    ) -> Result<(usize, Streaming<OrderEvent>), OpenFailure> {
        let (pick, mut grpc) = self.client.pick(self.avoid);
        let mut request = Request::new(WatchOrdersRequest {
            order_id: self.order_id.clone(),
            after_sequence: self.resume_point,
        });
        if let Some(value) = self.options.authorization_value() {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        request.extensions_mut().insert(AttemptNumber(attempt));
        let opened = match tokio::time::timeout_at(deadline, grpc.watch_orders(request)).await {
            Err(_elapsed) => Err(OpenFailure::NoAnswer),
            Ok(result) => result.map_err(|status| OpenFailure::Failed(status.into())),
        };
        match opened {
            Ok(response) => {
                self.avoid = None;
                if !self.snapshot_pending
                    && let Some(from) = watch_from(response.metadata())
                    && from > self.resume_point
                {
                    self.move_resume_point(from);
                }
                Ok((pick.index, response.into_inner()))
            }
            Err(failure) => {
                let unreachable = match &failure {
                    OpenFailure::NoAnswer => true,
                    OpenFailure::Failed(error) => error.code() == Code::Unavailable,
                };
                if unreachable {
                    self.client.replica_failed(pick.index);
                    self.avoid = Some(pick.index);
                }
                Err(failure)
            }
        }
    }

    /// Handles a failed open or a broken stream: waits the backoff and returns `None` when the
    /// watch should go on, or the error that ends it.
    async fn after_failure(
        &mut self,
        error: ClientError,
        replica: Option<usize>,
    ) -> Option<ClientError> {
        if !is_resumable_watch_error(&error) {
            self.finished = true;
            return Some(error);
        }
        if let Some(index) = replica
            && error.code() == Code::Unavailable
        {
            self.client.replica_failed(index);
            self.avoid = Some(index);
        }
        self.failures += 1;
        let wait = match (rate_limit_delay(&error), error.pushback()) {
            (Some(delay), _) | (None, Some(Ok(delay))) => delay,
            _ => self.client.retry_policy().backoff(self.failures),
        };
        tracing::info!(%error, after_sequence = self.resume_point, ?wait, "watch interrupted; resuming");
        self.client.count(|s| s.watch_resumptions += 1);
        self.client.metrics().record_retry(METHOD, error.code());
        tokio::time::sleep(wait).await;
        None
    }
}

impl Resuming {
    fn move_resume_point(&mut self, sequence: u64) {
        self.resume_point = sequence;
        self.shared_resume_point.store(sequence, Ordering::Release);
    }
}

/// How long to wait before asking again after a rate-limit refusal: the server's `RetryInfo`
/// delay (`None` for any other failure, or a refusal without one: those wait the backoff).
fn rate_limit_delay(error: &ClientError) -> Option<Duration> {
    error.retry_delay().filter(|_| is_rate_limited(error))
}

/// The server's `orders-watch-from`, when it sent a valid one.
fn watch_from(metadata: &MetadataMap) -> Option<u64> {
    let value = metadata.get(orders_proto::WATCH_FROM_METADATA)?;
    let parsed = value.to_str().ok().and_then(|text| text.parse().ok());
    if parsed.is_none() {
        tracing::debug!(?value, "ignoring a malformed orders-watch-from");
    }
    parsed
}
