//! Stage one: TOML text to raw, unvalidated items, each keeping its source spans.
//!
//! Every array-of-tables entry is deserialized on its own, so that one broken entry
//! is reported without hiding the problems of the others.

use std::collections::HashSet;

use serde::Deserialize;
use serde::de::{DeserializeOwned, IntoDeserializer};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::diagnostic::{Diagnostic, Source};

/// A string with the place it was written.
pub type S = Spanned<String>;

/// `[instrument]`: the legal instrument a file encodes.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawInstrument {
    pub id: S,
    pub kind: S,
    pub title: String,
    pub authority: String,
    #[serde(default)]
    pub pursuant_to: Vec<S>,
    pub citation: String,
    pub source: S,
    pub issued: Spanned<toml::Value>,
    #[serde(default)]
    pub notes: Vec<String>,
}

/// `[[region]]`: a named set of countries.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawRegion {
    pub id: S,
    pub name: String,
    pub countries: Spanned<Vec<S>>,
    #[serde(default)]
    pub notes: Vec<String>,
}

/// `[[entity]]`: an owner of apps, optionally a subsidiary of another.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawEntity {
    pub id: S,
    pub name: String,
    pub parent: Option<S>,
    #[serde(default)]
    pub publisher_accounts: Vec<Spanned<RawAccount>>,
    #[serde(default)]
    pub notes: Vec<String>,
}

/// `{ store = "apple", id = "ABCDE12345" }`: a store account an entity publishes from.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawAccount {
    pub store: S,
    pub id: S,
}

/// `[[app]]`: a covered app and everything that identifies it.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawApp {
    pub id: S,
    pub name: String,
    pub owner: S,
    #[serde(default)]
    pub ios: Vec<S>,
    #[serde(default)]
    pub android: Vec<S>,
    #[serde(default)]
    pub apple_team_ids: Vec<S>,
    #[serde(default)]
    pub signing_cert_sha256: Vec<S>,
    #[serde(default)]
    pub code_sha256: Vec<S>,
    #[serde(default)]
    pub notes: Vec<String>,
}

/// `[[prohibition]]`: what the file's instrument prohibits, from when, where.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawProhibition {
    pub id: S,
    pub item: Option<String>,
    #[serde(default)]
    pub apps: Vec<S>,
    #[serde(default)]
    pub owners: Vec<S>,
    pub actions: Spanned<Vec<S>>,
    pub region: S,
    /// Groups of signal names, each of which must place the request in the region.
    pub jurisdiction: Option<Spanned<Vec<Spanned<Vec<S>>>>>,
    pub effective: Spanned<toml::Value>,
    pub end: Option<Spanned<toml::Value>>,
    pub text: String,
    #[serde(default)]
    pub notes: Vec<String>,
}

/// Which prohibitions a change applies to: named ones, and every one made by (or
/// under) the named instruments.
#[derive(Debug, Clone, Default)]
pub struct RawTargets {
    pub prohibitions: Vec<S>,
    pub instruments: Vec<S>,
}

/// `[[delay]]`: moves the effective instant of prohibitions.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawDelay {
    #[serde(default)]
    pub prohibitions: Vec<S>,
    #[serde(default)]
    pub instruments: Vec<S>,
    pub effective: Spanned<toml::Value>,
    pub text: Option<String>,
    #[serde(default)]
    pub notes: Vec<String>,
}

/// `[[injunction]]` and `[[non-enforcement]]`: prohibitions without force for a window.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawRelief {
    #[serde(default)]
    pub prohibitions: Vec<S>,
    #[serde(default)]
    pub instruments: Vec<S>,
    pub from: Spanned<toml::Value>,
    pub until: Option<Spanned<toml::Value>>,
    pub text: Option<String>,
    #[serde(default)]
    pub notes: Vec<String>,
}

/// `[[exemption]]`: prohibitions cease to apply to named apps from an instant.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawExemption {
    pub apps: Spanned<Vec<S>>,
    #[serde(default)]
    pub prohibitions: Vec<S>,
    #[serde(default)]
    pub instruments: Vec<S>,
    pub from: Spanned<toml::Value>,
    pub text: Option<String>,
    #[serde(default)]
    pub notes: Vec<String>,
}

/// `[[revocation]]`: ends prohibitions for good from an instant.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawRevocation {
    #[serde(default)]
    pub prohibitions: Vec<S>,
    #[serde(default)]
    pub instruments: Vec<S>,
    pub from: Spanned<toml::Value>,
    pub text: Option<String>,
    #[serde(default)]
    pub notes: Vec<String>,
}

/// One policy file after parsing: its raw items and what could not be read.
#[derive(Debug, Clone)]
pub struct ParsedFile {
    /// The file's text and name.
    pub source: Source,
    /// `include = [...]`: other files or folders this one needs, relative to it.
    pub includes: Vec<S>,
    pub instrument: Option<RawInstrument>,
    pub regions: Vec<RawRegion>,
    pub entities: Vec<RawEntity>,
    pub apps: Vec<RawApp>,
    pub prohibitions: Vec<RawProhibition>,
    pub delays: Vec<RawDelay>,
    pub injunctions: Vec<RawRelief>,
    pub non_enforcements: Vec<RawRelief>,
    pub revocations: Vec<RawRevocation>,
    pub exemptions: Vec<RawExemption>,
    /// Problems found while parsing.
    pub diagnostics: Vec<Diagnostic>,
    /// Ids of entries that failed to parse, so that references to them are not
    /// reported a second time as unknown.
    pub broken_ids: HashSet<String>,
}

const TOP_LEVEL_KEYS: &str = "`include`, `instrument`, `region`, `entity`, `app`, `prohibition`, `delay`, `injunction`, `non-enforcement`, `revocation`, `exemption`";

/// Parses one policy file. Never fails as a whole: problems are in `diagnostics`.
pub fn parse_file(source: Source) -> ParsedFile {
    let mut file = ParsedFile {
        source,
        includes: Vec::new(),
        instrument: None,
        regions: Vec::new(),
        entities: Vec::new(),
        apps: Vec::new(),
        prohibitions: Vec::new(),
        delays: Vec::new(),
        injunctions: Vec::new(),
        non_enforcements: Vec::new(),
        revocations: Vec::new(),
        exemptions: Vec::new(),
        diagnostics: Vec::new(),
        broken_ids: HashSet::new(),
    };
    if file.source.text.trim().is_empty() {
        let len = file.source.text.len();
        file.diagnostics.push(
            Diagnostic::at(&file.source, 0..len, "policy file is empty").with_hint(
                "a truncated save would drop instruments silently; restore the file or delete it",
            ),
        );
        return file;
    }
    // The tree borrows this copy while diagnostics borrow the file's own text.
    let text = file.source.text.clone();
    let parsed = DeTable::parse(&text).map(|root| root.into_inner());
    let root = match parsed {
        Ok(root) => root,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            let message = format!("invalid TOML: {}", e.message().trim_end());
            file.diagnostics.push(
                Diagnostic::at(&file.source, span, message)
                    .with_hint("see https://toml.io for the syntax"),
            );
            return file;
        }
    };
    for (key, value) in root {
        let key_span = key.span();
        match key.get_ref().as_ref() {
            "include" => file.includes = one(&mut file, value).unwrap_or_default(),
            "instrument" => {
                if matches!(value.get_ref(), DeValue::Array(_)) {
                    file.diagnostics.push(
                        Diagnostic::at(&file.source, key_span, "a file holds at most one `[instrument]`")
                            .with_hint("put each instrument in a file of its own, as a single `[instrument]` table"),
                    );
                } else {
                    file.instrument = one(&mut file, value);
                }
            }
            "region" => file.regions = many(&mut file, "region", value),
            "entity" => file.entities = many(&mut file, "entity", value),
            "app" => file.apps = many(&mut file, "app", value),
            "prohibition" => file.prohibitions = many(&mut file, "prohibition", value),
            "delay" => file.delays = many(&mut file, "delay", value),
            "injunction" => file.injunctions = many(&mut file, "injunction", value),
            "non-enforcement" => {
                file.non_enforcements = many(&mut file, "non-enforcement", value)
            }
            "revocation" => file.revocations = many(&mut file, "revocation", value),
            "exemption" => file.exemptions = many(&mut file, "exemption", value),
            "suspension" => file.diagnostics.push(
                Diagnostic::at(&file.source, key_span, "`suspension` is not a policy item")
                    .with_hint("write `[[injunction]]` for a court order, or `[[non-enforcement]]` for an executive non-enforcement order: a store may treat the two differently"),
            ),
            other => {
                let message = format!("unknown key `{other}`");
                file.diagnostics.push(
                    Diagnostic::at(&file.source, key_span, message)
                        .with_hint(format!("a policy file may hold {TOP_LEVEL_KEYS}")),
                );
            }
        }
    }
    file
}

fn one<T: DeserializeOwned>(file: &mut ParsedFile, value: Spanned<DeValue<'_>>) -> Option<T> {
    let span = value.span();
    let id = id_of(value.get_ref());
    match T::deserialize(value.into_deserializer()) {
        Ok(v) => Some(v),
        Err(e) => {
            file.diagnostics
                .push(serde_diagnostic(&file.source, &e, span));
            if let Some(id) = id {
                file.broken_ids.insert(id);
            }
            None
        }
    }
}

fn many<T: DeserializeOwned>(
    file: &mut ParsedFile,
    key: &str,
    value: Spanned<DeValue<'_>>,
) -> Vec<T> {
    let span = value.span();
    match value.into_inner() {
        DeValue::Array(mut items) => {
            let mut out = Vec::with_capacity(items.len());
            for slot in items.iter_mut() {
                // Taken out rather than cloned: large policies hold many entries.
                let item = std::mem::replace(slot, Spanned::new(0..0, DeValue::Boolean(false)));
                if let Some(v) = one(file, item) {
                    out.push(v);
                }
            }
            out
        }
        _ => {
            let message = format!("`{key}` must be an array of tables");
            file.diagnostics.push(
                Diagnostic::at(&file.source, span, message)
                    .with_hint(format!("write each entry under its own `[[{key}]]` header")),
            );
            Vec::new()
        }
    }
}

fn id_of(value: &DeValue<'_>) -> Option<String> {
    match value {
        DeValue::Table(t) => t
            .iter()
            .find(|(k, _)| k.get_ref().as_ref() == "id")
            .and_then(|(_, v)| v.get_ref().as_str().map(str::to_owned)),
        _ => None,
    }
}

fn serde_diagnostic(
    source: &Source,
    e: &toml::de::Error,
    fallback: std::ops::Range<usize>,
) -> Diagnostic {
    let message = e.message().trim_end().to_owned();
    let hint = if message.starts_with("unknown field") {
        "remove the field or correct its spelling"
    } else if message.starts_with("missing field") {
        "add the field to this entry"
    } else {
        "check the value's type against the policy format in README.md"
    };
    Diagnostic::at(source, e.span().unwrap_or(fallback), message).with_hint(hint)
}

macro_rules! targets {
    ($($t:ty),*) => {$(
        impl $t {
            /// The prohibitions and instruments it names.
            pub fn targets(&self) -> RawTargets {
                RawTargets {
                    prohibitions: self.prohibitions.clone(),
                    instruments: self.instruments.clone(),
                }
            }
        }
    )*};
}
targets!(RawDelay, RawRelief, RawRevocation, RawExemption);
