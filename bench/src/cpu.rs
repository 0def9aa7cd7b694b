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
        let stat = Stat::read(pid)?;
        Ok(self.duration(stat.utime + stat.stime))
    }

    /// CPU time of a server made of processes, like PostgreSQL's postmaster and its backends:
    /// that of `root`, of the children it has reaped (the kernel adds those to `root`'s
    /// counters when they exit), and of its live children. The difference of two readings is
    /// what the server used in between, give or take what a child that exited in between had
    /// used before the first reading.
    pub fn tree_time(&self, root: u32) -> Result<Duration, CpuError> {
        let stat = Stat::read(root)?;
        let mut ticks = stat.utime + stat.stime + stat.cutime + stat.cstime;
        let entries =
            std::fs::read_dir("/proc").map_err(|source| CpuError::Read { pid: root, source })?;
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            // A process that ended since the listing is simply not counted (its parent's
            // counters have it once reaped).
            if let Ok(child) = Stat::read(pid)
                && child.ppid == root
            {
                ticks += child.utime + child.stime + child.cutime + child.cstime;
            }
        }
        Ok(self.duration(ticks))
    }

    /// Scheduler times of the live threads of process `pid`, in nanoseconds
    /// (`/proc/PID/task/*/schedstat`): time on a CPU, far finer than
    /// [`CpuClock::process_time`]'s clock ticks for short windows of little work, and time spent
    /// runnable but waiting for a CPU (other processes on its cores). Threads that have exited
    /// are no longer in it.
    pub fn live_threads_sched(pid: u32) -> Result<SchedTimes, CpuError> {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
            .map_err(|source| CpuError::Read { pid, source })?;
        let mut times = SchedTimes::default();
        for task in tasks.flatten() {
            // A thread that ended since the listing is simply not counted.
            let Ok(schedstat) = std::fs::read_to_string(task.path().join("schedstat")) else {
                continue;
            };
            let mut fields = schedstat
                .split_whitespace()
                .map(|field| field.parse::<u64>().map_err(|_| CpuError::Parse(pid)));
            let mut next = || fields.next().unwrap_or(Err(CpuError::Parse(pid)));
            times.on_cpu += Duration::from_nanos(next()?);
            times.waiting += Duration::from_nanos(next()?);
        }
        Ok(times)
    }

    fn duration(&self, ticks: u64) -> Duration {
        Duration::from_secs_f64(ticks as f64 / self.ticks_per_second as f64)
    }
}

/// Scheduler times summed over a process's threads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchedTimes {
    /// Time running on a CPU.
    pub on_cpu: Duration,
    /// Time runnable but waiting for a CPU.
    pub waiting: Duration,
}

impl SchedTimes {
    /// What was used between `earlier` and this reading.
    pub fn since(self, earlier: SchedTimes) -> SchedTimes {
        SchedTimes {
            on_cpu: self.on_cpu.saturating_sub(earlier.on_cpu),
            waiting: self.waiting.saturating_sub(earlier.waiting),
        }
    }
}

/// The fields of `/proc/<pid>/stat` used here, in clock ticks.
struct Stat {
    ppid: u32,
    utime: u64,
    stime: u64,
    cutime: u64,
    cstime: u64,
}

impl Stat {
    fn read(pid: u32) -> Result<Stat, CpuError> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map_err(|source| CpuError::Read { pid, source })?;
        // The command name (field 2) may contain spaces; fields after its closing parenthesis
        // start with field 3 (state): ppid (4) is the 2nd, utime (14), stime (15), cutime (16)
        // and cstime (17) the 12th to 15th.
        let after_name = stat.rsplit_once(')').ok_or(CpuError::Parse(pid))?.1;
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let field = |index: usize| -> Result<u64, CpuError> {
            fields
                .get(index)
                .and_then(|field| field.parse().ok())
                .ok_or(CpuError::Parse(pid))
        };
        Ok(Stat {
            ppid: u32::try_from(field(1)?).map_err(|_| CpuError::Parse(pid))?,
            utime: field(11)?,
            stime: field(12)?,
            cutime: field(13)?,
            cstime: field(14)?,
        })
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

    #[test]
    fn a_tree_counts_its_children() {
        // A child that burns CPU until killed: the tree of this process must include its time.
        let clock = CpuClock::new().expect("getconf CLK_TCK");
        let mut child = Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .expect("spawn sh");
        let started = std::time::Instant::now();
        let mut child_time = Duration::ZERO;
        while child_time < Duration::from_millis(100) && started.elapsed() < Duration::from_secs(10)
        {
            std::thread::sleep(Duration::from_millis(20));
            child_time = clock.process_time(child.id()).expect("child stat");
        }
        let own = clock.process_time(std::process::id()).expect("own stat");
        let tree = clock.tree_time(std::process::id()).expect("tree");
        child.kill().expect("kill");
        child.wait().expect("wait");
        assert!(
            tree >= own + child_time,
            "tree {tree:?} < own {own:?} + child {child_time:?}"
        );
    }
}
