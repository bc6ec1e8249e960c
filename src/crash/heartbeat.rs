//! Component heartbeats: the lock-free [`HeartbeatHandle`] and the pure
//! [`HeartbeatMonitor`] state machine that the watchdog thread drives.
//!
//! # How a beat is observed
//!
//! [`HeartbeatHandle::beat`] does not read a clock (reading the system clock
//! costs more than the whole beat budget). It sets a per-component "beat seen"
//! flag, writing only when the flag is clear, so a component that beats on
//! every loop iteration writes its cache line once per watchdog tick, not once
//! per beat. At each [`HeartbeatMonitor::tick`] the monitor clears every flag
//! and time-stamps the ones it found set with the tick's `now`.
//!
//! Consequences, by design:
//! - Several beats within one tick count as one arrival.
//! - Inter-arrival times are measured at tick granularity: they are whole
//!   numbers of ticks (for a steady watchdog), never less than one tick. The
//!   phi computation therefore floors the standard deviation at
//!   `max(min_std_dev, tick_interval)`, so that a perfectly regular component
//!   (standard deviation 0 at tick resolution) is not suspected one tick
//!   after its usual arrival.
//! - A beat is seen up to one tick after it happened, so a component that
//!   stops is declared dead at most `timeout + tick_interval` after its last
//!   beat.
//!
//! # States
//!
//! `Alive → Suspect` when phi reaches the threshold; `→ Dead` when no beat was
//! seen for `timeout`; `→ Alive` (recovered) at the first tick that sees a beat
//! again. A component that times out while still `Alive` passes through
//! `Suspect` in the same tick, so every `Dead` report is preceded by a
//! `Suspect` report. Each transition is returned exactly once.
//!
//! A tick that comes a whole `timeout` or more after the previous one means
//! the watchdog itself did not run (the host process was suspended or starved
//! of CPU). Components probably did not run either, so the lost time, minus
//! one tick, is not counted as their silence: a stall of the whole process
//! produces no false alarms, and a component that stays silent after it is
//! declared dead one timeout later. Drive [`HeartbeatMonitor::tick`] at the
//! tick interval (or at least well within the timeout) for the detection
//! bound above to hold.
//!
//! The pause that ends in a recovery is not added to the inter-arrival window:
//! it is an outage, not a sample of the component's rhythm, and would make the
//! detector slower to suspect the next one.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_utils::CachePadded;

use super::phi::{self, ArrivalWindow, PhiParams, MAX_WINDOW};
use crate::error::{Error, Result};
use crate::types::{Failure, FailureKind, Source};

/// A component's liveness as judged by the watchdog.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ComponentState {
    /// Beats arrive as usual.
    Alive,
    /// Beats are late enough that phi crossed the threshold.
    Suspect,
    /// No beat for at least the timeout.
    Dead,
}

impl fmt::Display for ComponentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ComponentState::Alive => "alive",
            ComponentState::Suspect => "suspect",
            ComponentState::Dead => "dead",
        })
    }
}

/// One change of a component's state, reported once.
#[derive(Clone, Debug, PartialEq)]
pub struct Transition {
    /// The component's registered name.
    pub component: Arc<str>,
    /// The state before.
    pub from: ComponentState,
    /// The state after.
    pub to: ComponentState,
    /// The tick at which it happened, in nanoseconds of the monitor's clock.
    pub at_ns: u64,
    /// How long no beat had been seen at that tick, in nanoseconds (0 for a
    /// recovery: the beat was just seen).
    pub silent_ns: u64,
    /// The suspicion level at that tick (before the beat, for a recovery).
    pub phi: f64,
}

impl Transition {
    /// The failure report for this transition: [`FailureKind::ComponentSuspect`]
    /// or [`FailureKind::ComponentDead`]; `None` for a recovery.
    #[must_use]
    pub fn failure(&self) -> Option<Failure> {
        let kind = match self.to {
            ComponentState::Alive => return None,
            ComponentState::Suspect => FailureKind::ComponentSuspect {
                component: self.component.clone(),
            },
            ComponentState::Dead => FailureKind::ComponentDead {
                component: self.component.clone(),
            },
        };
        Some(Failure::new(
            Source::CrashDetector,
            kind,
            self.to_string(),
            self.at_ns,
        ))
    }
}

impl fmt::Display for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "component {} {} -> {}: no beat for {:.3} s, phi {:.2}",
            self.component,
            self.from,
            self.to,
            self.silent_ns as f64 / 1e9,
            self.phi
        )
    }
}

/// The cheap handle a component beats through. Clones share one heartbeat.
///
/// ```
/// # use selfheal::CrashConfig;
/// let detector = CrashConfig::new().build()?;
/// let handle = detector.register("wal-writer")?;
/// detector.start()?;
/// handle.beat(); // on every loop iteration
/// # detector.stop()?;
/// # Ok::<(), selfheal::Error>(())
/// ```
#[derive(Clone)]
pub struct HeartbeatHandle {
    name: Arc<str>,
    seen: Arc<CachePadded<AtomicBool>>,
}

impl fmt::Debug for HeartbeatHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeartbeatHandle")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl HeartbeatHandle {
    /// Records that the component is alive. Lock-free and wait-free: one
    /// relaxed load, plus one relaxed store the first time after each
    /// watchdog tick. Does not read a clock.
    #[inline]
    pub fn beat(&self) {
        // Writing only when clear keeps the cache line shared between the
        // beating cores and the watchdog for all but one beat per tick.
        if !self.seen.load(Ordering::Relaxed) {
            self.seen.store(true, Ordering::Relaxed);
        }
    }

    /// The component's registered name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Configuration of component liveness (used by `HeartbeatMonitor` and
/// [`CrashConfig`](super::CrashConfig)).
///
/// The defaults suit components that beat at least every few hundred
/// milliseconds: a 100 ms tick, phi threshold 8 (Akka's and Cassandra's), a
/// 1 s acceptable pause, a 100 ms standard-deviation floor, 100 samples and a
/// 5 s timeout. A component beating on every loop iteration is then suspected
/// about 1.6 s after its last beat and declared dead after 5 s.
#[derive(Clone, Copy, Debug, PartialEq)]
#[must_use]
pub struct HeartbeatConfig {
    tick_interval: Duration,
    timeout: Duration,
    phi_threshold: f64,
    window: usize,
    min_std_dev: Duration,
    acceptable_pause: Duration,
    first_heartbeat_estimate: Duration,
    max_components: usize,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        HeartbeatConfig {
            tick_interval: Duration::from_millis(100),
            timeout: Duration::from_secs(5),
            phi_threshold: 8.0,
            window: 100,
            min_std_dev: Duration::from_millis(100),
            acceptable_pause: Duration::from_secs(1),
            first_heartbeat_estimate: Duration::from_millis(500),
            max_components: 1024,
        }
    }
}

impl HeartbeatConfig {
    /// The defaults (see the type docs).
    pub fn new() -> Self {
        Self::default()
    }

    /// How often the watchdog checks every component (default 100 ms). Also
    /// the resolution of inter-arrival times and the floor of the standard
    /// deviation.
    pub fn tick_interval(mut self, d: Duration) -> Self {
        self.tick_interval = d;
        self
    }

    /// No beat for this long declares a component dead (default 5 s). Must
    /// exceed the tick interval.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    /// Phi at or above which a component is suspect (default 8.0; 1 ≈ 10 %
    /// chance the beat is merely late, 8 ≈ 10⁻⁸ %). Finite and positive.
    pub fn phi_threshold(mut self, phi: f64) -> Self {
        self.phi_threshold = phi;
        self
    }

    /// How many recent inter-arrival times phi is computed from (default 100,
    /// at most 65 536).
    pub fn window(mut self, samples: usize) -> Self {
        self.window = samples;
        self
    }

    /// Floor of the inter-arrival standard deviation (default 100 ms); the
    /// tick interval is a floor too. Must be positive.
    pub fn min_std_dev(mut self, d: Duration) -> Self {
        self.min_std_dev = d;
        self
    }

    /// A pause this long beyond the usual interval raises no suspicion
    /// (default 1 s; zero allowed). Added to the mean, as in Akka.
    pub fn acceptable_pause(mut self, d: Duration) -> Self {
        self.acceptable_pause = d;
        self
    }

    /// Interval assumed before a component's first two beats were seen
    /// (default 500 ms); a quarter of it is the assumed standard deviation.
    pub fn first_heartbeat_estimate(mut self, d: Duration) -> Self {
        self.first_heartbeat_estimate = d;
        self
    }

    /// How many components may be registered at once (default 1024).
    pub fn max_components(mut self, n: usize) -> Self {
        self.max_components = n;
        self
    }

    /// The tick interval.
    #[must_use]
    pub fn tick(&self) -> Duration {
        self.tick_interval
    }

    /// Checks every value.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the first bad field: a zero interval,
    /// timeout, window, standard deviation, estimate or capacity; a timeout
    /// not above the tick; a threshold that is not finite and positive.
    pub fn validate(&self) -> Result<()> {
        let nonzero = [
            ("tick_interval", self.tick_interval),
            ("timeout", self.timeout),
            ("min_std_dev", self.min_std_dev),
            ("first_heartbeat_estimate", self.first_heartbeat_estimate),
        ];
        for (field, d) in nonzero {
            if d.is_zero() {
                return Err(Error::config(field, "is zero; it must be positive"));
            }
        }
        if self.timeout <= self.tick_interval {
            return Err(Error::config(
                "timeout",
                format!(
                    "is {:?}, not above the tick interval {:?}; a timeout shorter than a tick cannot be observed",
                    self.timeout, self.tick_interval
                ),
            ));
        }
        if !(self.phi_threshold.is_finite() && self.phi_threshold > 0.0) {
            return Err(Error::config(
                "phi_threshold",
                format!("is {}; it must be finite and positive", self.phi_threshold),
            ));
        }
        if self.window == 0 || self.window > MAX_WINDOW {
            return Err(Error::config(
                "window",
                format!("is {}; it must be in 1..={MAX_WINDOW}", self.window),
            ));
        }
        if self.max_components == 0 {
            return Err(Error::config(
                "max_components",
                "is 0; it must be at least 1",
            ));
        }
        Ok(())
    }

    fn phi_params(&self) -> PhiParams {
        PhiParams {
            acceptable_pause_ns: ns(self.acceptable_pause),
            min_std_dev_ns: ns(self.min_std_dev).max(ns(self.tick_interval)),
            first_estimate_ns: ns(self.first_heartbeat_estimate),
        }
    }
}

pub(crate) fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A point-in-time view of one component.
#[derive(Clone, Debug, PartialEq)]
pub struct ComponentStatus {
    /// The registered name.
    pub name: Arc<str>,
    /// The state after the last tick.
    pub state: ComponentState,
    /// When a beat was last seen (or the component registered), in clock ns.
    pub last_beat_ns: u64,
    /// Phi at the last tick.
    pub phi: f64,
    /// How many inter-arrival samples phi is computed from.
    pub samples: usize,
}

#[derive(Debug)]
struct Entry {
    name: Arc<str>,
    seen: Arc<CachePadded<AtomicBool>>,
    state: ComponentState,
    /// Tick time of the last observed beat, or of registration.
    last_arrival_ns: u64,
    /// Whether any beat has been observed (an interval needs two ends).
    beat_seen: bool,
    window: ArrivalWindow,
    phi: f64,
}

/// The pure liveness state machine: register components, then call
/// [`tick`](Self::tick) with the current time; it returns the transitions.
///
/// It does no I/O and reads no clock, so tests drive it with a
/// [`ManualClock`](crate::ManualClock) or plain numbers.
#[derive(Debug)]
pub struct HeartbeatMonitor {
    config: HeartbeatConfig,
    params: PhiParams,
    timeout_ns: u64,
    entries: Vec<Entry>,
    last_tick_ns: u64,
}

impl HeartbeatMonitor {
    /// A monitor with no components, starting at `now_ns`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] from [`HeartbeatConfig::validate`].
    pub fn new(config: HeartbeatConfig, now_ns: u64) -> Result<Self> {
        config.validate()?;
        Ok(HeartbeatMonitor {
            params: config.phi_params(),
            timeout_ns: ns(config.timeout),
            config,
            entries: Vec::new(),
            last_tick_ns: now_ns,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &HeartbeatConfig {
        &self.config
    }

    /// Registers a component, alive as of `now_ns`, and returns its handle.
    ///
    /// A component that drops its handle is **not** unregistered (a thread
    /// that panics drops its handle too, and that is exactly what must be
    /// noticed); call [`unregister`](Self::unregister).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty name; [`Error::AlreadyWatched`]
    /// for a name already registered; [`Error::WatchLimit`] when
    /// `max_components` are registered.
    pub fn register(&mut self, name: &str, now_ns: u64) -> Result<HeartbeatHandle> {
        if name.is_empty() {
            return Err(Error::InvalidArgument {
                what: "name",
                reason: "a component name must not be empty".into(),
            });
        }
        if self.entries.iter().any(|e| &*e.name == name) {
            return Err(Error::AlreadyWatched {
                what: format!("component {name}"),
            });
        }
        if self.entries.len() >= self.config.max_components {
            return Err(Error::WatchLimit {
                what: "components",
                capacity: self.config.max_components,
            });
        }
        let name: Arc<str> = Arc::from(name);
        let seen = Arc::new(CachePadded::new(AtomicBool::new(false)));
        self.entries.push(Entry {
            name: name.clone(),
            seen: seen.clone(),
            state: ComponentState::Alive,
            last_arrival_ns: now_ns,
            beat_seen: false,
            window: ArrivalWindow::new(self.config.window),
            phi: 0.0,
        });
        Ok(HeartbeatHandle { name, seen })
    }

    /// Stops watching a component; returns whether it was registered. Its
    /// handles keep working but nobody looks at them.
    pub fn unregister(&mut self, name: &str) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| &*e.name != name);
        self.entries.len() != before
    }

    /// How many components are registered.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no component is registered.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The status of every component after the last tick.
    #[must_use]
    pub fn statuses(&self) -> Vec<ComponentStatus> {
        self.entries
            .iter()
            .map(|e| ComponentStatus {
                name: e.name.clone(),
                state: e.state,
                last_beat_ns: e.last_arrival_ns,
                phi: e.phi,
                samples: e.window.len(),
            })
            .collect()
    }

    /// Observes every component's beats since the previous tick and returns
    /// the state changes, each once, in registration order.
    ///
    /// `now_ns` earlier than the previous tick is treated as the previous
    /// tick (time never runs backwards here).
    pub fn tick(&mut self, now_ns: u64) -> Vec<Transition> {
        let now = now_ns.max(self.last_tick_ns);
        let gap = now - self.last_tick_ns;
        self.last_tick_ns = now;
        // A tick this late means the watchdog itself did not run (the host
        // process was suspended, or starved of CPU): the components may not
        // have run either, so the lost time is not held against them.
        let stalled = gap >= self.timeout_ns;
        let forgiven = if stalled {
            gap - ns(self.config.tick_interval).min(gap)
        } else {
            0
        };
        if stalled {
            tracing::warn!(
                gap_ms = gap / 1_000_000,
                "watchdog tick came late; the gap is not counted as component silence"
            );
        }
        let mut out = Vec::new();
        for e in &mut self.entries {
            e.last_arrival_ns = e.last_arrival_ns.saturating_add(forgiven).min(now);
            let elapsed_before = now.saturating_sub(e.last_arrival_ns);
            if e.seen.swap(false, Ordering::Relaxed) {
                // The gap that ends an outage (or a stall) is not a sample of
                // the rhythm.
                if e.beat_seen && e.state == ComponentState::Alive && !stalled {
                    e.window.push(elapsed_before);
                }
                let phi_before = e.phi;
                e.beat_seen = true;
                e.last_arrival_ns = now;
                e.phi = phi::phi(0, &e.window, &self.params);
                if e.state != ComponentState::Alive {
                    out.push(Transition {
                        component: e.name.clone(),
                        from: e.state,
                        to: ComponentState::Alive,
                        at_ns: now,
                        silent_ns: 0,
                        phi: phi_before,
                    });
                    e.state = ComponentState::Alive;
                }
                continue;
            }
            e.phi = phi::phi(elapsed_before, &e.window, &self.params);
            let target = if elapsed_before >= self.timeout_ns {
                ComponentState::Dead
            } else if e.phi >= self.config.phi_threshold {
                ComponentState::Suspect
            } else {
                ComponentState::Alive
            };
            // Without a beat a component only gets worse: phi and elapsed
            // time only grow, and Dead is never downgraded to Suspect.
            let step = |from: ComponentState, to: ComponentState| Transition {
                component: e.name.clone(),
                from,
                to,
                at_ns: now,
                silent_ns: elapsed_before,
                phi: e.phi,
            };
            match (e.state, target) {
                (ComponentState::Alive, ComponentState::Suspect) => {
                    out.push(step(ComponentState::Alive, ComponentState::Suspect));
                    e.state = ComponentState::Suspect;
                }
                (ComponentState::Alive, ComponentState::Dead) => {
                    out.push(step(ComponentState::Alive, ComponentState::Suspect));
                    out.push(step(ComponentState::Suspect, ComponentState::Dead));
                    e.state = ComponentState::Dead;
                }
                (ComponentState::Suspect, ComponentState::Dead) => {
                    out.push(step(ComponentState::Suspect, ComponentState::Dead));
                    e.state = ComponentState::Dead;
                }
                _ => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: u64 = 1_000_000;

    fn cfg() -> HeartbeatConfig {
        HeartbeatConfig::new()
            .tick_interval(Duration::from_millis(10))
            .timeout(Duration::from_millis(500))
            .acceptable_pause(Duration::from_millis(50))
            .min_std_dev(Duration::from_millis(10))
    }

    #[test]
    fn zero_values_are_rejected() {
        let bad = [
            (
                HeartbeatConfig::new().tick_interval(Duration::ZERO),
                "tick_interval",
            ),
            (HeartbeatConfig::new().timeout(Duration::ZERO), "timeout"),
            (HeartbeatConfig::new().window(0), "window"),
            (
                HeartbeatConfig::new().min_std_dev(Duration::ZERO),
                "min_std_dev",
            ),
            (
                HeartbeatConfig::new().first_heartbeat_estimate(Duration::ZERO),
                "first_heartbeat_estimate",
            ),
            (HeartbeatConfig::new().max_components(0), "max_components"),
            (
                HeartbeatConfig::new().phi_threshold(f64::NAN),
                "phi_threshold",
            ),
            (HeartbeatConfig::new().phi_threshold(0.0), "phi_threshold"),
            (
                HeartbeatConfig::new().timeout(Duration::from_millis(100)),
                "timeout",
            ),
            (HeartbeatConfig::new().window(MAX_WINDOW + 1), "window"),
        ];
        for (c, field) in bad {
            match HeartbeatMonitor::new(c, 0) {
                Err(Error::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: expected InvalidConfig, got {other:?}"),
            }
        }
        assert!(HeartbeatMonitor::new(HeartbeatConfig::default(), 0).is_ok());
    }

    #[test]
    fn registration_errors_are_typed() {
        let mut m = HeartbeatMonitor::new(cfg().max_components(1), 0).unwrap();
        assert!(matches!(
            m.register("", 0),
            Err(Error::InvalidArgument { .. })
        ));
        m.register("a", 0).unwrap();
        assert!(matches!(
            m.register("a", 0),
            Err(Error::AlreadyWatched { .. })
        ));
        assert!(matches!(
            m.register("b", 0),
            Err(Error::WatchLimit { capacity: 1, .. })
        ));
        assert!(m.unregister("a"));
        assert!(!m.unregister("a"));
        m.register("b", 0).unwrap();
    }

    #[test]
    fn silent_component_goes_suspect_then_dead_then_recovers() {
        let mut m = HeartbeatMonitor::new(cfg(), 0).unwrap();
        let h = m.register("c", 0).unwrap();
        let mut now = 0;
        let mut all = Vec::new();
        for _ in 0..50 {
            h.beat();
            now += 10 * MS;
            assert!(m.tick(now).is_empty());
        }
        let last = now;
        while now < last + 600 * MS {
            now += 10 * MS;
            all.extend(m.tick(now));
        }
        let states: Vec<_> = all.iter().map(|t| (t.from, t.to)).collect();
        assert_eq!(
            states,
            [
                (ComponentState::Alive, ComponentState::Suspect),
                (ComponentState::Suspect, ComponentState::Dead)
            ]
        );
        assert!(all[0].at_ns < all[1].at_ns, "suspected before the timeout");
        assert_eq!(all[1].at_ns, last + 500 * MS);
        assert!(all[1].failure().is_some());
        h.beat();
        let t = m.tick(now + 10 * MS);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].to, ComponentState::Alive);
        assert!(t[0].failure().is_none());
        assert_eq!(m.statuses()[0].state, ComponentState::Alive);
    }

    #[test]
    fn timeout_without_phi_passes_through_suspect() {
        // An acceptable pause beyond the timeout keeps phi low: the plain
        // timeout still fires, and Suspect is reported first.
        let c = cfg().acceptable_pause(Duration::from_secs(10));
        let mut m = HeartbeatMonitor::new(c, 0).unwrap();
        let _h = m.register("c", 0).unwrap();
        let mut t = Vec::new();
        let mut now = 0;
        while t.is_empty() {
            now += 10 * MS;
            t = m.tick(now);
        }
        assert_eq!(now, 500 * MS);
        assert_eq!(t.len(), 2);
        assert_eq!(
            (t[0].to, t[1].to),
            (ComponentState::Suspect, ComponentState::Dead)
        );
    }

    #[test]
    fn a_stalled_watchdog_raises_no_alarm_but_still_detects_afterwards() {
        let mut m = HeartbeatMonitor::new(cfg(), 0).unwrap();
        let quiet = m.register("quiet", 0).unwrap();
        let busy = m.register("busy", 0).unwrap();
        let mut now = 0;
        for _ in 0..20 {
            quiet.beat();
            busy.beat();
            now += 10 * MS;
            m.tick(now);
        }
        // The whole process is suspended for 10 s; only `busy` beats when it resumes.
        busy.beat();
        now += 10_000 * MS;
        assert!(m.tick(now).is_empty());
        let resumed = now;
        let mut dead_at = None;
        let mut ticks_after = 0;
        while dead_at.is_none() {
            busy.beat();
            now += 10 * MS;
            ticks_after += 1;
            for t in m.tick(now) {
                assert_eq!(&*t.component, "quiet");
                if t.to == ComponentState::Dead {
                    dead_at = Some(t.at_ns);
                }
            }
        }
        // Silence counted from one tick before the resume.
        assert_eq!(dead_at, Some(resumed - 10 * MS + 500 * MS));
        let busy_status = &m.statuses()[1];
        assert_eq!(busy_status.state, ComponentState::Alive);
        // 19 intervals before the stall, one per tick after it, none for it.
        assert_eq!(busy_status.samples, 19 + ticks_after);
    }

    #[test]
    fn time_going_backwards_is_harmless() {
        let mut m = HeartbeatMonitor::new(cfg(), 1_000 * MS).unwrap();
        let h = m.register("c", 1_000 * MS).unwrap();
        h.beat();
        assert!(m.tick(0).is_empty());
        assert_eq!(m.statuses()[0].last_beat_ns, 1_000 * MS);
    }

    proptest! {
        /// Whatever the beat schedule, transitions chain (each `from` is the
        /// previous `to`), never repeat a state, and Dead always follows Suspect.
        #[test]
        fn transitions_chain_and_are_reported_once(beats in proptest::collection::vec(any::<bool>(), 1..400),
                                                   gaps in proptest::collection::vec(1u64..800, 1..400)) {
            let mut m = HeartbeatMonitor::new(cfg(), 0).unwrap();
            let h = m.register("c", 0).unwrap();
            let mut now = 0;
            let mut state = ComponentState::Alive;
            for (i, &b) in beats.iter().enumerate() {
                if b { h.beat(); }
                now += gaps[i % gaps.len()] * MS;
                for t in m.tick(now) {
                    prop_assert_eq!(t.from, state);
                    prop_assert_ne!(t.from, t.to);
                    if t.to == ComponentState::Dead {
                        prop_assert_eq!(t.from, ComponentState::Suspect);
                    }
                    prop_assert!(t.phi.is_finite());
                    state = t.to;
                }
                prop_assert_eq!(m.statuses()[0].state, state);
                if b { prop_assert_eq!(state, ComponentState::Alive); }
            }
        }
    }
}
