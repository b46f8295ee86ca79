//! The finite domain of policy sets, and each point's answer over time.
//!
//! A request's answer depends on which app its identifier names (and so on the prohibitions
//! that cover the app and the exemptions that free it), on the action, on the regions its
//! place falls in, on the posture and on the instant. Everything but the instant ranges over
//! finite sets that the policies name, so the answers of a policy set are a finite family of
//! time lines. [`walk`] reads one from the engine itself, segment by segment: a decision's
//! `valid_until` is the start of the next segment. Nothing here restates the law.
//!
//! The domain is taken over one or more versions of a set at once (the two sides of a diff),
//! so that its points are the same for every version:
//!
//! - **subjects**: every identifier any version lists (bundle id, package name, certificate
//!   fingerprint, code digest), each alone, and every publisher account of a covered owner
//!   (an unlisted app published from it). Subjects that reach apps with the same coverage in
//!   every version answer alike, and are decided once, as a [`Group`].
//! - **places**: countries, grouped by the regions of every version they fall in; a request is
//!   placed there by every signal at once.
//! - **postures**: all four.
//!
//! Requests naming several identifiers at once and requests judged in hindsight (`known_at`)
//! are outside the domain.

use std::collections::{BTreeMap, HashMap};

use policy::model::ChangeKind;
use policy::{
    Action, AppRecord, Country, Instant, Policy, Posture, PublisherRecord, Request, RequestRecord,
    Store, Verdict,
};
use serde::Serialize;

/// How a request names an app, alone.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subject {
    /// An iOS bundle id.
    Ios(String),
    /// An Android package name.
    Android(String),
    /// A signing certificate's SHA-256 fingerprint.
    SigningCert(String),
    /// A digest of constituent code.
    CodeSha256(String),
    /// An app no version lists, published from this store account.
    Account {
        /// The store.
        store: Store,
        /// The account id, in normal form.
        id: String,
    },
}

impl Subject {
    /// The subject as people read it: `android com.zhiliaoapp.musically`.
    pub fn describe(&self) -> String {
        match self {
            Subject::Ios(id) => format!("ios {id}"),
            Subject::Android(id) => format!("android {id}"),
            Subject::SigningCert(d) => format!("signing certificate {d}"),
            Subject::CodeSha256(d) => format!("code digest {d}"),
            Subject::Account { store, id } => {
                format!("an unlisted app of {} account {id}", store.as_str())
            }
        }
    }
}

/// What a subject reaches in one version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reach {
    /// Nothing: the version does not list it.
    Nothing,
    /// A listed app, by id.
    App(String),
    /// An unlisted app of this entity, by its publisher account.
    Owner(String),
}

impl Reach {
    /// The app or owner id, if any.
    pub fn id(&self) -> Option<&str> {
        match self {
            Reach::Nothing => None,
            Reach::App(id) | Reach::Owner(id) => Some(id),
        }
    }
}

/// A subject and what it reaches in each version.
#[derive(Clone, Debug)]
pub struct Member {
    /// How the request names the app.
    pub subject: Subject,
    /// What it reaches, by version.
    pub reach: Vec<Reach>,
    /// Its name in reports (see [`Group::labels`]).
    pub label: String,
}

/// Subjects whose apps have the same coverage in every version: they answer alike, and
/// one of them stands for all.
#[derive(Clone, Debug)]
pub struct Group {
    /// In the order of the subjects.
    pub members: Vec<Member>,
    /// By version: the prohibitions that may reach the group's apps (those covering a
    /// listed app; for an owner's unlisted apps, those naming owners).
    pub prohibitions: Vec<Vec<u32>>,
}

impl Group {
    /// The apps (and owners' unlisted apps) of the group, by id; an identifier that moved
    /// between apps is named with the apps it reaches in each version.
    pub fn labels(&self) -> Vec<String> {
        let mut seen = std::collections::HashSet::new();
        self.members
            .iter()
            .filter(|m| seen.insert(m.label.as_str()))
            .map(|m| m.label.clone())
            .collect()
    }

    /// A request for the group's first subject; `None` if the subject cannot be named in
    /// a request (which a validated policy rules out).
    pub fn request(&self, action: Action, place: Country, unlisted: &str) -> Option<Request> {
        request_for(&self.members[0].subject, action, place, unlisted)
    }
}

/// A member's name in reports: its app's id, or its owner's unlisted apps. An identifier
/// that reaches different apps in different versions is named with what it reaches in each,
/// unless it only joins or leaves an app that the other version does not know at all (a
/// new or a removed app is named as the app).
fn label_of(m: &Member, known: &[std::collections::HashSet<&str>]) -> String {
    let name = |r: &Reach| match r {
        Reach::App(id) => id.clone(),
        Reach::Owner(id) => format!("unlisted apps of {id}"),
        Reach::Nothing => m.subject.describe(),
    };
    let first = &m.reach[0];
    if m.reach.iter().all(|r| r == first) {
        return name(first);
    }
    let listed: Vec<&Reach> = m.reach.iter().filter(|r| **r != Reach::Nothing).collect();
    if let [Reach::App(id)] = listed.as_slice() {
        let elsewhere = m
            .reach
            .iter()
            .zip(known)
            .any(|(r, k)| *r == Reach::Nothing && k.contains(id.as_str()));
        if !elsewhere {
            return id.clone();
        }
    }
    let sides: Vec<&str> = m
        .reach
        .iter()
        .map(|r| r.id().unwrap_or("unlisted"))
        .collect();
    format!("{} ({})", m.subject.describe(), sides.join(" -> "))
}

/// A set of countries that every version's regions treat alike.
#[derive(Clone, Debug)]
pub struct Place {
    /// In alpha-2 order.
    pub countries: Vec<Country>,
    /// The ids of the regions (of any version) they fall in.
    pub regions: Vec<String>,
}

impl Place {
    /// The country a request for this place is placed in.
    pub fn country(&self) -> Country {
        self.countries[0]
    }

    /// `US (US, PR, GU, VI, AS, MP, UM)`, or `elsewhere (231 countries)`.
    pub fn label(&self) -> String {
        if self.regions.is_empty() {
            return format!("elsewhere ({} countries)", self.countries.len());
        }
        let codes: Vec<&str> = self.countries.iter().take(8).map(|c| c.alpha2()).collect();
        let more = self.countries.len().saturating_sub(8);
        let tail = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        format!("{} ({}{tail})", self.regions.join(", "), codes.join(", "))
    }

    /// Whether the place falls in no region of any version.
    pub fn is_elsewhere(&self) -> bool {
        self.regions.is_empty()
    }
}

/// The domain of one or more versions of a policy set.
#[derive(Debug)]
pub struct Domain {
    /// Subjects grouped by their coverage in every version.
    pub groups: Vec<Group>,
    /// Countries grouped by the regions they fall in.
    pub places: Vec<Place>,
    /// An app id no version lists, for the unlisted apps of publisher accounts.
    pub unlisted: String,
}

/// What decides a subject's answers in one version: the prohibitions covering its app and
/// the changes that exempt it; or the owner whose account publishes it. Interned per version.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Cover {
    Nothing,
    App {
        prohibitions: Vec<u32>,
        exemptions: Vec<u32>,
    },
    Owner(u32),
}

/// One version's subjects and their interned coverage.
struct Version {
    /// Subject to (reach, interned cover).
    subjects: HashMap<Subject, (Reach, u32)>,
    /// Interned cover to the prohibitions that may reach it.
    prohibitions: Vec<Vec<u32>>,
}

fn version(policy: &Policy) -> Version {
    let apps = policy.apps();
    let mut prohibitions: Vec<Vec<u32>> = vec![Vec::new(); apps.len()];
    for (pi, p) in policy.prohibitions().iter().enumerate() {
        for &a in &p.covered {
            prohibitions[a as usize].push(pi as u32);
        }
    }
    let mut exemptions: Vec<Vec<u32>> = vec![Vec::new(); apps.len()];
    for (ci, c) in policy.changes().iter().enumerate() {
        if let ChangeKind::Exemption { apps, .. } = &c.kind {
            for &a in apps {
                exemptions[a as usize].push(ci as u32);
            }
        }
    }
    let by_owners: Vec<u32> = (0..policy.prohibitions().len() as u32)
        .filter(|&p| !policy.prohibition(p).owners.is_empty())
        .collect();
    let mut interned: HashMap<Cover, u32> = HashMap::new();
    interned.insert(Cover::Nothing, 0);
    let mut reaching: Vec<Vec<u32>> = vec![Vec::new()];
    let mut intern = |cover: Cover| {
        let next = interned.len() as u32;
        let reach = match &cover {
            Cover::Nothing => Vec::new(),
            Cover::App { prohibitions, .. } => prohibitions.clone(),
            Cover::Owner(_) => by_owners.clone(),
        };
        let slot = *interned.entry(cover).or_insert(next);
        if slot == next {
            reaching.push(reach);
        }
        slot
    };
    let mut subjects = HashMap::new();
    for (ai, app) in apps.iter().enumerate() {
        let cover = intern(Cover::App {
            prohibitions: std::mem::take(&mut prohibitions[ai]),
            exemptions: std::mem::take(&mut exemptions[ai]),
        });
        let reach = || (Reach::App(app.id().to_owned()), cover);
        for id in app.ios() {
            subjects.insert(Subject::Ios(id.to_owned()), reach());
        }
        for id in app.android() {
            subjects.insert(Subject::Android(id.to_owned()), reach());
        }
        for d in app.signing_cert_sha256() {
            subjects.insert(Subject::SigningCert(d.to_owned()), reach());
        }
        for d in app.code_sha256() {
            subjects.insert(Subject::CodeSha256(d.to_owned()), reach());
        }
    }
    for (ei, entity) in policy.entities().iter().enumerate() {
        for account in &entity.publisher_accounts {
            let cover = intern(Cover::Owner(ei as u32));
            subjects.insert(
                Subject::Account {
                    store: account.store,
                    id: account.id.clone(),
                },
                (Reach::Owner(entity.id.clone()), cover),
            );
        }
    }
    Version {
        subjects,
        prohibitions: reaching,
    }
}

impl Domain {
    /// The domain of these versions of a set.
    pub fn new(policies: &[&Policy]) -> Domain {
        let versions: Vec<Version> = policies.iter().map(|p| version(p)).collect();
        let known: Vec<std::collections::HashSet<&str>> = policies
            .iter()
            .map(|p| p.apps().iter().map(|a| a.id()).collect())
            .collect();
        let mut all: Vec<&Subject> = versions.iter().flat_map(|v| v.subjects.keys()).collect();
        all.sort_unstable();
        all.dedup();
        let mut groups: Vec<Group> = Vec::new();
        let mut by_cover: HashMap<Vec<u32>, usize> = HashMap::new();
        for subject in all {
            let mut key = Vec::with_capacity(versions.len());
            let mut reach = Vec::with_capacity(versions.len());
            for v in &versions {
                match v.subjects.get(subject) {
                    Some((r, cover)) => {
                        key.push(*cover);
                        reach.push(r.clone());
                    }
                    None => {
                        key.push(0);
                        reach.push(Reach::Nothing);
                    }
                }
            }
            let mut member = Member {
                subject: subject.clone(),
                reach,
                label: String::new(),
            };
            member.label = label_of(&member, &known);
            let next = groups.len();
            let slot = *by_cover.entry(key.clone()).or_insert(next);
            if slot == next {
                groups.push(Group {
                    members: Vec::new(),
                    prohibitions: versions
                        .iter()
                        .zip(&key)
                        .map(|(v, &c)| v.prohibitions[c as usize].clone())
                        .collect(),
                });
            }
            groups[slot].members.push(member);
        }
        let unlisted = unlisted_id(policies);
        Domain {
            groups,
            places: places(policies),
            unlisted,
        }
    }
}

/// An app id that no version lists, for requests from an unlisted app.
fn unlisted_id(policies: &[&Policy]) -> String {
    let listed = |id: &str| {
        policies.iter().any(|p| {
            p.apps().iter().any(|a| {
                a.ios()
                    .chain(a.android())
                    .any(|x| x.eq_ignore_ascii_case(id))
            })
        })
    };
    // More candidates than listed ids: one of them is free.
    let ids: usize = policies
        .iter()
        .flat_map(|p| p.apps())
        .map(|a| a.ios().len() + a.android().len())
        .sum();
    (0..=ids)
        .map(|n| format!("com.example.unlisted{n}"))
        .find(|id| !listed(id))
        .unwrap_or_default()
}

/// Countries grouped by the regions (of every version) they fall in.
fn places(policies: &[&Policy]) -> Vec<Place> {
    let regions: Vec<&policy::model::Region> = policies.iter().flat_map(|p| p.regions()).collect();
    let mut by_key: BTreeMap<Vec<bool>, Vec<Country>> = BTreeMap::new();
    for c in Country::all() {
        let key: Vec<bool> = regions.iter().map(|r| r.set.contains(c)).collect();
        by_key.entry(key).or_default().push(c);
    }
    let mut places: Vec<Place> = by_key
        .into_iter()
        .map(|(key, countries)| {
            let mut ids: Vec<String> = Vec::new();
            for (r, inside) in regions.iter().zip(key) {
                if inside && !ids.contains(&r.id) {
                    ids.push(r.id.clone());
                }
            }
            Place {
                countries,
                regions: ids,
            }
        })
        .collect();
    // Regions first, in the order of their first country; elsewhere last.
    places.sort_by(|a, b| {
        (a.is_elsewhere(), a.countries[0]).cmp(&(b.is_elsewhere(), b.countries[0]))
    });
    places
}

/// A request naming the subject alone, placed in `place` by every signal, at the earliest
/// instant.
fn request_for(
    subject: &Subject,
    action: Action,
    place: Country,
    unlisted: &str,
) -> Option<Request> {
    let code = Some(place.alpha2().to_owned());
    let mut record = RequestRecord {
        action: action.as_str().to_owned(),
        at: "2000-01-01T00:00:00Z".to_owned(),
        storefront: code.clone(),
        device_country: code.clone(),
        ip_country: code.clone(),
        billing_country: code.clone(),
        server_country: code,
        ..RequestRecord::default()
    };
    let app = |platform: &str, id: &str| {
        Some(AppRecord {
            platform: platform.to_owned(),
            id: id.to_owned(),
        })
    };
    match subject {
        Subject::Ios(id) => record.app = app("ios", id),
        Subject::Android(id) => record.app = app("android", id),
        Subject::SigningCert(d) => record.signing_cert_sha256 = Some(d.clone()),
        Subject::CodeSha256(d) => record.code_sha256 = vec![d.clone()],
        Subject::Account { store, id } => {
            let platform = match store {
                Store::Apple => "ios",
                Store::Google => "android",
            };
            record.app = app(platform, unlisted);
            record.publisher = Some(PublisherRecord {
                store: store.as_str().to_owned(),
                id: id.clone(),
            });
        }
    }
    // Every identifier comes from a validated policy, which checks them as requests do.
    let mut request = record.into_request().ok()?;
    request.set_at(Instant::MIN);
    Some(request)
}

/// An answer, by ids, so that two versions' answers compare.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Answer {
    /// `allow` or `deny`.
    pub decision: &'static str,
    /// Why an allow is allowed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub because: Option<&'static str>,
    /// The instrument behind the allow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// When the covering prohibition takes effect, for `not-yet-in-force`.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_instant_opt"
    )]
    pub in_force_from: Option<Instant>,
    /// The denying prohibitions.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
    /// The instruments that made them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reason_instruments: Vec<String>,
    /// Non-enforcement orders the posture set aside.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub set_aside: Vec<String>,
    /// The other reading of the windows answers otherwise.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub uncertain: bool,
}

impl Answer {
    /// The answer a decision gives, by ids.
    pub fn of(policy: &Policy, decision: &policy::Decision<'_>) -> Answer {
        let instrument = |i: u32| policy.instrument(i).id.clone();
        let mut answer = Answer {
            decision: "allow",
            because: None,
            by: None,
            in_force_from: None,
            reasons: Vec::new(),
            reason_instruments: Vec::new(),
            set_aside: Vec::new(),
            uncertain: decision.uncertain.is_some(),
        };
        match &decision.verdict {
            Verdict::Deny {
                prohibitions,
                set_aside,
            } => {
                answer.decision = "deny";
                for &p in prohibitions.iter() {
                    let p = policy.prohibition(p);
                    answer.reasons.push(p.id.clone());
                    let i = instrument(p.instrument);
                    if !answer.reason_instruments.contains(&i) {
                        answer.reason_instruments.push(i);
                    }
                }
                answer.set_aside = set_aside.iter().map(|&i| instrument(i)).collect();
            }
            Verdict::Allow {
                because,
                by,
                in_force_from,
            } => {
                answer.because = Some(because.as_str());
                answer.by = by.map(instrument);
                answer.in_force_from = *in_force_from;
            }
        }
        answer
    }

    /// `deny (tiktok-app-store)`, `allow: enjoined by tiktok-v-trump-2020-09-27`.
    pub fn describe(&self) -> String {
        let mut text = if self.decision == "deny" {
            format!("deny ({})", self.reasons.join(", "))
        } else {
            let mut t = format!("allow: {}", self.because.unwrap_or("allowed"));
            if let Some(by) = &self.by {
                t.push_str(&format!(" by {by}"));
            }
            if let Some(from) = self.in_force_from {
                t.push_str(&format!(" (from {from})"));
            }
            t
        };
        if !self.set_aside.is_empty() {
            text.push_str(&format!(", setting aside {}", self.set_aside.join(", ")));
        }
        if self.uncertain {
            text.push_str(" [uncertain]");
        }
        text
    }

    /// Whether the app is reached by no prohibition for this action and place at all.
    pub fn is_untouched(&self) -> bool {
        matches!(
            self.because,
            Some("not-covered" | "action-not-prohibited" | "outside-jurisdiction")
        ) && !self.uncertain
    }

    /// Whether two answers say the same: equal, or both "no prohibition reaches" (not
    /// covered, action not prohibited, outside the jurisdiction), which differ only in how
    /// far a request got before nothing applied.
    pub fn alike(&self, other: &Answer) -> bool {
        self == other || self.is_untouched() && other.is_untouched()
    }

    /// The instruments the answer names.
    pub fn instruments(&self) -> impl Iterator<Item = &String> {
        self.reason_instruments
            .iter()
            .chain(&self.by)
            .chain(&self.set_aside)
    }
}

/// A stretch of time with one answer: from `from` until the next segment's start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// [`Instant::MIN`] for the first segment.
    pub from: Instant,
    /// The answer throughout.
    pub answer: Answer,
}

/// How many segments a time line may have before the walk gives up: far more than any
/// policy makes, so that an engine fault that never advances cannot loop for ever.
const MAX_SEGMENTS: usize = 100_000;

/// The answer to `request` over all time under `posture`, from the engine's own decisions:
/// adjacent segments with the same answer are merged.
pub fn walk(policy: &Policy, request: &mut Request, posture: Posture) -> Vec<Segment> {
    let mut segments: Vec<Segment> = Vec::new();
    let mut at = Instant::MIN;
    for _ in 0..MAX_SEGMENTS {
        request.set_at(at);
        let decision = policy.decide(request, posture);
        let answer = Answer::of(policy, &decision);
        if segments.last().is_none_or(|s| s.answer != answer) {
            segments.push(Segment { from: at, answer });
        }
        match decision.valid_until {
            Some(next) if next > at => at = next,
            _ => break,
        }
    }
    segments
}

/// Where two time lines answer differently: `[from, until)`, `until` `None` for ever.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interval {
    /// [`Instant::MIN`] for "since ever".
    pub from: Instant,
    /// `None` for "for ever".
    pub until: Option<Instant>,
    /// The first time line's answer.
    pub old: Answer,
    /// The second's.
    pub new: Answer,
}

/// The intervals where `old` and `new` answer differently (see [`Answer::alike`]), exactly.
pub fn differences(old: &[Segment], new: &[Segment]) -> Vec<Interval> {
    let mut out: Vec<Interval> = Vec::new();
    let (mut i, mut j) = (0, 0);
    let mut at = Instant::MIN;
    // Each step passes a breakpoint of one side or both: bounded, so that a fault here
    // fails rather than spins.
    for _ in 0..=old.len() + new.len() {
        let (Some(a), Some(b)) = (old.get(i), new.get(j)) else {
            break;
        };
        let next_a = old.get(i + 1).map(|s| s.from);
        let next_b = new.get(j + 1).map(|s| s.from);
        let until = match (next_a, next_b) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, None) => x,
            (None, y) => y,
        };
        if !a.answer.alike(&b.answer) {
            match out.last_mut() {
                Some(last)
                    if last.until == Some(at) && last.old == a.answer && last.new == b.answer =>
                {
                    last.until = until;
                }
                _ => out.push(Interval {
                    from: at,
                    until,
                    old: a.answer.clone(),
                    new: b.answer.clone(),
                }),
            }
        }
        let Some(until) = until else { break };
        if next_a == Some(until) {
            i += 1;
        }
        if next_b == Some(until) {
            j += 1;
        }
        at = until;
    }
    out
}

/// Something an instrument fixes at an instant.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Event {
    /// When.
    #[serde(serialize_with = "serialize_instant")]
    pub at: Instant,
    /// The instrument's id.
    pub instrument: String,
    /// What happens then: `issued`, ``prohibition `x` takes effect``, ...
    pub what: String,
}

/// An optional instant as RFC 3339 text, or `null`.
pub(crate) fn serialize_instant_opt<S: serde::Serializer>(
    at: &Option<Instant>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => s.collect_str(at),
        None => s.serialize_none(),
    }
}

fn serialize_instant<S: serde::Serializer>(at: &Instant, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(at)
}

/// Every instant the policy fixes, with the instrument that fixes it, sorted by instant.
/// A window contributes both its readings.
pub fn events(policy: &Policy) -> Vec<Event> {
    events_of(policy, |_| true)
}

/// The instants that matter to the prohibitions `relevant` accepts: when they take effect
/// and end, what changes to them do, and when the instruments that make them or change them
/// were issued. Sorted by instant.
pub fn events_of(policy: &Policy, relevant: impl Fn(u32) -> bool) -> Vec<Event> {
    let mut out = Vec::new();
    let mut moment = |m: &policy::model::Moment, instrument: &str, what: String| {
        if m.is_window() {
            for (at, reading) in [(m.earliest, "earliest"), (m.latest, "latest")] {
                out.push(Event {
                    at,
                    instrument: instrument.to_owned(),
                    what: format!("{what} ({reading} reading)"),
                });
            }
        } else {
            out.push(Event {
                at: m.earliest,
                instrument: instrument.to_owned(),
                what,
            });
        }
    };
    let mut instruments = vec![false; policy.instruments().len()];
    for (pi, p) in policy.prohibitions().iter().enumerate() {
        if !relevant(pi as u32) {
            continue;
        }
        instruments[p.instrument as usize] = true;
        let ins = &policy.instrument(p.instrument).id;
        moment(&p.effective, ins, format!("`{}` takes effect", p.id));
        if let Some(end) = &p.end {
            moment(end, ins, format!("`{}` ends", p.id));
        }
    }
    for c in policy.changes() {
        if !c.targets.iter().any(|&t| relevant(t)) {
            continue;
        }
        instruments[c.instrument as usize] = true;
        let ins = &policy.instrument(c.instrument).id;
        match &c.kind {
            ChangeKind::Delay { effective } => {
                moment(effective, ins, "delayed effective instant".to_owned());
            }
            ChangeKind::Relief {
                relief,
                from,
                until,
            } => {
                let kind = match relief {
                    policy::model::Relief::Injunction => "injunction",
                    policy::model::Relief::NonEnforcement => "non-enforcement",
                };
                moment(from, ins, format!("{kind} begins"));
                if let Some(until) = until {
                    moment(until, ins, format!("{kind} ends"));
                }
            }
            ChangeKind::Revocation { from } => moment(from, ins, "revocation".to_owned()),
            ChangeKind::Exemption { from, .. } => moment(from, ins, "exemption".to_owned()),
        }
    }
    for (i, ins) in policy.instruments().iter().enumerate() {
        if instruments[i] {
            moment(&ins.issued, &ins.id, "issued".to_owned());
        }
    }
    out.sort_by_key(|e| e.at);
    out
}

/// The events of `events` (sorted) at exactly `at`.
pub fn events_at(events: &[Event], at: Instant) -> &[Event] {
    let start = events.partition_point(|e| e.at < at);
    let end = events.partition_point(|e| e.at <= at);
    &events[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(decision: &'static str, because: Option<&'static str>) -> Answer {
        Answer {
            decision,
            because,
            by: None,
            in_force_from: None,
            reasons: Vec::new(),
            reason_instruments: Vec::new(),
            set_aside: Vec::new(),
            uncertain: false,
        }
    }

    fn at(n: i64) -> Instant {
        Instant::from_nanos(n)
    }

    #[test]
    fn differences_are_exact_at_every_breakpoint_of_either_side() {
        let allow = answer("allow", Some("not-yet-in-force"));
        let deny = answer("deny", None);
        let old = vec![
            Segment {
                from: Instant::MIN,
                answer: allow.clone(),
            },
            Segment {
                from: at(10),
                answer: deny.clone(),
            },
        ];
        let new = vec![
            Segment {
                from: Instant::MIN,
                answer: allow.clone(),
            },
            Segment {
                from: at(20),
                answer: deny.clone(),
            },
            Segment {
                from: at(30),
                answer: allow.clone(),
            },
        ];
        let d = differences(&old, &new);
        assert_eq!(d.len(), 2, "{d:?}");
        assert_eq!((d[0].from, d[0].until), (at(10), Some(at(20))));
        assert_eq!((&d[0].old, &d[0].new), (&deny, &allow));
        assert_eq!((d[1].from, d[1].until), (at(30), None));
        assert!(differences(&old, &old).is_empty());
        assert!(differences(&new, &new).is_empty());
    }

    /// Time lines that split a stretch with one answer (as a caller's own may) still give
    /// one interval for it.
    #[test]
    fn adjacent_differences_with_the_same_answers_merge() {
        let a = answer("allow", Some("not-yet-in-force"));
        let b = answer("deny", None);
        let old = vec![
            Segment {
                from: Instant::MIN,
                answer: a.clone(),
            },
            Segment {
                from: at(5),
                answer: a.clone(),
            },
            Segment {
                from: at(9),
                answer: b.clone(),
            },
        ];
        let new = vec![Segment {
            from: Instant::MIN,
            answer: b.clone(),
        }];
        let d = differences(&old, &new);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!((d[0].from, d[0].until), (Instant::MIN, Some(at(9))));
    }

    /// A decision's answer names the denying prohibitions' instruments once each, and every
    /// instrument it rests on.
    #[test]
    fn answers_name_their_instruments() {
        let mut deny = answer("deny", None);
        deny.reasons = vec!["p".into(), "q".into()];
        deny.reason_instruments = vec!["order".into()];
        deny.set_aside = vec!["eo".into()];
        let named: Vec<&String> = deny.instruments().collect();
        assert_eq!(named, ["order", "eo"]);
        let mut allow = answer("allow", Some("enjoined"));
        allow.by = Some("court".into());
        assert_eq!(allow.instruments().collect::<Vec<_>>(), ["court"]);
        assert!(!allow.is_untouched());
        assert!(
            answer("allow", Some("outside-jurisdiction"))
                .alike(&answer("allow", Some("not-covered")))
        );
        assert!(!answer("allow", Some("exempt")).alike(&answer("allow", Some("not-covered"))));
    }

    const POLICY: &str = r#"
[instrument]
id = "order"
kind = "statute"
title = "Order"
authority = "A"
citation = "1 XR 1"
source = "https://example.org/order"
issued = 2021-01-01T00:00:00Z

[[region]]
id = "R"
name = "R"
countries = ["US"]

[[entity]]
id = "e"
name = "E"

[[app]]
id = "a"
name = "A"
owner = "e"
android = ["com.example.a"]

[[prohibition]]
id = "p0"
apps = ["a"]
actions = ["payment"]
region = "R"
jurisdiction = [["storefront"]]
effective = 2021-02-01T00:00:00Z
text = "t"

[[prohibition]]
id = "p1"
apps = ["a"]
actions = ["payment"]
region = "R"
jurisdiction = [["device_country"]]
effective = 2021-02-01T00:00:00Z
text = "t"

[[prohibition]]
id = "p2"
apps = ["a"]
actions = ["payment"]
region = "R"
jurisdiction = [["ip_country"]]
effective = 2021-02-01T00:00:00Z
text = "t"

[[prohibition]]
id = "p3"
apps = ["a"]
actions = ["payment"]
region = "R"
jurisdiction = [["billing_country"]]
effective = 2021-02-01T00:00:00Z
text = "t"

[[prohibition]]
id = "p4"
apps = ["a"]
actions = ["payment"]
region = "R"
jurisdiction = [["server_country"]]
effective = 2021-02-01T00:00:00Z
text = "t"
"#;

    /// The domain places a request by every signal at once: outside the regions no
    /// prohibition, each of which tests one signal, assumes the request inside; inside, all
    /// five deny, with the reasons' instrument named once.
    #[test]
    fn places_are_given_by_every_signal() {
        let policy = Policy::from_sources([policy::Source::new("p.toml", POLICY)]).unwrap();
        let domain = Domain::new(&[&policy]);
        assert_eq!(domain.places.len(), 2);
        let group = &domain.groups[0];
        for place in &domain.places {
            let mut request = group
                .request(Action::Payment, place.country(), &domain.unlisted)
                .unwrap();
            let line = walk(&policy, &mut request, Posture::default());
            let last = &line.last().unwrap().answer;
            if place.is_elsewhere() {
                assert!(
                    line.iter().all(|s| s.answer.decision == "allow"),
                    "{line:?}"
                );
            } else {
                assert_eq!(last.decision, "deny");
                assert_eq!(last.reasons, ["p0", "p1", "p2", "p3", "p4"]);
                assert_eq!(last.reason_instruments, ["order"]);
            }
        }
    }
}
