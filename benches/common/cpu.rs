//! CPU time of the bench process: on a machine busy with other work, wall
//! time follows the share of the cores the scheduler gives the process (with
//! autogroup, one share per session, however many threads it runs), so the
//! CPU a run costs is printed beside criterion's wall times.

/// CPU time of this process so far (user + system), in milliseconds, when
/// the OS tells (Linux: `/proc/self/stat`, in clock ticks of 10 ms, so only
/// a mean over many runs means anything).
pub fn process_cpu_ms() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks * 10.0)
}

/// Mean CPU milliseconds per run, from (sum, runs).
pub fn mean(cpu: (f64, u32)) -> f64 {
    cpu.0 / f64::from(cpu.1.max(1))
}

/// Runs `f`, adding the CPU milliseconds it cost to `acc` (sum, runs).
pub fn counted<T>(acc: &mut (f64, u32), f: impl FnOnce() -> T) -> T {
    let before = process_cpu_ms();
    let out = f();
    if let (Some(a), Some(b)) = (before, process_cpu_ms()) {
        *acc = (acc.0 + b - a, acc.1 + 1);
    }
    out
}
