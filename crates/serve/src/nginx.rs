//! `ANY /v1/nginx/authz/...`: an authorizer for nginx's `auth_request`.
//!
//! nginx accepts three kinds of answer from an authorizer: 2xx (serve), 401 or 403 (refuse
//! with that status), and anything else, which it turns into a bare 500. A 451 from the
//! Envoy route would be such an error, and the user would see neither the status nor the
//! legal reason. So this route answers:
//!
//! - **200** to allow (and in shadow mode), with `gatekeeper-decision` (`allow` or
//!   `shadow-deny`), `gatekeeper-decision-id` and `gatekeeper-revision`, for the store;
//! - **403** to refuse, with the refusal in headers that `auth_request_set` can capture and
//!   `error_page 403 = @location` can answer with: `gatekeeper-decision` (`deny`: a legal
//!   reason; `invalid`: the request cannot be judged), `gatekeeper-status` (451 or 400),
//!   `gatekeeper-link` (every reason's `<source>; rel="blocked-by"`, in one header, because
//!   nginx 1.22 captures only the first of repeated headers) and `gatekeeper-body` (the JSON
//!   to answer with, the same as the Envoy route's 451 body, in ASCII so that it is a valid
//!   header value); the body is empty, so that nginx keeps the connection;
//! - **503** when the sidecar cannot decide (no valid policy with the failure mode closed,
//!   the audit trail down): nginx reports an error, which the shipped configuration answers
//!   503 as well, never as a deny.
//!
//! The request is built from the same headers as the Envoy route, by the same function.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use gatekeeper::Gate;
use gatekeeper::layer::{link_reasons, name_verdict};
use serde_json::{Value, json};

use crate::routes::AppState;

/// What the authorizer decided: `allow`, `shadow-deny`, `deny` or `invalid`.
pub(crate) const DECISION: HeaderName = HeaderName::from_static("gatekeeper-decision");
/// The status the proxy should answer a refusal with: `451` or `400`.
pub(crate) const STATUS: HeaderName = HeaderName::from_static("gatekeeper-status");
/// Every reason's `<source>; rel="blocked-by"`, comma-separated, for the `Link` header.
pub(crate) const LINK: HeaderName = HeaderName::from_static("gatekeeper-link");
/// The JSON body the proxy should answer a refusal with.
pub(crate) const BODY: HeaderName = HeaderName::from_static("gatekeeper-body");

/// The longest `gatekeeper-body` sent whole. The shipped nginx configuration reads the
/// authorizer's headers into a 32 KiB buffer; a header past it would make nginx fail the
/// request as if the sidecar were down.
const MAX_BODY_HEADER: usize = 24 * 1024;

/// The nginx authorizer's routes.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/nginx/authz", any(authorize))
        .route("/v1/nginx/authz/{*path}", any(authorize))
}

/// JSON in ASCII: every character outside printable ASCII as a `\u` escape (which can occur
/// only inside strings), so that the text is a valid header value and reads back the same.
fn ascii_json(value: &impl serde::Serialize) -> String {
    let text = serde_json::to_string(value).unwrap_or_else(|_| "{}".to_owned());
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() && !c.is_ascii_control() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

/// The refusal's JSON as a header value. A decision too large for the proxy's buffer loses
/// the wording of its reasons and of their authorities (the citations, sources and ids stay,
/// and `truncated` says so); the full record is in the audit trail under its decision id.
fn body_header(record: &impl serde::Serialize) -> HeaderValue {
    let mut text = ascii_json(record);
    if text.len() > MAX_BODY_HEADER {
        let mut value = serde_json::to_value(record).unwrap_or(Value::Null);
        if let Some(reasons) = value.get_mut("reasons").and_then(Value::as_array_mut) {
            for reason in reasons.iter_mut().filter_map(Value::as_object_mut) {
                reason.remove("text");
                reason.remove("authority");
            }
        }
        if let Some(object) = value.as_object_mut() {
            object.insert("truncated".to_owned(), json!(true));
        }
        text = ascii_json(&value);
    }
    HeaderValue::from_str(&text).unwrap_or_else(|_| {
        HeaderValue::from_static(r#"{"error":"the decision cannot be written in a header"}"#)
    })
}

/// A refusal nginx turns into `status` with `body`: 403 with everything in headers and an
/// empty body. nginx reads only the head of an authorizer's answer, and keeps the
/// connection for the next check only when there is no body left unread: a body here
/// would cost a new connection for every deny.
fn refusal(decision: &'static str, status: StatusCode, body: &impl serde::Serialize) -> Response {
    let mut response = StatusCode::FORBIDDEN.into_response();
    let headers = response.headers_mut();
    let header = body_header(body);
    headers.insert(DECISION, HeaderValue::from_static(decision));
    headers.insert(STATUS, HeaderValue::from(status.as_u16()));
    headers.insert(BODY, header);
    response
}

fn unavailable(message: String) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(json!({ "error": message })),
    )
        .into_response()
}

/// `ANY /v1/nginx/authz/...`.
async fn authorize(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let request = match state.header_request(&headers) {
        Ok(r) => r,
        Err(m) => {
            tracing::debug!(error = %m, "nginx request refused");
            return refusal("invalid", StatusCode::BAD_REQUEST, &json!({ "error": m }));
        }
    };
    let verdict = match state.gatekeeper.check_async(&request).await {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "request refused: the audit trail is unavailable");
            return unavailable(e.to_string());
        }
    };
    let record = verdict.to_record();
    let mut response = match verdict.gate {
        Gate::Allow | Gate::ShadowDeny => StatusCode::OK.into_response(),
        // No policy decided (failure mode closed): not a legal reason, and not the
        // request's fault.
        Gate::Deny if record.decision.is_none() => {
            (StatusCode::SERVICE_UNAVAILABLE, axum::Json(&record)).into_response()
        }
        Gate::Deny => {
            let mut r = refusal("deny", StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS, &record);
            let mut links = HeaderMap::new();
            link_reasons(&mut links, &record);
            let joined: Vec<&str> = links
                .get_all(axum::http::header::LINK)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            if let Ok(v) = HeaderValue::from_str(&joined.join(", ")) {
                r.headers_mut().insert(LINK, v);
            }
            r
        }
    };
    if verdict.gate != Gate::Deny {
        response
            .headers_mut()
            .insert(DECISION, HeaderValue::from_static(verdict.gate.as_str()));
    }
    name_verdict(response.headers_mut(), &verdict);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_json_escapes_what_a_header_cannot_hold_and_reads_back_the_same() {
        let value = json!({ "text": "§ 2(a) \u{201c}covered\u{201d} \u{1f600} \u{7f}", "n": 1 });
        let text = ascii_json(&value);
        assert!(text.bytes().all(|b| (0x20..0x7f).contains(&b)), "{text}");
        assert!(HeaderValue::from_str(&text).is_ok());
        let back: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        assert_eq!(back, value);
    }

    #[test]
    fn a_decision_too_large_for_a_header_keeps_its_reasons_without_their_wording() {
        let reason = json!({ "prohibition": "p", "citation": "85 FR 1", "source": "https://s", "text": "x".repeat(MAX_BODY_HEADER) });
        let record = json!({ "decision": "deny", "decision_id": "d", "reasons": [reason] });
        let header = body_header(&record);
        assert!(header.len() <= MAX_BODY_HEADER);
        let back: Value = serde_json::from_slice(header.as_bytes()).unwrap_or(Value::Null);
        assert_eq!(back["reasons"][0]["prohibition"], "p");
        assert_eq!(back["reasons"][0]["source"], "https://s");
        assert_eq!(back["reasons"][0].get("text"), None);
        assert_eq!(back["truncated"], true);
    }
}
