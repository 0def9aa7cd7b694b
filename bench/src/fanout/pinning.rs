//! Pinning processes to CPU cores with `taskset` (util-linux), so the server under test and the
//! benchmark's client never share a core: the server's child process is started under
//! `taskset -c CORES`, and this process pins all its threads with `taskset -a -p -c CORES PID`
//! before it starts any (threads made later inherit the mask).

use std::process::Command;

/// Why pinning failed.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    /// `taskset` could not be run.
    #[error("cannot run taskset (util-linux) to pin to cores {cores}")]
    Spawn {
        /// The cores asked for.
        cores: String,
        /// What spawning failed with.
        #[source]
        source: std::io::Error,
    },
    /// `taskset` refused (an unknown core, say).
    #[error("taskset could not pin to cores {cores}: {stderr}")]
    Refused {
        /// The cores asked for.
        cores: String,
        /// What it said.
        stderr: String,
    },
}

/// Pins every thread of this process to `cores` (a cpu list like `1` or `2-3`).
pub fn pin_this_process(cores: &str) -> Result<(), PinError> {
    let output = Command::new("taskset")
        .args(["-a", "-p", "-c", cores, &std::process::id().to_string()])
        .output()
        .map_err(|source| PinError::Spawn {
            cores: cores.to_owned(),
            source,
        })?;
    if !output.status.success() {
        return Err(PinError::Refused {
            cores: cores.to_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

/// A command that runs `program` pinned to `cores`.
pub fn pinned_command(cores: &str, program: &std::path::Path) -> tokio::process::Command {
    let mut command = tokio::process::Command::new("taskset");
    command.arg("-c").arg(cores).arg(program);
    command
}
