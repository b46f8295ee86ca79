//! The tower layer: gate HTTP routes, answering `451 Unavailable For Legal Reasons`
//! (RFC 7725) for denied requests. Works with axum (`Router::layer`, `route_layer`) and
//! hyper.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use http_body_util::{Either, Full};
use policy::Instant;
use tower::{Layer, Service};

use crate::handle::{CheckError, Gate, Gatekeeper, Verdict, VerdictRecord};

/// The header naming the decision on every gated response.
pub const DECISION_ID_HEADER: &str = "gatekeeper-decision-id";
/// The header naming the policy revision on every gated response.
pub const REVISION_HEADER: &str = "gatekeeper-revision";
/// The header added in shadow mode when the request would have been denied.
pub const SHADOW_HEADER: &str = "gatekeeper-shadow-deny";

/// Why an HTTP request could not be turned into a policy request: answered 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ExtractError(pub String);

/// Maps an HTTP request to a policy request judged at `now`, or says the route is not
/// gated (`Ok(None)`).
pub trait Extractor<B>: Clone + Send + Sync + 'static {
    /// The policy request, if the route is gated.
    fn extract(
        &self,
        request: &http::Request<B>,
        now: Instant,
    ) -> Result<Option<policy::Request>, ExtractError>;
}

impl<B, F> Extractor<B> for F
where
    F: Fn(&http::Request<B>, Instant) -> Result<Option<policy::Request>, ExtractError>
        + Clone
        + Send
        + Sync
        + 'static,
{
    fn extract(
        &self,
        request: &http::Request<B>,
        now: Instant,
    ) -> Result<Option<policy::Request>, ExtractError> {
        self(request, now)
    }
}

/// Gates the services it wraps. **API Boundary.**
#[derive(Clone, Debug)]
pub struct GatekeeperLayer<E> {
    gatekeeper: Gatekeeper,
    extractor: E,
}

impl<E> GatekeeperLayer<E> {
    /// A layer deciding with `gatekeeper` the requests `extractor` maps.
    pub fn new(gatekeeper: Gatekeeper, extractor: E) -> GatekeeperLayer<E> {
        GatekeeperLayer {
            gatekeeper,
            extractor,
        }
    }
}

impl<S, E: Clone> Layer<S> for GatekeeperLayer<E> {
    type Service = GatekeeperService<S, E>;

    fn layer(&self, inner: S) -> Self::Service {
        GatekeeperService {
            inner,
            gatekeeper: self.gatekeeper.clone(),
            extractor: self.extractor.clone(),
        }
    }
}

/// The service [`GatekeeperLayer`] makes.
#[derive(Clone, Debug)]
pub struct GatekeeperService<S, E> {
    inner: S,
    gatekeeper: Gatekeeper,
    extractor: E,
}

/// The response body: the inner service's, or one of ours.
pub type GatedBody<B> = Either<B, Full<Bytes>>;

fn json_response<B>(
    status: StatusCode,
    body: &impl serde::Serialize,
) -> http::Response<GatedBody<B>> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut response = http::Response::new(Either::Right(Full::new(Bytes::from(bytes))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn set(headers: &mut http::HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

/// Names a verdict on a response: its decision id, the policy revision, and in shadow
/// mode that the request would have been denied.
pub fn name_verdict(headers: &mut http::HeaderMap, verdict: &Verdict) {
    set(
        headers,
        DECISION_ID_HEADER,
        &verdict.decision_id.to_string(),
    );
    if let Some(r) = verdict.revision() {
        set(headers, REVISION_HEADER, &r.0);
    }
    if verdict.gate == Gate::ShadowDeny {
        set(headers, SHADOW_HEADER, "true");
    }
}

/// `Link: <source>; rel="blocked-by"` for each reason of a deny (RFC 7725).
pub fn link_reasons(headers: &mut http::HeaderMap, record: &VerdictRecord) {
    for reason in record.decision.iter().flat_map(|d| &d.reasons) {
        if let Ok(v) = HeaderValue::from_str(&format!("<{}>; rel=\"blocked-by\"", reason.source)) {
            headers.append(header::LINK, v);
        }
    }
}

/// The status of a denying verdict: 451 for a legal reason; 503 when no policy was active
/// (failure mode closed), which is not a legal reason.
pub fn deny_status(record: &VerdictRecord) -> StatusCode {
    if record.decision.is_some() {
        StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

impl<S, E, ReqBody, ResBody> Service<http::Request<ReqBody>> for GatekeeperService<S, E>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    E: Extractor<ReqBody>,
    ReqBody: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = http::Response<GatedBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        // The service that was polled ready serves this call; a fresh clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let passthrough = |inner: &mut S, request| {
            let fut = inner.call(request);
            async move { fut.await.map(|r| r.map(Either::Left)) }
        };
        let policy_request = match self.extractor.extract(&request, self.gatekeeper.now()) {
            Ok(Some(r)) => r,
            Ok(None) => return Box::pin(passthrough(&mut inner, request)),
            Err(e) => {
                let body = serde_json::json!({ "error": e.0 });
                return Box::pin(async move { Ok(json_response(StatusCode::BAD_REQUEST, &body)) });
            }
        };
        // The record is queued now; the answer waits, without blocking the worker, until
        // it is on disk (durable audit).
        let pending = self.gatekeeper.check_async(&policy_request);
        Box::pin(async move {
            let verdict = match pending.await {
                Ok(v) => v,
                Err(e @ CheckError::Audit(_)) => {
                    let body = serde_json::json!({ "error": e.to_string() });
                    return Ok(json_response(StatusCode::SERVICE_UNAVAILABLE, &body));
                }
            };
            if verdict.gate == Gate::Deny {
                let record = verdict.to_record();
                let mut response = json_response(deny_status(&record), &record);
                link_reasons(response.headers_mut(), &record);
                name_verdict(response.headers_mut(), &verdict);
                return Ok(response);
            }
            let mut response = passthrough(&mut inner, request).await?;
            name_verdict(response.headers_mut(), &verdict);
            Ok(response)
        })
    }
}
