//! Its contract is documented on [`HealthProbe`] (this module is private; its
//! items are re-exported by its parent).

use std::fmt;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use sysinfo::{
    CpuRefreshKind, DiskRefreshKind, Disks, MemoryRefreshKind, Pid, ProcessRefreshKind,
    ProcessesToUpdate, System,
};

use crate::error::{Error, Result};

/// A named metric the library can sample.
///
/// The value's unit is the probe's own (percent, seconds, connections) and
/// the [`Thresholds`](crate::health::Thresholds) it is registered with are in the
/// same unit; higher must mean worse.
///
/// # Contract
/// [`sample`](Self::sample) is called once per round (each interval of the
/// sampling thread, and each
/// [`HealthMonitor::sample_now`](crate::HealthMonitor::sample_now)), on the
/// probe's own helper thread `selfheal-probe`, in parallel with the other
/// probes, under the monitor's
/// [`probe_timeout`](crate::HealthConfig::probe_timeout). It should be cheap.
/// An error, a non-finite value, a panic or a missed deadline means "no value
/// this time": the metric keeps its band, the error is counted in
/// [`MonitorStats::probe_errors`](crate::health::MonitorStats), the probe is
/// reported once per failing episode, and sampling goes on; a probe whose
/// late call has not returned is not asked again until it has.
///
/// Probes: where metric values come from.
///
/// [`HealthProbe`] is the seam: the built-in probes read the OS through
/// `sysinfo` (CPU, memory, disk space of a path, this process), and a host
/// adds what only it knows (replication lag, pool use, error rate) with its
/// own implementation or a named closure ([`FnProbe`]).
pub trait HealthProbe: Send + Sync + fmt::Debug {
    /// The metric's name, unique within one monitor (`"cpu"`, `"repl_lag_s"`).
    fn name(&self) -> &str;

    /// The current value.
    ///
    /// # Errors
    /// Any error: the value is missing for this sample.
    fn sample(&self) -> Result<f64>;
}

type ProbeFn = dyn Fn() -> Result<f64> + Send + Sync;

/// A probe made of a name and a closure: the quickest way to give the monitor
/// a metric only the host knows.
///
/// ```
/// use selfheal::health::FnProbe;
/// use selfheal::HealthProbe;
///
/// let lag = FnProbe::new("repl_lag_s", || Ok(0.4));
/// assert_eq!(lag.name(), "repl_lag_s");
/// assert_eq!(lag.sample()?, 0.4);
/// # Ok::<(), selfheal::Error>(())
/// ```
pub struct FnProbe {
    name: String,
    f: Box<ProbeFn>,
}

impl FnProbe {
    /// A probe named `name` that calls `f` for each sample.
    pub fn new(
        name: impl Into<String>,
        f: impl Fn() -> Result<f64> + Send + Sync + 'static,
    ) -> Self {
        FnProbe {
            name: name.into(),
            f: Box::new(f),
        }
    }
}

impl fmt::Debug for FnProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnProbe")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl HealthProbe for FnProbe {
    fn name(&self) -> &str {
        &self.name
    }

    fn sample(&self) -> Result<f64> {
        (self.f)()
    }
}

fn failed(probe: &str, reason: impl Into<String>) -> Error {
    Error::ProbeFailed {
        probe: probe.to_string(),
        reason: reason.into(),
    }
}

/// CPU use of the whole machine in percent (`"cpu"`, 0–100), averaged over
/// all cores since the previous sample.
///
/// The first sample after creation covers the time since `new()`, so create
/// the probe at least `sysinfo::MINIMUM_CPU_UPDATE_INTERVAL` (about 200 ms)
/// before sampling, and sample at intervals at least that long.
#[derive(Debug)]
pub struct CpuProbe {
    sys: Mutex<System>,
}

impl CpuProbe {
    /// A probe with its first reading taken now.
    #[must_use]
    pub fn new() -> Self {
        let mut sys = System::new();
        sys.refresh_cpu_specifics(CpuRefreshKind::nothing().with_cpu_usage());
        CpuProbe {
            sys: Mutex::new(sys),
        }
    }
}

impl Default for CpuProbe {
    fn default() -> Self {
        Self::new()
    }
}

impl HealthProbe for CpuProbe {
    fn name(&self) -> &str {
        "cpu"
    }

    fn sample(&self) -> Result<f64> {
        let mut sys = self.sys.lock();
        sys.refresh_cpu_specifics(CpuRefreshKind::nothing().with_cpu_usage());
        if sys.cpus().is_empty() {
            return Err(failed("cpu", "the OS reports no CPUs"));
        }
        Ok(f64::from(sys.global_cpu_usage()).clamp(0.0, 100.0))
    }
}

/// Memory use of the machine in percent (`"memory"`, 0–100): memory not
/// available to new allocations (total minus available) over total.
#[derive(Debug)]
pub struct MemoryProbe {
    sys: Mutex<System>,
}

impl MemoryProbe {
    /// A memory probe.
    #[must_use]
    pub fn new() -> Self {
        MemoryProbe {
            sys: Mutex::new(System::new()),
        }
    }
}

impl Default for MemoryProbe {
    fn default() -> Self {
        Self::new()
    }
}

impl HealthProbe for MemoryProbe {
    fn name(&self) -> &str {
        "memory"
    }

    fn sample(&self) -> Result<f64> {
        let mut sys = self.sys.lock();
        sys.refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
        let total = sys.total_memory();
        if total == 0 {
            return Err(failed("memory", "the OS reports 0 bytes of memory"));
        }
        let used = total.saturating_sub(sys.available_memory());
        Ok((used as f64 / total as f64 * 100.0).clamp(0.0, 100.0))
    }
}

/// Space used on the file system holding a path, in percent (0–100): total
/// minus available (to unprivileged users) over total. Named
/// `"disk:<path>"` unless renamed with [`named`](Self::named).
#[derive(Debug)]
pub struct DiskProbe {
    name: String,
    path: PathBuf,
    disks: Mutex<Disks>,
}

impl DiskProbe {
    /// A probe of the file system that holds `path`.
    ///
    /// # Errors
    /// [`Error::Io`] when the path cannot be resolved (it must exist);
    /// [`Error::ProbeFailed`] when no mounted file system holds it.
    pub fn new(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let canonical = path
            .canonicalize()
            .map_err(|e| Error::io(format!("resolving {}", path.display()), e))?;
        let probe = DiskProbe {
            name: format!("disk:{}", path.display()),
            path: canonical,
            disks: Mutex::new(Disks::new_with_refreshed_list_specifics(
                DiskRefreshKind::nothing().with_storage(),
            )),
        };
        probe.sample()?;
        Ok(probe)
    }

    /// Renames the metric (default `"disk:<path>"`).
    #[must_use]
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The resolved path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl HealthProbe for DiskProbe {
    fn name(&self) -> &str {
        &self.name
    }

    fn sample(&self) -> Result<f64> {
        let mut disks = self.disks.lock();
        // The mount point that is the longest prefix of the path holds it.
        let idx = disks
            .list()
            .iter()
            .enumerate()
            .filter(|(_, d)| self.path.starts_with(d.mount_point()))
            .max_by_key(|(_, d)| d.mount_point().as_os_str().len())
            .map(|(i, _)| i)
            .ok_or_else(|| {
                failed(
                    &self.name,
                    format!("no mounted file system holds {}", self.path.display()),
                )
            })?;
        let disk = &mut disks.list_mut()[idx];
        disk.refresh_specifics(DiskRefreshKind::nothing().with_storage());
        let total = disk.total_space();
        if total == 0 {
            return Err(failed(
                &self.name,
                format!("{} reports a size of 0", disk.mount_point().display()),
            ));
        }
        let used = total.saturating_sub(disk.available_space());
        Ok((used as f64 / total as f64 * 100.0).clamp(0.0, 100.0))
    }
}

/// Resident memory of this process in MiB (`"process_rss_mib"`).
#[derive(Debug)]
pub struct ProcessRssProbe {
    pid: Pid,
    sys: Mutex<System>,
}

impl ProcessRssProbe {
    /// A probe of the calling process.
    ///
    /// # Errors
    /// [`Error::ProbeFailed`] when the OS does not tell this process's id.
    pub fn new() -> Result<Self> {
        let pid = sysinfo::get_current_pid().map_err(|e| failed("process_rss_mib", e))?;
        Ok(ProcessRssProbe {
            pid,
            sys: Mutex::new(System::new()),
        })
    }
}

impl HealthProbe for ProcessRssProbe {
    fn name(&self) -> &str {
        "process_rss_mib"
    }

    fn sample(&self) -> Result<f64> {
        let mut sys = self.sys.lock();
        sys.refresh_processes_specifics(
            ProcessesToUpdate::Some(&[self.pid]),
            true,
            ProcessRefreshKind::nothing().with_memory().without_tasks(),
        );
        let p = sys
            .process(self.pid)
            .ok_or_else(|| failed("process_rss_mib", "the OS does not list this process"))?;
        Ok(p.memory() as f64 / (1024.0 * 1024.0))
    }
}

/// Number of threads of this process (`"process_threads"`). Read from
/// `/proc/self/status` (`Threads:`), so it is available on Linux only; on
/// other systems every sample fails with [`Error::ProbeFailed`].
#[derive(Debug, Default)]
pub struct ProcessThreadsProbe;

impl ProcessThreadsProbe {
    /// A probe of the calling process.
    #[must_use]
    pub fn new() -> Self {
        ProcessThreadsProbe
    }
}

/// The `Threads:` count in the text of a `/proc/<pid>/status` file.
pub(crate) fn parse_threads(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
}

impl HealthProbe for ProcessThreadsProbe {
    fn name(&self) -> &str {
        "process_threads"
    }

    fn sample(&self) -> Result<f64> {
        if !cfg!(target_os = "linux") {
            return Err(failed(
                "process_threads",
                "thread counts are read from /proc, which this OS does not have",
            ));
        }
        let status = std::fs::read_to_string("/proc/self/status")
            .map_err(|e| Error::io("reading /proc/self/status", e))?;
        parse_threads(&status)
            .map(|n| n as f64)
            .ok_or_else(|| failed("process_threads", "no `Threads:` line in /proc/self/status"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_threads_defensively() {
        assert_eq!(
            parse_threads("Name:\tx\nThreads:\t17\nSigQ:\t0/1\n"),
            Some(17)
        );
        assert_eq!(parse_threads("Threads:\n"), None);
        assert_eq!(parse_threads("Threads:\tmany\n"), None);
        assert_eq!(parse_threads(""), None);
    }

    #[test]
    fn builtin_probes_give_plausible_values() {
        let mem = MemoryProbe::new().sample().unwrap();
        assert!((0.0..=100.0).contains(&mem) && mem > 0.0, "{mem}");
        let cpu = CpuProbe::new();
        std::thread::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL);
        let c = cpu.sample().unwrap();
        assert!((0.0..=100.0).contains(&c), "{c}");
        let dir = std::env::temp_dir();
        let disk = DiskProbe::new(&dir).unwrap();
        let d = disk.sample().unwrap();
        assert!((0.0..=100.0).contains(&d), "{d}");
        assert!(disk.name().starts_with("disk:"));
        let rss = ProcessRssProbe::new().unwrap().sample().unwrap();
        assert!(rss > 0.1, "{rss} MiB");
        if cfg!(target_os = "linux") {
            assert!(ProcessThreadsProbe::new().sample().unwrap() >= 1.0);
        }
    }

    #[test]
    fn disk_probe_of_missing_path_is_typed() {
        assert!(matches!(
            DiskProbe::new("/definitely/not/here/selfheal"),
            Err(Error::Io { .. })
        ));
    }
}
