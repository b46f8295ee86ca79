//! The gatekeeper's metrics through a Prometheus recorder of the test's own: described,
//! present from the start, and no new series per reload.

use std::sync::Arc;

use gatekeeper::{Bundle, Gatekeeper, ManualClock, PolicySource, Reloaded};
use metrics_exporter_prometheus::PrometheusBuilder;

use crate::handle::{at, copy_policies, wechat_update};
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

/// The active bundle's expiry is a gauge, its withdrawal another, and verdicts given by
/// the failure mode are counted by reason.
#[test]
fn expiry_is_measured() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bundle.json");
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
