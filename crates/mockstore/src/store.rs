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
use gatekeeper::{ExtractError, Gate, Gatekeeper, GatekeeperLayer, ManualClock};
use policy::{Action, Country, Instant, Platform, Request, Signal};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// How the store is set up.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// The storefronts a release is offered in.
    pub storefronts: Vec<Country>,
    /// Bearer token for `/v1/admin/*`.
    pub admin_token: String,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Whether the gatekeeper layer guards the routes (off: to measure what it costs).
    pub gated: bool,
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
            admin_token: "admin".to_owned(),
            max_body_bytes: 1024 * 1024,
            gated: true,
        }
    }
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

struct Inner {
    gatekeeper: Gatekeeper,
    clock: ManualClock,
    config: StoreConfig,
    releases: RwLock<HashMap<AppKey, Vec<Release>>>,
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

fn query(uri: &http::Uri) -> HashMap<String, String> {
    uri.query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

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
pub fn extract(
    request: &http::Request<Body>,
    now: Instant,
) -> Result<Option<Request>, ExtractError> {
    let path: Vec<&str> = request.uri().path().trim_matches('/').split('/').collect();
    let q = query(request.uri());
    let e = |m: String| ExtractError(m);
    let make = |p: &str, id: &str, action: Action| -> Result<Request, ExtractError> {
        let at = instant(q.get("at").map(String::as_str), now).map_err(e)?;
        Ok(Request::new(platform(p).map_err(e)?, id, action, at))
    };
    let with = |mut r: Request, signal: Signal, field: &str| -> Result<Request, ExtractError> {
        if let Some(code) = q.get(field) {
            r = r.with_signal(signal, country(field, code).map_err(e)?);
        }
        Ok(r)
    };
    let request = match path[..] {
        ["v1", "apps", p, id, "download"] => {
            let r = make(p, id, Action::Download)?;
            let r = with(r, Signal::Storefront, "storefront")?;
            let r = with(r, Signal::DeviceCountry, "device_country")?;
            with(r, Signal::IpCountry, "ip_country")?
        }
        ["v1", "cdn", server, p, id, _version] => {
            let r = make(p, id, Action::Cdn)?.with_signal(
                Signal::ServerCountry,
                country("server_country", server).map_err(e)?,
            );
            with(r, Signal::IpCountry, "client_country")?
        }
        ["v1", "hosting", server, p, id] => make(p, id, Action::Host)?.with_signal(
            Signal::ServerCountry,
            country("server_country", server).map_err(e)?,
        ),
        ["v1", "payments", p, id] => with(
            make(p, id, Action::Payment)?,
            Signal::BillingCountry,
            "payer_country",
        )?,
        _ => return Ok(None),
    };
    if request.signals.iter().all(Option::is_none) {
        return Err(ExtractError("give at least one country (`storefront`, `device_country`, `ip_country`, `payer_country`)".to_owned()));
    }
    Ok(Some(request))
}

impl Store {
    /// A store around a gatekeeper whose clock is `clock`.
    pub fn new(gatekeeper: Gatekeeper, clock: ManualClock, config: StoreConfig) -> Store {
        Store(Arc::new(Inner {
            gatekeeper,
            clock,
            config,
            releases: RwLock::new(HashMap::new()),
        }))
    }

    /// The store's routes.
    pub fn router(&self) -> Router {
        let gated = Router::new()
            .route("/v1/apps/{platform}/{id}/download", get(download))
            .route("/v1/cdn/{server}/{platform}/{id}/{version}", get(cdn))
            .route("/v1/hosting/{server}/{platform}/{id}", post(hosting))
            .route("/v1/payments/{platform}/{id}", post(payment));
        let gated = if self.0.config.gated {
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
            .get(key)
            .and_then(|v| v.last().cloned())
    }

    /// Checks one request; the JSON a device or publisher sees for it.
    // The error is the HTTP answer itself, built once, on the error path.
    #[allow(clippy::result_large_err)]
    fn judge(&self, request: &Request) -> Result<(bool, Value), Response> {
        let verdict = self.0.gatekeeper.check(request).map_err(|e| match e {
            gatekeeper::CheckError::Request(e) => bad(e.to_string()),
            e => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        })?;
        let record = serde_json::to_value(verdict.to_record()).unwrap_or(Value::Null);
        let available = verdict.gate != Gate::Deny;
        let mut answer = json!({ "available": available, "decision_id": record["decision_id"] });
        if !available {
            answer["message"] = json!("unavailable in your region");
            answer["reasons"] = record.get("reasons").cloned().unwrap_or_else(|| json!([]));
            if let Some(e) = record.get("error") {
                answer["error"] = e.clone();
            }
        } else if verdict.gate == Gate::ShadowDeny {
            answer["shadow_deny"] = json!(true);
        }
        Ok((available, answer))
    }
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

fn authorized(store: &Store, headers: &HeaderMap) -> bool {
    let expected = format!("Bearer {}", store.0.config.admin_token);
    headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        == Some(expected.as_str())
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
    let mut availability = BTreeMap::new();
    for &storefront in &store.0.config.storefronts {
        let mut request = Request::new(key.0, key.1.clone(), action, now)
            .with_signal(Signal::Storefront, storefront);
        request.signing_cert_sha256 = cert.clone();
        request.code_sha256 = digests.clone();
        let mut answer = match store.judge(&request) {
            Ok((_, a)) => a,
            Err(r) => return r,
        };
        if answer["available"] == json!(true) && !digests.is_empty() {
            request.action = Action::CodeUse;
            answer = match store.judge(&request) {
                Ok((_, a)) => a,
                Err(r) => return r,
            };
        }
        availability.insert(storefront.alpha2().to_owned(), answer);
    }
    if let Ok(mut releases) = store.0.releases.write() {
        releases.entry(key).or_default().push(release.clone());
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
        let mut request = Request::new(key.0, key.1.clone(), Action::Update, at);
        for (signal, c) in &countries {
            request = request.with_signal(*signal, *c);
        }
        let mut answer = match store.judge(&request) {
            Ok((_, a)) => a,
            Err(r) => return r,
        };
        answer["app"] = json!(installed.app);
        answer["installed"] = json!(installed.version);
        answer["update"] = json!(latest.version);
        answers.push(answer);
    }
    axum::Json(json!({ "updates": answers })).into_response()
}

/// `GET /v1/apps/{platform}/{id}/download` (gated): the latest release.
async fn download(State(store): State<Store>, Path((p, id)): Path<(String, String)>) -> Response {
    let key = match platform(&p) {
        Ok(p) => (p, id),
        Err(m) => return bad(m),
    };
    match store.latest(&key) {
        Some(r) => axum::Json(json!({ "release": r })).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            format!("`{}` has no release in this store", key.1),
        ),
    }
}

/// `GET /v1/cdn/{server}/{platform}/{id}/{version}` (gated): an artifact from the edge.
async fn cdn(Path((server, _p, id, version)): Path<(String, String, String, String)>) -> Response {
    axum::Json(json!({ "artifact": format!("{id}-{version}"), "edge": server })).into_response()
}

/// `POST /v1/hosting/{server}/{platform}/{id}` (gated): backend hosting of an app.
async fn hosting(Path((server, _p, id)): Path<(String, String, String)>) -> Response {
    axum::Json(json!({ "hosted": id, "server_country": server })).into_response()
}

/// `POST /v1/payments/{platform}/{id}` (gated): a payment through the app.
async fn payment(Path((_p, id)): Path<(String, String)>) -> Response {
    axum::Json(json!({ "paid": true, "through": id })).into_response()
}
