//! Which files the store writes into, by identity (device and inode), so a commit is only
//! acknowledged while it is durable in the files the service will open at that path next time.
//! Deleting (`rm orders.db*`), moving or replacing the database while the service runs leaves
//! SQLite writing happily into unlinked inodes; every write after that would be lost on restart.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Device and inode of a file: what stays the same for one file whatever its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileIdentity {
    device: u64,
    inode: u64,
}

impl FileIdentity {
    fn of(metadata: &std::fs::Metadata) -> Self {
        FileIdentity {
            device: metadata.dev(),
            inode: metadata.ino(),
        }
    }
}

/// The database file and its write-ahead log as they were when the store opened them. A
/// commit is durable in the WAL (synchronous=FULL) until a checkpoint copies it into the
/// database, so both must still be the files at their paths.
#[derive(Debug)]
pub(super) struct DatabaseFiles {
    database: (PathBuf, FileIdentity),
    wal: (PathBuf, FileIdentity),
}

/// The files at the database's paths are no longer the ones the store writes into.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FilesChanged {
    /// The path names no file any more (deleted or moved away).
    #[error(
        "{} is gone ({source}); writes would go to a deleted file and be lost on restart",
        path.display()
    )]
    Gone {
        /// The missing file.
        path: PathBuf,
        /// What looking it up failed with.
        source: std::io::Error,
    },
    /// The path names another file than the one the store opened.
    #[error(
        "{} was replaced by another file (inode {now} on device {now_device}, opened as \
         inode {opened} on device {opened_device}); writes would be lost on restart",
        path.display()
    )]
    Replaced {
        /// The replaced file.
        path: PathBuf,
        /// Inode of the file the store opened.
        opened: u64,
        /// Its device.
        opened_device: u64,
        /// Inode of the file at the path now.
        now: u64,
        /// Its device.
        now_device: u64,
    },
}

impl DatabaseFiles {
    /// Records which files `database` and its WAL are now. Call it once the writer has opened
    /// the database in WAL mode (the WAL file exists from then on, until the last connection
    /// closes).
    pub(super) fn capture(database: &Path) -> std::io::Result<Self> {
        let wal = wal_path(database);
        let identify = |path: &Path| -> std::io::Result<(PathBuf, FileIdentity)> {
            let metadata = std::fs::metadata(path).map_err(|error| {
                std::io::Error::new(error.kind(), format!("{}: {error}", path.display()))
            })?;
            Ok((path.to_owned(), FileIdentity::of(&metadata)))
        };
        Ok(DatabaseFiles {
            database: identify(database)?,
            wal: identify(&wal)?,
        })
    }

    /// Checks that both paths still name the files the store writes into, and returns the
    /// WAL's length in bytes.
    pub(super) fn check(&self) -> Result<u64, FilesChanged> {
        check_one(&self.database)?;
        check_one(&self.wal).map(|metadata| metadata.len())
    }

    /// The path of the write-ahead log.
    pub(super) fn wal_path(&self) -> &Path {
        &self.wal.0
    }
}

fn check_one((path, opened): &(PathBuf, FileIdentity)) -> Result<std::fs::Metadata, FilesChanged> {
    let metadata = std::fs::metadata(path).map_err(|source| FilesChanged::Gone {
        path: path.clone(),
        source,
    })?;
    let now = FileIdentity::of(&metadata);
    if now != *opened {
        return Err(FilesChanged::Replaced {
            path: path.clone(),
            opened: opened.inode,
            opened_device: opened.device,
            now: now.inode,
            now_device: now.device,
        });
    }
    Ok(metadata)
}

/// SQLite's name for the write-ahead log of `database`.
pub(super) fn wal_path(database: &Path) -> PathBuf {
    let mut wal = database.as_os_str().to_owned();
    wal.push("-wal");
    PathBuf::from(wal)
}
