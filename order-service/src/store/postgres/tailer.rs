//! Live events across replicas: one tailer per replica publishes into [`LiveEvents`], strictly
//! in sequence order, every event after the last one it published, read back from
//! `order_events`. Local commits are not published by the writers directly: a local 12 must not
//! overtake a remote 11, so everything goes through this one ordered reader. It is woken by the
//! local writers after each commit, by the other replicas' payload-free `NOTIFY` (received on a
//! dedicated LISTEN connection that reconnects with backoff), and by polling, so a notification
//! lost across a reconnect only delays an event.
//!
//! Reading "after the last published" is complete because sequences are given out in commit
//! order (see [`super::writer`]): once sequence s is visible, every smaller one is too.

use super::connect::{self, PostgresSettings, Tls};
use super::rows::{EVENT_COLUMNS, event_from_row, into_error, pool_error};
use crate::domain::{Error, OrderEvent};
use crate::error_chain::DisplayChain;
use crate::store::LiveEvents;
use deadpool_postgres::Pool;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How often the log is read without being woken (the fallback for lost notifications).
pub(super) const POLL_INTERVAL: Duration = Duration::from_millis(300);
/// Events read per statement.
const PAGE: i64 = 1000;
/// The channel of the payload-free notifications.
pub(super) const CHANNEL: &str = "order_events";
/// Longest wait between two attempts to open the LISTEN connection.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Starts the tailer, which publishes every event after `published`, and its LISTEN
/// connection; both stop when `stop` is cancelled.
pub(super) fn start(
    pool: Pool,
    settings: PostgresSettings,
    tls: Tls,
    live: LiveEvents,
    wake: Arc<Notify>,
    published: u64,
    stop: CancellationToken,
) {
    tokio::spawn(listen(settings, tls, Arc::clone(&wake), stop.clone()));
    tokio::spawn(tail(pool, live, wake, published, stop));
}

async fn tail(
    pool: Pool,
    live: LiveEvents,
    wake: Arc<Notify>,
    mut published: u64,
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval(POLL_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = wake.notified() => {}
            _ = ticks.tick() => {}
        }
        loop {
            match read_after(&pool, published).await {
                Ok(Tail {
                    pruned_through,
                    events,
                }) => {
                    if std::mem::take(&mut failing) {
                        tracing::info!("the event log can be read again; live events go on");
                    }
                    let full = events.len() as i64 == PAGE;
                    for event in events {
                        if event.sequence != published + 1 {
                            announce_hole(&live, published, event.sequence, pruned_through);
                        }
                        published = event.sequence;
                        live.publish(event);
                    }
                    if !full {
                        break;
                    }
                }
                Err(error) => {
                    if !failing {
                        failing = true;
                        tracing::warn!(
                            error = %DisplayChain(&error),
                            published,
                            "reading new events failed; live events wait until it works again"
                        );
                    }
                    break;
                }
            }
        }
    }
}

/// Tells subscribers that the events between `published` and `next` cannot be published, so
/// none of them goes on as if it had been given them. Pruning explains such a hole when this
/// replica fell behind by more than the retention (frozen, cut off); anything else is a broken
/// invariant of the log.
fn announce_hole(live: &LiveEvents, published: u64, next: u64, pruned_through: u64) {
    let through = next.saturating_sub(1);
    if pruned_through >= through {
        tracing::warn!(
            published,
            through,
            "this replica fell behind the event log by more than its retention: the events \
             after {published} up to {through} were pruned before they were published here; \
             live watches that had not got past them end with EVENTS_EXPIRED"
        );
    } else {
        tracing::error!(
            published,
            next,
            pruned_through,
            "broken invariant: the event log has a gap pruning does not explain (sequences \
             must be given out in commit order); live watches across it end"
        );
    }
    live.publish_pruned(published, through);
}

/// One read of the log's tail: the events after the last published, and the pruned mark read in
/// the same snapshot.
struct Tail {
    pruned_through: u64,
    events: Vec<OrderEvent>,
}

async fn read_after(pool: &Pool, after: u64) -> Result<Tail, Error> {
    let client = pool.get().await.map_err(pool_error)?;
    // One statement, so the pruned mark explains exactly the holes of this page.
    let statement = client
        .prepare_cached(&format!(
            "SELECT meta.value, page.* FROM store_meta meta
             LEFT JOIN LATERAL (
                 SELECT {EVENT_COLUMNS} FROM order_events WHERE sequence > $1
                 ORDER BY sequence LIMIT $2
             ) page ON true
             WHERE meta.name = 'events_pruned_through'
             ORDER BY page.sequence"
        ))
        .await
        .map_err(into_error)?;
    let after = i64::try_from(after).unwrap_or(i64::MAX);
    let rows = client
        .query(&statement, &[&after, &PAGE])
        .await
        .map_err(into_error)?;
    let pruned_through = rows
        .first()
        .map(|row| row.get::<_, i64>(0))
        .ok_or_else(|| Error::internal("store_meta has no events_pruned_through row"))?;
    let events = rows
        .iter()
        .filter(|row| row.get::<_, Option<i64>>(1).is_some())
        .map(|row| event_from_row(row, 1))
        .collect::<Result<_, _>>()?;
    Ok(Tail {
        pruned_through: u64::try_from(pruned_through).unwrap_or(0),
        events,
    })
}

/// Keeps a LISTEN connection open, waking the tailer on every notification and after every
/// (re)connection (notifications sent while it was away are lost).
async fn listen(settings: PostgresSettings, tls: Tls, wake: Arc<Notify>, stop: CancellationToken) {
    let mut backoff = Duration::from_millis(100);
    let mut failing = false;
    loop {
        let connected = tokio::select! {
            () = stop.cancelled() => return,
            connected = connect::listening_connection(&settings, &tls, Arc::clone(&wake)) => connected,
        };
        let outcome: Result<(), Error> = match connected {
            Ok((client, mut driver)) => {
                match client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
                    Ok(()) => {
                        if std::mem::take(&mut failing) {
                            tracing::info!("listening for other replicas' events again");
                        }
                        backoff = Duration::from_millis(100);
                        wake.notify_one();
                        tokio::select! {
                            () = stop.cancelled() => {
                                driver.abort();
                                return;
                            }
                            _ = &mut driver => {}
                        }
                        Err(Error::Unavailable("the LISTEN connection closed".into()))
                    }
                    Err(error) => {
                        driver.abort();
                        Err(into_error(error))
                    }
                }
            }
            Err(error) => Err(error),
        };
        if let Err(error) = outcome
            && !failing
        {
            failing = true;
            tracing::warn!(
                error = %DisplayChain(&error),
                "no LISTEN connection to PostgreSQL: other replicas' events arrive by polling \
                 until it is back"
            );
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
