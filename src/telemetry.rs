//! The crate's metrics: their names, units and descriptions in one place,
//! emitted through the [`metrics`](https://docs.rs/metrics) facade (a host
//! installs any recorder; without one they cost nothing). The table a host
//! reads is in the recovery manager's docs ([`crate::recovery`], "Metrics").
//!
//! # Contract
//! - Every metric the crate emits has its name here, and [`describe`]
//!   gives the recorder its unit and description; each component that
//!   emits one calls it when it is built (a recorder installed later gets
//!   the descriptions from the next component built).

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

/// Incidents opened, by `priority`.
pub(crate) const INCIDENTS_OPENED: &str = "selfheal_incidents_opened_total";
/// Incidents healed, by `priority`.
pub(crate) const INCIDENTS_HEALED: &str = "selfheal_incidents_healed_total";
/// Incidents escalated, by `priority`.
pub(crate) const INCIDENTS_ESCALATED: &str = "selfheal_incidents_escalated_total";
/// Incidents only observed, by `priority`.
pub(crate) const INCIDENTS_OBSERVED: &str = "selfheal_incidents_observed_total";
/// Failures beyond the incident queue's bound.
pub(crate) const FAILURES_OVERFLOWED: &str = "selfheal_failures_overflowed_total";
/// Remedy attempts, by `remedy` and `outcome`.
pub(crate) const REMEDY_ATTEMPTS: &str = "selfheal_remedy_attempts_total";
/// Detection to verified heal, by `priority`.
pub(crate) const RECOVERY_DURATION: &str = "selfheal_recovery_duration_seconds";
/// Healed incidents within their RTO or not, by `priority` and `met`.
pub(crate) const RTO: &str = "selfheal_rto_total";
/// Incidents open now.
pub(crate) const INCIDENTS_OPEN: &str = "selfheal_incidents_open";
/// The health score.
pub(crate) const HEALTH_SCORE: &str = "selfheal_health_score";
/// Pages found corrupt (each report of a page by the corruption detector).
pub(crate) const PAGES_CORRUPT: &str = "selfheal_pages_corrupt_total";
/// Pages repaired, written verified by the repairer.
pub(crate) const PAGES_REPAIRED: &str = "selfheal_pages_repaired_total";
/// Transactions rolled back, by `reason` (`request`, `recovery`).
pub(crate) const ROLLBACKS: &str = "selfheal_rollbacks_total";
/// Snapshots taken, by `outcome` (`ok`, `failed`).
pub(crate) const SNAPSHOTS: &str = "selfheal_snapshots_total";
/// The size of each snapshot file written.
pub(crate) const SNAPSHOT_BYTES: &str = "selfheal_snapshot_bytes";

/// Gives the installed recorder every metric's unit and description.
pub(crate) fn describe() {
    describe_counter!(INCIDENTS_OPENED, Unit::Count, "incidents opened");
    describe_counter!(INCIDENTS_HEALED, Unit::Count, "incidents healed");
    describe_counter!(INCIDENTS_ESCALATED, Unit::Count, "incidents escalated");
    describe_counter!(INCIDENTS_OBSERVED, Unit::Count, "incidents only observed");
    describe_counter!(
        FAILURES_OVERFLOWED,
        Unit::Count,
        "failures beyond the incident queue's bound"
    );
    describe_counter!(REMEDY_ATTEMPTS, Unit::Count, "remedy attempts");
    describe_histogram!(
        RECOVERY_DURATION,
        Unit::Seconds,
        "detection to verified heal"
    );
    describe_counter!(
        RTO,
        Unit::Count,
        "healed incidents, within their RTO or not"
    );
    describe_gauge!(INCIDENTS_OPEN, Unit::Count, "incidents open");
    describe_gauge!(HEALTH_SCORE, "health score, 0 to 100");
    describe_counter!(PAGES_CORRUPT, Unit::Count, "pages found corrupt");
    describe_counter!(PAGES_REPAIRED, Unit::Count, "pages repaired, verified");
    describe_counter!(ROLLBACKS, Unit::Count, "transactions rolled back");
    describe_counter!(SNAPSHOTS, Unit::Count, "snapshots taken or failed");
    describe_histogram!(SNAPSHOT_BYTES, Unit::Bytes, "size of each snapshot file");
}
