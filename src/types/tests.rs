use super::*;

#[test]
fn priority_orders_by_urgency() {
    let mut v = vec![Priority::P3, Priority::P0, Priority::P2, Priority::P1];
    v.sort();
    assert_eq!(v, [Priority::P0, Priority::P1, Priority::P2, Priority::P3]);
}

fn corrupt(page: u64) -> Failure {
    Failure::new(
        Source::CorruptionDetector,
        FailureKind::CorruptPage { page: PageId(page) },
        "x",
        0,
    )
}

#[test]
fn sink_counts_drops_instead_of_blocking_and_numbers_in_order() {
    let sink = FailureSink::new(1);
    assert_eq!(sink.send(corrupt(1)), FailureId(1));
    assert_eq!(sink.send(corrupt(2)), FailureId(2));
    assert_eq!(sink.dropped(), 1);
    assert_eq!(sink.sent(), 2);
    let got = sink.failures().try_recv().unwrap();
    assert_eq!(
        (got.id, got.target()),
        (FailureId(1), Target::Page(PageId(1)))
    );
}

#[test]
fn clones_share_one_ordered_stream_and_callbacks_see_ids() {
    let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let sink =
        FailureSink::new(1_000).with_callback(Arc::new(move |f: &Failure| s2.lock().push(f.id)));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let sink = sink.clone();
            std::thread::spawn(move || {
                for i in 0..100 {
                    sink.send(corrupt(t * 1_000 + i));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let ids: Vec<u64> = sink.failures().try_iter().map(|f| f.id.0).collect();
    assert_eq!(
        ids,
        (1..=400).collect::<Vec<_>>(),
        "queue order is id order"
    );
    assert_eq!(seen.lock().len(), 400);
}

#[test]
fn the_callback_belongs_to_the_bus_so_every_clone_runs_it() {
    let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let sink = FailureSink::new(16);
    // Handles made before the callback is set, and the one it is set on.
    let early = sink.clone();
    let component = sink.clone();
    let _ = sink.with_callback(Arc::new(move |f: &Failure| s2.lock().push(f.id.0)));
    early.send(corrupt(1));
    component.send(corrupt(2));
    component.clone().send(corrupt(3));
    assert_eq!(*seen.lock(), [1, 2, 3]);
    // Setting it again replaces it for everyone.
    let later = Arc::new(parking_lot::Mutex::new(0u32));
    let l2 = later.clone();
    let _ = early.with_callback(Arc::new(move |_f: &Failure| *l2.lock() += 1));
    component.send(corrupt(4));
    assert_eq!((seen.lock().len(), *later.lock()), (3, 1));
}

#[test]
fn every_kind_has_a_target_a_name_and_a_priority() {
    let m: Arc<str> = Arc::from("m");
    for k in [
        FailureKind::ReplicaFailing {
            replica: ReplicaId::new("r"),
        },
        FailureKind::RollbackBlocked {
            txn: TxnId(4),
            page: PageId(2),
        },
        FailureKind::JournalPoisoned,
        FailureKind::UncleanShutdown,
        FailureKind::SnapshotFailed,
        FailureKind::RunMarkerFailed,
        FailureKind::ProbeFailed { metric: m.clone() },
        FailureKind::Deadlock { victim: TxnId(9) },
    ] {
        assert!(!k.name().is_empty());
        let _ = (k.target(), k.default_priority());
    }
    assert_eq!(
        FailureKind::RollbackBlocked {
            txn: TxnId(4),
            page: PageId(2)
        }
        .target(),
        Target::Transaction(TxnId(4))
    );
    assert_eq!(
        FailureKind::Anomaly { metric: m.clone() }.target(),
        Target::Metric(m)
    );
}
