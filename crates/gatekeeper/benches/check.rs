//! `check` through the handle against the bare policy decision, and audited checks per
//! second, durable against buffered (`cargo xtask bench`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a benchmark harness may fail loudly

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Instant as Clock;

use divan::Bencher;
use gatekeeper::{AuditConfig, Durability, Gatekeeper};
use policy::{Posture, Request, RequestRecord};

fn main() {
    divan::main();
    // With a filter (`-- handle_check`), only the named benchmarks run.
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wanted =
        |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()));
    if wanted("check_vs_decide") {
        check_vs_decide();
    }
    if wanted("audit_checks") {
        audit_throughput();
    }
}

/// `Gatekeeper::check` (audit off) against `Policy::decide` on the same mix, side by side:
/// short rounds of one pass of each (a few milliseconds, so that both passes of a round
/// meet the machine in the same state), in alternating order, and the median of the
/// rounds' ratios. The divan rows above are each measured at a different moment of a
/// shared machine. Then the same on two threads at once (each pass on two threads started
/// for it, timed from start to the end of both): what checks that share a policy cost
/// each other.
fn check_vs_decide() {
    let gk = gatekeeper();
    let active = gk.active().unwrap();
    let requests = mix();
    let decide = |r: &Request| !active.policy.decide(r, Posture::default()).is_deny();
    let check = |r: &Request| gk.check(r).unwrap().permits();
    let arms: Arms = (&check, &decide);
    side_by_side("", 201, 20_000, arms, &|f| pass(&requests, 20_000, f));
    side_by_side(" on two threads", 101, 100_000, arms, &|f| {
        std::thread::scope(|s| {
            let started = Clock::now();
            let threads = [(); 2].map(|()| s.spawn(|| pass(&requests, 100_000, f)));
            for t in threads {
                t.join().unwrap();
            }
            started.elapsed().as_nanos() as f64 / 100_000.0
        })
    });
}

/// A call to compare, and the call to compare it with.
type Arms<'a> = (&'a Call<'a>, &'a Call<'a>);
type Call<'a> = dyn Fn(&Request) -> bool + Sync + 'a;

/// `rounds` runs of each arm, in alternating order, the median ratio printed.
fn side_by_side(
    label: &str,
    rounds: usize,
    calls: usize,
    (check, decide): Arms,
    run: &dyn Fn(&Call) -> f64,
) {
    let (mut ratios, mut decides, mut checks) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let (d, c) = if round % 2 == 0 {
            let d = run(&decide);
            (d, run(&check))
        } else {
            let c = run(&check);
            (run(&decide), c)
        };
        ratios.push(c / d);
        decides.push(d);
        checks.push(c);
    }
    for v in [&mut ratios, &mut decides, &mut checks] {
        v.sort_by(f64::total_cmp);
    }
    let mid = rounds / 2;
    println!();
    println!(
        "check_vs_decide{label}: {rounds} alternating rounds of {calls} calls each: Gatekeeper::check (audit off) / Policy::decide median {:.3} (min {:.3}, max {:.3}); per call {:.1} vs {:.1} ns (medians)",
        ratios[mid],
        ratios[0],
        ratios[rounds - 1],
        checks[mid],
        decides[mid]
    );
}

/// One pass of `calls` calls over the mix in turn: nanoseconds a call.
fn pass(requests: &[Request], calls: usize, f: &Call) -> f64 {
    let started = Clock::now();
    let mut allowed = 0usize;
    for i in 0..calls {
        allowed += usize::from(f(divan::black_box(&requests[i % requests.len()])));
    }
    divan::black_box(allowed);
    started.elapsed().as_nanos() as f64 / calls as f64
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

/// `threads` threads each make `per_thread` checks through a handle that keeps a trail
/// with `durability` (a durable check returns once its record is on disk); the rate in
/// checks per second, and the trail's bytes.
fn audited_checks(durability: Durability, threads: usize, per_thread: usize) -> (f64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = AuditConfig::new(dir.path());
    config.durability = durability;
    let gk = Gatekeeper::builder()
        .policy_dirs(policies())
        .audit(config)
        .build()
        .unwrap();
    let requests = mix();
    let start = Clock::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (gk, requests) = (&gk, &requests);
            s.spawn(move || {
                for i in 0..per_thread {
                    gk.check(&requests[(t + i) % requests.len()]).unwrap();
                }
            });
        }
    });
    let rate = (threads * per_thread) as f64 / start.elapsed().as_secs_f64();
    let head = gk.close_audit().unwrap().unwrap();
    assert_eq!(head.seq, (threads * per_thread) as u64);
    let bytes = gatekeeper::audit::files_in(dir.path())
        .unwrap()
        .iter()
        .map(|(_, f)| std::fs::metadata(f).unwrap().len())
        .sum();
    (rate, bytes)
}

/// Durable against buffered checks, side by side (alternating rounds), and the size of a
/// record against the size of its request.
fn audit_throughput() {
    let (threads, per_thread) = (16, 2_000);
    let mut durable = Vec::new();
    let mut buffered = Vec::new();
    let mut bytes = 0;
    for _ in 0..5 {
        let (rate, b) = audited_checks(Durability::Durable, threads, per_thread);
        durable.push(rate);
        bytes = b;
        buffered.push(audited_checks(Durability::Buffered, threads, per_thread).0);
    }
    durable.sort_by(f64::total_cmp);
    buffered.sort_by(f64::total_cmp);
    let request_bytes: usize = mix()
        .iter()
        .map(|r| {
            serde_json::to_string(&RequestRecord::from(r))
                .unwrap()
                .len()
        })
        .sum::<usize>()
        / mix().len();
    let record_bytes = bytes as f64 / (threads * per_thread) as f64;
    println!();
    println!(
        "audit_checks: {threads} threads x {per_thread} checks, 5 alternating rounds: durable median {:.0} checks/s (min {:.0}, max {:.0}), buffered median {:.0} (min {:.0}, max {:.0}): durable/buffered {:.2}",
        durable[2],
        durable[0],
        durable[4],
        buffered[2],
        buffered[0],
        buffered[4],
        durable[2] / buffered[2]
    );
    println!(
        "audit_record_size: {record_bytes:.0} bytes per record for requests of {request_bytes} bytes on average ({:.2}x)",
        record_bytes / request_bytes as f64
    );
}
