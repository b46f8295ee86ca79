//! The mock store over real HTTP: the shipped scenarios, a small seeded load run
//! cross-checked against `gatekeeper check`, and malformed requests.

use std::path::PathBuf;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::root;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn every_shipped_scenario_answers_as_expected() {
    let rt = runtime();
    let files = mockstore::scenario::shipped(&root().join("tests/scenarios")).unwrap();
    assert!(files.len() >= 5);
    let mut steps = 0;
    for file in files {
        let result = rt
            .block_on(mockstore::scenario::run(
                &file,
                &root().join("policies"),
                &[],
            ))
            .unwrap();
        let failures: Vec<String> = result
            .steps
            .iter()
            .filter_map(|s| {
                s.mismatch
                    .as_ref()
                    .map(|m| format!("  step \"{}\" at {}: {m}", s.name, s.at))
            })
            .collect();
        assert!(
            failures.is_empty(),
            "{}:\n{}",
            result.name,
            failures.join("\n")
        );
        steps += result.steps.len();
    }
    assert!(steps >= 40, "{steps} steps");
}

/// Guards the comparison itself: a scenario whose expectation is wrong is reported with
/// the step, the expected and the actual answer.
#[test]
fn a_wrong_expectation_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wrong.toml");
    std::fs::write(
        &path,
        r#"name = "wrong"
policies = ["us-2020"]
[[step]]
name = "WeChat download in the US on 2020-09-21"
at = "2020-09-21T12:00:00Z"
do = "download"
app = "android:com.tencent.mm"
storefront = "US"
expect.status = 200
"#,
    )
    .unwrap();
    let result = runtime()
        .block_on(mockstore::scenario::run(
            &path,
            &root().join("policies"),
            &[],
        ))
        .unwrap();
    let mismatch = result.steps[0]
        .mismatch
        .clone()
        .expect("the step must mismatch");
    assert!(
        mismatch.contains("status: expected 200, got 451"),
        "{mismatch}"
    );
}

#[test]
fn a_seeded_load_run_matches_gatekeeper_check() {
    let policies: Vec<PathBuf> = ["us-2020", "us-2024-pafaca"]
        .iter()
        .map(|s| root().join("policies").join(s))
        .collect();
    let report = runtime()
        .block_on(mockstore::load::run(
            &policies,
            400,
            42,
            8,
            &indicatif::ProgressBar::hidden(),
        ))
        .unwrap();
    assert!(report.mismatches.is_empty(), "{:#?}", report.mismatches);
    assert!(
        report.denied > 0 && report.denied < 400,
        "{} denied",
        report.denied
    );
    assert!(report.gated_requests_per_sec > 0.0 && report.ungated_requests_per_sec > 0.0);
    // The same seed draws the same workload.
    let a: Vec<String> = mockstore::load::generate(50, 9)
        .into_iter()
        .map(|g| g.path)
        .collect();
    let b: Vec<String> = mockstore::load::generate(50, 9)
        .into_iter()
        .map(|g| g.path)
        .collect();
    assert_eq!(a, b);
}

#[test]
fn malformed_requests_get_a_4xx_json_error() {
    let rt = runtime();
    let config = mockstore::StoreConfig {
        max_body_bytes: 2_048,
        ..Default::default()
    };
    let running = rt
        .block_on(mockstore::start(&[root().join("policies/us-2020")], config))
        .unwrap();
    let client = reqwest::blocking::Client::new();
    let base = running.base.clone();
    let post = |path: &str, body: String| {
        let r = client
            .post(format!("{base}{path}"))
            .body(body)
            .send()
            .unwrap();
        let status = r.status();
        (status, r.json::<Value>().unwrap_or(Value::Null))
    };
    let release = json!({ "app": { "platform": "android", "id": "com.example" }, "version": "1" });
    let cases = vec![
        ("/v1/publisher/releases", "{oops".to_owned(), StatusCode::BAD_REQUEST, "invalid JSON"),
        ("/v1/publisher/releases", json!({ "app": { "platform": "android" } }).to_string(), StatusCode::BAD_REQUEST, "missing field"),
        ("/v1/publisher/releases", json!({ "app": { "platform": "tv", "id": "x" }, "version": "1" }).to_string(), StatusCode::BAD_REQUEST, "unknown platform"),
        ("/v1/publisher/releases", json!({ "app": release["app"], "version": "1", "files": [{ "path": "a.so", "sha256": "zz" }] }).to_string(), StatusCode::BAD_REQUEST, "not a SHA-256"),
        ("/v1/publisher/releases", json!({ "app": release["app"], "version": "1", "files": [{ "path": "x".repeat(3_000), "sha256": "00" }] }).to_string(), StatusCode::PAYLOAD_TOO_LARGE, "larger than the limit"),
        ("/v1/devices/updates", json!({ "storefront": "XX", "installed": [] }).to_string(), StatusCode::BAD_REQUEST, "unknown country code `XX`"),
        ("/v1/payments/android/com.tencent.mm", String::new(), StatusCode::BAD_REQUEST, "give at least one country"),
        ("/v1/payments/android/com.tencent.mm?payer_country=ZZZ", String::new(), StatusCode::BAD_REQUEST, "unknown country code `ZZZ`"),
        ("/v1/hosting/US/tv/com.tencent.mm", String::new(), StatusCode::BAD_REQUEST, "unknown platform"),
    ];
    for (path, body, status, message) in cases {
        let (got, answer) = post(path, body);
        assert_eq!(got, status, "{path}: {answer}");
        assert!(
            answer["error"]
                .as_str()
                .unwrap_or_default()
                .contains(message),
            "{path}: {answer}"
        );
    }
    // The clock is the admin's: no token, no time travel.
    let r = client
        .put(format!("{base}/v1/admin/clock"))
        .json(&json!({ "at": "2020-09-21T00:00:00Z" }))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = client
        .put(format!("{base}/v1/admin/clock"))
        .bearer_auth("admin")
        .json(&json!({ "at": "2020-09-21T00:00:00" }))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // Still serving.
    let (status, _) = post("/v1/publisher/releases", release.to_string());
    assert_eq!(status, StatusCode::CREATED);
    rt.block_on(running.stop());
}
