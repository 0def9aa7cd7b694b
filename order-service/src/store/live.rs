//! Fan-out of committed events to every open watch stream, in two stages so that writers never
//! wait for watchers, and woken in groups so that no call waits behind the whole fan-out:
//!
//! 1. A publisher (the SQLite writer thread, the PostgreSQL tailer) hands each committed event to
//!    an unbounded queue: a push and at most one wake-up, whatever the number of watchers.
//! 2. One fan-out task drains everything queued and sends it, in order, on a bounded broadcast
//!    that no receiver waits on. It then wakes the waiting watchers one group
//!    ([`WATCHERS_PER_GROUP`]) at a time, and between two groups yields until every other task
//!    that is ready has run: a create's reply or a unary call woken during a fan-out to 10,000
//!    watchers waits for one group's wake-ups, not for all of them. A batch (a group commit, a
//!    page the tailer read) wakes each watcher at most once, and the watcher then takes every
//!    event available in one poll.
//!
//! A watcher that falls more than the broadcast's capacity behind finds out (it lagged) instead
//! of slowing anyone down.
//!
//! Order and completeness: there is one queue and one task, so events reach the broadcast in the
//! order they were published. An event reaches the broadcast after it was published, which is
//! after it committed, so a receiver subscribed before an event committed receives it: the
//! subscribe-before-read rule of [`super::EventWatch`] holds with the extra stage. (Events
//! committed before a subscription may still reach it from the queue; the watch skips every
//! event at or below what it has delivered, as it does for the replay.) A receiver registers for
//! its group's next wake-up before it finds the broadcast empty, and the fan-out wakes the groups
//! after it has sent, so no event is left unnoticed in the broadcast.
//!
//! Each event is shared ([`LiveEvent`]) by every watcher, and so is its wire encoding: made once,
//! by the first watch stream that sends it.

use crate::domain::OrderEvent;
use orders_proto::encoded::EncodedOrderEvent;
use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context, Poll, ready};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::futures::OwnedNotified;
use tokio::sync::{Notify, broadcast, mpsc};

/// Most queued items the fan-out task takes in one go.
const FAN_OUT_BATCH: usize = 1024;

/// Watchers woken together. A group's wake-ups cost about 32 × 3 µs of CPU on this project's
/// test machine, so a create's reply or a unary call woken during a fan-out waits about 0.1 ms for
/// the group under way, at the price of a yield per group. Small groups also cost less per
/// delivery than large ones: the woken streams and the connection tasks they wake fit in the
/// worker's run queue (256 tasks), so each connection writes the frames of its woken streams
/// together instead of the queue spilling into the runtime's shared one. Measured with
/// `fanout-bench` (10,000 watchers, one core): 32 or 64 per group 2.9-3.2 µs per delivery, 128
/// 3.7 µs, 256 and a single group 4.2-4.6 µs. Watchers join the first group with room, so the
/// streams of one connection, usually opened one after another, share a group.
const WATCHERS_PER_GROUP: usize = 32;

/// A committed event as the live feed shares it with every watcher.
#[derive(Debug)]
pub struct LiveEvent {
    event: OrderEvent,
    /// The event as `WatchOrders` sends it, encoded by the first stream that needs it and then
    /// copied by every other (the store only keeps it; the gRPC layer makes it).
    encoded: OnceLock<EncodedOrderEvent>,
}

impl LiveEvent {
    /// A committed event, not encoded yet.
    pub fn new(event: OrderEvent) -> Self {
        LiveEvent {
            event,
            encoded: OnceLock::new(),
        }
    }

    /// The event's wire encoding: `encode` makes it the first time, every later call (from any
    /// watcher) gets the same bytes.
    pub fn encoded(
        &self,
        encode: impl FnOnce(&OrderEvent) -> EncodedOrderEvent,
    ) -> EncodedOrderEvent {
        self.encoded.get_or_init(|| encode(&self.event)).clone()
    }
}

impl Deref for LiveEvent {
    type Target = OrderEvent;

    fn deref(&self) -> &OrderEvent {
        &self.event
    }
}

/// What the live feed carries, in sequence order.
#[derive(Debug, Clone)]
pub enum Live {
    /// A committed event.
    Event(Arc<LiveEvent>),
    /// The events after `after` up to `through` were pruned before this process could publish
    /// them (it fell behind the log by more than the retention, e.g. while frozen): a subscriber
    /// that had not got past `through` cannot be given them, and must not go on as if it had.
    Pruned {
        /// The last sequence published before the hole.
        after: u64,
        /// The last sequence of the hole.
        through: u64,
    },
}

/// The publishing side of the live event feed, and where subscribers subscribe. Clones share
/// one feed; the feed closes (subscribers see `Closed`) when every clone is gone and the fan-out
/// task has sent what was queued.
#[derive(Debug, Clone)]
pub struct LiveEvents {
    /// To the fan-out task.
    queue: mpsc::UnboundedSender<Live>,
    /// Where subscribers join (the fan-out task sends and wakes).
    feed: Arc<Feed>,
}

/// What subscribers and the fan-out task share.
#[derive(Debug)]
struct Feed {
    /// Only for subscribing: the fan-out task holds the sender, so the broadcast closes when it
    /// ends.
    broadcast: broadcast::WeakSender<Live>,
    /// The wake-up groups, never removed (a receiver keeps its group's index), reused as their
    /// members leave.
    groups: Mutex<Vec<Group>>,
}

#[derive(Debug)]
struct Group {
    wake: Arc<Notify>,
    members: usize,
}

impl Feed {
    fn groups(&self) -> MutexGuard<'_, Vec<Group>> {
        // The lock guards counts only, left consistent at every step.
        self.groups.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Joins the first group with room (or a new one): its index and its wake-up.
    fn join(&self) -> (usize, Arc<Notify>) {
        let mut groups = self.groups();
        let index = match groups
            .iter()
            .position(|group| group.members < WATCHERS_PER_GROUP)
        {
            Some(index) => index,
            None => {
                groups.push(Group {
                    wake: Arc::new(Notify::new()),
                    members: 0,
                });
                groups.len() - 1
            }
        };
        groups[index].members += 1;
        (index, Arc::clone(&groups[index].wake))
    }

    fn leave(&self, index: usize) {
        if let Some(group) = self.groups().get_mut(index) {
            group.members -= 1;
        }
    }

    /// The wake-ups of the groups that have members, into `wakes`.
    fn wakes_of_members(&self, wakes: &mut Vec<Arc<Notify>>) {
        wakes.clear();
        wakes.extend(
            self.groups()
                .iter()
                .filter(|group| group.members > 0)
                .map(|group| Arc::clone(&group.wake)),
        );
    }
}

impl LiveEvents {
    /// A feed that keeps up to `capacity` events for the slowest watcher. Starts its fan-out
    /// task, so it must be called inside a Tokio runtime.
    pub fn new(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity);
        let (queue, queued) = mpsc::unbounded_channel();
        let feed = Arc::new(Feed {
            broadcast: sender.downgrade(),
            groups: Mutex::new(Vec::new()),
        });
        tokio::spawn(fan_out(
            queued,
            Sending {
                sender: Some(sender),
                feed: Arc::clone(&feed),
            },
        ));
        LiveEvents { queue, feed }
    }

    /// Publishes a committed event (no one listening is fine). Never waits.
    pub fn publish(&self, event: OrderEvent) {
        self.enqueue(Live::Event(Arc::new(LiveEvent::new(event))));
    }

    /// Says that the events after `after` up to `through` cannot be published: pruned.
    pub fn publish_pruned(&self, after: u64, through: u64) {
        self.enqueue(Live::Pruned { after, through });
    }

    fn enqueue(&self, live: Live) {
        // Fails only once the fan-out task is gone: the runtime is shutting down, and so is
        // every watcher.
        let _ = self.queue.send(live);
    }

    /// A receiver of everything published from now on. (After the feed closed, one that is
    /// closed already.)
    pub fn subscribe(&self) -> LiveReceiver {
        let (group, wake) = self.feed.join();
        // Registered for the group's next wake-up before anything is received (creating the
        // future is enough for `notify_waiters`).
        let waiting = Box::pin(Arc::clone(&wake).notified_owned());
        let events = match self.feed.broadcast.upgrade() {
            Some(sender) => sender.subscribe(),
            None => broadcast::channel(1).1,
        };
        LiveReceiver {
            events,
            wake,
            waiting,
            feed: Arc::clone(&self.feed),
            group,
        }
    }
}

/// One subscriber's end of the live feed: everything published after it subscribed, in order.
#[derive(Debug)]
pub struct LiveReceiver {
    events: broadcast::Receiver<Live>,
    /// Its group's wake-up.
    wake: Arc<Notify>,
    /// Registered for the group's next wake-up since before the last time the broadcast was
    /// found empty (kept across polls: one registration per wait, made once).
    waiting: Pin<Box<OwnedNotified>>,
    feed: Arc<Feed>,
    group: usize,
}

impl LiveReceiver {
    /// The next item, without waiting when one is there; `Lagged` when the receiver fell more
    /// than the feed's capacity behind, `Closed` once the feed closed and everything was taken.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Live, RecvError>> {
        loop {
            match self.events.try_recv() {
                Ok(live) => return Poll::Ready(Ok(live)),
                Err(TryRecvError::Lagged(missed)) => {
                    return Poll::Ready(Err(RecvError::Lagged(missed)));
                }
                Err(TryRecvError::Closed) => return Poll::Ready(Err(RecvError::Closed)),
                Err(TryRecvError::Empty) => {}
            }
            ready!(self.waiting.as_mut().poll(cx));
            // Woken: register again before looking, so that an event sent between the look and
            // the next wait still wakes this receiver.
            self.waiting.set(Arc::clone(&self.wake).notified_owned());
        }
    }

    /// The next item (see [`LiveReceiver::poll_recv`]). Cancel-safe: dropping the future loses
    /// nothing.
    pub async fn recv(&mut self) -> Result<Live, RecvError> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }
}

impl Drop for LiveReceiver {
    fn drop(&mut self) {
        self.feed.leave(self.group);
    }
}

/// The fan-out task's sender. Dropped when the task ends, however it ends (the queue closed, or
/// the runtime dropped the task): the broadcast closes and every group is woken to see it.
struct Sending {
    sender: Option<broadcast::Sender<Live>>,
    feed: Arc<Feed>,
}

impl Drop for Sending {
    fn drop(&mut self) {
        drop(self.sender.take());
        let mut wakes = Vec::new();
        self.feed.wakes_of_members(&mut wakes);
        for wake in wakes {
            wake.notify_waiters();
        }
    }
}

/// Sends everything queued on the broadcast, in order, draining the queue before waking anyone
/// so that a watcher woken by one event finds the events queued with it already there; then
/// wakes the groups, letting every other ready task run between two groups.
async fn fan_out(mut queued: mpsc::UnboundedReceiver<Live>, sending: Sending) {
    let Some(sender) = sending.sender.as_ref() else {
        return;
    };
    let mut batch = Vec::with_capacity(FAN_OUT_BATCH);
    let mut wakes = Vec::new();
    while queued.recv_many(&mut batch, FAN_OUT_BATCH).await > 0 {
        for live in batch.drain(..) {
            let _ = sender.send(live);
        }
        sending.feed.wakes_of_members(&mut wakes);
        for (index, wake) in wakes.drain(..).enumerate() {
            if index > 0 {
                tokio::task::yield_now().await;
            }
            wake.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn number(live: Live) -> u64 {
        match live {
            Live::Pruned { after, .. } => after,
            Live::Event(event) => panic!("unexpected event {event:?}"),
        }
    }

    #[tokio::test]
    async fn every_receiver_of_every_group_gets_everything_in_order() {
        let live = LiveEvents::new(1024);
        let receivers: Vec<LiveReceiver> = (0..WATCHERS_PER_GROUP * 3 + 7)
            .map(|_| live.subscribe())
            .collect();
        assert_eq!(live.feed.groups().len(), 4);
        let mut readers = tokio::task::JoinSet::new();
        for mut receiver in receivers {
            readers.spawn(async move {
                let mut got = Vec::new();
                while got.len() < 300 {
                    got.push(number(receiver.recv().await.unwrap()));
                }
                got
            });
        }
        // Published in bursts and one by one, while the readers wait and while they read.
        for n in 1..=300 {
            live.publish_pruned(n, n);
            if n % 50 == 0 {
                tokio::task::yield_now().await;
            }
        }
        let expected: Vec<u64> = (1..=300).collect();
        while let Some(got) = readers.join_next().await {
            assert_eq!(got.unwrap(), expected);
        }
    }

    #[tokio::test]
    async fn leaving_receivers_make_room_in_their_group() {
        let live = LiveEvents::new(16);
        let mut receivers: Vec<LiveReceiver> = (0..WATCHERS_PER_GROUP * 2)
            .map(|_| live.subscribe())
            .collect();
        assert_eq!(live.feed.groups().len(), 2);
        receivers.truncate(10);
        let again: Vec<LiveReceiver> = (0..WATCHERS_PER_GROUP).map(|_| live.subscribe()).collect();
        assert_eq!(
            live.feed.groups().len(),
            2,
            "the places left were taken again"
        );
        assert_eq!(receivers.len() + again.len(), WATCHERS_PER_GROUP + 10);
    }

    #[tokio::test]
    async fn a_receiver_that_falls_behind_is_told_it_lagged() {
        let live = LiveEvents::new(4);
        let mut receiver = live.subscribe();
        for n in 1..=10 {
            live.publish_pruned(n, n);
        }
        // Let the fan-out task send everything queued, then show it has with a new receiver.
        tokio::task::yield_now().await;
        let mut later = live.subscribe();
        live.publish_pruned(11, 11);
        assert_eq!(number(later.recv().await.unwrap()), 11);
        // The buffer holds 8 to 11.
        assert!(matches!(receiver.recv().await, Err(RecvError::Lagged(7))));
        assert_eq!(number(receiver.recv().await.unwrap()), 8);
    }

    #[tokio::test]
    async fn waiting_receivers_see_the_feed_close_after_what_was_queued() {
        let live = LiveEvents::new(16);
        let mut receivers: Vec<LiveReceiver> = (0..WATCHERS_PER_GROUP + 1)
            .map(|_| live.subscribe())
            .collect();
        let mut waiting = receivers.pop().unwrap();
        let waiter = tokio::spawn(async move {
            let first = number(waiting.recv().await.unwrap());
            (first, waiting.recv().await.unwrap_err())
        });
        tokio::task::yield_now().await;
        live.publish_pruned(1, 1);
        drop(live);
        let (first, end) = waiter.await.unwrap();
        assert_eq!(first, 1);
        assert!(matches!(end, RecvError::Closed));
        assert_eq!(number(receivers[0].recv().await.unwrap()), 1);
        assert!(matches!(receivers[0].recv().await, Err(RecvError::Closed)));
    }

    /// The point of the groups: a task woken while the fan-out is under way (a create's reply,
    /// a unary call) runs before the watchers of the later groups are woken, not after all of
    /// them. On one thread the order is deterministic: with every watcher woken at once the
    /// other task would run after all of them.
    #[tokio::test]
    async fn a_task_woken_during_the_fan_out_runs_before_the_later_groups() {
        let live = LiveEvents::new(16);
        let runs = Arc::new(AtomicUsize::new(0));
        let (wake_other, other_woken) = tokio::sync::oneshot::channel::<()>();
        let mut wake_other = Some(wake_other);
        let mut watchers = tokio::task::JoinSet::new();
        for index in 0..WATCHERS_PER_GROUP * 4 {
            let mut receiver = live.subscribe();
            let runs = Arc::clone(&runs);
            // The first watcher of the first group wakes the other task when it gets the event.
            let wake_other = if index == 0 { wake_other.take() } else { None };
            watchers.spawn(async move {
                receiver.recv().await.unwrap();
                if let Some(wake) = wake_other {
                    wake.send(()).unwrap();
                }
                runs.fetch_add(1, Ordering::SeqCst)
            });
        }
        let other = tokio::spawn({
            let runs = Arc::clone(&runs);
            async move {
                other_woken.await.unwrap();
                runs.fetch_add(1, Ordering::SeqCst)
            }
        });
        tokio::task::yield_now().await;
        live.publish_pruned(1, 1);
        let other_ran_at = other.await.unwrap();
        let mut watcher_runs = Vec::new();
        while let Some(ran_at) = watchers.join_next().await {
            watcher_runs.push(ran_at.unwrap());
        }
        assert!(
            other_ran_at <= WATCHERS_PER_GROUP,
            "the other task ran after {other_ran_at} watchers, more than one group"
        );
        assert_eq!(watcher_runs.len(), WATCHERS_PER_GROUP * 4);
    }
}
