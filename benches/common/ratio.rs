//! Prints a bench's targets as ratios of the means criterion just measured
//! in this run (read back from its `estimates.json` files, written no
//! earlier than the run began), so that a reader need not divide.

use std::path::PathBuf;
use std::time::SystemTime;

/// The mean (ns) criterion recorded for `id` (`group/function[/param]`) in
/// this run, if it measured it (not in `--test` mode, not filtered out).
fn mean_ns(id: &str, since: SystemTime) -> Option<f64> {
    let root = std::env::var_os("CRITERION_HOME")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR").map(|d| PathBuf::from(d).join("criterion"))
        })
        .unwrap_or_else(|| PathBuf::from("target/criterion"));
    let file = root.join(id).join("new/estimates.json");
    if std::fs::metadata(&file).ok()?.modified().ok()? < since {
        return None;
    }
    let text = std::fs::read_to_string(file).ok()?;
    let mean = &text[text.find("\"mean\"")?..];
    let at = &mean[mean.find("\"point_estimate\":")? + "\"point_estimate\":".len()..];
    let end = at.find([',', '}'])?;
    at[..end].trim().parse().ok()
}

/// Prints `name: numerator / denominator = ratio` for each entry whose
/// means this run measured, with `note` after it.
pub fn report(since: SystemTime, lines: &[(&str, &str, &str, &str)]) {
    for (name, numerator, denominator, note) in lines {
        if let (Some(n), Some(d)) = (mean_ns(numerator, since), mean_ns(denominator, since)) {
            eprintln!(
                "ratio {name}: {numerator} / {denominator} = {:.3} ({note})",
                n / d
            );
        }
    }
}

/// Prints `name: (a - b) / denominator` for each entry whose means this run
/// measured.
pub fn report_difference(since: SystemTime, lines: &[(&str, &str, &str, &str, &str)]) {
    for (name, a, b, denominator, note) in lines {
        if let (Some(a_ns), Some(b_ns), Some(d)) = (
            mean_ns(a, since),
            mean_ns(b, since),
            mean_ns(denominator, since),
        ) {
            eprintln!(
                "ratio {name}: ({a} - {b}) / {denominator} = {:.2} % ({note})",
                100.0 * (a_ns - b_ns) / d
            );
        }
    }
}
