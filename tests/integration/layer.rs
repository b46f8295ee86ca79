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
