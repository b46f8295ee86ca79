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

/// A covered app. Its texts (id, name, and its lists of identifiers and notes) are kept
/// together in one string, each list a run of it, rather than each in an allocation of
/// its own: two allocations an app instead of ten, and at 100,000 apps less than half the
/// memory. Read them through its methods.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "AppParts", into = "AppParts")]
pub struct App {
    pub owner: EntityIdx,
    /// Every text, one after another: the id, the name, then each list's items in order.
    text: Box<str>,
    /// Where each text ends in `text`.
    ends: Box<[u32]>,
    /// How many items each list has, in the order of [`AppList`].
    counts: [u16; AppList::ALL.len()],
}

/// An app's lists of texts.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum AppList {
    Ios,
    Android,
    AppleTeamIds,
    SigningCertSha256,
    CodeSha256,
    Notes,
}

impl AppList {
    pub const ALL: [AppList; 6] = [
        AppList::Ios,
        AppList::Android,
        AppList::AppleTeamIds,
        AppList::SigningCertSha256,
        AppList::CodeSha256,
        AppList::Notes,
    ];

    /// The list's items, in words.
    pub fn describe(self) -> &'static str {
        match self {
            AppList::Ios => "iOS bundle ids",
            AppList::Android => "Android packages",
            AppList::AppleTeamIds => "Apple team ids",
            AppList::SigningCertSha256 => "signing certificates",
            AppList::CodeSha256 => "constituent-code digests",
            AppList::Notes => "notes",
        }
    }
}

/// The lists of a new [`App`]'s texts.
#[derive(Clone, Default, Debug)]
pub struct AppLists {
    pub ios: Vec<String>,
    pub android: Vec<String>,
    pub apple_team_ids: Vec<String>,
    /// Lower-case hex, no separators.
    pub signing_cert_sha256: Vec<String>,
    /// Lower-case hex, no separators.
    pub code_sha256: Vec<String>,
    pub notes: Vec<String>,
}

impl AppLists {
    fn all(&self) -> [&[String]; AppList::ALL.len()] {
        [
            &self.ios,
            &self.android,
            &self.apple_team_ids,
            &self.signing_cert_sha256,
            &self.code_sha256,
            &self.notes,
        ]
    }
}

/// The most items an app's list may have.
pub const MAX_APP_LIST: usize = u16::MAX as usize;

/// Why texts cannot be an app's: a list of more than [`MAX_APP_LIST`] items, or more
/// than 4 GiB of text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AppTooLarge {
    #[error("it lists {items} {list}; an app lists at most {MAX_APP_LIST} of each")]
    List { list: &'static str, items: usize },
    #[error("its texts take more than 4 GiB")]
    Text,
}

impl Default for App {
    /// An app of no texts (an empty id and name), owned by entity 0.
    fn default() -> App {
        App {
            owner: 0,
            text: Box::from(""),
            ends: Box::new([0, 0]),
            counts: [0; AppList::ALL.len()],
        }
    }
}

impl App {
    /// An app of these texts.
    pub fn new(
        id: &str,
        name: &str,
        owner: EntityIdx,
        lists: &AppLists,
    ) -> Result<App, AppTooLarge> {
        let lists = lists.all();
        let mut counts = [0u16; AppList::ALL.len()];
        for ((count, list), kind) in counts.iter_mut().zip(lists).zip(AppList::ALL) {
            *count = u16::try_from(list.len()).map_err(|_| AppTooLarge::List {
                list: kind.describe(),
                items: list.len(),
            })?;
        }
        let texts = [id, name]
            .into_iter()
            .chain(lists.iter().flat_map(|l| l.iter().map(String::as_str)));
        let mut text = String::with_capacity(texts.clone().map(str::len).sum());
        let mut ends = Vec::with_capacity(2 + lists.iter().map(|l| l.len()).sum::<usize>());
        for t in texts {
            text.push_str(t);
            ends.push(u32::try_from(text.len()).map_err(|_| AppTooLarge::Text)?);
        }
        Ok(App {
            owner,
            text: text.into_boxed_str(),
            ends: ends.into_boxed_slice(),
            counts,
        })
    }

    /// Text `i` (0: the id, 1: the name, then the lists' items).
    fn text(&self, i: usize) -> &str {
        let start = match i {
            0 => 0,
            _ => self.ends[i - 1] as usize,
        };
        &self.text[start..self.ends[i] as usize]
    }

    /// The app's id, which prohibitions name.
    pub fn id(&self) -> &str {
        self.text(0)
    }

    /// Its name in the stores.
    pub fn name(&self) -> &str {
        self.text(1)
    }

    /// The items of one of its lists.
    pub fn list(&self, list: AppList) -> Texts<'_> {
        let at = list as usize;
        let first = 2 + self.counts[..at].iter().map(|&c| c as usize).sum::<usize>();
        Texts {
            app: self,
            next: first,
            end: first + self.counts[at] as usize,
        }
    }

    /// iOS bundle ids.
    pub fn ios(&self) -> Texts<'_> {
        self.list(AppList::Ios)
    }

    /// Android package names.
    pub fn android(&self) -> Texts<'_> {
        self.list(AppList::Android)
    }

    /// Apple developer team ids.
    pub fn apple_team_ids(&self) -> Texts<'_> {
        self.list(AppList::AppleTeamIds)
    }

    /// Signing certificates' SHA-256 fingerprints, lower-case hex, no separators.
    pub fn signing_cert_sha256(&self) -> Texts<'_> {
        self.list(AppList::SigningCertSha256)
    }

    /// Constituent-code digests, lower-case hex, no separators.
    pub fn code_sha256(&self) -> Texts<'_> {
        self.list(AppList::CodeSha256)
    }

    /// The policy's notes on it.
    pub fn notes(&self) -> Texts<'_> {
        self.list(AppList::Notes)
    }

    /// Its texts as lists of their own.
    pub fn lists(&self) -> AppLists {
        let owned = |l| self.list(l).map(str::to_owned).collect();
        AppLists {
            ios: owned(AppList::Ios),
            android: owned(AppList::Android),
            apple_team_ids: owned(AppList::AppleTeamIds),
            signing_cert_sha256: owned(AppList::SigningCertSha256),
            code_sha256: owned(AppList::CodeSha256),
            notes: owned(AppList::Notes),
        }
    }
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("id", &self.id())
            .field("name", &self.name())
            .field("owner", &self.owner)
            .field("lists", &self.lists())
            .finish()
    }
}

/// The items of one of an app's lists, in order.
#[derive(Clone, Debug)]
pub struct Texts<'a> {
    app: &'a App,
    next: usize,
    end: usize,
}

impl<'a> Iterator for Texts<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        (self.next < self.end).then(|| {
            self.next += 1;
            self.app.text(self.next - 1)
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.end - self.next;
        (n, Some(n))
    }
}

impl DoubleEndedIterator for Texts<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        (self.next < self.end).then(|| {
            self.end -= 1;
            self.app.text(self.end)
        })
    }
}

impl ExactSizeIterator for Texts<'_> {}

/// An [`App`] as an image holds it: its parts, checked when read back.
#[derive(Serialize, Deserialize)]
struct AppParts {
    owner: EntityIdx,
    text: Box<str>,
    ends: Box<[u32]>,
    counts: [u16; AppList::ALL.len()],
}

impl From<App> for AppParts {
    fn from(a: App) -> AppParts {
        AppParts {
            owner: a.owner,
            text: a.text,
            ends: a.ends,
            counts: a.counts,
        }
    }
}

impl TryFrom<AppParts> for App {
    type Error = String;

    fn try_from(p: AppParts) -> Result<App, String> {
        let items = p.counts.iter().map(|&c| u64::from(c)).sum::<u64>() + 2;
        if items != p.ends.len() as u64 {
            return Err(format!(
                "an app has {} texts where its lists count {items}",
                p.ends.len()
            ));
        }
        let mut start = 0;
        for &end in &p.ends {
            let end = end as usize;
            if end < start || end > p.text.len() || !p.text.is_char_boundary(end) {
                return Err(format!(
                    "an app's text ends at {end}, not within {start}..={} on a character boundary",
                    p.text.len()
                ));
            }
            start = end;
        }
        if start != p.text.len() {
            return Err(format!(
                "an app's texts end at {start}, before its text's {} bytes",
                p.text.len()
            ));
        }
        Ok(App {
            owner: p.owner,
            text: p.text,
            ends: p.ends,
            counts: p.counts,
        })
    }
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

#[cfg(test)]
mod tests {
    use super::{App, AppList, AppLists, AppParts, AppTooLarge, InstrumentKind};

    #[test]
    fn each_kind_of_instrument_and_of_app_list_is_described_in_words_of_its_own() {
        let kinds: Vec<&str> = InstrumentKind::ALL.iter().map(|k| k.describe()).collect();
        assert_eq!(
            kinds[..2],
            [
                "executive order",
                "identification of prohibited transactions"
            ]
        );
        let lists: Vec<&str> = AppList::ALL.iter().map(|l| l.describe()).collect();
        assert_eq!(lists[0], "iOS bundle ids");
        for words in [kinds, lists] {
            let mut distinct = words.clone();
            distinct.sort_unstable();
            distinct.dedup();
            assert_eq!(distinct.len(), words.len(), "{words:?}");
            assert!(words.iter().all(|w| w.len() > 3), "{words:?}");
        }
    }

    fn strings(s: &[&str]) -> Vec<String> {
        s.iter().map(|&t| t.to_owned()).collect()
    }

    fn sample() -> App {
        let lists = AppLists {
            ios: strings(&["com.x.ios"]),
            android: strings(&["com.x", "com.x.lite", "é.x"]),
            apple_team_ids: Vec::new(),
            signing_cert_sha256: strings(&["ab"]),
            code_sha256: Vec::new(),
            notes: strings(&["", "a note"]),
        };
        App::new("x", "X Ünï", 7, &lists).unwrap()
    }

    #[test]
    fn an_app_gives_back_each_text_of_each_list_in_order() {
        let app = sample();
        assert_eq!((app.id(), app.name(), app.owner), ("x", "X Ünï", 7));
        assert_eq!(app.ios().collect::<Vec<_>>(), ["com.x.ios"]);
        assert_eq!(
            app.android().collect::<Vec<_>>(),
            ["com.x", "com.x.lite", "é.x"]
        );
        assert_eq!(
            app.android().rev().collect::<Vec<_>>(),
            ["é.x", "com.x.lite", "com.x"]
        );
        assert_eq!(app.android().len(), 3);
        assert_eq!(app.apple_team_ids().next(), None);
        assert_eq!(app.signing_cert_sha256().collect::<Vec<_>>(), ["ab"]);
        assert_eq!(app.code_sha256().len(), 0);
        assert_eq!(app.notes().collect::<Vec<_>>(), ["", "a note"]);
        let lists = app.lists();
        assert_eq!(App::new("x", "X Ünï", 7, &lists).unwrap(), app);
        assert_eq!(lists.android, strings(&["com.x", "com.x.lite", "é.x"]));
        let debug = format!("{app:?}");
        assert!(
            debug.contains(r#"android: ["com.x", "com.x.lite", "é.x"]"#),
            "{debug}"
        );
        assert_eq!(App::default().id(), "");
        assert_eq!(App::default().list(AppList::Notes).len(), 0);
    }

    #[test]
    fn a_list_too_long_is_refused_with_its_kind() {
        let lists = AppLists {
            code_sha256: vec![String::new(); 65_536],
            ..AppLists::default()
        };
        assert_eq!(
            App::new("x", "X", 0, &lists),
            Err(AppTooLarge::List {
                list: "constituent-code digests",
                items: 65_536
            })
        );
    }

    #[test]
    fn parts_that_do_not_make_an_app_are_refused() {
        let good = AppParts::from(sample());
        let parts = |f: &dyn Fn(&mut AppParts)| {
            let mut p = AppParts {
                owner: good.owner,
                text: good.text.clone(),
                ends: good.ends.clone(),
                counts: good.counts,
            };
            f(&mut p);
            App::try_from(p)
        };
        assert_eq!(parts(&|_| {}).unwrap(), sample());
        let refused = |f: &dyn Fn(&mut AppParts), says: &str| {
            let e = parts(f).unwrap_err();
            assert!(e.contains(says), "{e}");
        };
        refused(
            &|p| p.counts[0] += 1,
            "an app has 9 texts where its lists count 10",
        );
        refused(&|p| p.ends[1] = p.ends[0] - 1, "not within");
        refused(&|p| p.ends[8] += 1, "not within");
        // In the middle of `Ü` (two bytes from byte 3).
        refused(&|p| p.ends[1] = 4, "character boundary");
        refused(
            &|p| p.text = format!("{}!", p.text).into_boxed_str(),
            "before its text's",
        );
    }
}
