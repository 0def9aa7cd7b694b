//! Where log lines go: an in-memory buffer in front of stderr, written out when it fills
//! (64 KiB) and at least every 100 ms by a small thread, and on shutdown. A request pays a
//! memcpy under an uncontended lock for its log line, never a write(2) or a thread wake-up;
//! the price is that a crash can lose the last 100 ms of lines.

use std::io::{BufWriter, Stderr, Write};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;
use tracing_subscriber::fmt::MakeWriter;

/// How often buffered lines are written out at the latest.
const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// Buffer size; a full buffer is written out at once.
const BUFFER_BYTES: usize = 64 * 1024;

type Shared = Arc<Mutex<BufWriter<Stderr>>>;

/// The `MakeWriter` of the log layer.
#[derive(Clone)]
pub(crate) struct BufferedStderr {
    buffer: Shared,
}

/// Writes out what is buffered when dropped; while it lives, a thread does so periodically.
pub(crate) struct FlushGuard {
    buffer: Shared,
}

impl BufferedStderr {
    /// A buffered stderr and the guard that keeps it flushed.
    pub(crate) fn new() -> (BufferedStderr, FlushGuard) {
        let buffer: Shared = Arc::new(Mutex::new(BufWriter::with_capacity(
            BUFFER_BYTES,
            std::io::stderr(),
        )));
        let weak = Arc::downgrade(&buffer);
        // If the thread cannot be started, lines are still written when the buffer fills and
        // at shutdown.
        let _ = std::thread::Builder::new()
            .name("log-flush".into())
            .spawn(move || flush_periodically(weak));
        (
            BufferedStderr {
                buffer: Arc::clone(&buffer),
            },
            FlushGuard { buffer },
        )
    }
}

fn flush_periodically(buffer: Weak<Mutex<BufWriter<Stderr>>>) {
    loop {
        std::thread::sleep(FLUSH_INTERVAL);
        let Some(buffer) = buffer.upgrade() else {
            return;
        };
        // The guard's Arc is the one that lives as long as logging is wanted; when only the
        // writers' clones remain, logging still works (a full buffer is written out).
        if let Ok(mut locked) = buffer.lock() {
            let _ = locked.flush();
        }
    }
}

/// One log line's access to the buffer.
pub(crate) struct LineWriter<'a>(MutexGuard<'a, BufWriter<Stderr>>);

impl Write for LineWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.write(bytes)
    }

    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.0.write_all(bytes)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl<'a> MakeWriter<'a> for BufferedStderr {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> LineWriter<'a> {
        // A panic while holding the lock leaves the buffer usable: take it anyway.
        LineWriter(
            self.buffer
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        if let Ok(mut locked) = self.buffer.lock() {
            let _ = locked.flush();
        }
    }
}

impl std::fmt::Debug for FlushGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FlushGuard")
    }
}
