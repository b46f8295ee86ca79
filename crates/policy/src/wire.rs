//! The JSON shapes of requests and decisions, shared by the command line, the
//! embeddable crate and the sidecar service. [`RequestRecord::into_request`] is the one
//! place where a request is validated.

use serde::{Deserialize, Serialize};

use crate::country::Country;
use crate::engine::{Decision, Verdict};
use crate::instant::Instant;
use crate::request::{
    AppRef, Platform, Publisher, Request, RequestError, Signal, Store, check_app_id,
};
use crate::validate::normalize_sha256;

/// `{"platform":"android","id":"com.zhiliaoapp.musically"}`
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AppRecord {
    pub platform: String,
    pub id: String,
}

/// `{"store":"apple","id":"ABCDE12345"}`: the account an app is published from.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PublisherRecord {
    pub store: String,
    pub id: String,
}

/// A request as JSON.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct RequestRecord {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app: Option<AppRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publisher: Option<PublisherRecord>,
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

fn digest(name: &'static str, text: &str) -> Result<String, RequestError> {
    normalize_sha256(text).ok_or_else(|| {
        field(
            name,
            format!(
                "`{}` is not a SHA-256 digest (64 hex digits)",
                text.escape_debug()
            ),
        )
    })
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
                            format!(
                                "unknown platform `{}`; expected `ios` or `android`",
                                other.escape_debug()
                            ),
                        ));
                    }
                };
                check_app_id(&a.id).map_err(|e| field("app.id", e))?;
                Some(AppRef { platform, id: a.id })
            }
        };
        let publisher = match self.publisher {
            None => None,
            Some(p) => {
                let store = Store::parse(&p.store).ok_or_else(|| {
                    field(
                        "publisher.store",
                        format!(
                            "unknown store `{}`; expected `apple` or `google`",
                            p.store.escape_debug()
                        ),
                    )
                })?;
                let id = store
                    .normalize_account(&p.id)
                    .map_err(|e| field("publisher.id", e))?;
                if let Some(app) = &app {
                    let fits = matches!(
                        (store, app.platform),
                        (Store::Apple, Platform::Ios) | (Store::Google, Platform::Android)
                    );
                    if !fits {
                        return Err(field(
                            "publisher.store",
                            format!(
                                "`{}` does not publish {} apps",
                                store.as_str(),
                                app.platform.as_str()
                            ),
                        ));
                    }
                }
                Some(Publisher { store, id })
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
            .map(|c| digest("signing_cert_sha256", c))
            .transpose()?;
        let code_sha256 = self
            .code_sha256
            .iter()
            .map(|c| digest("code_sha256", c))
            .collect::<Result<Vec<_>, _>>()?;
        if signals.iter().all(Option::is_none) {
            return Err(RequestError::NoSignal);
        }
        if app.is_none() && signing_cert_sha256.is_none() && code_sha256.is_empty() {
            return Err(RequestError::NoApp);
        }
        Ok(Request {
            app,
            publisher,
            signing_cert_sha256,
            code_sha256,
            action,
            at,
            known_at,
            signals,
        })
    }
}

/// An instrument a decision rests on: id, citation and where to read it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct InstrumentRecord {
    pub instrument: String,
    pub citation: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// One reason of a deny.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReasonRecord {
    pub instrument: String,
    pub prohibition: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<String>,
    pub citation: String,
    pub text: String,
    pub source: String,
    /// The instruments it was made under: its own first.
    #[serde(default)]
    pub authority: Vec<InstrumentRecord>,
}

/// Where the request was placed.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct JurisdictionRecord {
    pub region: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Groups of signals the request carried none of, assumed in the region.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub assumed: Vec<Vec<String>>,
}

/// Where the readings of the policy's windows disagree.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct UncertainRecord {
    pub from: Option<String>,
    pub until: Option<String>,
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
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relief_set_aside: Vec<InstrumentRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched_by: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub case_insensitive_match: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jurisdiction: Option<JurisdictionRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uncertain: Option<UncertainRecord>,
    pub valid_until: Option<String>,
}

impl Decision<'_> {
    /// The decision as its JSON record.
    pub fn to_record(&self) -> DecisionRecord {
        let policy = self.policy;
        let cite = |i: u32, source: bool| {
            let ins = policy.instrument(i);
            InstrumentRecord {
                instrument: ins.id.clone(),
                citation: ins.citation.clone(),
                source: source.then(|| ins.source.clone()),
            }
        };
        let mut record = DecisionRecord {
            decision: String::new(),
            because: None,
            by: None,
            in_force_from: None,
            reasons: Vec::new(),
            relief_set_aside: Vec::new(),
            app: self.matched.and_then(|m| m.app.map(|a| a.id.clone())),
            owner: self.matched.map(|m| m.owner.id.clone()),
            matched_by: self.matched.map(|m| m.by.as_str().to_owned()),
            case_insensitive_match: self.matched.is_some_and(|m| m.case_insensitive),
            jurisdiction: self.jurisdiction.as_ref().map(|j| JurisdictionRecord {
                region: j.region.id.clone(),
                signal: j.signal.map(|(s, _)| s.as_str().to_owned()),
                value: j.signal.map(|(_, c)| c.alpha2().to_owned()),
                assumed: j
                    .assumed()
                    .map(|g| g.iter().map(|s| s.as_str().to_owned()).collect())
                    .collect(),
            }),
            uncertain: self.uncertain.map(|u| UncertainRecord {
                from: u.from.map(|i| i.to_string()),
                until: u.until.map(|i| i.to_string()),
            }),
            valid_until: self.valid_until.map(|v| v.to_string()),
        };
        match &self.verdict {
            Verdict::Deny {
                prohibitions,
                set_aside,
            } => {
                record.decision = "deny".to_owned();
                record.reasons = prohibitions
                    .iter()
                    .map(|&p| {
                        let pr = policy.prohibition(p);
                        let i = policy.instrument(pr.instrument);
                        ReasonRecord {
                            instrument: i.id.clone(),
                            prohibition: pr.id.clone(),
                            item: pr.item.clone(),
                            citation: i.citation.clone(),
                            text: pr.text.clone(),
                            source: i.source.clone(),
                            authority: policy
                                .authority(p)
                                .into_iter()
                                .map(|a| cite(a, true))
                                .collect(),
                        }
                    })
                    .collect();
                record.relief_set_aside = set_aside.iter().map(|&i| cite(i, false)).collect();
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
            publisher: r.publisher.as_ref().map(|p| PublisherRecord {
                store: p.store.as_str().to_owned(),
                id: p.id.clone(),
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

/// Writes a value with its `Display`, without an intermediate `String`.
struct Shown<T>(T);

impl<T: std::fmt::Display> Serialize for Shown<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

/// An instrument as [`InstrumentRecord`] writes it, borrowed.
struct CiteRef<'p> {
    policy: &'p crate::Policy,
    instrument: u32,
    source: bool,
}

impl Serialize for CiteRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let ins = self.policy.instrument(self.instrument);
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("instrument", &ins.id)?;
        map.serialize_entry("citation", &ins.citation)?;
        if self.source {
            map.serialize_entry("source", &ins.source)?;
        }
        map.end()
    }
}

/// A reason as [`ReasonRecord`] writes it, borrowed.
struct ReasonRef<'p> {
    policy: &'p crate::Policy,
    prohibition: u32,
}

impl Serialize for ReasonRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let policy = self.policy;
        let pr = policy.prohibition(self.prohibition);
        let ins = policy.instrument(pr.instrument);
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("instrument", &ins.id)?;
        map.serialize_entry("prohibition", &pr.id)?;
        if let Some(item) = &pr.item {
            map.serialize_entry("item", item)?;
        }
        map.serialize_entry("citation", &ins.citation)?;
        map.serialize_entry("text", &pr.text)?;
        map.serialize_entry("source", &ins.source)?;
        let authority: Vec<CiteRef<'_>> = policy
            .authority(self.prohibition)
            .into_iter()
            .map(|instrument| CiteRef {
                policy,
                instrument,
                source: true,
            })
            .collect();
        map.serialize_entry("authority", &authority)?;
        map.end()
    }
}

/// Where a request was placed, as [`JurisdictionRecord`] writes it, borrowed.
struct PlacedRef<'a, 'p>(&'a crate::engine::Jurisdiction<'p>);

impl Serialize for PlacedRef<'_, '_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let j = self.0;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("region", &j.region.id)?;
        if let Some((signal, country)) = j.signal {
            map.serialize_entry("signal", signal.as_str())?;
            map.serialize_entry("value", country.alpha2())?;
        }
        if j.assumed != 0 {
            let assumed: Vec<Vec<&str>> = j
                .assumed()
                .map(|g| g.iter().map(|s| s.as_str()).collect())
                .collect();
            map.serialize_entry("assumed", &assumed)?;
        }
        map.end()
    }
}

impl Decision<'_> {
    /// Writes the decision's fields into a map being serialized, exactly as
    /// [`DecisionRecord`] writes them, from borrowed data: no record is built. A caller that
    /// writes fields of its own around them (a verdict) gets one flat object without
    /// `#[serde(flatten)]`'s buffering.
    pub fn serialize_fields<M: serde::ser::SerializeMap>(
        &self,
        map: &mut M,
    ) -> Result<(), M::Error> {
        let policy = self.policy;
        match &self.verdict {
            Verdict::Deny {
                prohibitions,
                set_aside,
            } => {
                map.serialize_entry("decision", "deny")?;
                if !prohibitions.is_empty() {
                    let reasons: Vec<ReasonRef<'_>> = prohibitions
                        .iter()
                        .map(|&prohibition| ReasonRef {
                            policy,
                            prohibition,
                        })
                        .collect();
                    map.serialize_entry("reasons", &reasons)?;
                }
                if !set_aside.is_empty() {
                    let cites: Vec<CiteRef<'_>> = set_aside
                        .iter()
                        .map(|&instrument| CiteRef {
                            policy,
                            instrument,
                            source: false,
                        })
                        .collect();
                    map.serialize_entry("relief_set_aside", &cites)?;
                }
            }
            Verdict::Allow {
                because,
                by,
                in_force_from,
            } => {
                map.serialize_entry("decision", "allow")?;
                map.serialize_entry("because", because.as_str())?;
                if let Some(b) = by {
                    map.serialize_entry("by", &policy.instrument(*b).id)?;
                }
                if let Some(at) = in_force_from {
                    map.serialize_entry("in_force_from", &Shown(at))?;
                }
            }
        }
        if let Some(m) = &self.matched {
            if let Some(app) = m.app {
                map.serialize_entry("app", &app.id)?;
            }
            map.serialize_entry("owner", &m.owner.id)?;
            map.serialize_entry("matched_by", m.by.as_str())?;
            if m.case_insensitive {
                map.serialize_entry("case_insensitive_match", &true)?;
            }
        }
        if let Some(j) = &self.jurisdiction {
            map.serialize_entry("jurisdiction", &PlacedRef(j))?;
        }
        if let Some(u) = &self.uncertain {
            struct Window(Option<Instant>, Option<Instant>);
            impl Serialize for Window {
                fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                    use serde::ser::SerializeMap as _;
                    let mut map = s.serialize_map(Some(2))?;
                    map.serialize_entry("from", &self.0.map(Shown))?;
                    map.serialize_entry("until", &self.1.map(Shown))?;
                    map.end()
                }
            }
            map.serialize_entry("uncertain", &Window(u.from, u.until))?;
        }
        map.serialize_entry("valid_until", &self.valid_until.map(Shown))?;
        Ok(())
    }
}

impl Serialize for Decision<'_> {
    /// The same JSON as [`Decision::to_record`]'s, written from borrowed data.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let mut map = s.serialize_map(None)?;
        self.serialize_fields(&mut map)?;
        map.end()
    }
}
