//! Stage three: the compiled index and the decision function.
//!
//! For every app and action the covering prohibitions are known at compile time, so
//! the whole answer over time is precomputed as a time line per combination of the
//! regions involved. A decision is then a hash lookup of the app, a bit test per
//! region, and a binary search of the time line.

use rustc_hash::FxHashMap as HashMap;
use std::borrow::Cow;

use serde::Serialize;

use crate::action::Action;
use crate::country::Country;
use crate::instant::Instant;
use crate::model::*;
use crate::request::{Platform, Request, RequestError, Signal};
use crate::validate::Model;

/// Above this many distinct regions for one app and action, the time lines for every
/// combination would be too many, and the entry is decided by scanning instead.
const MAX_INDEXED_REGIONS: usize = 6;

/// Why an allowed request is allowed, from least to most final.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AllowReason {
    /// No known prohibition covers the app.
    NotCovered,
    /// Prohibitions cover the app, but not this action.
    ActionNotProhibited,
    /// Prohibitions cover the app and action, but no signal is in their regions.
    OutsideJurisdiction,
    /// The covering prohibitions have not taken effect yet.
    NotYetInForce,
    /// A court order or non-enforcement order suspends them.
    Suspended,
    /// They reached their end.
    Lapsed,
    /// They were revoked.
    Revoked,
}

impl AllowReason {
    /// The spelling in decisions.
    pub fn as_str(self) -> &'static str {
        match self {
            AllowReason::NotCovered => "not-covered",
            AllowReason::ActionNotProhibited => "action-not-prohibited",
            AllowReason::OutsideJurisdiction => "outside-jurisdiction",
            AllowReason::NotYetInForce => "not-yet-in-force",
            AllowReason::Suspended => "suspended",
            AllowReason::Lapsed => "lapsed",
            AllowReason::Revoked => "revoked",
        }
    }
}

/// The answer for one app, before it is dressed as a [`Decision`].
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub(crate) enum Outcome {
    Deny(Vec<ProhibitionIdx>),
    Allow {
        because: AllowReason,
        by: Option<InstrumentIdx>,
        in_force_from: Option<Instant>,
    },
}

/// The answer for one prohibition at one instant.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Status {
    InForce,
    NotYet(Instant),
    Suspended(InstrumentIdx),
    Lapsed(InstrumentIdx),
    Revoked(InstrumentIdx),
}

#[derive(Debug)]
struct Timeline {
    /// Segment starts; the first is [`Instant::MIN`].
    starts: Vec<Instant>,
    outcomes: Vec<u32>,
}

#[derive(Debug)]
struct Entry {
    /// Prohibitions covering the app, whatever the action.
    covering: Vec<ProhibitionIdx>,
    /// Those that prohibit the action.
    with_action: Vec<ProhibitionIdx>,
    /// The distinct regions of `with_action`; bit `i` of a mask stands for `regions[i]`.
    regions: Vec<RegionIdx>,
    /// Every instant at which the answer may change, sorted.
    instants: Vec<Instant>,
    /// One time line per region mask (judged with the instruments known at each instant),
    /// or none when there are too many regions.
    timelines: Vec<Timeline>,
}

/// Where an identifier leads: the app, and its coverage (the entry for each action), so
/// that a lookup needs no second table indexed by app.
#[derive(Clone, Copy, Debug)]
struct Slot {
    app: AppIdx,
    coverage: u32,
}

type IdMap = HashMap<String, Slot>;

#[derive(Debug, Default)]
pub(crate) struct Index {
    ios: IdMap,
    android: IdMap,
    certs: IdMap,
    code: IdMap,
    /// Per app, the entry for each action.
    coverages: Vec<[u32; 7]>,
    entries: Vec<Entry>,
    outcomes: Vec<Outcome>,
    changes_of: Vec<Vec<u32>>,
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
}

impl MatchedBy {
    /// A phrase for explanations.
    pub fn describe(self) -> &'static str {
        match self {
            MatchedBy::IosBundleId => "iOS bundle id",
            MatchedBy::AndroidPackage => "Android package name",
            MatchedBy::SigningCert => "signing certificate",
            MatchedBy::CodeSha256 => "constituent-code digest",
        }
    }

    /// The spelling in decisions.
    pub fn as_str(self) -> &'static str {
        match self {
            MatchedBy::IosBundleId => "ios-bundle-id",
            MatchedBy::AndroidPackage => "android-package",
            MatchedBy::SigningCert => "signing-cert",
            MatchedBy::CodeSha256 => "code-sha256",
        }
    }
}

/// Which region a request fell in, and the signal that placed it there.
#[derive(Clone, Copy, Debug)]
pub struct Jurisdiction<'p> {
    pub region: &'p Region,
    pub signal: Signal,
    pub value: Country,
}

/// Deny or allow, with the reason.
#[derive(Clone, Debug)]
pub enum Verdict<'p> {
    /// Prohibited by these prohibitions, in force at the instant.
    Deny {
        prohibitions: Cow<'p, [ProhibitionIdx]>,
    },
    /// Allowed, for this reason.
    Allow {
        because: AllowReason,
        /// The instrument behind `suspended`, `revoked` or `lapsed`.
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
    /// The covered app the request was recognised as, if any.
    pub app: Option<(&'p App, MatchedBy)>,
    pub jurisdiction: Option<Jurisdiction<'p>>,
    /// The next instant at which the answer for the same app, action and signals could
    /// change; `None` if never.
    pub valid_until: Option<Instant>,
    /// The instant judged.
    pub at: Instant,
    /// The instruments issued by this instant were taken into account.
    pub known_at: Instant,
}

impl Decision<'_> {
    /// Whether the request is denied.
    pub fn is_deny(&self) -> bool {
        matches!(self.verdict, Verdict::Deny { .. })
    }
}

/// An outcome in the index, or one computed for this request alone.
#[derive(Clone, Debug, PartialEq, Eq)]
enum OutcomeRef {
    Interned(u32),
    Owned(Box<Outcome>),
    NotCovered,
}

static NOT_COVERED: Outcome = Outcome::Allow {
    because: AllowReason::NotCovered,
    by: None,
    in_force_from: None,
};

/// A decision as indices into the policy that made it: owned, `'static`, and cheap to
/// keep next to an `Arc` of the policy. [`Policy::view`] turns it into a [`Decision`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecisionParts {
    outcome: OutcomeRef,
    deny: bool,
    app: Option<(AppIdx, MatchedBy)>,
    jurisdiction: Option<(RegionIdx, Signal, Country)>,
    /// See [`Decision::valid_until`].
    pub valid_until: Option<Instant>,
    /// The instant judged.
    pub at: Instant,
    /// The instruments issued by this instant were taken into account.
    pub known_at: Instant,
}

impl DecisionParts {
    /// Whether the request is denied.
    pub fn is_deny(&self) -> bool {
        self.deny
    }
}

struct Judged {
    outcome: OutcomeRef,
    app: AppIdx,
    matched_by: MatchedBy,
    jurisdiction: Option<(RegionIdx, Signal, Country)>,
    valid_until: Option<Instant>,
}

impl Policy {
    pub(crate) fn compile(model: Model) -> Policy {
        let mut policy = Policy {
            model,
            index: Index::default(),
        };
        policy.build_index();
        policy
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

    fn build_index(&mut self) {
        let model = &self.model;
        let mut index = Index {
            changes_of: vec![Vec::new(); model.prohibitions.len()],
            ..Index::default()
        };
        for (ci, c) in model.changes.iter().enumerate() {
            for &p in &c.targets {
                index.changes_of[p as usize].push(ci as u32);
            }
        }
        let mut covering: Vec<Vec<ProhibitionIdx>> = vec![Vec::new(); model.apps.len()];
        for (pi, p) in model.prohibitions.iter().enumerate() {
            for &a in &p.covered {
                covering[a as usize].push(pi as ProhibitionIdx);
            }
        }
        let mut entry_ids: HashMap<(Vec<ProhibitionIdx>, Vec<ProhibitionIdx>), u32> =
            HashMap::default();
        let mut outcome_ids: HashMap<Outcome, u32> = HashMap::default();
        // Apps with the same covering prohibitions share their entries: work out each
        // distinct coverage once.
        let mut by_coverage: HashMap<Vec<ProhibitionIdx>, u32> = HashMap::default();
        let mut app_coverage: Vec<u32> = Vec::with_capacity(covering.len());
        for cov in covering {
            if let Some(c) = by_coverage.get(&cov) {
                app_coverage.push(*c);
                continue;
            }
            let mut per_action = [0u32; 7];
            for action in Action::ALL {
                let with_action: Vec<ProhibitionIdx> = cov
                    .iter()
                    .copied()
                    .filter(|&p| model.prohibitions[p as usize].actions.contains(action))
                    .collect();
                let key = (cov.clone(), with_action);
                let id = match entry_ids.get(&key) {
                    Some(id) => *id,
                    None => {
                        let entry =
                            build_entry(model, &index, key.0.clone(), key.1.clone(), &mut |o| {
                                let next = index_len(&outcome_ids);
                                *outcome_ids.entry(o).or_insert(next)
                            });
                        let id = index.entries.len() as u32;
                        index.entries.push(entry);
                        entry_ids.insert(key, id);
                        id
                    }
                };
                per_action[action.index()] = id;
            }
            let c = index.coverages.len() as u32;
            index.coverages.push(per_action);
            app_coverage.push(c);
            by_coverage.insert(cov, c);
        }
        for (ai, app) in model.apps.iter().enumerate() {
            let slot = Slot {
                app: ai as AppIdx,
                coverage: app_coverage[ai],
            };
            for (map, ids) in [
                (&mut index.ios, &app.ios),
                (&mut index.android, &app.android),
                (&mut index.certs, &app.signing_cert_sha256),
                (&mut index.code, &app.code_sha256),
            ] {
                for id in ids {
                    map.insert(id.clone(), slot);
                }
            }
        }
        let mut outcomes: Vec<(u32, Outcome)> =
            outcome_ids.into_iter().map(|(o, i)| (i, o)).collect();
        outcomes.sort_by_key(|(i, _)| *i);
        index.outcomes = outcomes.into_iter().map(|(_, o)| o).collect();
        self.index = index;
    }

    fn outcome_of<'a>(&'a self, outcome: &'a OutcomeRef) -> &'a Outcome {
        match outcome {
            OutcomeRef::Interned(i) => &self.index.outcomes[*i as usize],
            OutcomeRef::Owned(o) => o,
            OutcomeRef::NotCovered => &NOT_COVERED,
        }
    }

    /// Decides a request.
    pub fn decide(&self, request: &Request) -> Result<Decision<'_>, RequestError> {
        self.decide_parts(request).map(|parts| self.view(parts))
    }

    /// Decides a request, as indices into this policy: what a caller keeps next to an
    /// `Arc` of the policy. On the usual path (one covered app, no `known_at`) it does
    /// not allocate.
    pub fn decide_parts(&self, request: &Request) -> Result<DecisionParts, RequestError> {
        if request.signals.iter().all(Option::is_none) {
            return Err(RequestError::NoSignal);
        }
        if request.app.is_none()
            && request.signing_cert_sha256.is_none()
            && request.code_sha256.is_empty()
        {
            return Err(RequestError::NoApp);
        }
        let known_at = request.known_at.unwrap_or(request.at);
        let mut first: Option<Judged> = None;
        let mut more: Vec<Judged> = Vec::new();
        let mut judge = |slot: Slot, by: MatchedBy| {
            let seen = first.iter().chain(more.iter()).any(|j| j.app == slot.app);
            if !seen {
                let j = self.judge(slot, by, request);
                if first.is_none() {
                    first = Some(j);
                } else {
                    more.push(j);
                }
            }
        };
        if let Some(app) = &request.app {
            let (map, by) = match app.platform {
                Platform::Ios => (&self.index.ios, MatchedBy::IosBundleId),
                Platform::Android => (&self.index.android, MatchedBy::AndroidPackage),
            };
            if let Some(&a) = map.get(app.id.as_str()) {
                judge(a, by);
            }
        }
        if let Some(cert) = &request.signing_cert_sha256
            && let Some(&a) = self.index.certs.get(cert.as_str())
        {
            judge(a, MatchedBy::SigningCert);
        }
        for code in &request.code_sha256 {
            if let Some(&a) = self.index.code.get(code.as_str()) {
                judge(a, MatchedBy::CodeSha256);
            }
        }
        let Some(first) = first else {
            return Ok(DecisionParts {
                outcome: OutcomeRef::NotCovered,
                deny: false,
                app: None,
                jurisdiction: None,
                valid_until: None,
                at: request.at,
                known_at,
            });
        };
        let judged = if more.is_empty() {
            first
        } else {
            self.combine(first, more)
        };
        Ok(DecisionParts {
            deny: matches!(self.outcome_of(&judged.outcome), Outcome::Deny(_)),
            outcome: judged.outcome,
            app: Some((judged.app, judged.matched_by)),
            jurisdiction: judged.jurisdiction,
            valid_until: judged.valid_until,
            at: request.at,
            known_at,
        })
    }

    /// Turns decision parts made by this policy into a [`Decision`] that names the
    /// apps, regions and instruments. Parts from another policy give nonsense or panic.
    pub fn view(&self, parts: DecisionParts) -> Decision<'_> {
        let verdict = match parts.outcome {
            OutcomeRef::Owned(o) => match *o {
                Outcome::Deny(p) => Verdict::Deny {
                    prohibitions: Cow::Owned(p),
                },
                allow => allow_verdict(&allow),
            },
            OutcomeRef::Interned(i) => match &self.index.outcomes[i as usize] {
                Outcome::Deny(p) => Verdict::Deny {
                    prohibitions: Cow::Borrowed(p),
                },
                allow => allow_verdict(allow),
            },
            OutcomeRef::NotCovered => allow_verdict(&NOT_COVERED),
        };
        Decision {
            policy: self,
            verdict,
            app: parts.app.map(|(a, m)| (&self.model.apps[a as usize], m)),
            jurisdiction: parts.jurisdiction.map(|(r, signal, value)| Jurisdiction {
                region: &self.model.regions[r as usize],
                signal,
                value,
            }),
            valid_until: parts.valid_until,
            at: parts.at,
            known_at: parts.known_at,
        }
    }

    /// Several covered apps in one request (an app carrying another's code): deny when
    /// any denies; otherwise the most final reason; the answer holds while all hold.
    fn combine(&self, first: Judged, more: Vec<Judged>) -> Judged {
        let valid_until = std::iter::once(&first)
            .chain(more.iter())
            .filter_map(|j| j.valid_until)
            .min();
        let all: Vec<Judged> = std::iter::once(first).chain(more).collect();
        let mut denied: Vec<ProhibitionIdx> = Vec::new();
        let mut pick: Option<usize> = None;
        for (i, j) in all.iter().enumerate() {
            if let Outcome::Deny(p) = self.outcome_of(&j.outcome) {
                for x in p {
                    if !denied.contains(x) {
                        denied.push(*x);
                    }
                }
                pick.get_or_insert(i);
            }
        }
        let (pick, outcome) = match pick {
            Some(i) => (i, OutcomeRef::Owned(Box::new(Outcome::Deny(denied)))),
            None => {
                let rank = |j: &Judged| match self.outcome_of(&j.outcome) {
                    Outcome::Allow { because, .. } => *because,
                    Outcome::Deny(_) => AllowReason::Revoked,
                };
                let mut best = 0;
                for (i, j) in all.iter().enumerate() {
                    if rank(j) > rank(&all[best]) {
                        best = i;
                    }
                }
                (best, all[best].outcome.clone())
            }
        };
        let chosen = &all[pick];
        Judged {
            outcome,
            app: chosen.app,
            matched_by: chosen.matched_by,
            jurisdiction: chosen.jurisdiction,
            valid_until,
        }
    }

    fn judge(&self, slot: Slot, matched_by: MatchedBy, request: &Request) -> Judged {
        let app = slot.app;
        let entry = &self.index.entries
            [self.index.coverages[slot.coverage as usize][request.action.index()] as usize];
        // The first signal that places the request in a region, if any does.
        let placing = |r: RegionIdx| {
            let set = &self.model.regions[r as usize].set;
            request.carried_signals().find(|(_, c)| set.contains(*c))
        };
        let (outcome, valid_until): (OutcomeRef, Option<Instant>) =
            if request.known_at.is_none() && !entry.timelines.is_empty() {
                // Bit `i` of the mask: the request is in `entry.regions[i]`.
                let mut mask = 0usize;
                for (bit, &r) in entry.regions.iter().enumerate() {
                    if placing(r).is_some() {
                        mask |= 1 << bit;
                    }
                }
                let tl = &entry.timelines[mask];
                let i = tl
                    .starts
                    .partition_point(|s| *s <= request.at)
                    .saturating_sub(1);
                (
                    OutcomeRef::Interned(tl.outcomes[i]),
                    tl.starts.get(i + 1).copied(),
                )
            } else {
                let in_region = |r: RegionIdx| placing(r).is_some();
                let (o, v) = self.scan(entry, &in_region, request.at, request.known_at);
                (OutcomeRef::Owned(Box::new(o)), v)
            };
        // Report the region of the first denying prohibition, or the first region the
        // request is in when the covering prohibitions are not in force.
        let region = match self.outcome_of(&outcome) {
            Outcome::Deny(p) => p
                .first()
                .map(|p| self.model.prohibitions[*p as usize].region),
            Outcome::Allow { because, .. } if *because >= AllowReason::NotYetInForce => entry
                .regions
                .iter()
                .copied()
                .find(|r| placing(*r).is_some()),
            Outcome::Allow { .. } => None,
        };
        let jurisdiction = region.and_then(|r| placing(r).map(|(s, c)| (r, s, c)));
        Judged {
            outcome,
            app,
            matched_by,
            jurisdiction,
            valid_until,
        }
    }

    /// The reference evaluation: the outcome at `at`, and the first later instant at
    /// which it differs. `known_at: None` judges each instant with the instruments
    /// known at that instant.
    fn scan(
        &self,
        entry: &Entry,
        in_region: &dyn Fn(RegionIdx) -> bool,
        at: Instant,
        known_at: Option<Instant>,
    ) -> (Outcome, Option<Instant>) {
        let now = outcome_at(
            &self.model,
            &self.index,
            entry,
            in_region,
            at,
            known_at.unwrap_or(at),
        );
        let start = entry.instants.partition_point(|i| *i <= at);
        let next = entry.instants[start..].iter().copied().find(|&t| {
            outcome_at(
                &self.model,
                &self.index,
                entry,
                in_region,
                t,
                known_at.unwrap_or(t),
            ) != now
        });
        (now, next)
    }

    /// Decides by scanning every instant instead of using the precomputed time lines.
    /// The slow reference the index is tested against; not for production paths.
    #[doc(hidden)]
    pub fn decide_by_scan(
        &self,
        request: &Request,
    ) -> Option<(bool, &'static str, Option<Instant>)> {
        let app = request
            .app
            .as_ref()
            .and_then(|a| match a.platform {
                Platform::Ios => self.index.ios.get(a.id.as_str()),
                Platform::Android => self.index.android.get(a.id.as_str()),
            })
            .copied()?;
        let entry = &self.index.entries
            [self.index.coverages[app.coverage as usize][request.action.index()] as usize];
        let in_region = |r: RegionIdx| {
            let set = &self.model.regions[r as usize].set;
            request.carried_signals().any(|(_, c)| set.contains(c))
        };
        let (o, v) = self.scan(entry, &in_region, request.at, request.known_at);
        Some(match o {
            Outcome::Deny(_) => (true, "deny", v),
            Outcome::Allow { because, .. } => (false, because.as_str(), v),
        })
    }
}

/// The verdict of an allowing outcome (callers take denies first).
fn allow_verdict(outcome: &Outcome) -> Verdict<'static> {
    match *outcome {
        Outcome::Allow {
            because,
            by,
            in_force_from,
        } => Verdict::Allow {
            because,
            by,
            in_force_from,
        },
        Outcome::Deny(_) => Verdict::Deny {
            prohibitions: Cow::Owned(Vec::new()),
        },
    }
}

fn index_len(map: &HashMap<Outcome, u32>) -> u32 {
    map.len() as u32
}

fn build_entry(
    model: &Model,
    index: &Index,
    covering: Vec<ProhibitionIdx>,
    with_action: Vec<ProhibitionIdx>,
    intern: &mut dyn FnMut(Outcome) -> u32,
) -> Entry {
    let issued = |i: InstrumentIdx| model.instruments[i as usize].issued;
    let mut instants = Vec::new();
    for &p in &covering {
        instants.push(issued(model.prohibitions[p as usize].instrument));
    }
    let mut regions: Vec<RegionIdx> = Vec::new();
    for &p in &with_action {
        let pr = &model.prohibitions[p as usize];
        instants.push(pr.effective);
        instants.extend(pr.end);
        if !regions.contains(&pr.region) {
            regions.push(pr.region);
        }
        for &c in &index.changes_of[p as usize] {
            let ch = &model.changes[c as usize];
            instants.push(issued(ch.instrument));
            match ch.kind {
                ChangeKind::Delay { effective } => instants.push(effective),
                ChangeKind::Suspension { from, until } => {
                    instants.push(from);
                    instants.extend(until);
                }
                ChangeKind::Revocation { from } => instants.push(from),
            }
        }
    }
    instants.retain(|i| *i != Instant::MIN);
    instants.sort_unstable();
    instants.dedup();
    let mut entry = Entry {
        covering,
        with_action,
        regions,
        instants,
        timelines: Vec::new(),
    };
    if entry.regions.len() > MAX_INDEXED_REGIONS {
        return entry;
    }
    let mut timelines = Vec::with_capacity(1 << entry.regions.len());
    for mask in 0..(1usize << entry.regions.len()) {
        let in_region = |r: RegionIdx| {
            entry
                .regions
                .iter()
                .position(|x| *x == r)
                .is_some_and(|bit| mask & (1 << bit) != 0)
        };
        let mut tl = Timeline {
            starts: Vec::new(),
            outcomes: Vec::new(),
        };
        let points = std::iter::once(Instant::MIN).chain(entry.instants.iter().copied());
        for t in points {
            let id = intern(outcome_at(model, index, &entry, &in_region, t, t));
            if tl.outcomes.last() != Some(&id) {
                tl.starts.push(t);
                tl.outcomes.push(id);
            }
        }
        timelines.push(tl);
    }
    entry.timelines = timelines;
    entry
}

/// The outcome for an entry at instant `t`, judged with the instruments issued by `k`.
fn outcome_at(
    model: &Model,
    index: &Index,
    entry: &Entry,
    in_region: &dyn Fn(RegionIdx) -> bool,
    t: Instant,
    k: Instant,
) -> Outcome {
    let known = |p: &ProhibitionIdx| {
        model.instruments[model.prohibitions[*p as usize].instrument as usize].issued <= k
    };
    let allow = |because| Outcome::Allow {
        because,
        by: None,
        in_force_from: None,
    };
    if !entry.covering.iter().any(known) {
        return allow(AllowReason::NotCovered);
    }
    let mut acting = entry.with_action.iter().filter(|p| known(p)).peekable();
    if acting.peek().is_none() {
        return allow(AllowReason::ActionNotProhibited);
    }
    let mut in_jurisdiction = acting
        .filter(|p| in_region(model.prohibitions[**p as usize].region))
        .peekable();
    if in_jurisdiction.peek().is_none() {
        return allow(AllowReason::OutsideJurisdiction);
    }
    let mut in_force = Vec::new();
    let mut best: Option<Status> = None;
    for &p in in_jurisdiction {
        let status = status_at(model, index, p, t, k);
        if status == Status::InForce {
            in_force.push(p);
            continue;
        }
        best = Some(match best {
            None => status,
            Some(b) => more_final(b, status),
        });
    }
    if !in_force.is_empty() {
        return Outcome::Deny(in_force);
    }
    match best {
        Some(Status::Revoked(by)) => Outcome::Allow {
            because: AllowReason::Revoked,
            by: Some(by),
            in_force_from: None,
        },
        Some(Status::Lapsed(by)) => Outcome::Allow {
            because: AllowReason::Lapsed,
            by: Some(by),
            in_force_from: None,
        },
        Some(Status::Suspended(by)) => Outcome::Allow {
            because: AllowReason::Suspended,
            by: Some(by),
            in_force_from: None,
        },
        Some(Status::NotYet(from)) => Outcome::Allow {
            because: AllowReason::NotYetInForce,
            by: None,
            in_force_from: Some(from),
        },
        // Unreachable: every prohibition in jurisdiction is either in force or has a
        // status; answer conservatively if it ever happens.
        Some(Status::InForce) | None => Outcome::Deny(Vec::new()),
    }
}

fn rank(s: Status) -> u8 {
    match s {
        Status::InForce => 0,
        Status::NotYet(_) => 1,
        Status::Suspended(_) => 2,
        Status::Lapsed(_) => 3,
        Status::Revoked(_) => 4,
    }
}

/// The more final of two statuses; among not-yet-in-force, the earlier start; on a
/// tie, the first.
fn more_final(a: Status, b: Status) -> Status {
    match (a, b) {
        (Status::NotYet(x), Status::NotYet(y)) => Status::NotYet(x.min(y)),
        _ if rank(b) > rank(a) => b,
        _ => a,
    }
}

/// The status of one prohibition at `t`, with the instruments issued by `k`.
fn status_at(model: &Model, index: &Index, p: ProhibitionIdx, t: Instant, k: Instant) -> Status {
    let pr = &model.prohibitions[p as usize];
    let issued = |i: InstrumentIdx| model.instruments[i as usize].issued;
    let mut effective = pr.effective;
    let mut delay_issued: Option<Instant> = None;
    let mut revoked: Option<(Instant, InstrumentIdx)> = None;
    let mut suspended: Option<(Instant, InstrumentIdx)> = None;
    for &c in &index.changes_of[p as usize] {
        let ch = &model.changes[c as usize];
        let when = issued(ch.instrument);
        if when > k {
            continue;
        }
        match ch.kind {
            // The latest delay known replaces the earlier ones.
            ChangeKind::Delay { effective: e } if delay_issued.is_none_or(|d| when >= d) => {
                effective = e;
                delay_issued = Some(when);
            }
            // The earliest revocation in effect is the one that ended it.
            ChangeKind::Revocation { from }
                if from <= t && revoked.is_none_or(|(f, _)| from < f) =>
            {
                revoked = Some((from, ch.instrument));
            }
            // The most recent suspension in effect names it.
            ChangeKind::Suspension { from, until }
                if from <= t
                    && until.is_none_or(|u| t < u)
                    && suspended.is_none_or(|(f, _)| from > f) =>
            {
                suspended = Some((from, ch.instrument));
            }
            _ => {}
        }
    }
    if let Some((_, by)) = revoked {
        Status::Revoked(by)
    } else if pr.end.is_some_and(|e| e <= t) {
        Status::Lapsed(pr.instrument)
    } else if let Some((_, by)) = suspended {
        Status::Suspended(by)
    } else if t < effective {
        Status::NotYet(effective)
    } else {
        Status::InForce
    }
}
