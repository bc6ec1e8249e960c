//! Goal: a panic anywhere on one of the recovery manager's threads — here in
//! host code the healer calls while planning, outside any remedy — loses
//! no incident and stops no healing: the death is reported, the incident
//! is retried (or escalated once it has cost two threads), the thread is
//! restarted within the restart intensity and escalated beyond it.
//! Method: a `HostActions` whose `supports` panics a set number of times,
//! a host-reported `WorkerDied` of its component that makes the healer ask
//! it; then a corrupt page (both checksum placements) that must still be
//! healed byte-equal from the mirror.

mod recovery_common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use recovery_common::*;
use selfheal::healer::Outcome;
use selfheal::testing::both_placements;
use selfheal::{Failure, FailureKind, RecoveryEvent, Source, Target};

const IDLE: Duration = Duration::from_secs(20);

fn cache_died() -> Failure {
    Failure::new(
        Source::Host,
        FailureKind::WorkerDied {
            component: Arc::from("cache"),
        },
        "the cache's thread died",
        0,
    )
}

fn remedy_of(o: &Outcome) -> Option<&str> {
    match o {
        Outcome::Healed { remedy } => Some(remedy),
        _ => None,
    }
}

#[test]
fn a_panic_outside_a_remedy_is_survived_and_the_incident_healed() {
    for (_, placement) in both_placements(PS) {
        let dir = tempfile::tempdir().unwrap();
        let host = Arc::new(PanickyHost::default());
        let h2 = host.clone();
        let (raw, mirror, m) = rig(placement, 8, dir.path(), move |c| {
            c.host_actions(h2).max_concurrent_recoveries(1)
        });
        m.start().unwrap();
        let events = m.subscribe(256).unwrap();
        host.panics.store(1, Ordering::SeqCst);
        m.failure_sink().send(cache_died());
        assert!(m.wait_idle(IDLE));
        // The one recovery thread died and came back: the host's
        // incident was retried and healed by the restart it asked for.
        let deadline = std::time::Instant::now() + IDLE;
        while m.stats().recovered < 2 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(host.restarts.load(Ordering::SeqCst), 1);
        let incs = m.incidents();
        let cache = incs
            .iter()
            .find(|i| i.target == Target::Component(Arc::from("cache")))
            .expect("the host's incident is closed");
        assert_eq!(remedy_of(&cache.outcome), Some("restart-component"));
        let own = incs
            .iter()
            .find(|i| i.target == Target::Component(Arc::from("recovery manager")))
            .expect("the thread's death is an incident");
        assert_eq!(remedy_of(&own.outcome), Some("restart-recovery-thread"));
        assert_eq!(
            own.failures[0].source,
            Source::RecoveryManager,
            "the manager's own failures name it as their source"
        );
        assert!(
            own.failures[0].evidence.contains("supports() panicked"),
            "{:?}",
            own.failures[0]
        );
        assert!(own.failures[0]
            .evidence
            .contains(&format!("incident {}", cache.id)));
        // And it still heals.
        damage(&raw, 3);
        read_finds(&m, 3);
        assert!(m.wait_idle(IDLE));
        assert_eq!(bytes(raw.as_ref(), 3), bytes(mirror.as_ref(), 3));
        let s = m.stats();
        assert_eq!((s.recovered, s.escalated), (3, 0), "{s:?}");
        let seen: Vec<RecoveryEvent> = events.events().try_iter().collect();
        assert!(seen.iter().any(|e| matches!(
            e,
            RecoveryEvent::Healed { remedy, .. } if remedy == "restart-recovery-thread"
        )));
        m.stop().unwrap();
    }
}

#[test]
fn an_incident_that_kills_two_threads_is_escalated_and_healing_goes_on() {
    for (_, placement) in both_placements(PS) {
        let dir = tempfile::tempdir().unwrap();
        let host = Arc::new(PanickyHost::default());
        let h2 = host.clone();
        let (raw, mirror, m) = rig(placement, 8, dir.path(), move |c| {
            c.host_actions(h2).max_concurrent_recoveries(2)
        });
        m.start().unwrap();
        host.panics.store(2, Ordering::SeqCst);
        m.failure_sink().send(cache_died());
        let deadline = std::time::Instant::now() + IDLE;
        while (m.stats().escalated < 1 || m.stats().recovered < 2)
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(m.wait_idle(IDLE));
        let incs = m.incidents();
        let cache = incs
            .iter()
            .find(|i| i.target == Target::Component(Arc::from("cache")))
            .expect("the host's incident is closed, not lost");
        assert_eq!(cache.outcome, Outcome::Escalated);
        let report = cache.escalation.as_ref().unwrap();
        assert!(
            report.reason.contains("2 recovery threads died"),
            "{report}"
        );
        assert_eq!(host.restarts.load(Ordering::SeqCst), 0, "{incs:#?}");
        let restarted = incs
            .iter()
            .filter(|i| remedy_of(&i.outcome) == Some("restart-recovery-thread"))
            .count();
        assert_eq!(restarted, 2);
        damage(&raw, 5);
        read_finds(&m, 5);
        assert!(m.wait_idle(IDLE));
        assert_eq!(bytes(raw.as_ref(), 5), bytes(mirror.as_ref(), 5));
        m.stop().unwrap();
    }
}

#[test]
fn beyond_the_restart_intensity_a_dead_thread_is_escalated_not_restarted() {
    for (_, placement) in both_placements(PS) {
        let dir = tempfile::tempdir().unwrap();
        let host = Arc::new(PanickyHost::default());
        let h2 = host.clone();
        let (raw, mirror, m) = rig(placement, 8, dir.path(), move |c| {
            c.host_actions(h2)
                .max_concurrent_recoveries(2)
                .thread_restarts(1, Duration::from_secs(3_600))
        });
        m.start().unwrap();
        host.panics.store(2, Ordering::SeqCst);
        m.failure_sink().send(cache_died());
        let deadline = std::time::Instant::now() + IDLE;
        while m.stats().escalated < 2 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let incs = m.incidents();
        let own: Vec<_> = incs
            .iter()
            .filter(|i| i.target == Target::Component(Arc::from("recovery manager")))
            .collect();
        assert_eq!(own.len(), 2, "{incs:#?}");
        assert_eq!(remedy_of(&own[0].outcome), Some("restart-recovery-thread"));
        assert_eq!(own[1].outcome, Outcome::Escalated);
        assert!(own[1]
            .escalation
            .as_ref()
            .unwrap()
            .reason
            .contains("not restarted"));
        // One thread is left, and it heals.
        damage(&raw, 2);
        read_finds(&m, 2);
        assert!(m.wait_idle(IDLE));
        assert_eq!(bytes(raw.as_ref(), 2), bytes(mirror.as_ref(), 2));
        m.stop().unwrap();
    }
}

#[test]
fn wait_idle_returns_only_once_every_sent_failure_is_recorded() {
    for (_, placement) in both_placements(PS) {
        let dir = tempfile::tempdir().unwrap();
        let (_raw, _mirror, m) = rig(placement, 4, dir.path(), |c| c.recent_incidents(4_096));
        m.start().unwrap();
        for i in 0..100u64 {
            m.failure_sink().send(Failure::new(
                Source::Host,
                FailureKind::ComponentDead {
                    component: Arc::from(format!("c{i}")),
                },
                "no heartbeat",
                0,
            ));
            assert!(m.wait_idle(IDLE));
            // Nothing applies without host actions: escalated, and recorded
            // by the time the manager says it is idle.
            assert_eq!(m.incidents().len() as u64, i + 1, "after failure {i}");
            assert_eq!(m.stats().escalated, i + 1);
        }
        m.stop().unwrap();
    }
}
