//! Stage one: TOML text to raw, unvalidated items, each keeping its source spans.
//!
//! Every array-of-tables entry is deserialized on its own, so that one broken entry
//! is reported without hiding the problems of the others.

use std::collections::HashSet;

use serde::Deserialize;
use serde::de::{DeserializeOwned, IntoDeserializer};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::diagnostic::{Diagnostic, Source, nearest, typo_distance};

/// A string with the place it was written.
pub type S = Spanned<String>;

/// `[instrument]`: the legal instrument a file encodes. Prohibitions and changes in the
/// same file belong to it.
#[derive(Deserialize, Debug, Clone)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawInstrument {
    /// The instrument's id, unique across the loaded sets (`commerce-tiktok-identification`).
    #[cfg_attr(feature = "schema", schemars(with = "String"))]
    pub id: S,
    /// What the instrument is.
    #[cfg_attr(feature = "schema", schemars(with = "crate::schema::Kind"))]
    pub kind: S,
    /// Its title, as published.
    pub title: String,
    /// Who made it (`Secretary of Commerce`, `United States District Court ...`).
    pub authority: String,
    /// Ids of the instruments it was made under (an identification under its executive
    /// order): decisions cite the chain.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(with = "Vec<String>"))]
    pub pursuant_to: Vec<S>,
    /// Where it is published (`85 FR 60061`), or how to find it.
    pub citation: String,
    /// A URL of the text.
    #[cfg_attr(feature = "schema", schemars(with = "String"))]
    pub source: S,
    /// From when a store could know of it: decisions judged before then do not apply it.
    #[cfg_attr(feature = "schema", schemars(with = "crate::schema::Instant"))]
    pub issued: Spanned<toml::Value>,
    /// Uncertain facts and sources, in words.
    #[serde(default)]
    pub notes: Vec<String>,
}

/// `[[region]]`: a named set of countries.
#[derive(Deserialize, Debug, Clone)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawRegion {
    /// The region's id, which prohibitions name (`US`).
    #[cfg_attr(feature = "schema", schemars(with = "String"))]
    pub id: S,
    /// What it is, in words.
    pub name: String,
    /// ISO 3166-1 alpha-2 or alpha-3 codes (`US`, `PRI`).
    #[cfg_attr(feature = "schema", schemars(with = "Vec<String>"))]
    pub countries: Spanned<Vec<S>>,
    /// Remarks, in words.
    #[serde(default)]
    pub notes: Vec<String>,
}

/// `[[entity]]`: an owner of apps, optionally a subsidiary of another.
#[derive(Deserialize, Debug, Clone)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawEntity {
    /// The entity's id, which apps and prohibitions name (`bytedance`).
    #[cfg_attr(feature = "schema", schemars(with = "String"))]
    pub id: S,
    /// Its legal name.
    pub name: String,
    /// The id of its parent: prohibitions naming the parent cover its subsidiaries' apps.
    #[cfg_attr(feature = "schema", schemars(with = "Option<String>"))]
    pub parent: Option<S>,
    /// Store accounts it publishes from: apps published from them are this owner's,
    /// listed or not.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(with = "Vec<RawAccount>"))]
    pub publisher_accounts: Vec<Spanned<RawAccount>>,
    /// Remarks, in words.
    #[serde(default)]
    pub notes: Vec<String>,
}

/// `{ store = "apple", id = "ABCDE12345" }`: a store account an entity publishes from.
#[derive(Deserialize, Debug, Clone)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawAccount {
    /// The store.
    #[cfg_attr(feature = "schema", schemars(with = "crate::schema::Store"))]
    pub store: S,
    /// The Apple team id (ten letters and digits) or the Google Play developer account id
    /// (digits).
    #[cfg_attr(feature = "schema", schemars(with = "String"))]
    pub id: S,
}

/// `[[app]]`: a covered app and everything that identifies it.
#[derive(Deserialize, Debug, Clone)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawApp {
    /// The app's id, which prohibitions name (`tiktok`).
    #[cfg_attr(feature = "schema", schemars(with = "String"))]
    pub id: S,
    /// Its name in the stores.
    pub name: String,
    /// The id of the entity that owns it.
    #[cfg_attr(feature = "schema", schemars(with = "String"))]
    pub owner: S,
    /// iOS bundle ids (`com.zhiliaoapp.musically`).
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(with = "Vec<String>"))]
    pub ios: Vec<S>,
    /// Android package names (`com.zhiliaoapp.musically`).
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(with = "Vec<String>"))]
    pub android: Vec<S>,
    /// Apple team ids that sign it.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(with = "Vec<String>"))]
    pub apple_team_ids: Vec<S>,
    /// SHA-256 fingerprints of its signing certificates: 64 hex digits, colon pairs
    /// allowed.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(with = "Vec<String>"))]
    pub signing_cert_sha256: Vec<S>,
    /// SHA-256 digests of its constituent code: an app shipping this code is matched.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(with = "Vec<String>"))]
    pub code_sha256: Vec<S>,
    /// Remarks, in words.
    #[serde(default)]
    pub notes: Vec<String>,
}

/// `[[prohibition]]`: what the file's instrument prohibits, from when, where.
#[derive(Deserialize, Debug, Clone)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawProhibition {
    /// The prohibition's id, which changes name (`tiktok-app-store`).
    #[cfg_attr(feature = "schema", schemars(with = "String"))]
    pub id: S,
    /// The item number in the instrument's own list (`"1"`).
    pub item: Option<String>,
    /// Ids of the apps it covers.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(with = "Vec<String>"))]
    pub apps: Vec<S>,
    /// Ids of the entities whose apps it covers, their subsidiaries' included.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(with = "Vec<String>"))]
    pub owners: Vec<S>,
    /// What it prohibits.
    #[cfg_attr(feature = "schema", schemars(with = "Vec<crate::schema::Action>"))]
    pub actions: Spanned<Vec<S>>,
    /// The id of the region it applies in.
    #[cfg_attr(feature = "schema", schemars(with = "String"))]
    pub region: S,
    /// Groups of signal names, each of which must place the request in the region (by
    /// default any signal does).
    #[cfg_attr(
        feature = "schema",
        schemars(with = "Option<Vec<Vec<crate::schema::Signal>>>")
    )]
    pub jurisdiction: Option<Spanned<Vec<Spanned<Vec<S>>>>>,
    /// When it takes effect.
    #[cfg_attr(feature = "schema", schemars(with = "crate::schema::Instant"))]
    pub effective: Spanned<toml::Value>,
    /// When it lapses, if it does.
    #[cfg_attr(feature = "schema", schemars(with = "Option<crate::schema::Instant>"))]
    pub end: Option<Spanned<toml::Value>>,
    /// Its wording, quoted from the instrument.
    pub text: String,
    /// Remarks, in words.
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

/// `[[delay]]`: moves the effective instant of prohibitions; the latest issued delay wins.
#[derive(Deserialize, Debug, Clone)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawDelay {
    /// Ids of the prohibitions it delays.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(with = "Vec<String>"))]
    pub prohibitions: Vec<S>,
    /// Ids of instruments: it delays every prohibition made by (or under) them.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(with = "Vec<String>"))]
    pub instruments: Vec<S>,
    /// The new effective instant.
    #[cfg_attr(feature = "schema", schemars(with = "crate::schema::Instant"))]
    pub effective: Spanned<toml::Value>,
    /// Its wording, quoted from the instrument.
    pub text: Option<String>,
    /// Remarks, in words.
    #[serde(default)]
    pub notes: Vec<String>,
}

/// `[[injunction]]` and `[[non-enforcement]]`: prohibitions without force during
/// `[from, until)`.
#[derive(Deserialize, Debug, Clone)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawRelief {
    /// Ids of the prohibitions it relieves.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(with = "Vec<String>"))]
    pub prohibitions: Vec<S>,
    /// Ids of instruments: it relieves every prohibition made by (or under) them.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(with = "Vec<String>"))]
    pub instruments: Vec<S>,
    /// When the relief starts.
    #[cfg_attr(feature = "schema", schemars(with = "crate::schema::Instant"))]
    pub from: Spanned<toml::Value>,
    /// When it ends; without it, it holds until another instrument says otherwise.
    #[cfg_attr(feature = "schema", schemars(with = "Option<crate::schema::Instant>"))]
    pub until: Option<Spanned<toml::Value>>,
    /// Its wording, quoted from the instrument.
    pub text: Option<String>,
    /// Remarks, in words.
    #[serde(default)]
    pub notes: Vec<String>,
}

/// `[[exemption]]`: prohibitions cease to apply to named apps from an instant (a
/// divestiture).
#[derive(Deserialize, Debug, Clone)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawExemption {
    /// Ids of the apps exempted.
    #[cfg_attr(feature = "schema", schemars(with = "Vec<String>"))]
    pub apps: Spanned<Vec<S>>,
    /// Ids of the prohibitions that cease to apply to them.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(with = "Vec<String>"))]
    pub prohibitions: Vec<S>,
    /// Ids of instruments: every prohibition made by (or under) them ceases to apply.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(with = "Vec<String>"))]
    pub instruments: Vec<S>,
    /// From when.
    #[cfg_attr(feature = "schema", schemars(with = "crate::schema::Instant"))]
    pub from: Spanned<toml::Value>,
    /// Its wording, quoted from the instrument.
    pub text: Option<String>,
    /// Remarks, in words.
    #[serde(default)]
    pub notes: Vec<String>,
}

/// `[[revocation]]`: ends prohibitions for good from an instant.
#[derive(Deserialize, Debug, Clone)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawRevocation {
    /// Ids of the prohibitions it ends.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(with = "Vec<String>"))]
    pub prohibitions: Vec<S>,
    /// Ids of instruments: it ends every prohibition made by (or under) them.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(with = "Vec<String>"))]
    pub instruments: Vec<S>,
    /// From when.
    #[cfg_attr(feature = "schema", schemars(with = "crate::schema::Instant"))]
    pub from: Spanned<toml::Value>,
    /// Its wording, quoted from the instrument.
    pub text: Option<String>,
    /// Remarks, in words.
    #[serde(default)]
    pub notes: Vec<String>,
}

/// The keys a policy file may hold. `parse_file` reads each of them (a unit test checks
/// that it knows every one), and [`RawPolicyFile`] describes them for the schema.
pub(crate) const TOP_LEVEL_KEYS: [&str; 11] = [
    "include",
    "instrument",
    "region",
    "entity",
    "app",
    "prohibition",
    "delay",
    "injunction",
    "non-enforcement",
    "revocation",
    "exemption",
];

/// A policy file, for the schema only (the parser reads the keys one by one, so that a
/// broken entry hides nothing else): every key is optional, any other is an error.
#[cfg(feature = "schema")]
#[derive(schemars::JsonSchema)]
#[allow(dead_code)] // Never built: only its schema is used.
#[serde(deny_unknown_fields)]
#[schemars(title = "Gatekeeper policy file")]
pub(crate) struct RawPolicyFile {
    /// Files or folders this one needs, relative to it (`["../common"]`).
    #[serde(default)]
    include: Vec<String>,
    /// The legal instrument this file encodes (at most one per file).
    instrument: Option<RawInstrument>,
    /// Named sets of countries.
    #[serde(default)]
    region: Vec<RawRegion>,
    /// Owners of apps.
    #[serde(default)]
    entity: Vec<RawEntity>,
    /// Covered apps and what identifies them.
    #[serde(default)]
    app: Vec<RawApp>,
    /// What the file's instrument prohibits.
    #[serde(default)]
    prohibition: Vec<RawProhibition>,
    /// Moves the effective instant of prohibitions; the latest issued delay wins.
    #[serde(default)]
    delay: Vec<RawDelay>,
    /// A court order: the prohibitions have no force during `[from, until)`.
    #[serde(default)]
    injunction: Vec<RawRelief>,
    /// An executive non-enforcement order (the law stays in force; an operator may set it
    /// aside), or an operator's own assurance letter.
    #[serde(default, rename = "non-enforcement")]
    non_enforcement: Vec<RawRelief>,
    /// Ends prohibitions for good.
    #[serde(default)]
    revocation: Vec<RawRevocation>,
    /// The prohibitions cease to apply to named apps (a divestiture).
    #[serde(default)]
    exemption: Vec<RawExemption>,
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
                        .with_hint(format!("a policy file may hold {}", top_level_keys())),
                );
            }
        }
    }
    file
}

/// `` `include`, `instrument`, ... ``: the keys a file may hold, for hints.
fn top_level_keys() -> String {
    TOP_LEVEL_KEYS.map(|k| format!("`{k}`")).join(", ")
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
        match misspelt_field(&message) {
            Some(field) => format!("did you mean `{field}`?"),
            None => "remove the field or correct its spelling".to_owned(),
        }
    } else if message.starts_with("missing field") {
        "add the field to this entry".to_owned()
    } else {
        "check the value's type against the policy format in README.md".to_owned()
    };
    Diagnostic::at(source, e.span().unwrap_or(fallback), message).with_hint(hint)
}

/// The expected field nearest to the unknown one in serde's message
/// (``unknown field `andriod`, expected one of `id`, `name`, ...``), if one is near enough.
fn misspelt_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    let (field, expected) = rest.split_once("`, expected ")?;
    // The expected names are every other piece between backticks.
    let names = expected.split('`').skip(1).step_by(2);
    nearest(field, names, typo_distance).into_iter().min()
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Guards the list the schema is built beside: the parser reads every key of it, and
    /// reports any other.
    #[test]
    fn the_parser_reads_every_top_level_key() {
        for key in TOP_LEVEL_KEYS {
            let file = parse_file(Source::new("t.toml", format!("{key} = []\n")));
            let unknown: Vec<&str> = file
                .diagnostics
                .iter()
                .map(|d| d.message.as_str())
                .filter(|m| m.starts_with("unknown key"))
                .collect();
            assert!(unknown.is_empty(), "`{key}`: {unknown:?}");
        }
        let file = parse_file(Source::new("t.toml", "regions = []\n"));
        assert_eq!(file.diagnostics[0].message, "unknown key `regions`");
        assert!(
            file.diagnostics[0]
                .hint
                .as_deref()
                .unwrap()
                .ends_with("`revocation`, `exemption`")
        );
    }

    /// The schema's file type describes exactly the keys the parser reads.
    #[cfg(feature = "schema")]
    #[test]
    fn the_schema_describes_exactly_the_top_level_keys() {
        let schema = crate::schema::schema();
        let mut described: Vec<&str> = schema["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut read = TOP_LEVEL_KEYS.to_vec();
        described.sort_unstable();
        read.sort_unstable();
        assert_eq!(described, read);
        assert_eq!(schema["additionalProperties"], false);
    }
}
