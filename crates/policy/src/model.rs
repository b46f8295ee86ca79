//! Stage two's output: the validated model. Every reference here is resolved and
//! every instant is absolute; nothing in it can be malformed.

use serde::{Deserialize, Serialize};

use crate::action::ActionSet;
use crate::country::{Country, CountrySet};
use crate::instant::Instant;
use crate::request::{SignalSet, Store};

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
/// Index of a change in [`crate::Policy::changes`].
pub type ChangeIdx = u32;

/// An instant as a policy file gives it: exact, or a window between the earliest and
/// the latest reading of an instrument whose words leave the instant open.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Moment {
    pub earliest: Instant,
    /// Equal to `earliest` for an exact instant.
    pub latest: Instant,
    /// Why the instant is open (windows only).
    pub note: Option<String>,
}

impl Moment {
    /// An exact instant.
    pub fn exact(at: Instant) -> Moment {
        Moment {
            earliest: at,
            latest: at,
            note: None,
        }
    }

    /// Whether the policy leaves the instant open.
    pub fn is_window(&self) -> bool {
        self.earliest != self.latest
    }
}

/// What sort of legal instrument.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstrumentKind {
    ExecutiveOrder,
    Identification,
    Amendment,
    CourtOrder,
    NonEnforcementOrder,
    Revocation,
    Statute,
    /// A divestiture (or similar event) that takes apps out of a prohibition's reach.
    Divestiture,
    /// A letter addressed to a store assuring it of non-enforcement (an operator's own).
    AssuranceLetter,
}

impl InstrumentKind {
    /// Every kind, in declaration order.
    pub const ALL: [InstrumentKind; 9] = [
        InstrumentKind::ExecutiveOrder,
        InstrumentKind::Identification,
        InstrumentKind::Amendment,
        InstrumentKind::CourtOrder,
        InstrumentKind::NonEnforcementOrder,
        InstrumentKind::Revocation,
        InstrumentKind::Statute,
        InstrumentKind::Divestiture,
        InstrumentKind::AssuranceLetter,
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
            InstrumentKind::Divestiture => "divestiture",
            InstrumentKind::AssuranceLetter => "assurance-letter",
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
            InstrumentKind::Divestiture => "divestiture",
            InstrumentKind::AssuranceLetter => "assurance letter",
        }
    }
}

/// A legal instrument: an order, identification, statute, court order, ...
#[derive(Clone, Debug, Serialize, Deserialize)]
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
    pub issued: Moment,
    pub notes: Vec<String>,
    /// The file that defines it.
    pub file: String,
}

/// A named set of countries.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Region {
    pub id: String,
    pub name: String,
    pub countries: Vec<Country>,
    pub set: CountrySet,
    pub notes: Vec<String>,
}

/// An owner of apps.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Entity {
    pub id: String,
    pub name: String,
    pub parent: Option<EntityIdx>,
    /// The store accounts it publishes apps from.
    pub publisher_accounts: Vec<PublisherAccount>,
    pub notes: Vec<String>,
}

/// A developer account in a store.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct PublisherAccount {
    pub store: Store,
    /// Normal form (Apple team ids upper case).
    pub id: String,
}

/// A covered app.
#[derive(Clone, Debug, Serialize, Deserialize)]
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
#[derive(Clone, Debug, Serialize, Deserialize)]
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
    /// The groups of signals that must each place the request in the region (a group
    /// the request carries no signal of is assumed to); one group of every signal when
    /// the file gives none.
    pub jurisdiction: Vec<SignalSet>,
    /// As the instrument wrote it; delays may move it.
    pub effective: Moment,
    pub end: Option<Moment>,
    /// The instrument's wording.
    pub text: String,
    pub notes: Vec<String>,
}

/// Which kind of relief a window of no force is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Relief {
    /// A court order: enforcement is barred by law.
    Injunction,
    /// An executive non-enforcement order: the law stays in force, enforcement is deferred.
    NonEnforcement,
}

/// What a later instrument does to prohibitions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangeKind {
    /// Moves the effective instant; the latest issued delay wins.
    Delay { effective: Moment },
    /// No force during `[from, until)`; open-ended without `until`.
    Relief {
        relief: Relief,
        from: Moment,
        until: Option<Moment>,
    },
    /// No force from `from` on, for good.
    Revocation { from: Moment },
    /// The prohibitions cease to apply to these apps from `from` on (a qualified divestiture).
    Exemption { apps: Vec<AppIdx>, from: Moment },
}

/// A change made by an instrument to prohibitions.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Change {
    pub instrument: InstrumentIdx,
    pub kind: ChangeKind,
    /// The prohibitions it applies to, sorted.
    pub targets: Vec<ProhibitionIdx>,
    pub text: Option<String>,
    pub notes: Vec<String>,
}
