//! The decision function on the shipped policies (`cargo xtask bench`).
//!
//! All three shipped sets are loaded together; the requests fall around the real dates
//! of the record and mix denies, every allow reason, alpha-2 and alpha-3 codes, and
//! apps no policy names. Only the `decide` call is timed; requests are prepared first.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a benchmark harness may fail loudly

use std::path::{Path, PathBuf};

use divan::Bencher;
use policy::{Policy, Posture, Request, RequestRecord, Source};

fn main() {
    divan::main();
}

fn shipped() -> Policy {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies");
    let mut files: Vec<PathBuf> = Vec::new();
    let mut stack = vec![root];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "toml") {
                files.push(path);
            }
        }
    }
    files.sort();
    let sources = files
        .iter()
        .map(|f| Source::new(f.display().to_string(), std::fs::read_to_string(f).unwrap()));
    Policy::from_sources(sources).unwrap_or_else(|d| panic!("{}", d.render()))
}

fn request(app: (&str, &str), action: &str, at: &str, signal: (&str, &str)) -> Request {
    let mut r = RequestRecord {
        app: Some(policy::AppRecord {
            platform: app.0.into(),
            id: app.1.into(),
        }),
        action: action.into(),
        at: at.into(),
        ..Default::default()
    };
    match signal.0 {
        "storefront" => r.storefront = Some(signal.1.into()),
        "device_country" => r.device_country = Some(signal.1.into()),
        "billing_country" => r.billing_country = Some(signal.1.into()),
        _ => r.server_country = Some(signal.1.into()),
    }
    r.into_request().unwrap()
}

fn mix() -> Vec<Request> {
    let tiktok = ("android", "com.zhiliaoapp.musically");
    let wechat = ("ios", "com.tencent.xin");
    let capcut = ("android", "com.lemon.lvoverseas");
    let other = ("android", "com.example.notes");
    vec![
        request(
            tiktok,
            "update",
            "2020-09-22T12:00:00Z",
            ("storefront", "US"),
        ),
        request(
            tiktok,
            "download",
            "2020-09-19T12:00:00Z",
            ("storefront", "USA"),
        ),
        request(
            tiktok,
            "host",
            "2020-11-13T04:59:00Z",
            ("server_country", "US"),
        ),
        request(
            tiktok,
            "update",
            "2021-07-01T00:00:00Z",
            ("storefront", "PRI"),
        ),
        request(
            wechat,
            "payment",
            "2020-09-21T12:00:00Z",
            ("billing_country", "US"),
        ),
        request(
            wechat,
            "download",
            "2020-09-21T12:00:00Z",
            ("storefront", "CAN"),
        ),
        request(
            capcut,
            "update",
            "2025-01-19T12:00:00Z",
            ("device_country", "GU"),
        ),
        request(
            capcut,
            "update",
            "2025-03-01T12:00:00Z",
            ("storefront", "US"),
        ),
        request(
            capcut,
            "cdn",
            "2025-03-01T12:00:00Z",
            ("server_country", "US"),
        ),
        request(
            other,
            "download",
            "2025-03-01T12:00:00Z",
            ("storefront", "US"),
        ),
    ]
}

/// The request mix, one decision per iteration, cycling through the mix.
#[divan::bench(sample_count = 300, sample_size = 500)]
fn decide_mix(bencher: Bencher) {
    let policy = shipped();
    let requests = mix();
    let mut i = 0;
    bencher.bench_local(|| {
        i = (i + 1) % requests.len();
        divan::black_box(
            policy
                .decide(divan::black_box(&requests[i]), Posture::default())
                .is_deny(),
        )
    });
}

/// One typical deny: TikTok update in a US storefront in 2020.
#[divan::bench(sample_count = 300, sample_size = 500)]
fn decide_deny(bencher: Bencher) {
    let policy = shipped();
    let requests = mix();
    bencher.bench_local(|| {
        divan::black_box(
            policy
                .decide(divan::black_box(&requests[0]), Posture::default())
                .is_deny(),
        )
    });
}

/// An app that no policy names.
#[divan::bench(sample_count = 300, sample_size = 500)]
fn decide_not_covered(bencher: Bencher) {
    let policy = shipped();
    let requests = mix();
    bencher.bench_local(|| {
        divan::black_box(
            policy
                .decide(divan::black_box(&requests[9]), Posture::default())
                .is_deny(),
        )
    });
}

/// A hindsight judgement (`known_at`), which scans instead of using the time line.
#[divan::bench(sample_count = 300, sample_size = 500)]
fn decide_in_hindsight(bencher: Bencher) {
    let policy = shipped();
    let mut record = RequestRecord::from(&mix().swap_remove(4));
    record.known_at = Some("2020-09-19T06:00:00Z".into());
    let request = record.into_request().unwrap();
    bencher.bench_local(|| {
        divan::black_box(
            policy
                .decide(divan::black_box(&request), Posture::default())
                .is_deny(),
        )
    });
}

/// Loading and compiling the shipped policies from their text.
#[divan::bench(sample_count = 20)]
fn compile_shipped(bencher: Bencher) {
    bencher.bench_local(|| divan::black_box(shipped().prohibitions().len()));
}
