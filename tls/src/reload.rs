//! Certificate renewal without a restart. The files are read again on SIGHUP, and whenever
//! their modification time, size or inode changes (polled: simple, and it sees the symlink swap
//! by which Kubernetes renews a mounted secret as well as an in-place rewrite). A good new set
//! is used for every connection accepted afterwards; connections already open keep theirs. A
//! bad one (unreadable, half written, a key that does not match) is logged with its cause and
//! the previous configuration stays in use.

use super::{TlsFiles, load};
use order_status_telemetry::DisplayChain;
use rustls::ServerConfig;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The configuration new connections are accepted with; follows successful reloads.
#[derive(Debug, Clone)]
pub struct CurrentConfig(watch::Receiver<Arc<ServerConfig>>);

impl CurrentConfig {
    /// The configuration in use now.
    pub fn get(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.0.borrow())
    }

    /// A configuration that never changes (no [`Reloader`] behind it).
    pub fn fixed(config: Arc<ServerConfig>) -> Self {
        CurrentConfig(watch::channel(config).1)
    }
}

/// Watches the TLS files and publishes each good new configuration; see the module docs.
#[derive(Debug)]
pub struct Reloader {
    files: TlsFiles,
    publish: watch::Sender<Arc<ServerConfig>>,
    poll_interval: Duration,
    hangup: Signal,
    /// The files as last read (or last seen failing), so that a change is acted on once.
    seen: Vec<Option<FileStamp>>,
}

/// What tells that a file changed: where it is (device, inode) and what it looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    device: u64,
    inode: u64,
    size: u64,
    modified_ns: i128,
}

impl Reloader {
    /// Starts from `initial` (built from `files` at start-up), checking the files every
    /// `poll_interval`. Installs the SIGHUP handler
    /// now, so that a SIGHUP that comes right after start-up reloads instead of killing the
    /// process (SIGHUP's default).
    pub fn new(
        files: TlsFiles,
        initial: Arc<ServerConfig>,
        poll_interval: Duration,
    ) -> std::io::Result<(Reloader, CurrentConfig)> {
        let hangup = signal(SignalKind::hangup())?;
        let (publish, current) = watch::channel(initial);
        let seen = stamps(&files);
        Ok((
            Reloader {
                files,
                publish,
                poll_interval,
                hangup,
                seen,
            },
            CurrentConfig(current),
        ))
    }

    /// Reloads on SIGHUP and on file changes until `stop` is cancelled.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut ticks = tokio::time::interval(self.poll_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = self.hangup.recv() => {
                    self.seen = stamps(&self.files);
                    self.reload("SIGHUP").await;
                }
                _ = ticks.tick() => {
                    let now = stamps(&self.files);
                    if now != self.seen {
                        self.seen = now;
                        self.reload("the files changed").await;
                    }
                }
            }
        }
    }

    async fn reload(&self, trigger: &'static str) {
        let files = self.files.clone();
        let loaded = tokio::task::spawn_blocking(move || load(&files)).await;
        match loaded {
            Ok(Ok(config)) => {
                self.publish.send_replace(config);
                tracing::info!(
                    trigger,
                    cert = %self.files.cert.display(),
                    "TLS files reloaded: new connections use them, open ones keep theirs"
                );
            }
            Ok(Err(error)) => tracing::warn!(
                trigger,
                error = %DisplayChain(&error),
                "TLS files not reloaded; new connections keep the previous certificate"
            ),
            Err(error) => tracing::error!(
                trigger,
                error = %DisplayChain(&error),
                "reloading the TLS files failed"
            ),
        }
    }
}

/// The stamps of the certificate, key and client CA files (`None` for one that cannot be
/// looked at: its coming back is a change too).
fn stamps(files: &TlsFiles) -> Vec<Option<FileStamp>> {
    [
        Some(&files.cert),
        Some(&files.key),
        files.client_ca.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|path| {
        let metadata = std::fs::metadata(path).ok()?;
        Some(FileStamp {
            device: metadata.dev(),
            inode: metadata.ino(),
            size: metadata.size(),
            modified_ns: i128::from(metadata.mtime()) * 1_000_000_000
                + i128::from(metadata.mtime_nsec()),
        })
    })
    .collect()
}
