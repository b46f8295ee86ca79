//! The HTTP routes.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant as Stopwatch};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use gatekeeper::layer::{deny_status, link_reasons, name_verdict};
use gatekeeper::{Gate, Gatekeeper, Readiness, ReloadError, Reloaded};
use http_body_util::BodyExt as _;
use metrics_exporter_prometheus::PrometheusHandle;
use policy::RequestRecord;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::limit::GlobalConcurrencyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use crate::config::{Config, EnvoyHeaders};
use crate::telemetry as m;

#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) gatekeeper: Gatekeeper,
    metrics: PrometheusHandle,
    admin_token: Option<Arc<str>>,
    admin_guard: Arc<AdminGuard>,
    max_body_bytes: usize,
    body_budget: Arc<Semaphore>,
    max_body_bytes_in_flight: usize,
    max_batch: usize,
    trust_time_header: bool,
    envoy: Arc<EnvoyHeaders>,
}

impl AppState {
    /// The policy request the configured headers describe, judged now unless the time
    /// header is trusted (the Envoy and nginx authorizers).
    pub(crate) fn header_request(&self, headers: &HeaderMap) -> Result<policy::Request, String> {
        envoy_request(
            headers,
            &self.envoy,
            self.trust_time_header,
            self.gatekeeper.now(),
        )
    }

    pub(crate) fn new(
        gatekeeper: Gatekeeper,
        config: &Config,
        metrics: PrometheusHandle,
    ) -> AppState {
        AppState {
            gatekeeper,
            metrics,
            admin_token: config.admin_token.as_deref().map(Arc::from),
            admin_guard: Arc::new(AdminGuard::default()),
            max_body_bytes: config.max_body_bytes,
            body_budget: Arc::new(Semaphore::new(config.max_body_bytes_in_flight)),
            max_body_bytes_in_flight: config.max_body_bytes_in_flight,
            max_batch: config.max_batch,
            trust_time_header: config.trust_time_header,
            envoy: Arc::new(config.envoy.clone()),
        }
    }
}

/// About the size of one decision's JSON (a deny with its reasons is 300 to 600 bytes):
/// room reserved up front so that a batch's answer is not regrown as it is written.
const ANSWER_BYTES: usize = 512;

/// A 200 with `value` as JSON, written into a buffer of `capacity` bytes to start with.
fn json_bytes(value: &impl serde::Serialize, capacity: usize) -> Response {
    let mut body = Vec::with_capacity(capacity);
    match serde_json::to_writer(&mut body, value) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("writing the answer: {e}"),
        ),
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

fn with_common_layers(router: Router, config: &Config) -> Router {
    // `Router::layer` wraps every route on its own; the last layer added is the outermost.
    // Metrics see every answer (timeouts included); the time limit covers waiting for a
    // slot, so a request never queues unbounded; one slot pool serves all routes.
    router
        .layer(GlobalConcurrencyLimitLayer::new(config.concurrency))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_millis(config.timeout_ms),
        ))
        .layer(middleware::from_fn(record_http_metrics))
        // Bodies are read by the handlers with their own limits and a JSON error.
        .layer(DefaultBodyLimit::disable())
}

/// Decision, Envoy, health and metrics routes.
pub(crate) fn decisions(state: AppState, config: &Config) -> Router {
    let router = Router::new()
        .route("/v1/decide", post(decide))
        .route("/v1/envoy/authz", any(envoy))
        .route("/v1/envoy/authz/{*path}", any(envoy))
        .merge(crate::nginx::routes())
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
    let status = response.status();
    if status.is_server_error() {
        tracing::warn!(%route, %method, status = status.as_u16(), "answered with a server error");
    }
    metrics::counter!(m::HTTP_REQUESTS, "route" => route.clone(), "method" => method, "status" => status.as_u16().to_string()).increment(1);
    metrics::histogram!(m::HTTP_DURATION, "route" => route).record(started.elapsed().as_secs_f64());
    response
}

/// A request body and its share of the bytes-in-flight budget, released when dropped.
struct HeldBody {
    bytes: Bytes,
    _permit: Option<OwnedSemaphorePermit>,
}

fn too_large(limit: usize) -> Response {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body is larger than the limit of {limit} bytes"),
    )
}

/// A warning that may come in floods, logged at most once a second with the number of
/// occurrences left out since the last one logged (the metric counts every one).
#[derive(Debug)]
struct Throttle {
    last_second: AtomicU64,
    left_out: AtomicU64,
}

impl Throttle {
    const fn new() -> Throttle {
        Throttle {
            last_second: AtomicU64::new(0),
            left_out: AtomicU64::new(0),
        }
    }

    /// `Some(left out)` when this occurrence is to be logged.
    fn admit(&self) -> Option<u64> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs());
        let last = self.last_second.load(Ordering::Relaxed);
        if now != last
            && self
                .last_second
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.left_out.swap(0, Ordering::Relaxed));
        }
        self.left_out.fetch_add(1, Ordering::Relaxed);
        None
    }
}

static BODY_REFUSAL_LOG: Throttle = Throttle::new();

fn over_budget(state: &AppState) -> Response {
    metrics::counter!(m::BODY_REFUSALS).increment(1);
    if let Some(left_out) = BODY_REFUSAL_LOG.admit() {
        tracing::warn!(
            limit = state.max_body_bytes_in_flight,
            left_out,
            "request body refused: too many request body bytes in flight"
        );
    }
    let mut r = error(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "too many request body bytes in flight across connections (limit {}); retry later",
            state.max_body_bytes_in_flight
        ),
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

/// Reads a body within the per-request limit and the shared bytes-in-flight budget. A
/// declared length is reserved before a byte is read, so that many slow bodies are refused
/// at once rather than held; a body without one reserves as its chunks arrive.
async fn read_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<HeldBody, Response> {
    let limit = state.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let reserve = |n: usize| {
        u32::try_from(n)
            .ok()
            .and_then(|n| state.body_budget.clone().try_acquire_many_owned(n).ok())
    };
    let mut permit = match declared {
        Some(n) if n > limit => return Err(too_large(limit)),
        Some(n) => Some(reserve(n).ok_or_else(|| over_budget(state))?),
        None => None,
    };
    let mut body = body;
    let mut buffer = Vec::with_capacity(declared.unwrap_or(0));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                format!("reading the request body: {e}"),
            )
        })?;
        let Ok(chunk) = frame.into_data() else {
            continue;
        };
        if buffer.len() + chunk.len() > limit {
            return Err(too_large(limit));
        }
        if declared.is_none() {
            let more = reserve(chunk.len()).ok_or_else(|| over_budget(state))?;
            match &mut permit {
                Some(p) => p.merge(more),
                None => permit = Some(more),
            }
        }
        buffer.extend_from_slice(&chunk);
    }
    Ok(HeldBody {
        bytes: Bytes::from(buffer),
        _permit: permit,
    })
}

fn parse_record(raw: &str) -> Result<policy::Request, String> {
    let record: RequestRecord =
        serde_json::from_str(raw).map_err(|e| format!("invalid request: {e}"))?;
    record.into_request().map_err(|e| e.to_string())
}

/// `POST /v1/decide`: one request, or an array answered in order.
async fn decide(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let held = match read_body(&state, &headers, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Ok(text) = std::str::from_utf8(&held.bytes) else {
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
        // Every record is handed to the audit trail first, then each is awaited: one disk
        // write carries the batch, and nothing is answered before it is recorded.
        let pending: Vec<Result<gatekeeper::PendingVerdict, String>> = items
            .iter()
            .map(|item| parse_record(item.get()).map(|r| state.gatekeeper.check_async(&r)))
            .collect();
        // Verdicts are written from the policy's own data as they are serialized: no
        // record is built for them.
        #[derive(serde::Serialize)]
        #[serde(untagged)]
        enum Answer {
            Verdict(gatekeeper::Verdict),
            Error { error: String },
        }
        let mut answers = Vec::with_capacity(pending.len());
        let mut refused = None;
        for p in pending {
            match p {
                Ok(p) => match p.await {
                    Ok(v) => answers.push(Answer::Verdict(v)),
                    // The audit trail refusing is not the request's fault: the whole batch
                    // fails (after every pending record is settled).
                    Err(e) => refused = Some(e.to_string()),
                },
                Err(error) => answers.push(Answer::Error { error }),
            }
        }
        if let Some(m) = refused {
            tracing::error!(error = %m, "batch refused: the audit trail is unavailable");
            return error(StatusCode::SERVICE_UNAVAILABLE, m);
        }
        return json_bytes(&answers, ANSWER_BYTES * answers.len());
    }
    let request = match parse_record(text) {
        Ok(r) => r,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    match state.gatekeeper.check_async(&request).await {
        Ok(v) => json_bytes(&v, ANSWER_BYTES),
        Err(e) => {
            tracing::error!(error = %e, "request refused: the audit trail is unavailable");
            error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
    }
}

fn header_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// The prefix of the headers this service reads; a client's copies must never reach it.
const HEADER_PREFIX: &str = "x-gatekeeper-";

/// Refuses a request that carries any of our headers twice: with two values, which one a
/// proxy or a parser believes is a guess, and a client that adds its own copy before the
/// store's could otherwise choose it.
fn refuse_repeated(headers: &HeaderMap, names: &EnvoyHeaders) -> Result<(), String> {
    for name in headers.keys() {
        let ours =
            name.as_str().starts_with(HEADER_PREFIX) || names.names().contains(&name.as_str());
        if ours && headers.get_all(name).iter().nth(1).is_some() {
            return Err(format!(
                "header `{name}` appears more than once; it must be given exactly once"
            ));
        }
    }
    Ok(())
}

/// Builds a policy request from the configured headers, through the same validation
/// as a JSON request.
fn envoy_request(
    headers: &HeaderMap,
    names: &EnvoyHeaders,
    trust_time_header: bool,
    now: policy::Instant,
) -> Result<policy::Request, String> {
    refuse_repeated(headers, names)?;
    let get = |name: &str| header_value(headers, name).map(str::to_owned);
    let required = |name: &str| get(name).ok_or_else(|| format!("header `{name}` is required"));
    let at = match (headers.contains_key(&names.at), trust_time_header) {
        (true, true) => required(&names.at)?,
        (true, false) => {
            return Err(format!(
                "header `{}` is not trusted: this sidecar judges requests at its own clock \
                 (`trust_time_header` is off); the proxy must strip the header",
                names.at
            ));
        }
        (false, _) => now.to_string(),
    };
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
        at,
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
    let request = match state.header_request(&headers) {
        Ok(r) => r,
        Err(m) => {
            tracing::debug!(error = %m, "Envoy request refused");
            return error(StatusCode::BAD_REQUEST, m);
        }
    };
    let verdict = match state.gatekeeper.check_async(&request).await {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "request refused: the audit trail is unavailable");
            return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
        }
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

/// `GET /health`: 200 with the revision while a valid policy decides; otherwise 503 with
/// the reason (no policy has loaded, the bundle expired, the audit trail is unavailable).
async fn health(State(state): State<AppState>) -> Response {
    let readiness = state.gatekeeper.readiness();
    let reason = match &readiness {
        Readiness::Ready {
            revision,
            bundle_revision,
        } => {
            let origin = state.gatekeeper.active().map(|a| a.origin.clone());
            return axum::Json(json!({
                "status": "ready",
                "revision": revision.0,
                "bundle_revision": bundle_revision,
                "origin": origin,
            }))
            .into_response();
        }
        Readiness::NoPolicy { .. } => "no-policy",
        Readiness::Expired { .. } => "expired",
        Readiness::AuditFailing { .. } => "audit-failing",
        _ => "unavailable",
    };
    (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(json!({
            "status": "not ready",
            "reason": reason,
            "error": readiness.to_string(),
        })),
    )
        .into_response()
}

/// The info gauge naming the active policy revision: 1 for the active one, 0 for those it
/// replaced (the metrics facade cannot remove a series).
const POLICY_INFO: &str = "gatekeeper_policy_info";

/// The exposition without the info gauge's replaced revisions, so that the series an
/// operator keeps do not grow with reloads.
fn without_replaced_revisions(text: String) -> String {
    let replaced = |line: &str| {
        line.strip_prefix(POLICY_INFO)
            .is_some_and(|rest| rest.starts_with('{') && rest.trim_end().ends_with("} 0"))
    };
    if !text.lines().any(replaced) {
        return text;
    }
    let mut kept = String::with_capacity(text.len());
    for line in text.lines().filter(|l| !replaced(l)) {
        kept.push_str(line);
        kept.push('\n');
    }
    kept
}

async fn render_metrics(State(state): State<AppState>) -> Response {
    let held = state.max_body_bytes_in_flight - state.body_budget.available_permits();
    metrics::gauge!(m::BODY_BYTES_IN_FLIGHT).set(held as f64);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        without_replaced_revisions(state.metrics.render()),
    )
        .into_response()
}

/// Compares tokens in constant time: both are hashed first, so that neither their lengths
/// nor the length of a matching prefix shows in the time taken.
fn token_matches(given: &str, expected: &str) -> bool {
    use subtle::ConstantTimeEq as _;
    let given = gatekeeper::sha256_hex(given.as_bytes());
    let expected = gatekeeper::sha256_hex(expected.as_bytes());
    given.as_bytes().ct_eq(expected.as_bytes()).into()
}

/// Failed admin attempts, per client address: after each failure the address waits twice
/// as long as after the one before (from [`AdminGuard::FIRST_WAIT`] up to
/// [`AdminGuard::LONGEST_WAIT`]) before its token is looked at again; until then it gets 429.
#[derive(Debug, Default)]
struct AdminGuard {
    strikes: Mutex<HashMap<IpAddr, Strikes>>,
}

#[derive(Debug, Clone, Copy)]
struct Strikes {
    failures: u32,
    until: Stopwatch,
}

impl AdminGuard {
    const FIRST_WAIT: Duration = Duration::from_secs(1);
    const LONGEST_WAIT: Duration = Duration::from_secs(300);
    /// Addresses remembered at once; past this, the ones whose wait is over are forgotten.
    const REMEMBERED: usize = 10_000;

    /// How long `ip` must still wait, if at all.
    fn wait(&self, ip: IpAddr) -> Option<Duration> {
        let strikes = self.strikes.lock().unwrap_or_else(|e| e.into_inner());
        let until = strikes.get(&ip)?.until;
        until.checked_duration_since(Stopwatch::now())
    }

    fn failed(&self, ip: IpAddr) -> Duration {
        let mut strikes = self.strikes.lock().unwrap_or_else(|e| e.into_inner());
        let now = Stopwatch::now();
        if strikes.len() >= AdminGuard::REMEMBERED {
            strikes.retain(|_, s| s.until > now);
        }
        let s = strikes.entry(ip).or_insert(Strikes {
            failures: 0,
            until: now,
        });
        s.failures = s.failures.saturating_add(1);
        let wait = AdminGuard::FIRST_WAIT
            .saturating_mul(1 << s.failures.saturating_sub(1).min(16))
            .min(AdminGuard::LONGEST_WAIT);
        s.until = now + wait;
        wait
    }

    fn succeeded(&self, ip: IpAddr) {
        let mut strikes = self.strikes.lock().unwrap_or_else(|e| e.into_inner());
        strikes.remove(&ip);
    }
}

fn rate_limited(wait: Duration) -> Response {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let mut r = error(
        StatusCode::TOO_MANY_REQUESTS,
        format!("too many failed admin attempts from this address; retry in {seconds} s"),
    );
    if let Ok(v) = HeaderValue::from_str(&seconds.to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

/// Checks the bearer token of an admin request; the error is the answer to give.
#[allow(clippy::result_large_err)]
fn authorize(state: &AppState, peer: IpAddr, headers: &HeaderMap) -> Result<(), Response> {
    let Some(expected) = state.admin_token.as_deref() else {
        return Err(error(
            StatusCode::FORBIDDEN,
            "admin routes are off: no admin token is configured",
        ));
    };
    if let Some(wait) = state.admin_guard.wait(peer) {
        metrics::counter!(m::ADMIN_REFUSALS, "reason" => "rate-limited").increment(1);
        return Err(rate_limited(wait));
    }
    let given = header_value(headers, header::AUTHORIZATION.as_str())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given.is_some_and(|g| token_matches(g, expected)) {
        state.admin_guard.succeeded(peer);
        return Ok(());
    }
    let wait = state.admin_guard.failed(peer);
    metrics::counter!(m::ADMIN_REFUSALS, "reason" => "unauthorized").increment(1);
    tracing::warn!(%peer, next_attempt_in_ms = wait.as_millis() as u64, "admin request with a missing or wrong token");
    let mut r = error(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    Err(r)
}

/// `POST /v1/admin/reload`: reload now. Needs `Authorization: Bearer <token>`.
async fn reload(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorize(&state, peer.ip(), &headers) {
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
        Err(e) => {
            tracing::error!(error = %e, "the reload task failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("reload task failed: {e}"),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaced_revisions_are_left_out_of_the_exposition() {
        let text = "# HELP gatekeeper_policy_info The active revision\n\
                    # TYPE gatekeeper_policy_info gauge\n\
                    gatekeeper_policy_info{revision=\"aa\"} 0\n\
                    gatekeeper_policy_info{revision=\"bb\"} 1\n\
                    gatekeeper_policy_infos 0\n";
        let kept = without_replaced_revisions(text.to_owned());
        assert!(!kept.contains("\"aa\""), "{kept}");
        assert!(
            kept.contains("gatekeeper_policy_info{revision=\"bb\"} 1\n"),
            "{kept}"
        );
        assert!(kept.contains("gatekeeper_policy_infos 0\n"), "{kept}");
        assert!(kept.starts_with("# HELP"), "{kept}");
    }

    #[test]
    fn tokens_match_only_when_equal() {
        let token = "a".repeat(32);
        assert!(token_matches(&token, &token));
        assert!(!token_matches(&"a".repeat(31), &token));
        assert!(!token_matches("", &token));
    }

    #[test]
    fn failed_admin_attempts_wait_twice_as_long_each_time() {
        let guard = AdminGuard::default();
        let ip = IpAddr::from([127, 0, 0, 1]);
        assert_eq!(guard.wait(ip), None);
        assert_eq!(guard.failed(ip), Duration::from_secs(1));
        assert_eq!(guard.failed(ip), Duration::from_secs(2));
        assert_eq!(guard.failed(ip), Duration::from_secs(4));
        assert!(guard.wait(ip).is_some());
        for _ in 0..40 {
            guard.failed(ip);
        }
        assert_eq!(guard.failed(ip), AdminGuard::LONGEST_WAIT);
        guard.succeeded(ip);
        assert_eq!(guard.wait(ip), None);
    }
}
