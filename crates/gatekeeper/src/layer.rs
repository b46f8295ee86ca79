//! The tower layer: gate HTTP routes, answering `451 Unavailable For Legal Reasons`
//! (RFC 7725) for denied requests. Works with axum (`Router::layer`, `route_layer`) and
//! hyper.
//!
//! What the layer adds to a request is kept small, since a store pays it on every gated
//! request. Unless the audit trail is durable the verdict is there at once, so `call`
//! answers a refusal itself and calls the wrapped service straight away (boxing only that
//! service's future, to name the verdict on its answer); the decision id is written on the
//! stack; the revision header's value is made when the policy is installed; a refusal's body is
//! written by [`Verdict::write_json`], each reason's texts escaped once per policy.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode, header};
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

// The same names, made once rather than parsed on every insertion.
const DECISION_ID_NAME: HeaderName = HeaderName::from_static(DECISION_ID_HEADER);
const REVISION_NAME: HeaderName = HeaderName::from_static(REVISION_HEADER);
const SHADOW_NAME: HeaderName = HeaderName::from_static(SHADOW_HEADER);

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
#[derive(Debug)]
pub struct GatekeeperLayer<E> {
    shared: Arc<Shared<E>>,
}

// Not derived: cloning the layer never clones the extractor, so `E` need not be `Clone`.
impl<E> Clone for GatekeeperLayer<E> {
    fn clone(&self) -> Self {
        GatekeeperLayer {
            shared: self.shared.clone(),
        }
    }
}

/// What every service of one layer shares: one reference to count when a router clones a
/// service for each request, as axum's does.
#[derive(Debug)]
struct Shared<E> {
    gatekeeper: Gatekeeper,
    extractor: E,
}

impl<E> GatekeeperLayer<E> {
    /// A layer deciding with `gatekeeper` the requests `extractor` maps.
    pub fn new(gatekeeper: Gatekeeper, extractor: E) -> GatekeeperLayer<E> {
        GatekeeperLayer {
            shared: Arc::new(Shared {
                gatekeeper,
                extractor,
            }),
        }
    }
}

impl<S, E> Layer<S> for GatekeeperLayer<E> {
    type Service = GatekeeperService<S, E>;

    fn layer(&self, inner: S) -> Self::Service {
        GatekeeperService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service [`GatekeeperLayer`] makes.
#[derive(Debug)]
pub struct GatekeeperService<S, E> {
    inner: S,
    shared: Arc<Shared<E>>,
}

impl<S: Clone, E> Clone for GatekeeperService<S, E> {
    fn clone(&self) -> Self {
        GatekeeperService {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

/// The response body: the inner service's, or one of ours.
pub type GatedBody<B> = Either<B, Full<Bytes>>;

/// The body of a 400 or 503 that is not a verdict: `{"error": "..."}`.
#[derive(serde::Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

/// A refusal's body is the whole verdict, under two kilobytes for one reason (the shipped
/// policies' are 1.6 to 1.8): written into a buffer of this size, it rarely grows.
const VERDICT_BODY_CAPACITY: usize = 2048;

fn json_response<B>(
    status: StatusCode,
    body: &impl serde::Serialize,
    capacity: usize,
) -> http::Response<GatedBody<B>> {
    let mut bytes = Vec::with_capacity(capacity);
    if serde_json::to_writer(&mut bytes, body).is_err() {
        bytes.clear();
    }
    json_body(status, bytes)
}

/// A response of JSON already written.
fn json_body<B>(status: StatusCode, bytes: Vec<u8>) -> http::Response<GatedBody<B>> {
    let mut response = http::Response::new(Either::Right(Full::new(Bytes::from(bytes))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn error_response<B>(status: StatusCode, error: &str) -> http::Response<GatedBody<B>> {
    json_response(status, &ErrorBody { error }, 32 + error.len())
}

/// A decision id's header value, its 32 hex digits.
fn decision_id_value(verdict: &Verdict) -> Option<HeaderValue> {
    HeaderValue::from_bytes(&verdict.decision_id.hex()).ok()
}

/// The headers that name a verdict on its response, made before the response is.
struct Named {
    id: Option<HeaderValue>,
    revision: Option<HeaderValue>,
    shadow: bool,
}

impl Named {
    fn new(verdict: &Verdict) -> Named {
        Named {
            id: decision_id_value(verdict),
            revision: verdict.revision_header(),
            shadow: verdict.gate == Gate::ShadowDeny,
        }
    }

    fn apply(self, headers: &mut http::HeaderMap) {
        if let Some(id) = self.id {
            headers.insert(DECISION_ID_NAME, id);
        }
        if let Some(revision) = self.revision {
            headers.insert(REVISION_NAME, revision);
        }
        if self.shadow {
            headers.insert(SHADOW_NAME, HeaderValue::from_static("true"));
        }
    }
}

/// Names a verdict on a response: its decision id, the policy revision, and in shadow
/// mode that the request would have been denied.
pub fn name_verdict(headers: &mut http::HeaderMap, verdict: &Verdict) {
    Named::new(verdict).apply(headers);
}

/// `Link: <source>; rel="blocked-by"` for each reason of a deny (RFC 7725).
pub fn link_reasons(headers: &mut http::HeaderMap, record: &VerdictRecord) {
    for reason in record.decision.iter().flat_map(|d| &d.reasons) {
        link(headers, &reason.source);
    }
}

/// [`link_reasons`] from the verdict itself, without its record: the same headers as
/// `link_reasons(headers, &verdict.to_record())`.
pub fn link_reasons_of(headers: &mut http::HeaderMap, verdict: &Verdict) {
    let Some(decision) = verdict.decision() else {
        return;
    };
    if let policy::Verdict::Deny { prohibitions, .. } = &decision.verdict {
        let policy = decision.policy;
        for &p in prohibitions.iter() {
            link(
                headers,
                &policy.instrument(policy.prohibition(p).instrument).source,
            );
        }
    }
}

fn link(headers: &mut http::HeaderMap, source: &str) {
    const REL: &[u8] = b">; rel=\"blocked-by\"";
    let mut value = Vec::with_capacity(1 + source.len() + REL.len());
    value.push(b'<');
    value.extend_from_slice(source.as_bytes());
    value.extend_from_slice(REL);
    if let Ok(v) = HeaderValue::from_maybe_shared(Bytes::from(value)) {
        headers.append(header::LINK, v);
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

/// [`deny_status`] from the verdict itself: the same as
/// `deny_status(&verdict.to_record())`.
pub fn deny_status_of(verdict: &Verdict) -> StatusCode {
    // A verdict has a decision exactly when a policy was active to decide.
    if verdict.active().is_some() {
        StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// A denying verdict's answer: 451 (or 503) with the verdict as JSON, a `Link` for each
/// reason, and the verdict named.
fn refusal<B>(verdict: &Verdict) -> http::Response<GatedBody<B>> {
    let mut body = Vec::with_capacity(VERDICT_BODY_CAPACITY);
    verdict.write_json(&mut body);
    let mut response = json_body(deny_status_of(verdict), body);
    link_reasons_of(response.headers_mut(), verdict);
    Named::new(verdict).apply(response.headers_mut());
    response
}

type BoxedAnswer<B, E> =
    Pin<Box<dyn Future<Output = Result<http::Response<GatedBody<B>>, E>> + Send>>;

/// The future of [`GatekeeperService`]: the inner service's answer named with its
/// verdict, or the layer's own answer.
pub struct ResponseFuture<F, B, E> {
    state: State<F, B, E>,
}

enum State<F, B, E> {
    /// The inner service answers; the verdict's headers (if the route is gated) are added.
    Inner {
        future: Pin<Box<F>>,
        named: Option<Named>,
    },
    /// The layer answers: a refusal, or a request it could not judge. `None` once given.
    Answer(Option<http::Response<GatedBody<B>>>),
    /// The verdict waits for its audit record to reach the disk (durable audit).
    Waiting(BoxedAnswer<B, E>),
}

// No field is ever pinned in place: the inner service's future and the waiting one are
// pinned in their boxes, and the answer is only moved out. So the future may move.
impl<F, B, E> Unpin for ResponseFuture<F, B, E> {}

impl<F, B, E> fmt::Debug for ResponseFuture<F, B, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Inner { .. } => "inner",
            State::Answer(_) => "answer",
            State::Waiting(_) => "waiting for the audit trail",
        };
        f.debug_tuple("ResponseFuture").field(&state).finish()
    }
}

impl<F, B, E> ResponseFuture<F, B, E> {
    fn inner(future: F, named: Option<Named>) -> Self {
        ResponseFuture {
            state: State::Inner {
                future: Box::pin(future),
                named,
            },
        }
    }

    fn answer(response: http::Response<GatedBody<B>>) -> Self {
        ResponseFuture {
            state: State::Answer(Some(response)),
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B, E>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<GatedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().state {
            State::Inner { future, named } => {
                let mut response = std::task::ready!(future.as_mut().poll(cx))?.map(Either::Left);
                if let Some(named) = named.take() {
                    named.apply(response.headers_mut());
                }
                Poll::Ready(Ok(response))
            }
            // Polled again after it gave its answer: a future need not answer twice.
            State::Answer(response) => response
                .take()
                .map_or(Poll::Pending, |r| Poll::Ready(Ok(r))),
            State::Waiting(future) => future.as_mut().poll(cx),
        }
    }
}

/// What to do with a request once its verdict is known: answer it, or call `inner`.
fn settle<S, ReqBody, ResBody>(
    inner: &mut S,
    verdict: Result<Verdict, CheckError>,
    request: http::Request<ReqBody>,
) -> ResponseFuture<S::Future, ResBody, S::Error>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
{
    let verdict = match verdict {
        Ok(v) => v,
        Err(e @ CheckError::Audit(_)) => {
            return ResponseFuture::answer(error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &e.to_string(),
            ));
        }
    };
    if verdict.gate == Gate::Deny {
        return ResponseFuture::answer(refusal(&verdict));
    }
    let named = Named::new(&verdict);
    ResponseFuture::inner(inner.call(request), Some(named))
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
    type Future = ResponseFuture<S::Future, ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let shared = &*self.shared;
        let now = shared.gatekeeper.now();
        let policy_request = match shared.extractor.extract(&request, now) {
            Ok(Some(r)) => r,
            Ok(None) => return ResponseFuture::inner(self.inner.call(request), None),
            Err(e) => return ResponseFuture::answer(error_response(StatusCode::BAD_REQUEST, &e.0)),
        };
        // The record is queued now. Unless the audit trail is durable, the verdict is
        // there at once: answer now, calling the service that was polled ready.
        let mut pending = shared.gatekeeper.check_async(&policy_request);
        if let Poll::Ready(verdict) =
            Pin::new(&mut pending).poll(&mut Context::from_waker(Waker::noop()))
        {
            return settle(&mut self.inner, verdict, request);
        }
        // Otherwise the answer waits, without blocking the worker, until the record is on
        // disk. The service that was polled ready serves this call; a fresh clone takes
        // its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture {
            state: State::Waiting(Box::pin(async move {
                let verdict = pending.await;
                settle(&mut inner, verdict, request).await
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use http_body_util::BodyExt as _;
    use policy::{Policy, RequestRecord};

    use super::*;
    use crate::clock::ManualClock;
    use crate::handle::{Active, Mode};
    use crate::revision::Revision;

    fn active(expires: Option<Instant>) -> Active {
        let text = "[instrument]\nid = \"order\"\nkind = \"identification\"\ntitle = \"An \\\"order\\\"\"\nauthority = \"a\"\ncitation = \"c\"\nsource = \"https://example.org/order\"\nissued = 2019-12-01T00:00:00Z\n\n[[region]]\nid = \"US\"\nname = \"US\"\ncountries = [\"US\"]\n\n[[entity]]\nid = \"acme\"\nname = \"Acme\"\n\n[[app]]\nid = \"chat\"\nname = \"Chat\"\nowner = \"acme\"\nandroid = [\"com.acme.chat\"]\n\n[[prohibition]]\nid = \"p\"\napps = [\"chat\"]\nactions = [\"update\"]\nregion = \"US\"\neffective = 2020-01-01T00:00:00Z\ntext = \"No updates\\n(see \\\"the order\\\")\"\n";
        Active {
            policy: Policy::from_sources([policy::Source::new("order.toml", text)]).unwrap(),
            revision: Revision::of_texts([text]),
            bundle_revision: expires.map(|_| 3),
            expires,
            signed_by: Vec::new(),
            origin: "test".to_owned(),
        }
    }

    async fn answer(verdict: &Verdict) -> (StatusCode, Vec<u8>) {
        let response = refusal::<()>(verdict);
        let status = response.status();
        let Either::Right(body) = response.into_body() else {
            panic!("a refusal's body is the layer's own");
        };
        (status, body.collect().await.unwrap().to_bytes().to_vec())
    }

    /// A refusal's body is the verdict's JSON as serde writes it, byte for byte: a deny
    /// (451, its reason's texts escaped), and without a policy or with an expired bundle
    /// (503), enforcing and in shadow mode.
    #[tokio::test]
    async fn refusals_carry_the_verdict_as_serde_writes_it() {
        let at = |text: &str| Instant::parse_rfc3339(text).unwrap();
        let request = serde_json::from_str::<RequestRecord>(
            r#"{"app":{"platform":"android","id":"com.acme.chat"},"action":"update","at":"2021-01-01T00:00:00Z","storefront":"US"}"#,
        )
        .unwrap()
        .into_request()
        .unwrap();
        for mode in [Mode::Enforce, Mode::Shadow] {
            let clock = ManualClock::new(at("2021-01-01T00:00:00Z"));
            let gk = Gatekeeper::builder()
                .mode(mode)
                .clock(Arc::new(clock))
                .start_empty(true)
                .build()
                .unwrap();
            let mut statuses = Vec::new();
            for installed in [None, Some(None), Some(Some(at("2020-06-01T00:00:00Z")))] {
                if let Some(expires) = installed {
                    gk.install(active(expires));
                }
                let verdict = gk.check(&request).unwrap();
                let (status, body) = answer(&verdict).await;
                assert_eq!(body, serde_json::to_vec(&verdict).unwrap());
                statuses.push(status);
            }
            assert_eq!(
                statuses,
                [
                    StatusCode::SERVICE_UNAVAILABLE,
                    StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS,
                    StatusCode::SERVICE_UNAVAILABLE
                ]
            );
        }
    }
}
