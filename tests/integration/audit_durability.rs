//! Durable audit: an answer leaves only once its record is on disk, async checks never
//! block, and a full disk is survived: closed mode reports unready, every lost record is
//! counted, and the trail recovers by itself when space returns.
//!
//! The full disk is simulated by the writer's `disk_space` hook (writes beyond it fail
//! after writing what fits, as a full disk does), so that these tests need no privileges.

use std::time::{Duration, Instant};

use gatekeeper::audit::{AuditConfig, DiskSpace, Durability, Record};
use gatekeeper::{CheckError, FailureMode, Gatekeeper, Readiness};

use crate::audit::{gatekeeper_with, only_file};
use crate::handle::wechat_update;

fn config(dir: &std::path::Path, durability: Durability, space: &DiskSpace) -> AuditConfig {
    let mut config = AuditConfig::new(dir);
    config.durability = durability;
    config.disk_space = Some(space.clone());
    config
}

/// Waits (at most 10 s) until the trail writes again.
fn wait_until_writing(gk: &Gatekeeper) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while gk.audit_health().unwrap().failing.is_some() {
        assert!(Instant::now() < deadline, "the trail did not recover");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn records(dir: &std::path::Path) -> Vec<Record> {
    gatekeeper::audit::read_records(&[dir]).unwrap()
}

#[test]
fn a_full_disk_makes_closed_mode_unready_and_recovers_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let space = DiskSpace::new(u64::MAX);
    let gk = gatekeeper_with(
        config(dir.path(), Durability::Durable, &space),
        FailureMode::Closed,
    );
    for _ in 0..20 {
        gk.check(&wechat_update()).unwrap();
    }
    assert!(gk.readiness().is_ready());
    // Room for less than one record: the next write is cut short, then fails.
    space.set(100);
    let mut refused = 0u64;
    for _ in 0..50 {
        match gk.check(&wechat_update()) {
            Ok(_) => panic!("closed mode answered a check whose record was not written"),
            Err(CheckError::Audit(_)) => refused += 1,
        }
    }
    // Give the writer time for a few retries on the full disk: a failed retry loses nothing.
    std::thread::sleep(Duration::from_millis(100));
    let health = gk.audit_health().unwrap();
    assert!(
        health.failing.as_deref().unwrap().contains("storage"),
        "{health:?}"
    );
    assert_eq!((health.written, health.lost), (20, refused));
    assert!(
        matches!(gk.readiness(), Readiness::AuditFailing { .. }),
        "{}",
        gk.readiness()
    );
    assert!(!gk.readiness().is_ready());

    space.set(u64::MAX);
    wait_until_writing(&gk);
    assert!(gk.readiness().is_ready());
    for _ in 0..5 {
        gk.check(&wechat_update()).unwrap();
    }
    gk.close_audit().unwrap();
    // The cut-short write was cut back: the trail verifies with no torn tail, and a
    // `resumed` record states the gap.
    let report = gatekeeper::verify(&[dir.path()]).unwrap();
    assert_eq!((report.records, report.torn_tail), (26, None));
    let all = records(dir.path());
    let resumed = all[20].resumed.as_ref().unwrap();
    assert_eq!(resumed.lost, refused);
    assert!(all[21..].iter().all(|r| r.deny.is_some()));
    assert_eq!(gk.audit_counts(), Some((26, refused)));
}

/// Open mode answers through a full disk; buffered records already answered are lost, and
/// every one of them is counted.
#[test]
fn a_full_disk_in_open_or_buffered_mode_counts_every_lost_record() {
    for (durability, mode) in [
        (Durability::Durable, FailureMode::Open),
        (Durability::Buffered, FailureMode::Open),
        (Durability::Buffered, FailureMode::Closed),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let space = DiskSpace::new(u64::MAX);
        let gk = gatekeeper_with(config(dir.path(), durability, &space), mode);
        let mut answered = 0u64;
        let mut ids = Vec::new();
        for i in 0..300 {
            if i == 100 {
                space.set(1_000);
            }
            if i == 200 {
                space.set(u64::MAX);
                wait_until_writing(&gk);
            }
            if let Ok(v) = gk.check(&wechat_update()) {
                answered += 1;
                ids.push(v.decision_id.to_string());
            }
            if i % 10 == 0 {
                // Let the writer meet the full disk between checks.
                let _ = gk.flush_audit();
            }
        }
        gk.close_audit().unwrap();
        let (written, lost) = gk.audit_counts().unwrap();
        let all = records(dir.path());
        let decisions = all.iter().filter(|r| r.id.is_some()).count() as u64;
        let stated: u64 = all
            .iter()
            .filter_map(|r| r.resumed.as_ref())
            .map(|r| r.lost)
            .sum();
        assert!(lost > 0, "{durability:?} {mode:?}");
        assert_eq!(
            decisions + lost,
            300,
            "{durability:?} {mode:?}: every check is recorded or counted"
        );
        assert_eq!(
            stated, lost,
            "{durability:?} {mode:?}: the trail states every gap"
        );
        assert_eq!(written, all.len() as u64);
        if mode == FailureMode::Open {
            assert_eq!(answered, 300);
        }
        if durability == Durability::Durable {
            // Whatever a durable check answered is in the trail.
            let recorded: std::collections::HashSet<_> =
                all.iter().filter_map(|r| r.id.clone()).collect();
            let unrecorded = ids.iter().filter(|id| !recorded.contains(*id)).count();
            assert_eq!(
                unrecorded as u64,
                if mode == FailureMode::Open { lost } else { 0 }
            );
        }
        assert!(
            gatekeeper::verify(&[dir.path()])
                .unwrap()
                .torn_tail
                .is_none()
        );
    }
}

/// A durable check returns only once its record is in the file.
#[test]
fn a_durable_check_returns_once_its_record_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let gk = gatekeeper_with(AuditConfig::new(dir.path()), FailureMode::Closed);
    let file = {
        gk.check(&wechat_update()).unwrap();
        only_file(dir.path())
    };
    for _ in 0..50 {
        let id = gk.check(&wechat_update()).unwrap().decision_id.to_string();
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.contains(&id), "{id} answered before it was written");
    }
}

/// Async checks on a single-threaded runtime: the check never blocks the thread (the
/// runtime has only that one), a full queue is waited for asynchronously, and every
/// answered decision is on disk.
#[test]
fn async_checks_wait_for_the_disk_without_blocking_the_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = AuditConfig::new(dir.path());
    config.queue_capacity = 4;
    let gk = gatekeeper_with(config, FailureMode::Closed);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let ids = runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(60), async {
            // A batch: queue all, then await all (one sync serves many).
            let pending: Vec<_> = (0..500).map(|_| gk.check_async(&wechat_update())).collect();
            let mut ids = Vec::new();
            for p in pending {
                ids.push(p.await.unwrap().decision_id.to_string());
            }
            // Concurrent single checks.
            let tasks: Vec<_> = (0..200)
                .map(|_| {
                    let gk = gk.clone();
                    tokio::spawn(async move {
                        gk.check_async(&wechat_update())
                            .await
                            .unwrap()
                            .decision_id
                            .to_string()
                    })
                })
                .collect();
            for t in tasks {
                ids.push(t.await.unwrap());
            }
            ids
        })
        .await
        .expect("async checks did not finish within 60 s")
    });
    let recorded: std::collections::HashSet<_> = records(dir.path())
        .into_iter()
        .filter_map(|r| r.id)
        .collect();
    assert_eq!(ids.len(), 700);
    assert!(ids.iter().all(|id| recorded.contains(id)));
    assert_eq!(gk.audit_counts(), Some((700, 0)));
}
