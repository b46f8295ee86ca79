//! Stage three: the compiled index and the decision function.
//!
//! For every app and action the covering prohibitions are known at compile time, so
//! the whole answer over time is precomputed, from the rules in [`crate::law`], as a
//! time line per posture and per combination of the jurisdiction tests involved that a
//! request can give. A decision is then a hash lookup of the app, a test per
//! jurisdiction, and a search of the time line. Requests judged in hindsight
//! (`known_at`) read time lines of their own, one set per epoch of what is known.
//!
//! Building them is linear in the entries: an entry's lines depend only on the
//! prohibitions of its action and on when the first covering prohibition becomes known,
//! so entries that agree on those share them; each prohibition's status is found once
//! per instant, reading of windows and knowledge, and every combination of tests is
//! answered from those statuses ([`law::Standing`]).
//!
//! What a decision reads is laid out for a catalogue too large for the cache, whose
//! requests come in no particular order: one bucket of the identifier table
//! ([`IdTable`]), keys inline, gives the app, its owner and its coverage; the coverage's
//! entry for the action has a [`Lane`], one line of the processor's cache (its tests,
//! where its time lines start, and the places of its default posture's first four); a
//! test holds its region's countries; a time line is a range of one array of
//! [`Segment`]s, shared by every entry with the same answers (the default path's apart
//! from those in hindsight, and the default posture's segments before the other
//! postures', so that what it reads stays small), each segment carrying what the default
//! path needs of its judgement (whether it denies, the prohibition it reports, whose test
//! is in a small table). With few prohibitions only the bucket is likely to be far away,
//! the rest being small and shared by the apps of a coverage; with many (a thousand),
//! the lanes and segments outgrow the cache too, and a decision waits for the bucket, the
//! lane and the segments.

use rustc_hash::FxHashMap as HashMap;
use std::borrow::Cow;

use serde::{Deserialize, Serialize};

mod ids;
mod image;

pub use image::{ImageError, image_build};

use crate::action::Action;
use crate::country::{Country, CountrySet};
use crate::instant::Instant;
use crate::law::{
    self, AllowReason, Coverage, Judgement, NonEnforcement, Outcome, Posture, Uncertain,
};
use crate::model::*;
use crate::request::{Platform, Request, Signal, SignalSet, Store};
use crate::validate::{Model, descends_from};
use ids::{IdTable, Kind, Target};
/// Bytes read as words, for the wire's readers too.
pub(crate) use ids::{short, word};

/// Up to this many distinct jurisdiction tests for one app and action, an entry's time
/// lines are laid out for every mask of passed tests and its tests are in its [`Lane`];
/// beyond, only for the masks a request can give (see [`Wide`]).
const MAX_INDEXED_TESTS: usize = 6;

/// At most this many distinct jurisdiction tests for one app and action are indexed (a
/// mask is a `u64`); beyond, the entry is decided by scanning.
const MAX_WIDE_TESTS: usize = 64;

/// At most this many kinds of request, as far as an entry's tests can tell them apart, are
/// kept while the masks of passed tests a request can give are found.
const MAX_KINDS: usize = 1 << 16;

/// At most this many masks a request can give are indexed for an entry with more than
/// [`MAX_INDEXED_TESTS`] tests; beyond, the entry is decided by scanning.
const MAX_WIDE_MASKS: usize = 1 << 10;

/// Marks a target as an entity known by a publisher account, not an app.
const ENTITY: u32 = 1 << 31;

/// No time lines (an entry decided by scanning), or no prohibition to report.
const NONE: u32 = u32::MAX;

/// A time line: its segments, `Timelines::segments[start..start + len]` (the first starts
/// at [`Instant::MIN`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Line {
    start: u32,
    len: u32,
}

/// A segment of a time line: where it starts, its judgement, and what the default path
/// needs of that judgement (whether it denies, the prohibition it reports: see
/// [`reported`]), in one record of 16 bytes. The search's reads of the starts then bring
/// what a decision needs, where a judgement apart from the starts and a table of what
/// each judgement reports were two more reads, far apart in a policy of many
/// prohibitions (whose time lines are many and do not fit in the cache).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct Segment {
    start: Instant,
    /// The judgement, in `Index::judgements`, with [`DENIES`] set where it denies.
    judged: u32,
    /// The prohibition whose jurisdiction test the decision reports, or [`NONE`].
    reports: ProhibitionIdx,
}

const _: () = assert!(size_of::<Segment>() == 16 && size_of::<Lane>() == 64);

/// The bit of [`Segment::judged`] set where the judgement denies (there are fewer than
/// 2^31 judgements: each is a distinct outcome kept in memory).
const DENIES: u32 = 1 << 31;

impl Segment {
    /// The segment starting at `start` whose judgement is `judgement`, of this outcome.
    fn new(start: Instant, judgement: u32, outcome: &Outcome) -> Segment {
        debug_assert!(judgement < DENIES, "fewer than 2^31 judgements");
        let (deny, reports) = reported(outcome);
        Segment {
            start,
            judged: judgement | if deny { DENIES } else { 0 },
            reports: reports.unwrap_or(NONE),
        }
    }

    /// The judgement, in `Index::judgements`.
    #[inline]
    fn judgement(self) -> u32 {
        self.judged & !DENIES
    }

    #[inline]
    fn denies(self) -> bool {
        self.judged & DENIES != 0
    }
}

/// Up to this many segments (256 bytes: four or five lines of the cache), a time line is
/// searched by counting, beyond by halving.
const LINEAR: usize = 16;

/// Time lines, each stored once, and their segments.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Timelines {
    lines: Vec<Line>,
    /// The segments of every distinct time line.
    segments: Vec<Segment>,
}

impl Timelines {
    /// The segment of a time line at an instant, and the start of the next one.
    #[inline]
    fn at(&self, line: Line, at: Instant) -> (Segment, Option<Instant>) {
        let Line { start, len } = line;
        let segments = &self.segments[start as usize..(start + len) as usize];
        // The segments that start by `at`, counted: in a short line (most are), every read
        // is independent of the others, so their waits for memory overlap, where each
        // step of a binary search waits for the one before.
        let started = if segments.len() <= LINEAR {
            segments.iter().filter(|s| s.start <= at).count()
        } else {
            segments.partition_point(|s| s.start <= at)
        };
        let i = started.saturating_sub(1);
        (segments[i], segments.get(i + 1).map(|s| s.start))
    }

    /// Lays the segments out again, those of the lines `first` names first (in that
    /// order, each stored line once), then the others as they were; every line keeps its
    /// segments. The lines a decision reads most then share cache lines with each other
    /// rather than with lines it never reads.
    fn lay_out(&mut self, first: impl IntoIterator<Item = usize>) {
        let mut moved: HashMap<u32, u32> = HashMap::default();
        let mut segments = Vec::with_capacity(self.segments.len());
        let order = first.into_iter().chain(0..self.lines.len());
        for line in order {
            let Line { start, len } = self.lines[line];
            moved.entry(start).or_insert_with(|| {
                let range = start as usize..(start + len) as usize;
                let at = segments.len() as u32;
                segments.extend_from_slice(&self.segments[range]);
                at
            });
        }
        for line in &mut self.lines {
            line.start = moved[&line.start];
        }
        self.segments = segments;
    }

    /// A time line with these segments, stored once.
    fn store(&mut self, ids: &mut HashMap<Vec<Segment>, Line>, segments: &[Segment]) -> Line {
        if let Some(&line) = ids.get(segments) {
            return line;
        }
        let line = Line {
            start: self.segments.len() as u32,
            len: segments.len() as u32,
        };
        self.segments.extend_from_slice(segments);
        ids.insert(segments.to_vec(), line);
        line
    }
}

/// A jurisdiction test: a region and the groups of signals that must each be in it,
/// with what a decision reads of them at hand (the region's countries, the groups in
/// `Index::groups`, and again in one word).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Test {
    region: RegionIdx,
    set: CountrySet,
    /// `Index::groups[groups.0..groups.1]`.
    groups: (u32, u32),
    /// The groups one to a byte, the first in the lowest (see [`pack`]): made once the
    /// index is complete (see [`Index::complete`]), not written in an image.
    #[serde(skip)]
    packed: u64,
}

/// The most groups a test has: a signal is in one group at most, and a group has one
/// signal at least (an image with more is refused).
const MAX_GROUPS: usize = Signal::ALL.len();

/// Groups of signals (at most [`MAX_GROUPS`]), one to a byte of a word, the first in the
/// lowest; the bytes beyond hold no signal.
fn pack(groups: &[SignalSet]) -> u64 {
    debug_assert!(groups.len() <= MAX_GROUPS);
    (groups.iter().enumerate()).fold(0, |word, (i, &g)| word | u64::from(u8::from(g)) << (8 * i))
}

/// How many of a lane's time lines of the default posture it keeps itself.
const NEAR: usize = 4;

/// What the default path reads of an entry, in one place: a line of the processor's
/// cache.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[repr(align(64))]
struct Lane {
    /// The entry's distinct jurisdiction tests (in `Index::tests`), the first
    /// `tests_len`; bit `i` of a mask stands for `tests[i]`. With more than
    /// [`MAX_INDEXED_TESTS`] tests, `tests[0]` is the entry's [`Wide`] in `Index::wide`.
    tests: [u32; MAX_INDEXED_TESTS],
    tests_len: u8,
    /// The first of the entry's time lines in `Index::timelines`, one per posture and mask
    /// (`posture.index() << tests_len | mask`; with more tests, `posture.index() *
    /// masks + ` the mask's position among the [`Wide`]'s masks); [`NONE`] when the
    /// entry is decided by scanning.
    lines: u32,
    /// The default posture's time lines of the first [`NEAR`] slots (all of them for an
    /// entry of up to two tests, as most are): copies of those in `Index::timelines`,
    /// made once the lines are laid out (see [`Index::keep_near`]), not written in an
    /// image. A decision on the default path then reads its time line's place with the
    /// lane, where the table of lines, large in a policy of many prohibitions, would be
    /// one more wait for memory.
    #[serde(skip)]
    near: [Line; NEAR],
}

/// The time lines of an entry with more than [`MAX_INDEXED_TESTS`] tests: its tests, and
/// the masks of passed tests a request can give, sorted (a line for each).
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct Wide {
    /// `Index::wide_tests[tests.0..tests.1]`.
    tests: (u32, u32),
    /// `Index::masks[masks.0..masks.1]`.
    masks: (u32, u32),
}

/// What a judgement in hindsight reads of an entry.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct Hindsight {
    /// The instants at which what is known changes, `Index::epochs[epochs.0..epochs.1]`
    /// (every edge of every issue window of the instruments the answer depends on):
    /// epoch `i` is judged with what was issued by the `i`-th (epoch 0: nothing).
    epochs: (u32, u32),
    /// The first of the time lines of each epoch in `Index::hindsight_timelines`, laid out as the
    /// lane's, epoch after epoch (`epoch * 4 + posture.index()` in place of the
    /// posture's index); [`NONE`] when the entry is decided by scanning.
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
    test_of: Vec<u32>,
    /// Every instant at which the answer may change, sorted (from every covering
    /// prohibition: the scan does not rely on what the time lines leave out).
    instants: Vec<Instant>,
}

/// What a decision needs of a judgement, beside it.
#[derive(Clone, Copy, Debug)]
struct Brief {
    deny: bool,
    /// The prohibition whose jurisdiction test the decision reports (see [`reported`]),
    /// or [`NONE`].
    reports: ProhibitionIdx,
    /// Its test in `Index::tests`.
    test: u32,
}

impl Brief {
    /// Whether the judgement denies, and the prohibition it reports (or [`NONE`]), with
    /// that prohibition's test.
    #[inline]
    fn of(deny: bool, reports: ProhibitionIdx, prohibition_tests: &[u32]) -> Brief {
        Brief {
            deny,
            reports,
            test: match reports {
                NONE => NONE,
                p => prohibition_tests[p as usize],
            },
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    /// Every identifier and publisher account; app ids match whatever their letter case.
    ids: IdTable,
    /// Per coverage, the entry for each action.
    coverages: Vec<[u32; 7]>,
    entries: Vec<Entry>,
    /// Per entry, its lane, and what a judgement in hindsight reads.
    lanes: Vec<Lane>,
    hindsight: Vec<Hindsight>,
    epochs: Vec<Instant>,
    /// The entries with more than [`MAX_INDEXED_TESTS`] tests: their tests and masks.
    wide: Vec<Wide>,
    wide_tests: Vec<u32>,
    masks: Vec<u64>,
    /// The distinct jurisdiction tests.
    tests: Vec<Test>,
    /// Their groups of signals.
    groups: Vec<SignalSet>,
    /// Per prohibition, its test in `tests`.
    prohibition_tests: Vec<u32>,
    /// The time lines judged with what was issued by each instant (what the default path
    /// reads, kept apart so that it stays small), and those of judgements in hindsight.
    timelines: Timelines,
    hindsight_timelines: Timelines,
    judgements: Vec<Judgement>,
    changes_of: Vec<Vec<ChangeIdx>>,
}

impl Lane {
    /// The first of the lane's time lines of a posture, in `Index::timelines` (a block of
    /// `slots` lines per posture).
    #[inline]
    fn first_line(&self, posture: Posture, slots: usize) -> usize {
        self.lines as usize + posture.index() * slots
    }
}

impl Index {
    /// How many time lines a lane has per posture: one per mask of its tests, or per mask
    /// of its [`Wide`].
    fn slots(&self, lane: &Lane) -> usize {
        if usize::from(lane.tests_len) > MAX_INDEXED_TESTS {
            let wide = self.wide[lane.tests[0] as usize];
            (wide.masks.1 - wide.masks.0) as usize
        } else {
            1 << lane.tests_len
        }
    }

    /// What a decision reads that an image does not hold: each lane's nearest lines
    /// (see [`Index::keep_near`]) and each test's groups in one word.
    fn complete(&mut self) {
        self.keep_near();
        for test in &mut self.tests {
            test.packed = pack(&self.groups[test.groups.0 as usize..test.groups.1 as usize]);
        }
    }

    /// Copies into each lane its default posture's first [`NEAR`] time lines.
    fn keep_near(&mut self) {
        for i in 0..self.lanes.len() {
            let lane = self.lanes[i];
            if lane.lines == NONE {
                continue;
            }
            let slots = self.slots(&lane);
            let first = lane.first_line(Posture::default(), slots);
            for (slot, near) in self.lanes[i].near.iter_mut().enumerate().take(slots) {
                *near = self.timelines.lines[first + slot];
            }
        }
    }

    /// The time lines a posture reads on the default path, lane after lane (a lane's
    /// lines, those of each posture in turn, are a block of `slots` each).
    fn lines_of(&self, posture: Posture) -> impl Iterator<Item = usize> + '_ {
        self.lanes
            .iter()
            .filter(|lane| lane.lines != NONE)
            .flat_map(move |lane| {
                let slots = self.slots(lane);
                let from = lane.first_line(posture, slots);
                from..from + slots
            })
    }
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

    /// What the decision's JSON fields are written from ([`AnswerKey`]); `None` for a
    /// judgement made for this request alone (several covered apps in it, or an entry the
    /// index answers by scanning its prohibitions).
    pub fn answer_key(&self) -> Option<AnswerKey> {
        let judgement = match self.judgement {
            JudgementRef::Interned(i) => Some(i),
            JudgementRef::NotCovered => None,
            JudgementRef::Owned(_) => return None,
        };
        Some(AnswerKey {
            judgement,
            matched: self.matched,
            placement: self.placement,
            valid_until: self.valid_until,
        })
    }
}

/// What a decision's JSON fields ([`crate::DecisionJson::write_fields`]) are written from:
/// its judgement (what it decides, why, and how uncertain), what matched, where the request
/// was placed, and `valid_until`; not the instants it was asked at. Two decisions of one
/// policy with equal keys have the same fields, byte for byte.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct AnswerKey {
    judgement: Option<u32>,
    matched: Option<(u32, u32, MatchedBy, bool)>,
    placement: Option<Placement>,
    valid_until: Option<Instant>,
}

impl AnswerKey {
    /// The key mixed into 64 bits, its low bits as good as its high ones: for a table of
    /// keys (equal keys mix alike; unequal keys may too).
    pub fn mix(&self) -> u64 {
        let add = |h: u64, v: u64| (h ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29);
        let matched = self.matched.map_or(u64::MAX, |(target, owner, by, case)| {
            (u64::from(target) << 32 | u64::from(owner)) ^ (by as u64) << 60 ^ u64::from(case) << 59
        });
        let placed = self.placement.map_or(u64::MAX, |p| {
            let signal = p
                .signal
                .map_or(0, |(s, c)| (s as u64) << 8 | u64::from(u8::from(c)));
            (u64::from(p.region) << 32 | u64::from(p.prohibition))
                ^ signal << 40
                ^ u64::from(p.assumed) << 56
        });
        let until = self.valid_until.map_or(u64::MAX, |i| i.as_nanos() as u64);
        let h = add(u64::from(self.judgement.unwrap_or(u32::MAX)), matched);
        add(add(h, placed), until)
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
/// (`signal`: the country of each signal the request carries.)
#[inline]
fn place(
    set: &CountrySet,
    groups: &[SignalSet],
    signal: impl Fn(Signal) -> Option<Country>,
) -> Option<Placed> {
    let mut first = None;
    let mut assumed = 0u8;
    for (gi, group) in groups.iter().enumerate() {
        let mut carried = false;
        let mut hit = None;
        for s in group.iter() {
            if let Some(c) = signal(s) {
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

/// A request's countries, by [`Signal`] order (`None` where it carries none).
type Signals = [Option<Country>; 5];

/// The signals a request carries: bit `s` for [`Signal`] `s`, as in a [`SignalSet`].
#[inline]
fn carried(signals: &Signals) -> u8 {
    (signals.iter().enumerate()).fold(0, |bits, (s, c)| bits | u8::from(c.is_some()) << s)
}

/// Whether a request passes a jurisdiction test, as [`place`] tells (`Some`), without a
/// branch on the request's countries: they vary from one request to the next, so that
/// each branch on them is a guess the processor often gets wrong, and a decision of a
/// policy of many prohibitions, whose lanes have several tests, paid for the guesses
/// more than for the rest of the test. A group passes when the request carries none of
/// its signals, or one of them in the region: all the groups (`packed`, see [`pack`])
/// are tried at once, a byte each. `carried`: see [`carried`].
#[inline]
fn passes(set: &CountrySet, packed: u64, signals: &Signals, carried: u8) -> bool {
    let held = (signals.iter().enumerate()).fold(0u8, |bits, (s, c)| {
        bits | u8::from(c.is_some_and(|c| set.contains(c))) << s
    });
    // In each byte, a group's signals carried, and those in the region. A byte holds
    // five bits at most, so adding 0x7f to each sets its top bit exactly where it is not
    // zero, and carries nothing into the next.
    const ONES: u64 = 0x0101_0101_0101_0101;
    let some = |bits: u8| (((u64::from(bits) * ONES) & packed) + 0x7f * ONES) & (0x80 * ONES);
    some(carried) & !some(held) == 0
}

/// The masks of passed tests (bit `i` for `tests[i]`, in `Index::tests`) that a request
/// can give, sorted; `None` when there are more than [`MAX_WIDE_TESTS`] tests or more than
/// [`MAX_KINDS`] kinds of request to follow. A test reads a signal's country only by
/// whether its region holds it, so requests are followed signal by signal, each absent or
/// in one country of each class that the regions of the tests reading it hold alike, as
/// what the tests have seen so far: for each test and group, whether a signal of the group
/// was carried, and whether one was in the region (see [`place`]).
fn realizable(index: &Index, tests: &[u32]) -> Option<Vec<u64>> {
    if tests.len() > MAX_WIDE_TESTS {
        return None;
    }
    let groups = |t: u32| {
        let t = &index.tests[t as usize];
        &index.groups[t.groups.0 as usize..t.groups.1 as usize]
    };
    // Per test, two bits per group: `1 << 2g`, carried; `2 << 2g`, in the region.
    let mut kinds: Vec<Vec<u16>> = vec![vec![0; tests.len()]];
    for s in Signal::ALL {
        // The group of each test that reads the signal.
        let reading: Vec<(usize, usize, &CountrySet)> = tests
            .iter()
            .enumerate()
            .filter_map(|(i, &t)| {
                let g = groups(t).iter().position(|g| g.contains(s))?;
                Some((i, g, &index.tests[t as usize].set))
            })
            .collect();
        let mut classes: Vec<u64> = Vec::new();
        for c in Country::all() {
            let class = reading
                .iter()
                .enumerate()
                .fold(0u64, |b, (i, (_, _, set))| {
                    b | u64::from(set.contains(c)) << i
                });
            if !classes.contains(&class) {
                classes.push(class);
            }
        }
        let mut next: Vec<Vec<u16>> = Vec::with_capacity(kinds.len() * (classes.len() + 1));
        for kind in &kinds {
            // Absent.
            next.push(kind.clone());
            for class in &classes {
                let mut kind = kind.clone();
                for (r, &(i, g, _)) in reading.iter().enumerate() {
                    let held = class >> r & 1 != 0;
                    kind[i] |= (1 | u16::from(held) << 1) << (2 * g);
                }
                next.push(kind);
            }
        }
        next.sort_unstable();
        next.dedup();
        if next.len() > MAX_KINDS {
            return None;
        }
        kinds = next;
    }
    let mut masks: Vec<u64> = kinds
        .iter()
        .map(|kind| {
            tests.iter().enumerate().fold(0u64, |mask, (i, &t)| {
                // Passed: every group carried has a signal in the region.
                let passes = (0..groups(t).len()).all(|g| {
                    let seen = kind[i] >> (2 * g) & 3;
                    seen != 1
                });
                mask | u64::from(passes) << i
            })
        })
        .collect();
    masks.sort_unstable();
    masks.dedup();
    Some(masks)
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
        // (How the one app was matched is taken from here, not read back from its
        // judgement.)
        let (judged, by, case) = if more.is_empty() {
            (
                self.judge(found, by, case, request, posture, scan),
                by,
                case,
            )
        } else {
            let all = std::iter::once((found, by, case))
                .chain(more)
                .map(|(found, by, case)| self.judge(found, by, case, request, posture, scan))
                .collect();
            let judged = self.combine(all, request, posture);
            let (by, case) = (judged.matched_by, judged.case_insensitive);
            (judged, by, case)
        };
        DecisionParts {
            deny: judged.deny,
            judgement: judged.judgement,
            matched: Some((judged.target, judged.owner, by, case)),
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
    /// any denies, naming every denying prohibition; otherwise the weakest relief.
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
            let reported = reported(&outcomes[pick]).1.map(|p| {
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

    /// Whether a request passes one of the index's jurisdiction tests: see [`passes`].
    #[inline]
    fn passes(&self, test: u32, signals: &Signals, carried: u8) -> bool {
        let t = &self.index.tests[test as usize];
        passes(&t.set, t.packed, signals, carried)
    }

    /// Where a request is placed by one of the index's jurisdiction tests: see [`place`].
    #[inline]
    fn place(&self, test: u32, request: &Request) -> Option<Placed> {
        let t = &self.index.tests[test as usize];
        let groups = &self.index.groups[t.groups.0 as usize..t.groups.1 as usize];
        place(&t.set, groups, |s| request.signal(s))
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
        let wide = usize::from(lane.tests_len) > MAX_INDEXED_TESTS;
        let (judgement, brief, valid_until) = if !scan && lane.lines != NONE {
            // Each test once: whether the request passes it; bit `i` of the mask: the
            // request passes `tests[i]`. The time line of each posture is that of the
            // mask; with more tests, that of the mask's position among the masks a
            // request can give.
            let (slot, slots) = if wide {
                self.wide_slot(lane, request)
            } else {
                let carried = carried(&request.signals);
                let tests = &lane.tests[..usize::from(lane.tests_len)];
                let mut mask = 0usize;
                for (bit, &t) in tests.iter().enumerate() {
                    mask |= usize::from(self.passes(t, &request.signals, carried)) << bit;
                }
                (mask, 1 << tests.len())
            };
            let timelines = &self.index.timelines;
            let (lines, line) = match request.known_at {
                // The default path: the time line's place is in the lane.
                None if slot < NEAR && posture == Posture::default() => {
                    (timelines, lane.near[slot])
                }
                None => (
                    timelines,
                    timelines.lines[lane.first_line(posture, slots) + slot],
                ),
                // In hindsight: the time line of what was known at `known_at`.
                Some(k) => {
                    let h = self.index.hindsight[e];
                    let epochs = &self.index.epochs[h.epochs.0 as usize..h.epochs.1 as usize];
                    let epoch = epochs.partition_point(|e| *e <= k);
                    let lines = &self.index.hindsight_timelines;
                    let line = h.lines as usize
                        + (epoch * Posture::ALL.len() + posture.index()) * slots
                        + slot;
                    (lines, lines.lines[line])
                }
            };
            let (segment, valid_until) = lines.at(line, request.at);
            let brief = Brief::of(
                segment.denies(),
                segment.reports,
                &self.index.prohibition_tests,
            );
            (
                JudgementRef::Interned(segment.judgement()),
                brief,
                valid_until,
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
        let placement = self.placed_again(brief, request);
        Judged {
            judgement,
            deny: brief.deny,
            target: found.target,
            owner: found.owner,
            coverage: found.coverage,
            matched_by,
            case_insensitive,
            placement,
            valid_until,
        }
    }

    /// For a lane with more than [`MAX_INDEXED_TESTS`] tests: the position of the mask of
    /// tests the request passes among the masks a request can give, and their number.
    #[inline(never)]
    fn wide_slot(&self, lane: &Lane, request: &Request) -> (usize, usize) {
        let wide = self.index.wide[lane.tests[0] as usize];
        let tests = &self.index.wide_tests[wide.tests.0 as usize..wide.tests.1 as usize];
        let masks = &self.index.masks[wide.masks.0 as usize..wide.masks.1 as usize];
        let carried = carried(&request.signals);
        let mask = tests.iter().enumerate().fold(0u64, |mask, (bit, &t)| {
            mask | u64::from(self.passes(t, &request.signals, carried)) << bit
        });
        let at = masks.binary_search(&mask);
        debug_assert!(at.is_ok(), "a request gives one of the masks indexed");
        (at.unwrap_or_default(), masks.len())
    }

    /// Where the request was placed by the test of the prohibition a judgement reports
    /// (the lanes keep only whether each test passes: the signal that placed it, and the
    /// groups assumed, are read again for that one test).
    #[inline(never)]
    fn placed_again(&self, brief: Brief, request: &Request) -> Option<Placement> {
        if brief.reports == NONE {
            return None;
        }
        self.place(brief.test, request)
            .map(|(signal, assumed)| Placement {
                region: self.index.tests[brief.test as usize].region,
                prohibition: brief.reports,
                signal,
                assumed,
            })
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

/// Whether an outcome denies, and the prohibition whose jurisdiction test the decision
/// reports: the first denying one, or the first judged when the covering prohibitions
/// are not in force. Both come from the entry's `with_action` (see `law::outcome`).
fn reported(outcome: &Outcome) -> (bool, Option<ProhibitionIdx>) {
    match outcome {
        Outcome::Deny { prohibitions, .. } => (true, prohibitions.first().copied()),
        Outcome::Allow { judged, .. } => (false, *judged),
    }
}

/// What a decision needs of an outcome, beside it (see [`reported`]).
fn brief(outcome: &Outcome, prohibition_tests: &[u32]) -> Brief {
    let (deny, reports) = reported(outcome);
    Brief::of(deny, reports.unwrap_or(NONE), prohibition_tests)
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
    let mut index = Index::default();
    let mut changes_of: Vec<Vec<ChangeIdx>> = vec![Vec::new(); model.prohibitions.len()];
    for (ci, c) in model.changes.iter().enumerate() {
        for &p in &c.targets {
            changes_of[p as usize].push(ci as ChangeIdx);
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
                        packed: 0,
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
    let mut exemptions_of: Vec<Vec<ChangeIdx>> = vec![Vec::new(); model.apps.len()];
    for (ci, c) in model.changes.iter().enumerate() {
        if let ChangeKind::Exemption { apps, .. } = &c.kind {
            for &a in apps {
                if let Some(named) = exemptions_of.get_mut(a as usize)
                    && named.last() != Some(&(ci as ChangeIdx))
                {
                    named.push(ci as ChangeIdx);
                }
            }
        }
    }
    let mut builder = Builder {
        model,
        exemptions_of,
        changes_of: &changes_of,
        index: &mut index,
        by_key: HashMap::default(),
        entry_ids: HashMap::default(),
        outcomes: Vec::new(),
        outcome_ids: HashMap::default(),
        judgement_ids: HashMap::default(),
        line_ids: HashMap::default(),
        hindsight_line_ids: HashMap::default(),
        scratch: Vec::new(),
        lane_ids: HashMap::default(),
        masks_of: HashMap::default(),
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
    let mut judgements: Vec<(u32, (u32, Option<Uncertain>))> =
        builder.judgement_ids.drain().map(|(j, i)| (i, j)).collect();
    judgements.sort_by_key(|(i, _)| *i);
    let outcomes = std::mem::take(&mut builder.outcomes);
    // The default posture's lines first: the segments a store's decisions read, a third
    // of them or less where the postures disagree, then lie together.
    let first: Vec<usize> = index.lines_of(Posture::default()).collect();
    index.timelines.lay_out(first);
    index.complete();
    index.changes_of = changes_of;
    index.judgements = judgements
        .into_iter()
        .map(|(_, (outcome, uncertain))| Judgement {
            outcome: outcomes[outcome as usize].clone(),
            uncertain,
        })
        .collect();
    // The table sized for every identifier at once.
    let apps = model.apps.iter().flat_map(|a| {
        [
            (Kind::Ios, a.ios()),
            (Kind::Android, a.android()),
            (Kind::SigningCert, a.signing_cert_sha256()),
            (Kind::CodeSha256, a.code_sha256()),
        ]
        .into_iter()
        .flat_map(|(kind, ids)| ids.map(move |id| (kind, id)))
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
            (Kind::Ios, app.ios()),
            (Kind::Android, app.android()),
            (Kind::SigningCert, app.signing_cert_sha256()),
            (Kind::CodeSha256, app.code_sha256()),
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
    /// Per app, the exemptions that name it.
    exemptions_of: Vec<Vec<ChangeIdx>>,
    /// Per prohibition, the changes that target it.
    changes_of: &'a [Vec<ChangeIdx>],
    index: &'a mut Index,
    /// Apps with the same covering prohibitions and exemptions share their entries.
    by_key: HashMap<(Vec<ProhibitionIdx>, Vec<ChangeIdx>), u32>,
    entry_ids: HashMap<EntryKey, u32>,
    /// Distinct outcomes, numbered, and judgements: an outcome's number and where the
    /// readings of windows disagree.
    outcomes: Vec<Outcome>,
    outcome_ids: HashMap<Outcome, u32>,
    judgement_ids: HashMap<(u32, Option<Uncertain>), u32>,
    /// Time lines with the same segments share them.
    line_ids: HashMap<Vec<Segment>, Line>,
    hindsight_line_ids: HashMap<Vec<Segment>, Line>,
    /// A time line's segments being looked up.
    scratch: Vec<Segment>,
    /// Entries whose time lines agree share them.
    lane_ids: HashMap<LaneKey, (Lane, Hindsight)>,
    /// The masks of passed tests a request can give, per list of tests.
    masks_of: HashMap<Vec<u32>, Option<Vec<u64>>>,
}

/// What an entry's time lines depend on: the prohibitions of the action, the exemptions
/// among their changes that name the app, and, of the other covering prohibitions, only
/// when the first becomes known under each reading of windows (see [`lines_coverage`]).
type LaneKey = (Vec<ProhibitionIdx>, Vec<ChangeIdx>, Option<[Instant; 2]>);

/// The covering prohibitions an entry's time lines are built from: those of the action,
/// and the first known under each reading of windows. The others cannot change an
/// answer (an outcome asks of them only whether any is known), and leaving them out
/// leaves out their instants and epochs. With when that first one becomes known, under
/// each reading.
fn lines_coverage(
    model: &Model,
    covering: &[ProhibitionIdx],
    with_action: &[ProhibitionIdx],
) -> (Vec<ProhibitionIdx>, Option<[Instant; 2]>) {
    let mut kept = with_action.to_vec();
    let mut first = [Instant::MIN; 2];
    for (slot, b) in first.iter_mut().zip(law::Boundaries::ALL) {
        let known = |p: &ProhibitionIdx| {
            law::known_from(model, model.prohibitions[*p as usize].instrument, b)
        };
        let Some(p) = covering.iter().min_by_key(|p| known(p)) else {
            return (kept, None);
        };
        *slot = known(p);
        if !kept.contains(p) {
            kept.push(*p);
        }
    }
    (kept, Some(first))
}

impl Builder<'_> {
    /// The coverage (an entry per action) of an app, or of an entity's unlisted apps.
    fn coverage(&mut self, covering: Vec<ProhibitionIdx>, app: Option<AppIdx>) -> u32 {
        let model = self.model;
        // The exemptions that name this app and reach one of its prohibitions.
        let exempting: Vec<ChangeIdx> = match app.and_then(|a| self.exemptions_of.get(a as usize)) {
            None => Vec::new(),
            Some(named) => named
                .iter()
                .copied()
                .filter(|&c| {
                    model.changes[c as usize]
                        .targets
                        .iter()
                        .any(|p| covering.contains(p))
                })
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
                    let entry = self.entry(entry_key.0.clone(), entry_key.1.clone(), app);
                    let (lane, hindsight) = self.lane(&entry, &key.1);
                    self.index.entries.push(entry);
                    self.index.lanes.push(lane);
                    self.index.hindsight.push(hindsight);
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
    ) -> Entry {
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
            test_of.push(i as u32);
        }
        let coverage = Coverage {
            covering: &covering,
            with_action: &with_action,
            changes_of: self.changes_of,
            app,
        };
        let instants = law::instants(self.model, &coverage);
        Entry {
            covering,
            with_action,
            app,
            tests,
            test_of,
            instants,
        }
    }

    /// An entry's lane and hindsight: its time lines, shared with every entry whose time
    /// lines agree (see [`LaneKey`]). `exempting`: the exemptions naming the entry's app.
    fn lane(&mut self, entry: &Entry, exempting: &[ChangeIdx]) -> (Lane, Hindsight) {
        let model = self.model;
        let scanned = (
            Lane {
                tests: [0; MAX_INDEXED_TESTS],
                tests_len: 0,
                lines: NONE,
                near: Default::default(),
            },
            Hindsight {
                epochs: (0, 0),
                lines: NONE,
            },
        );
        if entry.tests.len() > MAX_WIDE_TESTS {
            return scanned;
        }
        let (covering, first) = lines_coverage(model, &entry.covering, &entry.with_action);
        let exempting: Vec<ChangeIdx> = exempting
            .iter()
            .copied()
            .filter(|&c| {
                model.changes[c as usize]
                    .targets
                    .iter()
                    .any(|p| entry.with_action.contains(p))
            })
            .collect();
        let key = (entry.with_action.clone(), exempting, first);
        if let Some(&found) = self.lane_ids.get(&key) {
            return found;
        }
        // The masks of passed tests to build lines for: those a request can give.
        let realizable = match self.masks_of.get(&entry.tests) {
            Some(m) => m.clone(),
            None => {
                let m = realizable(self.index, &entry.tests);
                self.masks_of.insert(entry.tests.clone(), m.clone());
                m
            }
        };
        let n = entry.tests.len();
        let (slots, wide): (Vec<Option<u64>>, Option<Vec<u64>>) = if n <= MAX_INDEXED_TESTS {
            // Every mask has its place; one no request gives has the line of the first
            // mask one does.
            let slots = (0..1u64 << n)
                .map(|m| {
                    let given = realizable
                        .as_ref()
                        .is_none_or(|r| r.binary_search(&m).is_ok());
                    given.then_some(m)
                })
                .collect();
            (slots, None)
        } else {
            match realizable {
                Some(masks) if masks.len() <= MAX_WIDE_MASKS => {
                    (masks.iter().map(|&m| Some(m)).collect(), Some(masks))
                }
                _ => {
                    self.lane_ids.insert(key, scanned);
                    return scanned;
                }
            }
        };
        let coverage = Coverage {
            covering: &covering,
            with_action: &entry.with_action,
            changes_of: self.changes_of,
            app: entry.app,
        };
        let instants = law::instants(model, &coverage);
        let epochs = law::issue_instants(model, &coverage);
        let mut lane = Lane {
            tests: [0; MAX_INDEXED_TESTS],
            tests_len: n as u8,
            lines: NONE,
            near: Default::default(),
        };
        match wide {
            None => lane.tests[..n].copy_from_slice(&entry.tests),
            Some(masks) => {
                lane.tests[0] = self.index.wide.len() as u32;
                let tests_from = self.index.wide_tests.len() as u32;
                self.index.wide_tests.extend_from_slice(&entry.tests);
                let masks_from = self.index.masks.len() as u32;
                self.index.masks.extend_from_slice(&masks);
                self.index.wide.push(Wide {
                    tests: (tests_from, self.index.wide_tests.len() as u32),
                    masks: (masks_from, self.index.masks.len() as u32),
                });
            }
        }
        // The masks judged, and each slot's among them (a mask no request gives takes
        // the first one's line, never read).
        let masks: Vec<u64> = slots.iter().flatten().copied().collect();
        let mut next = 0;
        let slot_of: Vec<usize> = slots
            .iter()
            .map(|slot| match slot {
                Some(_) => {
                    next += 1;
                    next - 1
                }
                None => 0,
            })
            .collect();
        let placed = |i: usize, p: ProhibitionIdx| {
            entry
                .with_action
                .iter()
                .position(|x| *x == p)
                .is_some_and(|at| masks[i] >> entry.test_of[at] & 1 != 0)
        };
        let knowledge = std::iter::once(None).chain(
            std::iter::once(Instant::MIN)
                .chain(epochs.iter().copied())
                .map(Some),
        );
        // The lines of each knowledge, a block of a line per posture and mask.
        let mut blocks: Vec<Vec<Line>> = Vec::new();
        let postures = Posture::ALL.len();
        // Whether ignoring non-enforcement orders can change an answer.
        let non_enforcement = law::non_enforcement_matters(model, &coverage);
        // The outcome of every mask, by standing (which fixes it whatever the instant,
        // knowledge and posture): `rows[row * masks + mask]`.
        let mut rows: Vec<u32> = Vec::new();
        let mut row_of: HashMap<law::Standing, usize> = HashMap::default();
        let mut judged: Vec<(u32, u32)> = Vec::new();
        let mut segments: Vec<(Instant, u32, Option<Uncertain>)> = Vec::new();
        for known_at in knowledge {
            // With what was issued by each point (`known_at: None`) the answer may change
            // at every instant; with what was issued by `known_at`, only at the edges of
            // what was known by then.
            let points = match known_at {
                None => instants.clone(),
                Some(k) => law::instants_known_at(model, &coverage, k),
            };
            // The row of every posture at every point: `grid[point * postures + posture]`.
            let mut grid: Vec<usize> = Vec::with_capacity((points.len() + 1) * postures);
            // The standing and row of each posture at the point before.
            let mut before: [Option<(law::Standing, usize)>; 4] = Default::default();
            for t in std::iter::once(Instant::MIN).chain(points.iter().copied()) {
                let k = known_at.unwrap_or(t);
                for posture in Posture::ALL {
                    if !non_enforcement && posture.non_enforcement == NonEnforcement::Ignore {
                        // As the same reading honouring them.
                        let honour = Posture {
                            non_enforcement: NonEnforcement::Honour,
                            ..posture
                        };
                        let row = grid[grid.len() - posture.index() + honour.index()];
                        grid.push(row);
                        continue;
                    }
                    let standing = law::standing(model, &coverage, t, k, posture);
                    let same = &mut before[posture.index()];
                    let known = match same {
                        Some((s, row)) if *s == standing => Some(*row),
                        _ => row_of.get(&standing).copied(),
                    };
                    let row = match known {
                        Some(row) => row,
                        None => {
                            let row = rows.len() / masks.len().max(1);
                            for m in 0..masks.len() {
                                let outcome =
                                    law::outcome_from(model, &coverage, &standing, &|p| {
                                        placed(m, p)
                                    });
                                let next = self.outcomes.len() as u32;
                                let id = *self.outcome_ids.entry(outcome).or_insert_with_key(|o| {
                                    self.outcomes.push(o.clone());
                                    next
                                });
                                rows.push(id);
                            }
                            row_of.insert(standing.clone(), row);
                            row
                        }
                    };
                    *same = Some((standing, row));
                    grid.push(row);
                }
            }
            let mut block = Vec::with_capacity(postures * slot_of.len());
            for posture in Posture::ALL {
                let (mine, other) = (posture.index(), posture.other_reading().index());
                let lines: Vec<Line> = (0..masks.len())
                    .map(|m| {
                        let at = |point: usize, posture: usize| {
                            rows[grid[point * postures + posture] * masks.len() + m]
                        };
                        judged.clear();
                        judged.extend((0..=points.len()).map(|p| (at(p, mine), at(p, other))));
                        let outcomes = &self.outcomes;
                        let deny = |&o: &u32| outcomes[o as usize].is_deny();
                        law::segments_by(&points, &judged, deny, &mut segments);
                        self.line(&segments, known_at.is_some())
                    })
                    .collect();
                block.extend(slot_of.iter().map(|&slot| lines[slot]));
            }
            blocks.push(block);
        }
        // The first block is the default path's; then the block of each epoch, except
        // where an epoch changes no line (it is left out).
        let mut blocks = blocks.into_iter();
        let current = blocks.next().unwrap_or_default();
        lane.lines = self.index.timelines.lines.len() as u32;
        self.index.timelines.lines.extend(current);
        let mut kept: Vec<Vec<Line>> = blocks.next().into_iter().collect();
        let mut kept_epochs = Vec::new();
        for (&epoch, block) in epochs.iter().zip(blocks) {
            if kept.last() != Some(&block) {
                kept_epochs.push(epoch);
                kept.push(block);
            }
        }
        let epochs_from = self.index.epochs.len() as u32;
        self.index.epochs.extend_from_slice(&kept_epochs);
        let hindsight = Hindsight {
            epochs: (epochs_from, self.index.epochs.len() as u32),
            lines: self.index.hindsight_timelines.lines.len() as u32,
        };
        self.index
            .hindsight_timelines
            .lines
            .extend(kept.into_iter().flatten());
        self.lane_ids.insert(key, (lane, hindsight));
        (lane, hindsight)
    }

    /// A time line from its segments (each an outcome's number, and where the readings
    /// disagree), stored once: a line of judgements in hindsight, or of the default path.
    fn line(&mut self, segments: &[(Instant, u32, Option<Uncertain>)], hindsight: bool) -> Line {
        self.scratch.clear();
        for &(start, outcome, uncertain) in segments {
            let next = self.judgement_ids.len() as u32;
            let j = *self
                .judgement_ids
                .entry((outcome, uncertain))
                .or_insert(next);
            let segment = Segment::new(start, j, &self.outcomes[outcome as usize]);
            self.scratch.push(segment);
        }
        if hindsight {
            let ids = &mut self.hindsight_line_ids;
            self.index.hindsight_timelines.store(ids, &self.scratch)
        } else {
            self.index
                .timelines
                .store(&mut self.line_ids, &self.scratch)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::diagnostic::Source;
    use crate::wire::{AppRecord, RequestRecord};

    fn instrument(id: &str, kind: &str, issued: &str) -> String {
        format!(
            "[instrument]\nid = \"{id}\"\nkind = \"{kind}\"\ntitle = \"{id}\"\nauthority = \"A\"\ncitation = \"{id}\"\nsource = \"https://example.org/{id}\"\nissued = {issued}\n\n"
        )
    }

    fn window(earliest: &str, latest: &str) -> String {
        format!("{{ earliest = {earliest}, latest = {latest}, note = \"open\" }}")
    }

    /// Regions that overlap and nest, and ten prohibitions of app `a`'s downloads, each
    /// with a test of its own (more than `MAX_INDEXED_TESTS`), under instruments issued
    /// in windows and changed by delays, relief, an exemption, an end and a revocation;
    /// app `b`, covered by three of them, has a lane of the usual kind, app `c`, by six,
    /// the most a lane holds, and app `d`, by eight, a second wide lane.
    fn wide_policy() -> Policy {
        let common = "\
[[region]]\nid = \"US\"\nname = \"US\"\ncountries = [\"US\", \"PR\", \"GU\"]\n\n\
[[region]]\nid = \"USM\"\nname = \"US mainland\"\ncountries = [\"US\"]\n\n\
[[region]]\nid = \"EU\"\nname = \"EU\"\ncountries = [\"FR\", \"DE\", \"IT\"]\n\n\
[[region]]\nid = \"DE\"\nname = \"DE\"\ncountries = [\"DE\"]\n\n\
[[region]]\nid = \"ASIA\"\nname = \"Asia\"\ncountries = [\"JP\", \"KR\"]\n\n\
[[region]]\nid = \"NA\"\nname = \"North America\"\ncountries = [\"US\", \"CA\", \"MX\", \"PR\"]\n\n\
[[region]]\nid = \"MIX\"\nname = \"Mixed\"\ncountries = [\"US\", \"FR\", \"JP\"]\n\n\
[[entity]]\nid = \"e\"\nname = \"E\"\n\n\
[[app]]\nid = \"a\"\nname = \"A\"\nowner = \"e\"\nandroid = [\"app.a\"]\n\n\
[[app]]\nid = \"b\"\nname = \"B\"\nowner = \"e\"\nandroid = [\"app.b\"]\n\n\
[[app]]\nid = \"c\"\nname = \"C\"\nowner = \"e\"\nandroid = [\"app.c\"]\n\n\
[[app]]\nid = \"d\"\nname = \"D\"\nowner = \"e\"\nandroid = [\"app.d\"]\n";
        let tests = [
            ("US", ""),
            ("US", "jurisdiction = [[\"server_country\"]]\n"),
            (
                "EU",
                "jurisdiction = [[\"storefront\", \"device_country\"]]\n",
            ),
            (
                "DE",
                "jurisdiction = [[\"server_country\"], [\"storefront\", \"device_country\", \"ip_country\", \"billing_country\"]]\n",
            ),
            ("ASIA", ""),
            ("NA", "jurisdiction = [[\"ip_country\"]]\n"),
            ("USM", "jurisdiction = [[\"billing_country\"]]\n"),
            (
                "MIX",
                "jurisdiction = [[\"server_country\"], [\"storefront\"]]\n",
            ),
            ("EU", "jurisdiction = [[\"server_country\"]]\n"),
            ("ASIA", "jurisdiction = [[\"device_country\"]]\n"),
        ];
        let mut first = instrument(
            "first",
            "statute",
            &window("2021-01-01T00:00:00Z", "2021-01-02T00:00:00Z"),
        );
        let mut second = instrument("second", "executive-order", "2021-06-01T00:00:00Z");
        for (i, (region, jurisdiction)) in tests.iter().enumerate() {
            // `b` by three, `c` by six (as many tests as a lane holds), `d` by eight.
            let apps = ["a", "b", "c", "d"]
                .iter()
                .zip([10, 3, 6, 8])
                .filter(|(_, n)| i < *n)
                .map(|(a, _)| format!("\"{a}\""))
                .collect::<Vec<_>>()
                .join(", ");
            let effective = match i % 3 {
                0 => window(
                    &format!("2021-0{}-10T00:00:00Z", 2 + i % 5),
                    &format!("2021-0{}-11T00:00:00Z", 2 + i % 5),
                ),
                _ => format!("2021-0{}-15T00:00:00Z", 2 + i % 6),
            };
            let end = if i == 4 {
                format!(
                    "end = {}\n",
                    window("2023-01-01T00:00:00Z", "2023-01-05T00:00:00Z")
                )
            } else {
                String::new()
            };
            let text = format!(
                "[[prohibition]]\nid = \"p{i}\"\napps = [{apps}]\nactions = [\"download\", \"update\"]\nregion = \"{region}\"\n{jurisdiction}effective = {effective}\n{end}text = \"t\"\n\n"
            );
            if i % 2 == 0 { &mut first } else { &mut second }.push_str(&text);
        }
        let files = [
            ("common.toml", common.to_owned()),
            ("first.toml", first),
            ("second.toml", second),
            (
                "delay.toml",
                instrument(
                    "delay",
                    "amendment",
                    &window("2021-03-01T00:00:00Z", "2021-03-03T00:00:00Z"),
                ) + &format!(
                    "[[delay]]\nprohibitions = [\"p0\", \"p3\"]\neffective = {}\n",
                    window("2021-09-01T00:00:00Z", "2021-09-02T00:00:00Z")
                ),
            ),
            (
                "court.toml",
                instrument("court", "court-order", "2021-10-01T00:00:00Z")
                    + &format!(
                        "[[injunction]]\nprohibitions = [\"p1\", \"p5\", \"p8\"]\nfrom = {}\nuntil = 2022-02-01T00:00:00Z\n",
                        window("2021-10-01T00:00:00Z", "2021-10-02T00:00:00Z")
                    ),
            ),
            (
                "pause.toml",
                instrument(
                    "pause",
                    "non-enforcement-order",
                    &window("2022-03-01T00:00:00Z", "2022-03-02T00:00:00Z"),
                ) + "[[non-enforcement]]\ninstruments = [\"first\"]\nfrom = 2022-03-02T00:00:00Z\nuntil = 2022-06-01T00:00:00Z\n",
            ),
            (
                "divestiture.toml",
                instrument("divestiture", "divestiture", "2022-08-01T00:00:00Z")
                    + &format!(
                        "[[exemption]]\napps = [\"a\"]\nprohibitions = [\"p2\", \"p7\"]\nfrom = {}\n",
                        window("2022-08-01T00:00:00Z", "2022-08-03T00:00:00Z")
                    ),
            ),
            (
                "revocation.toml",
                instrument("revocation", "revocation", "2023-06-01T00:00:00Z")
                    + "[[revocation]]\ninstruments = [\"second\"]\nfrom = 2023-07-01T00:00:00Z\n",
            ),
        ];
        compiled(files)
    }

    /// The policy of these files (name, text); a test's own policy must load.
    fn compiled(files: impl IntoIterator<Item = (impl Into<String>, String)>) -> Policy {
        Policy::from_sources(
            files
                .into_iter()
                .map(|(name, text)| Source::new(name, text)),
        )
        .unwrap_or_else(|d| panic!("{}", d.render()))
    }

    /// Every edge of every instant and window the policy names.
    fn named_instants(policy: &Policy) -> Vec<Instant> {
        let mut out = Vec::new();
        let mut moment = |m: &Moment| out.extend([m.earliest, m.latest]);
        for i in policy.instruments() {
            moment(&i.issued);
        }
        for p in policy.prohibitions() {
            moment(&p.effective);
            if let Some(e) = &p.end {
                moment(e);
            }
        }
        for c in policy.changes() {
            match &c.kind {
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
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The instants around each named one: it, and a nanosecond either side.
    fn around(instants: &[Instant]) -> Vec<Instant> {
        let mut out: Vec<Instant> = instants
            .iter()
            .flat_map(|i| {
                let n = i.as_nanos();
                [n - 1, n, n + 1].map(Instant::from_nanos)
            })
            .collect();
        out.push(Instant::parse_rfc3339("2019-01-01T00:00:00Z").unwrap());
        out.push(Instant::parse_rfc3339("2030-01-01T00:00:00Z").unwrap());
        out
    }

    const COUNTRIES: [Option<&str>; 8] = [
        None,
        Some("US"),
        Some("PR"),
        Some("CA"),
        Some("FR"),
        Some("DE"),
        Some("JP"),
        Some("GB"),
    ];

    /// Requests for `app`'s `action` with many combinations of signals (at least one
    /// carried), drawn with a fixed seed.
    fn requests(app: &str, action: &str, count: usize) -> Vec<Request> {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            COUNTRIES[(seed % COUNTRIES.len() as u64) as usize].map(str::to_owned)
        };
        let mut out = Vec::new();
        // Bounded: a reader that refuses every record fails here, not by hanging.
        for _ in 0..count * 100 {
            if out.len() == count {
                break;
            }
            let record = RequestRecord {
                app: Some(AppRecord {
                    platform: "android".into(),
                    id: app.into(),
                }),
                action: action.into(),
                at: "2021-01-01T00:00:00Z".into(),
                storefront: next(),
                device_country: next(),
                ip_country: next(),
                billing_country: next(),
                server_country: next(),
                ..Default::default()
            };
            if let Ok(r) = record.into_request() {
                out.push(r);
            }
        }
        assert_eq!(
            out.len(),
            count,
            "the records made were not read as requests"
        );
        out
    }

    fn with_known_at(request: &Request, at: Instant, known_at: Instant) -> Request {
        let mut record = RequestRecord::from(request);
        record.at = at.to_string();
        record.known_at = Some(known_at.to_string());
        record.into_request().unwrap()
    }

    /// Every decision the index gives for `app`'s `action` equals the scan's, at every
    /// named instant and a nanosecond either side, under every posture, judged with what
    /// was issued by then and, for some requests, in hindsight at each instant.
    fn agrees_with_the_scan(policy: &Policy, app: &str, action: &str, combinations: usize) {
        let instants = around(&named_instants(policy));
        let reqs = requests(app, action, 24);
        let mut masks = std::collections::BTreeSet::new();
        for (n, r) in reqs.iter().enumerate() {
            let lane_tests = {
                let e = policy.index.coverages
                    [policy.index.ids.get(Kind::Android, app).unwrap().0.coverage as usize]
                    [r.action().index()] as usize;
                policy.index.entries[e].tests.clone()
            };
            masks.insert(
                lane_tests
                    .iter()
                    .map(|&t| policy.place(t, r).is_some())
                    .collect::<Vec<_>>(),
            );
            for &at in &instants {
                let r = r.at_instant(at);
                for posture in Posture::ALL {
                    let fast = policy.decide(&r, posture).to_record();
                    let scanned = policy.decide_scanning(&r, posture).to_record();
                    assert_eq!(fast, scanned, "at {at}, {posture:?}");
                }
            }
            // In hindsight: every instant as `known_at`, at a few instants.
            if n % 6 == 0 {
                for &known_at in &instants {
                    for &at in instants.iter().step_by(11) {
                        let r = with_known_at(r, at, known_at);
                        for posture in Posture::ALL {
                            let fast = policy.decide(&r, posture).to_record();
                            let scanned = policy.decide_scanning(&r, posture).to_record();
                            assert_eq!(fast, scanned, "at {at} known at {known_at}, {posture:?}");
                        }
                    }
                }
            }
        }
        assert!(
            masks.len() >= combinations,
            "the requests pass {} combinations of tests",
            masks.len()
        );
    }

    /// Decisions with equal answer keys are written alike, byte for byte: every decision of
    /// the wide policy's apps (and an unlisted one) at every named instant and either side
    /// of it, under every posture, for requests with many combinations of signals, some in
    /// hindsight. The keys tell apart fewer outcomes than there are decisions, and more than
    /// one.
    #[test]
    fn decisions_with_equal_answer_keys_are_written_alike() {
        let policy = wide_policy();
        let json = crate::DecisionJson::new(&policy);
        let instants = around(&named_instants(&policy));
        let mut written: HashMap<u64, Vec<(AnswerKey, Vec<u8>)>> = HashMap::default();
        let (mut decisions, mut without_key) = (0, 0);
        let mut check = |r: &Request, posture: Posture| {
            let parts = policy.decide_parts(r, posture);
            let mut bytes = Vec::new();
            json.write(&policy.view(parts.clone()), &mut bytes);
            decisions += 1;
            let Some(key) = parts.answer_key() else {
                without_key += 1;
                return;
            };
            let same = written.entry(key.mix()).or_default();
            match same.iter().find(|(k, _)| *k == key) {
                Some((_, earlier)) => assert_eq!(
                    String::from_utf8_lossy(earlier),
                    String::from_utf8_lossy(&bytes),
                    "{key:?}"
                ),
                None => same.push((key, bytes)),
            }
        };
        for app in ["app.a", "app.b", "app.c", "app.d", "app.unlisted"] {
            for action in ["download", "update"] {
                for (n, r) in requests(app, action, 12).iter().enumerate() {
                    for &at in &instants {
                        for posture in Posture::ALL {
                            check(&r.at_instant(at), posture);
                        }
                    }
                    if n % 4 == 0 {
                        for &known_at in instants.iter().step_by(3) {
                            for &at in instants.iter().step_by(7) {
                                check(&with_known_at(r, at, known_at), Posture::default());
                            }
                        }
                    }
                }
            }
        }
        let outcomes: usize = written.values().map(Vec::len).sum();
        assert!(
            outcomes > 1 && outcomes < decisions / 10,
            "{outcomes} outcomes of {decisions} decisions"
        );
        assert!(without_key < decisions / 10, "{without_key} of {decisions}");
    }

    #[test]
    fn an_entry_with_many_tests_is_indexed_and_agrees_with_the_scan() {
        let policy = wide_policy();
        let (found, _) = policy.index.ids.get(Kind::Android, "app.a").unwrap();
        let e = policy.index.coverages[found.coverage as usize][Action::Download.index()];
        let lane = policy.index.lanes[e as usize];
        assert!(usize::from(lane.tests_len) > MAX_INDEXED_TESTS);
        assert_eq!(usize::from(lane.tests_len), 10);
        assert_ne!(lane.lines, NONE, "indexed, not scanned");
        assert_ne!(policy.index.hindsight[e as usize].lines, NONE);
        let wide = policy.index.wide[lane.tests[0] as usize];
        let masks = (wide.masks.1 - wide.masks.0) as usize;
        assert!(masks > 1 && masks < 1 << 10, "{masks} masks");
        agrees_with_the_scan(&policy, "app.a", "download", 12);
        agrees_with_the_scan(&policy, "app.a", "update", 12);
    }

    #[test]
    fn the_default_postures_segments_come_first() {
        let policy = wide_policy();
        let (index, timelines) = (&policy.index, &policy.index.timelines);
        let mut read = vec![false; timelines.lines.len()];
        for line in index.lines_of(Posture::default()) {
            read[line] = true;
        }
        let end = |l: &Line| l.start + l.len;
        let mine: Vec<Line> = (0..read.len())
            .filter(|&i| read[i])
            .map(|i| timelines.lines[i])
            .collect();
        let others: Vec<Line> = (0..read.len())
            .filter(|&i| !read[i])
            .map(|i| timelines.lines[i])
            .filter(|l| !mine.contains(l))
            .collect();
        assert!(!others.is_empty(), "the postures disagree somewhere");
        let last_of_mine = mine.iter().map(end).max().unwrap();
        let first_of_others = others.iter().map(|l| l.start).min().unwrap();
        assert!(
            last_of_mine <= first_of_others,
            "the default posture's segments end at {last_of_mine}, another's start at {first_of_others}"
        );
        // Each stored line once, the segments all used.
        let mut stored: Vec<(u32, u32)> =
            timelines.lines.iter().map(|l| (l.start, l.len)).collect();
        stored.sort_unstable();
        stored.dedup();
        assert!(stored.windows(2).all(|w| w[0].0 + w[0].1 == w[1].0));
        assert_eq!(
            stored.last().map(|(s, l)| (s + l) as usize),
            Some(timelines.segments.len())
        );
    }

    #[test]
    fn each_lane_has_its_slots_of_lines_for_each_posture() {
        let policy = wide_policy();
        let index = &policy.index;
        let mut blocks: Vec<(usize, usize)> = index
            .lanes
            .iter()
            .filter(|l| l.lines != NONE)
            .map(|l| (l.lines as usize, Posture::ALL.len() * index.slots(l)))
            .collect();
        blocks.sort_unstable();
        blocks.dedup();
        // The lanes' blocks of lines follow each other, and end with the lines.
        for w in blocks.windows(2) {
            assert_eq!(w[0].0 + w[0].1, w[1].0, "{blocks:?}");
        }
        let last = blocks.last().unwrap();
        assert_eq!(last.0 + last.1, index.timelines.lines.len());
        // The postures' lines, a part of each block each, are together every line.
        let mut read: Vec<usize> = Posture::ALL
            .iter()
            .flat_map(|&p| index.lines_of(p))
            .collect();
        read.sort_unstable();
        read.dedup();
        assert_eq!(read, (0..index.timelines.lines.len()).collect::<Vec<_>>());
        let lane = |app: &str| {
            let (found, _) = index.ids.get(Kind::Android, app).unwrap();
            &index.lanes
                [index.coverages[found.coverage as usize][Action::Download.index()] as usize]
        };
        assert_eq!(index.slots(lane("app.b")), 8, "three tests");
        assert_eq!(index.slots(lane("app.c")), 64, "six tests");
        for app in ["app.a", "app.d"] {
            let wide = index.wide[lane(app).tests[0] as usize];
            assert_eq!(
                index.slots(lane(app)),
                (wide.masks.1 - wide.masks.0) as usize
            );
        }
        assert!(
            index.wide[lane("app.d").tests[0] as usize].masks.0 > 0,
            "a second wide lane"
        );
    }

    #[test]
    fn laying_out_keeps_each_lines_segments() {
        let at = |n: i64| Instant::from_nanos(n);
        let mut t = Timelines {
            lines: vec![
                Line { start: 0, len: 2 },
                Line { start: 2, len: 3 },
                Line { start: 5, len: 1 },
                Line { start: 0, len: 2 },
            ],
            segments: (0..6)
                .map(|k| Segment {
                    start: at(k),
                    judged: 10 + k as u32,
                    reports: NONE,
                })
                .collect(),
        };
        let before: Vec<Vec<Segment>> = (0..4)
            .map(|l| {
                let Line { start, len } = t.lines[l];
                t.segments[start as usize..(start + len) as usize].to_vec()
            })
            .collect();
        t.lay_out([2, 3]);
        assert_eq!(t.lines[2], Line { start: 0, len: 1 });
        assert_eq!(t.lines[0], Line { start: 1, len: 2 });
        assert_eq!(t.lines[3], t.lines[0]);
        assert_eq!(t.lines[1], Line { start: 3, len: 3 });
        for (l, segments) in before.iter().enumerate() {
            for (i, s) in segments.iter().enumerate() {
                let k = t.lines[l].start as usize + i;
                assert_eq!(t.segments[k], *s);
                assert_eq!(t.at(t.lines[l], s.start).0, *s);
            }
        }
        assert_eq!(t.segments.len(), 6);
    }

    #[test]
    fn an_entry_with_many_tests_reads_back_from_an_image() {
        let policy = wide_policy();
        let read = Policy::from_image(&policy.to_image()).unwrap();
        for r in requests("app.a", "download", 24) {
            for at in around(&named_instants(&policy)).into_iter().step_by(5) {
                let r = r.at_instant(at);
                assert_eq!(
                    read.decide(&r, Posture::default()).to_record(),
                    policy.decide(&r, Posture::default()).to_record()
                );
            }
        }
    }

    #[test]
    fn each_lane_keeps_its_default_lines_near_also_read_from_an_image() {
        let policy = wide_policy();
        let read = Policy::from_image(&policy.to_image()).unwrap();
        for p in [&policy, &read] {
            let index = &p.index;
            let mut kept = 0;
            for lane in index.lanes.iter().filter(|l| l.lines != NONE) {
                let slots = index.slots(lane);
                let first = lane.first_line(Posture::default(), slots);
                for slot in 0..slots.min(NEAR) {
                    assert_eq!(lane.near[slot], index.timelines.lines[first + slot]);
                    kept += 1;
                }
            }
            assert!(kept > 10, "{kept} lines kept near");
        }
    }

    #[test]
    fn an_image_whose_lane_has_more_tests_than_a_mask_holds_is_refused() {
        let mut policy = wide_policy();
        let (found, _) = policy.index.ids.get(Kind::Android, "app.a").unwrap();
        let e = policy.index.coverages[found.coverage as usize][Action::Download.index()] as usize;
        let index = &mut policy.index;
        let lane = &mut index.lanes[e];
        assert!(usize::from(lane.tests_len) > MAX_INDEXED_TESTS);
        // The entry's tests, its wide lane's and the lane's count agree, at 65.
        let tests = vec![index.entries[e].tests[0]; MAX_WIDE_TESTS + 1];
        lane.tests_len = tests.len() as u8;
        let wide = &mut index.wide[lane.tests[0] as usize];
        let from = index.wide_tests.len() as u32;
        index.wide_tests.extend_from_slice(&tests);
        wide.tests = (from, index.wide_tests.len() as u32);
        index.entries[e].tests = tests;
        match Policy::from_image(&policy.to_image()) {
            Err(ImageError::Inconsistent(why)) => assert_eq!(
                why,
                format!("entry {e}: its lane has 65 tests, of at most {MAX_WIDE_TESTS}")
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_time_line_gives_the_segment_of_each_instant_short_or_long() {
        let at = |n: i64| Instant::from_nanos(n);
        for len in [1, 2, LINEAR - 1, LINEAR, LINEAR + 1, 3 * LINEAR] {
            let mut starts = vec![Instant::MIN];
            starts.extend((1..len as i64).map(|k| at(k * 10)));
            // A line after another, so that it does not start the array.
            let segments: Vec<Segment> = [Instant::MIN, at(5)]
                .into_iter()
                .chain(starts.iter().copied())
                .enumerate()
                .map(|(k, start)| Segment {
                    start,
                    judged: k as u32,
                    reports: NONE,
                })
                .collect();
            let t = Timelines {
                lines: Vec::new(),
                segments,
            };
            let line = Line {
                start: 2,
                len: len as u32,
            };
            for n in -1..=(len as i64) * 10 + 1 {
                let (segment, next) = t.at(line, at(n));
                // The last segment starting by `n`, and the start of the one after.
                let k = starts.iter().rposition(|s| *s <= at(n)).unwrap();
                assert_eq!(segment.judgement(), k as u32 + 2, "line of {len}, at {n}");
                assert_eq!(next, starts.get(k + 1).copied(), "line of {len}, at {n}");
            }
        }
    }

    #[test]
    fn an_entry_with_few_tests_agrees_with_the_scan() {
        let policy = wide_policy();
        let (found, _) = policy.index.ids.get(Kind::Android, "app.b").unwrap();
        let e = policy.index.coverages[found.coverage as usize][Action::Download.index()];
        assert_eq!(policy.index.lanes[e as usize].tests_len, 3);
        agrees_with_the_scan(&policy, "app.b", "download", 4);
    }

    /// A country of each class the regions of [`wide_policy`] make (those that hold
    /// it), and none.
    fn wide_countries() -> Vec<Option<Country>> {
        [
            None,
            Some("US"),
            Some("PR"),
            Some("GU"),
            Some("CA"),
            Some("FR"),
            Some("IT"),
            Some("DE"),
            Some("JP"),
            Some("KR"),
            Some("GB"),
        ]
        .map(|c| c.map(|c| Country::parse(c).unwrap()))
        .to_vec()
    }

    /// Every request's countries with one of `countries` (or nothing) in each signal.
    fn every_signals(countries: &[Option<Country>]) -> impl Iterator<Item = Signals> + '_ {
        let n = countries.len();
        (0..n.pow(5)).map(move |mut k| {
            let mut signals = [None; 5];
            for s in &mut signals {
                *s = countries[k % n];
                k /= n;
            }
            signals
        })
    }

    #[test]
    fn a_request_passes_a_test_where_it_is_placed() {
        let policy = wide_policy();
        let index = &policy.index;
        assert!(index.tests.iter().any(|t| t.groups.1 - t.groups.0 > 1));
        let (mut passed, mut failed) = (0, 0);
        for signals in every_signals(&wide_countries()) {
            for t in &index.tests {
                let groups = &index.groups[t.groups.0 as usize..t.groups.1 as usize];
                let placed = place(&t.set, groups, |s| signals[s as usize]).is_some();
                assert_eq!(t.packed, pack(groups));
                assert_eq!(
                    passes(&t.set, t.packed, &signals, carried(&signals)),
                    placed,
                    "{signals:?} in {groups:?}"
                );
                if placed {
                    passed += 1;
                } else {
                    failed += 1;
                }
            }
        }
        assert!(passed > 0 && failed > 0, "{passed} passed, {failed} failed");
    }

    /// The masks of passed tests that requests carrying any of `countries` (or nothing) in
    /// each signal give, tried one by one.
    fn masks_tried(index: &Index, tests: &[u32], countries: &[Option<Country>]) -> Vec<u64> {
        let mut masks: Vec<u64> = every_signals(countries)
            .map(|signals| {
                tests.iter().enumerate().fold(0u64, |mask, (bit, &t)| {
                    let test = &index.tests[t as usize];
                    let groups = &index.groups[test.groups.0 as usize..test.groups.1 as usize];
                    let passes = place(&test.set, groups, |s| signals[s as usize]).is_some();
                    mask | u64::from(passes) << bit
                })
            })
            .collect();
        masks.sort_unstable();
        masks.dedup();
        masks
    }

    #[test]
    fn the_masks_indexed_are_those_requests_give() {
        let policy = wide_policy();
        let countries = wide_countries();
        let (found, _) = policy.index.ids.get(Kind::Android, "app.a").unwrap();
        let e = policy.index.coverages[found.coverage as usize][Action::Download.index()];
        let tests = policy.index.entries[e as usize].tests.clone();
        assert_eq!(
            realizable(&policy.index, &tests).unwrap(),
            masks_tried(&policy.index, &tests, &countries)
        );
        // Three tests of the server's country alone, in the US, the EU and DE (in the
        // EU): it passes all three when not carried, else at most the EU's and DE's.
        let mut policy = policy;
        let mut server = SignalSet::default();
        server.insert(Signal::ServerCountry);
        let region = |id: &str| policy.regions().iter().position(|r| r.id == id).unwrap();
        let (us, eu, de) = (region("US"), region("EU"), region("DE"));
        let test = |policy: &Policy, region: usize| {
            policy.index.tests.iter().position(|t| {
                t.region as usize == region
                    && policy.index.groups[t.groups.0 as usize..t.groups.1 as usize] == [server]
            })
        };
        assert_eq!(test(&policy, de), None);
        let groups = policy.index.groups.len() as u32;
        policy.index.groups.push(server);
        policy.index.tests.push(Test {
            region: de as RegionIdx,
            set: policy.model.regions[de].set,
            groups: (groups, groups + 1),
            packed: pack(&[server]),
        });
        let server = [us, eu, de].map(|r| test(&policy, r).unwrap() as u32);
        let masks = realizable(&policy.index, &server).unwrap();
        assert_eq!(masks, masks_tried(&policy.index, &server, &countries));
        assert_eq!(masks, vec![0b000, 0b001, 0b010, 0b110, 0b111]);
    }

    /// Acme's Google account, and the digest of Acme Chat's code, in [`accounts_policy`].
    const ACME_ACCOUNT: &str = "4242424242424242424";
    const CHAT_CODE: &str = "1111111111111111111111111111111111111111111111111111111111111111";

    /// Acme's downloads prohibited in Canada; Acme publishes from a Google account; Indie's
    /// app is listed and covered by nothing.
    fn accounts_policy() -> Policy {
        let policy = format!(
            "\
[[region]]\nid = \"CA\"\nname = \"Canada\"\ncountries = [\"CA\"]\n\n\
[[entity]]\nid = \"acme\"\nname = \"Acme\"\npublisher_accounts = [{{ store = \"google\", id = \"{ACME_ACCOUNT}\" }}]\n\n\
[[entity]]\nid = \"indie\"\nname = \"Indie\"\n\n\
[[app]]\nid = \"acme-chat\"\nname = \"Acme Chat\"\nowner = \"acme\"\nandroid = [\"com.acme.chat\"]\ncode_sha256 = [\"{CHAT_CODE}\"]\n\n\
[[app]]\nid = \"indie-notes\"\nname = \"Indie Notes\"\nowner = \"indie\"\nandroid = [\"com.indie.notes\"]\n"
        );
        let order = instrument("order", "identification", "2021-01-01T00:00:00Z")
            + "[[prohibition]]\nid = \"acme-canada\"\nowners = [\"acme\"]\nactions = [\"download\"]\nregion = \"CA\"\neffective = 2021-02-01T00:00:00Z\ntext = \"t\"\n";
        compiled([("policy.toml", policy), ("order.toml", order)])
    }

    /// A download of the Android app `id` in Canada on 2021-03-01.
    fn download_record(id: &str) -> RequestRecord {
        RequestRecord {
            app: Some(AppRecord {
                platform: "android".into(),
                id: id.into(),
            }),
            action: "download".into(),
            at: "2021-03-01T00:00:00Z".into(),
            storefront: Some("CA".into()),
            ..Default::default()
        }
    }

    /// That download, published from `account` (Google) and carrying these code digests.
    fn download(id: &str, account: Option<&str>, code: &[&str]) -> Request {
        RequestRecord {
            publisher: account.map(|a| crate::wire::PublisherRecord {
                store: "google".into(),
                id: a.into(),
            }),
            code_sha256: code.iter().map(|c| (*c).to_owned()).collect(),
            ..download_record(id)
        }
        .into_request()
        .unwrap()
    }

    /// Whether the default posture denies the request, and the app, owner and way it
    /// matched, by their ids.
    fn decided(
        policy: &Policy,
        r: &Request,
    ) -> (bool, Option<(Option<String>, String, MatchedBy)>) {
        let d = policy.decide(r, Posture::default());
        let matched = d
            .matched
            .as_ref()
            .map(|m| (m.app.map(|a| a.id().to_owned()), m.owner.id.clone(), m.by));
        (d.is_deny(), matched)
    }

    fn by(
        app: Option<&str>,
        owner: &str,
        by: MatchedBy,
    ) -> Option<(Option<String>, String, MatchedBy)> {
        Some((app.map(str::to_owned), owner.to_owned(), by))
    }

    #[test]
    fn an_app_is_matched_by_its_publishers_account_only_when_no_identifier_names_it() {
        let policy = accounts_policy();
        let (acme, chat) = (Some(ACME_ACCOUNT), CHAT_CODE);
        // Unlisted, from Acme's account: Acme's, and denied.
        assert_eq!(
            decided(&policy, &download("com.acme.secret", acme, &[])),
            (true, by(None, "acme", MatchedBy::PublisherAccount))
        );
        // Unlisted, from an account the policy does not know: not covered.
        assert_eq!(
            decided(&policy, &download("com.acme.secret", Some("1"), &[])),
            (false, None)
        );
        // Listed, from Acme's account: judged as listed (Indie's, covered by nothing).
        assert_eq!(
            decided(&policy, &download("com.indie.notes", acme, &[])),
            (
                false,
                by(Some("indie-notes"), "indie", MatchedBy::AndroidPackage)
            )
        );
        // Unlisted, but carrying Acme Chat's code, from Acme's account: matched by the code.
        assert_eq!(
            decided(&policy, &download("com.other", acme, &[chat])),
            (true, by(Some("acme-chat"), "acme", MatchedBy::CodeSha256))
        );
    }

    #[test]
    fn a_request_naming_two_apps_is_judged_for_both() {
        let policy = accounts_policy();
        let chat = CHAT_CODE;
        // Indie's app, covered by nothing, carrying Acme Chat's code: denied for Acme Chat.
        assert_eq!(
            decided(&policy, &download("com.indie.notes", None, &[chat])),
            (true, by(Some("acme-chat"), "acme", MatchedBy::CodeSha256))
        );
        // Acme Chat by its package and by its own code: one app, matched by the package.
        assert_eq!(
            decided(&policy, &download("com.acme.chat", None, &[chat])),
            (
                true,
                by(Some("acme-chat"), "acme", MatchedBy::AndroidPackage)
            )
        );
    }

    /// App `a`'s downloads prohibited in one more region than a mask has bits, each of
    /// one country and each prohibition in force from its own month: the entry has no
    /// time lines and is decided by scanning, which `decide` must then do too.
    #[test]
    fn an_entry_with_more_tests_than_a_mask_holds_is_decided_by_scanning() {
        let countries: Vec<&str> = Country::all()
            .take(MAX_WIDE_TESTS + 1)
            .map(Country::alpha2)
            .collect();
        let mut text = String::from(
            "[[entity]]\nid = \"e\"\nname = \"E\"\n\n[[app]]\nid = \"a\"\nname = \"A\"\nowner = \"e\"\nandroid = [\"app.a\"]\n\n",
        );
        let mut order = instrument("order", "identification", "2021-01-01T00:00:00Z");
        for (i, c) in countries.iter().enumerate() {
            text.push_str(&format!(
                "[[region]]\nid = \"r{i}\"\nname = \"R{i}\"\ncountries = [\"{c}\"]\n\n"
            ));
            order.push_str(&format!(
                "[[prohibition]]\nid = \"p{i}\"\napps = [\"a\"]\nactions = [\"download\"]\nregion = \"r{i}\"\neffective = 2021-{:02}-01T00:00:00Z\ntext = \"t\"\n\n",
                2 + i % 10
            ));
        }
        let policy = compiled([("policy.toml", text), ("order.toml", order)]);
        let (found, _) = policy.index.ids.get(Kind::Android, "app.a").unwrap();
        let e = policy.index.coverages[found.coverage as usize][Action::Download.index()];
        assert_eq!(
            policy.index.entries[e as usize].tests.len(),
            MAX_WIDE_TESTS + 1
        );
        assert_eq!(policy.index.lanes[e as usize].lines, NONE, "scanned");
        let mut denied = 0;
        for (i, c) in countries.iter().enumerate().step_by(8) {
            for (at, month) in [("2021-01-15", 0), ("2021-06-15", 6), ("2021-12-15", 12)] {
                let r = RequestRecord {
                    at: format!("{at}T00:00:00Z"),
                    storefront: Some((*c).to_owned()),
                    ..download_record("app.a")
                }
                .into_request()
                .unwrap();
                let d = policy.decide(&r, Posture::default());
                assert_eq!(d.is_deny(), month >= 2 + i % 10, "{c} at {at}");
                denied += usize::from(d.is_deny());
                assert_eq!(
                    d.to_record(),
                    policy.decide_scanning(&r, Posture::default()).to_record()
                );
            }
        }
        assert!(denied > 9, "{denied} denied");
    }

    /// The apps of [`changes_policy`].
    const APPS: [&str; 12] = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "m", "w"];

    /// The digest of app `app`'s code in [`changes_policy`].
    fn code(app: &str) -> String {
        let hex: String = app.bytes().map(|b| format!("{b:02x}")).collect();
        format!("{hex:0>64}")
    }

    /// Changes that meet on one prohibition, each prohibition made by an order of its
    /// own: two delays (`pa`), two revocations and an exemption (`pb`, apps `b` and `c`),
    /// a revocation and an exemption from the same instant (`pd`), two injunctions that
    /// overlap (`pe`), an injunction that ends (`pf`), a non-enforcement order (`pg`, apps
    /// `g` and `m`), an end (`ph`), an effective instant left open (`pw`), and apps
    /// covered twice (`i`, `j`). Every app carries code of its own ([`code`]); every
    /// instrument is issued at the start of 2021 unless said.
    fn changes_policy() -> Policy {
        let apps = APPS
            .map(|a| {
                let code = code(a);
                format!("[[app]]\nid = \"{a}\"\nname = \"{a}\"\nowner = \"o\"\nandroid = [\"com.t.{a}\"]\ncode_sha256 = [\"{code}\"]\n\n")
            })
            .concat();
        let policy = "[[region]]\nid = \"US\"\nname = \"US\"\ncountries = [\"US\"]\n\n\
                      [[region]]\nid = \"NA\"\nname = \"North America\"\ncountries = [\"US\", \"CA\"]\n\n\
                      [[entity]]\nid = \"o\"\nname = \"O\"\n\n"
            .to_owned()
            + &apps;
        let start = "2021-01-01T00:00:00Z";
        let prohibition = |id: &str, apps: &str, region: &str, effective: &str| {
            format!(
                "[[prohibition]]\nid = \"p{id}\"\napps = [{apps}]\nactions = [\"download\"]\nregion = \"{region}\"\neffective = {effective}\ntext = \"t\"\n\n"
            )
        };
        // The file `{id}.toml`: an order making prohibition `p{id}` of these apps.
        let order = |id: &str, apps: &str, effective: &str| {
            let text = instrument(&format!("order-{id}"), "identification", start)
                + &prohibition(id, apps, "US", effective);
            (format!("{id}.toml"), text)
        };
        let change = |id: &str, kind: &str, issued: &str, change: &str| {
            (format!("{id}.toml"), instrument(id, kind, issued) + change)
        };
        let (lapsing, text) = order("h", "\"h\"", "2021-02-01T00:00:00Z");
        let mut files = vec![
            ("policy.toml".to_owned(), policy),
            order("a", "\"a\"", "2021-03-01T00:00:00Z"),
            order("b", "\"b\", \"c\"", "2021-02-01T00:00:00Z"),
            order("d", "\"d\"", "2021-02-01T00:00:00Z"),
            order("e", "\"e\"", "2021-02-01T00:00:00Z"),
            order(
                "w",
                "\"w\"",
                &window("2021-02-01T00:00:00Z", "2021-02-10T00:00:00Z"),
            ),
            order("f", "\"f\"", "2021-02-01T00:00:00Z"),
            order("g", "\"g\", \"m\"", "2021-02-01T00:00:00Z"),
            (
                lapsing,
                text.replace("text = ", "end = 2021-05-01T00:00:00Z\ntext = "),
            ),
            // Two prohibitions of `i` with tests of their own, neither in force yet.
            (
                "i.toml".to_owned(),
                instrument("order-i", "identification", start)
                    + &prohibition("i1", "\"i\"", "US", "2021-06-01T00:00:00Z")
                    + &prohibition("i2", "\"i\"", "NA", "2021-07-01T00:00:00Z"),
            ),
            // `j`: one prohibition not in force yet, another enjoined.
            order("j1", "\"j\"", "2021-12-01T00:00:00Z"),
            order("j2", "\"j\"", "2021-02-01T00:00:00Z"),
        ];
        files.extend([
            // Issued first, moving `pa` later; then a second, moving it less far.
            change("delay-1", "amendment", "2021-01-10T00:00:00Z",
                "[[delay]]\nprohibitions = [\"pa\"]\neffective = 2021-05-01T00:00:00Z\n"),
            change("delay-2", "amendment", "2021-01-20T00:00:00Z",
                "[[delay]]\nprohibitions = [\"pa\"]\neffective = 2021-04-01T00:00:00Z\n"),
            change("revoke-late", "revocation", start,
                "[[revocation]]\ninstruments = [\"order-b\"]\nfrom = 2021-08-01T00:00:00Z\n"),
            change("exempt", "divestiture", start,
                "[[exemption]]\napps = [\"c\", \"d\"]\ninstruments = [\"order-b\", \"order-d\"]\nfrom = 2021-06-01T00:00:00Z\n"),
            change("revoke-early", "revocation", start,
                "[[revocation]]\ninstruments = [\"order-b\"]\nfrom = 2021-07-01T00:00:00Z\n"),
            change("revoke-d", "revocation", start,
                "[[revocation]]\ninstruments = [\"order-d\"]\nfrom = 2021-06-01T00:00:00Z\n"),
            change("court-1", "court-order", start,
                "[[injunction]]\ninstruments = [\"order-e\"]\nfrom = 2021-03-01T00:00:00Z\nuntil = 2021-09-01T00:00:00Z\n"),
            change("court-2", "court-order", start,
                "[[injunction]]\ninstruments = [\"order-e\"]\nfrom = 2021-04-01T00:00:00Z\n"),
            change("court-f", "court-order", start,
                "[[injunction]]\ninstruments = [\"order-f\"]\nfrom = 2021-03-01T00:00:00Z\nuntil = 2021-05-01T00:00:00Z\n"),
            change("court-j", "court-order", start,
                "[[injunction]]\ninstruments = [\"order-j2\"]\nfrom = 2021-03-01T00:00:00Z\n"),
            change("ne-g", "non-enforcement-order", start,
                "[[non-enforcement]]\ninstruments = [\"order-g\"]\nfrom = 2021-03-01T00:00:00Z\nuntil = 2021-05-01T00:00:00Z\n"),
        ]);
        compiled(files)
    }

    /// The answer to a download of app `app` in the US at `at` (with what was issued by
    /// `known_at`), under a posture: `deny` and the prohibitions, or the reason and the
    /// instrument behind it, then `uncertain` where the two readings of windows differ.
    /// The index and the scan must agree.
    fn told(
        policy: &Policy,
        app: &str,
        at: &str,
        known_at: Option<&str>,
        posture: Posture,
    ) -> String {
        answer(policy, &asked(app, &[], at, known_at), posture)
    }

    /// A download of app `app` in the US at `at` (with what was issued by `known_at`),
    /// carrying the code of the apps `carried`.
    fn asked(app: &str, carried: &[&str], at: &str, known_at: Option<&str>) -> Request {
        RequestRecord {
            app: Some(AppRecord {
                platform: "android".into(),
                id: format!("com.t.{app}"),
            }),
            action: "download".into(),
            at: at.into(),
            known_at: known_at.map(str::to_owned),
            storefront: Some("US".into()),
            code_sha256: carried.iter().map(|a| code(a)).collect(),
            ..Default::default()
        }
        .into_request()
        .unwrap()
    }

    /// See [`told`]; a deny also names the orders it sets aside.
    fn answer(policy: &Policy, r: &Request, posture: Posture) -> String {
        let tell = |d: Decision<'_>| {
            let verdict = match &d.verdict {
                Verdict::Deny {
                    prohibitions,
                    set_aside,
                } => {
                    let ids: Vec<&str> = prohibitions
                        .iter()
                        .map(|&p| policy.prohibitions()[p as usize].id.as_str())
                        .collect();
                    let aside: Vec<&str> = set_aside
                        .iter()
                        .map(|&i| policy.instruments()[i as usize].id.as_str())
                        .collect();
                    match aside.is_empty() {
                        true => format!("deny {}", ids.join(" ")),
                        false => {
                            format!("deny {}, setting aside {}", ids.join(" "), aside.join(" "))
                        }
                    }
                }
                Verdict::Allow { because, by, .. } => {
                    let by = by.map_or("-", |i| policy.instruments()[i as usize].id.as_str());
                    format!("{} {by}", because.as_str())
                }
            };
            match d.uncertain {
                Some(_) => format!("{verdict}, uncertain"),
                None => verdict,
            }
        };
        let indexed = tell(policy.decide(r, posture));
        assert_eq!(indexed, tell(policy.decide_scanning(r, posture)), "{r:?}");
        indexed
    }

    #[test]
    fn of_two_delays_the_one_issued_last_holds() {
        let p = changes_policy();
        let c = Posture::default();
        assert_eq!(
            told(&p, "a", "2021-03-15T00:00:00Z", None, c),
            "not-yet-in-force -"
        );
        assert_eq!(told(&p, "a", "2021-04-15T00:00:00Z", None, c), "deny pa");
        // Judged with only the first delay issued: due on 2021-05-01.
        let first = Some("2021-01-15T00:00:00Z");
        assert_eq!(
            told(&p, "a", "2021-04-15T00:00:00Z", first, c),
            "not-yet-in-force -"
        );
        assert_eq!(told(&p, "a", "2021-05-01T00:00:00Z", first, c), "deny pa");
    }

    #[test]
    fn the_first_change_to_end_a_prohibition_names_the_answer() {
        let p = changes_policy();
        let c = Posture::default();
        let at = |app, at| told(&p, app, at, None, c);
        // Before any revocation takes effect, in force; the exemption names `c` and `d` only.
        assert_eq!(at("b", "2021-03-01T00:00:00Z"), "deny pb");
        assert_eq!(at("b", "2021-06-15T00:00:00Z"), "deny pb");
        // The earlier of two revocations, whichever is listed first.
        assert_eq!(at("b", "2021-07-15T00:00:00Z"), "revoked revoke-early");
        assert_eq!(at("b", "2021-09-01T00:00:00Z"), "revoked revoke-early");
        // An exemption before the revocations.
        assert_eq!(at("c", "2021-06-15T00:00:00Z"), "exempt exempt");
        assert_eq!(at("c", "2021-09-01T00:00:00Z"), "exempt exempt");
        // A revocation and an exemption from the same instant: the revocation.
        assert_eq!(at("d", "2021-05-31T00:00:00Z"), "deny pd");
        assert_eq!(at("d", "2021-06-15T00:00:00Z"), "revoked revoke-d");
    }

    #[test]
    fn of_two_injunctions_in_effect_the_later_names_the_answer() {
        let p = changes_policy();
        let c = Posture::default();
        let at = |at| told(&p, "e", at, None, c);
        assert_eq!(at("2021-02-15T00:00:00Z"), "deny pe");
        assert_eq!(at("2021-03-15T00:00:00Z"), "enjoined court-1");
        assert_eq!(at("2021-05-01T00:00:00Z"), "enjoined court-2");
        assert_eq!(at("2021-10-01T00:00:00Z"), "enjoined court-2");
    }

    #[test]
    fn each_posture_reads_its_edge_of_a_window_and_both_say_they_differ() {
        let p = changes_policy();
        let conservative = Posture::default();
        let permissive = Posture {
            boundaries: law::Boundaries::Permissive,
            ..conservative
        };
        let inside = "2021-02-05T00:00:00Z";
        assert_eq!(
            told(&p, "w", inside, None, conservative),
            "deny pw, uncertain"
        );
        assert_eq!(
            told(&p, "w", inside, None, permissive),
            "not-yet-in-force -, uncertain"
        );
        // Outside the window, both readings agree.
        assert_eq!(
            told(&p, "w", "2021-01-31T00:00:00Z", None, conservative),
            "not-yet-in-force -"
        );
        assert_eq!(
            told(&p, "w", "2021-02-10T00:00:00Z", None, permissive),
            "deny pw"
        );
    }

    #[test]
    fn relief_ends_and_non_enforcement_is_honoured_or_set_aside() {
        let p = changes_policy();
        let honour = Posture::default();
        let ignore = Posture {
            non_enforcement: law::NonEnforcement::Ignore,
            ..honour
        };
        let at = |app, at, posture| told(&p, app, at, None, posture);
        // An injunction until 2021-05-01.
        assert_eq!(at("f", "2021-04-01T00:00:00Z", honour), "enjoined court-f");
        assert_eq!(at("f", "2021-05-01T00:00:00Z", honour), "deny pf");
        // A non-enforcement order until 2021-05-01, honoured or set aside.
        assert_eq!(at("g", "2021-02-15T00:00:00Z", ignore), "deny pg");
        assert_eq!(at("g", "2021-04-01T00:00:00Z", honour), "not-enforced ne-g");
        assert_eq!(
            at("g", "2021-04-01T00:00:00Z", ignore),
            "deny pg, setting aside ne-g"
        );
        assert_eq!(at("g", "2021-05-01T00:00:00Z", ignore), "deny pg");
        // An end.
        assert_eq!(at("h", "2021-04-30T00:00:00Z", honour), "deny ph");
        assert_eq!(at("h", "2021-05-01T00:00:00Z", honour), "lapsed order-h");
    }

    #[test]
    fn an_app_covered_twice_is_allowed_by_its_weakest_relief_and_reported_by_the_first() {
        let p = changes_policy();
        let c = Posture::default();
        // Not yet in force beats enjoined (an allow lasts as long as its weakest relief).
        assert_eq!(
            told(&p, "j", "2021-04-01T00:00:00Z", None, c),
            "not-yet-in-force -"
        );
        assert_eq!(told(&p, "j", "2021-12-01T00:00:00Z", None, c), "deny pj1");
        // Neither of `i`'s prohibitions in force: the first's test is the one reported.
        let r = asked("i", &[], "2021-03-01T00:00:00Z", None);
        for d in [p.decide(&r, c), p.decide_scanning(&r, c)] {
            assert_eq!(d.jurisdiction.map(|j| j.region.id.as_str()), Some("US"));
        }
        assert_eq!(answer(&p, &r, c), "not-yet-in-force -");
    }

    #[test]
    fn apps_judged_together_deny_once_per_prohibition_or_take_the_weakest_relief() {
        let p = changes_policy();
        let honour = Posture::default();
        let ignore = Posture {
            non_enforcement: law::NonEnforcement::Ignore,
            ..honour
        };
        let together =
            |app, carried, at, posture| answer(&p, &asked(app, &[carried], at, None), posture);
        // `b` carrying `c`'s code: both denied by `pb`, named once.
        assert_eq!(
            together("b", "c", "2021-03-01T00:00:00Z", honour),
            "deny pb"
        );
        // `g` carrying `m`'s code, the order covering both set aside: named once.
        assert_eq!(
            together("g", "m", "2021-04-01T00:00:00Z", ignore),
            "deny pg, setting aside ne-g"
        );
        // `e` enjoined, carrying `a`'s code, not yet in force: the weaker relief, either way round.
        assert_eq!(
            together("e", "a", "2021-03-15T00:00:00Z", honour),
            "not-yet-in-force -"
        );
        assert_eq!(
            together("a", "e", "2021-03-15T00:00:00Z", honour),
            "not-yet-in-force -"
        );
    }
}
