//! An independent reference for Gatekeeper's decisions, and the differential test of
//! the engine against it.
//!
//! [`eval`] is a deliberately naive evaluator written from the documented semantics
//! (the module documentation of `policy`'s law module, and the v2 policy format): for a
//! request it recognises the app, then judges every prohibition by the numbered rules at
//! the judged instant, and finds `valid_until` and `uncertain` by judging again at every
//! edge of every instant or window in the policy. It shares nothing with the engine but
//! the validated model's types and the request's getters: no index, no time line, no
//! function of the engine's law module.
//!
//! [`generate`] draws random policy sets, written as TOML and loaded through the real
//! parser and validator, and random requests against them; [`differential`] runs both
//! evaluators on them under every posture and reports every difference
//! (`cargo xtask differential --cases N --seed S`).
//!
//! ```
//! use policy::{Policy, Posture, RequestRecord, Source};
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
//! name = "The United States"
//! countries = ["US", "PR"]
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
//!     "app": {"platform": "android", "id": "com.Acme.chat"},
//!     "action": "update", "at": "2020-09-19T12:00:00Z", "storefront": "PRI"
//! }"#).unwrap();
//! let request = request.into_request().unwrap();
//! let answer = reference::eval::decide(&policy, &request, Posture::default());
//! assert_eq!(answer.because.as_deref(), Some("not-yet-in-force"));
//! assert!(answer.case_insensitive_match);
//! assert_eq!(answer.valid_until.as_deref(), Some("2020-09-20T04:00:00Z"));
//! // The engine agrees.
//! let engine = policy.decide(&request, Posture::default()).to_record();
//! assert_eq!(reference::eval::Answer::from_record(&engine), answer);
//! ```

#![forbid(unsafe_code)]

pub mod differential;
pub mod eval;
pub mod generate;

pub use differential::{Config, Report, run};
pub use eval::{Answer, Evaluator, decide};
