//! The embeddable handle: checks, modes, failure modes, reloads under load.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};

use gatekeeper::{
    BuildError, Bundle, FailureMode, Gate, Gatekeeper, ManualClock, Mode, PolicySource, Readiness,
    ReloadError, Reloaded,
};
use policy::{Instant, Request};

use crate::support::root;

pub fn at(s: &str) -> Instant {
    Instant::parse_rfc3339(s).unwrap()
}

/// A WeChat update from a US storefront on 2020-09-22: denied under `us-2020`.
pub fn wechat_update() -> Request {
    request(
        r#"{"app":{"platform":"android","id":"com.tencent.mm"},"action":"update","at":"2020-09-22T12:00:00Z","storefront":"US"}"#,
    )
}

/// A request from its JSON (the form of `gatekeeper check`).
pub fn request(json: &str) -> Request {
    serde_json::from_str::<policy::RequestRecord>(json)
        .unwrap()
        .into_request()
        .unwrap()
}

/// Copies a shipped set (and what it includes) into a temporary folder of its own.
pub fn copy_policies(to: &Path) {
    for set in ["common", "us-2020"] {
        let from = root().join("policies").join(set);
        std::fs::create_dir_all(to.join(set)).unwrap();
        for entry in std::fs::read_dir(&from).unwrap() {
            let path = entry.unwrap().path();
            // The policy files; the set's test cases (`tests/`) are not policy.
            if path.is_file() {
                std::fs::copy(&path, to.join(set).join(path.file_name().unwrap())).unwrap();
            }
        }
    }
}

/// A gatekeeper over a copy of `us-2020` that a test may change.
pub fn on_a_copy() -> (tempfile::TempDir, Gatekeeper) {
    let dir = tempfile::tempdir().unwrap();
    copy_policies(dir.path());
    let gk = Gatekeeper::builder()
        .policy_dirs([dir.path().join("us-2020")])
        .build()
        .unwrap();
    (dir, gk)
}

#[test]
fn enforce_denies_and_names_the_revision() {
    let gk = Gatekeeper::builder()
        .policy_dirs([root().join("policies/us-2020")])
        .build()
        .unwrap();
    let verdict = gk.check(&wechat_update()).unwrap();
    assert_eq!(verdict.gate, Gate::Deny);
    assert!(!verdict.permits());
    assert_eq!(verdict.revision(), Some(&gk.active().unwrap().revision));
    let record = verdict.to_record();
    assert_eq!(
        record.decision.unwrap().reasons[0].prohibition,
        "wechat-app-store"
    );
    // Decision ids are unique.
    let other = gk.check(&wechat_update()).unwrap();
    assert_ne!(verdict.decision_id, other.decision_id);
}

#[test]
fn shadow_mode_lets_a_would_be_deny_pass() {
    let gk = Gatekeeper::builder()
        .policy_dirs([root().join("policies/us-2020")])
        .mode(Mode::Shadow)
        .build()
        .unwrap();
    let verdict = gk.check(&wechat_update()).unwrap();
    assert_eq!(verdict.gate, Gate::ShadowDeny);
    assert!(verdict.permits());
    assert!(verdict.decision().unwrap().is_deny());
}

#[test]
fn failure_modes_apply_when_no_policy_is_active() {
    let missing = root().join("policies/no-such-set");
    let closed = Gatekeeper::builder()
        .policy_dirs([&missing])
        .start_empty(true)
        .build()
        .unwrap();
    assert!(closed.active().is_none());
    let verdict = closed.check(&wechat_update()).unwrap();
    assert_eq!(verdict.gate, Gate::Deny);
    assert_eq!(
        verdict.to_record().error.as_deref(),
        Some(gatekeeper::NO_POLICY)
    );
    assert!(verdict.revision().is_none());
    let open = Gatekeeper::builder()
        .policy_dirs([&missing])
        .start_empty(true)
        .failure_mode(FailureMode::Open)
        .build()
        .unwrap();
    assert_eq!(open.check(&wechat_update()).unwrap().gate, Gate::Allow);
}

#[test]
fn a_malformed_request_is_an_error_not_a_verdict() {
    // A request is validated when it is made, so a malformed one never reaches a check.
    let no_signal: policy::RequestRecord = serde_json::from_str(
        r#"{"app":{"platform":"android","id":"com.tencent.mm"},"action":"update","at":"2020-09-22T12:00:00Z"}"#,
    )
    .unwrap();
    assert_eq!(
        no_signal.into_request(),
        Err(policy::RequestError::NoSignal)
    );
}

/// A change that fails to load leaves the last good policy active and says why.
#[test]
fn a_broken_change_keeps_the_last_good_policy() {
    let (dir, gk) = on_a_copy();
    let good = gk.active().unwrap().revision.clone();
    assert_eq!(gk.reload().unwrap(), Reloaded::Unchanged(good.clone()));
    std::fs::write(
        dir.path().join("us-2020/broken.toml"),
        "[[prohibition]]\nid = 3\n",
    )
    .unwrap();
    match gk.reload() {
        Err(ReloadError::Policy(d)) => {
            assert!(d.render().contains("broken.toml"), "{}", d.render())
        }
        other => panic!("expected diagnostics, got {other:?}"),
    }
    assert_eq!(gk.active().unwrap().revision, good);
    assert_eq!(gk.check(&wechat_update()).unwrap().gate, Gate::Deny);
    // Fixing the file makes the next reload take it.
    std::fs::write(dir.path().join("us-2020/broken.toml"), "# fixed\n").unwrap();
    assert!(matches!(gk.reload().unwrap(), Reloaded::Swapped(r) if r != good));
}

/// Many threads check while policies reload: no check fails, every verdict names a
/// revision, and the revisions one thread sees never go backwards.
#[test]
fn reload_under_concurrent_load() {
    let (dir, gk) = on_a_copy();
    let generation: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    generation
        .lock()
        .unwrap()
        .insert(gk.active().unwrap().revision.0.clone(), 0);
    let done = Arc::new(AtomicBool::new(false));
    let checked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let threads = 6;
    let start = Arc::new(Barrier::new(threads + 1));
    let checkers: Vec<_> = (0..threads)
        .map(|_| {
            let (gk, done, start, checked) =
                (gk.clone(), done.clone(), start.clone(), checked.clone());
            std::thread::spawn(move || {
                start.wait();
                let mut seen: Vec<String> = Vec::new();
                let request = wechat_update();
                let mut first = true;
                loop {
                    // A check that starts after `done` sees the last revision.
                    let last_round = done.load(Ordering::SeqCst);
                    let verdict = gk
                        .check(&request)
                        .expect("no check may fail during reloads");
                    assert_eq!(verdict.gate, Gate::Deny);
                    let revision = verdict
                        .revision()
                        .expect("every verdict names a revision")
                        .0
                        .clone();
                    if seen.last() != Some(&revision) {
                        seen.push(revision);
                    }
                    if std::mem::take(&mut first) {
                        checked.fetch_add(1, Ordering::SeqCst);
                    }
                    if last_round {
                        break;
                    }
                }
                seen
            })
        })
        .collect();
    start.wait();
    // Every checker has checked once on the first revision before the reloads begin.
    while checked.load(Ordering::SeqCst) < threads {
        // A checker only stops once `done` is set: one that stopped before its first
        // check panicked, and waiting for it would never end.
        assert!(
            !checkers.iter().any(|c| c.is_finished()),
            "a checker stopped before its first check"
        );
        std::thread::yield_now();
    }
    let generations = 40;
    for g in 1..=generations {
        std::fs::write(
            dir.path().join("us-2020/generation.toml"),
            format!("# generation {g}\n"),
        )
        .unwrap();
        match gk.reload().unwrap() {
            Reloaded::Swapped(r) => {
                generation.lock().unwrap().insert(r.0, g);
            }
            Reloaded::Unchanged(_) => panic!("generation {g} changed the content"),
        }
    }
    done.store(true, Ordering::SeqCst);
    let generation = generation.lock().unwrap();
    let mut distinct = usize::MAX;
    for checker in checkers {
        let seen = checker.join().unwrap();
        let order: Vec<usize> = seen.iter().map(|r| generation[r]).collect();
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "revisions went backwards: {order:?}"
        );
        distinct = distinct.max(order.len());
    }
    assert!(distinct >= 2, "the checkers should have seen reloads");
}

#[test]
fn watch_picks_up_a_changed_file() {
    let (dir, gk) = on_a_copy();
    let before = gk.active().unwrap().revision.clone();
    let _watcher = gk.watch(std::time::Duration::from_millis(20));
    std::fs::write(
        dir.path().join("us-2020/extra.toml"),
        "# a comment changes the revision\n",
    )
    .unwrap();
    // Wait for the watcher's reload, bounded: the condition, not a fixed sleep, ends the wait.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while gk.active().unwrap().revision == before {
        assert!(
            std::time::Instant::now() < deadline,
            "the watcher never reloaded"
        );
        std::thread::yield_now();
    }
}

#[test]
fn the_settable_clock_drives_now() {
    let clock = gatekeeper::ManualClock::new(at("2020-09-19T12:00:00Z"));
    let gk = Gatekeeper::builder()
        .policy_dirs([root().join("policies/us-2020")])
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    assert_eq!(gk.now(), at("2020-09-19T12:00:00Z"));
    clock.advance(std::time::Duration::from_secs(86_400));
    assert_eq!(gk.now(), at("2020-09-20T12:00:00Z"));
}

/// A gatekeeper built on a wrong path used to start and deny (or serve) everything: the
/// build is an error unless the embedder opts into starting empty.
#[test]
fn building_on_a_wrong_path_is_an_error_unless_starting_empty() {
    let missing = root().join("policies/no-such-set");
    match Gatekeeper::builder().policy_dirs([&missing]).build() {
        Err(BuildError::FirstLoad(ReloadError::Policy(d))) => {
            assert!(d.render().contains("no-such-set"), "{}", d.render())
        }
        other => panic!("expected a first-load error, got {other:?}"),
    }
    assert!(matches!(
        Gatekeeper::builder().build(),
        Err(BuildError::NoPolicy)
    ));
    let gk = Gatekeeper::builder()
        .policy_dirs([&missing])
        .start_empty(true)
        .build()
        .unwrap();
    match gk.readiness() {
        Readiness::NoPolicy { reason } => assert!(reason.contains("no-such-set"), "{reason}"),
        other => panic!("{other:?}"),
    }
    // Trusted keys protect bundles; with folders they would protect nothing.
    let key = gatekeeper::keys::SignerKey::generate("k").unwrap();
    assert!(matches!(
        Gatekeeper::builder()
            .policy_dirs([root().join("policies/us-2020")])
            .trusted_keys([key.verifier()], 1)
            .build(),
        Err(BuildError::TrustWithoutBundle)
    ));
    assert!(matches!(
        Gatekeeper::builder()
            .source(PolicySource::BundleFile(missing.clone()))
            .trusted_keys([key.verifier()], 2)
            .build(),
        Err(BuildError::Trust(_))
    ));
}

/// The active bundle's expiry, by the handle's clock, withdraws it: checks get the failure
/// mode and say why, `active()` is empty and readiness says `Expired`.
#[test]
fn the_active_bundles_expiry_withdraws_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bundle.json");
    let expires = at("2027-01-01T00:00:00Z");
    let b = Bundle::build(
        &[root().join("policies/us-2020")],
        2,
        at("2026-01-01T00:00:00Z"),
        Some(expires),
    )
    .unwrap();
    std::fs::write(&path, b.to_bytes()).unwrap();
    let clock = ManualClock::new(at("2026-12-31T23:59:59Z"));
    let build = |failure_mode| {
        Gatekeeper::builder()
            .source(PolicySource::BundleFile(path.clone()))
            .clock(Arc::new(clock.clone()))
            .failure_mode(failure_mode)
            .build()
            .unwrap()
    };
    let (closed, open) = (build(FailureMode::Closed), build(FailureMode::Open));
    let revision = closed.active().unwrap().revision.clone();
    assert_eq!(
        closed.readiness(),
        Readiness::Ready {
            revision: revision.clone(),
            bundle_revision: Some(2)
        }
    );
    assert!(closed.check(&wechat_update()).unwrap().revision().is_some());
    clock.advance(std::time::Duration::from_secs(1));
    assert_eq!(
        closed.readiness(),
        Readiness::Expired {
            revision,
            bundle_revision: Some(2),
            at: expires
        }
    );
    assert!(closed.active().is_none());
    let verdict = closed.check(&wechat_update()).unwrap();
    assert_eq!(verdict.gate, Gate::Deny);
    assert!(verdict.revision().is_none());
    assert!(
        verdict
            .to_record()
            .error
            .unwrap()
            .contains("expired at 2027-01-01T00:00:00Z")
    );
    assert_eq!(open.check(&wechat_update()).unwrap().gate, Gate::Allow);
    // Setting the clock back restores it: expiry is judged at every check.
    clock.set(at("2026-12-31T00:00:00Z"));
    assert!(closed.readiness().is_ready());
}

/// Captures what a test's tracing events write.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn take(&self) -> String {
        String::from_utf8(std::mem::take(&mut *self.0.lock().unwrap())).unwrap()
    }
}

/// Every distinct failure is logged with its diagnostics (a repeat is not), and the log
/// says whether a policy stays active. Before, two failures with the same number of
/// problems had the same text and the second was never logged.
#[test]
fn every_distinct_failure_is_logged_with_its_diagnostics() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let dispatch = tracing::Dispatch::new(subscriber);
    // With a single dispatcher registered, `tracing` decides whether a call site is of
    // interest by asking the default dispatcher of the thread that first reaches it: a
    // call site first reached by another test's thread would be silenced for this one. A
    // second dispatcher, made after this test's, makes it ask every dispatcher.
    let _second = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
    tracing::dispatcher::with_default(&dispatch, || {
        let (dir, gk) = on_a_copy();
        logs.take();
        let broken = dir.path().join("us-2020/broken.toml");
        std::fs::write(&broken, "[[prohibition]]\nid = 3\n").unwrap();
        assert!(gk.reload().is_err());
        let first = logs.take();
        assert!(first.contains("broken.toml"), "{first}");
        assert!(first.contains("the active policy stays active"), "{first}");
        assert!(gk.reload().is_err());
        assert_eq!(logs.take(), "", "a repeated failure is logged once");
        // A different problem, and still one problem: logged.
        std::fs::write(&broken, "[instrument\n").unwrap();
        assert!(gk.reload().is_err());
        let second = logs.take();
        assert!(second.contains("broken.toml"), "{second}");
        assert_ne!(first, second);

        // With nothing active the log does not claim that a policy stays active.
        let missing = root().join("policies/no-such-set");
        let empty = Gatekeeper::builder()
            .policy_dirs([&missing])
            .start_empty(true)
            .build()
            .unwrap();
        drop(empty);
        let none = logs.take();
        assert!(none.contains("no policy is active"), "{none}");
        assert!(!none.contains("stays active"), "{none}");
    });
}

/// A verdict and a decision serialized from borrowed data (what the sidecar writes) are the
/// same JSON, byte for byte, as their records: for every case beside the policies, under
/// every posture, and for a verdict with no policy.
#[test]
fn verdicts_written_from_borrowed_data_are_their_records() {
    let dirs = [
        "policies/us-2020",
        "policies/us-2020-courts",
        "policies/us-2024-pafaca",
        "tests/fixtures/good",
    ];
    let (suites, problems) =
        authoring::cases::discover(&[root().join("policies"), root().join("tests/fixtures/good")]);
    assert!(problems.is_empty(), "{problems:?}");
    let mut requests = Vec::new();
    for file in suites.iter().flat_map(|s| &s.files) {
        for line in std::fs::read_to_string(file).unwrap().lines() {
            let case: serde_json::Value = serde_json::from_str(line).unwrap();
            let record: policy::RequestRecord =
                serde_json::from_value(case["request"].clone()).unwrap();
            if let Ok(r) = record.into_request() {
                requests.push(r);
            }
        }
    }
    assert!(requests.len() > 100);
    let mut compared = 0;
    for dir in dirs {
        let gk = Gatekeeper::builder()
            .policy_dirs([root().join(dir)])
            .build()
            .unwrap();
        let active = gk.active().unwrap();
        for request in &requests {
            let verdict = gk.check(request).unwrap();
            assert_eq!(
                serde_json::to_string(&verdict).unwrap(),
                serde_json::to_string(&verdict.to_record()).unwrap()
            );
            for posture in policy::Posture::ALL {
                let decision = active.policy.decide(request, posture);
                assert_eq!(
                    serde_json::to_string(&decision).unwrap(),
                    serde_json::to_string(&decision.to_record()).unwrap()
                );
                compared += 1;
            }
        }
    }
    assert!(compared > 1000);
    let empty = Gatekeeper::builder()
        .policy_dirs([root().join("no-such-folder")])
        .start_empty(true)
        .build()
        .unwrap();
    let verdict = empty.check(&wechat_update()).unwrap();
    assert_eq!(
        serde_json::to_string(&verdict).unwrap(),
        serde_json::to_string(&verdict.to_record()).unwrap()
    );
}
