//! The sidecar service over real HTTP on 127.0.0.1, with a real client.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use reqwest::StatusCode;
use reqwest::blocking::Client;
use serde_json::Value;

use crate::handle::copy_policies;
use crate::support::root;

/// An admin token long enough to be accepted (32 bytes or more).
pub(crate) const TOKEN: &str = "0123456789abcdef0123456789abcdef-test";

/// A service on its own runtime, and a client for it.
pub(crate) struct Service {
    pub(crate) runtime: tokio::runtime::Runtime,
    pub(crate) server: Option<serve::Server>,
    pub(crate) base: String,
    pub(crate) admin: String,
    pub(crate) client: Client,
}

impl Service {
    pub(crate) fn start(config: serve::Config) -> Service {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let server = runtime.block_on(serve::start(config)).unwrap();
        let base = format!("http://{}", server.addr);
        let admin = server
            .admin_addr
            .map_or_else(|| base.clone(), |a| format!("http://{a}"));
        Service {
            runtime,
            server: Some(server),
            base,
            admin,
            client: Client::new(),
        }
    }

    pub(crate) fn post(
        &self,
        path: &str,
        body: impl Into<reqwest::blocking::Body>,
    ) -> (StatusCode, Value) {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .body(body)
            .send()
            .unwrap();
        let status = r.status();
        (status, r.json().unwrap_or(Value::Null))
    }

    pub(crate) fn get(&self, path: &str) -> (StatusCode, Value) {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .unwrap();
        let status = r.status();
        (status, r.json().unwrap_or(Value::Null))
    }

    /// The text of `/metrics`.
    pub(crate) fn metrics_text(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.base))
            .send()
            .unwrap()
            .text()
            .unwrap()
    }

    pub(crate) fn reload(&self, token: Option<&str>) -> (StatusCode, Value) {
        let mut r = self.client.post(format!("{}/v1/admin/reload", self.admin));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let r = r.send().unwrap();
        let status = r.status();
        (status, r.json().unwrap_or(Value::Null))
    }

    pub(crate) fn shutdown(mut self) -> Option<gatekeeper::Head> {
        let server = self.server.take().unwrap();
        self.runtime.block_on(server.shutdown()).unwrap()
    }
}

pub(crate) fn config(policies: &Path) -> serve::Config {
    serve::Config {
        listen: "127.0.0.1:0".into(),
        policies: vec![policies.to_path_buf()],
        admin_token: Some(TOKEN.into()),
        reload_interval_ms: 0,
        ..serve::Config::default()
    }
}

/// The sidecar decides under its configured posture.
#[test]
fn decide_follows_the_configured_posture() {
    let tiktok = r#"{"app":{"platform":"android","id":"com.zhiliaoapp.musically"},"action":"download","at":"2025-02-01T12:00:00Z","storefront":"US"}"#;
    let honouring = Service::start(config(&root().join("policies/us-2024-pafaca")));
    let (status, answer) = honouring.post("/v1/decide", tiktok);
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["because"], "not-enforced", "{answer}");
    let ignoring = Service::start(serve::Config {
        non_enforcement: policy::NonEnforcement::Ignore,
        ..config(&root().join("policies/us-2024-pafaca"))
    });
    let (status, answer) = ignoring.post("/v1/decide", tiktok);
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["decision"], "deny", "{answer}");
    assert_eq!(answer["relief_set_aside"][0]["instrument"], "eo-14166");
}

const WECHAT_US: &str = r#"{"app":{"platform":"android","id":"com.tencent.mm"},"action":"update","at":"2020-09-22T12:00:00Z","storefront":"US"}"#;

#[test]
fn decide_answers_like_check_with_revision_and_decision_id() {
    let svc = Service::start(config(&root().join("policies/us-2020")));
    let (status, one) = svc.post("/v1/decide", WECHAT_US);
    assert_eq!(status, StatusCode::OK);
    // The same fields as `gatekeeper check`, plus the revision and decision id.
    let policy = crate::support::load(&["policies/us-2020"]);
    let record: policy::RequestRecord = serde_json::from_str(WECHAT_US).unwrap();
    let expected = serde_json::to_value(
        policy
            .decide(&record.into_request().unwrap(), policy::Posture::default())
            .to_record(),
    )
    .unwrap();
    for (key, value) in expected.as_object().unwrap() {
        assert_eq!(&one[key], value, "{key}");
    }
    assert_eq!(one["revision"].as_str().unwrap().len(), 64);
    assert_eq!(one["decision_id"].as_str().unwrap().len(), 32);
    assert_eq!(one["gate"], "deny");
    // A batch is answered in order, a bad item in its place.
    let batch = format!(
        r#"[{WECHAT_US}, {{"action":"update"}}, {}]"#,
        WECHAT_US.replace("\"US\"", "\"CAN\"")
    );
    let (status, many) = svc.post("/v1/decide", batch);
    assert_eq!(status, StatusCode::OK);
    let many = many.as_array().unwrap();
    assert_eq!(many.len(), 3);
    assert_eq!(many[0]["decision"], "deny");
    assert!(
        many[1]["error"].as_str().unwrap().contains("missing field"),
        "{}",
        many[1]
    );
    assert_eq!(many[2]["because"], "outside-jurisdiction");
    svc.shutdown();
}

#[test]
fn bad_input_gets_a_4xx_with_a_json_error_never_a_5xx() {
    let mut c = config(&root().join("policies/us-2020"));
    c.max_body_bytes = 4_096;
    c.max_batch = 3;
    let svc = Service::start(c);
    let cases: Vec<(String, StatusCode, &str)> = vec![
        (
            "{not json".into(),
            StatusCode::BAD_REQUEST,
            "invalid request",
        ),
        (
            "[1, 2".into(),
            StatusCode::BAD_REQUEST,
            "invalid JSON array",
        ),
        (
            WECHAT_US.replace("update", "updat"),
            StatusCode::BAD_REQUEST,
            "unknown action `updat`",
        ),
        (
            WECHAT_US.replace("\"US\"", "\"ZZ\""),
            StatusCode::BAD_REQUEST,
            "unknown country code `ZZ`",
        ),
        (
            WECHAT_US.replace(",\"storefront\":\"US\"", ""),
            StatusCode::BAD_REQUEST,
            "no jurisdiction signal",
        ),
        (
            WECHAT_US.replace("Z\"", "\""),
            StatusCode::BAD_REQUEST,
            "no UTC offset",
        ),
        (
            format!("[{}]", [WECHAT_US; 4].join(",")),
            StatusCode::PAYLOAD_TOO_LARGE,
            "exceeds the limit of 3",
        ),
        (
            " ".repeat(5_000),
            StatusCode::PAYLOAD_TOO_LARGE,
            "larger than the limit",
        ),
    ];
    for (body, status, message) in cases {
        let (got, answer) = svc.post("/v1/decide", body.clone());
        assert_eq!(got, status, "{body:.60}: {answer}");
        assert!(
            answer["error"]
                .as_str()
                .unwrap_or_default()
                .contains(message),
            "{body:.60}: {answer}"
        );
    }
    let (status, answer) = svc.get("/no/such/route");
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(answer["error"].is_string());
    // Still serving after all that.
    assert_eq!(svc.post("/v1/decide", WECHAT_US).0, StatusCode::OK);
    svc.shutdown();
}

#[test]
fn envoy_ext_authz_allows_with_200_and_denies_with_451() {
    // Judged in 2020 through the time header, which the operator trusts here.
    let svc = Service::start(serve::Config {
        trust_time_header: true,
        ..config(&root().join("policies/us-2020"))
    });
    let ask = |storefront: &str, action: &str| {
        svc.client
            .get(format!(
                "{}/v1/envoy/authz/store/apps/com.tencent.xin",
                svc.base
            ))
            .header("x-gatekeeper-platform", "ios")
            .header("x-gatekeeper-app", "com.tencent.xin")
            .header("x-gatekeeper-action", action)
            .header("x-gatekeeper-storefront", storefront)
            .header("x-gatekeeper-at", "2020-09-21T12:00:00Z")
            .send()
            .unwrap()
    };
    let allowed = ask("CAN", "download");
    assert_eq!(allowed.status(), StatusCode::OK);
    assert_eq!(allowed.headers()["gatekeeper-decision-id"].len(), 32);
    assert_eq!(allowed.headers()["gatekeeper-revision"].len(), 64);
    let denied = ask("PRI", "download");
    assert_eq!(denied.status(), StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS);
    assert!(
        denied.headers()["link"]
            .to_str()
            .unwrap()
            .contains("rel=\"blocked-by\"")
    );
    let body: Value = denied.json().unwrap();
    assert_eq!(body["reasons"][0]["prohibition"], "wechat-app-store");
    let bad = ask("PRI", "dance");
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let missing = svc
        .client
        .post(format!("{}/v1/envoy/authz", svc.base))
        .send()
        .unwrap();
    assert_eq!(missing.status(), StatusCode::BAD_REQUEST);
    assert!(missing.text().unwrap().contains("x-gatekeeper-platform"));
    svc.shutdown();
}

#[test]
fn health_metrics_and_readiness_before_and_after_the_first_policy() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("us-2020")).unwrap();
    std::fs::write(dir.path().join("us-2020/broken.toml"), "[instrument\n").unwrap();
    let svc = Service::start(serve::Config {
        start_without_policy: true,
        ..config(&dir.path().join("us-2020"))
    });
    assert_eq!(svc.get("/health/live").0, StatusCode::OK);
    let (status, health) = svc.get("/health");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(health["status"], "not ready");
    assert_eq!(health["reason"], "no-policy");
    assert!(
        health["error"].as_str().unwrap().contains("invalid TOML"),
        "{health}"
    );
    // Closed failure mode: no policy, no allow.
    let (status, answer) = svc.post("/v1/decide", WECHAT_US);
    assert_eq!(
        (status, answer["gate"].as_str()),
        (StatusCode::OK, Some("deny"))
    );
    assert_eq!(answer["error"], gatekeeper::NO_POLICY);
    // A reload that still fails says why and stays not ready.
    let (status, answer) = svc.reload(Some(TOKEN));
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        answer["diagnostics"][0]["message"]
            .as_str()
            .unwrap()
            .contains("invalid TOML"),
        "{answer}"
    );
    std::fs::remove_file(dir.path().join("us-2020/broken.toml")).unwrap();
    copy_policies(dir.path());
    let (status, answer) = svc.reload(Some(TOKEN));
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["result"], "swapped");
    let (status, health) = svc.get("/health");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["revision"], answer["revision"]);
    let text = svc.metrics_text();
    for name in [
        "gatekeeper_verdicts_total",
        "http_requests_total",
        "http_request_duration_seconds_bucket",
        "gatekeeper_reloads_total",
    ] {
        assert!(text.contains(name), "`{name}` missing from /metrics");
    }
    svc.shutdown();
}

#[test]
fn reload_needs_the_bearer_token_and_admin_routes_can_have_their_own_listener() {
    let mut c = config(&root().join("policies/us-2020"));
    c.admin_listen = Some("127.0.0.1:0".into());
    let svc = Service::start(c);
    assert_ne!(svc.admin, svc.base);
    let (status, answer) = svc.reload(Some(TOKEN));
    assert_eq!(
        (status, answer["result"].as_str()),
        (StatusCode::OK, Some("unchanged"))
    );
    // Not on the decision listener.
    let r = svc
        .client
        .post(format!("{}/v1/admin/reload", svc.base))
        .bearer_auth(TOKEN)
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // No token, no reload (and then this address waits: see `serve_limits`).
    assert_eq!(svc.reload(None).0, StatusCode::UNAUTHORIZED);
    svc.shutdown();
    // Without a configured token, admin routes refuse everyone.
    let mut c = config(&root().join("policies/us-2020"));
    c.admin_token = None;
    let svc = Service::start(c);
    assert_eq!(svc.reload(Some(TOKEN)).0, StatusCode::FORBIDDEN);
    svc.shutdown();
}

/// Clients keep deciding while the policy is reloaded through the admin route: no
/// request fails, and each answer names one of the revisions that were active.
#[test]
fn reload_under_load_fails_no_request() {
    let dir = tempfile::tempdir().unwrap();
    copy_policies(dir.path());
    let svc = Arc::new(Service::start(config(&dir.path().join("us-2020"))));
    let done = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (svc, done, answered) = (svc.clone(), done.clone(), answered.clone());
            std::thread::spawn(move || {
                let mut revisions = Vec::new();
                while !done.load(Ordering::Relaxed) {
                    let (status, answer) = svc.post("/v1/decide", WECHAT_US);
                    assert_eq!(status, StatusCode::OK, "{answer}");
                    assert_eq!(answer["decision"], "deny");
                    revisions.push(answer["revision"].as_str().unwrap().to_owned());
                    answered.fetch_add(1, Ordering::Relaxed);
                }
                revisions
            })
        })
        .collect();
    let mut active = vec![
        svc.get("/health").1["revision"]
            .as_str()
            .unwrap()
            .to_owned(),
    ];
    for g in 0..15 {
        std::fs::write(
            dir.path().join("us-2020/generation.toml"),
            format!("# {g}\n"),
        )
        .unwrap();
        let (status, answer) = svc.reload(Some(TOKEN));
        assert_eq!(status, StatusCode::OK, "{answer}");
        active.push(answer["revision"].as_str().unwrap().to_owned());
    }
    done.store(true, Ordering::Relaxed);
    for c in clients {
        for r in c.join().unwrap() {
            assert!(active.contains(&r), "unknown revision {r}");
        }
    }
    assert!(answered.load(Ordering::Relaxed) > 0);
    Arc::into_inner(svc).unwrap().shutdown();
}

/// Requests in flight when the service stops are answered, and every answered decision
/// is in the audit trail.
#[test]
fn graceful_shutdown_loses_nothing_from_the_audit_trail() {
    let audit = tempfile::tempdir().unwrap();
    let mut c = config(&root().join("policies/us-2020"));
    c.audit_dir = Some(audit.path().to_path_buf());
    let svc = Service::start(c);
    let base = svc.base.clone();
    let answered = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (base, answered) = (base.clone(), answered.clone());
            std::thread::spawn(move || {
                let client = Client::new();
                let batch = format!("[{}]", [WECHAT_US; 50].join(","));
                for _ in 0..20 {
                    match client
                        .post(format!("{base}/v1/decide"))
                        .body(batch.clone())
                        .send()
                    {
                        Ok(r) if r.status() == StatusCode::OK => {
                            let n = r.json::<Value>().unwrap().as_array().unwrap().len();
                            answered.fetch_add(n, Ordering::SeqCst);
                        }
                        // Refused once the listener closed: nothing was decided.
                        _ => break,
                    }
                }
            })
        })
        .collect();
    // Stop while the clients are busy: wait for the first answers, then shut down.
    while answered.load(Ordering::SeqCst) == 0 {
        // The clients' loops are bounded: once all have stopped without an answer, none
        // will come, and waiting would never end.
        assert!(
            !(clients.iter().all(|c| c.is_finished()) && answered.load(Ordering::SeqCst) == 0),
            "no client got an answer"
        );
        std::thread::yield_now();
    }
    let head = svc.shutdown().unwrap();
    for c in clients {
        c.join().unwrap();
    }
    let report = gatekeeper::verify(&[audit.path()]).unwrap();
    assert_eq!(report.records, head.seq);
    assert_eq!(report.records as usize, answered.load(Ordering::SeqCst));
}

/// Each answer is counted once under its route, method and status: one method on several
/// routes, one route and method with several statuses, methods a client makes up (all
/// `OTHER`), paths no route matches (all `unmatched`). Methods no other test sends, so
/// that the counts are this test's alone. (Counting past the handles a thread keeps is
/// the unit test `a_thread_keeps_metric_handles_up_to_its_limit_and_counts_past_it`.)
#[test]
fn http_metrics_count_every_answer_under_its_route_method_and_status() {
    let svc = Service::start(config(&root().join("policies/us-2020")));
    let send = |method: &str, path: &str, headers: &[(&str, &str)], times: usize| -> u16 {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut statuses = Vec::new();
        for _ in 0..times {
            let mut r = svc
                .client
                .request(method.clone(), format!("{}{path}", svc.base));
            for (name, value) in headers {
                r = r.header(*name, *value);
            }
            statuses.push(r.send().unwrap().status().as_u16());
        }
        statuses.dedup();
        assert_eq!(statuses.len(), 1, "{statuses:?}");
        statuses[0]
    };
    let counted = |route: &str, method: &str, status: u16| -> u64 {
        let text = svc.metrics_text();
        let labels = [
            format!("route=\"{route}\""),
            format!("method=\"{method}\""),
            format!("status=\"{status}\""),
        ];
        text.lines()
            .filter(|l| l.starts_with("http_requests_total{"))
            .filter(|l| labels.iter().all(|label| l.contains(label.as_str())))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum()
    };
    assert_eq!(send("PATCH", "/health", &[], 5), 405);
    assert_eq!(send("PUT", "/health", &[], 3), 405);
    assert_eq!(send("PATCH", "/metrics", &[], 4), 405);
    let envoy = "/v1/envoy/authz/{*path}";
    let free = [
        ("x-gatekeeper-platform", "android"),
        ("x-gatekeeper-app", "com.example.free"),
        ("x-gatekeeper-action", "download"),
        ("x-gatekeeper-storefront", "US"),
    ];
    assert_eq!(send("PATCH", "/v1/envoy/authz/apps/free", &free, 3), 200);
    let refused = send("PATCH", "/v1/envoy/authz/apps/free", &[], 2);
    assert_ne!(refused, 200);
    assert_eq!(
        (
            counted("/health", "PATCH", 405),
            counted("/health", "PUT", 405),
            counted("/metrics", "PATCH", 405),
            counted(envoy, "PATCH", 200),
            counted(envoy, "PATCH", refused),
        ),
        (5, 3, 4, 3, 2)
    );
    // Methods a client makes up are counted as one, `OTHER`: they make no new series.
    for k in 0..80 {
        send(&format!("GATEKEEPER-TEST-{k}"), "/health", &[], 1);
    }
    send("GATEKEEPER-TEST-79", "/health", &[], 1);
    send("PATCH", "/health", &[], 2);
    assert_eq!(
        (
            counted("/health", "OTHER", 405),
            counted("/health", "GATEKEEPER-TEST-0", 405),
            counted("/health", "PATCH", 405)
        ),
        (81, 0, 7)
    );
    // An unmatched route is counted as one too.
    send("TRACE", "/nowhere", &[], 1);
    send("TRACE", "/nowhere/else", &[], 1);
    assert_eq!(counted("unmatched", "TRACE", 404), 2);
    svc.shutdown();
}
