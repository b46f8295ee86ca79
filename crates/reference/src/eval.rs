//! The reference evaluator: the legal semantics as `policy`'s `law` module documents them
//! and as the v2 format specifies them, written out naively, one rule after another.
//!
//! It reads the validated model through `Policy`'s accessors and the request through its
//! getters, and shares nothing else with the engine: no index, no time line, no function
//! of the engine's law module. Where the documentation leaves a choice open (which of
//! two injunctions in effect names the answer, say), the choice is written down where it
//! is made, with `Undocumented:` in the comment.

use std::collections::BTreeSet;

use serde::Serialize;

use policy::model::{
    AppIdx, Change, ChangeKind, EntityIdx, InstrumentIdx, Moment, Prohibition, ProhibitionIdx,
    RegionIdx, Relief,
};
use policy::{
    Action, Boundaries, DecisionRecord, Instant, NonEnforcement, Platform, Policy, Posture,
    Request, RequestRecord, Signal, SignalSet, Store,
};

/// Why an allowed request is allowed: the reference's own list, from least to most final.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Reason {
    NotCovered,
    ActionNotProhibited,
    OutsideJurisdiction,
    NotYetInForce,
    NotEnforced,
    Enjoined,
    Lapsed,
    Exempt,
    Revoked,
}

impl Reason {
    /// The spelling in decisions.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NotCovered => "not-covered",
            Reason::ActionNotProhibited => "action-not-prohibited",
            Reason::OutsideJurisdiction => "outside-jurisdiction",
            Reason::NotYetInForce => "not-yet-in-force",
            Reason::NotEnforced => "not-enforced",
            Reason::Enjoined => "enjoined",
            Reason::Lapsed => "lapsed",
            Reason::Exempt => "exempt",
            Reason::Revoked => "revoked",
        }
    }

    /// "An allow names, before any reason of coverage (`not-covered`,
    /// `action-not-prohibited`, `outside-jurisdiction`), the least final relief among the
    /// covering prohibitions: `not-yet-in-force`, then `not-enforced`, `enjoined`,
    /// `lapsed`, `exempt`, `revoked`." Higher is named first.
    fn precedence(self) -> u8 {
        match self {
            Reason::NotCovered => 0,
            Reason::ActionNotProhibited => 1,
            Reason::OutsideJurisdiction => 2,
            Reason::Revoked => 3,
            Reason::Exempt => 4,
            Reason::Lapsed => 5,
            Reason::Enjoined => 6,
            Reason::NotEnforced => 7,
            Reason::NotYetInForce => 8,
        }
    }
}

/// The fields of a decision that the differential test compares, as plain values.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
pub struct Answer {
    /// `allow` or `deny`.
    pub decision: String,
    pub because: Option<String>,
    pub by: Option<String>,
    pub in_force_from: Option<String>,
    /// The denying prohibitions' ids.
    pub reasons: BTreeSet<String>,
    /// The set-aside non-enforcement orders' instrument ids.
    pub relief_set_aside: BTreeSet<String>,
    pub app: Option<String>,
    pub owner: Option<String>,
    pub matched_by: Option<String>,
    pub case_insensitive_match: bool,
    /// `jurisdiction.region`.
    pub region: Option<String>,
    /// `[from, until)`, either end open (`None`).
    pub uncertain: Option<(Option<String>, Option<String>)>,
    pub valid_until: Option<String>,
}

impl Answer {
    /// The compared fields of an engine's decision record.
    pub fn from_record(r: &DecisionRecord) -> Answer {
        Answer {
            decision: r.decision.clone(),
            because: r.because.clone(),
            by: r.by.clone(),
            in_force_from: r.in_force_from.clone(),
            reasons: r.reasons.iter().map(|x| x.prohibition.clone()).collect(),
            relief_set_aside: r
                .relief_set_aside
                .iter()
                .map(|x| x.instrument.clone())
                .collect(),
            app: r.app.clone(),
            owner: r.owner.clone(),
            matched_by: r.matched_by.clone(),
            case_insensitive_match: r.case_insensitive_match,
            region: r.jurisdiction.as_ref().map(|j| j.region.clone()),
            uncertain: r
                .uncertain
                .as_ref()
                .map(|u| (u.from.clone(), u.until.clone())),
            valid_until: r.valid_until.clone(),
        }
    }

    /// The names of the fields in which two answers differ.
    pub fn differences(&self, other: &Answer) -> Vec<&'static str> {
        let mut out = Vec::new();
        let mut check = |name: &'static str, same: bool| {
            if !same {
                out.push(name);
            }
        };
        check("decision", self.decision == other.decision);
        check("because", self.because == other.because);
        check("by", self.by == other.by);
        check("in_force_from", self.in_force_from == other.in_force_from);
        check("reasons", self.reasons == other.reasons);
        check(
            "relief_set_aside",
            self.relief_set_aside == other.relief_set_aside,
        );
        check("app", self.app == other.app);
        check("owner", self.owner == other.owner);
        check("matched_by", self.matched_by == other.matched_by);
        check(
            "case_insensitive_match",
            self.case_insensitive_match == other.case_insensitive_match,
        );
        check("jurisdiction.region", self.region == other.region);
        check("uncertain", self.uncertain == other.uncertain);
        check("valid_until", self.valid_until == other.valid_until);
        out
    }

    /// `deny`, or `allow/<because>`: the kind of outcome, for tallies.
    pub fn kind(&self) -> String {
        match &self.because {
            Some(b) => format!("{}/{b}", self.decision),
            None => self.decision.clone(),
        }
    }
}

/// Decides a request under a posture with the reference semantics.
pub fn decide(policy: &Policy, request: &Request, posture: Posture) -> Answer {
    Evaluator::new(policy, request).answer(posture)
}

/// Each instant field of the format, by what it bounds. The spec: "`conservative`
/// (default): each boundary takes the reading that extends prohibitions and shortens
/// relief"; `permissive` the opposite everywhere.
#[derive(Clone, Copy, Debug)]
enum Field {
    /// A prohibition's `effective`: the earliest reading extends it.
    ProhibitionEffective,
    /// A prohibition's `end`: the latest reading extends it.
    ProhibitionEnd,
    /// A delay's `effective`: the earliest reading extends the prohibition.
    DelayEffective,
    /// `from` of an injunction, non-enforcement order, revocation or exemption: the
    /// latest reading shortens the relief.
    ReliefFrom,
    /// `until` of an injunction or non-enforcement order: the earliest reading shortens it.
    ReliefUntil,
    /// `issued` of an instrument, for the prohibitions it makes: known earliest.
    IssuedForProhibitions,
    /// `issued` of an instrument, for the relief (of any kind, delays included) it makes:
    /// known latest.
    IssuedForRelief,
}

fn read(m: &Moment, field: Field, b: Boundaries) -> Instant {
    let conservative_takes_earliest = match field {
        Field::ProhibitionEffective => true,
        Field::ProhibitionEnd => false,
        Field::DelayEffective => true,
        Field::ReliefFrom => false,
        Field::ReliefUntil => true,
        Field::IssuedForProhibitions => true,
        Field::IssuedForRelief => false,
    };
    let earliest = match b {
        Boundaries::Conservative => conservative_takes_earliest,
        Boundaries::Permissive => !conservative_takes_earliest,
    };
    if earliest { m.earliest } else { m.latest }
}

/// What a request was recognised as.
#[derive(Clone, Debug)]
struct Target {
    /// `None` for an unlisted app known by its publisher account.
    app: Option<AppIdx>,
    owner: EntityIdx,
    matched_by: &'static str,
    case_insensitive: bool,
    /// The prohibitions covering it, whatever the action, in load order.
    covering: Vec<ProhibitionIdx>,
}

/// The state of one prohibition at one instant.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Status {
    InForce { set_aside: Vec<InstrumentIdx> },
    NotYet(Instant),
    NotEnforced(InstrumentIdx),
    Enjoined(InstrumentIdx),
    Lapsed(InstrumentIdx),
    Exempt(InstrumentIdx),
    Revoked(InstrumentIdx),
}

/// The answer for one target at one instant.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Judged {
    deny: bool,
    reason: Option<Reason>,
    by: Option<InstrumentIdx>,
    in_force_from: Option<Instant>,
    denying: Vec<ProhibitionIdx>,
    set_aside: Vec<InstrumentIdx>,
    /// The jurisdiction test reported: the region, and the groups of signals (the record
    /// reports the placing signal and the assumed groups, which depend on them).
    region: Option<(RegionIdx, Vec<SignalSet>)>,
}

impl Judged {
    fn allow(reason: Reason) -> Judged {
        Judged {
            deny: false,
            reason: Some(reason),
            by: None,
            in_force_from: None,
            denying: Vec::new(),
            set_aside: Vec::new(),
            region: None,
        }
    }
}

/// The request's answer at one instant: every compared field but `uncertain` and
/// `valid_until`, which are about the answer over time.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Snapshot {
    deny: bool,
    reason: Option<Reason>,
    by: Option<InstrumentIdx>,
    in_force_from: Option<Instant>,
    denying: BTreeSet<ProhibitionIdx>,
    set_aside: BTreeSet<InstrumentIdx>,
    /// Index into the targets of the one the record names.
    target: Option<usize>,
    region: Option<(RegionIdx, Vec<SignalSet>)>,
}

/// A request prepared for judging at any instant under any posture.
#[derive(Debug)]
pub struct Evaluator<'p> {
    policy: &'p Policy,
    action: Action,
    at: Instant,
    known_at: Option<Instant>,
    targets: Vec<Target>,
    /// Per prohibition: whether the request falls in its jurisdiction.
    in_region: Vec<bool>,
    /// Per prohibition: the changes that target it, in load order.
    changes_of: Vec<Vec<&'p Change>>,
    /// Every edge of every instant or window in the policy, sorted, without duplicates.
    candidates: Vec<Instant>,
}

/// A prohibition's jurisdiction test: its region and groups of signals.
fn test(p: &Prohibition) -> (RegionIdx, Vec<SignalSet>) {
    (p.region, p.jurisdiction.clone())
}

/// Whether entity `e` is `ancestor` or one of its subsidiaries at any depth.
fn descends(policy: &Policy, e: EntityIdx, ancestor: EntityIdx) -> bool {
    let entities = policy.entities();
    let mut at = Some(e);
    // The validator refuses cycles; the bound keeps a broken model from looping.
    for _ in 0..=entities.len() {
        match at {
            Some(x) if x == ancestor => return true,
            Some(x) => at = entities.get(x as usize).and_then(|en| en.parent),
            None => return false,
        }
    }
    false
}

fn same_digest(a: &str, b: &str) -> bool {
    let norm = |s: &str| -> String {
        s.chars()
            .filter(|c| *c != ':')
            .map(|c| c.to_ascii_lowercase())
            .collect()
    };
    norm(a) == norm(b)
}

impl<'p> Evaluator<'p> {
    /// Recognises the request's app(s) and places the request in each prohibition's
    /// jurisdiction.
    pub fn new(policy: &'p Policy, request: &Request) -> Evaluator<'p> {
        let targets = Self::targets(policy, request);
        let in_region = policy
            .prohibitions()
            .iter()
            .map(|p| {
                let region = &policy.regions()[p.region as usize];
                // "the request is in the prohibition's region only when every group has
                // a carried signal in the region; a group of which the request carries
                // no signal is assumed met (fail closed)".
                p.jurisdiction.iter().all(|group| {
                    let carried: Vec<_> = Signal::ALL
                        .into_iter()
                        .filter(|s| group.contains(*s))
                        .filter_map(|s| request.signal(s))
                        .collect();
                    carried.is_empty() || carried.iter().any(|c| region.countries.contains(c))
                })
            })
            .collect();
        let mut changes_of: Vec<Vec<&Change>> = vec![Vec::new(); policy.prohibitions().len()];
        for c in policy.changes() {
            for &p in &c.targets {
                if let Some(list) = changes_of.get_mut(p as usize)
                    && !list.iter().any(|x| std::ptr::eq(*x, c))
                {
                    list.push(c);
                }
            }
        }
        let mut candidates = Vec::new();
        let mut add = |m: &Moment| {
            candidates.push(m.earliest);
            candidates.push(m.latest);
        };
        for i in policy.instruments() {
            add(&i.issued);
        }
        for p in policy.prohibitions() {
            add(&p.effective);
            if let Some(e) = &p.end {
                add(e);
            }
        }
        for c in policy.changes() {
            match &c.kind {
                ChangeKind::Delay { effective } => add(effective),
                ChangeKind::Relief { from, until, .. } => {
                    add(from);
                    if let Some(u) = until {
                        add(u);
                    }
                }
                ChangeKind::Revocation { from } => add(from),
                ChangeKind::Exemption { from, .. } => add(from),
            }
        }
        candidates.retain(|c| *c != Instant::MIN);
        candidates.sort();
        candidates.dedup();
        Evaluator {
            policy,
            action: request.action(),
            at: request.at(),
            known_at: request.known_at(),
            targets,
            in_region,
            changes_of,
            candidates,
        }
    }

    /// The covered apps (or publishing entity) the request names, in the order the
    /// decision considers them: app id, signing certificate, code digests (in request
    /// order), and, only when none of those matched, the publisher account.
    fn targets(policy: &Policy, request: &Request) -> Vec<Target> {
        let apps = policy.apps();
        let covering_app = |a: AppIdx| -> Vec<ProhibitionIdx> {
            let owner = apps[a as usize].owner;
            (0..policy.prohibitions().len() as ProhibitionIdx)
                .filter(|&p| {
                    let pr = &policy.prohibitions()[p as usize];
                    pr.apps.contains(&a) || pr.owners.iter().any(|&o| descends(policy, owner, o))
                })
                .collect()
        };
        let mut out: Vec<Target> = Vec::new();
        let push = |out: &mut Vec<Target>, a: AppIdx, by: &'static str, ci: bool| {
            if !out.iter().any(|t| t.app == Some(a)) {
                out.push(Target {
                    app: Some(a),
                    owner: apps[a as usize].owner,
                    matched_by: by,
                    case_insensitive: ci,
                    covering: covering_app(a),
                });
            }
        };
        if let Some(app_ref) = request.app() {
            for (ai, app) in apps.iter().enumerate() {
                let (ids, by) = match app_ref.platform {
                    Platform::Ios => (app.ios(), "ios-bundle-id"),
                    Platform::Android => (app.android(), "android-package"),
                };
                if ids.clone().any(|x| x.eq_ignore_ascii_case(app_ref.id())) {
                    // "An id differing from a covered one only in letter case is matched
                    // (`case_insensitive_match: true`)": an id the app lists exactly
                    // does not differ.
                    let exact = ids.clone().any(|x| x == app_ref.id());
                    push(&mut out, ai as AppIdx, by, !exact);
                }
            }
        }
        let record = RequestRecord::from(request);
        if let Some(cert) = &record.signing_cert_sha256 {
            for (ai, app) in apps.iter().enumerate() {
                if app.signing_cert_sha256().any(|x| same_digest(x, cert)) {
                    push(&mut out, ai as AppIdx, "signing-cert", false);
                }
            }
        }
        for code in &record.code_sha256 {
            for (ai, app) in apps.iter().enumerate() {
                if app.code_sha256().any(|x| same_digest(x, code)) {
                    push(&mut out, ai as AppIdx, "code-sha256", false);
                }
            }
        }
        if out.is_empty()
            && let Some(publisher) = request.publisher()
        {
            for (ei, entity) in policy.entities().iter().enumerate() {
                let owns = entity.publisher_accounts.iter().any(|acc| {
                    acc.store == publisher.store
                        && match acc.store {
                            Store::Apple => acc.id.eq_ignore_ascii_case(&publisher.id),
                            Store::Google => acc.id == publisher.id,
                        }
                });
                if owns {
                    let e = ei as EntityIdx;
                    // "a prohibition naming an owner covers it when the publisher account
                    // belongs to that owner or a subsidiary".
                    let covering = (0..policy.prohibitions().len() as ProhibitionIdx)
                        .filter(|&p| {
                            policy.prohibitions()[p as usize]
                                .owners
                                .iter()
                                .any(|&o| descends(policy, e, o))
                        })
                        .collect();
                    out.push(Target {
                        app: None,
                        owner: e,
                        matched_by: "publisher-account",
                        case_insensitive: false,
                        covering,
                    });
                    break;
                }
            }
        }
        out
    }

    /// How many covered apps (or publishing entities) the request was recognised as.
    pub fn matched(&self) -> usize {
        self.targets.len()
    }

    /// Rules 1 to 7 of the law module for prohibition `p` at `t`, judged with what was
    /// issued by `k`.
    fn status(
        &self,
        p: ProhibitionIdx,
        app: Option<AppIdx>,
        t: Instant,
        k: Instant,
        posture: Posture,
    ) -> Status {
        let b = posture.boundaries;
        let pr = &self.policy.prohibitions()[p as usize];
        let instruments = self.policy.instruments();
        // Rule 1: a change counts only once its own instrument is issued.
        let changes: Vec<&Change> = self.changes_of[p as usize]
            .iter()
            .copied()
            .filter(|c| {
                read(
                    &instruments[c.instrument as usize].issued,
                    Field::IssuedForRelief,
                    b,
                ) <= k
            })
            .collect();
        // Rule 2: a revocation, or an exemption naming the app, in effect ends it.
        // Undocumented: which one names the answer when several are in effect. Chosen:
        // the one that ended it first; at the same instant a revocation, then the first
        // listed.
        let mut ended: Option<(Instant, u8, Status)> = None;
        for c in &changes {
            let found = match &c.kind {
                ChangeKind::Revocation { from } => Some((
                    read(from, Field::ReliefFrom, b),
                    0,
                    Status::Revoked(c.instrument),
                )),
                ChangeKind::Exemption { apps, from } if app.is_some_and(|a| apps.contains(&a)) => {
                    Some((
                        read(from, Field::ReliefFrom, b),
                        1,
                        Status::Exempt(c.instrument),
                    ))
                }
                _ => None,
            };
            if let Some((from, order, status)) = found
                && from <= t
                && ended
                    .as_ref()
                    .is_none_or(|(f, o, _)| (from, order) < (*f, *o))
            {
                ended = Some((from, order, status));
            }
        }
        if let Some((_, _, status)) = ended {
            return status;
        }
        // Rule 3: past its end it has lapsed.
        if let Some(end) = &pr.end
            && read(end, Field::ProhibitionEnd, b) <= t
        {
            return Status::Lapsed(pr.instrument);
        }
        // Rules 4 and 5: relief in effect, `from <= t < until`.
        // Undocumented: which of several injunctions (or orders) in effect names the
        // answer. Chosen: the one in effect from the latest instant; on a tie the first
        // listed.
        let mut enjoined: Option<(Instant, InstrumentIdx)> = None;
        let mut not_enforced: Option<(Instant, InstrumentIdx)> = None;
        let mut orders_in_effect: Vec<InstrumentIdx> = Vec::new();
        for c in &changes {
            if let ChangeKind::Relief {
                relief,
                from,
                until,
            } = &c.kind
            {
                let from = read(from, Field::ReliefFrom, b);
                let in_effect = from <= t
                    && until
                        .as_ref()
                        .is_none_or(|u| t < read(u, Field::ReliefUntil, b));
                if !in_effect {
                    continue;
                }
                let slot = match relief {
                    Relief::Injunction => &mut enjoined,
                    Relief::NonEnforcement => {
                        if !orders_in_effect.contains(&c.instrument) {
                            orders_in_effect.push(c.instrument);
                        }
                        &mut not_enforced
                    }
                };
                if slot.is_none_or(|(f, _)| from > f) {
                    *slot = Some((from, c.instrument));
                }
            }
        }
        if let Some((_, by)) = enjoined {
            return Status::Enjoined(by);
        }
        if posture.non_enforcement == NonEnforcement::Honour
            && let Some((_, by)) = not_enforced
        {
            return Status::NotEnforced(by);
        }
        // Rule 6: before its effective instant, as moved by the latest issued delay.
        // Undocumented: two delays issued at the same instant. Chosen: the one listed
        // last.
        let mut effective = read(&pr.effective, Field::ProhibitionEffective, b);
        let mut latest_issued: Option<Instant> = None;
        for c in &changes {
            if let ChangeKind::Delay { effective: e } = &c.kind {
                let issued = read(
                    &instruments[c.instrument as usize].issued,
                    Field::IssuedForRelief,
                    b,
                );
                if latest_issued.is_none_or(|l| issued >= l) {
                    latest_issued = Some(issued);
                    effective = read(e, Field::DelayEffective, b);
                }
            }
        }
        if t < effective {
            return Status::NotYet(effective);
        }
        // Rule 7. Non-enforcement orders in effect that the operator ignores are set
        // aside and named.
        let set_aside = match posture.non_enforcement {
            NonEnforcement::Honour => Vec::new(),
            NonEnforcement::Ignore => orders_in_effect,
        };
        Status::InForce { set_aside }
    }

    /// The answer for one target at `t`, judged with what was issued by `k`.
    fn judge(&self, target: &Target, t: Instant, k: Instant, posture: Posture) -> Judged {
        let b = posture.boundaries;
        let prohibitions = self.policy.prohibitions();
        let instruments = self.policy.instruments();
        // Rule 1: a prohibition counts only once its instrument is issued.
        let known: Vec<ProhibitionIdx> = target
            .covering
            .iter()
            .copied()
            .filter(|&p| {
                let i = prohibitions[p as usize].instrument;
                read(
                    &instruments[i as usize].issued,
                    Field::IssuedForProhibitions,
                    b,
                ) <= k
            })
            .collect();
        if known.is_empty() {
            return Judged::allow(Reason::NotCovered);
        }
        let acting: Vec<ProhibitionIdx> = known
            .into_iter()
            .filter(|&p| prohibitions[p as usize].actions.contains(self.action))
            .collect();
        if acting.is_empty() {
            return Judged::allow(Reason::ActionNotProhibited);
        }
        let placed: Vec<ProhibitionIdx> = acting
            .into_iter()
            .filter(|&p| self.in_region[p as usize])
            .collect();
        let Some(&first_placed) = placed.first() else {
            return Judged::allow(Reason::OutsideJurisdiction);
        };
        let mut denying = Vec::new();
        let mut set_aside = Vec::new();
        // The weakest relief so far: (reason, by, in force from).
        let mut best: Option<(Reason, Option<InstrumentIdx>, Option<Instant>)> = None;
        for &p in &placed {
            let (reason, by, from) = match self.status(p, target.app, t, k, posture) {
                Status::InForce { set_aside: aside } => {
                    denying.push(p);
                    for i in aside {
                        if !set_aside.contains(&i) {
                            set_aside.push(i);
                        }
                    }
                    continue;
                }
                Status::NotYet(at) => (Reason::NotYetInForce, None, Some(at)),
                Status::NotEnforced(by) => (Reason::NotEnforced, Some(by), None),
                Status::Enjoined(by) => (Reason::Enjoined, Some(by), None),
                Status::Lapsed(by) => (Reason::Lapsed, Some(by), None),
                Status::Exempt(by) => (Reason::Exempt, Some(by), None),
                Status::Revoked(by) => (Reason::Revoked, Some(by), None),
            };
            best = match best {
                None => Some((reason, by, from)),
                // Undocumented: several prohibitions not yet in force. Chosen: the
                // earliest of their effective instants is when the answer may change.
                Some((Reason::NotYetInForce, _, Some(x))) if reason == Reason::NotYetInForce => {
                    Some((reason, None, from.map(|y| y.min(x))))
                }
                // Undocumented: two prohibitions relieved alike (two different
                // instruments). Chosen: the first in load order.
                Some(old) if reason.precedence() > old.0.precedence() => Some((reason, by, from)),
                Some(old) => Some(old),
            };
        }
        if let Some(&first) = denying.first() {
            return Judged {
                deny: true,
                reason: None,
                by: None,
                in_force_from: None,
                denying,
                set_aside,
                region: Some(test(&prohibitions[first as usize])),
            };
        }
        let (reason, by, in_force_from) = best.unwrap_or((Reason::NotYetInForce, None, None));
        Judged {
            deny: false,
            reason: Some(reason),
            by,
            in_force_from,
            denying,
            set_aside,
            // Undocumented: the region an allow reports. Chosen: that of the first
            // prohibition (in load order) the request is judged against.
            region: Some(test(&prohibitions[first_placed as usize])),
        }
    }

    /// The answer at `t` (judged with what was issued by `k`), all targets combined:
    /// "deny if any denies, else the weakest relief".
    fn snapshot(&self, t: Instant, k: Instant, posture: Posture) -> Snapshot {
        let judged: Vec<Judged> = self
            .targets
            .iter()
            .map(|target| self.judge(target, t, k, posture))
            .collect();
        if judged.is_empty() {
            return Snapshot {
                deny: false,
                reason: Some(Reason::NotCovered),
                by: None,
                in_force_from: None,
                denying: BTreeSet::new(),
                set_aside: BTreeSet::new(),
                target: None,
                region: None,
            };
        }
        // Undocumented: which target the record names. Chosen: the first that denies;
        // otherwise the first with the reason named first (`Reason::precedence`).
        let pick = match judged.iter().position(|j| j.deny) {
            Some(i) => i,
            None => {
                let mut best = 0;
                for (i, j) in judged.iter().enumerate() {
                    let f = |j: &Judged| j.reason.map_or(0, Reason::precedence);
                    if f(j) > f(&judged[best]) {
                        best = i;
                    }
                }
                best
            }
        };
        let chosen = &judged[pick];
        let deny = chosen.deny;
        Snapshot {
            deny,
            reason: chosen.reason,
            by: chosen.by,
            in_force_from: chosen.in_force_from,
            denying: judged
                .iter()
                .flat_map(|j| j.denying.iter().copied())
                .collect(),
            set_aside: judged
                .iter()
                .filter(|j| j.deny)
                .flat_map(|j| j.set_aside.iter().copied())
                .collect(),
            target: Some(pick),
            region: chosen.region.clone(),
        }
    }

    fn known(&self, t: Instant) -> Instant {
        self.known_at.unwrap_or(t)
    }

    /// Whether the two readings of windows disagree on serving the request at `t`.
    fn readings_differ(&self, t: Instant, posture: Posture) -> bool {
        let k = self.known(t);
        let mine = self.snapshot(t, k, posture).deny;
        let other = Posture {
            boundaries: match posture.boundaries {
                Boundaries::Conservative => Boundaries::Permissive,
                Boundaries::Permissive => Boundaries::Conservative,
            },
            ..posture
        };
        mine != self.snapshot(t, k, other).deny
    }

    /// The answer to the request under a posture.
    pub fn answer(&self, posture: Posture) -> Answer {
        let at = self.at;
        let now = self.snapshot(at, self.known(at), posture);
        let differs_now = self.readings_differ(at, posture);
        // Between two consecutive candidates nothing any rule compares changes, so the
        // answer is constant on `[c_i, c_i+1)`: judging at each candidate is enough.
        let before: Vec<Instant> = self
            .candidates
            .iter()
            .copied()
            .filter(|c| *c <= at)
            .collect();
        let after: Vec<Instant> = self
            .candidates
            .iter()
            .copied()
            .filter(|c| *c > at)
            .collect();
        let uncertain = differs_now.then(|| {
            // Walk back over the segments before the one holding `at`.
            let mut from = None;
            let mut i = before.len();
            loop {
                if i == 0 {
                    // The first segment starts at the beginning of time.
                    break;
                }
                // `before[i - 1]` starts the segment being looked at; the one before it
                // starts at `before[i - 2]`, or at the beginning of time.
                let previous = if i >= 2 { before[i - 2] } else { Instant::MIN };
                if self.readings_differ(previous, posture) {
                    i -= 1;
                } else {
                    from = Some(before[i - 1]);
                    break;
                }
            }
            let until = after
                .iter()
                .copied()
                .find(|&c| !self.readings_differ(c, posture));
            (from, until)
        });
        let valid_until = after.iter().copied().find(|&c| {
            self.snapshot(c, self.known(c), posture) != now
                || self.readings_differ(c, posture) != differs_now
        });
        self.render(&now, uncertain, valid_until)
    }

    fn render(
        &self,
        s: &Snapshot,
        uncertain: Option<(Option<Instant>, Option<Instant>)>,
        valid_until: Option<Instant>,
    ) -> Answer {
        let policy = self.policy;
        let instrument = |i: InstrumentIdx| policy.instruments()[i as usize].id.clone();
        let target = s.target.and_then(|t| self.targets.get(t));
        Answer {
            decision: if s.deny { "deny" } else { "allow" }.to_owned(),
            because: if s.deny {
                None
            } else {
                s.reason.map(|r| r.as_str().to_owned())
            },
            by: s.by.map(instrument),
            in_force_from: s.in_force_from.map(|i| i.to_string()),
            reasons: s
                .denying
                .iter()
                .map(|&p| policy.prohibitions()[p as usize].id.clone())
                .collect(),
            relief_set_aside: s.set_aside.iter().map(|&i| instrument(i)).collect(),
            app: target.and_then(|t| t.app.map(|a| policy.apps()[a as usize].id().to_owned())),
            owner: target.map(|t| policy.entities()[t.owner as usize].id.clone()),
            matched_by: target.map(|t| t.matched_by.to_owned()),
            case_insensitive_match: target.is_some_and(|t| t.case_insensitive),
            region: s
                .region
                .as_ref()
                .map(|(r, _)| policy.regions()[*r as usize].id.clone()),
            uncertain: uncertain.map(|(f, u)| (f.map(|i| i.to_string()), u.map(|i| i.to_string()))),
            valid_until: valid_until.map(|i| i.to_string()),
        }
    }
}

#[cfg(test)]
mod tests;
