//! The engine against the independent reference evaluator (`crates/reference`) on
//! generated policies, requests and every posture: the law, not just the indexing.
//! `cargo xtask differential --cases N` runs the same comparison at scale.

/// A small run, fast in a debug build; a failure prints the first case of each kind of
/// difference in full (policy files, request, posture, both answers), shrunk.
#[test]
fn the_engine_agrees_with_the_reference_evaluator() {
    let report = reference::run(&reference::Config {
        cases: 2_000,
        seed: 20_200_920,
        threads: 1,
        show: 4,
        shrink: true,
    });
    assert_eq!(report.cases, 2_000);
    assert!(report.passed(), "\n{}", report.render());
}
