//! Delivery: a supervisor claims the enabled endpoints this replica may deliver (a lease on
//! PostgreSQL, all of them on SQLite) and runs one worker per endpoint. A worker reads the event
//! log after the endpoint's cursor in sequence order, skips events of types the endpoint does
//! not want (moving the cursor over them), and delivers one event at a time: sign, POST, record
//! the attempt — and on a 2xx move the cursor — in one transaction. A failed attempt waits its
//! turn on the retry schedule; `410 Gone` or an exhausted schedule disables the endpoint, which
//! keeps its cursor, so re-enabling resumes where it stopped.
//!
//! At least once, never out of order: the cursor moves only after the receiver acknowledged,
//! so a crash between the 2xx and the commit delivers that event again, with the same id.

use super::client::{Outcome, Post, Transport};
use super::payload;
use super::schedule::RetrySchedule;
use super::secrets::SecretBox;
use crate::domain::{Error, OrderEvent, UnixMicros};
use crate::error_chain::DisplayChain;
use crate::store::webhooks::{AttemptRecord, DeliveryRow, EndpointRow, WebhookStore};
use crate::store::{LiveReceiver, OrderStore};
use bytes::Bytes;
use order_status_telemetry::Metrics;
use order_status_webhooks::{HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, Secret};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Events read from the log per query.
const PAGE: usize = 128;
/// How often the supervisor claims endpoints and a waiting worker looks again without being
/// woken (another replica's change, a lost wake-up), unless set otherwise.
pub const POLL: Duration = Duration::from_secs(1);
/// The same when one process owns the store (SQLite): it hears of every change itself.
pub const SINGLE_PROCESS_POLL: Duration = Duration::from_secs(30);
/// How long a worker waits after a store failure before trying again.
const STORE_RETRY: Duration = Duration::from_secs(1);

/// How deliveries are made.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    /// Longest one attempt may take.
    pub attempt_timeout: Duration,
    /// Waits between attempts of one event.
    pub schedule: RetrySchedule,
    /// How long a claimed endpoint stays this replica's without being claimed again.
    pub lease: Duration,
    /// Seals and opens secrets.
    pub secrets: SecretBox,
    /// How often endpoints are claimed (and the lease renewed) and idle workers look again.
    pub poll: Duration,
}

/// Runs the deliveries of one replica.
pub struct Dispatcher {
    orders: Arc<dyn OrderStore>,
    hooks: Arc<dyn WebhookStore>,
    transport: Arc<dyn Transport>,
    settings: DeliverySettings,
    metrics: Metrics,
    /// This replica's lease owner name.
    owner: String,
    /// Bumped when an endpoint is changed through this replica: wakes workers and the
    /// supervisor at once.
    changes: watch::Sender<u64>,
}

impl Dispatcher {
    /// A dispatcher over the stores, delivering through `transport`.
    pub fn new(
        orders: Arc<dyn OrderStore>,
        hooks: Arc<dyn WebhookStore>,
        transport: Arc<dyn Transport>,
        settings: DeliverySettings,
        metrics: Metrics,
    ) -> Arc<Self> {
        Arc::new(Dispatcher {
            orders,
            hooks,
            transport,
            settings,
            metrics,
            owner: format!("replica-{}", uuid::Uuid::now_v7().simple()),
            changes: watch::channel(0).0,
        })
    }

    /// Tells the workers that an endpoint changed (enabled, replayed, updated, deleted).
    pub fn nudge(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Claims endpoints and runs their workers until `stop` is cancelled.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut workers: HashMap<String, (JoinHandle<()>, CancellationToken)> = HashMap::new();
        let mut changes = self.changes.subscribe();
        let mut last_claim = Instant::now();
        let mut failing = false;
        loop {
            changes.borrow_and_update();
            match self
                .hooks
                .claim_endpoints(&self.owner, self.settings.lease)
                .await
            {
                Ok(endpoints) => {
                    if std::mem::take(&mut failing) {
                        tracing::info!("webhook endpoints can be claimed again");
                    }
                    last_claim = Instant::now();
                    let claimed: std::collections::HashSet<&str> =
                        endpoints.iter().map(|e| e.id.as_str()).collect();
                    workers.retain(|id, (handle, cancel)| {
                        let keep = claimed.contains(id.as_str()) && !handle.is_finished();
                        if !keep {
                            cancel.cancel();
                        }
                        keep
                    });
                    for endpoint in &endpoints {
                        if !workers.contains_key(&endpoint.id) {
                            let cancel = stop.child_token();
                            let handle = tokio::spawn(
                                Arc::clone(&self).work(endpoint.id.clone(), cancel.clone()),
                            );
                            workers.insert(endpoint.id.clone(), (handle, cancel));
                        }
                    }
                }
                Err(error) => {
                    if !std::mem::replace(&mut failing, true) {
                        tracing::warn!(
                            error = %DisplayChain(&error),
                            "cannot claim webhook endpoints; deliveries pause while it fails"
                        );
                    }
                    // A lease not renewed may be taken over: stop delivering before it lapses.
                    if last_claim.elapsed() > self.settings.lease / 2 {
                        for (_, (_, cancel)) in workers.drain() {
                            cancel.cancel();
                        }
                    }
                }
            }
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(self.settings.poll) => {}
                _ = changes.changed() => {}
            }
        }
        for (_, (handle, cancel)) in workers {
            cancel.cancel();
            let _ = handle.await;
        }
    }

    /// Delivers one endpoint's events until it is disabled or deleted, or `stop`.
    async fn work(self: Arc<Self>, id: String, stop: CancellationToken) {
        let mut worker = Worker {
            dispatcher: Arc::clone(&self),
            live: self.orders.subscribe(),
            changes: self.changes.subscribe(),
            due: None,
            buffer: VecDeque::new(),
            id,
        };
        tokio::select! {
            () = stop.cancelled() => {}
            () = worker.run() => {}
        }
    }
}

/// What decides a wait: the endpoint's cursor and failed attempts, and when the next is due.
type Due = (u64, u32, Instant);

struct Worker {
    dispatcher: Arc<Dispatcher>,
    id: String,
    /// Only a wake-up: the events themselves are read from the log after the cursor.
    live: LiveReceiver,
    changes: watch::Receiver<u64>,
    /// When the next attempt of the event after the cursor is due (by the runtime's clock).
    due: Option<Due>,
    /// Events after the cursor read but not delivered yet.
    buffer: VecDeque<OrderEvent>,
}

impl Worker {
    async fn run(&mut self) {
        loop {
            self.changes.borrow_and_update();
            let endpoint = match self.dispatcher.hooks.endpoint(&self.id).await {
                Ok(endpoint) => endpoint,
                Err(Error::EndpointNotFound(_)) => return,
                Err(error) => {
                    tracing::warn!(endpoint_id = %self.id, error = %DisplayChain(&error), "cannot read a webhook endpoint");
                    self.pause(STORE_RETRY).await;
                    continue;
                }
            };
            if !endpoint.enabled {
                return;
            }
            if endpoint.failed_attempts > 0 {
                let at = match self.due {
                    Some((cursor, attempts, at))
                        if cursor == endpoint.cursor && attempts == endpoint.failed_attempts =>
                    {
                        at
                    }
                    // Set by another process (a restart, another replica): from the stored time.
                    _ => {
                        let wait = endpoint
                            .next_attempt
                            .map(|next| {
                                Duration::from_micros(
                                    next.0.saturating_sub(UnixMicros::now().0).max(0) as u64,
                                )
                            })
                            .unwrap_or_default();
                        Instant::now() + wait
                    }
                };
                self.due = Some((endpoint.cursor, endpoint.failed_attempts, at));
                if at > Instant::now() {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        _ = self.changes.changed() => {}
                    }
                    continue;
                }
            }
            if self
                .buffer
                .front()
                .is_none_or(|e| e.sequence != endpoint.cursor + 1)
            {
                self.buffer.clear();
                match self
                    .dispatcher
                    .orders
                    .events_after(endpoint.cursor, None, PAGE)
                    .await
                {
                    Ok(events) => self.buffer.extend(events),
                    Err(error) => {
                        tracing::error!(
                            endpoint_id = %self.id,
                            cursor = endpoint.cursor,
                            error = %DisplayChain(&error),
                            "cannot read the events after a webhook endpoint's cursor \
                             (replay from a retained sequence if they were pruned)"
                        );
                        self.pause(STORE_RETRY * 5).await;
                        continue;
                    }
                }
                if let Ok(bounds) = self.dispatcher.orders.log_bounds().await {
                    self.dispatcher.metrics.record_webhook_lag(
                        &self.id,
                        bounds.latest.saturating_sub(endpoint.cursor),
                    );
                }
            }
            let Some(first) = self.buffer.front() else {
                self.wait_for_events().await;
                continue;
            };
            if first.sequence <= endpoint.cursor {
                self.buffer.clear();
                continue;
            }
            // Move the cursor over every leading event of a type not wanted, in one update.
            let skipped = self
                .buffer
                .iter()
                .take_while(|event| !wants(&endpoint, event))
                .map(|event| event.sequence)
                .last();
            if let Some(through) = skipped {
                match self
                    .dispatcher
                    .hooks
                    .skip_through(&self.id, &self.dispatcher.owner, endpoint.cursor, through)
                    .await
                {
                    Ok(_) => self.buffer.retain(|event| event.sequence > through),
                    Err(error) => {
                        tracing::warn!(endpoint_id = %self.id, error = %DisplayChain(&error), "cannot move a webhook cursor");
                        self.pause(STORE_RETRY).await;
                    }
                }
                continue;
            }
            let event = first.clone();
            self.deliver(&endpoint, &event).await;
        }
    }

    /// Waits for a new event, a change of an endpoint, or the poll interval.
    async fn wait_for_events(&mut self) {
        tokio::select! {
            received = self.live.recv() => {
                if let Err(RecvError::Closed) = received {
                    tokio::time::sleep(self.dispatcher.settings.poll).await;
                }
            }
            _ = self.changes.changed() => {}
            () = tokio::time::sleep(self.dispatcher.settings.poll) => {}
        }
    }

    async fn pause(&mut self, wait: Duration) {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = self.changes.changed() => {}
        }
    }

    /// Makes one attempt of `event` and records it.
    async fn deliver(&mut self, endpoint: &EndpointRow, event: &OrderEvent) {
        let dispatcher = &self.dispatcher;
        let settings = &dispatcher.settings;
        let secrets = match signing_secrets(&settings.secrets, endpoint) {
            Ok(secrets) => secrets,
            Err(error) => {
                tracing::error!(endpoint_id = %endpoint.id, error = %DisplayChain(&*error), "cannot open a webhook endpoint's secret; its deliveries wait");
                self.pause(STORE_RETRY * 30).await;
                return;
            }
        };
        let attempt = endpoint.failed_attempts + 1;
        let webhook_id = payload::webhook_id(&endpoint.id, event.sequence);
        let body = Bytes::from(payload::body(event));
        let timestamp = order_status_webhooks::unix_now();
        let secret_refs: Vec<&Secret> = secrets.iter().collect();
        let signature = order_status_webhooks::sign(&secret_refs, &webhook_id, timestamp, &body);
        let span = tracing::info_span!(
            "webhook.deliver",
            otel.kind = "client",
            endpoint_id = %endpoint.id,
            sequence = event.sequence,
            attempt,
            webhook_id = %webhook_id,
            outcome = tracing::field::Empty,
            http.response.status_code = tracing::field::Empty,
        );
        if let Some(parent) = &event.trace_parent {
            order_status_telemetry::propagation::link_to_traceparent(&span, parent);
        }
        let post = Post {
            url: endpoint.url.clone(),
            headers: vec![
                (HEADER_ID, webhook_id.clone()),
                (HEADER_TIMESTAMP, timestamp.to_string()),
                (HEADER_SIGNATURE, signature),
            ],
            body,
            timeout: settings.attempt_timeout,
        };
        let attempt_time = UnixMicros::now();
        let started = Instant::now();
        let outcome = dispatcher
            .transport
            .post(post)
            .instrument(span.clone())
            .await;
        let latency = started.elapsed();
        span.record("outcome", outcome.label());
        dispatcher
            .metrics
            .record_webhook_attempt(outcome.label(), latency);
        let (http_status, error, retry_after) = match &outcome {
            Outcome::Response {
                status,
                retry_after,
            } => {
                span.record("http.response.status_code", *status);
                let error = if (200..300).contains(status) {
                    String::new()
                } else {
                    format!("the receiver answered HTTP {status}")
                };
                (i32::from(*status), error, *retry_after)
            }
            Outcome::Timeout => (
                0,
                format!(
                    "no response within the attempt timeout ({})",
                    humantime::format_duration(settings.attempt_timeout)
                ),
                None,
            ),
            Outcome::Refused(why) | Outcome::Network(why) => (0, why.clone(), None),
        };
        let delivered = (200..300).contains(&http_status);
        let (wait, disable) = if delivered {
            (None, None)
        } else if http_status == 410 {
            (
                None,
                Some("the endpoint answered 410 Gone; enable it again to resume".to_owned()),
            )
        } else {
            match settings
                .schedule
                .wait_after(attempt, rand::random::<f64>(), retry_after)
            {
                Some(wait) => (Some(wait), None),
                None => (
                    None,
                    Some(format!(
                        "event {} failed {attempt} attempts (last: {error}); enable it again \
                         to resume from delivered_through_sequence",
                        event.sequence
                    )),
                ),
            }
        };
        if !delivered {
            tracing::info!(
                parent: &span,
                endpoint_id = %endpoint.id,
                sequence = event.sequence,
                attempt,
                error = %error,
                retry_in = ?wait,
                disabled = disable.is_some(),
                "webhook delivery attempt failed"
            );
        }
        let next_attempt =
            wait.map(|wait| UnixMicros(attempt_time.0.saturating_add(wait.as_micros() as i64)));
        let record = AttemptRecord {
            endpoint_id: endpoint.id.clone(),
            expected_cursor: endpoint.cursor,
            delivery: DeliveryRow {
                id: 0,
                webhook_id,
                sequence: event.sequence,
                attempt,
                attempt_time,
                http_status,
                error,
                latency,
                next_attempt,
                delivered,
            },
            disable,
        };
        match dispatcher
            .hooks
            .record_attempt(&dispatcher.owner, record)
            .await
        {
            Ok(true) => {
                if delivered {
                    self.buffer.pop_front();
                    self.due = None;
                } else if let Some(wait) = wait {
                    self.due = Some((endpoint.cursor, attempt, started + latency + wait));
                }
            }
            // The cursor, the endpoint or the lease changed meanwhile: read it again.
            Ok(false) => self.buffer.clear(),
            Err(error) => {
                tracing::warn!(
                    endpoint_id = %endpoint.id,
                    error = %DisplayChain(&error),
                    "cannot record a webhook attempt; the event will be delivered again"
                );
                self.pause(STORE_RETRY).await;
            }
        }
    }
}

/// Whether `endpoint` wants `event` by its type.
fn wants(endpoint: &EndpointRow, event: &OrderEvent) -> bool {
    endpoint.event_types.is_empty()
        || endpoint
            .event_types
            .iter()
            .any(|wanted| wanted == payload::event_type(event))
}

/// The secrets that sign now: the current one, and the previous one until it expires.
fn signing_secrets(
    secrets: &SecretBox,
    endpoint: &EndpointRow,
) -> Result<Vec<Secret>, Box<dyn std::error::Error + Send + Sync>> {
    let mut signing = vec![secrets.open(&endpoint.id, &endpoint.secret)?];
    if let Some((previous, until)) = &endpoint.previous_secret
        && *until > UnixMicros::now()
    {
        signing.push(secrets.open(&endpoint.id, previous)?);
    }
    Ok(signing)
}

#[cfg(test)]
mod tests {
    //! The retry schedule on paused time: a real SQLite store, a transport that answers from a
    //! script and notes when each attempt was made on the runtime's (virtual) clock.

    use super::*;
    use crate::domain::{
        Change, CreateOrder, NewOrder, OrderId, Principal, RawLineItem, Violations, Write,
    };
    use crate::store::webhooks::NewEndpoint;
    use crate::store::{Retention, SqliteStore, StoreOptions};
    use std::sync::Mutex;
    use tokio::sync::mpsc;

    struct Scripted {
        answers: Mutex<VecDeque<Outcome>>,
        made: mpsc::UnboundedSender<(Instant, Post)>,
    }

    #[async_trait::async_trait]
    impl Transport for Scripted {
        async fn post(&self, post: Post) -> Outcome {
            let _ = self.made.send((Instant::now(), post));
            self.answers
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or(Outcome::Response {
                    status: 200,
                    retry_after: None,
                })
        }
    }

    struct Setup {
        store: Arc<SqliteStore>,
        attempts: mpsc::UnboundedReceiver<(Instant, Post)>,
        stop: CancellationToken,
        _dir: tempfile::TempDir,
    }

    async fn setup(answers: Vec<Outcome>) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let options = StoreOptions {
            retention: Retention {
                events: Duration::from_secs(7 * 24 * 3600),
                idempotency_keys: Duration::from_secs(48 * 3600),
            },
            live_buffer: 1024,
        };
        let store = Arc::new(SqliteStore::open(&dir.path().join("orders.db"), options).unwrap());
        let secrets = SecretBox::plain();
        store
            .create_endpoint(
                None,
                NewEndpoint {
                    id: "we_1".into(),
                    url: "https://receiver.example/hook".into(),
                    event_types: vec![],
                    description: String::new(),
                    secret: secrets.seal("we_1", &Secret::generate()),
                    cursor: 0,
                    now: UnixMicros::now(),
                },
            )
            .await
            .unwrap();
        let item = RawLineItem {
            sku: "A-1",
            quantity: 1,
            unit_price_cents: 100,
        };
        let order =
            NewOrder::parse("c-1", [item].into_iter(), "EUR", &mut Violations::default()).unwrap();
        store
            .write(
                Write {
                    principal: Principal::new("p"),
                    request_id: None,
                    change: Change::Create(CreateOrder {
                        order_id: OrderId::generate(),
                        order,
                    }),
                    now: UnixMicros::now(),
                    trace_parent: None,
                },
                None,
            )
            .await
            .unwrap();
        let (made, attempts) = mpsc::unbounded_channel();
        let dispatcher = Dispatcher::new(
            Arc::clone(&store) as Arc<dyn OrderStore>,
            Arc::clone(&store) as Arc<dyn WebhookStore>,
            Arc::new(Scripted {
                answers: Mutex::new(answers.into()),
                made,
            }),
            DeliverySettings {
                attempt_timeout: Duration::from_secs(10),
                schedule: RetrySchedule::default(),
                lease: Duration::from_secs(15),
                secrets,
                // Nothing changes behind the dispatcher's back here: no need to poll often on a
                // clock that covers days.
                poll: Duration::from_secs(600),
            },
            Metrics::global(),
        );
        let stop = CancellationToken::new();
        tokio::spawn(dispatcher.run(stop.clone()));
        Setup {
            store,
            attempts,
            stop,
            _dir: dir,
        }
    }

    fn failure() -> Outcome {
        Outcome::Response {
            status: 500,
            retry_after: None,
        }
    }

    /// Slack on top of a wait: the paused clock may jump to the supervisor's next one-second
    /// poll while the store works on something not run as blocking work.
    const SLACK: Duration = Duration::from_secs(3);

    #[tokio::test(start_paused = true)]
    async fn failed_attempts_follow_the_schedule_then_disable_the_endpoint() {
        let schedule = RetrySchedule::default();
        let mut setup = setup((0..schedule.attempts()).map(|_| failure()).collect()).await;
        let mut times = Vec::new();
        let mut ids = Vec::new();
        for _ in 0..schedule.attempts() {
            let (at, post) = setup.attempts.recv().await.unwrap();
            times.push(at);
            ids.push(post.headers[0].1.clone());
        }
        assert!(
            ids.iter().all(|id| *id == ids[0]),
            "one webhook-id: {ids:?}"
        );
        for (attempt, pair) in (1..).zip(times.windows(2)) {
            let waited = pair[1] - pair[0];
            let planned = schedule.wait_after(attempt, 0.0, None).unwrap();
            assert!(
                waited >= planned,
                "attempt {attempt}: waited {waited:?} < {planned:?}"
            );
            assert!(
                waited <= planned.mul_f64(1.1) + SLACK,
                "attempt {attempt}: waited {waited:?}, planned {planned:?}"
            );
        }
        let disabled = loop {
            let endpoint = setup.store.endpoint("we_1").await.unwrap();
            if !endpoint.enabled {
                break endpoint;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(
            disabled.disabled_reason.contains("failed 10 attempts"),
            "{}",
            disabled.disabled_reason
        );
        assert_eq!(disabled.cursor, 0, "the event stays replayable");
        let log = setup.store.deliveries("we_1", i64::MAX, 100).await.unwrap();
        assert_eq!(log.len(), 10);
        assert!(log[0].next_attempt.is_none() && log[1].next_attempt.is_some());
        setup.stop.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_honoured() {
        let mut setup = setup(vec![Outcome::Response {
            status: 429,
            retry_after: Some(Duration::from_secs(3600)),
        }])
        .await;
        let (first, _) = setup.attempts.recv().await.unwrap();
        let (second, _) = setup.attempts.recv().await.unwrap();
        let waited = second - first;
        assert!(waited >= Duration::from_secs(3600), "{waited:?}");
        assert!(waited <= Duration::from_secs(3600) + SLACK, "{waited:?}");
        setup.stop.cancel();
    }
}
