//! Starting a server binary as a child process and waiting for the line that says where it
//! listens (`<name> listening on IP:PORT` on stdout); its stderr goes to a log file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// Why a server did not come up.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The binary is not where it was looked for.
    #[error(
        "{0} does not exist; build it first: cargo build --release -p order-service -p order-status-bench"
    )]
    Missing(PathBuf),
    /// The process could not be started.
    #[error("cannot start {path}")]
    Spawn {
        /// The binary.
        path: PathBuf,
        /// What spawning failed with.
        #[source]
        source: std::io::Error,
    },
    /// The log file for its stderr could not be created.
    #[error("cannot create log file {path}")]
    Log {
        /// The log file.
        path: PathBuf,
        /// What creating it failed with.
        #[source]
        source: std::io::Error,
    },
    /// It exited or closed stdout before saying where it listens.
    #[error("{name} ended before printing its listening line; see {log}")]
    Ended {
        /// The server's name.
        name: String,
        /// Its stderr.
        log: PathBuf,
    },
    /// It did not say where it listens in time.
    #[error("{name} printed no listening line within {timeout:?}; see {log}")]
    Timeout {
        /// The server's name.
        name: String,
        /// How long we waited.
        timeout: Duration,
        /// Its stderr.
        log: PathBuf,
    },
    /// It printed a listening line without a socket address in it.
    #[error("{name} printed an unreadable listening line: {line:?}")]
    BadAddress {
        /// The server's name.
        name: String,
        /// The line.
        line: String,
    },
    /// Reading its stdout failed.
    #[error("reading the stdout of {name}")]
    Stdout {
        /// The server's name.
        name: String,
        /// What reading failed with.
        #[source]
        source: std::io::Error,
    },
}

/// How long a server may take from spawn to its listening line.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running server; killed when dropped.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    /// Kept open so a late write to stdout never fails with a broken pipe.
    _stdout: Lines<BufReader<ChildStdout>>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its process id, for CPU accounting.
    pub pid: u32,
    /// Where its stderr goes.
    pub log: PathBuf,
}

impl ServerProcess {
    /// Spawns `command` (whose program is `binary`), sending stderr to `log`, and waits until
    /// it prints `<name> listening on IP:PORT`.
    pub async fn start(
        name: &str,
        binary: &Path,
        mut command: Command,
        log: PathBuf,
    ) -> Result<Self, StartError> {
        if !binary.exists() {
            return Err(StartError::Missing(binary.to_owned()));
        }
        let log_file = std::fs::File::create(&log).map_err(|source| StartError::Log {
            path: log.clone(),
            source,
        })?;
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| StartError::Spawn {
                path: binary.to_owned(),
                source,
            })?;
        let pid = child.id().ok_or_else(|| StartError::Ended {
            name: name.to_owned(),
            log: log.clone(),
        })?;
        let stdout = child.stdout.take().ok_or_else(|| StartError::Ended {
            name: name.to_owned(),
            log: log.clone(),
        })?;
        let mut lines = BufReader::new(stdout).lines();
        let prefix = format!("{name} listening on ");
        let listening = async {
            loop {
                match lines.next_line().await {
                    Ok(Some(line)) => {
                        if let Some(addr) = line.strip_prefix(&prefix) {
                            return addr.trim().parse::<SocketAddr>().map_err(|_| {
                                StartError::BadAddress {
                                    name: name.to_owned(),
                                    line: line.clone(),
                                }
                            });
                        }
                    }
                    Ok(None) => {
                        return Err(StartError::Ended {
                            name: name.to_owned(),
                            log: log.clone(),
                        });
                    }
                    Err(source) => {
                        return Err(StartError::Stdout {
                            name: name.to_owned(),
                            source,
                        });
                    }
                }
            }
        };
        let addr = tokio::time::timeout(READY_TIMEOUT, listening)
            .await
            .map_err(|_| StartError::Timeout {
                name: name.to_owned(),
                timeout: READY_TIMEOUT,
                log: log.clone(),
            })??;
        Ok(ServerProcess {
            child,
            _stdout: lines,
            addr,
            pid,
            log,
        })
    }

    /// Kills the server and waits for it to be gone.
    pub async fn stop(mut self) -> std::io::Result<()> {
        self.child.start_kill()?;
        self.child.wait().await.map(drop)
    }

    /// Waits until the server exits by itself (say, after SIGTERM).
    pub async fn wait(mut self) -> std::io::Result<()> {
        self.child.wait().await.map(drop)
    }
}
