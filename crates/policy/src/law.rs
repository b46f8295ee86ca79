//! The legal semantics, in one place: what each kind of change does to a prohibition
//! at an instant, judged with the instruments known at another instant, under the
//! operator's posture. The compiled index ([`crate::Policy`]), `explain` and every
//! other reader of the law call these functions and nothing else.
//!
//! The rules, for one prohibition `p` at instant `t`, judged with what was issued by `k`:
//!
//! 1. `p` counts only once its instrument is issued (`issued <= k`); a change counts
//!    only once its own instrument is issued.
//! 2. A revocation whose `from <= t`, or an exemption naming the app whose `from <= t`,
//!    ends `p` for good (`revoked`, `exempt`).
//! 3. Past its `end`, `p` has lapsed (`lapsed`).
//! 4. An injunction with `from <= t < until` bars it (`enjoined`).
//! 5. A non-enforcement order with `from <= t < until` defers it (`not-enforced`), unless
//!    the operator ignores non-enforcement orders: then they are set aside and named.
//! 6. Before its effective instant (as moved by the latest issued delay), it is not in
//!    force yet (`not-yet-in-force`).
//! 7. Otherwise it is in force.
//!
//! A request is denied when any prohibition covering its app and action, in whose
//! region it falls, is in force; otherwise it is allowed for the least final reason
//! among them (`not-yet-in-force`, then `not-enforced`, `enjoined`, `lapsed`, `exempt`,
//! `revoked`): the relief the allow rests on most weakly, which ends it first. Before
//! any of those: `not-covered`, `action-not-prohibited` or `outside-jurisdiction`.
//!
//! Windows: an instant the record leaves open is a window. The conservative reading
//! takes, at every boundary, the edge that extends prohibitions and shortens relief;
//! the permissive reading the other edge. Where the two readings disagree on whether a
//! request is served, the decision says so (`uncertain`, with the stretch of time in
//! which they disagree) and follows the operator's reading.

use serde::{Deserialize, Serialize};

use crate::instant::Instant;
use crate::model::*;
use crate::validate::Model;

/// Which reading of a window to take.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Boundaries {
    /// Every boundary extends prohibitions and shortens relief: never early to serve.
    #[default]
    Conservative,
    /// Every boundary shortens prohibitions and extends relief.
    Permissive,
}

impl Boundaries {
    /// Both readings.
    pub const ALL: [Boundaries; 2] = [Boundaries::Conservative, Boundaries::Permissive];

    /// The spelling in settings.
    pub fn as_str(self) -> &'static str {
        match self {
            Boundaries::Conservative => "conservative",
            Boundaries::Permissive => "permissive",
        }
    }

    /// Parses `conservative` or `permissive`.
    pub fn parse(text: &str) -> Option<Boundaries> {
        Boundaries::ALL.into_iter().find(|b| b.as_str() == text)
    }

    /// The other reading.
    pub fn other(self) -> Boundaries {
        match self {
            Boundaries::Conservative => Boundaries::Permissive,
            Boundaries::Permissive => Boundaries::Conservative,
        }
    }
}

/// Whether executive non-enforcement orders count as relief.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NonEnforcement {
    /// They do: the answer is an allow, `not-enforced`.
    #[default]
    Honour,
    /// They do not (the statute stays in force): the answer is a deny that names them.
    Ignore,
}

impl NonEnforcement {
    /// Both settings.
    pub const ALL: [NonEnforcement; 2] = [NonEnforcement::Honour, NonEnforcement::Ignore];

    /// The spelling in settings.
    pub fn as_str(self) -> &'static str {
        match self {
            NonEnforcement::Honour => "honour",
            NonEnforcement::Ignore => "ignore",
        }
    }

    /// Parses `honour` or `ignore`.
    pub fn parse(text: &str) -> Option<NonEnforcement> {
        NonEnforcement::ALL.into_iter().find(|b| b.as_str() == text)
    }
}

/// The operator's stance where the law leaves room: how to read windows, and whether
/// non-enforcement orders are honoured.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, Serialize)]
pub struct Posture {
    pub boundaries: Boundaries,
    pub non_enforcement: NonEnforcement,
}

impl Posture {
    /// Every posture, in index order (see [`Posture::index`]).
    pub const ALL: [Posture; 4] = [
        Posture {
            boundaries: Boundaries::Conservative,
            non_enforcement: NonEnforcement::Honour,
        },
        Posture {
            boundaries: Boundaries::Permissive,
            non_enforcement: NonEnforcement::Honour,
        },
        Posture {
            boundaries: Boundaries::Conservative,
            non_enforcement: NonEnforcement::Ignore,
        },
        Posture {
            boundaries: Boundaries::Permissive,
            non_enforcement: NonEnforcement::Ignore,
        },
    ];

    /// The position in [`Posture::ALL`].
    pub fn index(self) -> usize {
        self.boundaries as usize + 2 * self.non_enforcement as usize
    }

    /// The same posture with the other reading of windows.
    pub fn other_reading(self) -> Posture {
        Posture {
            boundaries: self.boundaries.other(),
            ..self
        }
    }
}

/// Why an allowed request is allowed, from least to most final.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AllowReason {
    /// No known prohibition covers the app.
    NotCovered,
    /// Prohibitions cover the app, but not this action.
    ActionNotProhibited,
    /// Prohibitions cover the app and action, but the request is not in their regions.
    OutsideJurisdiction,
    /// The covering prohibitions have not taken effect yet.
    NotYetInForce,
    /// An executive non-enforcement order defers their enforcement.
    NotEnforced,
    /// A court order bars them.
    Enjoined,
    /// They reached their end.
    Lapsed,
    /// They cease to apply to this app (a qualified divestiture).
    Exempt,
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
            AllowReason::NotEnforced => "not-enforced",
            AllowReason::Enjoined => "enjoined",
            AllowReason::Lapsed => "lapsed",
            AllowReason::Exempt => "exempt",
            AllowReason::Revoked => "revoked",
        }
    }

    /// Which reason an allow names when several apply, the highest first: a relief before
    /// any reason of coverage, and among reliefs the least final (`not-yet-in-force`,
    /// `not-enforced`, `enjoined`, `lapsed`, `exempt`, `revoked`). An allow lasts only as
    /// long as the weakest relief it rests on: TikTok in 2025, whose 2020 rule was revoked
    /// and whose statute was not enforced, is allowed by the non-enforcement order, which
    /// an operator may choose not to honour.
    pub(crate) fn rank(self) -> u8 {
        match self {
            AllowReason::NotCovered => 0,
            AllowReason::ActionNotProhibited => 1,
            AllowReason::OutsideJurisdiction => 2,
            AllowReason::Revoked => 3,
            AllowReason::Exempt => 4,
            AllowReason::Lapsed => 5,
            AllowReason::Enjoined => 6,
            AllowReason::NotEnforced => 7,
            AllowReason::NotYetInForce => 8,
        }
    }
}

/// The answer for a set of prohibitions at one instant.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub(crate) enum Outcome {
    /// In force: these prohibitions; and the non-enforcement orders set aside.
    Deny {
        prohibitions: Vec<ProhibitionIdx>,
        set_aside: Vec<InstrumentIdx>,
    },
    Allow {
        because: AllowReason,
        by: Option<InstrumentIdx>,
        in_force_from: Option<Instant>,
        /// For the reasons judged per prohibition (`not-yet-in-force` and more final):
        /// the first prohibition judged, whose region the decision reports.
        judged: Option<ProhibitionIdx>,
    },
}

impl Outcome {
    pub(crate) const NOT_COVERED: Outcome = Outcome::Allow {
        because: AllowReason::NotCovered,
        by: None,
        in_force_from: None,
        judged: None,
    };

    fn allow(because: AllowReason) -> Outcome {
        Outcome::Allow {
            because,
            by: None,
            in_force_from: None,
            judged: None,
        }
    }

    /// What two readings are compared on: whether the request is served.
    pub(crate) fn is_deny(&self) -> bool {
        matches!(self, Outcome::Deny { .. })
    }
}

/// The state of one prohibition at one instant.
#[derive(Clone, Eq, Debug)]
pub(crate) enum Status {
    InForce { set_aside: Vec<InstrumentIdx> },
    NotYet(Instant),
    NotEnforced(InstrumentIdx),
    Enjoined(InstrumentIdx),
    Lapsed(InstrumentIdx),
    Exempt(InstrumentIdx),
    Revoked(InstrumentIdx),
}

/// Compared field by field (the orders set aside, most often none, without a call to
/// compare their bytes: the index compares statuses by the million).
impl PartialEq for Status {
    fn eq(&self, other: &Status) -> bool {
        match (self, other) {
            (Status::InForce { set_aside: a }, Status::InForce { set_aside: b }) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
            }
            (Status::NotYet(a), Status::NotYet(b)) => a == b,
            (Status::NotEnforced(a), Status::NotEnforced(b))
            | (Status::Enjoined(a), Status::Enjoined(b))
            | (Status::Lapsed(a), Status::Lapsed(b))
            | (Status::Exempt(a), Status::Exempt(b))
            | (Status::Revoked(a), Status::Revoked(b)) => a == b,
            _ => false,
        }
    }
}

impl std::hash::Hash for Status {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        std::mem::discriminant(self).hash(state);
        match self {
            Status::InForce { set_aside } => set_aside.hash(state),
            Status::NotYet(t) => t.hash(state),
            Status::NotEnforced(i)
            | Status::Enjoined(i)
            | Status::Lapsed(i)
            | Status::Exempt(i)
            | Status::Revoked(i) => i.hash(state),
        }
    }
}

impl Status {
    fn reason(&self) -> Option<AllowReason> {
        Some(match self {
            Status::InForce { .. } => return None,
            Status::NotYet(_) => AllowReason::NotYetInForce,
            Status::NotEnforced(_) => AllowReason::NotEnforced,
            Status::Enjoined(_) => AllowReason::Enjoined,
            Status::Lapsed(_) => AllowReason::Lapsed,
            Status::Exempt(_) => AllowReason::Exempt,
            Status::Revoked(_) => AllowReason::Revoked,
        })
    }
}

/// Which edge of a window favours the prohibition.
#[derive(Clone, Copy)]
enum Favours {
    Earlier,
    Later,
}

fn read(m: &Moment, favours: Favours, b: Boundaries) -> Instant {
    match (b, favours) {
        (Boundaries::Conservative, Favours::Earlier) | (Boundaries::Permissive, Favours::Later) => {
            m.earliest
        }
        _ => m.latest,
    }
}

/// When the prohibitions an instrument makes become known.
pub(crate) fn known_from(model: &Model, i: InstrumentIdx, b: Boundaries) -> Instant {
    read(&model.instruments[i as usize].issued, Favours::Earlier, b)
}

/// When the relief an instrument grants becomes known.
fn relief_known_from(model: &Model, i: InstrumentIdx, b: Boundaries) -> Instant {
    read(&model.instruments[i as usize].issued, Favours::Later, b)
}

/// Whether a prohibition is known at `k`.
pub(crate) fn is_known(model: &Model, p: ProhibitionIdx, k: Instant, b: Boundaries) -> bool {
    known_from(model, model.prohibitions[p as usize].instrument, b) <= k
}

/// A prohibition's effective instant with the delays issued by `k` (the latest issued
/// delay wins).
pub(crate) fn effective(
    model: &Model,
    changes: &[ChangeIdx],
    p: ProhibitionIdx,
    k: Instant,
    b: Boundaries,
) -> Instant {
    let mut effective = read(
        &model.prohibitions[p as usize].effective,
        Favours::Earlier,
        b,
    );
    let mut latest: Option<Instant> = None;
    for &c in changes {
        let ch = &model.changes[c as usize];
        if let ChangeKind::Delay { effective: e } = &ch.kind {
            let issued = relief_known_from(model, ch.instrument, b);
            if issued <= k && latest.is_none_or(|l| issued >= l) {
                effective = read(e, Favours::Earlier, b);
                latest = Some(issued);
            }
        }
    }
    effective
}

/// The state of prohibition `p` at `t`, judged with the instruments issued by `k`.
/// `changes` are the changes that target `p`; `app` is the app judged (`None` for an
/// app known only by its publisher account, which no exemption names).
pub(crate) fn status(
    model: &Model,
    changes: &[ChangeIdx],
    p: ProhibitionIdx,
    app: Option<AppIdx>,
    t: Instant,
    k: Instant,
    posture: Posture,
) -> Status {
    let b = posture.boundaries;
    let pr = &model.prohibitions[p as usize];
    // The first to end it for good; on a tie, a revocation before an exemption.
    let mut ended: Option<(Instant, u8, Status)> = None;
    let mut enjoined: Option<(Instant, InstrumentIdx)> = None;
    let mut not_enforced: Option<(Instant, InstrumentIdx)> = None;
    let mut set_aside: Vec<InstrumentIdx> = Vec::new();
    for &c in changes {
        let ch = &model.changes[c as usize];
        if relief_known_from(model, ch.instrument, b) > k {
            continue;
        }
        match &ch.kind {
            ChangeKind::Delay { .. } => {}
            ChangeKind::Revocation { from } => {
                let from = read(from, Favours::Later, b);
                if from <= t && ended.as_ref().is_none_or(|(f, o, _)| (from, 0) < (*f, *o)) {
                    ended = Some((from, 0, Status::Revoked(ch.instrument)));
                }
            }
            ChangeKind::Exemption { apps, from } => {
                let from = read(from, Favours::Later, b);
                if app.is_some_and(|a| apps.contains(&a))
                    && from <= t
                    && ended.as_ref().is_none_or(|(f, o, _)| (from, 1) < (*f, *o))
                {
                    ended = Some((from, 1, Status::Exempt(ch.instrument)));
                }
            }
            ChangeKind::Relief {
                relief,
                from,
                until,
            } => {
                let from = read(from, Favours::Later, b);
                let until = until.as_ref().map(|u| read(u, Favours::Earlier, b));
                if !(from <= t && until.is_none_or(|u| t < u)) {
                    continue;
                }
                // The most recent relief in effect names it.
                let slot = match relief {
                    Relief::Injunction => &mut enjoined,
                    Relief::NonEnforcement => &mut not_enforced,
                };
                if slot.is_none_or(|(f, _)| from > f) {
                    *slot = Some((from, ch.instrument));
                }
                if *relief == Relief::NonEnforcement && !set_aside.contains(&ch.instrument) {
                    set_aside.push(ch.instrument);
                }
            }
        }
    }
    if let Some((_, _, s)) = ended {
        return s;
    }
    if pr
        .end
        .as_ref()
        .is_some_and(|e| read(e, Favours::Later, b) <= t)
    {
        return Status::Lapsed(pr.instrument);
    }
    if let Some((_, by)) = enjoined {
        return Status::Enjoined(by);
    }
    if posture.non_enforcement == NonEnforcement::Honour
        && let Some((_, by)) = not_enforced
    {
        return Status::NotEnforced(by);
    }
    let effective = effective(model, changes, p, k, b);
    if t < effective {
        return Status::NotYet(effective);
    }
    if posture.non_enforcement == NonEnforcement::Honour {
        set_aside.clear();
    }
    Status::InForce { set_aside }
}

/// What a request is judged against: the prohibitions covering its app, those that
/// prohibit its action, and whether it falls in each one's jurisdiction.
pub(crate) struct Coverage<'a> {
    /// Every prohibition covering the app, whatever the action.
    pub covering: &'a [ProhibitionIdx],
    /// Those that prohibit the action.
    pub with_action: &'a [ProhibitionIdx],
    /// For each prohibition index: the changes that target it.
    pub changes_of: &'a [Vec<ChangeIdx>],
    /// The app judged, for exemptions.
    pub app: Option<AppIdx>,
}

/// The answer at `t`, judged with the instruments issued by `k`.
pub(crate) fn outcome(
    model: &Model,
    coverage: &Coverage<'_>,
    in_jurisdiction: &dyn Fn(ProhibitionIdx) -> bool,
    t: Instant,
    k: Instant,
    posture: Posture,
) -> Outcome {
    outcome_from(
        model,
        coverage,
        &standing(model, coverage, t, k, posture),
        in_jurisdiction,
    )
}

/// What the answer at an instant, judged with the instruments issued by another, under a
/// posture, depends on beyond the request's jurisdiction: whether any covering
/// prohibition is known, and the status of each prohibition of the action (`None`: not
/// known). Equal standings give equal answers to every request.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub(crate) struct Standing {
    covering_known: bool,
    statuses: Vec<Option<Status>>,
}

/// The standing at `t`, judged with the instruments issued by `k`.
pub(crate) fn standing(
    model: &Model,
    coverage: &Coverage<'_>,
    t: Instant,
    k: Instant,
    posture: Posture,
) -> Standing {
    let b = posture.boundaries;
    Standing {
        covering_known: coverage.covering.iter().any(|&p| is_known(model, p, k, b)),
        statuses: coverage
            .with_action
            .iter()
            .map(|&p| {
                is_known(model, p, k, b).then(|| {
                    status(
                        model,
                        &coverage.changes_of[p as usize],
                        p,
                        coverage.app,
                        t,
                        k,
                        posture,
                    )
                })
            })
            .collect(),
    }
}

/// Whether a non-enforcement order changes one of the prohibitions of the action: if
/// none does, ignoring them or honouring them gives the same standing.
pub(crate) fn non_enforcement_matters(model: &Model, coverage: &Coverage<'_>) -> bool {
    coverage.with_action.iter().any(|&p| {
        coverage.changes_of[p as usize].iter().any(|&c| {
            matches!(
                model.changes[c as usize].kind,
                ChangeKind::Relief {
                    relief: Relief::NonEnforcement,
                    ..
                }
            )
        })
    })
}

/// The answer from a [`standing`] of the coverage, for a request in the jurisdiction of
/// the prohibitions `in_jurisdiction` accepts.
pub(crate) fn outcome_from(
    model: &Model,
    coverage: &Coverage<'_>,
    standing: &Standing,
    in_jurisdiction: &dyn Fn(ProhibitionIdx) -> bool,
) -> Outcome {
    if !standing.covering_known {
        return Outcome::allow(AllowReason::NotCovered);
    }
    let mut acting = coverage
        .with_action
        .iter()
        .zip(&standing.statuses)
        .filter_map(|(&p, s)| s.as_ref().map(|s| (p, s)))
        .peekable();
    if acting.peek().is_none() {
        return Outcome::allow(AllowReason::ActionNotProhibited);
    }
    let mut placed = acting.filter(|(p, _)| in_jurisdiction(*p)).peekable();
    let Some(&(first, _)) = placed.peek() else {
        return Outcome::allow(AllowReason::OutsideJurisdiction);
    };
    // Named by the first prohibition with the same jurisdiction test, so that the answer
    // does not change where only the prohibition behind the same region does.
    let test = |p: ProhibitionIdx| {
        let pr = &model.prohibitions[p as usize];
        (pr.region, &pr.jurisdiction)
    };
    let judged = coverage
        .with_action
        .iter()
        .copied()
        .find(|&q| test(q) == test(first))
        .unwrap_or(first);
    let mut in_force = Vec::new();
    let mut set_aside: Vec<InstrumentIdx> = Vec::new();
    let mut best: Option<Status> = None;
    for (p, s) in placed {
        match s {
            Status::InForce { set_aside: aside } => {
                in_force.push(p);
                for &i in aside {
                    if !set_aside.contains(&i) {
                        set_aside.push(i);
                    }
                }
            }
            other => best = Some(weaker(best, other.clone())),
        }
    }
    if !in_force.is_empty() {
        return Outcome::Deny {
            prohibitions: in_force,
            set_aside,
        };
    }
    match best {
        Some(Status::NotYet(from)) => Outcome::Allow {
            because: AllowReason::NotYetInForce,
            by: None,
            in_force_from: Some(from),
            judged: Some(judged),
        },
        Some(
            s @ (Status::NotEnforced(by)
            | Status::Enjoined(by)
            | Status::Lapsed(by)
            | Status::Exempt(by)
            | Status::Revoked(by)),
        ) => Outcome::Allow {
            because: s.reason().unwrap_or(AllowReason::Revoked),
            by: Some(by),
            in_force_from: None,
            judged: Some(judged),
        },
        // Every placed prohibition is either in force or has a status; answer with a
        // deny if that ever fails to hold.
        Some(Status::InForce { .. }) | None => Outcome::Deny {
            prohibitions: Vec::new(),
            set_aside: Vec::new(),
        },
    }
}

/// The answer for several apps judged together: a deny when any denies (every denying
/// prohibition and set-aside order, in policy order), else the allow whose reason ranks
/// highest ([`AllowReason::rank`]: the weakest relief; the first on a tie); with the index
/// of the app it names.
pub(crate) fn combine(outcomes: impl Iterator<Item = Outcome>) -> (Outcome, usize) {
    let mut denied: Option<(Vec<ProhibitionIdx>, Vec<InstrumentIdx>, usize)> = None;
    let mut best: Option<(Outcome, usize)> = None;
    for (i, o) in outcomes.enumerate() {
        match o {
            Outcome::Deny {
                prohibitions,
                set_aside,
            } => {
                let (ps, asides, _) = denied.get_or_insert_with(|| (Vec::new(), Vec::new(), i));
                for p in prohibitions {
                    if !ps.contains(&p) {
                        ps.push(p);
                    }
                }
                for a in set_aside {
                    if !asides.contains(&a) {
                        asides.push(a);
                    }
                }
            }
            allow => {
                let rank = |o: &Outcome| match o {
                    Outcome::Allow { because, .. } => because.rank(),
                    Outcome::Deny { .. } => u8::MAX,
                };
                if best.as_ref().is_none_or(|(b, _)| rank(&allow) > rank(b)) {
                    best = Some((allow, i));
                }
            }
        }
    }
    match (denied, best) {
        // In policy order, so that the answer does not change where only the app that
        // brings a prohibition does.
        (Some((mut prohibitions, mut set_aside, i)), _) => (
            Outcome::Deny {
                prohibitions: {
                    prohibitions.sort_unstable();
                    prohibitions
                },
                set_aside: {
                    set_aside.sort_unstable();
                    set_aside
                },
            },
            i,
        ),
        (None, Some(b)) => b,
        (None, None) => (Outcome::NOT_COVERED, 0),
    }
}

/// The weaker of two reliefs ([`AllowReason::rank`]); among not-yet-in-force, the earlier
/// start; on a tie, the first.
fn weaker(a: Option<Status>, b: Status) -> Status {
    match a {
        None => b,
        Some(Status::NotYet(x)) if matches!(b, Status::NotYet(_)) => match b {
            Status::NotYet(y) => Status::NotYet(x.min(y)),
            _ => b,
        },
        Some(a) => {
            let rank = |s: &Status| s.reason().map_or(0, AllowReason::rank);
            if rank(&b) > rank(&a) { b } else { a }
        }
    }
}

/// Every instant at which the answer for these prohibitions may change: both edges of
/// every window of the prohibitions, of their instruments' issue and of their changes.
pub(crate) fn instants(model: &Model, coverage: &Coverage<'_>) -> Vec<Instant> {
    edges(model, coverage, None)
}

/// Every instant at which the answer judged with what was issued by `k` may change: both
/// edges of every window of the prohibitions and changes known by `k` under either
/// reading of windows (not of their issue, which is judged at `k`).
pub(crate) fn instants_known_at(
    model: &Model,
    coverage: &Coverage<'_>,
    k: Instant,
) -> Vec<Instant> {
    edges(model, coverage, Some(k))
}

/// [`instants`], or [`instants_known_at`] `k`.
fn edges(model: &Model, coverage: &Coverage<'_>, known_at: Option<Instant>) -> Vec<Instant> {
    let mut out = Vec::new();
    let mut moment = |m: &Moment| {
        out.push(m.earliest);
        out.push(m.latest);
    };
    let issued = |i: InstrumentIdx| &model.instruments[i as usize].issued;
    let known = |p: ProhibitionIdx, k: Instant| {
        Boundaries::ALL
            .into_iter()
            .any(|b| is_known(model, p, k, b))
    };
    let relief_known = |i: InstrumentIdx, k: Instant| {
        Boundaries::ALL
            .into_iter()
            .any(|b| relief_known_from(model, i, b) <= k)
    };
    for &p in coverage.covering {
        if known_at.is_none() {
            moment(issued(model.prohibitions[p as usize].instrument));
        }
    }
    for &p in coverage.with_action {
        if known_at.is_some_and(|k| !known(p, k)) {
            continue;
        }
        let pr = &model.prohibitions[p as usize];
        moment(&pr.effective);
        if let Some(e) = &pr.end {
            moment(e);
        }
        for &c in &coverage.changes_of[p as usize] {
            let ch = &model.changes[c as usize];
            match known_at {
                None => moment(issued(ch.instrument)),
                Some(k) if !relief_known(ch.instrument, k) => continue,
                Some(_) => {}
            }
            match &ch.kind {
                ChangeKind::Delay { effective } => moment(effective),
                ChangeKind::Relief { from, until, .. } => {
                    moment(from);
                    if let Some(u) = until {
                        moment(u);
                    }
                }
                ChangeKind::Revocation { from } | ChangeKind::Exemption { from, .. } => {
                    moment(from)
                }
            }
        }
    }
    out.retain(|i| *i != Instant::MIN);
    out.sort_unstable();
    out.dedup();
    out
}

/// Every instant at which what is known of these prohibitions may change: both edges of
/// the issue window of their instruments and of the instruments that change them.
pub(crate) fn issue_instants(model: &Model, coverage: &Coverage<'_>) -> Vec<Instant> {
    let mut out = Vec::new();
    let mut issued = |i: InstrumentIdx| {
        let m = &model.instruments[i as usize].issued;
        out.push(m.earliest);
        out.push(m.latest);
    };
    for &p in coverage.covering {
        issued(model.prohibitions[p as usize].instrument);
    }
    for &p in coverage.with_action {
        for &c in &coverage.changes_of[p as usize] {
            issued(model.changes[c as usize].instrument);
        }
    }
    out.retain(|i| *i != Instant::MIN);
    out.sort_unstable();
    out.dedup();
    out
}

/// Where the two readings of windows disagree: `[from, until)`, either end open.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct Uncertain {
    /// `None`: from the beginning of time.
    pub from: Option<Instant>,
    /// `None`: for ever after.
    pub until: Option<Instant>,
}

/// An outcome over time: a segment starting at an instant, with its outcome under the
/// posture and whether the other reading of windows disagrees there.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub(crate) struct Judgement {
    pub outcome: Outcome,
    pub uncertain: Option<Uncertain>,
}

/// The answer over time at the given points (sorted, without [`Instant::MIN`]):
/// segment starts (the first is [`Instant::MIN`]) and their judgements, with equal
/// neighbours merged. `judge(t)` gives the outcome under the posture and under the
/// other reading of windows.
pub(crate) fn segments(
    points: &[Instant],
    judge: &mut dyn FnMut(Instant) -> (Outcome, Outcome),
) -> Vec<(Instant, Judgement)> {
    let judged: Vec<(Outcome, Outcome)> = std::iter::once(Instant::MIN)
        .chain(points.iter().copied())
        .map(judge)
        .collect();
    let mut out = Vec::new();
    segments_by(points, &judged, Outcome::is_deny, &mut out);
    out.into_iter()
        .map(|(start, outcome, uncertain)| (start, Judgement { outcome, uncertain }))
        .collect()
}

/// [`segments`], into `out` (cleared first), from the outcomes under the posture and under
/// the other reading at [`Instant::MIN`] and at each point, given as anything that stands
/// for them (an outcome, or its number among distinct outcomes) and that `is_deny` reads.
pub(crate) fn segments_by<O: PartialEq + Clone>(
    points: &[Instant],
    judged: &[(O, O)],
    is_deny: impl Fn(&O) -> bool,
    out: &mut Vec<(Instant, O, Option<Uncertain>)>,
) {
    out.clear();
    let start = |i: usize| if i == 0 { Instant::MIN } else { points[i - 1] };
    let differs = |i: usize| {
        let (mine, other) = &judged[i];
        is_deny(mine) != is_deny(other)
    };
    // The current run of points where the readings disagree: its first, and the first
    // point after it.
    let mut run = (0, 0);
    for (i, (outcome, _)) in judged.iter().enumerate() {
        let uncertain = differs(i).then(|| {
            if i == 0 || !differs(i - 1) {
                let end = (i..judged.len()).find(|&j| !differs(j));
                run = (i, end.unwrap_or(judged.len()));
            }
            Uncertain {
                from: (run.0 != 0).then(|| start(run.0)),
                until: (run.1 < judged.len()).then(|| start(run.1)),
            }
        });
        if out
            .last()
            .is_none_or(|(_, o, u)| o != outcome || *u != uncertain)
        {
            out.push((start(i), outcome.clone(), uncertain));
        }
    }
}

/// The chain of instruments a prohibition was made under: its own instrument first,
/// then what each was made pursuant to, breadth first, each once.
pub(crate) fn authority(model: &Model, p: ProhibitionIdx) -> Vec<InstrumentIdx> {
    let mut chain = vec![model.prohibitions[p as usize].instrument];
    let mut i = 0;
    while i < chain.len() {
        for &up in &model.instruments[chain[i] as usize].pursuant_to {
            if !chain.contains(&up) {
                chain.push(up);
            }
        }
        i += 1;
    }
    chain
}
