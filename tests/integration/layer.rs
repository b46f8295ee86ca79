//! The tower layer, through `tower::ServiceExt::oneshot` on an axum router.

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use gatekeeper::layer::{DECISION_ID_HEADER, REVISION_HEADER, SHADOW_HEADER};
use gatekeeper::{ExtractError, FailureMode, Gatekeeper, GatekeeperLayer, Mode};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use policy::{Action, Country, Instant, Platform};
use tower::ServiceExt;

use crate::support::root;

/// `/apps/{platform}/{id}/{action}` is gated; the time is the request's `x-at` header
/// (a store would use the gatekeeper's clock, `now`), the storefront its `x-storefront`.
fn extract(request: &Request<Body>, now: Instant) -> Result<Option<policy::Request>, ExtractError> {
    let parts: Vec<&str> = request.uri().path().trim_matches('/').split('/').collect();
    let ["apps", platform, id, action] = parts[..] else {
        return Ok(None);
    };
    let platform = match platform {
        "ios" => Platform::Ios,
        "android" => Platform::Android,
        other => return Err(ExtractError(format!("unknown platform `{other}`"))),
    };
    let action: Action = action
        .parse()
        .map_err(|e: policy::UnknownAction| ExtractError(e.to_string()))?;
    let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok());
    let at = match header("x-at") {
        Some(at) => Instant::parse_rfc3339(at).map_err(|e| ExtractError(format!("`x-at`: {e}")))?,
        None => now,
    };
    let storefront = header("x-storefront")
        .ok_or_else(|| ExtractError("`x-storefront` is required".to_owned()))?;
    let country = Country::parse(storefront).map_err(|e| ExtractError(e.to_string()))?;
    let record = policy::RequestRecord {
        app: Some(policy::AppRecord {
            platform: platform.as_str().to_owned(),
            id: id.to_owned(),
        }),
        action: action.as_str().to_owned(),
        at: at.to_string(),
        storefront: Some(country.alpha2().to_owned()),
        ..Default::default()
    };
    record
        .into_request()
        .map(Some)
        .map_err(|e| ExtractError(e.to_string()))
}

fn store(gk: Gatekeeper) -> Router {
    Router::new()
        .route(
            "/apps/{platform}/{id}/{action}",
            get(|| async { "the artifact" }),
        )
        .route("/health", get(|| async { "ok" }))
        .layer(GatekeeperLayer::new(gk, extract))
}

fn request(path: &str, storefront: &str) -> Request<Body> {
    Request::get(path)
        .header("x-at", "2020-09-22T12:00:00Z")
        .header("x-storefront", storefront)
        .body(Body::empty())
        .unwrap()
}

async fn send(router: Router, request: Request<Body>) -> (StatusCode, http::HeaderMap, String) {
    let response = router.oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8(bytes.to_vec()).unwrap(),
    )
}

fn us_2020(mode: Mode) -> Gatekeeper {
    Gatekeeper::builder()
        .policy_dirs([root().join("policies/us-2020")])
        .mode(mode)
        .build()
        .unwrap()
}

#[tokio::test]
async fn an_allowed_request_reaches_the_store_with_the_decision_named() {
    let (status, headers, body) = send(
        store(us_2020(Mode::Enforce)),
        request("/apps/android/com.tencent.mm/update", "CAN"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "the artifact");
    assert_eq!(headers[DECISION_ID_HEADER].len(), 32);
    assert_eq!(headers[REVISION_HEADER].len(), 64);
    assert!(headers.get(SHADOW_HEADER).is_none());
}

#[tokio::test]
async fn a_denied_request_gets_451_with_the_legal_reason() {
    let gk = us_2020(Mode::Enforce);
    let revision = gk.active().unwrap().revision.0.clone();
    let (status, headers, body) = send(
        store(gk),
        request("/apps/ios/com.tencent.xin/download", "PRI"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS);
    assert_eq!(headers["content-type"], "application/json");
    let link = headers["link"].to_str().unwrap();
    assert!(link.ends_with("; rel=\"blocked-by\""), "{link}");
    assert!(
        link.starts_with("<https://2017-2021.commerce.gov/"),
        "{link}"
    );
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["decision"], "deny");
    assert_eq!(body["reasons"][0]["prohibition"], "wechat-app-store");
    assert_eq!(body["jurisdiction"]["value"], "PR");
    assert_eq!(body["revision"], revision);
    assert_eq!(
        body["decision_id"],
        headers[DECISION_ID_HEADER].to_str().unwrap()
    );
}

#[tokio::test]
async fn shadow_mode_serves_and_says_it_would_have_denied() {
    let (status, headers, body) = send(
        store(us_2020(Mode::Shadow)),
        request("/apps/ios/com.tencent.xin/download", "US"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "the artifact");
    assert_eq!(headers[SHADOW_HEADER], "true");
}

#[tokio::test]
async fn routes_the_extractor_does_not_gate_pass_untouched() {
    let (status, headers, body) = send(
        store(us_2020(Mode::Enforce)),
        Request::get("/health").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "ok");
    assert!(headers.get(DECISION_ID_HEADER).is_none());
}

#[tokio::test]
async fn malformed_requests_get_400_with_the_problem() {
    let (status, _, body) = send(
        store(us_2020(Mode::Enforce)),
        request("/apps/android/com.tencent.mm/updat", "US"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("unknown action `updat`"), "{body}");
    let (status, _, body) = send(
        store(us_2020(Mode::Enforce)),
        request("/apps/android/com.tencent.mm/update", "XX"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("unknown country code `XX`"), "{body}");
}

#[tokio::test]
async fn failure_modes_without_a_policy() {
    let missing = root().join("policies/no-such-set");
    let closed = Gatekeeper::builder()
        .policy_dirs([&missing])
        .start_empty(true)
        .build()
        .unwrap();
    let (status, _, body) = send(
        store(closed),
        request("/apps/android/com.example/update", "US"),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains(gatekeeper::NO_POLICY), "{body}");
    let open = Gatekeeper::builder()
        .policy_dirs([&missing])
        .start_empty(true)
        .failure_mode(FailureMode::Open)
        .build()
        .unwrap();
    let (status, _, body) = send(
        store(open),
        request("/apps/android/com.example/update", "US"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "the artifact");
}

/// The revision header names the policy that decided, after a reload too: the layer
/// makes the header's value once per policy and keeps it, so the kept value must follow
/// the swap (on an allowed answer and on a refusal alike).
#[tokio::test]
async fn the_revision_header_follows_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    crate::handle::copy_policies(dir.path());
    let gk = Gatekeeper::builder()
        .policy_dirs([dir.path().join("us-2020")])
        .build()
        .unwrap();
    let router = store(gk.clone());
    let allowed = || request("/apps/android/com.tencent.mm/update", "CAN");
    let denied = || request("/apps/ios/com.tencent.xin/download", "PRI");
    let first = gk.active().unwrap().revision.0.clone();
    for _ in 0..2 {
        let (_, headers, _) = send(router.clone(), allowed()).await;
        assert_eq!(headers[REVISION_HEADER], first.as_str());
    }
    std::fs::write(
        dir.path().join("us-2020/note.toml"),
        "# a new file: a new revision\n",
    )
    .unwrap();
    assert!(matches!(
        gk.reload().unwrap(),
        gatekeeper::Reloaded::Swapped(_)
    ));
    let second = gk.active().unwrap().revision.0.clone();
    assert_ne!(first, second);
    let (status, headers, _) = send(router.clone(), allowed()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[REVISION_HEADER], second.as_str());
    let (status, headers, body) = send(router, denied()).await;
    assert_eq!(status, StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS);
    assert_eq!(headers[REVISION_HEADER], second.as_str());
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["revision"], second.as_str());
}

/// A refusal is the verdict's record, byte for byte, with a `Link` for each reason and the
/// verdict named, exactly as the record-based helpers (which the sidecar uses) give them:
/// over allows, denies with one reason and with several, shadow denies, and the failure
/// mode's verdicts.
#[tokio::test]
async fn refusals_are_the_verdicts_records() {
    use gatekeeper::layer::{
        deny_status, deny_status_of, link_reasons, link_reasons_of, name_verdict,
    };
    let missing = root().join("policies/no-such-set");
    let gatekeepers = [
        us_2020(Mode::Enforce),
        us_2020(Mode::Shadow),
        Gatekeeper::builder()
            .policy_dirs([
                root().join("policies/us-2020"),
                root().join("policies/us-2024-pafaca"),
            ])
            .build()
            .unwrap(),
        Gatekeeper::builder()
            .policy_dirs([&missing])
            .start_empty(true)
            .build()
            .unwrap(),
    ];
    let apps = [
        ("android", "com.zhiliaoapp.musically"),
        ("ios", "com.tencent.xin"),
        ("android", "com.tencent.mm"),
        ("android", "com.example.notes"),
    ];
    let mut most_reasons = 0;
    let mut refusals = 0;
    for gk in &gatekeepers {
        for (platform, id) in apps {
            for action in ["download", "update", "cdn"] {
                for at in [
                    "2020-09-22T12:00:00Z",
                    "2020-11-13T12:00:00Z",
                    "2025-01-20T12:00:00Z",
                ] {
                    let request = policy::RequestRecord {
                        app: Some(policy::AppRecord {
                            platform: platform.to_owned(),
                            id: id.to_owned(),
                        }),
                        action: action.to_owned(),
                        at: at.to_owned(),
                        storefront: Some("US".to_owned()),
                        server_country: Some("US".to_owned()),
                        ..Default::default()
                    }
                    .into_request()
                    .unwrap();
                    let verdict = gk.check(&request).unwrap();
                    let record = verdict.to_record();
                    most_reasons =
                        most_reasons.max(record.decision.as_ref().map_or(0, |d| d.reasons.len()));
                    let (mut by_record, mut by_verdict) =
                        (http::HeaderMap::new(), http::HeaderMap::new());
                    link_reasons(&mut by_record, &record);
                    link_reasons_of(&mut by_verdict, &verdict);
                    assert_eq!(by_record, by_verdict, "{record:?}");
                    assert_eq!(deny_status(&record), deny_status_of(&verdict));
                    let mut named = http::HeaderMap::new();
                    name_verdict(&mut named, &verdict);
                    assert_eq!(named[DECISION_ID_HEADER], record.decision_id.as_str());
                    assert_eq!(
                        named.get(REVISION_HEADER).map(|v| v.to_str().unwrap()),
                        record.revision.as_deref()
                    );
                    assert_eq!(
                        named.contains_key(SHADOW_HEADER),
                        record.gate == "shadow-deny"
                    );
                    if verdict.permits() {
                        continue;
                    }
                    // Through the layer, the refusal's body is the record's JSON.
                    refusals += 1;
                    let layer_gk = gk.clone();
                    let fixed = request.clone();
                    let router = Router::new().route("/x", get(|| async { "served" })).layer(
                        GatekeeperLayer::new(layer_gk, move |_: &Request<Body>, _: Instant| {
                            Ok(Some(fixed.clone()))
                        }),
                    );
                    let (status, headers, body) =
                        send(router, Request::get("/x").body(Body::empty()).unwrap()).await;
                    assert_eq!(status, deny_status(&record));
                    let mut expected = serde_json::to_value(&record).unwrap();
                    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
                    // The decision id is the one this request was given.
                    expected["decision_id"] = body["decision_id"].clone();
                    assert_eq!(body, expected);
                    assert_eq!(
                        headers[DECISION_ID_HEADER].to_str().unwrap(),
                        body["decision_id"]
                    );
                    assert_eq!(
                        headers.get_all("link").iter().count(),
                        by_record.get_all("link").iter().count()
                    );
                }
            }
        }
    }
    assert!(most_reasons >= 2, "no deny with several reasons was tried");
    assert!(refusals > 0);
}

/// With a durable audit trail, an answer waits for its record to reach the disk (the
/// layer's waiting path, a boxed future of its own): the same answers and headers as
/// without a trail, and a record on disk for each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_durable_trail_each_answer_waits_for_its_record() {
    let dir = tempfile::tempdir().unwrap();
    let gk = Gatekeeper::builder()
        .policy_dirs([root().join("policies/us-2020")])
        .audit(gatekeeper::AuditConfig::new(dir.path()))
        .build()
        .unwrap();
    let revision = gk.active().unwrap().revision.0.clone();
    let (status, headers, body) = send(
        store(gk.clone()),
        request("/apps/android/com.tencent.mm/update", "CAN"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "the artifact");
    assert_eq!(headers[REVISION_HEADER], revision.as_str());
    let (status, headers, body) = send(
        store(gk.clone()),
        request("/apps/ios/com.tencent.xin/download", "PRI"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS);
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["reasons"][0]["prohibition"], "wechat-app-store");
    assert_eq!(
        body["decision_id"],
        headers[DECISION_ID_HEADER].to_str().unwrap()
    );
    assert_eq!(gk.audit_counts(), Some((2, 0)));
}
