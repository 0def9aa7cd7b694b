//! A small pool of read-only connections. SQLite calls block, so each read runs on tokio's
//! blocking threads with a connection taken from the pool; WAL mode lets these readers work
//! while the writer commits.

use super::schema::open_reader;
use crate::domain::Error;
use rusqlite::Connection;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;

/// Read-only connections, one permit per idle connection.
pub(super) struct ReadPool {
    idle: Mutex<Vec<Connection>>,
    permits: Semaphore,
}

impl ReadPool {
    /// Opens `size` read-only connections to the database at `path`.
    pub(super) fn open(path: &Path, size: usize) -> rusqlite::Result<Arc<Self>> {
        let connections = (0..size)
            .map(|_| open_reader(path))
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(Arc::new(ReadPool {
            idle: Mutex::new(connections),
            permits: Semaphore::new(size),
        }))
    }

    /// Runs `read` with a pooled connection on a blocking thread.
    pub(super) async fn read<T, F>(self: &Arc<Self>, read: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, Error> + Send + 'static,
    {
        let permit = self.permits.acquire().await.map_err(Error::internal)?;
        let connection = self
            .idle
            .lock()
            .expect("read pool lock poisoned")
            .pop()
            .ok_or_else(|| Error::internal("read pool permit without a connection"))?;
        let pool = Arc::clone(self);
        let joined = tokio::task::spawn_blocking(move || {
            let result = read(&connection);
            pool.idle
                .lock()
                .expect("read pool lock poisoned")
                .push(connection);
            result
        })
        .await;
        match joined {
            Ok(result) => {
                drop(permit);
                result
            }
            Err(panicked) => {
                // The connection went down with the panicking read: its permit goes too.
                permit.forget();
                Err(Error::internal(panicked))
            }
        }
    }
}
