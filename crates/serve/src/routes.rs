//! The HTTP routes.

use std::sync::Arc;
use std::time::{Duration, Instant as Stopwatch};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use gatekeeper::layer::{deny_status, link_reasons, name_verdict};
use gatekeeper::{Gate, Gatekeeper, ReloadError, Reloaded, Verdict};
use metrics_exporter_prometheus::PrometheusHandle;
use policy::RequestRecord;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tower::limit::ConcurrencyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use crate::config::{Config, EnvoyHeaders};

#[derive(Clone)]
pub(crate) struct AppState {
    gatekeeper: Gatekeeper,
    metrics: PrometheusHandle,
    admin_token: Option<Arc<str>>,
    max_body_bytes: usize,
    max_batch: usize,
    envoy: Arc<EnvoyHeaders>,
}

impl AppState {
    pub(crate) fn new(
        gatekeeper: Gatekeeper,
        config: &Config,
        metrics: PrometheusHandle,
    ) -> AppState {
        AppState {
            gatekeeper,
            metrics,
            admin_token: config.admin_token.as_deref().map(Arc::from),
            max_body_bytes: config.max_body_bytes,
            max_batch: config.max_batch,
            envoy: Arc::new(config.envoy.clone()),
        }
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

fn with_common_layers(router: Router, config: &Config) -> Router {
    router
        .layer(middleware::from_fn(record_http_metrics))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_millis(config.timeout_ms),
        ))
        .layer(ConcurrencyLimitLayer::new(config.concurrency))
        // Bodies are read by the handlers with their own limit and a JSON error.
        .layer(DefaultBodyLimit::disable())
}

/// Decision, Envoy, health and metrics routes.
pub(crate) fn decisions(state: AppState, config: &Config) -> Router {
    let router = Router::new()
        .route("/v1/decide", post(decide))
        .route("/v1/envoy/authz", any(envoy))
        .route("/v1/envoy/authz/{*path}", any(envoy))
        .route("/health", get(health))
        .route(
            "/health/live",
            get(|| async { axum::Json(json!({ "status": "live" })) }),
        )
        .route("/metrics", get(render_metrics))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route") })
        .with_state(state);
    with_common_layers(router, config)
}

/// Admin routes.
pub(crate) fn admin(state: AppState, config: &Config) -> Router {
    let router = Router::new()
        .route("/v1/admin/reload", post(reload))
        .with_state(state);
    with_common_layers(router, config)
}

async fn record_http_metrics(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().as_str().to_owned();
    let started = Stopwatch::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("http_requests_total", "route" => route.clone(), "method" => method, "status" => status).increment(1);
    metrics::histogram!("http_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

async fn read_body(body: Body, limit: usize) -> Result<Bytes, Response> {
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than the limit of {limit} bytes"),
        )
    })
}

fn check_record(gk: &Gatekeeper, raw: &str) -> Result<Verdict, (StatusCode, String)> {
    let record: RequestRecord = serde_json::from_str(raw)
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("invalid request: {e}")))?;
    let request = record
        .into_request()
        .map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
    gk.check(&request)
        .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e.to_string()))
}

/// `POST /v1/decide`: one request, or an array answered in order.
async fn decide(State(state): State<AppState>, body: Body) -> Response {
    let bytes = match read_body(body, state.max_body_bytes).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Ok(text) = std::str::from_utf8(&bytes) else {
        return error(StatusCode::BAD_REQUEST, "request body is not UTF-8");
    };
    if text.trim_start().starts_with('[') {
        let items: Vec<&RawValue> = match serde_json::from_str(text) {
            Ok(items) => items,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("invalid JSON array of requests: {e}"),
                );
            }
        };
        if items.len() > state.max_batch {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "batch of {} requests exceeds the limit of {}",
                    items.len(),
                    state.max_batch
                ),
            );
        }
        // Verdicts are the usual answer; boxing them would cost an allocation each.
        #[allow(clippy::large_enum_variant)]
        #[derive(serde::Serialize)]
        #[serde(untagged)]
        enum Answer {
            Verdict(gatekeeper::VerdictRecord),
            Error { error: String },
        }
        let mut answers = Vec::with_capacity(items.len());
        for item in items {
            match check_record(&state.gatekeeper, item.get()) {
                Ok(v) => answers.push(Answer::Verdict(v.to_record())),
                // The audit trail refusing is not the request's fault: the whole batch fails.
                Err((StatusCode::SERVICE_UNAVAILABLE, m)) => {
                    return error(StatusCode::SERVICE_UNAVAILABLE, m);
                }
                Err((_, error)) => answers.push(Answer::Error { error }),
            }
        }
        return axum::Json(answers).into_response();
    }
    match check_record(&state.gatekeeper, text) {
        Ok(v) => axum::Json(v.to_record()).into_response(),
        Err((status, m)) => error(status, m),
    }
}

fn header_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// Builds a policy request from the configured headers, through the same validation
/// as a JSON request.
fn envoy_request(
    headers: &HeaderMap,
    names: &EnvoyHeaders,
    now: policy::Instant,
) -> Result<policy::Request, String> {
    let get = |name: &str| header_value(headers, name).map(str::to_owned);
    let required = |name: &str| get(name).ok_or_else(|| format!("header `{name}` is required"));
    let publisher = match (get(&names.publisher_store), get(&names.publisher_id)) {
        (Some(store), Some(id)) => Some(policy::PublisherRecord { store, id }),
        (None, None) => None,
        _ => {
            return Err(format!(
                "give both `{}` and `{}`, or neither",
                names.publisher_store, names.publisher_id
            ));
        }
    };
    let record = RequestRecord {
        app: Some(policy::AppRecord {
            platform: required(&names.platform)?,
            id: required(&names.app)?,
        }),
        publisher,
        action: required(&names.action)?,
        at: get(&names.at).unwrap_or_else(|| now.to_string()),
        known_at: None,
        storefront: get(&names.storefront),
        device_country: get(&names.device_country),
        ip_country: get(&names.ip_country),
        billing_country: get(&names.billing_country),
        server_country: get(&names.server_country),
        signing_cert_sha256: get(&names.signing_cert_sha256),
        code_sha256: Vec::new(),
    };
    record.into_request().map_err(|e| e.to_string())
}

/// `ANY /v1/envoy/authz/...`: Envoy's ext_authz HTTP service. 200 allows; anything else
/// denies, and Envoy passes our status and body to the client.
async fn envoy(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let request = match envoy_request(&headers, &state.envoy, state.gatekeeper.now()) {
        Ok(r) => r,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    let verdict = match state.gatekeeper.check(&request) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    let record = verdict.to_record();
    let mut response = match verdict.gate {
        Gate::Allow | Gate::ShadowDeny => StatusCode::OK.into_response(),
        Gate::Deny => {
            let mut r = (deny_status(&record), axum::Json(&record)).into_response();
            link_reasons(r.headers_mut(), &record);
            r
        }
    };
    name_verdict(response.headers_mut(), &verdict);
    response
}

/// `GET /health`: ready once a valid policy is active.
async fn health(State(state): State<AppState>) -> Response {
    match state.gatekeeper.active() {
        Some(active) => axum::Json(json!({
            "status": "ready",
            "revision": active.revision.0,
            "bundle_revision": active.bundle_revision,
            "origin": active.origin,
        }))
        .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "status": "not ready", "error": gatekeeper::NO_POLICY })),
        )
            .into_response(),
    }
}

async fn render_metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

/// Compares tokens through their digests, so that the time taken says nothing about
/// how much of a guess was right.
fn token_matches(given: &str, expected: &str) -> bool {
    gatekeeper::sha256_hex(given.as_bytes()) == gatekeeper::sha256_hex(expected.as_bytes())
}

/// `POST /v1/admin/reload`: reload now. Needs `Authorization: Bearer <token>`.
async fn reload(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(expected) = state.admin_token.clone() else {
        return error(
            StatusCode::FORBIDDEN,
            "admin routes are off: no admin token is configured",
        );
    };
    let given = header_value(&headers, header::AUTHORIZATION.as_str())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !given.is_some_and(|g| token_matches(g, &expected)) {
        let mut r = error(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    }
    let gk = state.gatekeeper.clone();
    match tokio::task::spawn_blocking(move || gk.reload()).await {
        Ok(Ok(Reloaded::Swapped(r))) => {
            axum::Json(json!({ "result": "swapped", "revision": r.0 })).into_response()
        }
        Ok(Ok(Reloaded::Unchanged(r))) => {
            axum::Json(json!({ "result": "unchanged", "revision": r.0 })).into_response()
        }
        Ok(Err(e)) => {
            let details = match &e {
                ReloadError::Policy(d) => serde_json::to_value(&d.0).unwrap_or(Value::Null),
                _ => Value::Null,
            };
            let active = state.gatekeeper.active().map(|a| a.revision.0.clone());
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                axum::Json(json!({ "error": e.to_string(), "diagnostics": details, "active_revision": active })),
            )
                .into_response()
        }
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reload task failed: {e}"),
        ),
    }
}
