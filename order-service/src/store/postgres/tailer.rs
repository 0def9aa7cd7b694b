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
                Ok(events) => {
                    if std::mem::take(&mut failing) {
                        tracing::info!("the event log can be read again; live events go on");
                    }
                    let full = events.len() as i64 == PAGE;
                    for event in events {
                        if event.sequence != published + 1 {
                            tracing::error!(
                                published,
                                next = event.sequence,
                                "broken invariant: the event log has a gap after the last \
                                 published event (sequences must be given out in commit order)"
                            );
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

async fn read_after(pool: &Pool, after: u64) -> Result<Vec<OrderEvent>, Error> {
    let client = pool.get().await.map_err(pool_error)?;
    let statement = client
        .prepare_cached(&format!(
            "SELECT {EVENT_COLUMNS} FROM order_events WHERE sequence > $1
             ORDER BY sequence LIMIT $2"
        ))
        .await
        .map_err(into_error)?;
    let after = i64::try_from(after).unwrap_or(i64::MAX);
    client
        .query(&statement, &[&after, &PAGE])
        .await
        .map_err(into_error)?
        .iter()
        .map(|row| event_from_row(row, 0))
        .collect()
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
