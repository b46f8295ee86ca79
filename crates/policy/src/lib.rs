//! Gatekeeper's policy engine: the legal instruments that restrict the distribution
//! of named apps, as data, and the decision function over them.
//!
//! Loading runs in three stages, each a type: TOML text is parsed into raw items that
//! keep their source spans ([`raw`]), validated into a model where every reference is
//! resolved and every instant is absolute ([`model`]), and compiled into an index
//! where a decision is a hash lookup and a search of a time line ([`Policy`]). A set with any
//! problem loads nothing and reports every problem with file, line, column and hint.
//!
//! This crate reads no files, opens no sockets and starts no tasks: callers hand it
//! text and requests.
//!
//! ```
//! use policy::{Policy, Posture, Source, RequestRecord};
//!
//! let text = r#"
//! [instrument]
//! id = "order-1"
//! kind = "identification"
//! title = "An example order"
//! authority = "Secretary of Commerce"
//! citation = "1 FR 1"
//! source = "https://example.org/order-1"
//! issued = 2020-09-18T00:00:00-04:00
//!
//! [[region]]
//! id = "US"
//! name = "The United States and its territories"
//! countries = ["US", "PR", "GU", "VI", "AS", "MP", "UM"]
//!
//! [[entity]]
//! id = "acme"
//! name = "Acme Ltd."
//!
//! [[app]]
//! id = "acme-chat"
//! name = "Acme Chat"
//! owner = "acme"
//! android = ["com.acme.chat"]
//!
//! [[prohibition]]
//! id = "acme-app-store"
//! apps = ["acme-chat"]
//! actions = ["download", "update"]
//! region = "US"
//! effective = "2020-09-20T00:00:00 America/New_York"
//! text = "Any provision of services to distribute or maintain the app"
//! "#;
//! let policy = Policy::from_sources([Source::new("order-1.toml", text)]).unwrap();
//! let request: RequestRecord = serde_json::from_str(r#"{
//!     "app": {"platform": "android", "id": "com.acme.chat"},
//!     "action": "update", "at": "2020-09-22T12:00:00Z", "storefront": "PRI"
//! }"#).unwrap();
//! let decision = policy.decide(&request.into_request().unwrap(), Posture::default());
//! assert!(decision.is_deny());
//! assert_eq!(decision.to_record().jurisdiction.unwrap().value.as_deref(), Some("PR"));
//! ```

#![forbid(unsafe_code)]

mod action;
mod country;
mod diagnostic;
mod engine;
mod explain;
mod instant;
mod law;
pub mod model;
mod raw;
mod request;
#[cfg(feature = "schema")]
mod schema;
mod validate;
mod wire;

pub use action::{Action, ActionSet, UnknownAction};
pub use country::{Country, CountrySet, UnknownCountry};
pub use diagnostic::{Diagnostic, Diagnostics, Location, Related, Severity, Source};
pub use engine::{
    AnswerKey, Decision, DecisionParts, ImageError, Jurisdiction, Matched, MatchedBy, Policy,
    Verdict, image_build,
};
pub use instant::{Instant, format_eastern, format_utc};
pub use law::{AllowReason, Boundaries, NonEnforcement, Posture, Uncertain};
pub use raw::{ParsedFile, parse_file};
pub use request::{AppRef, Platform, Publisher, Request, RequestError, Signal, SignalSet, Store};
#[cfg(feature = "schema")]
pub use schema::schema;
pub use validate::normalize_sha256;
pub use wire::{
    AppRecord, AppRecordRef, DecisionJson, DecisionRecord, InstrumentRecord, JurisdictionRecord,
    PublisherRecord, PublisherRecordRef, ReasonRecord, RequestLayout, RequestRecord,
    RequestRecordRef, UncertainRecord,
};

impl Policy {
    /// Parses, validates and compiles a set of policy files. `include` keys are not
    /// followed here: resolving them needs a file system (see the `gatekeeper` crate).
    pub fn from_sources(sources: impl IntoIterator<Item = Source>) -> Result<Policy, Diagnostics> {
        Policy::from_parsed(sources.into_iter().map(parse_file).collect())
    }

    /// Validates and compiles files already parsed with [`parse_file`].
    pub fn from_parsed(files: Vec<ParsedFile>) -> Result<Policy, Diagnostics> {
        let model = validate::validate(&files).map_err(Diagnostics)?;
        Ok(Policy::compile(model))
    }
}
