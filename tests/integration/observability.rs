//! The gatekeeper's metrics through a Prometheus recorder of the test's own: described,
//! present from the start, and no new series per reload.

use std::sync::Arc;

use gatekeeper::{Bundle, Gatekeeper, ManualClock, PolicySource, Reloaded};
use metrics_exporter_prometheus::PrometheusBuilder;

use crate::handle::{at, copy_policies, on_a_copy, request, wechat_update};
use crate::support::root;

/// The lines of `name`'s series (`name{...} value` or `name value`).
fn series<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .collect()
}

/// Every metric has `# HELP`; every counter is there, at 0, before anything happens; the
/// revision is a gauge, not a label, so N reloads add no verdict series.
#[test]
fn metrics_are_described_present_from_the_start_and_reloads_add_no_verdict_series() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        let dir = tempfile::tempdir().unwrap();
        copy_policies(dir.path());
        let gk = Gatekeeper::builder()
            .policy_dirs([dir.path().join("us-2020")])
            .build()
            .unwrap();
        let start = handle.render();
        for name in [
            "gatekeeper_verdicts_total",
            "gatekeeper_failure_mode_verdicts_total",
            "gatekeeper_reloads_total",
            "gatekeeper_rejected_reloads_total",
            "gatekeeper_policy_info",
            "gatekeeper_policy_expired",
            "gatekeeper_policy_expiry_timestamp_seconds",
            "gatekeeper_audit_failures_total",
            "gatekeeper_audit_queue_depth",
            "gatekeeper_audit_lost_records_total",
        ] {
            assert!(
                start.contains(&format!("# HELP {name} ")),
                "no HELP for {name}:\n{start}"
            );
            assert!(!series(&start, name).is_empty(), "no {name}:\n{start}");
        }
        // 3 gates x 7 actions, all at 0 before the first check.
        let verdicts = series(&start, "gatekeeper_verdicts_total");
        assert_eq!(verdicts.len(), 21, "{verdicts:#?}");
        assert!(verdicts.iter().all(|l| l.ends_with(" 0")), "{verdicts:#?}");
        assert!(
            series(&start, "gatekeeper_rejected_reloads_total")
                .iter()
                .all(|l| l.ends_with(" 0"))
        );
        let revision = gk.active().unwrap().revision.clone();
        assert_eq!(
            series(&start, "gatekeeper_policy_info"),
            [format!(
                "gatekeeper_policy_info{{revision=\"{revision}\"}} 1"
            )]
        );

        let reloads = 12;
        for g in 0..reloads {
            std::fs::write(
                dir.path().join("us-2020/generation.toml"),
                format!("# generation {g}\n"),
            )
            .unwrap();
            assert!(matches!(gk.reload().unwrap(), Reloaded::Swapped(_)));
            gk.check(&wechat_update()).unwrap();
        }
        let after = handle.render();
        let verdicts = series(&after, "gatekeeper_verdicts_total");
        assert_eq!(verdicts.len(), 21, "reloads added series: {verdicts:#?}");
        assert!(!after.contains("revision=\"none\""));
        assert!(
            verdicts.contains(
                &format!("gatekeeper_verdicts_total{{gate=\"deny\",action=\"update\"}} {reloads}")
                    .as_str()
            ),
            "{verdicts:#?}"
        );
        assert!(
            series(&after, "gatekeeper_reloads_total")
                .contains(&format!("gatekeeper_reloads_total {}", reloads + 1).as_str())
        );
        // One revision is active; those it replaced are at 0.
        let info = series(&after, "gatekeeper_policy_info");
        let active = gk.active().unwrap().revision.clone();
        assert_eq!(
            info.iter()
                .filter(|l| l.ends_with(" 1"))
                .collect::<Vec<_>>(),
            [&format!(
                "gatekeeper_policy_info{{revision=\"{active}\"}} 1"
            )]
        );
    });
}

/// A gatekeeper over a bundle of `us-2020` written in `dir` that expires at
/// 2027-01-01T00:00:00Z, and the clock it reads, at 2026-06-01.
fn expiring(dir: &std::path::Path) -> (Gatekeeper, ManualClock) {
    let path = dir.join("bundle.json");
    let b = Bundle::build(
        &[root().join("policies/us-2020")],
        1,
        at("2026-01-01T00:00:00Z"),
        Some(at("2027-01-01T00:00:00Z")),
    )
    .unwrap();
    std::fs::write(&path, b.to_bytes()).unwrap();
    let clock = ManualClock::new(at("2026-06-01T00:00:00Z"));
    let gk = Gatekeeper::builder()
        .source(PolicySource::BundleFile(path))
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    (gk, clock)
}

/// The active bundle's expiry is a gauge, its withdrawal another, and verdicts given by
/// the failure mode are counted by reason.
#[test]
fn expiry_is_measured() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        let dir = tempfile::tempdir().unwrap();
        let (gk, clock) = expiring(dir.path());
        let before = handle.render();
        assert!(
            before.contains("gatekeeper_policy_expiry_timestamp_seconds 1798761600"),
            "{before}"
        );
        assert!(before.contains("gatekeeper_policy_expired 0"), "{before}");
        clock.set(at("2027-01-02T00:00:00Z"));
        gk.check(&wechat_update()).unwrap();
        gk.check(&wechat_update()).unwrap();
        let after = handle.render();
        assert!(after.contains("gatekeeper_policy_expired 1"), "{after}");
        assert!(
            after.contains("gatekeeper_failure_mode_verdicts_total{reason=\"expired\"} 2"),
            "{after}"
        );
        // A reload that finds only the expired bundle keeps the gauge at 1.
        assert!(gk.reload().is_err());
        assert!(handle.render().contains("gatekeeper_policy_expired 1"));
    });
}

/// The value of each series of `name`, by its labels.
fn values(text: &str, name: &str) -> std::collections::BTreeMap<String, u64> {
    series(text, name)
        .iter()
        .map(|l| {
            let (labels, value) = l.rsplit_once(' ').unwrap();
            (labels.to_owned(), value.parse().unwrap())
        })
        .collect()
}

/// A batch's checks give what single checks give (each with an id of its own), all under
/// the policy of the first (an install during the batch applies from the next), and are
/// counted as single checks are, the first at once and the rest when the checks end.
#[test]
fn a_batch_of_checks_gives_and_counts_what_single_checks_do() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        let (dir, gk) = on_a_copy();
        let requests: Vec<policy::Request> = [
            r#"{"app":{"platform":"android","id":"com.tencent.mm"},"action":"update","at":"2020-09-22T12:00:00Z","storefront":"US"}"#,
            r#"{"app":{"platform":"ios","id":"com.zhiliaoapp.musically"},"action":"download","at":"2020-09-22T12:00:00Z","storefront":"CAN"}"#,
            r#"{"app":{"platform":"android","id":"com.example.notes"},"action":"download","at":"2020-09-22T12:00:00Z","storefront":"US"}"#,
            r#"{"app":{"platform":"ios","id":"com.tencent.xin"},"action":"host","at":"2020-11-13T12:00:00Z","server_country":"US"}"#,
            r#"{"app":{"platform":"android","id":"com.tencent.mm"},"action":"payment","at":"2020-09-21T12:00:00Z","billing_country":"PR"}"#,
        ]
        .map(request)
        .into();
        let singles: Vec<_> = requests.iter().map(|r| gk.check(r).unwrap()).collect();
        let gates: std::collections::BTreeSet<_> =
            singles.iter().map(|v| v.gate.as_str()).collect();
        assert_eq!(gates.len(), 2, "allows and denies: {gates:?}");
        let once = values(&handle.render(), "gatekeeper_verdicts_total");
        assert_eq!(once.values().sum::<u64>(), requests.len() as u64);

        let revision = gk.active().unwrap().revision.clone();
        let mut checks = gk.checks().expect("no audit trail");
        let mut ids = std::collections::HashSet::new();
        for (k, (r, single)) in requests.iter().zip(&singles).enumerate() {
            if k == 2 {
                // A new revision installed during the batch.
                std::fs::write(dir.path().join("us-2020/generation.toml"), "# later\n").unwrap();
                assert!(matches!(gk.reload().unwrap(), Reloaded::Swapped(_)));
            }
            let v = checks.check(r);
            assert!(ids.insert(v.decision_id), "an id given twice");
            assert_ne!(v.decision_id, single.decision_id);
            let (mut got, mut want) = (v.to_record(), single.to_record());
            got.decision_id.clear();
            want.decision_id.clear();
            assert_eq!(
                serde_json::to_value(got).unwrap(),
                serde_json::to_value(want).unwrap(),
                "{k}"
            );
            assert_eq!(v.revision(), Some(&revision), "{k}");
            if k == 0 {
                // The first is counted as it is given; the rest are not yet.
                let now = values(&handle.render(), "gatekeeper_verdicts_total");
                assert_eq!(now.values().sum::<u64>(), requests.len() as u64 + 1);
            }
        }
        let during = values(&handle.render(), "gatekeeper_verdicts_total");
        assert_eq!(during.values().sum::<u64>(), requests.len() as u64 + 1);
        drop(checks);
        let twice = values(&handle.render(), "gatekeeper_verdicts_total");
        assert_eq!(
            twice,
            once.iter().map(|(k, v)| (k.clone(), 2 * v)).collect(),
            "each series counted as often as by single checks"
        );
        // The next batch decides under the new revision.
        let mut checks = gk.checks().unwrap();
        assert_ne!(checks.check(&requests[0]).revision(), Some(&revision));
    });
}

/// Without a policy, a batch's checks are the failure mode's, counted by reason; with an
/// audit trail there are no batch checks (each record is to be awaited).
#[test]
fn a_batch_of_checks_without_a_policy_is_the_failure_mode_s_and_none_under_audit() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        let dir = tempfile::tempdir().unwrap();
        for (mode, gate) in [
            (gatekeeper::FailureMode::Closed, gatekeeper::Gate::Deny),
            (gatekeeper::FailureMode::Open, gatekeeper::Gate::Allow),
        ] {
            let gk = Gatekeeper::builder()
                .policy_dirs([dir.path().join("none")])
                .start_empty(true)
                .failure_mode(mode)
                .build()
                .unwrap();
            let mut checks = gk.checks().unwrap();
            for _ in 0..3 {
                let v = checks.check(&wechat_update());
                assert_eq!((v.gate, v.revision()), (gate, None));
                assert!(v.decision().is_none());
            }
        }
        let text = handle.render();
        assert!(
            text.contains("gatekeeper_failure_mode_verdicts_total{reason=\"no-policy\"} 6"),
            "{text}"
        );
        let verdicts = values(&text, "gatekeeper_verdicts_total");
        assert_eq!(
            verdicts["gatekeeper_verdicts_total{gate=\"deny\",action=\"update\"}"],
            3
        );
        assert_eq!(
            verdicts["gatekeeper_verdicts_total{gate=\"allow\",action=\"update\"}"],
            3
        );
        let audited = Gatekeeper::builder()
            .policy_dirs([root().join("policies/us-2020")])
            .audit(gatekeeper::AuditConfig::new(dir.path().join("audit")))
            .build()
            .unwrap();
        assert!(audited.checks().is_none());
    });
}

/// A batch's checks after the bundle expired are the failure mode's, counted by reason;
/// in shadow mode, a batch's denies are shadow denies.
#[test]
fn a_batch_of_checks_after_expiry_and_in_shadow_mode() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        let dir = tempfile::tempdir().unwrap();
        let (gk, clock) = expiring(dir.path());
        clock.set(at("2027-01-02T00:00:00Z"));
        let mut checks = gk.checks().unwrap();
        for _ in 0..3 {
            let v = checks.check(&wechat_update());
            assert_eq!((v.gate, v.revision()), (gatekeeper::Gate::Deny, None));
            assert!(v.to_record().error.unwrap().contains("expired"));
        }
        drop(checks);
        let text = handle.render();
        assert!(
            text.contains("gatekeeper_failure_mode_verdicts_total{reason=\"expired\"} 3"),
            "{text}"
        );
        let shadow = Gatekeeper::builder()
            .policy_dirs([root().join("policies/us-2020")])
            .mode(gatekeeper::Mode::Shadow)
            .build()
            .unwrap();
        let mut checks = shadow.checks().unwrap();
        for _ in 0..2 {
            let v = checks.check(&wechat_update());
            assert_eq!(v.gate, gatekeeper::Gate::ShadowDeny);
            assert!(v.decision().unwrap().is_deny());
        }
    });
}
