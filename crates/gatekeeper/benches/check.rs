//! `check` through the handle against the bare policy decision, and audit appends per
//! second with the hash chain (`cargo xtask bench`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a benchmark harness may fail loudly

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Instant as Clock;

use divan::Bencher;
use gatekeeper::{AuditConfig, AuditLog, Gatekeeper};
use policy::{Posture, Request, RequestRecord};

fn main() {
    divan::main();
    // With a filter (`-- handle_check`), only the named benchmarks run.
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    if filters.is_empty() || filters.iter().any(|f| "audit_append".contains(f.as_str())) {
        audit_throughput();
    }
}

fn policies() -> Vec<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../policies");
    ["us-2020", "us-2020-courts", "us-2024-pafaca"]
        .iter()
        .map(|s| root.join(s))
        .collect()
}

fn gatekeeper() -> &'static Gatekeeper {
    static GK: OnceLock<Gatekeeper> = OnceLock::new();
    GK.get_or_init(|| {
        Gatekeeper::builder()
            .policy_dirs(policies())
            .build()
            .unwrap()
    })
}

fn mix() -> Vec<Request> {
    let lines = [
        r#"{"app":{"platform":"android","id":"com.zhiliaoapp.musically"},"action":"update","at":"2020-09-22T12:00:00Z","storefront":"US"}"#,
        r#"{"app":{"platform":"android","id":"com.zhiliaoapp.musically"},"action":"host","at":"2020-11-13T04:59:00Z","server_country":"US"}"#,
        r#"{"app":{"platform":"ios","id":"com.tencent.xin"},"action":"payment","at":"2020-09-21T12:00:00Z","billing_country":"US"}"#,
        r#"{"app":{"platform":"ios","id":"com.tencent.xin"},"action":"download","at":"2020-09-21T12:00:00Z","storefront":"CAN"}"#,
        r#"{"app":{"platform":"android","id":"com.lemon.lvoverseas"},"action":"update","at":"2025-01-19T12:00:00Z","device_country":"GU"}"#,
        r#"{"app":{"platform":"android","id":"com.lemon.lvoverseas"},"action":"update","at":"2025-03-01T12:00:00Z","storefront":"USA"}"#,
        r#"{"app":{"platform":"android","id":"com.example.notes"},"action":"download","at":"2025-03-01T12:00:00Z","storefront":"US"}"#,
        r#"{"app":{"platform":"android","id":"com.zhiliaoapp.musically"},"action":"update","at":"2021-07-01T00:00:00Z","storefront":"PRI"}"#,
    ];
    lines
        .iter()
        .map(|l| {
            serde_json::from_str::<RequestRecord>(l)
                .unwrap()
                .into_request()
                .unwrap()
        })
        .collect()
}

/// Decides the request mix in turn, one request per iteration.
fn cycle(bencher: Bencher, mut decide: impl FnMut(&Request) -> bool) {
    let requests = mix();
    let mut i = 0;
    bencher.bench_local(|| {
        i = (i + 1) % requests.len();
        divan::black_box(decide(divan::black_box(&requests[i])))
    });
}

/// The policy crate's decision function, as an embedder without the handle calls it.
#[divan::bench(sample_count = 300, sample_size = 500)]
fn bare_decide(bencher: Bencher) {
    let active = gatekeeper().active().unwrap();
    cycle(bencher, |r| {
        active.policy.decide(r, Posture::default()).is_deny()
    });
}

/// The index-only decision the handle calls inside `check`.
#[divan::bench(sample_count = 300, sample_size = 500)]
fn bare_decide_parts(bencher: Bencher) {
    let active = gatekeeper().active().unwrap();
    cycle(bencher, |r| {
        active.policy.decide_parts(r, Posture::default()).is_deny()
    });
}

/// The same requests through the handle (audit off): the active-policy load, the decision,
/// the decision id and the verdict counters.
#[divan::bench(sample_count = 300, sample_size = 500)]
fn handle_check(bencher: Bencher) {
    let gk = gatekeeper();
    cycle(bencher, |r| gk.check(r).is_ok());
}

/// Appends `n` real verdict records to a fresh trail (fsync every 10 ms) and waits until
/// they are on disk; the rate in records per second.
fn appends_per_second(body: &str, n: usize) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(AuditConfig::new(dir.path())).unwrap();
    let bodies: Vec<String> = (0..n).map(|_| body.to_owned()).collect();
    let start = Clock::now();
    for b in bodies {
        log.append(b).unwrap();
    }
    let head = log.close().unwrap();
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(head.seq, n as u64);
    n as f64 / secs
}

fn audit_throughput() {
    let gk = gatekeeper();
    let request = &mix()[0];
    let verdict = gk.check(request).unwrap();
    let body = serde_json::json!({
        "time": "2020-09-22T12:00:00Z",
        "verdict": verdict.to_record(),
        "request": RequestRecord::from(request),
    })
    .to_string();
    let n = 200_000;
    let mut rates: Vec<f64> = (0..5).map(|_| appends_per_second(&body, n)).collect();
    rates.sort_by(|a, b| a.total_cmp(b));
    println!();
    println!(
        "audit_append: {n} records of {} bytes, fsync every 10 ms: median {:.0} appends/s (min {:.0}, max {:.0}, 5 runs)",
        body.len(),
        rates[2],
        rates[0],
        rates[4]
    );
}
