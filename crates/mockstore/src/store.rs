//! The store: publishers, devices, a CDN edge, hosting and payments, in memory, with the
//! gatekeeper at each interception point.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use gatekeeper::{ExtractError, Gatekeeper, GatekeeperLayer, ManualClock};
use policy::{
    Action, AppRecord, Country, DecisionRecord, Instant, Platform, Posture, PublisherRecord,
    Request, RequestError, RequestRecord, Signal,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// How the store is set up.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// The storefronts a release is offered in.
    pub storefronts: Vec<Country>,
    /// Bearer token for `/v1/admin/*`; by default 32 random bytes in hex, new for every
    /// configuration, so that no store runs with a token anyone could guess.
    pub admin_token: String,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// What guards the gated routes, and who judges the store's own checks.
    pub guard: Guard,
    /// How the embedded gatekeeper reads windows and non-enforcement orders.
    pub posture: Posture,
}

impl Default for StoreConfig {
    fn default() -> StoreConfig {
        let storefronts = [
            "US", "PR", "GU", "VI", "AS", "MP", "UM", "CA", "GB", "DE", "FR", "JP", "IN", "BR",
            "AU",
        ]
        .iter()
        .filter_map(|c| Country::parse(c).ok())
        .collect();
        StoreConfig {
            storefronts,
            admin_token: random_token(),
            max_body_bytes: 1024 * 1024,
            guard: Guard::Layer,
            posture: Posture::default(),
        }
    }
}

/// What guards the gated routes (downloads, the CDN edge, hosting, payments), and who judges
/// the checks the store makes itself (submissions, update checks: several storefronts or
/// apps per request).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Guard {
    /// The embedded `GatekeeperLayer`; the store's own checks call the embedded gatekeeper.
    #[default]
    Layer,
    /// Nothing guards the gated routes (to measure what the layer costs): they serve every
    /// request, doing the same work as behind the layer (each shows the decision's fields,
    /// worked out by the store itself). The store's own checks still call the embedded
    /// gatekeeper.
    Off,
    /// A proxy in front guards the gated routes with the sidecar (`cargo xtask simulate
    /// --proxy`). The store, as one not written in Rust would, sends its own checks to the
    /// sidecar's `POST /v1/decide` at this base URL (`http://127.0.0.1:PORT`), and so also
    /// what only it knows about a gated request: the publisher account of the app's release.
    Proxy { sidecar: String },
}

/// A file of a release.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ReleaseFile {
    pub path: String,
    pub sha256: String,
}

/// An app as JSON: `{"platform":"android","id":"com.tencent.mm"}`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct AppJson {
    pub platform: String,
    pub id: String,
}

/// A release submitted by a publisher.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Release {
    pub app: AppJson,
    /// The store account it is published from: `{"store":"google","id":"..."}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publisher: Option<PublisherRecord>,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_cert_sha256: Option<String>,
    #[serde(default)]
    pub files: Vec<ReleaseFile>,
}

/// A device asking for updates of its installed apps.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateCheck {
    pub storefront: String,
    #[serde(default)]
    pub device_country: Option<String>,
    #[serde(default)]
    pub ip_country: Option<String>,
    #[serde(default)]
    pub at: Option<String>,
    pub installed: Vec<Installed>,
}

/// An installed app and its version.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Installed {
    pub app: AppJson,
    pub version: String,
}

type AppKey = (Platform, String);

/// Every release, by platform and then by app id (looked up by `&str`, without a key to
/// build).
#[derive(Default)]
struct Releases {
    ios: HashMap<String, Vec<Release>>,
    android: HashMap<String, Vec<Release>>,
}

impl Releases {
    fn of(&self, platform: Platform) -> &HashMap<String, Vec<Release>> {
        match platform {
            Platform::Ios => &self.ios,
            Platform::Android => &self.android,
        }
    }

    fn push(&mut self, (platform, id): AppKey, release: Release) {
        let apps = match platform {
            Platform::Ios => &mut self.ios,
            Platform::Android => &mut self.android,
        };
        apps.entry(id).or_default().push(release);
    }
}

struct Inner {
    gatekeeper: Gatekeeper,
    clock: ManualClock,
    config: StoreConfig,
    /// For the sidecar, behind a proxy.
    client: reqwest::Client,
    releases: RwLock<Releases>,
}

/// The store's shared state.
#[derive(Clone)]
pub struct Store(Arc<Inner>);

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("config", &self.0.config)
            .finish()
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

fn bad(message: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, message)
}

fn platform(text: &str) -> Result<Platform, String> {
    match text {
        "ios" => Ok(Platform::Ios),
        "android" => Ok(Platform::Android),
        other => Err(format!(
            "unknown platform `{other}`; expected `ios` or `android`"
        )),
    }
}

fn country(field: &str, code: &str) -> Result<Country, String> {
    Country::parse(code).map_err(|e| format!("`{field}`: {e}"))
}

/// The query parameters the gated routes read, borrowed from the URI (not decoded): a
/// parameter given twice counts with its last value, one without `=` not at all.
#[derive(Default)]
struct Query<'a> {
    storefront: Option<&'a str>,
    device_country: Option<&'a str>,
    ip_country: Option<&'a str>,
    client_country: Option<&'a str>,
    payer_country: Option<&'a str>,
    publisher_store: Option<&'a str>,
    publisher_id: Option<&'a str>,
    at: Option<&'a str>,
}

impl<'a> Query<'a> {
    fn parse(uri: &'a http::Uri) -> Query<'a> {
        let mut q = Query::default();
        for pair in Split::new(uri.query().unwrap_or_default(), b'&') {
            let Some((name, value)) = pair.split_once('=') else {
                continue;
            };
            let slot = match name {
                "storefront" => &mut q.storefront,
                "device_country" => &mut q.device_country,
                "ip_country" => &mut q.ip_country,
                "client_country" => &mut q.client_country,
                "payer_country" => &mut q.payer_country,
                "publisher_store" => &mut q.publisher_store,
                "publisher_id" => &mut q.publisher_id,
                "at" => &mut q.at,
                _ => continue,
            };
            *slot = Some(value);
        }
        q
    }
}

/// The pieces of `text` between occurrences of the ASCII byte `at`, as `str::split` gives
/// them: a byte loop, where `split`'s search costs more than these short pieces do.
struct Split<'a> {
    text: &'a str,
    at: u8,
    /// Where the next piece starts; `None` once the last has been given.
    start: Option<usize>,
}

impl<'a> Split<'a> {
    fn new(text: &'a str, at: u8) -> Split<'a> {
        Split {
            text,
            at,
            start: Some(0),
        }
    }
}

impl<'a> Iterator for Split<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let start = self.start?;
        let rest = self.text.as_bytes().get(start..)?;
        match rest.iter().position(|&b| b == self.at) {
            Some(i) => {
                self.start = Some(start + i + 1);
                self.text.get(start..start + i)
            }
            None => {
                self.start = None;
                self.text.get(start..)
            }
        }
    }
}

/// The `at` of a record judged at the store's clock. The clock's instant is set on the
/// validated request instead ([`Request::set_at`]), which saves writing it out and parsing
/// it back; an instant's text is exact, so both give the same request.
const AT_CLOCK: &str = "1970-01-01T00:00:00Z";

/// An optional `at` (RFC 3339) pins a request's instant; otherwise the store's clock says.
fn instant(at: Option<&str>, now: Instant) -> Result<Instant, String> {
    match at {
        Some(at) => Instant::parse_rfc3339(at).map_err(|e| format!("`at`: {e}")),
        None => Ok(now),
    }
}

/// Maps the gated routes to policy requests:
/// - `GET /v1/apps/{platform}/{id}/download?storefront=&device_country=&ip_country=`: `download`
/// - `GET /v1/cdn/{server_country}/{platform}/{id}/{version}?client_country=`: `cdn`
/// - `POST /v1/hosting/{server_country}/{platform}/{id}`: `host`
/// - `POST /v1/payments/{platform}/{id}?payer_country=`: `payment`
///
/// Each may carry the app's publisher account (`publisher_store=&publisher_id=`). The store's
/// own layer uses the account of the app's latest release instead when it has one: a store
/// knows who publishes what.
pub fn extract(
    request: &http::Request<Body>,
    now: Instant,
) -> Result<Option<Request>, ExtractError> {
    request_for(request.uri(), now, |_, _| None)
}

/// The policy request of a gated route; `known` gives the publisher account the store knows
/// for an app (`platform`, `id`), which takes precedence over the query's.
fn request_for(
    uri: &http::Uri,
    now: Instant,
    known: impl Fn(&str, &str) -> Option<PublisherRecord>,
) -> Result<Option<Request>, ExtractError> {
    let Some((record, at_clock)) = record_for(uri, known, true) else {
        return Ok(None);
    };
    match record.into_request() {
        Ok(mut r) => {
            if at_clock {
                r.set_at(now);
            }
            Ok(Some(r))
        }
        Err(RequestError::NoSignal) => Err(ExtractError("give at least one country (`storefront`, `device_country`, `ip_country`, `payer_country`)".to_owned())),
        Err(e) => Err(ExtractError(e.to_string())),
    }
}

/// The request record of a gated route, unvalidated, and whether it is judged at the
/// store's clock (its `at` is then [`AT_CLOCK`]); `None` for a route that is not gated.
/// The query's `at` pins the instant only when `query_at` is set: behind a proxy, the
/// sidecar judges at its clock and never sees a client's time.
fn record_for(
    uri: &http::Uri,
    known: impl Fn(&str, &str) -> Option<PublisherRecord>,
    query_at: bool,
) -> Option<(RequestRecord, bool)> {
    // No gated route has more than six segments.
    let mut segments = [""; 6];
    let mut count = 0;
    for segment in Split::new(uri.path().trim_matches('/'), b'/') {
        *segments.get_mut(count)? = segment;
        count += 1;
    }
    let q = Query::parse(uri);
    let owned = |v: Option<&str>| v.map(str::to_owned);
    let at = q.at.filter(|_| query_at);
    let make = |p: &str, id: &str, action: Action| RequestRecord {
        app: Some(AppRecord {
            platform: p.to_owned(),
            id: id.to_owned(),
        }),
        publisher: known(p, id).or_else(|| {
            Some(PublisherRecord {
                store: q.publisher_store?.to_owned(),
                id: q.publisher_id?.to_owned(),
            })
        }),
        action: action.as_str().to_owned(),
        at: at.unwrap_or(AT_CLOCK).to_owned(),
        ..RequestRecord::default()
    };
    let record = match segments[..count] {
        ["v1", "apps", p, id, "download"] => RequestRecord {
            storefront: owned(q.storefront),
            device_country: owned(q.device_country),
            ip_country: owned(q.ip_country),
            ..make(p, id, Action::Download)
        },
        ["v1", "cdn", server, p, id, _version] => RequestRecord {
            server_country: Some(server.to_owned()),
            ip_country: owned(q.client_country),
            ..make(p, id, Action::Cdn)
        },
        ["v1", "hosting", server, p, id] => RequestRecord {
            server_country: Some(server.to_owned()),
            ..make(p, id, Action::Host)
        },
        ["v1", "payments", p, id] => RequestRecord {
            billing_country: owned(q.payer_country),
            ..make(p, id, Action::Payment)
        },
        _ => return None,
    };
    Some((record, at.is_none()))
}

/// [`record_for`] with the store's clock written out as the record's `at`, for a record
/// that leaves the store (to the sidecar).
fn record_at(
    uri: &http::Uri,
    now: Instant,
    known: impl Fn(&str, &str) -> Option<PublisherRecord>,
    query_at: bool,
) -> Option<RequestRecord> {
    let (mut record, at_clock) = record_for(uri, known, query_at)?;
    if at_clock {
        record.at = now.to_string();
    }
    Some(record)
}

/// The fields of a decision a device or publisher is shown beside `available` (or beside
/// what a gated route serves): why it is allowed (`because`, `by`, `in_force_from`), the
/// non-enforcement orders set aside, how the app was recognised (`matched_by`, `owner`),
/// and where the readings of the policy's windows disagree (`uncertain`).
fn decision_fields(d: &DecisionRecord) -> serde_json::Map<String, Value> {
    let mut fields = serde_json::Map::new();
    let mut put = |name: &str, value: Option<Value>| {
        if let Some(v) = value {
            fields.insert(name.to_owned(), v);
        }
    };
    put("because", d.because.as_ref().map(|v| json!(v)));
    put("by", d.by.as_ref().map(|v| json!(v)));
    put("in_force_from", d.in_force_from.as_ref().map(|v| json!(v)));
    put(
        "relief_set_aside",
        (!d.relief_set_aside.is_empty()).then(|| json!(d.relief_set_aside)),
    );
    put("matched_by", d.matched_by.as_ref().map(|v| json!(v)));
    put("owner", d.owner.as_ref().map(|v| json!(v)));
    put("uncertain", d.uncertain.as_ref().map(|v| json!(v)));
    fields
}

impl Store {
    /// A store around a gatekeeper whose clock is `clock`.
    pub fn new(gatekeeper: Gatekeeper, clock: ManualClock, config: StoreConfig) -> Store {
        Store(Arc::new(Inner {
            gatekeeper,
            clock,
            config,
            client: reqwest::Client::new(),
            releases: RwLock::default(),
        }))
    }

    /// The store's routes.
    pub fn router(&self) -> Router {
        let gated = Router::new()
            .route("/v1/apps/{platform}/{id}/download", get(download))
            .route("/v1/cdn/{server}/{platform}/{id}/{version}", get(cdn))
            .route("/v1/hosting/{server}/{platform}/{id}", post(hosting))
            .route("/v1/payments/{platform}/{id}", post(payment));
        let gated = if self.0.config.guard == Guard::Layer {
            let store = self.clone();
            let extract = move |request: &http::Request<Body>, now: Instant| {
                request_for(request.uri(), now, |p, id| store.publisher_of(p, id))
            };
            gated.layer(GatekeeperLayer::new(self.0.gatekeeper.clone(), extract))
        } else {
            gated
        };
        Router::new()
            .route("/v1/publisher/releases", post(publish))
            .route("/v1/devices/updates", post(updates))
            .route("/v1/admin/clock", put(set_clock).get(get_clock))
            .merge(gated)
            .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route") })
            .layer(DefaultBodyLimit::disable())
            .with_state(self.clone())
    }

    fn now(&self) -> Instant {
        self.0.gatekeeper.now()
    }

    fn latest(&self, key: &AppKey) -> Option<Release> {
        self.0
            .releases
            .read()
            .ok()?
            .of(key.0)
            .get(&key.1)
            .and_then(|v| v.last().cloned())
    }

    /// The publisher account of the app's latest release in this store (the account only:
    /// the gated routes ask for it on every request).
    fn publisher_of(&self, platform_text: &str, id: &str) -> Option<PublisherRecord> {
        let platform = platform(platform_text).ok()?;
        let releases = self.0.releases.read().ok()?;
        releases.of(platform).get(id)?.last()?.publisher.clone()
    }

    /// Why a request the guard let through was allowed: the decision fields of the same
    /// request under the same policy and posture (neither the layer nor the proxy passes
    /// the decision on to the route). When the routes are not guarded ([`Guard::Off`]), the
    /// same fields all the same: the store does the same work as behind the layer, so that
    /// the two differ by the layer alone.
    ///
    /// Behind a proxy, the proxy judged what the request carries; the publisher account of
    /// the app's release is the store's own knowledge, which the proxy does not have. When
    /// it differs from the account the request named, the store asks the sidecar again with
    /// it, and a deny is the answer (451 with the decision, as the layer gives).
    async fn why_served(
        &self,
        uri: &http::Uri,
    ) -> Result<serde_json::Map<String, Value>, Response> {
        let known = |p: &str, id: &str| self.publisher_of(p, id);
        if !matches!(self.0.config.guard, Guard::Proxy { .. }) {
            let request = request_for(uri, self.now(), known).ok().flatten();
            return Ok(match (request, self.0.gatekeeper.active()) {
                (Some(request), Some(active)) => decision_fields(
                    &active
                        .policy
                        .decide(&request, self.0.gatekeeper.posture())
                        .to_record(),
                ),
                _ => serde_json::Map::new(),
            });
        }
        let Some(record) = record_at(uri, self.now(), known, false) else {
            return Ok(serde_json::Map::new());
        };
        let asked = record_for(uri, |_, _| None, false).and_then(|(r, _)| r.publisher);
        if record.publisher != asked {
            let verdict = self
                .decide(vec![record])
                .await?
                .pop()
                .unwrap_or(Value::Null);
            if verdict["gate"] == "deny" {
                return Err(refused(verdict));
            }
            return Ok(fields_of(&verdict));
        }
        let request = record.into_request().ok();
        Ok(match (request, self.0.gatekeeper.active()) {
            (Some(request), Some(active)) => decision_fields(
                &active
                    .policy
                    .decide(&request, self.0.gatekeeper.posture())
                    .to_record(),
            ),
            _ => serde_json::Map::new(),
        })
    }

    /// Validates request records, then judges them in order; the verdict records, as
    /// `POST /v1/decide` gives them: from the embedded gatekeeper, or behind a proxy from
    /// the sidecar (one batch).
    // The error is the HTTP answer itself, built once, on the error path.
    #[allow(clippy::result_large_err)]
    async fn decide(&self, records: Vec<RequestRecord>) -> Result<Vec<Value>, Response> {
        let mut requests = Vec::with_capacity(records.len());
        for record in &records {
            requests.push(
                record
                    .clone()
                    .into_request()
                    .map_err(|e| bad(e.to_string()))?,
            );
        }
        if let Guard::Proxy { sidecar } = &self.0.config.guard {
            return crate::sidecar::decide(&self.0.client, sidecar, &records)
                .await
                .map_err(|e| error(StatusCode::SERVICE_UNAVAILABLE, format!("{e:#}")));
        }
        requests
            .iter()
            .map(|request| {
                let verdict = self
                    .0
                    .gatekeeper
                    .check(request)
                    .map_err(|e| error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
                Ok(serde_json::to_value(verdict.to_record()).unwrap_or(Value::Null))
            })
            .collect()
    }

    /// Judges request records in order; the JSON a device or publisher sees for each.
    // The error is the HTTP answer itself, built once, on the error path.
    #[allow(clippy::result_large_err)]
    async fn judge_records(&self, records: Vec<RequestRecord>) -> Result<Vec<Value>, Response> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self.decide(records).await?.iter().map(answer).collect())
    }
}

/// The decision fields of a verdict record (nothing when no policy decided).
fn fields_of(verdict: &Value) -> serde_json::Map<String, Value> {
    serde_json::from_value::<DecisionRecord>(verdict.clone())
        .map(|d| decision_fields(&d))
        .unwrap_or_default()
}

/// What a device or publisher is shown for a verdict record: available or not, and why.
fn answer(verdict: &Value) -> Value {
    let available = verdict["gate"] != "deny";
    let mut answer = json!({ "available": available, "decision_id": verdict["decision_id"] });
    if !available {
        answer["message"] = json!("unavailable in your region");
        answer["reasons"] = verdict.get("reasons").cloned().unwrap_or_else(|| json!([]));
        if let Some(e) = verdict.get("error") {
            answer["error"] = e.clone();
        }
    } else if verdict["gate"] == "shadow-deny" {
        answer["shadow_deny"] = json!(true);
    }
    if let Some(answer) = answer.as_object_mut() {
        answer.extend(fields_of(verdict));
    }
    answer
}

/// A gated request the store itself refuses, answered as the layer would: 451 with the
/// decision and `Link: <source>; rel="blocked-by"` for each reason, or 503 when no policy
/// decided.
fn refused(verdict: Value) -> Response {
    let status = if verdict.get("decision").is_some() {
        StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let links: Vec<String> = verdict["reasons"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["source"].as_str())
        .map(|source| format!("<{source}>; rel=\"blocked-by\""))
        .collect();
    let mut response = (status, axum::Json(verdict)).into_response();
    for link in links {
        if let Ok(v) = http::HeaderValue::from_str(&link) {
            response.headers_mut().append(http::header::LINK, v);
        }
    }
    response
}

async fn body_json<T: serde::de::DeserializeOwned>(
    store: &Store,
    body: Body,
) -> Result<T, Response> {
    let limit = store.0.config.max_body_bytes;
    let bytes: Bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than the limit of {limit} bytes"),
        )
    })?;
    serde_json::from_slice(&bytes).map_err(|e| bad(format!("invalid JSON: {e}")))
}

/// 32 random bytes in hex.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    if getrandom::fill(&mut bytes).is_err() {
        // No system randomness: fall back on the standard library's per-process keys.
        use std::hash::{BuildHasher, Hasher};
        for chunk in bytes.chunks_mut(8) {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0),
            );
            chunk.copy_from_slice(&h.finish().to_le_bytes()[..chunk.len()]);
        }
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares the bearer token in constant time (through digests, so that neither the
/// length nor a matching prefix shows in the time taken).
fn authorized(store: &Store, headers: &HeaderMap) -> bool {
    use subtle::ConstantTimeEq as _;
    let Some(given) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let given = gatekeeper::sha256_hex(given.as_bytes());
    let expected = gatekeeper::sha256_hex(store.0.config.admin_token.as_bytes());
    given.as_bytes().ct_eq(expected.as_bytes()).into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Clock {
    at: String,
}

async fn set_clock(State(store): State<Store>, headers: HeaderMap, body: Body) -> Response {
    if !authorized(&store, &headers) {
        return error(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
    }
    let clock: Clock = match body_json(&store, body).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    match Instant::parse_rfc3339(&clock.at) {
        Ok(at) => {
            store.0.clock.set(at);
            axum::Json(json!({ "at": at.to_string() })).into_response()
        }
        Err(e) => bad(format!("`at`: {e}")),
    }
}

async fn get_clock(State(store): State<Store>) -> Response {
    axum::Json(json!({ "at": store.now().to_string() })).into_response()
}

// The error is the HTTP answer itself, built once, on the error path.
#[allow(clippy::result_large_err)]
fn key(app: &AppJson) -> Result<AppKey, Response> {
    if app.id.trim().is_empty() {
        return Err(bad("`app.id` must not be empty"));
    }
    Ok((platform(&app.platform).map_err(bad)?, app.id.clone()))
}

/// `POST /v1/publisher/releases`: stores the release and says, per storefront, whether it is
/// available now (`update` for an app the store has, `download` for a new one, and
/// `code-use` when it carries a covered app's constituent code) and why not.
async fn publish(State(store): State<Store>, body: Body) -> Response {
    let release: Release = match body_json(&store, body).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let key = match key(&release.app) {
        Ok(k) => k,
        Err(r) => return r,
    };
    if release.version.trim().is_empty() {
        return bad("`version` must not be empty");
    }
    let mut digests = Vec::new();
    for f in &release.files {
        match policy::normalize_sha256(&f.sha256) {
            Some(d) => digests.push(d),
            None => {
                return bad(format!(
                    "`files`: `{}` of `{}` is not a SHA-256 digest",
                    f.sha256, f.path
                ));
            }
        }
    }
    let cert = match release
        .signing_cert_sha256
        .as_deref()
        .map(|c| policy::normalize_sha256(c).ok_or(c))
    {
        Some(Err(c)) => {
            return bad(format!(
                "`signing_cert_sha256`: `{c}` is not a SHA-256 digest"
            ));
        }
        Some(Ok(c)) => Some(c),
        None => None,
    };
    let existing = store.latest(&key).is_some();
    let action = if existing {
        Action::Update
    } else {
        Action::Download
    };
    let now = store.now();
    let storefronts = &store.0.config.storefronts;
    let record = |storefront: Country, action: Action| RequestRecord {
        app: Some(AppRecord {
            platform: key.0.as_str().to_owned(),
            id: key.1.clone(),
        }),
        publisher: release.publisher.clone(),
        action: action.as_str().to_owned(),
        at: now.to_string(),
        storefront: Some(storefront.alpha2().to_owned()),
        signing_cert_sha256: cert.clone(),
        code_sha256: digests.clone(),
        ..RequestRecord::default()
    };
    let first = storefronts.iter().map(|&s| record(s, action)).collect();
    let mut answers = match store.judge_records(first).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    // Where the release would be available, one carrying a covered app's code is judged
    // as `code-use` too.
    let available: Vec<usize> = (0..answers.len())
        .filter(|&i| !digests.is_empty() && answers[i]["available"] == json!(true))
        .collect();
    let code_use = available
        .iter()
        .map(|&i| record(storefronts[i], Action::CodeUse))
        .collect();
    let code_use = match store.judge_records(code_use).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    for (i, answer) in available.into_iter().zip(code_use) {
        answers[i] = answer;
    }
    let availability: BTreeMap<String, Value> = storefronts
        .iter()
        .map(|s| s.alpha2().to_owned())
        .zip(answers)
        .collect();
    if let Ok(mut releases) = store.0.releases.write() {
        releases.push(key, release.clone());
    }
    (
        StatusCode::CREATED,
        axum::Json(
            json!({ "release": release, "action": action.as_str(), "availability": availability }),
        ),
    )
        .into_response()
}

/// `POST /v1/devices/updates`: for each installed app with a newer release, whether the
/// update is delivered, or withheld and why.
async fn updates(State(store): State<Store>, body: Body) -> Response {
    let check: UpdateCheck = match body_json(&store, body).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let at = match instant(check.at.as_deref(), store.now()) {
        Ok(at) => at,
        Err(m) => return bad(m),
    };
    let mut signals = vec![(
        Signal::Storefront,
        "storefront",
        Some(check.storefront.as_str()),
    )];
    signals.push((
        Signal::DeviceCountry,
        "device_country",
        check.device_country.as_deref(),
    ));
    signals.push((Signal::IpCountry, "ip_country", check.ip_country.as_deref()));
    let mut countries = Vec::new();
    for (signal, field, code) in signals {
        if let Some(code) = code {
            match country(field, code) {
                Ok(c) => countries.push((signal, c)),
                Err(m) => return bad(m),
            }
        }
    }
    let mut answers = Vec::new();
    // (place in `answers`, the app, the update offered), judged together below.
    let mut offered = Vec::new();
    let mut records = Vec::new();
    for installed in &check.installed {
        let key = match key(&installed.app) {
            Ok(k) => k,
            Err(r) => return r,
        };
        let Some(latest) = store.latest(&key) else {
            answers.push(
                json!({ "app": installed.app, "installed": installed.version, "update": null }),
            );
            continue;
        };
        if latest.version == installed.version {
            answers.push(json!({ "app": installed.app, "installed": installed.version, "update": null, "up_to_date": true }));
            continue;
        }
        let code = |s: Signal| {
            countries
                .iter()
                .find(|(x, _)| *x == s)
                .map(|(_, c)| c.alpha2().to_owned())
        };
        let record = RequestRecord {
            app: Some(AppRecord {
                platform: key.0.as_str().to_owned(),
                id: key.1.clone(),
            }),
            publisher: latest.publisher.clone(),
            action: Action::Update.as_str().to_owned(),
            at: at.to_string(),
            storefront: code(Signal::Storefront),
            device_country: code(Signal::DeviceCountry),
            ip_country: code(Signal::IpCountry),
            ..RequestRecord::default()
        };
        offered.push((answers.len(), installed, latest.version));
        records.push(record);
        answers.push(Value::Null);
    }
    let judged = match store.judge_records(records).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    for ((i, installed, version), mut answer) in offered.into_iter().zip(judged) {
        answer["app"] = json!(installed.app);
        answer["installed"] = json!(installed.version);
        answer["update"] = json!(version);
        answers[i] = answer;
    }
    axum::Json(json!({ "updates": answers })).into_response()
}

/// A gated route's answer, with why it was served.
async fn served(store: &Store, uri: &http::Uri, mut body: Value) -> Response {
    let why = match store.why_served(uri).await {
        Ok(why) => why,
        Err(refusal) => return refusal,
    };
    if let Some(body) = body.as_object_mut() {
        body.extend(why);
    }
    axum::Json(body).into_response()
}

/// `GET /v1/apps/{platform}/{id}/download` (gated): the latest release.
async fn download(
    State(store): State<Store>,
    Path((p, id)): Path<(String, String)>,
    uri: http::Uri,
) -> Response {
    let key = match platform(&p) {
        Ok(p) => (p, id),
        Err(m) => return bad(m),
    };
    match store.latest(&key) {
        Some(r) => served(&store, &uri, json!({ "release": r })).await,
        None => error(
            StatusCode::NOT_FOUND,
            format!("`{}` has no release in this store", key.1),
        ),
    }
}

/// `GET /v1/cdn/{server}/{platform}/{id}/{version}` (gated): an artifact from the edge.
async fn cdn(
    State(store): State<Store>,
    Path((server, _p, id, version)): Path<(String, String, String, String)>,
    uri: http::Uri,
) -> Response {
    served(
        &store,
        &uri,
        json!({ "artifact": format!("{id}-{version}"), "edge": server }),
    )
    .await
}

/// `POST /v1/hosting/{server}/{platform}/{id}` (gated): backend hosting of an app.
async fn hosting(
    State(store): State<Store>,
    Path((server, _p, id)): Path<(String, String, String)>,
    uri: http::Uri,
) -> Response {
    served(
        &store,
        &uri,
        json!({ "hosted": id, "server_country": server }),
    )
    .await
}

/// `POST /v1/payments/{platform}/{id}` (gated): a payment through the app.
async fn payment(
    State(store): State<Store>,
    Path((_p, id)): Path<(String, String)>,
    uri: http::Uri,
) -> Response {
    served(&store, &uri, json!({ "paid": true, "through": id })).await
}
