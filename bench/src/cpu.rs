//! CPU time used by a process (user + system, all threads), read from `/proc/<pid>/stat`, so a
//! round can report how much server CPU one call costs — a figure the client's share of the
//! two cores does not distort.

use std::process::Command;
use std::time::Duration;

/// Why CPU time could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CpuError {
    /// `getconf CLK_TCK` did not run or printed something else than a positive number.
    #[error("cannot learn the clock tick rate from `getconf CLK_TCK`: {0}")]
    ClockTicks(String),
    /// The stat file could not be read (process gone, no /proc).
    #[error("cannot read /proc/{pid}/stat")]
    Read {
        /// The process asked about.
        pid: u32,
        /// What reading failed with.
        #[source]
        source: std::io::Error,
    },
    /// The stat file did not have the expected fields.
    #[error("unexpected contents of /proc/{0}/stat")]
    Parse(u32),
}

/// Converts the kernel's clock ticks into durations.
#[derive(Debug, Clone, Copy)]
pub struct CpuClock {
    ticks_per_second: u64,
}

impl CpuClock {
    /// Asks `getconf` for the tick rate `/proc` reports CPU time in.
    pub fn new() -> Result<Self, CpuError> {
        let output = Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .map_err(|error| CpuError::ClockTicks(error.to_string()))?;
        let text = String::from_utf8_lossy(&output.stdout);
        match text.trim().parse::<u64>() {
            Ok(ticks) if ticks > 0 && output.status.success() => Ok(CpuClock {
                ticks_per_second: ticks,
            }),
            _ => Err(CpuError::ClockTicks(format!(
                "it printed {:?}",
                text.trim()
            ))),
        }
    }

    /// User plus system CPU time consumed so far by every thread of process `pid`.
    pub fn process_time(&self, pid: u32) -> Result<Duration, CpuError> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map_err(|source| CpuError::Read { pid, source })?;
        // The command name (field 2) may contain spaces; fields after its closing parenthesis
        // start with field 3 (state), so utime (14) and stime (15) are the 12th and 13th.
        let after_name = stat.rsplit_once(')').ok_or(CpuError::Parse(pid))?.1;
        let mut fields = after_name.split_whitespace().skip(11);
        let mut next = || -> Result<u64, CpuError> {
            fields
                .next()
                .and_then(|field| field.parse().ok())
                .ok_or(CpuError::Parse(pid))
        };
        let ticks = next()? + next()?;
        Ok(Duration::from_secs_f64(
            ticks as f64 / self.ticks_per_second as f64,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cpu_time_grows_with_work() {
        // Work until the clock shows 100 ms of CPU, or give up after 10 s of wall time: on a
        // shared, busy machine 200 ms of wall time can hold less than 100 ms of this thread's
        // CPU, so the test waits for the clock rather than for the wall.
        let clock = CpuClock::new().expect("getconf CLK_TCK");
        let before = clock.process_time(std::process::id()).expect("own stat");
        let started = std::time::Instant::now();
        let mut x = 0u64;
        let mut after = before;
        while after - before < Duration::from_millis(100)
            && started.elapsed() < Duration::from_secs(10)
        {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
            after = clock.process_time(std::process::id()).expect("own stat");
        }
        assert!(
            after - before >= Duration::from_millis(100),
            "{before:?} -> {after:?} in {:?} of busy work",
            started.elapsed()
        );
    }
}
