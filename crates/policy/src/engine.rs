//! Stage three: the compiled index and the decision function.
//!
//! For every app and action the covering prohibitions are known at compile time, so
//! the whole answer over time is precomputed, from the rules in [`crate::law`], as a
//! time line per posture and per combination of the jurisdiction tests involved. A
//! decision is then a hash lookup of the app, a test per jurisdiction, and a binary
//! search of the time line. Requests judged in hindsight (`known_at`) are judged by
//! the same rules at the points that matter, without the precomputed lines.
//!
//! What a decision reads is laid out for a catalogue too large for the cache, whose
//! requests come in no particular order: one bucket of the identifier table
//! ([`IdTable`]), keys inline, gives the app, its owner and its coverage; the coverage's
//! entry for the action has a small [`Lane`] (its tests and where its time lines start);
//! a test holds its region's countries; a time line is a range of one array of
//! segments, shared by every entry with the same answers; and what the default path
//! needs of a judgement (whether it denies, the prohibition it reports) is in a small
//! table beside the judgements. Only the bucket is likely to be far away: the rest is
//! small, and shared by the apps of a coverage.

use rustc_hash::FxHashMap as HashMap;
use std::borrow::Cow;

use serde::{Deserialize, Serialize};

mod ids;
mod image;

pub use image::{ImageError, image_build};

use crate::action::Action;
use crate::country::{Country, CountrySet};
use crate::instant::Instant;
use crate::law::{self, AllowReason, Coverage, Judgement, Outcome, Posture, Uncertain};
use crate::model::*;
use crate::request::{Platform, Request, Signal, SignalSet, Store};
use crate::validate::{Model, descends_from};
use ids::{IdTable, Kind, Target};

/// Above this many distinct jurisdiction tests for one app and action, the time lines
/// for every combination would be too many, and the entry is decided by scanning.
const MAX_INDEXED_TESTS: usize = 6;

/// Marks a target as an entity known by a publisher account, not an app.
const ENTITY: u32 = 1 << 31;

/// No time lines (an entry decided by scanning), or no prohibition to report.
const NONE: u32 = u32::MAX;

/// A time line: its segments' starts, `Index::starts[start..start + len]` (the first is
/// [`Instant::MIN`]), and judgements, `Index::judged[start..start + len]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Line {
    start: u32,
    len: u32,
}

/// A jurisdiction test: a region and the groups of signals that must each be in it,
/// with what a decision reads of them at hand (the region's countries, the groups in
/// `Index::groups`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Test {
    region: RegionIdx,
    set: CountrySet,
    /// `Index::groups[groups.0..groups.1]`.
    groups: (u32, u32),
}

/// What the default path reads of an entry, in one place.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct Lane {
    /// The entry's distinct jurisdiction tests (in `Index::tests`), the first
    /// `tests_len`; bit `i` of a mask stands for `tests[i]`.
    tests: [u32; MAX_INDEXED_TESTS],
    tests_len: u8,
    /// The first of the entry's time lines in `Index::lines`, one per posture and mask
    /// (`posture.index() << tests_len | mask`); [`NONE`] when there are too many tests.
    lines: u32,
}

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    /// Prohibitions covering the app, whatever the action.
    covering: Vec<ProhibitionIdx>,
    /// Those that prohibit the action.
    with_action: Vec<ProhibitionIdx>,
    /// An app the entry stands for (the exemptions that name it name every app sharing
    /// the entry); `None` for apps known by publisher account.
    app: Option<AppIdx>,
    /// The distinct jurisdiction tests of `with_action`, in `Index::tests`.
    tests: Vec<u32>,
    /// For each of `with_action`, its test's position in `tests`.
    test_of: Vec<u8>,
    /// Every instant at which the answer may change, sorted.
    instants: Vec<Instant>,
    /// The instants at which what is known changes (every edge of every issue window of
    /// the entry's instruments): epoch `i` is judged with what was issued by
    /// `epochs[i - 1]` (epoch 0: nothing).
    epochs: Vec<Instant>,
    /// For judgements in hindsight, the first of the time lines of each epoch in
    /// `Index::lines`: `(epoch * 4 + posture.index()) << tests.len() | mask` from it;
    /// [`NONE`] when there are too many tests.
    hindsight: u32,
}

/// What the default path needs of a judgement.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct Brief {
    deny: bool,
    /// The prohibition whose jurisdiction test the decision reports (see [`brief`]), or
    /// [`NONE`].
    reports: ProhibitionIdx,
    /// Its test in `Index::tests`.
    test: u32,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    /// Every identifier and publisher account; app ids match whatever their letter case.
    ids: IdTable,
    /// Per coverage, the entry for each action.
    coverages: Vec<[u32; 7]>,
    entries: Vec<Entry>,
    /// Per entry, its lane.
    lanes: Vec<Lane>,
    /// The distinct jurisdiction tests.
    tests: Vec<Test>,
    /// Their groups of signals.
    groups: Vec<SignalSet>,
    /// Per prohibition, its test in `tests`.
    prohibition_tests: Vec<u32>,
    lines: Vec<Line>,
    /// The segments of every distinct time line: where each starts, and its judgement
    /// (apart, so that a binary search reads starts only).
    starts: Vec<Instant>,
    judged: Vec<u32>,
    judgements: Vec<Judgement>,
    /// Per judgement, what the default path needs of it.
    briefs: Vec<Brief>,
    changes_of: Vec<Vec<ChangeIdx>>,
}

/// A compiled policy set: validated, indexed, ready to decide.
#[derive(Debug)]
pub struct Policy {
    pub(crate) model: Model,
    index: Index,
}

/// How the request's app was recognised.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MatchedBy {
    /// Its iOS bundle id.
    IosBundleId,
    /// Its Android package name.
    AndroidPackage,
    /// Its signing certificate's SHA-256 fingerprint.
    SigningCert,
    /// A digest of the covered app's constituent code it carries.
    CodeSha256,
    /// The store account it is published from belongs to a covered owner.
    PublisherAccount,
}

impl MatchedBy {
    /// A phrase for explanations.
    pub fn describe(self) -> &'static str {
        match self {
            MatchedBy::IosBundleId => "iOS bundle id",
            MatchedBy::AndroidPackage => "Android package name",
            MatchedBy::SigningCert => "signing certificate",
            MatchedBy::CodeSha256 => "constituent-code digest",
            MatchedBy::PublisherAccount => "publisher account",
        }
    }

    /// The spelling in decisions.
    pub fn as_str(self) -> &'static str {
        match self {
            MatchedBy::IosBundleId => "ios-bundle-id",
            MatchedBy::AndroidPackage => "android-package",
            MatchedBy::SigningCert => "signing-cert",
            MatchedBy::CodeSha256 => "code-sha256",
            MatchedBy::PublisherAccount => "publisher-account",
        }
    }
}

/// The covered app a request was recognised as.
#[derive(Clone, Copy, Debug)]
pub struct Matched<'p> {
    /// The listed app; `None` for an unlisted app matched by its publisher account.
    pub app: Option<&'p App>,
    /// The app's owner, or the entity whose account publishes it.
    pub owner: &'p Entity,
    pub by: MatchedBy,
    /// The request's identifier differs from the policy's only in letter case.
    pub case_insensitive: bool,
}

/// Which region a request fell in, and the signal that placed it there.
#[derive(Clone, Debug)]
pub struct Jurisdiction<'p> {
    pub region: &'p Region,
    /// The first signal that placed it; `None` when every group was assumed.
    pub signal: Option<(Signal, Country)>,
    /// The prohibition's groups of signals.
    pub groups: &'p [SignalSet],
    /// Bit `i`: the request carried no signal of `groups[i]`, which was assumed to be in
    /// the region (fail closed).
    pub assumed: u8,
}

impl Jurisdiction<'_> {
    /// The groups assumed to be in the region.
    pub fn assumed(&self) -> impl Iterator<Item = SignalSet> + '_ {
        self.groups
            .iter()
            .enumerate()
            .filter(|(i, _)| self.assumed & (1 << i) != 0)
            .map(|(_, g)| *g)
    }
}

/// Deny or allow, with the reason.
#[derive(Clone, Debug)]
pub enum Verdict<'p> {
    /// Prohibited by these prohibitions, in force at the instant.
    Deny {
        prohibitions: Cow<'p, [ProhibitionIdx]>,
        /// Non-enforcement orders in effect that the operator's posture set aside.
        set_aside: Cow<'p, [InstrumentIdx]>,
    },
    /// Allowed, for this reason.
    Allow {
        because: AllowReason,
        /// The instrument behind `revoked`, `exempt`, `lapsed`, `enjoined`, `not-enforced`.
        by: Option<InstrumentIdx>,
        /// When the covering prohibition takes effect, for `not-yet-in-force`.
        in_force_from: Option<Instant>,
    },
}

/// The decision for a request.
#[derive(Clone, Debug)]
pub struct Decision<'p> {
    pub policy: &'p Policy,
    pub verdict: Verdict<'p>,
    pub matched: Option<Matched<'p>>,
    pub jurisdiction: Option<Jurisdiction<'p>>,
    /// Where the two readings of the policy's windows give another answer.
    pub uncertain: Option<Uncertain>,
    /// The next instant at which the answer for the same request could change; `None`
    /// if never.
    pub valid_until: Option<Instant>,
    /// The instant judged.
    pub at: Instant,
    /// The instruments issued by this instant were taken into account.
    pub known_at: Instant,
    pub posture: Posture,
}

impl Decision<'_> {
    /// Whether the request is denied.
    pub fn is_deny(&self) -> bool {
        matches!(self.verdict, Verdict::Deny { .. })
    }
}

/// A judgement in the index, or one computed for this request alone.
#[derive(Clone, Debug, PartialEq, Eq)]
enum JudgementRef {
    Interned(u32),
    Owned(Box<Judgement>),
    NotCovered,
}

static NOT_COVERED: Judgement = Judgement {
    outcome: Outcome::NOT_COVERED,
    uncertain: None,
};

/// Where a request was placed: the test's region and prohibition, the placing signal,
/// and the assumed groups (a bit per group of the prohibition's test).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Placement {
    region: RegionIdx,
    prohibition: ProhibitionIdx,
    signal: Option<(Signal, Country)>,
    assumed: u8,
}

/// A decision as indices into the policy that made it: owned, `'static`, and cheap to
/// keep next to an `Arc` of the policy. [`Policy::view`] turns it into a [`Decision`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecisionParts {
    judgement: JudgementRef,
    deny: bool,
    /// The app (or entity, with [`ENTITY`]), its owner, how, and whether in another
    /// letter case.
    matched: Option<(u32, u32, MatchedBy, bool)>,
    placement: Option<Placement>,
    /// See [`Decision::valid_until`].
    pub valid_until: Option<Instant>,
    /// The instant judged.
    pub at: Instant,
    /// The instruments issued by this instant were taken into account.
    pub known_at: Instant,
    pub posture: Posture,
}

impl DecisionParts {
    /// Whether the request is denied.
    pub fn is_deny(&self) -> bool {
        self.deny
    }
}

struct Judged {
    judgement: JudgementRef,
    deny: bool,
    target: u32,
    owner: EntityIdx,
    /// The target's coverage, for combining several matched apps.
    coverage: u32,
    matched_by: MatchedBy,
    case_insensitive: bool,
    placement: Option<Placement>,
    valid_until: Option<Instant>,
}

/// A passed jurisdiction test: the first placing signal, and a bit per assumed group.
type Placed = (Option<(Signal, Country)>, u8);

/// Whether a request passes a jurisdiction test: `None` when a group it carries signals
/// of has none in the region; otherwise the first placing signal and the assumed groups.
fn place(set: &CountrySet, groups: &[SignalSet], request: &Request) -> Option<Placed> {
    let mut first = None;
    let mut assumed = 0u8;
    for (gi, group) in groups.iter().enumerate() {
        let mut carried = false;
        let mut hit = None;
        for s in group.iter() {
            if let Some(c) = request.signal(s) {
                carried = true;
                if set.contains(c) {
                    hit = Some((s, c));
                    break;
                }
            }
        }
        match (carried, hit) {
            (false, _) => assumed |= 1 << gi,
            (true, None) => return None,
            (true, Some(h)) => {
                first.get_or_insert(h);
            }
        }
    }
    Some((first, assumed))
}

impl Policy {
    pub(crate) fn compile(model: Model) -> Policy {
        let index = build_index(&model);
        Policy { model, index }
    }

    /// The instruments, in load order.
    pub fn instruments(&self) -> &[Instrument] {
        &self.model.instruments
    }
    /// The regions.
    pub fn regions(&self) -> &[Region] {
        &self.model.regions
    }
    /// The owners of apps.
    pub fn entities(&self) -> &[Entity] {
        &self.model.entities
    }
    /// The covered apps.
    pub fn apps(&self) -> &[App] {
        &self.model.apps
    }
    /// The prohibitions.
    pub fn prohibitions(&self) -> &[Prohibition] {
        &self.model.prohibitions
    }
    /// The changes made by later instruments.
    pub fn changes(&self) -> &[Change] {
        &self.model.changes
    }
    /// An instrument by index.
    pub fn instrument(&self, i: InstrumentIdx) -> &Instrument {
        &self.model.instruments[i as usize]
    }
    /// A prohibition by index.
    pub fn prohibition(&self, i: ProhibitionIdx) -> &Prohibition {
        &self.model.prohibitions[i as usize]
    }
    /// A region by index.
    pub fn region(&self, i: RegionIdx) -> &Region {
        &self.model.regions[i as usize]
    }
    /// A prohibition's effective instant with the delays issued by `known_at`, under a
    /// reading of windows.
    pub fn effective_instant(
        &self,
        p: ProhibitionIdx,
        known_at: Instant,
        posture: Posture,
    ) -> Instant {
        law::effective(
            &self.model,
            &self.index.changes_of[p as usize],
            p,
            known_at,
            posture.boundaries,
        )
    }
    /// The chain of instruments a prohibition was made under, its own first.
    pub fn authority(&self, p: ProhibitionIdx) -> Vec<InstrumentIdx> {
        law::authority(&self.model, p)
    }

    fn judgement<'a>(&'a self, j: &'a JudgementRef) -> &'a Judgement {
        match j {
            JudgementRef::Interned(i) => &self.index.judgements[*i as usize],
            JudgementRef::Owned(o) => o,
            JudgementRef::NotCovered => &NOT_COVERED,
        }
    }

    /// Decides a request under a posture.
    #[inline]
    pub fn decide(&self, request: &Request, posture: Posture) -> Decision<'_> {
        self.view(self.decide_parts(request, posture))
    }

    /// Decides a request, as indices into this policy: what a caller keeps next to an
    /// `Arc` of the policy. On the usual path (one covered app, no `known_at`) it does
    /// not allocate.
    pub fn decide_parts(&self, request: &Request, posture: Posture) -> DecisionParts {
        self.decide_with(request, posture, false)
    }

    /// Decides without the precomputed time lines, from the rules at every instant that
    /// matters: the slow path the index is checked against.
    #[doc(hidden)]
    pub fn decide_scanning(&self, request: &Request, posture: Posture) -> Decision<'_> {
        self.view(self.decide_with(request, posture, true))
    }

    fn decide_with(&self, request: &Request, posture: Posture, scan: bool) -> DecisionParts {
        let known_at = request.known_at.unwrap_or(request.at);
        let ids = &self.index.ids;
        // The apps the request names, each once, in the order of its identifiers.
        let mut first: Option<(Target, MatchedBy, bool)> = None;
        let mut more: Vec<(Target, MatchedBy, bool)> = Vec::new();
        let mut matched = |found: Target, by: MatchedBy, case_insensitive: bool| {
            let seen = first
                .iter()
                .chain(more.iter())
                .any(|(f, ..)| f.target == found.target);
            if !seen {
                if first.is_none() {
                    first = Some((found, by, case_insensitive));
                } else {
                    more.push((found, by, case_insensitive));
                }
            }
        };
        let by_app = request.app.as_ref().and_then(|app| {
            let (kind, by) = match app.platform {
                Platform::Ios => (Kind::Ios, MatchedBy::IosBundleId),
                Platform::Android => (Kind::Android, MatchedBy::AndroidPackage),
            };
            ids.get(kind, &app.id)
                .map(|(found, case)| (found, by, case))
        });
        let by_cert = request
            .signing_cert_sha256
            .as_ref()
            .and_then(|c| ids.get(Kind::SigningCert, c))
            .map(|(found, _)| found);
        let by_code = |c: &String| ids.get(Kind::CodeSha256, c).map(|(found, _)| found);
        // An app no identifier names may still be published from a covered owner's
        // account; a listed app is judged as listed, whoever publishes it.
        let by_publisher = if by_app.is_none()
            && by_cert.is_none()
            && !request.code_sha256.iter().any(|c| by_code(c).is_some())
        {
            request
                .publisher
                .as_ref()
                .and_then(|p| ids.get(account_kind(p.store), &p.id))
                .map(|(found, _)| found)
        } else {
            None
        };
        if let Some((found, by, case)) = by_app {
            matched(found, by, case);
        }
        if let Some(found) = by_cert {
            matched(found, MatchedBy::SigningCert, false);
        }
        for code in &request.code_sha256 {
            if let Some(found) = by_code(code) {
                matched(found, MatchedBy::CodeSha256, false);
            }
        }
        if let Some(found) = by_publisher {
            matched(found, MatchedBy::PublisherAccount, false);
        }
        let Some((found, by, case)) = first else {
            return DecisionParts {
                judgement: JudgementRef::NotCovered,
                deny: false,
                matched: None,
                placement: None,
                valid_until: None,
                at: request.at,
                known_at,
                posture,
            };
        };
        let judged = if more.is_empty() {
            self.judge(found, by, case, request, posture, scan)
        } else {
            let all = std::iter::once((found, by, case))
                .chain(more)
                .map(|(found, by, case)| self.judge(found, by, case, request, posture, scan))
                .collect();
            self.combine(all, request, posture)
        };
        DecisionParts {
            deny: judged.deny,
            judgement: judged.judgement,
            matched: Some((
                judged.target,
                judged.owner,
                judged.matched_by,
                judged.case_insensitive,
            )),
            placement: judged.placement,
            valid_until: judged.valid_until,
            at: request.at,
            known_at,
            posture,
        }
    }

    /// Turns decision parts made by this policy into a [`Decision`] that names the
    /// apps, regions and instruments. Parts from another policy give nonsense or panic.
    #[inline]
    pub fn view(&self, parts: DecisionParts) -> Decision<'_> {
        let uncertain = self.judgement(&parts.judgement).uncertain;
        let verdict = match parts.judgement {
            JudgementRef::Owned(j) => match j.outcome {
                Outcome::Deny {
                    prohibitions,
                    set_aside,
                } => Verdict::Deny {
                    prohibitions: Cow::Owned(prohibitions),
                    set_aside: Cow::Owned(set_aside),
                },
                allow => allow_verdict(&allow),
            },
            JudgementRef::Interned(i) => match &self.index.judgements[i as usize].outcome {
                Outcome::Deny {
                    prohibitions,
                    set_aside,
                } => Verdict::Deny {
                    prohibitions: Cow::Borrowed(prohibitions),
                    set_aside: Cow::Borrowed(set_aside),
                },
                allow => allow_verdict(allow),
            },
            JudgementRef::NotCovered => allow_verdict(&Outcome::NOT_COVERED),
        };
        let model = &self.model;
        Decision {
            policy: self,
            verdict,
            matched: parts.matched.map(|(target, owner, by, case_insensitive)| {
                // The owner comes with the match: the app itself is not read.
                let app = (target & ENTITY == 0).then(|| &model.apps[target as usize]);
                Matched {
                    app,
                    owner: &model.entities[owner as usize],
                    by,
                    case_insensitive,
                }
            }),
            jurisdiction: parts.placement.map(|p| Jurisdiction {
                region: &model.regions[p.region as usize],
                signal: p.signal,
                groups: &model.prohibitions[p.prohibition as usize].jurisdiction,
                assumed: p.assumed,
            }),
            uncertain,
            valid_until: parts.valid_until,
            at: parts.at,
            known_at: parts.known_at,
            posture: parts.posture,
        }
    }

    /// Several covered apps in one request (an app carrying another's code): deny when
    /// any denies, naming every denying prohibition; otherwise the most final reason.
    /// The combined answer is judged over time on its own, so that `valid_until` and
    /// `uncertain` speak of it, not of one of the apps.
    fn combine(&self, all: Vec<Judged>, request: &Request, posture: Posture) -> Judged {
        let model = &self.model;
        let action = request.action.index();
        let entries: Vec<(&Entry, Vec<bool>)> = all
            .iter()
            .map(|j| {
                let entry =
                    &self.index.entries[self.index.coverages[j.coverage as usize][action] as usize];
                let passes = entry
                    .tests
                    .iter()
                    .map(|&t| self.place(t, request).is_some())
                    .collect();
                (entry, passes)
            })
            .collect();
        let mut points: Vec<Instant> = entries
            .iter()
            .flat_map(|(e, _)| e.instants.iter().copied())
            .collect();
        points.sort_unstable();
        points.dedup();
        let outcomes_at = |t: Instant, posture: Posture| -> Vec<Outcome> {
            let k = request.known_at.unwrap_or(t);
            entries
                .iter()
                .map(|(entry, passes)| {
                    let in_jurisdiction = |p: ProhibitionIdx| {
                        entry
                            .with_action
                            .iter()
                            .position(|x| *x == p)
                            .is_some_and(|i| passes[entry.test_of[i] as usize])
                    };
                    let coverage = Coverage {
                        covering: &entry.covering,
                        with_action: &entry.with_action,
                        changes_of: &self.index.changes_of,
                        app: entry.app,
                    };
                    law::outcome(model, &coverage, &in_jurisdiction, t, k, posture)
                })
                .collect()
        };
        let combined =
            |t: Instant, posture: Posture| law::combine(outcomes_at(t, posture).into_iter());
        let segments = law::segments(&points, &mut |t| {
            (
                combined(t, posture).0,
                combined(t, posture.other_reading()).0,
            )
        });
        let i = segments
            .partition_point(|(s, _)| *s <= request.at)
            .saturating_sub(1);
        // The app the answer names, and the jurisdiction test its own outcome reports.
        let named = |t: Instant| {
            let outcomes = outcomes_at(t, posture);
            let (_, pick) = law::combine(outcomes.iter().cloned());
            let reported = match &outcomes[pick] {
                Outcome::Deny { prohibitions, .. } => prohibitions.first().copied(),
                Outcome::Allow { judged, .. } => *judged,
            }
            .map(|p| {
                let pr = &model.prohibitions[p as usize];
                (pr.region, pr.jurisdiction.clone())
            });
            (pick, reported)
        };
        let now = named(request.at);
        let pick = now.0;
        // The answer also changes where another app, or another of its jurisdiction
        // tests, comes to be the one it names.
        let next_pick = points
            .iter()
            .copied()
            .filter(|p| *p > request.at)
            .find(|p| named(*p) != now);
        let valid_until = match (segments.get(i + 1).map(|(s, _)| *s), next_pick) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let chosen = &all[pick];
        let judgement = segments[i].1.clone();
        Judged {
            deny: judgement.outcome.is_deny(),
            judgement: JudgementRef::Owned(Box::new(judgement)),
            target: chosen.target,
            owner: chosen.owner,
            coverage: chosen.coverage,
            matched_by: chosen.matched_by,
            case_insensitive: chosen.case_insensitive,
            placement: chosen.placement,
            valid_until,
        }
    }

    /// Whether a request passes one of the index's jurisdiction tests.
    #[inline]
    fn place(&self, test: u32, request: &Request) -> Option<Placed> {
        let t = &self.index.tests[test as usize];
        let groups = &self.index.groups[t.groups.0 as usize..t.groups.1 as usize];
        place(&t.set, groups, request)
    }

    #[inline]
    fn judge(
        &self,
        found: Target,
        matched_by: MatchedBy,
        case_insensitive: bool,
        request: &Request,
        posture: Posture,
        scan: bool,
    ) -> Judged {
        let e = self.index.coverages[found.coverage as usize][request.action.index()] as usize;
        let lane = &self.index.lanes[e];
        let (judgement, brief, valid_until, placements) = if !scan && lane.lines != NONE {
            // Each test once: whether the request passes it, the placing signal, the
            // assumed groups; bit `i` of the mask: the request passes `tests[i]`.
            let tests = &lane.tests[..usize::from(lane.tests_len)];
            let mut placed = [None; MAX_INDEXED_TESTS];
            let mut mask = 0usize;
            for (bit, (p, &t)) in placed.iter_mut().zip(tests).enumerate() {
                *p = self.place(t, request);
                mask |= usize::from(p.is_some()) << bit;
            }
            let line = match request.known_at {
                None => lane.lines as usize + (posture.index() << tests.len() | mask),
                // In hindsight: the time line of what was known at `known_at`.
                Some(k) => {
                    let entry = &self.index.entries[e];
                    let epoch = entry.epochs.partition_point(|e| *e <= k);
                    entry.hindsight as usize
                        + ((epoch * Posture::ALL.len() + posture.index()) << tests.len() | mask)
                }
            };
            let Line { start, len } = self.index.lines[line];
            let (start, len) = (start as usize, len as usize);
            let starts = &self.index.starts[start..start + len];
            let i = starts
                .partition_point(|s| *s <= request.at)
                .saturating_sub(1);
            let j = self.index.judged[start + i];
            (
                JudgementRef::Interned(j),
                self.index.briefs[j as usize],
                starts.get(i + 1).copied(),
                placed,
            )
        } else {
            let entry = &self.index.entries[e];
            let placements: Vec<_> = entry
                .tests
                .iter()
                .map(|&t| self.place(t, request))
                .collect();
            let in_jurisdiction = |p: ProhibitionIdx| {
                entry
                    .with_action
                    .iter()
                    .position(|x| *x == p)
                    .is_some_and(|i| placements[entry.test_of[i] as usize].is_some())
            };
            let mut segments = self.segments(entry, &in_jurisdiction, posture, request.known_at);
            let i = segments
                .partition_point(|(s, _)| *s <= request.at)
                .saturating_sub(1);
            let valid_until = segments.get(i + 1).map(|(s, _)| *s);
            let judgement = segments.swap_remove(i).1;
            let brief = brief(&judgement.outcome, &self.index.prohibition_tests);
            // Too many tests for the lanes: the placement is read from the entry's.
            let placement = self.placement(&entry.tests, &placements, brief);
            return Judged {
                judgement: JudgementRef::Owned(Box::new(judgement)),
                deny: brief.deny,
                target: found.target,
                owner: found.owner,
                coverage: found.coverage,
                matched_by,
                case_insensitive,
                placement,
                valid_until,
            };
        };
        debug_assert!(
            brief.reports == NONE || self.index.entries[e].with_action.contains(&brief.reports),
            "a judgement reports a prohibition of the entry's"
        );
        let tests = &lane.tests[..usize::from(lane.tests_len)];
        Judged {
            judgement,
            deny: brief.deny,
            target: found.target,
            owner: found.owner,
            coverage: found.coverage,
            matched_by,
            case_insensitive,
            placement: self.placement(tests, &placements, brief),
            valid_until,
        }
    }

    /// Where the request was placed by the test of the prohibition a judgement reports
    /// (the first denying one, or the first judged when the covering prohibitions are
    /// not in force), given whether it passes each of the entry's tests.
    #[inline]
    fn placement(
        &self,
        tests: &[u32],
        placements: &[Option<Placed>],
        brief: Brief,
    ) -> Option<Placement> {
        if brief.reports == NONE {
            return None;
        }
        let at = tests.iter().position(|t| *t == brief.test)?;
        placements[at].map(|(signal, assumed)| Placement {
            region: self.index.tests[brief.test as usize].region,
            prohibition: brief.reports,
            signal,
            assumed,
        })
    }

    /// The answer over time for an entry, under a posture, with the instruments issued
    /// by `known_at` (or, without it, by each instant judged).
    fn segments(
        &self,
        entry: &Entry,
        in_jurisdiction: &dyn Fn(ProhibitionIdx) -> bool,
        posture: Posture,
        known_at: Option<Instant>,
    ) -> Vec<(Instant, Judgement)> {
        segments_of(
            &self.model,
            &self.index.changes_of,
            entry,
            in_jurisdiction,
            posture,
            known_at,
        )
    }
}

fn segments_of(
    model: &Model,
    changes_of: &[Vec<ChangeIdx>],
    entry: &Entry,
    in_jurisdiction: &dyn Fn(ProhibitionIdx) -> bool,
    posture: Posture,
    known_at: Option<Instant>,
) -> Vec<(Instant, Judgement)> {
    let coverage = Coverage {
        covering: &entry.covering,
        with_action: &entry.with_action,
        changes_of,
        app: entry.app,
    };
    let other = posture.other_reading();
    law::segments(&entry.instants, &mut |t| {
        let k = known_at.unwrap_or(t);
        (
            law::outcome(model, &coverage, in_jurisdiction, t, k, posture),
            law::outcome(model, &coverage, in_jurisdiction, t, k, other),
        )
    })
}

/// What the default path needs of an outcome: whether it denies, and the prohibition
/// whose jurisdiction test the decision reports: the first denying one, or the first
/// judged when the covering prohibitions are not in force. Both come from the entry's
/// `with_action` (see `law::outcome`).
fn brief(outcome: &Outcome, prohibition_tests: &[u32]) -> Brief {
    let (deny, reports) = match outcome {
        Outcome::Deny { prohibitions, .. } => (true, prohibitions.first().copied()),
        Outcome::Allow { judged, .. } => (false, *judged),
    };
    Brief {
        deny,
        reports: reports.unwrap_or(NONE),
        test: reports.map_or(NONE, |p| prohibition_tests[p as usize]),
    }
}

/// The verdict of an allowing outcome (callers take denies first).
fn allow_verdict(outcome: &Outcome) -> Verdict<'static> {
    match *outcome {
        Outcome::Allow {
            because,
            by,
            in_force_from,
            ..
        } => Verdict::Allow {
            because,
            by,
            in_force_from,
        },
        Outcome::Deny { .. } => Verdict::Deny {
            prohibitions: Cow::Owned(Vec::new()),
            set_aside: Cow::Owned(Vec::new()),
        },
    }
}

fn build_index(model: &Model) -> Index {
    let mut index = Index {
        changes_of: vec![Vec::new(); model.prohibitions.len()],
        ..Index::default()
    };
    for (ci, c) in model.changes.iter().enumerate() {
        for &p in &c.targets {
            index.changes_of[p as usize].push(ci as ChangeIdx);
        }
    }
    // The distinct jurisdiction tests, and each prohibition's.
    let mut test_ids: HashMap<(RegionIdx, &[SignalSet]), u32> = HashMap::default();
    index.prohibition_tests = model
        .prohibitions
        .iter()
        .map(|p| {
            let next = index.tests.len() as u32;
            *test_ids
                .entry((p.region, &p.jurisdiction))
                .or_insert_with(|| {
                    let from = index.groups.len() as u32;
                    index.groups.extend_from_slice(&p.jurisdiction);
                    index.tests.push(Test {
                        region: p.region,
                        set: model.regions[p.region as usize].set,
                        groups: (from, index.groups.len() as u32),
                    });
                    next
                })
        })
        .collect();
    let mut app_covering: Vec<Vec<ProhibitionIdx>> = vec![Vec::new(); model.apps.len()];
    for (pi, p) in model.prohibitions.iter().enumerate() {
        for &a in &p.covered {
            app_covering[a as usize].push(pi as ProhibitionIdx);
        }
    }
    let mut builder = Builder {
        model,
        index: &mut index,
        by_key: HashMap::default(),
        entry_ids: HashMap::default(),
        judgement_ids: HashMap::default(),
        line_ids: HashMap::default(),
    };
    let app_coverage: Vec<u32> = app_covering
        .into_iter()
        .enumerate()
        .map(|(a, covering)| builder.coverage(covering, Some(a as AppIdx)))
        .collect();
    // An unlisted app published from an entity's account: the prohibitions naming the
    // entity or one of its ancestors.
    let entity_coverage: Vec<u32> = (0..model.entities.len())
        .map(|e| {
            let covering = model
                .prohibitions
                .iter()
                .enumerate()
                .filter(|(_, p)| {
                    p.owners
                        .iter()
                        .any(|&o| descends_from(&model.entities, e as EntityIdx, o))
                })
                .map(|(pi, _)| pi as ProhibitionIdx)
                .collect();
            builder.coverage(covering, None)
        })
        .collect();
    let mut judgements: Vec<(u32, Judgement)> =
        builder.judgement_ids.drain().map(|(j, i)| (i, j)).collect();
    judgements.sort_by_key(|(i, _)| *i);
    index.judgements = judgements.into_iter().map(|(_, j)| j).collect();
    index.briefs = index
        .judgements
        .iter()
        .map(|j| brief(&j.outcome, &index.prohibition_tests))
        .collect();
    // The table sized for every identifier at once.
    let apps = model.apps.iter().flat_map(|a| {
        [
            (Kind::Ios, &a.ios),
            (Kind::Android, &a.android),
            (Kind::SigningCert, &a.signing_cert_sha256),
            (Kind::CodeSha256, &a.code_sha256),
        ]
        .into_iter()
        .flat_map(|(kind, ids)| ids.iter().map(move |id| (kind, id.as_str())))
    });
    let accounts = model.entities.iter().flat_map(|e| {
        e.publisher_accounts
            .iter()
            .map(|a| (account_kind(a.store), a.id.as_str()))
    });
    let (keys, bytes) = apps
        .chain(accounts)
        .fold((0, 0), |(keys, bytes), (kind, id)| {
            (keys + 1, bytes + IdTable::key_bytes(kind, id))
        });
    index.ids = IdTable::with_capacity(keys, bytes);
    for (ai, app) in model.apps.iter().enumerate() {
        let found = Target {
            target: ai as u32,
            coverage: app_coverage[ai],
            owner: app.owner,
        };
        for (kind, ids) in [
            (Kind::Ios, &app.ios),
            (Kind::Android, &app.android),
            (Kind::SigningCert, &app.signing_cert_sha256),
            (Kind::CodeSha256, &app.code_sha256),
        ] {
            for id in ids {
                index.ids.insert(kind, id, found);
            }
        }
    }
    for (ei, entity) in model.entities.iter().enumerate() {
        let found = Target {
            target: ENTITY | ei as u32,
            coverage: entity_coverage[ei],
            owner: ei as u32,
        };
        for account in &entity.publisher_accounts {
            index
                .ids
                .insert(account_kind(account.store), &account.id, found);
        }
    }
    index
}

fn account_kind(store: Store) -> Kind {
    match store {
        Store::Apple => Kind::AppleAccount,
        Store::Google => Kind::GoogleAccount,
    }
}

/// Covering prohibitions, those with the action, exemptions naming the app.
type EntryKey = (Vec<ProhibitionIdx>, Vec<ProhibitionIdx>, Vec<ChangeIdx>);

struct Builder<'a> {
    model: &'a Model,
    index: &'a mut Index,
    /// Apps with the same covering prohibitions and exemptions share their entries.
    by_key: HashMap<(Vec<ProhibitionIdx>, Vec<ChangeIdx>), u32>,
    entry_ids: HashMap<EntryKey, u32>,
    judgement_ids: HashMap<Judgement, u32>,
    /// Time lines with the same segments share them.
    line_ids: HashMap<Vec<(Instant, u32)>, Line>,
}

impl Builder<'_> {
    /// The coverage (an entry per action) of an app, or of an entity's unlisted apps.
    fn coverage(&mut self, covering: Vec<ProhibitionIdx>, app: Option<AppIdx>) -> u32 {
        let model = self.model;
        // The exemptions that name this app and reach one of its prohibitions.
        let exempting: Vec<ChangeIdx> = match app {
            None => Vec::new(),
            Some(a) => model
                .changes
                .iter()
                .enumerate()
                .filter(|(_, c)| match &c.kind {
                    ChangeKind::Exemption { apps, .. } => {
                        apps.contains(&a) && c.targets.iter().any(|p| covering.contains(p))
                    }
                    _ => false,
                })
                .map(|(ci, _)| ci as ChangeIdx)
                .collect(),
        };
        let key = (covering, exempting);
        if let Some(&c) = self.by_key.get(&key) {
            return c;
        }
        let mut per_action = [0u32; 7];
        for action in Action::ALL {
            let with_action: Vec<ProhibitionIdx> = key
                .0
                .iter()
                .copied()
                .filter(|&p| model.prohibitions[p as usize].actions.contains(action))
                .collect();
            let entry_key = (key.0.clone(), with_action, key.1.clone());
            per_action[action.index()] = match self.entry_ids.get(&entry_key) {
                Some(&id) => id,
                None => {
                    let id = self.index.entries.len() as u32;
                    let (entry, lane) = self.entry(entry_key.0.clone(), entry_key.1.clone(), app);
                    self.index.entries.push(entry);
                    self.index.lanes.push(lane);
                    self.entry_ids.insert(entry_key, id);
                    id
                }
            };
        }
        let c = self.index.coverages.len() as u32;
        self.index.coverages.push(per_action);
        self.by_key.insert(key, c);
        c
    }

    fn entry(
        &mut self,
        covering: Vec<ProhibitionIdx>,
        with_action: Vec<ProhibitionIdx>,
        app: Option<AppIdx>,
    ) -> (Entry, Lane) {
        let model = self.model;
        let mut tests: Vec<u32> = Vec::new();
        let mut test_of = Vec::with_capacity(with_action.len());
        for &p in &with_action {
            let t = self.index.prohibition_tests[p as usize];
            let i = match tests.iter().position(|x| *x == t) {
                Some(i) => i,
                None => {
                    tests.push(t);
                    tests.len() - 1
                }
            };
            test_of.push(i as u8);
        }
        let coverage = Coverage {
            covering: &covering,
            with_action: &with_action,
            changes_of: &self.index.changes_of,
            app,
        };
        let instants = law::instants(model, &coverage);
        let epochs = law::issue_instants(model, &coverage);
        let mut entry = Entry {
            covering,
            with_action,
            app,
            tests,
            test_of,
            instants,
            epochs,
            hindsight: NONE,
        };
        let mut lane = Lane {
            tests: [0; MAX_INDEXED_TESTS],
            tests_len: 0,
            lines: NONE,
        };
        if entry.tests.len() > MAX_INDEXED_TESTS {
            return (entry, lane);
        }
        lane.tests[..entry.tests.len()].copy_from_slice(&entry.tests);
        lane.tests_len = entry.tests.len() as u8;
        let masks = 1usize << entry.tests.len();
        lane.lines = self.index.lines.len() as u32;
        for posture in Posture::ALL {
            for mask in 0..masks {
                let line = self.timeline(&entry, posture, mask, None);
                self.index.lines.push(line);
            }
        }
        entry.hindsight = self.index.lines.len() as u32;
        let knowledge = std::iter::once(Instant::MIN).chain(entry.epochs.iter().copied());
        for k in knowledge {
            for posture in Posture::ALL {
                for mask in 0..masks {
                    let line = self.timeline(&entry, posture, mask, Some(k));
                    self.index.lines.push(line);
                }
            }
        }
        (entry, lane)
    }

    /// The time line of an entry for a posture and a mask of passed tests, judged with
    /// what was issued by each instant (`known_at: None`) or by `known_at`.
    fn timeline(
        &mut self,
        entry: &Entry,
        posture: Posture,
        mask: usize,
        known_at: Option<Instant>,
    ) -> Line {
        let in_jurisdiction = |p: ProhibitionIdx| {
            entry
                .with_action
                .iter()
                .position(|x| *x == p)
                .is_some_and(|i| mask & (1 << entry.test_of[i]) != 0)
        };
        let segments = segments_of(
            self.model,
            &self.index.changes_of,
            entry,
            &in_jurisdiction,
            posture,
            known_at,
        );
        let segments: Vec<(Instant, u32)> = segments
            .into_iter()
            .map(|(start, judgement)| {
                let next = self.judgement_ids.len() as u32;
                (start, *self.judgement_ids.entry(judgement).or_insert(next))
            })
            .collect();
        if let Some(&line) = self.line_ids.get(&segments) {
            return line;
        }
        let line = Line {
            start: self.index.starts.len() as u32,
            len: segments.len() as u32,
        };
        self.index.starts.extend(segments.iter().map(|(s, _)| *s));
        self.index.judged.extend(segments.iter().map(|(_, j)| *j));
        self.line_ids.insert(segments, line);
        line
    }
}
