//! What an accept loop does when `accept` fails (out of file descriptors, mostly): wait,
//! longer each time up to a cap, instead of retrying at once; and say so once per episode, plus
//! once when accepting works again, rather than once per failure. While descriptors are being
//! freed, accepts succeed and fail by turns; the episode ends only once accepts have kept
//! working for [`SETTLED_AFTER`], so a recovery is one line, not one per flap. Shared by every
//! accept loop of the project (order-service's gRPC listener, the `/metrics` server).

use crate::DisplayChain;
use std::io;
use std::time::Duration;
use tokio::time::Instant;

/// The first wait after a failed `accept`.
const FIRST_PAUSE: Duration = Duration::from_millis(10);
/// The longest wait between attempts: connections that freed a descriptor are accepted this
/// late at worst.
const LONGEST_PAUSE: Duration = Duration::from_secs(1);
/// How long accepts must have kept working, without a failure, for an episode to be over.
const SETTLED_AFTER: Duration = Duration::from_secs(1);

/// The failures of one listener's `accept`: the current episode of failing accepts, if any.
#[derive(Debug)]
pub struct AcceptErrors {
    /// Which listener, for the log lines (e.g. "gRPC", "/metrics").
    listener: &'static str,
    episode: Option<Episode>,
}

#[derive(Debug)]
struct Episode {
    started: Instant,
    /// The first accept that worked since the last failure, if one did.
    working_since: Option<Instant>,
    failures: u64,
    /// The wait after the next failure.
    next_pause: Duration,
}

impl AcceptErrors {
    /// No failures yet on `listener` (named in the log lines).
    pub fn new(listener: &'static str) -> Self {
        AcceptErrors {
            listener,
            episode: None,
        }
    }

    /// Records a failed `accept` and returns how long to wait before the next one. Logs only
    /// the first failure of an episode.
    pub fn failed(&mut self, error: &io::Error) -> Duration {
        match &mut self.episode {
            Some(episode) => {
                episode.failures += 1;
                episode.working_since = None;
                let pause = episode.next_pause;
                episode.next_pause = (pause * 2).min(LONGEST_PAUSE);
                pause
            }
            None => {
                tracing::warn!(
                    listener = self.listener,
                    error = %DisplayChain(error),
                    longest_pause_ms = LONGEST_PAUSE.as_millis() as u64,
                    "accepting connections fails; retrying with growing pauses \
                     (logged again when it recovers)"
                );
                self.episode = Some(Episode {
                    started: Instant::now(),
                    working_since: None,
                    failures: 1,
                    next_pause: FIRST_PAUSE * 2,
                });
                FIRST_PAUSE
            }
        }
    }

    /// Records a successful `accept`: the next failure waits the shortest pause again, and an
    /// episode in which accepts have kept working for [`SETTLED_AFTER`] is over.
    pub fn accepted(&mut self) {
        let Some(episode) = &mut self.episode else {
            return;
        };
        episode.next_pause = FIRST_PAUSE;
        let working_since = *episode.working_since.get_or_insert_with(Instant::now);
        if working_since.elapsed() >= SETTLED_AFTER {
            tracing::info!(
                listener = self.listener,
                failures = episode.failures,
                lasted_ms = episode.started.elapsed().as_millis() as u64,
                "accepting connections again"
            );
            self.episode = None;
        }
    }

    /// Whether an episode of failures is going on.
    #[cfg(test)]
    fn failing(&self) -> bool {
        self.episode.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn pauses_double_up_to_the_cap_and_an_episode_ends_once_accepts_keep_working() {
        let mut errors = AcceptErrors::new("test");
        let emfile = io::Error::from_raw_os_error(24);
        let pauses: Vec<Duration> = (0..10).map(|_| errors.failed(&emfile)).collect();
        assert_eq!(pauses[0], FIRST_PAUSE);
        assert_eq!(pauses[1], FIRST_PAUSE * 2);
        assert!(pauses.windows(2).all(|pair| pair[0] <= pair[1]));
        assert_eq!(*pauses.last().unwrap(), LONGEST_PAUSE);

        // Flapping while descriptors free up: still the same episode, short pauses again.
        errors.accepted();
        assert!(errors.failing());
        assert_eq!(errors.failed(&emfile), FIRST_PAUSE);

        // A success right after a long pause is not yet a recovery; accepts working for a
        // while are.
        tokio::time::advance(LONGEST_PAUSE).await;
        errors.accepted();
        assert!(errors.failing());
        tokio::time::advance(SETTLED_AFTER).await;
        errors.accepted();
        assert!(!errors.failing());
        assert_eq!(errors.failed(&emfile), FIRST_PAUSE);
    }
}
