//! The JSON Schema of policy files, for editors (feature `schema`).
//!
//! It is generated from the parser's own raw types ([`crate::raw`]), their doc comments
//! becoming the editor's hover text, so that it cannot drift from what the parser reads:
//! every table rejects unknown fields (`additionalProperties: false`, from
//! `deny_unknown_fields`), and the closed lists (instrument kinds, actions, jurisdiction
//! signals, stores) come from the model's own lists. It describes the file as a TOML
//! editor sees it converted to JSON, with dates and times as strings. What the schema
//! cannot say (that references resolve, that instants have an offset or zone, that a
//! window's `latest` follows its `earliest`) is `gatekeeper validate`'s to check.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};

use crate::raw::RawPolicyFile;

/// The JSON Schema (draft 2020-12) of a policy file.
pub fn schema() -> serde_json::Value {
    schemars::schema_for!(RawPolicyFile).to_value()
}

/// A closed list of spellings, as a string schema with an `enum`.
fn one_of(description: &str, values: impl IntoIterator<Item = &'static str>) -> Schema {
    let values: Vec<&str> = values.into_iter().collect();
    json_schema!({ "type": "string", "enum": values, "description": description })
}

/// `issued`, `effective`, `end`, `from`, `until`: an instant, or a window when the record
/// leaves the instant open.
pub(crate) struct Instant;

impl JsonSchema for Instant {
    fn schema_name() -> Cow<'static, str> {
        "Instant".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let exact = json_schema!({
            "type": "string",
            "description": "An instant with an explicit UTC offset (a TOML date-time: 2020-09-20T04:00:00Z, 2020-09-20T00:00:00-04:00) or an IANA zone (a string: \"2020-09-20T00:00:00 America/New_York\" or \"2020-09-20T00:00:00[America/New_York]\"). A bare date, or a time without offset or zone, is an error.",
            "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}(:[0-9]{2}([.][0-9]+)?)?([Zz]|[+-][0-9]{2}:[0-9]{2}| [A-Za-z][A-Za-z0-9_+/-]*|\\[[A-Za-z][A-Za-z0-9_+/-]*\\])$"
        });
        let window = json_schema!({
            "type": "object",
            "description": "A window, where the record leaves the instant open: the operator's posture picks the reading (conservative: the edge that extends prohibitions and shortens relief).",
            "properties": {
                "earliest": exact.clone(),
                "latest": exact.clone(),
                "note": { "type": "string", "minLength": 1, "description": "Why the instant is open, in words." }
            },
            "required": ["earliest", "latest", "note"],
            "additionalProperties": false
        });
        json_schema!({
            "description": "An instant (with an offset or an IANA zone), or a window `{ earliest, latest, note }` where the record leaves it open.",
            "oneOf": [exact, window]
        })
    }
}

/// `kind` of an instrument.
pub(crate) struct Kind;

impl JsonSchema for Kind {
    fn schema_name() -> Cow<'static, str> {
        "InstrumentKind".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        one_of(
            "What the instrument is.",
            crate::model::InstrumentKind::ALL.map(|k| k.as_str()),
        )
    }
}

/// An action a prohibition names.
pub(crate) struct Action;

impl JsonSchema for Action {
    fn schema_name() -> Cow<'static, str> {
        "Action".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        one_of(
            "What a request does with the app.",
            crate::Action::ALL.map(|a| a.as_str()),
        )
    }
}

/// A jurisdiction signal.
pub(crate) struct Signal;

impl JsonSchema for Signal {
    fn schema_name() -> Cow<'static, str> {
        "Signal".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        one_of(
            "A request's jurisdiction signal.",
            crate::Signal::ALL.map(|s| s.as_str()),
        )
    }
}

/// The store of a publisher account.
pub(crate) struct Store;

impl JsonSchema for Store {
    fn schema_name() -> Cow<'static, str> {
        "Store".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        one_of(
            "The store the account is at.",
            [crate::Store::Apple, crate::Store::Google].map(|s| s.as_str()),
        )
    }
}
