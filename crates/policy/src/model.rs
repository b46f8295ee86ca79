//! Stage two's output: the validated model. Every reference here is resolved and
//! every instant is absolute; nothing in it can be malformed.

use serde::Serialize;

use crate::action::ActionSet;
use crate::country::{Country, CountrySet};
use crate::instant::Instant;

/// Index of an instrument in [`crate::Policy::instruments`].
pub type InstrumentIdx = u32;
/// Index of a prohibition in [`crate::Policy::prohibitions`].
pub type ProhibitionIdx = u32;
/// Index of an app in [`crate::Policy::apps`].
pub type AppIdx = u32;
/// Index of a region in [`crate::Policy::regions`].
pub type RegionIdx = u32;
/// Index of an entity in [`crate::Policy::entities`].
pub type EntityIdx = u32;

/// What sort of legal instrument.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstrumentKind {
    ExecutiveOrder,
    Identification,
    Amendment,
    CourtOrder,
    NonEnforcementOrder,
    Revocation,
    Statute,
}

impl InstrumentKind {
    /// Every kind, in declaration order.
    pub const ALL: [InstrumentKind; 7] = [
        InstrumentKind::ExecutiveOrder,
        InstrumentKind::Identification,
        InstrumentKind::Amendment,
        InstrumentKind::CourtOrder,
        InstrumentKind::NonEnforcementOrder,
        InstrumentKind::Revocation,
        InstrumentKind::Statute,
    ];

    /// The spelling used in policy files.
    pub fn as_str(self) -> &'static str {
        match self {
            InstrumentKind::ExecutiveOrder => "executive-order",
            InstrumentKind::Identification => "identification",
            InstrumentKind::Amendment => "amendment",
            InstrumentKind::CourtOrder => "court-order",
            InstrumentKind::NonEnforcementOrder => "non-enforcement-order",
            InstrumentKind::Revocation => "revocation",
            InstrumentKind::Statute => "statute",
        }
    }

    /// A phrase for explanations.
    pub fn describe(self) -> &'static str {
        match self {
            InstrumentKind::ExecutiveOrder => "executive order",
            InstrumentKind::Identification => "identification of prohibited transactions",
            InstrumentKind::Amendment => "amendment",
            InstrumentKind::CourtOrder => "court order",
            InstrumentKind::NonEnforcementOrder => "non-enforcement order",
            InstrumentKind::Revocation => "revocation",
            InstrumentKind::Statute => "statute",
        }
    }
}

/// A legal instrument: an order, identification, statute, court order, ...
#[derive(Clone, Debug)]
pub struct Instrument {
    pub id: String,
    pub kind: InstrumentKind,
    pub title: String,
    pub authority: String,
    /// Instruments this one was made under (an identification under an executive order).
    pub pursuant_to: Vec<InstrumentIdx>,
    pub citation: String,
    pub source: String,
    /// When it was issued: from then on a store could know it.
    pub issued: Instant,
    pub notes: Vec<String>,
    /// The file that defines it.
    pub file: String,
}

/// A named set of countries.
#[derive(Clone, Debug)]
pub struct Region {
    pub id: String,
    pub name: String,
    pub countries: Vec<Country>,
    pub set: CountrySet,
    pub notes: Vec<String>,
}

/// An owner of apps.
#[derive(Clone, Debug)]
pub struct Entity {
    pub id: String,
    pub name: String,
    pub parent: Option<EntityIdx>,
    pub notes: Vec<String>,
}

/// A covered app.
#[derive(Clone, Debug)]
pub struct App {
    pub id: String,
    pub name: String,
    pub owner: EntityIdx,
    pub ios: Vec<String>,
    pub android: Vec<String>,
    pub apple_team_ids: Vec<String>,
    /// Lower-case hex, no separators.
    pub signing_cert_sha256: Vec<String>,
    /// Lower-case hex, no separators.
    pub code_sha256: Vec<String>,
    pub notes: Vec<String>,
}

/// A prohibition made by an instrument.
#[derive(Clone, Debug)]
pub struct Prohibition {
    pub id: String,
    /// The item number in the instrument, when it numbers them.
    pub item: Option<String>,
    pub instrument: InstrumentIdx,
    /// Apps named directly.
    pub apps: Vec<AppIdx>,
    /// Owners named, covering their apps and their subsidiaries' apps.
    pub owners: Vec<EntityIdx>,
    /// Every app covered, sorted.
    pub covered: Vec<AppIdx>,
    pub actions: ActionSet,
    pub region: RegionIdx,
    /// As the instrument wrote it; delays may move it.
    pub effective: Instant,
    pub end: Option<Instant>,
    /// The instrument's wording.
    pub text: String,
    pub notes: Vec<String>,
}

/// What a later instrument does to prohibitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    /// Moves the effective instant.
    Delay { effective: Instant },
    /// No force during `[from, until)`; open-ended without `until`.
    Suspension {
        from: Instant,
        until: Option<Instant>,
    },
    /// No force from `from` on, for good.
    Revocation { from: Instant },
}

/// A change made by an instrument to prohibitions.
#[derive(Clone, Debug)]
pub struct Change {
    pub instrument: InstrumentIdx,
    pub kind: ChangeKind,
    /// The prohibitions it applies to, sorted.
    pub targets: Vec<ProhibitionIdx>,
    pub text: Option<String>,
    pub notes: Vec<String>,
}
