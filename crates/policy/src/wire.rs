//! The JSON shapes of requests and decisions, shared by the command line, the
//! embeddable crate and the sidecar service.

use serde::{Deserialize, Serialize};

use crate::country::Country;
use crate::engine::{Decision, Verdict};
use crate::instant::Instant;
use crate::request::{AppRef, Platform, Request, RequestError, Signal};
use crate::validate::normalize_sha256;

/// `{"platform":"android","id":"com.zhiliaoapp.musically"}`
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AppRecord {
    pub platform: String,
    pub id: String,
}

/// A request as JSON.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct RequestRecord {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app: Option<AppRecord>,
    pub action: String,
    pub at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub known_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storefront: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_country: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_country: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub billing_country: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_country: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing_cert_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub code_sha256: Vec<String>,
}

fn field(field: &'static str, message: impl Into<String>) -> RequestError {
    RequestError::Field {
        field,
        message: message.into(),
    }
}

impl RequestRecord {
    /// Validates the record into a [`Request`].
    pub fn into_request(self) -> Result<Request, RequestError> {
        let app = match self.app {
            None => None,
            Some(a) => {
                let platform = match a.platform.as_str() {
                    "ios" => Platform::Ios,
                    "android" => Platform::Android,
                    other => {
                        return Err(field(
                            "app.platform",
                            format!("unknown platform `{other}`; expected `ios` or `android`"),
                        ));
                    }
                };
                if a.id.trim().is_empty() {
                    return Err(field("app.id", "must not be empty"));
                }
                Some(AppRef { platform, id: a.id })
            }
        };
        let action = self
            .action
            .parse()
            .map_err(|e: crate::UnknownAction| field("action", e.to_string()))?;
        let at = Instant::parse_rfc3339(&self.at)
            .map_err(|e| field("at", format!("{e}; expected RFC 3339")))?;
        let known_at = self
            .known_at
            .as_deref()
            .map(Instant::parse_rfc3339)
            .transpose()
            .map_err(|e| field("known_at", format!("{e}; expected RFC 3339")))?;
        let mut signals = [None; 5];
        let given = [
            &self.storefront,
            &self.device_country,
            &self.ip_country,
            &self.billing_country,
            &self.server_country,
        ];
        for (slot, (signal, value)) in signals.iter_mut().zip(Signal::ALL.into_iter().zip(given)) {
            if let Some(code) = value {
                *slot =
                    Some(Country::parse(code).map_err(|e| field(signal.as_str(), e.to_string()))?);
            }
        }
        let signing_cert_sha256 = self
            .signing_cert_sha256
            .as_deref()
            .map(|c| {
                normalize_sha256(c).ok_or_else(|| {
                    field(
                        "signing_cert_sha256",
                        format!("`{c}` is not a SHA-256 digest (64 hex digits)"),
                    )
                })
            })
            .transpose()?;
        let code_sha256 = self
            .code_sha256
            .iter()
            .map(|c| {
                normalize_sha256(c).ok_or_else(|| {
                    field(
                        "code_sha256",
                        format!("`{c}` is not a SHA-256 digest (64 hex digits)"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let request = Request {
            app,
            signing_cert_sha256,
            code_sha256,
            action,
            at,
            known_at,
            signals,
        };
        if request.signals.iter().all(Option::is_none) {
            return Err(RequestError::NoSignal);
        }
        if request.app.is_none()
            && request.signing_cert_sha256.is_none()
            && request.code_sha256.is_empty()
        {
            return Err(RequestError::NoApp);
        }
        Ok(request)
    }
}

/// One reason of a deny.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReasonRecord {
    pub instrument: String,
    pub prohibition: String,
    pub citation: String,
    pub text: String,
    pub source: String,
}

/// Where the request was placed.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct JurisdictionRecord {
    pub region: String,
    pub signal: String,
    pub value: String,
}

/// A decision as JSON.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DecisionRecord {
    /// `allow` or `deny`.
    pub decision: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub because: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_force_from: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<ReasonRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jurisdiction: Option<JurisdictionRecord>,
    pub valid_until: Option<String>,
}

impl Decision<'_> {
    /// The decision as its JSON record.
    pub fn to_record(&self) -> DecisionRecord {
        let policy = self.policy;
        let mut record = DecisionRecord {
            decision: String::new(),
            because: None,
            by: None,
            in_force_from: None,
            reasons: Vec::new(),
            app: self.app.map(|(a, _)| a.id.clone()),
            matched_by: self.app.map(|(_, m)| m.as_str().to_owned()),
            jurisdiction: self.jurisdiction.map(|j| JurisdictionRecord {
                region: j.region.id.clone(),
                signal: j.signal.as_str().to_owned(),
                value: j.value.alpha2().to_owned(),
            }),
            valid_until: self.valid_until.map(|v| v.to_string()),
        };
        match &self.verdict {
            Verdict::Deny { prohibitions } => {
                record.decision = "deny".to_owned();
                record.reasons = prohibitions
                    .iter()
                    .map(|&p| {
                        let p = policy.prohibition(p);
                        let i = policy.instrument(p.instrument);
                        ReasonRecord {
                            instrument: i.id.clone(),
                            prohibition: p.id.clone(),
                            citation: i.citation.clone(),
                            text: p.text.clone(),
                            source: i.source.clone(),
                        }
                    })
                    .collect();
            }
            Verdict::Allow {
                because,
                by,
                in_force_from,
            } => {
                record.decision = "allow".to_owned();
                record.because = Some(because.as_str().to_owned());
                record.by = by.map(|b| policy.instrument(b).id.clone());
                record.in_force_from = in_force_from.map(|i| i.to_string());
            }
        }
        record
    }
}

impl From<&Request> for RequestRecord {
    /// The request as JSON again (codes as alpha-2, digests normalized).
    fn from(r: &Request) -> RequestRecord {
        let signal = |s: Signal| r.signals[s as usize].map(|c| c.alpha2().to_owned());
        RequestRecord {
            app: r.app.as_ref().map(|a| AppRecord {
                platform: a.platform.as_str().to_owned(),
                id: a.id.clone(),
            }),
            action: r.action.as_str().to_owned(),
            at: r.at.to_string(),
            known_at: r.known_at.map(|k| k.to_string()),
            storefront: signal(Signal::Storefront),
            device_country: signal(Signal::DeviceCountry),
            ip_country: signal(Signal::IpCountry),
            billing_country: signal(Signal::BillingCountry),
            server_country: signal(Signal::ServerCountry),
            signing_cert_sha256: r.signing_cert_sha256.clone(),
            code_sha256: r.code_sha256.clone(),
        }
    }
}
