//! The differential test: generated policies and requests, decided by the engine and by
//! the reference evaluator under every posture, compared field by field.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant as Clock};

use fastrand::Rng;

use policy::{DecisionRecord, Policy, Posture, Request, RequestRecord};

use crate::eval::{Answer, Evaluator};
use crate::generate::{self, GenPolicy, GenRequest};

/// Requests drawn per generated policy; each is decided under every posture.
pub const REQUESTS_PER_POLICY: u64 = 25;
const CASES_PER_POLICY: u64 = REQUESTS_PER_POLICY * Posture::ALL.len() as u64;

/// What to run.
#[derive(Clone, Debug)]
pub struct Config {
    /// Cases to run: one case is a policy, a request and a posture.
    pub cases: u64,
    pub seed: u64,
    /// Worker threads; 0 for one per core.
    pub threads: usize,
    /// How many failures to show in full: the first of each kind.
    pub show: usize,
    /// Whether to shrink the failures shown.
    pub shrink: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            cases: 2_000,
            seed: 0,
            threads: 0,
            show: 8,
            shrink: true,
        }
    }
}

/// A case the engine and the reference answer differently.
#[derive(Clone, Debug)]
pub struct Mismatch {
    pub policy: GenPolicy,
    pub request: GenRequest,
    pub posture: Posture,
    pub engine: DecisionRecord,
    pub reference: Answer,
    pub fields: Vec<&'static str>,
    /// The request named several covered apps (an app carrying another's code).
    pub several_apps: bool,
}

/// Something that went wrong in a case.
#[derive(Clone, Debug)]
pub enum Failure {
    /// The engine and the reference disagree.
    Mismatch(Box<Mismatch>),
    /// A generated policy did not load: the generator wrote something the format
    /// refuses, or the validator refuses something the format allows.
    InvalidPolicy {
        sources: Vec<(String, String)>,
        diagnostics: String,
    },
    /// A generated request was refused.
    InvalidRequest {
        request: Box<RequestRecord>,
        error: String,
    },
    /// The validator expanded change targets otherwise than the format says.
    Targets {
        sources: Vec<(String, String)>,
        expected: String,
        loaded: String,
    },
}

/// A failure with where it happened.
#[derive(Clone, Debug)]
pub struct Found {
    /// The number of the case (or of the first case of the policy).
    pub case: u64,
    pub policy: u64,
    pub failure: Failure,
    /// The failure after shrinking, when it was shrunk.
    pub shrunk: Option<Box<Mismatch>>,
}

impl Found {
    /// What kind of failure: the differing fields of a mismatch, or what failed.
    pub fn kind(&self) -> String {
        match &self.failure {
            Failure::Mismatch(m) => mismatch_kind(&m.fields, m.several_apps),
            Failure::InvalidPolicy { .. } => "invalid policy".to_owned(),
            Failure::InvalidRequest { .. } => "invalid request".to_owned(),
            Failure::Targets { .. } => "targets".to_owned(),
        }
    }
}

fn mismatch_kind(fields: &[&str], several_apps: bool) -> String {
    let fields = fields.join(", ");
    if several_apps {
        format!("{fields} (several apps)")
    } else {
        fields
    }
}

/// What a run found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub seed: u64,
    pub cases: u64,
    pub policies: u64,
    pub mismatches: u64,
    /// Policies, requests or target expansions that failed.
    pub other_failures: u64,
    /// Engine outcomes: `deny`, `allow/<because>`.
    pub outcomes: BTreeMap<String, u64>,
    /// Cases the engine marked uncertain.
    pub uncertain: u64,
    /// Mismatching cases by the set of fields that differ.
    pub by_fields: BTreeMap<String, u64>,
    pub first: Vec<Found>,
    /// Generating, deciding and comparing.
    pub elapsed: Duration,
    /// Shrinking the failures shown.
    pub shrinking: Duration,
}

impl Report {
    /// Whether nothing failed.
    pub fn passed(&self) -> bool {
        self.mismatches == 0 && self.other_failures == 0
    }

    /// The figures, and the first failures in full.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "seed:        {}", self.seed);
        let _ = writeln!(out, "cases:       {}", self.cases);
        let _ = writeln!(out, "policies:    {}", self.policies);
        let _ = writeln!(out, "mismatches:  {}", self.mismatches);
        let _ = writeln!(
            out,
            "other failures (policy, request, targets): {}",
            self.other_failures
        );
        let secs = self.elapsed.as_secs_f64();
        let _ = writeln!(
            out,
            "elapsed:     {secs:.2} s ({:.0} cases/s)",
            self.cases as f64 / secs.max(1e-9)
        );
        if !self.shrinking.is_zero() {
            let _ = writeln!(out, "shrinking:   {:.2} s", self.shrinking.as_secs_f64());
        }
        let _ = writeln!(out, "uncertain:   {}", self.uncertain);
        let _ = writeln!(out, "outcomes (engine):");
        for (kind, n) in &self.outcomes {
            let _ = writeln!(out, "  {kind:<36} {n}");
        }
        if !self.by_fields.is_empty() {
            let _ = writeln!(out, "mismatches by differing fields:");
            for (fields, n) in &self.by_fields {
                let _ = writeln!(out, "  {fields:<52} {n}");
            }
        }
        for found in &self.first {
            out.push('\n');
            out.push_str(&render_found(found));
        }
        out
    }
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|e| format!("<{e}>"))
}

fn render_sources(out: &mut String, sources: &[(String, String)]) {
    for (name, text) in sources {
        let _ = writeln!(out, "--- {name}");
        out.push_str(text);
        if !text.ends_with('\n') {
            out.push('\n');
        }
    }
    let _ = writeln!(out, "---");
}

fn render_mismatch(out: &mut String, m: &Mismatch) {
    let _ = writeln!(
        out,
        "differing fields: {}",
        mismatch_kind(&m.fields, m.several_apps)
    );
    let _ = writeln!(out, "posture: {}", json(&m.posture));
    render_sources(out, &m.policy.sources());
    let _ = writeln!(out, "request:   {}", json(&m.request.record()));
    let _ = writeln!(out, "engine:    {}", json(&m.engine));
    let _ = writeln!(out, "reference: {}", json(&m.reference));
}

fn render_found(found: &Found) -> String {
    let mut out = String::new();
    match &found.failure {
        Failure::Mismatch(m) => {
            let _ = writeln!(
                out,
                "=== mismatch in case {} (policy {})",
                found.case, found.policy
            );
            match &found.shrunk {
                Some(s) => {
                    let _ = writeln!(
                        out,
                        "shrunk; originally differing in {}",
                        m.fields.join(", ")
                    );
                    render_mismatch(&mut out, s);
                }
                None => render_mismatch(&mut out, m),
            }
        }
        Failure::InvalidPolicy {
            sources,
            diagnostics,
        } => {
            let _ = writeln!(out, "=== generated policy {} does not load", found.policy);
            render_sources(&mut out, sources);
            out.push_str(diagnostics);
        }
        Failure::InvalidRequest { request, error } => {
            let _ = writeln!(
                out,
                "=== generated request in case {} refused: {error}\n{}",
                found.case,
                json(request)
            );
        }
        Failure::Targets {
            sources,
            expected,
            loaded,
        } => {
            let _ = writeln!(
                out,
                "=== policy {}: change targets differ from the format's expansion",
                found.policy
            );
            render_sources(&mut out, sources);
            let _ = writeln!(out, "expected: {expected}\nloaded:   {loaded}");
        }
    }
    out
}

/// splitmix64: independent streams for each policy from one seed.
fn mix(seed: u64, index: u64) -> u64 {
    let mut z = seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Decides one case both ways.
fn compare(
    policy: &Policy,
    evaluator: &Evaluator<'_>,
    request: &Request,
    posture: Posture,
) -> (DecisionRecord, Answer, Vec<&'static str>) {
    let engine = policy.decide(request, posture).to_record();
    let reference = evaluator.answer(posture);
    let fields = Answer::from_record(&engine).differences(&reference);
    (engine, reference, fields)
}

#[derive(Default)]
struct Tally {
    cases: u64,
    mismatches: u64,
    other_failures: u64,
    outcomes: BTreeMap<String, u64>,
    uncertain: u64,
    by_fields: BTreeMap<String, u64>,
    found: Vec<Found>,
}

impl Tally {
    /// Keeps the first failure of each kind (the set of differing fields, for a
    /// mismatch), so that the failures shown are as varied as the run's.
    fn keep(&mut self, found: Found, show: usize) {
        let kind = found.kind();
        match self.found.iter().position(|f| f.kind() == kind) {
            Some(i) if found.case < self.found[i].case => self.found[i] = found,
            Some(_) => {}
            None if self.found.len() < show.max(16) => self.found.push(found),
            None => {}
        }
    }

    fn merge(&mut self, other: Tally) {
        self.cases += other.cases;
        self.mismatches += other.mismatches;
        self.other_failures += other.other_failures;
        self.uncertain += other.uncertain;
        for (k, v) in other.outcomes {
            *self.outcomes.entry(k).or_default() += v;
        }
        for (k, v) in other.by_fields {
            *self.by_fields.entry(k).or_default() += v;
        }
        for f in other.found {
            self.keep(f, usize::MAX);
        }
    }
}

fn run_policy(config: &Config, index: u64, tally: &mut Tally) {
    let mut rng = Rng::with_seed(mix(config.seed, index));
    let first_case = index * CASES_PER_POLICY;
    let cases = CASES_PER_POLICY.min(config.cases - first_case);
    let g = generate::policy(&mut rng);
    let policy = match g.load() {
        Ok(p) => p,
        Err(d) => {
            tally.other_failures += 1;
            tally.keep(
                Found {
                    case: first_case,
                    policy: index,
                    failure: Failure::InvalidPolicy {
                        sources: g.sources(),
                        diagnostics: d.render(),
                    },
                    shrunk: None,
                },
                config.show,
            );
            return;
        }
    };
    let expected = g.expected_targets();
    let loaded = generate::loaded_targets(&policy);
    if expected != loaded {
        tally.other_failures += 1;
        tally.keep(
            Found {
                case: first_case,
                policy: index,
                failure: Failure::Targets {
                    sources: g.sources(),
                    expected: format!("{expected:?}"),
                    loaded: format!("{loaded:?}"),
                },
                shrunk: None,
            },
            config.show,
        );
    }
    let boundaries = generate::boundaries(&policy);
    let mut case = first_case;
    while case < first_case + cases {
        let r = generate::request(&mut rng, &g, &boundaries);
        let record = r.record();
        let request = match record.clone().into_request() {
            Ok(req) => req,
            Err(e) => {
                tally.other_failures += 1;
                tally.keep(
                    Found {
                        case,
                        policy: index,
                        failure: Failure::InvalidRequest {
                            request: Box::new(record),
                            error: e.to_string(),
                        },
                        shrunk: None,
                    },
                    config.show,
                );
                case += Posture::ALL.len() as u64;
                continue;
            }
        };
        let evaluator = Evaluator::new(&policy, &request);
        for posture in Posture::ALL {
            if case >= first_case + cases {
                break;
            }
            let (engine, reference, fields) = compare(&policy, &evaluator, &request, posture);
            tally.cases += 1;
            *tally
                .outcomes
                .entry(Answer::from_record(&engine).kind())
                .or_default() += 1;
            if engine.uncertain.is_some() {
                tally.uncertain += 1;
            }
            if !fields.is_empty() {
                tally.mismatches += 1;
                let several_apps = evaluator.matched() > 1;
                *tally
                    .by_fields
                    .entry(mismatch_kind(&fields, several_apps))
                    .or_default() += 1;
                tally.keep(
                    Found {
                        case,
                        policy: index,
                        failure: Failure::Mismatch(Box::new(Mismatch {
                            policy: g.clone(),
                            request: r.clone(),
                            posture,
                            engine,
                            reference,
                            fields,
                            several_apps,
                        })),
                        shrunk: None,
                    },
                    config.show,
                );
            }
            case += 1;
        }
    }
}

/// Runs the differential test.
pub fn run(config: &Config) -> Report {
    let started = Clock::now();
    let policies = config.cases.div_ceil(CASES_PER_POLICY);
    let threads = match config.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let next = AtomicU64::new(0);
    let total = Mutex::new(Tally::default());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                let mut mine = Tally::default();
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= policies {
                        break;
                    }
                    run_policy(config, index, &mut mine);
                }
                if let Ok(mut t) = total.lock() {
                    t.merge(mine);
                }
            });
        }
    });
    let mut tally = total.into_inner().unwrap_or_default();
    let elapsed = started.elapsed();
    let shrinking = Clock::now();
    // The first failure of each kind by case number, whatever thread found it.
    tally.found.sort_by_key(|f| f.case);
    tally.found.truncate(config.show);
    if config.shrink {
        for found in &mut tally.found {
            if let Failure::Mismatch(m) = &found.failure {
                found.shrunk = Some(Box::new(shrink(m)));
            }
        }
    }
    Report {
        seed: config.seed,
        cases: tally.cases,
        policies,
        mismatches: tally.mismatches,
        other_failures: tally.other_failures,
        outcomes: tally.outcomes,
        uncertain: tally.uncertain,
        by_fields: tally.by_fields,
        first: tally.found,
        elapsed,
        shrinking: shrinking.elapsed(),
    }
}

/// The mismatch for a candidate, when it still fails in the same fields.
fn still_fails(
    g: &GenPolicy,
    r: &GenRequest,
    posture: Posture,
    fields: &[&'static str],
) -> Option<Mismatch> {
    let policy = g.load().ok()?;
    let request = r.record().into_request().ok()?;
    let evaluator = Evaluator::new(&policy, &request);
    let (engine, reference, now) = compare(&policy, &evaluator, &request, posture);
    (now == fields).then(|| Mismatch {
        policy: g.clone(),
        request: r.clone(),
        posture,
        engine,
        reference,
        fields: now,
        several_apps: evaluator.matched() > 1,
    })
}

/// Every simplification of one step: an item taken out, a window closed, a list
/// shortened, a request field dropped.
fn simplifications(g: &GenPolicy, r: &GenRequest) -> Vec<(GenPolicy, GenRequest)> {
    let mut out: Vec<(GenPolicy, GenRequest)> = Vec::new();
    let mut policy_edit = |edit: &dyn Fn(&mut GenPolicy) -> bool| {
        let mut c = g.clone();
        if edit(&mut c) {
            out.push((c, r.clone()));
        }
    };
    for i in 0..g.changes.len() {
        policy_edit(&|c| c.changes[i].take().is_some());
    }
    for i in 0..g.prohibitions.len() {
        policy_edit(&|c| c.prohibitions[i].take().is_some());
    }
    for i in 0..g.apps.len() {
        policy_edit(&|c| c.apps[i].take().is_some());
    }
    for i in 0..g.entities.len() {
        policy_edit(&|c| c.entities[i].take().is_some());
    }
    for i in 0..g.regions.len() {
        policy_edit(&|c| c.regions[i].take().is_some());
    }
    for i in 0..g.instruments.len() {
        policy_edit(&|c| c.instruments[i].take().is_some());
    }
    // Windows closed on either edge, and plain UTC spelling.
    let count = moments(&mut g.clone()).len();
    for j in 0..count {
        policy_edit(&|c| {
            let mut ms = moments(c);
            let m = &mut ms[j];
            let changed = m.earliest != m.latest;
            m.latest = m.earliest;
            changed
        });
        policy_edit(&|c| {
            let mut ms = moments(c);
            let m = &mut ms[j];
            let changed = m.earliest != m.latest;
            m.earliest = m.latest;
            changed
        });
        policy_edit(&|c| {
            let mut ms = moments(c);
            let m = &mut ms[j];
            let plain = (generate::Style::Utc, generate::Style::Utc);
            let changed = m.styles != plain;
            m.styles = plain;
            changed
        });
    }
    for i in 0..g.prohibitions.len() {
        policy_edit(&|c| match &mut c.prohibitions[i] {
            Some(p) => p.end.take().is_some(),
            None => false,
        });
        policy_edit(&|c| match &mut c.prohibitions[i] {
            Some(p) => p.jurisdiction.take().is_some(),
            None => false,
        });
        let Some(p) = &g.prohibitions[i] else {
            continue;
        };
        for k in 0..p.apps.len() {
            policy_edit(&|c| {
                c.prohibitions[i]
                    .as_mut()
                    .map(|p| p.apps.remove(k))
                    .is_some()
            });
        }
        for k in 0..p.owners.len() {
            policy_edit(&|c| {
                c.prohibitions[i]
                    .as_mut()
                    .map(|p| p.owners.remove(k))
                    .is_some()
            });
        }
        for k in 0..p.actions.len() {
            if p.actions.len() > 1 {
                policy_edit(&|c| {
                    c.prohibitions[i]
                        .as_mut()
                        .map(|p| p.actions.remove(k))
                        .is_some()
                });
            }
        }
    }
    for i in 0..g.changes.len() {
        let Some(ch) = &g.changes[i] else { continue };
        for k in 0..ch.prohibitions.len() {
            policy_edit(&|c| {
                c.changes[i]
                    .as_mut()
                    .map(|x| x.prohibitions.remove(k))
                    .is_some()
            });
        }
        for k in 0..ch.instruments.len() {
            policy_edit(&|c| {
                c.changes[i]
                    .as_mut()
                    .map(|x| x.instruments.remove(k))
                    .is_some()
            });
        }
        policy_edit(&|c| match c.changes[i].as_mut().map(|x| &mut x.kind) {
            Some(
                generate::GenChangeKind::Injunction { until, .. }
                | generate::GenChangeKind::NonEnforcement { until, .. },
            ) => until.take().is_some(),
            _ => false,
        });
    }
    for i in 0..g.instruments.len() {
        policy_edit(&|c| match &mut c.instruments[i] {
            Some(ins) => !std::mem::take(&mut ins.pursuant_to).is_empty(),
            None => false,
        });
    }
    for i in 0..g.entities.len() {
        policy_edit(&|c| match &mut c.entities[i] {
            Some(e) => e.parent.take().is_some() || !std::mem::take(&mut e.accounts).is_empty(),
            None => false,
        });
    }
    for i in 0..g.apps.len() {
        policy_edit(&|c| match &mut c.apps[i] {
            Some(a) => {
                let had = a.ios.len() + a.android.len() + a.certs.len() + a.codes.len();
                a.ios.truncate(1);
                a.android.truncate(1);
                a.certs.truncate(1);
                a.codes.truncate(1);
                had != a.ios.len() + a.android.len() + a.certs.len() + a.codes.len()
            }
            None => false,
        });
        for field in 0..4 {
            policy_edit(&|c| match &mut c.apps[i] {
                Some(a) => {
                    let list = match field {
                        0 => &mut a.ios,
                        1 => &mut a.android,
                        2 => &mut a.certs,
                        _ => &mut a.codes,
                    };
                    !std::mem::take(list).is_empty()
                }
                None => false,
            });
        }
        // Items in the common file read more easily.
        policy_edit(&|c| match &mut c.apps[i] {
            Some(a) => a.file.take().is_some(),
            None => false,
        });
    }
    for i in 0..g.entities.len() {
        policy_edit(&|c| match &mut c.entities[i] {
            Some(e) => e.file.take().is_some(),
            None => false,
        });
    }
    for i in 0..g.regions.len() {
        policy_edit(&|c| match &mut c.regions[i] {
            Some(x) => x.file.take().is_some(),
            None => false,
        });
        policy_edit(&|c| match &mut c.regions[i] {
            Some(x) if x.countries.len() > 1 => {
                x.countries.truncate(1);
                true
            }
            _ => false,
        });
    }
    let mut request_edit = |edit: &dyn Fn(&mut GenRequest) -> bool| {
        let mut c = r.clone();
        if edit(&mut c) {
            out.push((g.clone(), c));
        }
    };
    request_edit(&|c| c.known_at.take().is_some());
    request_edit(&|c| c.publisher.take().is_some());
    request_edit(&|c| c.cert.take().is_some());
    request_edit(&|c| c.app.take().is_some());
    for k in 0..r.codes.len() {
        request_edit(&|c| {
            c.codes.remove(k);
            true
        });
    }
    for s in 0..r.signals.len() {
        request_edit(&|c| c.signals[s].take().is_some());
    }
    out
}

/// Every instant of a generated set, in a fixed order.
fn moments(g: &mut GenPolicy) -> Vec<&mut generate::GenMoment> {
    let mut out: Vec<&mut generate::GenMoment> = Vec::new();
    for ins in g.instruments.iter_mut().flatten() {
        out.push(&mut ins.issued);
    }
    for p in g.prohibitions.iter_mut().flatten() {
        out.push(&mut p.effective);
        if let Some(e) = &mut p.end {
            out.push(e);
        }
    }
    for c in g.changes.iter_mut().flatten() {
        match &mut c.kind {
            generate::GenChangeKind::Delay { effective } => out.push(effective),
            generate::GenChangeKind::Injunction { from, until }
            | generate::GenChangeKind::NonEnforcement { from, until } => {
                out.push(from);
                if let Some(u) = until {
                    out.push(u);
                }
            }
            generate::GenChangeKind::Revocation { from }
            | generate::GenChangeKind::Exemption { from, .. } => out.push(from),
        }
    }
    out
}

/// Shrinks a mismatch greedily: one simplification at a time, while the same fields
/// still differ.
pub fn shrink(m: &Mismatch) -> Mismatch {
    let mut best = m.clone();
    // Each round takes at least one item out or closes a window, so rounds are few.
    for _ in 0..200 {
        let mut progressed = false;
        for (g, r) in simplifications(&best.policy, &best.request) {
            if let Some(found) = still_fails(&g, &r, best.posture, &best.fields) {
                best = found;
                progressed = true;
                break;
            }
        }
        if !progressed {
            break;
        }
    }
    best
}
