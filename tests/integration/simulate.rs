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

/// The scenarios of the statute's first days under each posture, and of the divestiture of
/// 2026: each must run, by name, with its steps and no failure.
const NEW_SCENARIOS: [(&str, usize); 4] = [
    (
        "us-2024-pafaca: 2025-01-18 to 2025-02-14, conservative posture, non-enforcement honoured",
        15,
    ),
    (
        "us-2024-pafaca: 2025-01-18 to 2025-02-14, permissive posture, non-enforcement honoured",
        15,
    ),
    (
        "us-2024-pafaca: 2025-01-18 to 2025-02-14, conservative posture, non-enforcement orders ignored",
        10,
    ),
    (
        "us-2024-pafaca: the qualified divestiture of 2026 (TikTok USDS Joint Venture LLC), conservative posture",
        20,
    ),
];

#[test]
fn every_shipped_scenario_answers_as_expected() {
    let rt = runtime();
    let files = mockstore::scenario::shipped(&root().join("tests/scenarios")).unwrap();
    assert!(files.len() >= 10, "{files:?}");
    let mut steps = 0;
    let mut ran = Vec::new();
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
        assert_eq!(result.failures(), 0, "{}", result.name);
        steps += result.steps.len();
        ran.push(result);
    }
    assert!(steps >= 100, "{steps} steps");
    for (name, min_steps) in NEW_SCENARIOS {
        let result = ran
            .iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("scenario `{name}` did not run"));
        assert!(
            result.steps.len() >= min_steps,
            "`{name}`: {} steps",
            result.steps.len()
        );
        assert_eq!(result.failures(), 0, "`{name}`");
    }
    let posture = |name: &str| {
        let r = ran.iter().find(|r| r.name == name).unwrap();
        (r.posture.as_str(), r.non_enforcement.as_str())
    };
    assert_eq!(posture(NEW_SCENARIOS[0].0), ("conservative", "honour"));
    assert_eq!(posture(NEW_SCENARIOS[1].0), ("permissive", "honour"));
    assert_eq!(posture(NEW_SCENARIOS[2].0), ("conservative", "ignore"));
    // The divestiture scenario loads a policy folder beside it (made-up publisher accounts).
    let divestiture = ran.iter().find(|r| r.name == NEW_SCENARIOS[3].0).unwrap();
    assert!(
        divestiture
            .policies
            .iter()
            .any(|p| p.ends_with("scenarios/policies/store-accounts")),
        "{:?}",
        divestiture.policies
    );
}

/// A posture given when running overrides the scenario's own: the conservative scenario's
/// answers inside the statute's window are then wrong, and reported as such.
#[test]
fn a_posture_override_changes_the_answers() {
    let rt = runtime();
    let file = root().join("tests/scenarios/us-2024-pafaca-2025-01-postures-conservative.toml");
    let options = mockstore::scenario::RunOptions {
        boundaries: Some(policy::Boundaries::Permissive),
        ..Default::default()
    };
    let result = rt
        .block_on(mockstore::scenario::run_with(
            &file,
            &root().join("policies"),
            &options,
        ))
        .unwrap();
    assert_eq!(result.posture, "permissive");
    let mismatched: Vec<&str> = result
        .steps
        .iter()
        .filter(|s| s.mismatch.is_some())
        .map(|s| s.at.as_str())
        .collect();
    assert!(
        mismatched.contains(&"2025-01-18T14:00:00Z"),
        "{mismatched:?}"
    );
    assert!(
        mismatched.contains(&"2025-01-20T22:00:00Z"),
        "{mismatched:?}"
    );
    assert!(
        !mismatched.contains(&"2025-01-19T10:00:00Z"),
        "{mismatched:?}"
    );
}

/// A scenario with an unknown posture, or a policy folder that is nowhere, is refused with
/// what is wrong.
#[test]
fn a_bad_scenario_header_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let cases = [
        (
            "posture = \"lenient\"\npolicies = [\"us-2020\"]",
            "expected `conservative` or `permissive`",
        ),
        (
            "non_enforcement = \"maybe\"\npolicies = [\"us-2020\"]",
            "expected `honour` or `ignore`",
        ),
        (
            "policies = [\"no-such-set\"]",
            "policy folder `no-such-set` not found",
        ),
    ];
    for (i, (header, message)) in cases.into_iter().enumerate() {
        let path = dir.path().join(format!("bad-{i}.toml"));
        std::fs::write(&path, format!("name = \"bad\"\n{header}\n")).unwrap();
        let error = rt
            .block_on(mockstore::scenario::run(
                &path,
                &root().join("policies"),
                &[],
            ))
            .unwrap_err();
        assert!(format!("{error:#}").contains(message), "{error:#}");
    }
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
    // The stores on runtimes of their own in this process (a test has no `simulate` to
    // start them as processes: `crates/mockstore/tests/standalone.rs` does that).
    let options = mockstore::load::Options {
        requests: 400,
        seed: 42,
        concurrency: 8,
        posture: policy::Posture::default(),
        pairs: 2,
        stores: mockstore::load::Stores::InProcess,
    };
    let report = runtime()
        .block_on(mockstore::load::run(
            &policies,
            &options,
            &indicatif::ProgressBar::hidden(),
        ))
        .unwrap();
    // Both stores answered every request: with the layer as `gatekeeper check` decides,
    // without it with a 200.
    assert!(report.mismatches.is_empty(), "{:#?}", report.mismatches);
    assert!(
        report.denied > 0 && report.denied < 400,
        "{} denied",
        report.denied
    );
    // Two pairs, the store with the layer first, then last; each store's CPU time is its
    // own runtime's.
    let order: Vec<bool> = report.pairs.iter().map(|p| p.gated_first).collect();
    assert_eq!(order, [true, false]);
    assert!(report.throughput_ratio > 0.0);
    if cfg!(target_os = "linux") {
        assert!(
            report
                .pairs
                .iter()
                .all(|p| p.gated.cpu_us_per_request.is_some_and(|c| c > 0.0)
                    && p.ungated.cpu_us_per_request.is_some_and(|c| c > 0.0)),
            "{:#?}",
            report.pairs
        );
        assert!(report.cpu_ratio.is_some_and(f64::is_finite));
    }
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
    let token = config.admin_token.clone();
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
        ("/v1/publisher/releases", json!({ "app": release["app"], "version": "1", "publisher": { "store": "apple", "id": "ABCDE12345" } }).to_string(), StatusCode::BAD_REQUEST, "does not publish android apps"),
        ("/v1/publisher/releases", json!({ "app": release["app"], "version": "1", "publisher": { "store": "google", "id": "12ab" } }).to_string(), StatusCode::BAD_REQUEST, "publisher.id"),
        ("/v1/payments/android/com.tencent.mm?payer_country=US&publisher_store=steam&publisher_id=1", String::new(), StatusCode::BAD_REQUEST, "unknown store"),
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
    // There is no default token anyone could guess: the old `admin` is refused.
    let r = client
        .put(format!("{base}/v1/admin/clock"))
        .bearer_auth("admin")
        .json(&json!({ "at": "2020-09-21T00:00:00Z" }))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(token.len(), 64);
    let r = client
        .put(format!("{base}/v1/admin/clock"))
        .bearer_auth(&token)
        .json(&json!({ "at": "2020-09-21T00:00:00" }))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // Still serving.
    let (status, _) = post("/v1/publisher/releases", release.to_string());
    assert_eq!(status, StatusCode::CREATED);
    rt.block_on(running.stop());
}

/// The JUnit report is well-formed JUnit (read back with `quick-junit`), and a mismatched
/// step's failure carries, in its body, the scenario file and the step's line.
#[test]
fn junit_failures_name_the_scenario_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wrong.toml");
    std::fs::write(
        &path,
        r#"name = "wrong"
policies = ["us-2020"]

[[step]]
name = "WeChat published before the rule"
at = "2020-09-01T12:00:00Z"
do = "publish"
app = "android:com.tencent.mm"
expect.status = 201

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
    assert_eq!(
        result.steps.iter().map(|s| s.line).collect::<Vec<_>>(),
        [4, 11]
    );
    let out = dir.path().join("reports");
    mockstore::report::write(&out, &[result], None, 1.0).unwrap();
    let xml = std::fs::read_to_string(out.join("junit.xml")).unwrap();
    let report = quick_junit::Report::deserialize_from_str(&xml).unwrap();
    assert_eq!(report.test_suites.len(), 1);
    let suite = &report.test_suites[0];
    assert_eq!((suite.tests, suite.failures), (2, 1));
    let failed = &suite.test_cases[1];
    assert_eq!(
        failed.name.as_str(),
        "WeChat download in the US on 2020-09-21 (2020-09-21T12:00:00Z)"
    );
    let quick_junit::TestCaseStatus::NonSuccess {
        kind,
        message,
        description,
        ..
    } = &failed.status
    else {
        panic!("{:?}", failed.status)
    };
    assert_eq!(*kind, quick_junit::NonSuccessKind::Failure);
    assert_eq!(
        message.as_ref().map(|m| m.as_str()),
        Some("status: expected 200, got 451")
    );
    let body = description.as_ref().unwrap().as_str();
    let place = format!("{}:11: step \"WeChat download", result_file(&path));
    assert!(body.starts_with(&place), "{body}");
    assert!(body.contains("answer: {"), "{body}");
    assert!(matches!(
        suite.test_cases[0].status,
        quick_junit::TestCaseStatus::Success { .. }
    ));
}

/// The file as reports name it: relative to the working directory when below it.
fn result_file(path: &std::path::Path) -> String {
    let path = std::fs::canonicalize(path).unwrap();
    let cwd = std::env::current_dir().unwrap();
    path.strip_prefix(&cwd)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| path.display().to_string())
}

/// The scenario shown in README.md runs as written, every step answering as it expects.
#[test]
fn the_readme_scenario_runs() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let start = readme.find("A scenario is TOML:\n\n```toml\n").unwrap();
    let body = &readme[start..];
    let body = &body[body.find("```toml\n").unwrap() + "```toml\n".len()..];
    let example = &body[..body.find("```").unwrap()];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("readme.toml");
    std::fs::write(&path, example).unwrap();
    let result = runtime()
        .block_on(mockstore::scenario::run(
            &path,
            &root().join("policies"),
            &[],
        ))
        .unwrap();
    assert!(result.steps.len() >= 2, "{} steps", result.steps.len());
    let failures: Vec<String> = result
        .steps
        .iter()
        .filter_map(|s| s.mismatch.clone())
        .collect();
    assert!(failures.is_empty(), "{failures:#?}");
}
