//! The HTTP routes.

use std::cell::RefCell;
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

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

fn with_common_layers(router: Router, guard: &Guard) -> Router {
    // Each `Router::layer` wraps every route in a boxed service of its own, which each
    // request then clones (an allocation) and whose future it boxes: the common work is
    // one layer. Bodies are read by the handlers with their own limits and a JSON error;
    // `guarded` takes a slot, keeps the time limit and counts the answer in the metrics.
    router.layer(
        tower::ServiceBuilder::new()
            .layer(DefaultBodyLimit::disable())
            .layer(middleware::from_fn_with_state(guard.clone(), guarded)),
    )
}

/// What the routes of one listener share: the slots of the requests answered at once,
/// and the time a request may take, its wait for a slot included.
#[derive(Clone, Debug)]
pub(crate) struct Guard {
    slots: Arc<Semaphore>,
    time_limit: Duration,
}

impl Guard {
    pub(crate) fn new(config: &Config) -> Guard {
        Guard {
            slots: Arc::new(Semaphore::new(config.concurrency)),
            time_limit: Duration::from_millis(config.timeout_ms),
        }
    }
}

/// Answers a request once it has a slot, within the time limit (waiting for the slot
/// included: a request never queues unbounded; past the limit, 408 and the slot, or the
/// place in its queue, given up), and counts every answer in the HTTP metrics, those of
/// the time limit too.
async fn guarded(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    // (A matched path is shared, not copied.)
    let route = request.extensions().get::<MatchedPath>().cloned();
    let method = request.method().clone();
    let started = Stopwatch::now();
    let answered = tokio::time::timeout(guard.time_limit, async {
        // The semaphore is never closed: a slot is had, in turn.
        let Ok(_slot) = guard.slots.acquire().await else {
            return error(StatusCode::SERVICE_UNAVAILABLE, "no slot can be had");
        };
        next.run(request).await
    })
    .await;
    let response = answered.unwrap_or_else(|_elapsed| StatusCode::REQUEST_TIMEOUT.into_response());
    let status = response.status();
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    if status.is_server_error() {
        tracing::warn!(%route, %method, status = status.as_u16(), "answered with a server error");
    }
    count_answer(route, method, status, started.elapsed().as_secs_f64());
    response
}

/// Decision, Envoy, health and metrics routes.
pub(crate) fn decisions(state: AppState, guard: &Guard) -> Router {
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
    with_common_layers(router, guard)
}

/// Admin routes.
pub(crate) fn admin(state: AppState, guard: &Guard) -> Router {
    let router = Router::new()
        .route("/v1/admin/reload", post(reload))
        .with_state(state);
    with_common_layers(router, guard)
}

/// Counts an answer and its time in the HTTP metrics, through this thread's handles on
/// them where it keeps them.
fn count_answer(route: &str, method: axum::http::Method, status: StatusCode, seconds: f64) {
    let method = method_label(&method);
    let new = || HttpHandles {
        requests: metrics::counter!(m::HTTP_REQUESTS, "route" => route.to_owned(), "method" => method, "status" => status.as_u16().to_string()),
        duration: metrics::histogram!(m::HTTP_DURATION, "route" => route.to_owned()),
        route: route.to_owned(),
        method,
        status,
    };
    let record = |h: &HttpHandles| {
        h.requests.increment(1);
        h.duration.record(seconds);
    };
    let kept = HTTP_HANDLES.try_with(|kept| {
        let Ok(mut kept) = kept.try_borrow_mut() else {
            return false;
        };
        match kept
            .iter()
            .find(|h| h.status == status && h.method == method && h.route == route)
        {
            Some(h) => record(h),
            None if kept.len() < HTTP_HANDLES_KEPT => {
                let h = new();
                record(&h);
                kept.push(h);
            }
            None => return false,
        }
        true
    });
    if kept != Ok(true) {
        record(&new());
    }
}

/// The metrics' label of a method: its name for the standard methods, `OTHER` for any
/// other token a client sends, so that clients cannot make series without end.
fn method_label(method: &axum::http::Method) -> &'static str {
    STANDARD_METHODS
        .iter()
        .find(|m| *m == method)
        .map_or("OTHER", |m| m.as_str())
}

/// The methods the metrics name.
const STANDARD_METHODS: [axum::http::Method; 9] = [
    axum::http::Method::GET,
    axum::http::Method::POST,
    axum::http::Method::PUT,
    axum::http::Method::DELETE,
    axum::http::Method::HEAD,
    axum::http::Method::OPTIONS,
    axum::http::Method::PATCH,
    axum::http::Method::CONNECT,
    axum::http::Method::TRACE,
];

/// The HTTP metrics of one route, method and status.
struct HttpHandles {
    route: String,
    method: &'static str,
    status: StatusCode,
    requests: metrics::Counter,
    duration: metrics::Histogram,
}

/// At most this many routes, methods and statuses have their metrics' handles kept by a
/// thread; others are looked up each time.
const HTTP_HANDLES_KEPT: usize = 64;

thread_local! {
    /// Each thread's handles on the HTTP metrics of what it has answered, so that an
    /// answer neither builds the metrics' keys (five label strings) nor looks them up in
    /// the registry (the process's recorder is installed once, before any request).
    static HTTP_HANDLES: RefCell<Vec<HttpHandles>> = const { RefCell::new(Vec::new()) };
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

/// JSON white space.
fn is_json_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// The index of the first byte from `at` on that is not JSON white space.
fn skip_ws(bytes: &[u8], mut at: usize) -> usize {
    while bytes.get(at).copied().is_some_and(is_json_ws) {
        at += 1;
    }
    at
}

/// A single request's body: read without a `String` per field when it has the usual form
/// ([`policy::RequestRecordRef::from_json_prefix`]), otherwise (and for every error) by
/// `serde_json`, as [`parse_record`] always did.
fn parse_one(text: &str) -> Result<policy::Request, String> {
    let start = skip_ws(text.as_bytes(), 0);
    if let Some((record, len)) = text
        .get(start..)
        .and_then(policy::RequestRecordRef::from_json_prefix)
        && skip_ws(text.as_bytes(), start + len) == text.len()
    {
        return record.into_request().map_err(|e| e.to_string());
    }
    parse_record(text)
}

/// Why a batch is not answered item by item.
enum BatchError {
    /// Not a JSON array of values (the message of `serde_json`, as before).
    Malformed(String),
    /// More items than `max_batch`.
    TooMany(usize),
}

thread_local! {
    /// The requests of the last batch this thread read, kept for the next one: a batch is
    /// read into them, reusing their memory (the list, and each request's strings), where
    /// a batch of 1,000 would otherwise allocate and free some 150 KB and 1,000 strings.
    /// What it keeps is bounded ([`keep_for_next`]).
    static BATCH: RefCell<Vec<Result<policy::Request, String>>> = const { RefCell::new(Vec::new()) };
}

/// Item `k` of a batch, in its place in `items` (filled in order, so `k <= items.len()`).
fn put(
    items: &mut Vec<Result<policy::Request, String>>,
    k: usize,
    item: Result<policy::Request, String>,
) {
    match items.get_mut(k) {
        Some(slot) => *slot = item,
        None => items.push(item),
    }
}

/// Reads a batch into `items`: one request (or its error) per item, in order, in
/// `items[..n]` for the `n` it returns (the requests already there are read into, and
/// those past `n` are left as they are, for later batches). Items in the usual form are
/// read in place ([`policy::RequestRecordRef::from_json_prefix`]); any other item (and
/// any error) by `serde_json` from the item's own text, as a whole array of `RawValue`s
/// was read before: the same requests and the same messages. Items past `max` are not
/// validated, only read, so that a malformed array is still told as such.
fn parse_batch(
    text: &str,
    max: usize,
    items: &mut Vec<Result<policy::Request, String>>,
) -> Result<usize, BatchError> {
    let malformed = || match serde_json::from_str::<Vec<&RawValue>>(text) {
        Err(e) => BatchError::Malformed(format!("invalid JSON array of requests: {e}")),
        // Not expected: the scan below refuses only what `serde_json` refuses.
        Ok(items) => BatchError::Malformed(format!(
            "invalid JSON array of requests ({} items read, but not in order)",
            items.len()
        )),
    };
    let bytes = text.as_bytes();
    let mut at = skip_ws(bytes, 0);
    if bytes.get(at) != Some(&b'[') {
        return Err(malformed());
    }
    at = skip_ws(bytes, at + 1);
    let mut count = 0usize;
    let mut layout = policy::RequestLayout::default();
    // Each item read into this record in turn, then validated into its request.
    let mut record = policy::RequestRecordRef::default();
    if bytes.get(at) == Some(&b']') {
        at += 1;
    } else {
        loop {
            let rest = text.get(at..).ok_or_else(malformed)?;
            count += 1;
            match layout.read_to(rest, &mut record) {
                Some(len) => {
                    if count <= max {
                        match items.get_mut(count - 1) {
                            Some(Ok(request)) => {
                                if let Err(e) = record.read_into(request) {
                                    items[count - 1] = Err(e.to_string());
                                }
                            }
                            _ => put(
                                items,
                                count - 1,
                                record.clone().into_request().map_err(|e| e.to_string()),
                            ),
                        }
                    }
                    at += len;
                }
                None => {
                    let mut stream =
                        serde_json::Deserializer::from_str(rest).into_iter::<&RawValue>();
                    let Some(Ok(raw)) = stream.next() else {
                        return Err(malformed());
                    };
                    if count <= max {
                        put(items, count - 1, parse_record(raw.get()));
                    }
                    at += stream.byte_offset();
                }
            }
            at = skip_ws(bytes, at);
            match bytes.get(at) {
                Some(b',') => at = skip_ws(bytes, at + 1),
                Some(b']') => {
                    at += 1;
                    break;
                }
                _ => return Err(malformed()),
            }
        }
    }
    if skip_ws(bytes, at) != bytes.len() {
        return Err(malformed());
    }
    if count > max {
        return Err(BatchError::TooMany(count));
    }
    Ok(count)
}

/// A 200 with a JSON body already written.
fn json_body(body: Vec<u8>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

fn writing_failed(e: &serde_json::Error) -> Response {
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("writing the answer: {e}"),
    )
}

/// A decide body read, and its verdicts asked for: every record is handed to the audit
/// trail before any is settled, so that one disk write carries a batch.
enum Asked {
    /// A malformed body, answered.
    Answered(Response),
    One(gatekeeper::PendingVerdict),
    /// A batch under an audit trail, in order: a verdict on its way, or why the item could
    /// not be decided. (Without a trail, a batch is answered at once.)
    Batch(Vec<Result<gatekeeper::PendingVerdict, String>>),
}

/// Reads a decide body (one request, or an array of them) and asks for its verdicts; a
/// malformed body gets its answer.
fn ask(state: &AppState, body: &[u8]) -> Asked {
    let Ok(text) = std::str::from_utf8(body) else {
        return Asked::Answered(error(StatusCode::BAD_REQUEST, "request body is not UTF-8"));
    };
    if !text.trim_start().starts_with('[') {
        return match parse_one(text) {
            Ok(request) if !state.gatekeeper.is_audited() => {
                Asked::Answered(one_answer(state.gatekeeper.check(&request)))
            }
            Ok(request) => Asked::One(state.gatekeeper.check_async(&request)),
            Err(m) => Asked::Answered(error(StatusCode::BAD_REQUEST, m)),
        };
    }
    BATCH.with_borrow_mut(|items| {
        let read = parse_batch(text, state.max_batch, items);
        let n = read.as_ref().ok().copied();
        let asked = asked(state, items, read);
        keep_for_next(items, n, text.len());
        asked
    })
}

/// The most bytes of body a thread keeps the requests of for the next batch: see
/// [`keep_for_next`].
const KEEP_BYTES: usize = 2 << 20;

/// What a thread keeps of a batch's requests for the next batch: the requests it read
/// (not the error messages, nor what earlier batches left past this one's items) when the
/// body was at most [`KEEP_BYTES`], nothing otherwise, nor after a malformed array. What is
/// kept is then bounded by one such body (a request holds copies of its strings), however
/// many batches come.
fn keep_for_next(
    items: &mut Vec<Result<policy::Request, String>>,
    read: Option<usize>,
    body: usize,
) {
    match read {
        Some(n) if body <= KEEP_BYTES => {
            items.truncate(n);
            items.retain(Result::is_ok);
        }
        _ => *items = Vec::new(),
    }
}

/// The answer to a batch read into `items`, or the verdicts it waits for.
fn asked(
    state: &AppState,
    items: &[Result<policy::Request, String>],
    read: Result<usize, BatchError>,
) -> Asked {
    match read {
        Ok(n) => match state.gatekeeper.checks() {
            // No record to wait for: each verdict is written as it is given.
            Some(mut checks) => {
                let mut answer = BatchAnswer::new(n);
                for item in &items[..n] {
                    match item {
                        Ok(r) => answer.write(checks.check(r)),
                        Err(e) => answer.error(e),
                    }
                }
                Asked::Answered(answer.finish())
            }
            None => Asked::Batch(
                items[..n]
                    .iter()
                    .map(|item| match item {
                        Ok(r) => Ok(state.gatekeeper.check_async(r)),
                        Err(e) => Err(e.clone()),
                    })
                    .collect(),
            ),
        },
        Err(BatchError::Malformed(m)) => Asked::Answered(error(StatusCode::BAD_REQUEST, m)),
        Err(BatchError::TooMany(n)) => Asked::Answered(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "batch of {n} requests exceeds the limit of {}",
                state.max_batch
            ),
        )),
    }
}

/// The answer to one request, once its verdict is settled.
fn one_answer(settled: Result<gatekeeper::Verdict, gatekeeper::CheckError>) -> Response {
    match settled {
        Ok(v) => {
            let mut out = Vec::with_capacity(ANSWER_BYTES);
            v.write_json(&mut out);
            json_body(out)
        }
        Err(e) => {
            tracing::error!(error = %e, "request refused: the audit trail is unavailable");
            error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
    }
}

/// A batch's answer, written item by item as their verdicts are settled.
struct BatchAnswer {
    /// Verdicts of the same outcome copy their bytes from the first of them.
    out: gatekeeper::VerdictWriter,
    /// Items answered so far.
    items: usize,
    /// The audit trail refused a record: the whole batch fails (after every pending
    /// record is settled), as it is not the request's fault.
    refused: Option<String>,
    failed: Option<serde_json::Error>,
}

impl BatchAnswer {
    fn new(items: usize) -> BatchAnswer {
        let mut out = gatekeeper::VerdictWriter::with_capacity(ANSWER_BYTES * items + 2);
        out.push(b"[");
        BatchAnswer {
            out,
            items: 0,
            refused: None,
            failed: None,
        }
    }

    fn next(&mut self) {
        if self.items > 0 {
            self.out.push(b",");
        }
        self.items += 1;
    }

    /// The next item's answer: its verdict, once settled.
    fn verdict(&mut self, settled: Result<gatekeeper::Verdict, gatekeeper::CheckError>) {
        match settled {
            Ok(v) => self.write(&v),
            Err(e) => {
                self.next();
                self.refused = Some(e.to_string());
            }
        }
    }

    /// The next item's answer: a verdict.
    fn write(&mut self, verdict: &gatekeeper::Verdict) {
        self.next();
        self.out.write(verdict);
    }

    /// The next item's answer: why it could not be decided.
    fn error(&mut self, error: &str) {
        self.next();
        if let Err(e) = serde_json::to_writer(&mut self.out, &json!({ "error": error })) {
            self.failed.get_or_insert(e);
        }
    }

    fn finish(self) -> Response {
        if let Some(e) = self.failed {
            return writing_failed(&e);
        }
        if let Some(m) = self.refused {
            tracing::error!(error = %m, "batch refused: the audit trail is unavailable");
            return error(StatusCode::SERVICE_UNAVAILABLE, m);
        }
        let mut out = self.out.into_inner();
        out.push(b']');
        json_body(out)
    }
}

/// `POST /v1/decide`: one request, or an array answered in order.
async fn decide(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let held = match read_body(&state, &headers, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    match ask(&state, &held.bytes) {
        Asked::Answered(answer) => answer,
        Asked::One(p) => one_answer(p.await),
        Asked::Batch(mut pending) => {
            let mut answer = BatchAnswer::new(pending.len());
            // Settled in place: a pending verdict is not moved to be awaited.
            for p in &mut pending {
                match p {
                    Ok(p) => answer.verdict(p.await),
                    Err(e) => answer.error(e),
                }
            }
            answer.finish()
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
    use gatekeeper::Mode;

    /// How a body was read before batches were read in place: an array of `RawValue`s,
    /// then each item by `serde_json`. The answers must not change.
    fn parse_batch_as_before(
        text: &str,
        max: usize,
    ) -> Result<Vec<Result<policy::Request, String>>, String> {
        let items: Vec<&RawValue> = serde_json::from_str(text)
            .map_err(|e| format!("invalid JSON array of requests: {e}"))?;
        if items.len() > max {
            return Err(format!("too many: {}", items.len()));
        }
        Ok(items.iter().map(|item| parse_record(item.get())).collect())
    }

    /// A batch read as the service reads it: into this thread's requests of the batches
    /// read before it.
    fn parse_batch_now(
        text: &str,
        max: usize,
    ) -> Result<Vec<Result<policy::Request, String>>, String> {
        BATCH.with_borrow_mut(|items| {
            parse_batch(text, max, items)
                .map(|n| items[..n].to_vec())
                .map_err(|e| match e {
                    BatchError::Malformed(m) => m,
                    BatchError::TooMany(n) => format!("too many: {n}"),
                })
        })
    }

    const WECHAT: &str = r#"{"app":{"platform":"android","id":"com.tencent.mm"},"action":"update","at":"2020-09-22T12:00:00Z","storefront":"US"}"#;

    /// Items of every kind: in the usual form, in other forms of a request, and malformed
    /// (each must get its own error).
    const ITEMS: [&str; 24] = [
        WECHAT,
        r#"{"app":{"platform":"ios","id":"com.zhiliaoapp.musically"},"action":"download","at":"2020-09-22T12:00:00Z","storefront":"CAN"}"#,
        r#"{ "app" : { "id" : "com.lemon.lvoverseas" , "platform" : "android" } , "at" : "2025-03-01T12:00:00Z" , "action" : "update" , "storefront" : "USA" }"#,
        r#"{"app":{"platform":"android","id":"com.example.notes"},"action":"download","at":"2025-03-01T12:00:00Z","storefront":"US","known_at":null,"ip_country":"CA"}"#,
        r#"{"app":{"platform":"android","id":"com.tencent.mm"},"action":"update","at":"2020-09-22T12:00:00+02:00","device_country":"us"}"#,
        r#"{"app":{"platform":"android","id":"com.tencent\u002emm"},"action":"update","at":"2020-09-22T12:00:00Z","storefront":"US"}"#,
        r#"{"app":["android","com.tencent.mm"],"action":"update","at":"2020-09-22T12:00:00Z","storefront":"US"}"#,
        r#"{"signing_cert_sha256":"AB:CD","action":"update","at":"2020-09-22T12:00:00Z","storefront":"US"}"#,
        r#"{"code_sha256":["0000000000000000000000000000000000000000000000000000000000000000"],"action":"update","at":"2020-09-22T12:00:00Z","server_country":"DE"}"#,
        r#"{"app":{"platform":"android","id":"com.tencent.mm"},"publisher":{"store":"google","id":"4242"},"action":"update","at":"2020-09-22T12:00:00Z","storefront":"US"}"#,
        r#"{"action":"update"}"#,
        r#"{"action":5,"at":"2020-09-22T12:00:00Z","storefront":"US"}"#,
        r#"{"app":{"platform":"tv","id":"x"},"action":"update","at":"2020-09-22T12:00:00Z","storefront":"US"}"#,
        r#"{"app":{"platform":"android","id":"com..x"},"action":"update","at":"2020-09-22T12:00:00Z","storefront":"US"}"#,
        r#"{"app":{"platform":"android","id":"com.x"},"action":"steal","at":"2020-09-22T12:00:00Z","storefront":"US"}"#,
        r#"{"app":{"platform":"android","id":"com.x"},"action":"update","at":"yesterday","storefront":"US"}"#,
        r#"{"app":{"platform":"android","id":"com.x"},"action":"update","at":"2020-09-22T12:00:00Z","storefront":"ZZ"}"#,
        r#"{"app":{"platform":"android","id":"com.x"},"action":"update","at":"2020-09-22T12:00:00Z"}"#,
        r#"{"app":{"platform":"android","id":"com.x"},"action":"update","at":"2020-09-22T12:00:00Z","storefront":"US","storefront":"CA"}"#,
        r#"{"app":{"platform":"android","id":"com.x"},"action":"update","at":"2020-09-22T12:00:00Z","country":"US"}"#,
        r#"{"app":{"platform":"android","id":"com.x"},"action":"update","at":"2020-09-22T12:00:00Z","storefront":null,"code_sha256":null}"#,
        "5",
        "\"text\"",
        "[{\"action\":\"update\"}]",
    ];

    /// A small deterministic generator (xorshift), for test inputs.
    struct Rng(u64);

    impl Rng {
        fn usize(&mut self, range: std::ops::RangeTo<usize>) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % range.end as u64) as usize
        }
    }

    #[test]
    fn batches_are_read_as_before_item_by_item() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let ws = [" ", "", "\n", "\t", "\r\n "];
        let mut bodies: Vec<String> = [
            "[]",
            " [ ] ",
            "[",
            "]",
            "[,]",
            "[1,]",
            "[1 2]",
            "[1] x",
            "[1]]",
            "[{}",
            "[{\"action\":}]",
            "[null]",
            "[{\"action\":\"update\",}]",
            "\u{a0}[1]",
            "[1]\u{a0}",
            "[\"\\x\"]",
            "[{\"a\":\"\\u12\"}]",
        ]
        .map(str::to_owned)
        .into();
        // Items nested about as deep as `serde_json` goes.
        for depth in [1, 126, 127, 128, 129, 300] {
            let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            let objects = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
            for item in [arrays, objects] {
                bodies.push(format!("[{item}]"));
                bodies.push(format!("[{WECHAT},{item},{WECHAT}]"));
            }
        }
        for _ in 0..3_000 {
            let n = rng.usize(..12);
            let mut body = format!("{}[{}", ws[rng.usize(..5)], ws[rng.usize(..5)]);
            for k in 0..n {
                if k > 0 {
                    body.push_str(&format!("{},{}", ws[rng.usize(..5)], ws[rng.usize(..5)]));
                }
                body.push_str(ITEMS[rng.usize(..ITEMS.len())]);
            }
            body.push_str(&format!("{}]{}", ws[rng.usize(..5)], ws[rng.usize(..5)]));
            if rng.usize(..256) < 20 {
                // A byte changed: usually malformed.
                let mut bytes = body.into_bytes();
                let k = rng.usize(..bytes.len());
                let bytes_to_use = b",:[]{}\"\\ a5";
                bytes[k] = bytes_to_use[rng.usize(..bytes_to_use.len())];
                body = String::from_utf8(bytes).unwrap();
            }
            bodies.push(body);
        }
        let mut decided = 0;
        for body in &bodies {
            for max in [3, 10_000] {
                let before = parse_batch_as_before(body, max);
                assert_eq!(parse_batch_now(body, max), before, "{body}");
                decided += before.iter().flatten().filter(|r| r.is_ok()).count();
            }
        }
        assert!(decided > 1_000, "{decided}");
    }

    #[test]
    fn single_requests_are_read_as_before() {
        for item in ITEMS {
            for body in [
                item.to_owned(),
                format!(" \n{item}\t "),
                format!("{item} x"),
            ] {
                assert_eq!(parse_one(&body), parse_record(&body), "{body}");
            }
        }
    }

    fn policy_dir(name: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../policies")
            .join(name)
    }

    fn gatekeeper_of(dirs: &[&str], mode: Mode) -> Gatekeeper {
        Gatekeeper::builder()
            .policy_dirs(dirs.iter().map(|d| policy_dir(d)))
            .mode(mode)
            .build()
            .unwrap()
    }

    fn gatekeeper(mode: Mode) -> Gatekeeper {
        gatekeeper_of(&["us-2020", "us-2020-courts", "us-2024-pafaca"], mode)
    }

    /// The batch items' requests, those of the policies' cases, and some at other instants.
    fn requests() -> Vec<policy::Request> {
        let mut requests = Vec::new();
        for item in ITEMS {
            if let Ok(r) = parse_record(item) {
                requests.push(r);
            }
        }
        for dir in ["us-2020", "us-2020-courts", "us-2024-pafaca"] {
            for entry in std::fs::read_dir(policy_dir(dir).join("tests")).unwrap() {
                let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    let case: Value = serde_json::from_str(line).unwrap();
                    if let Ok(r) = parse_record(&case["request"].to_string()) {
                        requests.push(r);
                    }
                }
            }
        }
        // The same requests over the years.
        for at in [
            "2020-09-19T03:59:59Z",
            "2020-11-12T12:00:00Z",
            "2021-07-01T00:00:00Z",
            "2025-01-19T12:00:00Z",
            "2025-02-01T00:00:00.250Z",
        ] {
            for item in &ITEMS[..5] {
                if let Ok(mut r) = parse_record(item) {
                    r.set_at(policy::Instant::parse_rfc3339(at).unwrap());
                    requests.push(r);
                }
            }
        }
        requests
    }

    #[test]
    fn verdicts_are_written_as_serde_writes_them() {
        let mut denies = 0;
        for (dirs, mode) in [
            (
                &["us-2020", "us-2020-courts", "us-2024-pafaca"][..],
                Mode::Enforce,
            ),
            (&["us-2020"][..], Mode::Enforce),
            (&["us-2020"][..], Mode::Shadow),
            (&["us-2024-pafaca"][..], Mode::Shadow),
        ] {
            let gk = gatekeeper_of(dirs, mode);
            for request in requests() {
                let verdict = gk.check(&request).unwrap();
                denies += usize::from(verdict.gate != Gate::Allow);
                let mut out = Vec::new();
                verdict.write_json(&mut out);
                assert_eq!(out, serde_json::to_vec(&verdict).unwrap());
                assert_eq!(
                    serde_json::from_slice::<Value>(&out).unwrap(),
                    serde_json::to_value(verdict.to_record()).unwrap()
                );
            }
            // After a reload, the new policy's.
            gk.reload().unwrap();
            let verdict = gk.check(&requests()[0]).unwrap();
            let mut out = Vec::new();
            verdict.write_json(&mut out);
            assert_eq!(out, serde_json::to_vec(&verdict).unwrap());
        }
        assert!(denies > 100, "{denies}");
        // With no policy: the verdict's own `Serialize`.
        let empty = Gatekeeper::builder()
            .policy_dirs([policy_dir("no-such-folder")])
            .start_empty(true)
            .build()
            .unwrap();
        let verdict = empty.check(&requests()[0]).unwrap();
        let mut out = Vec::new();
        verdict.write_json(&mut out);
        assert_eq!(out, serde_json::to_vec(&verdict).unwrap());
        // The gate and mode spellings are serde's.
        for gate in [Gate::Allow, Gate::Deny, Gate::ShadowDeny] {
            assert_eq!(
                serde_json::to_string(&gate).unwrap(),
                format!("\"{}\"", gate.as_str())
            );
        }
    }

    /// A thread keeps handles on the metrics of no more than `HTTP_HANDLES_KEPT` routes,
    /// methods and statuses, and counts the others all the same; methods other than the
    /// standard ones are one, `OTHER`.
    #[test]
    fn a_thread_keeps_metric_handles_up_to_its_limit_and_counts_past_it() {
        let kept = || HTTP_HANDLES.with_borrow(|k| k.len());
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let text = recorder.handle();
        std::thread::scope(|s| {
            s.spawn(|| {
                metrics::with_local_recorder(&recorder, || {
                    for odd in ["ODD", "ODDER", "PROPFIND"] {
                        let odd = axum::http::Method::from_bytes(odd.as_bytes()).unwrap();
                        count_answer("/t", odd, StatusCode::OK, 0.0);
                    }
                    assert_eq!(kept(), 1);
                    assert_eq!(HTTP_HANDLES.with_borrow(|k| k[0].method), "OTHER");
                    for code in 200..300 {
                        let status = StatusCode::from_u16(code).unwrap();
                        count_answer("/t", axum::http::Method::GET, status, 0.0);
                    }
                    assert_eq!(kept(), HTTP_HANDLES_KEPT);
                });
            });
        });
        let text = text.render();
        let count = |method: &str, status: u16| {
            let labels = format!("route=\"/t\",method=\"{method}\",status=\"{status}\"");
            text.lines()
                .find(|l| l.starts_with("http_requests_total{") && l.contains(&labels))
                .and_then(|l| l.rsplit(' ').next())
                .map(|n| n.parse::<u64>().unwrap())
        };
        assert_eq!(count("OTHER", 200), Some(3), "{text}");
        assert!(
            (200..300).all(|code| count("GET", code) == Some(1)),
            "{text}"
        );
    }

    #[test]
    fn methods_are_labelled_by_name_or_as_other() {
        for m in STANDARD_METHODS {
            assert_eq!(method_label(&m), m.as_str());
        }
        let odd = axum::http::Method::from_bytes(b"GATEKEEPER-TEST").unwrap();
        assert_eq!(method_label(&odd), "OTHER");
    }

    fn state(gk: Gatekeeper) -> AppState {
        let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
            .build_recorder()
            .handle();
        AppState::new(gk, &Config::default(), metrics)
    }

    async fn post(state: &AppState, body: String) -> (StatusCode, Value) {
        let response = decide(State(state.clone()), HeaderMap::new(), Body::from(body)).await;
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn a_batch_answers_each_malformed_item_with_its_error_and_decides_the_rest() {
        let gk = gatekeeper(Mode::Enforce);
        let state = state(gk.clone());
        let active = gk.active().unwrap();
        let body = format!("[{}]", ITEMS.join(" , "));
        let (status, answer) = post(&state, body.clone()).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        let answers = answer.as_array().unwrap();
        let expected = parse_batch_as_before(&body, usize::MAX).unwrap();
        assert_eq!(answers.len(), ITEMS.len());
        let mut errors = 0;
        for ((answer, expected), item) in answers.iter().zip(expected).zip(ITEMS) {
            match expected {
                Err(message) => {
                    assert_eq!(answer, &serde_json::json!({ "error": message }), "{item}");
                    errors += 1;
                }
                Ok(request) => {
                    let decision = active.policy.decide(&request, gk.posture()).to_record();
                    let mut want = serde_json::to_value(decision).unwrap();
                    let want = want.as_object_mut().unwrap();
                    let got = answer.as_object().unwrap();
                    for (key, value) in want.iter() {
                        assert_eq!(got.get(key), Some(value), "{key} of {item}");
                    }
                    assert_eq!(got["revision"], active.revision.0.as_str());
                    assert_eq!(got["mode"], "enforce");
                    assert_eq!(got["decision_id"].as_str().unwrap().len(), 32);
                    assert_eq!(got.len(), want.len() + 4, "{item}: {answer}");
                }
            }
        }
        assert!((10..ITEMS.len() - 5).contains(&errors), "{errors}");
        // In a long batch, each item answers as it did in the short one.
        let long = format!("[{}]", vec![ITEMS.join(","); 40].join(","));
        let (status, long_answer) = post(&state, long).await;
        assert_eq!(status, StatusCode::OK);
        let long_answers = long_answer.as_array().unwrap();
        assert_eq!(long_answers.len(), 40 * ITEMS.len());
        let ids: std::collections::HashSet<&str> = long_answers
            .iter()
            .filter_map(|a| a["decision_id"].as_str())
            .collect();
        assert_eq!(
            ids.len(),
            40 * (ITEMS.len() - errors),
            "decision ids are unique"
        );
        for (k, got) in long_answers.iter().enumerate() {
            let mut want = answers[k % ITEMS.len()].clone();
            if want.get("decision_id").is_some() {
                want["decision_id"] = got["decision_id"].clone();
            }
            assert_eq!(got, &want, "{k}");
        }
        // A single request answers as the batch's item did.
        let (status, one) = post(&state, WECHAT.to_owned()).await;
        assert_eq!(status, StatusCode::OK);
        let mut first = answers[0].clone();
        first["decision_id"] = one["decision_id"].clone();
        assert_eq!(one, first);
        // A malformed array, and a batch over the limit, as before.
        let (status, answer) = post(&state, format!("[{WECHAT},]")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let before = parse_batch_as_before(&format!("[{WECHAT},]"), 10).unwrap_err();
        assert_eq!(answer["error"], before);
        let many = format!("[{}]", vec![WECHAT; 10_001].join(","));
        let (status, answer) = post(&state, many).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(
            answer["error"],
            "batch of 10001 requests exceeds the limit of 10000"
        );
    }

    /// With an audit trail, a batch's verdicts are all recorded before any is answered;
    /// the answer is the one given without a trail, and the trail holds each decided item.
    #[tokio::test]
    async fn an_audited_batch_answers_as_an_unaudited_one() {
        let dir = tempfile::tempdir().unwrap();
        let audited = Gatekeeper::builder()
            .policy_dirs(["us-2020", "us-2020-courts", "us-2024-pafaca"].map(policy_dir))
            .audit(gatekeeper::AuditConfig::new(dir.path()))
            .build()
            .unwrap();
        let (plain, audited) = (state(gatekeeper(Mode::Enforce)), state(audited.clone()));
        // Malformed items among the others: those after the first decided item wait in
        // the batch's queue with the verdicts.
        let body = format!("[{},{}]", ITEMS.join(","), ITEMS[..3].join(","));
        let (status, want) = post(&plain, body.clone()).await;
        assert_eq!(status, StatusCode::OK, "{want}");
        let (status, got) = post(&audited, body.clone()).await;
        assert_eq!(status, StatusCode::OK, "{got}");
        let (want, got) = (want.as_array().unwrap(), got.as_array().unwrap());
        assert_eq!(got.len(), ITEMS.len() + 3);
        let mut decided = 0;
        for (k, (got, want)) in got.iter().zip(want).enumerate() {
            let mut want = want.clone();
            if want.get("decision_id").is_some() {
                want["decision_id"] = got["decision_id"].clone();
                decided += 1;
            }
            assert_eq!(got, &want, "{k}");
        }
        let errors = ITEMS.len() + 3 - decided;
        assert!(decided > 5 && errors > 5, "{decided} {errors}");
        let head = audited.gatekeeper.close_audit().unwrap().unwrap();
        assert_eq!(head.seq, decided as u64);
    }

    /// What a thread keeps for the next batch: the requests of its last batch, not its
    /// errors nor what earlier batches left; nothing after a large body or a malformed one.
    #[test]
    fn a_thread_keeps_a_bounded_part_of_its_last_batch() {
        let ok = || parse_record(WECHAT);
        let mut items = vec![ok(), Err("bad".to_owned()), ok(), ok()];
        // The last is an earlier batch's.
        keep_for_next(&mut items, Some(3), 1_000);
        assert_eq!(items, [ok(), ok()]);
        keep_for_next(&mut items, Some(2), KEEP_BYTES);
        assert_eq!(items, [ok(), ok()]);
        keep_for_next(&mut items, Some(2), KEEP_BYTES + 1);
        assert_eq!((items.len(), items.capacity()), (0, 0));
        let mut items = vec![ok()];
        keep_for_next(&mut items, None, 10);
        assert_eq!((items.len(), items.capacity()), (0, 0));
        // Through the service: a batch of every kind of item leaves its requests only.
        let state = state(gatekeeper(Mode::Enforce));
        let body = format!("[{}]", ITEMS.join(","));
        assert!(matches!(ask(&state, body.as_bytes()), Asked::Answered(_)));
        let requests = ITEMS.iter().filter(|i| parse_record(i).is_ok()).count();
        assert_eq!(
            BATCH.with_borrow(|b| (b.len(), b.iter().all(Result::is_ok))),
            (requests, true)
        );
        assert!(requests < ITEMS.len());
        assert!(matches!(ask(&state, b"[1,"), Asked::Answered(_)));
        assert_eq!(BATCH.with_borrow(Vec::capacity), 0);
    }

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

    /// Past `REMEMBERED` addresses, a failure forgets those whose wait is over (not those
    /// still waiting); below it, none is forgotten.
    #[test]
    fn remembered_addresses_are_bounded() {
        let guard = AdminGuard::default();
        let waiting = IpAddr::from([10, 0, 0, 1]);
        guard.failed(waiting);
        let over = Stopwatch::now();
        {
            let mut strikes = guard.strikes.lock().unwrap();
            for i in 0..AdminGuard::REMEMBERED as u32 - 2 {
                let ip = IpAddr::from((u32::from_be_bytes([11, 0, 0, 0]) + i).to_be_bytes());
                strikes.insert(
                    ip,
                    Strikes {
                        failures: 1,
                        until: over,
                    },
                );
            }
        }
        // One short of the bound: nothing is forgotten.
        guard.failed(IpAddr::from([12, 0, 0, 1]));
        assert_eq!(guard.strikes.lock().unwrap().len(), AdminGuard::REMEMBERED);
        // At the bound: those whose wait is over are.
        guard.failed(IpAddr::from([12, 0, 0, 2]));
        let strikes = guard.strikes.lock().unwrap();
        let mut kept: Vec<IpAddr> = strikes.keys().copied().collect();
        kept.sort();
        assert_eq!(
            kept,
            [
                waiting,
                IpAddr::from([12, 0, 0, 1]),
                IpAddr::from([12, 0, 0, 2])
            ]
        );
    }
}
