//! Liveness and resource use of external processes, watched by pid.
//!
//! [`ProcessMonitor::sample`] asks the OS (through `sysinfo`) about every
//! watched pid and returns the state changes. A process is:
//! - **alive** while it is in the process table and not a zombie (a stopped
//!   or traced process counts as alive: a hang is what heartbeats are for);
//! - **zombie** when it has exited but its parent has not reaped it yet. On
//!   Unix a child of the host stays a zombie until the host calls `wait`
//!   (`std::process::Child::wait`/`try_wait`), so the host's own children
//!   are usually seen as zombie first and gone after they are reaped;
//! - **gone** when it is no longer in the process table, or when the pid now
//!   belongs to a different process (its start time changed: pid reuse).
//!
//! Leaving *alive* is reported once as a
//! [`FailureKind::ProcessGone`]; a later
//! zombie → gone step is a transition event only. A gone process stays gone:
//! a pid that comes back is another process and must be watched anew.
//!
//! CPU use, resident memory and thread count are sampled where the OS gives
//! them. CPU use is a percentage of one core over the interval since the
//! previous sample, so the first sample of a process has none. On Linux the
//! thread count comes from the `Threads:` line of `/proc/<pid>/status`
//! (parsed defensively; absent or garbled means unknown); elsewhere it is
//! unknown.

use std::fmt;

use sysinfo::{Pid, ProcessRefreshKind, ProcessStatus, ProcessesToUpdate, System};

use crate::error::{Error, Result};
use crate::types::{Failure, FailureKind, Source};

/// A watched process's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProcessState {
    /// In the process table and not a zombie.
    Alive,
    /// Exited but not yet reaped by its parent.
    Zombie,
    /// Not in the process table, or the pid was reused by another process.
    Gone,
}

impl fmt::Display for ProcessState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProcessState::Alive => "alive",
            ProcessState::Zombie => "zombie",
            ProcessState::Gone => "gone",
        })
    }
}

/// The last sample of a watched process.
#[derive(Clone, Debug, PartialEq)]
pub struct ProcessSample {
    /// The pid.
    pub pid: u32,
    /// The name given when it was watched.
    pub name: String,
    /// Its state at the sample.
    pub state: ProcessState,
    /// CPU use in percent of one core since the previous sample (`None` on
    /// the first sample, or when the process is not alive).
    pub cpu_percent: Option<f32>,
    /// Resident memory in bytes, when known.
    pub resident_bytes: Option<u64>,
    /// Number of threads, when known (Linux).
    pub threads: Option<u32>,
    /// When it was sampled, in clock nanoseconds.
    pub sampled_at_ns: u64,
}

/// A change of a watched process's state, reported once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessTransition {
    /// The pid.
    pub pid: u32,
    /// The name given when it was watched.
    pub name: String,
    /// The state before.
    pub from: ProcessState,
    /// The state after.
    pub to: ProcessState,
    /// When it was observed, in clock nanoseconds.
    pub at_ns: u64,
}

impl ProcessTransition {
    /// The failure report: [`FailureKind::ProcessGone`] when the process
    /// leaves *alive*; `None` for zombie → gone.
    #[must_use]
    pub fn failure(&self) -> Option<Failure> {
        (self.from == ProcessState::Alive).then(|| {
            Failure::new(
                Source::CrashDetector,
                FailureKind::ProcessGone { pid: self.pid },
                self.to_string(),
                self.at_ns,
            )
        })
    }
}

impl fmt::Display for ProcessTransition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "process {} ({}) {} -> {}",
            self.pid, self.name, self.from, self.to
        )
    }
}

/// What the OS said about one pid at one sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Observation {
    /// `None`: not in the process table.
    pub present: Option<Present>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Present {
    pub zombie: bool,
    pub start_time_s: u64,
    pub cpu_percent: f32,
    pub resident_bytes: u64,
}

#[derive(Debug)]
struct Watched {
    pid: u32,
    name: String,
    state: ProcessState,
    /// Start time of the process first seen under this pid.
    start_time_s: Option<u64>,
    samples: u64,
    last: Option<ProcessSample>,
}

impl Watched {
    /// The pure step: the new state given an observation.
    fn next_state(&mut self, obs: &Observation) -> ProcessState {
        if self.state == ProcessState::Gone {
            return ProcessState::Gone;
        }
        match obs.present {
            None => ProcessState::Gone,
            Some(p) => {
                let start = *self.start_time_s.get_or_insert(p.start_time_s);
                if start != p.start_time_s {
                    ProcessState::Gone
                } else if p.zombie {
                    ProcessState::Zombie
                } else if self.state == ProcessState::Zombie {
                    // A zombie never runs again; seeing it "alive" under the
                    // same start time would be an OS reporting glitch.
                    ProcessState::Zombie
                } else {
                    ProcessState::Alive
                }
            }
        }
    }
}

/// Watches processes by pid. Not thread-driven by itself: the watchdog of
/// [`CrashDetector`](super::CrashDetector) calls [`sample`](Self::sample)
/// periodically, and tests call it directly.
pub struct ProcessMonitor {
    system: System,
    watched: Vec<Watched>,
    capacity: usize,
}

impl fmt::Debug for ProcessMonitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessMonitor")
            .field("watched", &self.watched)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl ProcessMonitor {
    /// A monitor watching at most `capacity` pids.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a zero capacity.
    pub fn new(capacity: usize) -> Result<Self> {
        if capacity == 0 {
            return Err(Error::config(
                "max_processes",
                "is 0; it must be at least 1",
            ));
        }
        Ok(ProcessMonitor {
            system: System::new(),
            watched: Vec::new(),
            capacity,
        })
    }

    /// Starts watching `pid` under `name`. Its state is taken at the next
    /// sample; until then it is assumed alive.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for pid 0; [`Error::AlreadyWatched`] for a
    /// pid already watched; [`Error::WatchLimit`] when full.
    pub fn watch(&mut self, pid: u32, name: &str) -> Result<()> {
        if pid == 0 {
            return Err(Error::InvalidArgument {
                what: "pid",
                reason: "pid 0 is not a process".into(),
            });
        }
        if self.watched.iter().any(|w| w.pid == pid) {
            return Err(Error::AlreadyWatched {
                what: format!("process {pid}"),
            });
        }
        if self.watched.len() >= self.capacity {
            return Err(Error::WatchLimit {
                what: "processes",
                capacity: self.capacity,
            });
        }
        self.watched.push(Watched {
            pid,
            name: name.to_owned(),
            state: ProcessState::Alive,
            start_time_s: None,
            samples: 0,
            last: None,
        });
        Ok(())
    }

    /// Stops watching `pid`; returns whether it was watched.
    pub fn unwatch(&mut self, pid: u32) -> bool {
        let before = self.watched.len();
        self.watched.retain(|w| w.pid != pid);
        self.watched.len() != before
    }

    /// The last sample of `pid`, if watched and sampled.
    #[must_use]
    pub fn last_sample(&self, pid: u32) -> Option<ProcessSample> {
        self.watched
            .iter()
            .find(|w| w.pid == pid)
            .and_then(|w| w.last.clone())
    }

    /// Samples every watched process from the OS and returns the state changes.
    pub fn sample(&mut self, now_ns: u64) -> Vec<ProcessTransition> {
        let pids: Vec<Pid> = self
            .watched
            .iter()
            .filter(|w| w.state != ProcessState::Gone)
            .map(|w| Pid::from_u32(w.pid))
            .collect();
        if !pids.is_empty() {
            self.system.refresh_processes_specifics(
                ProcessesToUpdate::Some(&pids),
                true,
                ProcessRefreshKind::nothing().with_memory().with_cpu(),
            );
        }
        let mut out = Vec::new();
        for i in 0..self.watched.len() {
            let pid = self.watched[i].pid;
            let obs = if self.watched[i].state == ProcessState::Gone {
                Observation { present: None }
            } else {
                observe(&self.system, pid)
            };
            let threads = match obs.present {
                Some(p) if !p.zombie => thread_count(pid),
                _ => None,
            };
            if let Some(t) = apply(&mut self.watched[i], &obs, threads, now_ns) {
                out.push(t);
            }
        }
        out
    }
}

/// Applies one observation to a watched process; returns the transition, if any.
fn apply(
    w: &mut Watched,
    obs: &Observation,
    threads: Option<u32>,
    now_ns: u64,
) -> Option<ProcessTransition> {
    let from = w.state;
    let to = w.next_state(obs);
    w.state = to;
    let alive = to == ProcessState::Alive;
    let present = obs.present.filter(|_| to != ProcessState::Gone);
    w.last = Some(ProcessSample {
        pid: w.pid,
        name: w.name.clone(),
        state: to,
        // sysinfo's CPU use is relative to the previous refresh: the first
        // sample has nothing to compare with.
        cpu_percent: present
            .filter(|_| alive && w.samples > 0)
            .map(|p| p.cpu_percent),
        resident_bytes: present.filter(|_| alive).map(|p| p.resident_bytes),
        threads: threads.filter(|_| alive),
        sampled_at_ns: now_ns,
    });
    w.samples += 1;
    (from != to).then(|| ProcessTransition {
        pid: w.pid,
        name: w.name.clone(),
        from,
        to,
        at_ns: now_ns,
    })
}

fn observe(system: &System, pid: u32) -> Observation {
    let present = system.process(Pid::from_u32(pid)).map(|p| Present {
        zombie: matches!(p.status(), ProcessStatus::Zombie | ProcessStatus::Dead),
        start_time_s: p.start_time(),
        cpu_percent: p.cpu_usage(),
        resident_bytes: p.memory(),
    });
    Observation { present }
}

/// The thread count of `pid` where the OS tells it cheaply.
fn thread_count(pid: u32) -> Option<u32> {
    #[cfg(target_os = "linux")]
    {
        let text = std::fs::read(format!("/proc/{pid}/status")).ok()?;
        parse_status_threads(&text)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = pid;
        None
    }
}

/// The value of the `Threads:` line of a Linux `/proc/<pid>/status` file.
/// Untrusted input: anything unexpected gives `None`.
#[must_use]
pub fn parse_status_threads(status: &[u8]) -> Option<u32> {
    status
        .split(|&b| b == b'\n')
        .find_map(|line| line.strip_prefix(b"Threads:"))
        .and_then(|rest| std::str::from_utf8(rest).ok())
        .and_then(|v| v.trim().parse::<u32>().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn watched() -> Watched {
        Watched {
            pid: 42,
            name: "child".into(),
            state: ProcessState::Alive,
            start_time_s: None,
            samples: 0,
            last: None,
        }
    }

    fn present(start: u64, zombie: bool) -> Observation {
        Observation {
            present: Some(Present {
                zombie,
                start_time_s: start,
                cpu_percent: 12.5,
                resident_bytes: 4096,
            }),
        }
    }

    #[test]
    fn alive_zombie_gone_each_reported_once() {
        let mut w = watched();
        assert!(apply(&mut w, &present(7, false), Some(3), 1).is_none());
        let s = w.last.clone().unwrap();
        assert_eq!(s.cpu_percent, None, "no CPU figure on the first sample");
        assert_eq!((s.resident_bytes, s.threads), (Some(4096), Some(3)));
        assert!(apply(&mut w, &present(7, false), Some(3), 2).is_none());
        assert_eq!(w.last.as_ref().unwrap().cpu_percent, Some(12.5));
        let t = apply(&mut w, &present(7, true), None, 3).unwrap();
        assert_eq!((t.from, t.to), (ProcessState::Alive, ProcessState::Zombie));
        assert!(t.failure().is_some());
        assert!(apply(&mut w, &present(7, true), None, 4).is_none());
        let t = apply(&mut w, &Observation { present: None }, None, 5).unwrap();
        assert_eq!((t.from, t.to), (ProcessState::Zombie, ProcessState::Gone));
        assert!(t.failure().is_none(), "exit was already reported");
        // A process reappearing under the pid is another process.
        assert!(apply(&mut w, &present(7, false), Some(1), 6).is_none());
        assert_eq!(w.state, ProcessState::Gone);
    }

    #[test]
    fn pid_reuse_is_gone() {
        let mut w = watched();
        apply(&mut w, &present(7, false), None, 1);
        let t = apply(&mut w, &present(9, false), None, 2).unwrap();
        assert_eq!(t.to, ProcessState::Gone);
        assert_eq!(
            t.failure().unwrap().kind,
            FailureKind::ProcessGone { pid: 42 }
        );
    }

    #[test]
    fn watch_errors_are_typed() {
        assert!(matches!(
            ProcessMonitor::new(0),
            Err(Error::InvalidConfig { .. })
        ));
        let mut m = ProcessMonitor::new(1).unwrap();
        assert!(matches!(
            m.watch(0, "x"),
            Err(Error::InvalidArgument { .. })
        ));
        m.watch(1, "init").unwrap();
        assert!(matches!(m.watch(1, "x"), Err(Error::AlreadyWatched { .. })));
        assert!(matches!(m.watch(2, "x"), Err(Error::WatchLimit { .. })));
        assert!(m.unwatch(1));
    }

    #[test]
    fn own_process_is_alive_with_memory() {
        let mut m = ProcessMonitor::new(4).unwrap();
        m.watch(std::process::id(), "self").unwrap();
        assert!(m.sample(1).is_empty());
        let s = m.last_sample(std::process::id()).unwrap();
        assert_eq!(s.state, ProcessState::Alive);
        assert!(s.resident_bytes.unwrap_or(0) > 0);
        #[cfg(target_os = "linux")]
        assert!(s.threads.unwrap() >= 1);
    }

    #[test]
    fn status_threads_parsing() {
        let real = b"Name:\tcat\nState:\tR (running)\nThreads:\t7\nVmRSS:\t100 kB\n";
        assert_eq!(parse_status_threads(real), Some(7));
        assert_eq!(parse_status_threads(b"Threads:\t\n"), None);
        assert_eq!(parse_status_threads(b"Threads:\t-1\n"), None);
        assert_eq!(parse_status_threads(b"Threads:\t99999999999\n"), None);
        assert_eq!(parse_status_threads(b"Name: x\n"), None);
        assert_eq!(parse_status_threads(b"Threads:\t\xff\n"), None);
    }

    proptest! {
        #[test]
        fn status_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_status_threads(&bytes);
        }

        #[test]
        fn status_parser_reads_any_count(n in any::<u32>(), pre in "[A-Za-z]{0,8}:\t[a-z ]{0,10}\n") {
            let text = format!("{pre}Threads:\t{n}\nVmRSS:\t1 kB\n");
            prop_assert_eq!(parse_status_threads(text.as_bytes()), Some(n));
        }
    }
}
