//! Test cases kept beside the policies, and their runner.
//!
//! A policy set keeps its cases in `<set>/tests/*.jsonl` (the loader reads only `*.toml`,
//! so they never become policy). Each line is one case: a name, a request in the format of
//! `gatekeeper check`, the operator's posture if not the default, and the decision fields it
//! must have:
//!
//! ```json
//! {"case": "tiktok update after the delay", "request": {"app": {"platform": "android", "id": "com.zhiliaoapp.musically"}, "action": "update", "at": "2020-09-28T04:00:00Z", "storefront": "US"}, "posture": {"boundaries": "permissive"}, "expect": {"decision": "deny", "reasons": ["tiktok-app-store"]}}
//! ```
//!
//! Expected fields are compared exactly; fields a case leaves out are not checked.
//! `reasons` lists the denying prohibitions' ids, `relief_set_aside` the set-aside
//! instruments' ids, `authority` the instruments behind the first reason; `error` expects
//! the request to be refused, with a message containing the given text.
//!
//! The runner loads each set, decides every case with the engine, reports failures with file
//! and line, and reports which prohibitions, changes and windows no case exercises. With
//! `update`, failing cases are rewritten with the current answers (the other lines are left
//! byte for byte), for the maintainer to review.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use policy::model::{ChangeKind, Moment, Relief};
use policy::{Boundaries, Instant, NonEnforcement, Policy, Posture, RequestRecord};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// The folder of a set that holds its cases.
pub const TESTS_DIR: &str = "tests";

/// The fields a case may expect: the decision record's, and `authority` and `error`.
pub const EXPECTABLE: [&str; 15] = [
    "decision",
    "because",
    "by",
    "in_force_from",
    "reasons",
    "relief_set_aside",
    "authority",
    "app",
    "owner",
    "matched_by",
    "case_insensitive_match",
    "jurisdiction",
    "uncertain",
    "valid_until",
    "error",
];

/// The fields `update` writes for a case that expects nothing yet.
const DEFAULT_EXPECT: [&str; 7] = [
    "decision",
    "because",
    "by",
    "reasons",
    "in_force_from",
    "uncertain",
    "valid_until",
];

/// A set and its case files.
#[derive(Clone, Debug)]
pub struct Suite {
    /// The set's folder.
    pub dir: PathBuf,
    /// `<dir>/tests/*.jsonl`, sorted.
    pub files: Vec<PathBuf>,
}

/// Something that kept cases from running: a file that does not parse, a folder that
/// cannot be read, a set that does not load. Each names its place.
#[derive(Clone, Debug, Serialize)]
pub struct Problem {
    /// `file:line:col`, or a path.
    pub place: String,
    /// What is wrong.
    pub message: String,
}

impl Problem {
    fn new(place: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            place: place.into(),
            message: message.into(),
        }
    }
}

/// How to run.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Rewrite failing cases with the current answers.
    pub update: bool,
}

/// One case's result.
#[derive(Clone, Debug, Serialize)]
pub struct CaseResult {
    /// The case's name.
    pub name: String,
    /// Its line in the file.
    pub line: usize,
    /// Whether it passed.
    pub passed: bool,
    /// What differs, one line each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// The whole decision (or the request's error), for a failing case.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actual: Option<String>,
    /// Whether `update` rewrote it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub updated: bool,
}

/// A case file's results.
#[derive(Clone, Debug, Serialize)]
pub struct FileReport {
    /// The file.
    pub path: String,
    /// Its cases, in order.
    pub cases: Vec<CaseResult>,
}

/// A set's results.
#[derive(Clone, Debug, Serialize)]
pub struct SuiteReport {
    /// The set's folder.
    pub dir: String,
    /// Its case files.
    pub files: Vec<FileReport>,
}

/// A prohibition, change or window of the policies.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Item {
    /// `prohibition`, `change` or `window`.
    pub kind: &'static str,
    /// What it is, as people read it.
    pub label: String,
    /// The file of the instrument that makes it.
    pub file: String,
}

/// Which items the cases exercise.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Coverage {
    /// Every item of every set run.
    pub items: usize,
    /// Items some case exercises.
    pub exercised: usize,
    /// Items no case exercises.
    pub unexercised: Vec<Item>,
}

/// Everything a run found.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// By set.
    pub suites: Vec<SuiteReport>,
    /// What kept cases from running.
    pub problems: Vec<Problem>,
    /// What the cases exercise.
    pub coverage: Coverage,
    /// Cases that passed.
    pub passed: usize,
    /// Cases that failed.
    pub failed: usize,
    /// Cases `update` rewrote.
    pub updated: usize,
}

impl Report {
    /// Whether every case ran and passed.
    pub fn ok(&self) -> bool {
        self.failed == 0 && self.problems.is_empty()
    }

    /// Every case result, with its file.
    pub fn cases(&self) -> impl Iterator<Item = (&str, &CaseResult)> {
        self.suites
            .iter()
            .flat_map(|s| &s.files)
            .flat_map(|f| f.cases.iter().map(move |c| (f.path.as_str(), c)))
    }
}

/// Finds the sets below `paths`: a path with a `tests` folder is a set; otherwise each
/// folder directly inside it that has one.
pub fn discover(paths: &[PathBuf]) -> (Vec<Suite>, Vec<Problem>) {
    let mut suites = Vec::new();
    let mut problems = Vec::new();
    for path in paths {
        let shown = path.display().to_string();
        match std::fs::metadata(path) {
            Err(e) => {
                problems.push(Problem::new(&shown, format!("cannot read: {e}")));
                continue;
            }
            Ok(m) if !m.is_dir() => {
                problems.push(Problem::new(
                    &shown,
                    "not a folder: give a policy set's folder (with its cases in `tests/*.jsonl`) or a folder of sets",
                ));
                continue;
            }
            Ok(_) => {}
        }
        if path.join(TESTS_DIR).is_dir() {
            match suite(path) {
                Ok(s) => suites.push(s),
                Err(p) => problems.push(p),
            }
            continue;
        }
        let entries = match std::fs::read_dir(path) {
            Ok(entries) => entries,
            Err(e) => {
                problems.push(Problem::new(&shown, format!("cannot read the folder: {e}")));
                continue;
            }
        };
        let mut dirs: Vec<PathBuf> = Vec::new();
        for entry in entries {
            match entry {
                Ok(entry) => {
                    let p = entry.path();
                    if p.join(TESTS_DIR).is_dir() {
                        dirs.push(p);
                    }
                }
                Err(e) => {
                    problems.push(Problem::new(&shown, format!("cannot read the folder: {e}")))
                }
            }
        }
        dirs.sort();
        if dirs.is_empty() {
            problems.push(Problem::new(
                &shown,
                "no test cases here: a policy set keeps its cases in `<set>/tests/*.jsonl`",
            ));
        }
        for dir in dirs {
            match suite(&dir) {
                Ok(s) => suites.push(s),
                Err(p) => problems.push(p),
            }
        }
    }
    (suites, problems)
}

fn suite(dir: &Path) -> Result<Suite, Problem> {
    let tests = dir.join(TESTS_DIR);
    let shown = tests.display().to_string();
    let entries = std::fs::read_dir(&tests)
        .map_err(|e| Problem::new(&shown, format!("cannot read the folder: {e}")))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry =
            entry.map_err(|e| Problem::new(&shown, format!("cannot read the folder: {e}")))?;
        let p = entry.path();
        if p.extension().is_some_and(|e| e == "jsonl") {
            files.push(p);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(Problem::new(
            shown,
            "holds no `*.jsonl` case file: write cases one JSON object a line",
        ));
    }
    Ok(Suite {
        dir: dir.to_path_buf(),
        files,
    })
}

/// A case line as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseLine<'a> {
    case: String,
    #[serde(borrow)]
    request: &'a RawValue,
    #[serde(default, borrow)]
    posture: Option<&'a RawValue>,
    #[serde(default)]
    expect: Option<Map<String, Value>>,
}

/// `{"boundaries": "permissive", "non_enforcement": "ignore"}`, either key optional.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PostureLine {
    #[serde(default)]
    boundaries: Option<String>,
    #[serde(default)]
    non_enforcement: Option<String>,
}

fn posture_of(raw: Option<&RawValue>) -> Result<Posture, String> {
    let mut posture = Posture::default();
    let Some(raw) = raw else {
        return Ok(posture);
    };
    let line: PostureLine =
        serde_json::from_str(raw.get()).map_err(|e| format!("invalid `posture`: {e}"))?;
    if let Some(b) = line.boundaries {
        posture.boundaries = Boundaries::parse(&b).ok_or_else(|| {
            format!("invalid `posture.boundaries` `{b}`; expected `conservative` or `permissive`")
        })?;
    }
    if let Some(n) = line.non_enforcement {
        posture.non_enforcement = NonEnforcement::parse(&n).ok_or_else(|| {
            format!("invalid `posture.non_enforcement` `{n}`; expected `honour` or `ignore`")
        })?;
    }
    Ok(posture)
}

/// A decision as a case compares it: the record, with `reasons` and `relief_set_aside` as
/// ids and `authority` added; or `{"error": message}` for a refused request.
fn actual_of(policy: &Policy, request: &str, posture: Posture) -> (Value, Option<Decided>) {
    let record: RequestRecord = match serde_json::from_str(request) {
        Ok(r) => r,
        Err(e) => {
            return (
                serde_json::json!({ "error": format!("invalid request: {e}") }),
                None,
            );
        }
    };
    let request = match record.into_request() {
        Ok(r) => r,
        Err(e) => return (serde_json::json!({ "error": e.to_string() }), None),
    };
    let decision = policy.decide(&request, posture);
    let record = decision.to_record();
    let mut actual = serde_json::to_value(&record).unwrap_or(Value::Null);
    let ids = |list: &Value, key: &str| -> Value {
        list.as_array()
            .map(|r| r.iter().map(|x| x[key].clone()).collect())
            .unwrap_or_default()
    };
    actual["authority"] = ids(&actual["reasons"][0]["authority"], "instrument");
    actual["reasons"] = ids(&actual["reasons"], "prohibition");
    actual["relief_set_aside"] = ids(&actual["relief_set_aside"], "instrument");
    let full = serde_json::to_string(&record).unwrap_or_default();
    (
        actual,
        Some(Decided {
            record,
            at: request.at(),
            known_at: request.known_at(),
            full,
        }),
    )
}

/// What a decided case contributes to coverage.
struct Decided {
    record: policy::DecisionRecord,
    at: Instant,
    known_at: Option<Instant>,
    full: String,
}

/// Compares the expected fields; returns what differs.
fn compare(expect: &Map<String, Value>, actual: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    for (key, want) in expect {
        if key == "error" {
            let got = actual.get("error").and_then(Value::as_str);
            match (want.as_str(), got) {
                (Some(w), Some(g)) if g.contains(w) => {}
                (_, Some(g)) => problems.push(format!(
                    "`error`: expected a refusal containing {want}, got {g:?}"
                )),
                (_, None) => problems.push(format!(
                    "`error`: expected a refusal containing {want}, got a decision"
                )),
            }
            continue;
        }
        if let Some(e) = actual.get("error") {
            problems.push(format!(
                "expected a decision, the request was refused: {}",
                e.as_str().unwrap_or_default()
            ));
            break;
        }
        let got = actual.get(key).cloned().unwrap_or(Value::Null);
        if &got != want {
            problems.push(format!("`{key}`: expected {want}, got {got}"));
        }
    }
    problems
}

/// The case's line with `expect` replaced by the actual values of the same fields (or of
/// the default fields when it expects nothing).
fn updated_line(line: &CaseLine<'_>, actual: &Value) -> String {
    let mut expect = Map::new();
    let keys: Vec<String> = match &line.expect {
        Some(e) if !e.is_empty() => e.keys().cloned().collect(),
        _ if actual.get("error").is_some() => vec!["error".to_owned()],
        _ => DEFAULT_EXPECT.iter().map(|k| (*k).to_owned()).collect(),
    };
    for key in keys {
        let value = actual.get(&key).cloned().unwrap_or(Value::Null);
        let empty = matches!(&value, Value::Array(a) if a.is_empty());
        let defaulted = line.expect.as_ref().is_none_or(Map::is_empty);
        // Fresh expectations leave out what the decision does not carry.
        if defaulted && (value.is_null() && key != "valid_until" || empty) {
            continue;
        }
        expect.insert(key, value);
    }
    let mut out = String::from("{\"case\": ");
    out.push_str(&Value::String(line.case.clone()).to_string());
    out.push_str(", \"request\": ");
    out.push_str(line.request.get());
    if let Some(p) = line.posture {
        out.push_str(", \"posture\": ");
        out.push_str(p.get());
    }
    out.push_str(", \"expect\": ");
    out.push_str(&Value::Object(expect).to_string());
    out.push('}');
    out
}

/// What the cases of every set exercised, by item label.
#[derive(Default)]
struct Exercised {
    items: BTreeMap<String, (Item, bool)>,
}

impl Exercised {
    fn add(&mut self, item: Item, hit: bool) {
        let entry = self
            .items
            .entry(format!("{}\u{0}{}", item.kind, item.label))
            .or_insert((item, false));
        entry.1 |= hit;
    }
}

/// Every window of the policy: what it fixes, and its readings.
fn windows(policy: &Policy) -> Vec<(String, String, &Moment)> {
    let mut out = Vec::new();
    for ins in policy.instruments() {
        out.push((
            format!("time of issue of `{}`", ins.id),
            ins.file.clone(),
            &ins.issued,
        ));
    }
    for p in policy.prohibitions() {
        let file = policy.instrument(p.instrument).file.clone();
        out.push((
            format!("`{}` takes effect", p.id),
            file.clone(),
            &p.effective,
        ));
        if let Some(end) = &p.end {
            out.push((format!("`{}` ends", p.id), file, end));
        }
    }
    for (label, c) in change_labels(policy) {
        let file = policy.instrument(c.instrument).file.clone();
        let moments: Vec<(&str, &Moment)> = match &c.kind {
            ChangeKind::Delay { effective } => vec![("", effective)],
            ChangeKind::Relief { from, until, .. } => {
                let mut v = vec![(" begins", from)];
                if let Some(u) = until {
                    v.push((" ends", u));
                }
                v
            }
            ChangeKind::Revocation { from } | ChangeKind::Exemption { from, .. } => {
                vec![("", from)]
            }
        };
        for (what, m) in moments {
            out.push((format!("{label}{what}"), file.clone(), m));
        }
    }
    out.retain(|(_, _, m)| m.is_window());
    out
}

/// Each change with a label: `injunction by tiktok-v-trump-2020-09-27`, numbered when an
/// instrument makes several of a kind.
fn change_labels(policy: &Policy) -> Vec<(String, &policy::model::Change)> {
    let kind = |c: &policy::model::Change| match &c.kind {
        ChangeKind::Delay { .. } => "delay",
        ChangeKind::Relief {
            relief: Relief::Injunction,
            ..
        } => "injunction",
        ChangeKind::Relief {
            relief: Relief::NonEnforcement,
            ..
        } => "non-enforcement",
        ChangeKind::Revocation { .. } => "revocation",
        ChangeKind::Exemption { .. } => "exemption",
    };
    let mut counts: BTreeMap<(String, &str), usize> = BTreeMap::new();
    for c in policy.changes() {
        *counts
            .entry((policy.instrument(c.instrument).id.clone(), kind(c)))
            .or_default() += 1;
    }
    let mut seen: BTreeMap<(String, &str), usize> = BTreeMap::new();
    policy
        .changes()
        .iter()
        .map(|c| {
            let id = policy.instrument(c.instrument).id.clone();
            let k = kind(c);
            let n = seen.entry((id.clone(), k)).or_default();
            *n += 1;
            let label = if counts[&(id.clone(), k)] > 1 {
                format!("{k} by `{id}` (#{n})")
            } else {
                format!("{k} by `{id}`")
            };
            (label, c)
        })
        .collect()
}

/// Whether a decided case exercises a change: its decision names the change's instrument
/// for the change's kind of relief; or, for a revocation, an exemption or a relief that
/// another instrument's equal answer hides, the case is allowed for that reason, for an app
/// a target covers, while the change is in effect; a delay, when the case waits for the
/// instant it set.
fn exercises(policy: &Policy, c: &policy::model::Change, d: &Decided) -> bool {
    let id = &policy.instrument(c.instrument).id;
    let record = &d.record;
    let because = record.because.as_deref();
    let by = record.by.as_deref() == Some(id.as_str());
    let targeted = || {
        record.app.as_deref().is_some_and(|app| {
            c.targets.iter().any(|&t| {
                policy
                    .prohibition(t)
                    .covered
                    .iter()
                    .any(|&a| policy.apps()[a as usize].id() == app)
            })
        })
    };
    let during = |from: &Moment, until: Option<&Moment>| {
        d.at >= from.earliest && until.is_none_or(|u| d.at < u.latest)
    };
    match &c.kind {
        ChangeKind::Relief {
            relief: Relief::Injunction,
            from,
            until,
        } => because == Some("enjoined") && (by || targeted() && during(from, until.as_ref())),
        ChangeKind::Relief {
            relief: Relief::NonEnforcement,
            from,
            until,
        } => {
            because == Some("not-enforced") && (by || targeted() && during(from, until.as_ref()))
                || record.relief_set_aside.iter().any(|r| &r.instrument == id)
        }
        ChangeKind::Revocation { from } => {
            because == Some("revoked") && (by || targeted() && during(from, None))
        }
        ChangeKind::Exemption { from, .. } => {
            because == Some("exempt") && (by || targeted() && during(from, None))
        }
        ChangeKind::Delay { effective } => {
            because == Some("not-yet-in-force")
                && [effective.earliest, effective.latest]
                    .iter()
                    .any(|at| record.in_force_from.as_deref() == Some(at.to_string().as_str()))
        }
    }
}

fn record_coverage(policy: &Policy, decided: &[Decided], exercised: &mut Exercised) {
    for p in policy.prohibitions() {
        let hit = decided
            .iter()
            .any(|d| d.record.reasons.iter().any(|r| r.prohibition == p.id));
        exercised.add(
            Item {
                kind: "prohibition",
                label: format!("`{}`", p.id),
                file: policy.instrument(p.instrument).file.clone(),
            },
            hit,
        );
    }
    for (label, c) in change_labels(policy) {
        let hit = decided.iter().any(|d| exercises(policy, c, d));
        exercised.add(
            Item {
                kind: "change",
                label,
                file: policy.instrument(c.instrument).file.clone(),
            },
            hit,
        );
    }
    for (label, file, m) in windows(policy) {
        let inside = |at: Instant| at >= m.earliest && at < m.latest;
        let hit = decided
            .iter()
            .any(|d| inside(d.at) || d.known_at.is_some_and(inside));
        exercised.add(
            Item {
                kind: "window",
                label,
                file,
            },
            hit,
        );
    }
}

/// Runs the cases of every set below `paths`.
pub fn run(paths: &[PathBuf], options: Options) -> Report {
    let (suites, mut problems) = discover(paths);
    let mut exercised = Exercised::default();
    let mut reports = Vec::new();
    for suite in suites {
        let loaded = match crate::load(&suite.dir) {
            Ok(l) => l,
            Err(e) => {
                problems.push(Problem::new(
                    suite.dir.display().to_string(),
                    format!("the policy set does not load; its cases were not run\n{e}"),
                ));
                continue;
            }
        };
        let mut decided = Vec::new();
        let mut files = Vec::new();
        for file in &suite.files {
            files.push(run_file(
                &loaded.policy,
                file,
                options,
                &mut decided,
                &mut problems,
            ));
        }
        record_coverage(&loaded.policy, &decided, &mut exercised);
        reports.push(SuiteReport {
            dir: suite.dir.display().to_string(),
            files,
        });
    }
    let mut coverage = Coverage::default();
    for (item, hit) in exercised.items.into_values() {
        coverage.items += 1;
        if hit {
            coverage.exercised += 1;
        } else {
            coverage.unexercised.push(item);
        }
    }
    let (mut passed, mut failed, mut updated) = (0, 0, 0);
    for c in reports.iter().flat_map(|s| &s.files).flat_map(|f| &f.cases) {
        if c.passed {
            passed += 1;
        } else {
            failed += 1;
        }
        updated += usize::from(c.updated);
    }
    Report {
        suites: reports,
        problems,
        coverage,
        passed,
        failed,
        updated,
    }
}

fn run_file(
    policy: &Policy,
    path: &Path,
    options: Options,
    decided: &mut Vec<Decided>,
    problems: &mut Vec<Problem>,
) -> FileReport {
    let shown = path.display().to_string();
    let mut report = FileReport {
        path: shown.clone(),
        cases: Vec::new(),
    };
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            problems.push(Problem::new(&shown, format!("cannot read: {e}")));
            return report;
        }
    };
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let offset = e.utf8_error().valid_up_to();
            let bytes = e.as_bytes();
            let line = 1 + bytes[..offset].iter().filter(|&&b| b == b'\n').count();
            problems.push(Problem::new(
                format!("{shown}:{line}"),
                format!("not UTF-8 (byte {offset} of the file)"),
            ));
            return report;
        }
    };
    let mut rewritten: Vec<String> = Vec::new();
    let mut changed = false;
    for (i, raw_line) in text.split('\n').enumerate() {
        let number = i + 1;
        rewritten.push(raw_line.to_owned());
        let trimmed = raw_line.trim();
        if trimmed.is_empty() || trimmed.starts_with("//") {
            continue;
        }
        let line: CaseLine<'_> = match serde_json::from_str(trimmed) {
            Ok(l) => l,
            Err(e) => {
                let col = e.column() + (raw_line.len() - raw_line.trim_start().len());
                problems.push(Problem::new(
                    format!("{shown}:{number}:{col}"),
                    format!("invalid case: {e}; a case is {{\"case\": NAME, \"request\": {{...}}, \"posture\": {{...}}, \"expect\": {{...}}}}"),
                ));
                continue;
            }
        };
        if let Some(expect) = &line.expect {
            let unknown: Vec<String> = expect
                .keys()
                .filter(|k| !EXPECTABLE.contains(&k.as_str()))
                .map(|k| match suggest(k) {
                    Some(s) => format!("`{k}` (did you mean `{s}`?)"),
                    None => format!("`{k}`"),
                })
                .collect();
            if !unknown.is_empty() {
                problems.push(Problem::new(
                    format!("{shown}:{number}"),
                    format!(
                        "case {:?} expects unknown field(s) {}; a case may expect {}",
                        line.case,
                        unknown.join(", "),
                        EXPECTABLE.map(|k| format!("`{k}`")).join(", ")
                    ),
                ));
                continue;
            }
        }
        let posture = match posture_of(line.posture) {
            Ok(p) => p,
            Err(message) => {
                problems.push(Problem::new(format!("{shown}:{number}"), message));
                continue;
            }
        };
        let (actual, decision) = actual_of(policy, line.request.get(), posture);
        let expect = line.expect.clone().unwrap_or_default();
        let mut case_problems = if expect.is_empty() {
            vec!["expects nothing: add an `expect` object, or run with `--update` to write the current answer".to_owned()]
        } else {
            compare(&expect, &actual)
        };
        let full = match &decision {
            Some(d) => d.full.clone(),
            None => actual.to_string(),
        };
        if let Some(d) = decision {
            decided.push(d);
        }
        let mut updated = false;
        if options.update && !case_problems.is_empty() {
            let new_line = updated_line(&line, &actual);
            if let Some(last) = rewritten.last_mut() {
                *last = new_line;
                changed = true;
                updated = true;
            }
            case_problems.clear();
        }
        let passed = case_problems.is_empty();
        report.cases.push(CaseResult {
            name: line.case,
            line: number,
            passed,
            problems: case_problems,
            actual: (!passed).then_some(full),
            updated,
        });
    }
    if changed && let Err(e) = crate::fmt::write_atomically(path, &rewritten.join("\n")) {
        problems.push(Problem::new(
            &shown,
            format!("cannot write the updated cases: {e}"),
        ));
    }
    report
}

fn suggest(key: &str) -> Option<&'static str> {
    EXPECTABLE
        .iter()
        .map(|k| (strsim::damerau_levenshtein(key, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min()
        .map(|(_, k)| k)
}

impl Report {
    /// For a terminal: failures with file and line, problems, coverage, totals.
    pub fn to_text(&self, show_coverage: bool) -> String {
        let mut out = String::new();
        for suite in &self.suites {
            let cases: usize = suite.files.iter().map(|f| f.cases.len()).sum();
            let failed: usize = suite
                .files
                .iter()
                .map(|f| f.cases.iter().filter(|c| !c.passed).count())
                .sum();
            let _ = writeln!(
                out,
                "{}: {} case{}, {} failed",
                suite.dir,
                cases,
                if cases == 1 { "" } else { "s" },
                failed
            );
            for file in &suite.files {
                for c in &file.cases {
                    if c.updated {
                        let _ = writeln!(out, "  updated {}:{}: {}", file.path, c.line, c.name);
                    } else if !c.passed {
                        let _ = writeln!(out, "  FAILED {}:{}: {}", file.path, c.line, c.name);
                        for p in &c.problems {
                            let _ = writeln!(out, "      {p}");
                        }
                        if let Some(a) = &c.actual {
                            let _ = writeln!(out, "      decision: {a}");
                        }
                    }
                }
            }
        }
        for p in &self.problems {
            let _ = writeln!(out, "error: {}: {}", p.place, p.message);
        }
        if show_coverage {
            let _ = writeln!(
                out,
                "coverage: {} of {} prohibitions, changes and windows exercised",
                self.coverage.exercised, self.coverage.items
            );
            for item in &self.coverage.unexercised {
                let _ = writeln!(
                    out,
                    "  not exercised: {} {} ({})",
                    item.kind, item.label, item.file
                );
            }
        }
        let _ = writeln!(
            out,
            "{}: {} passed, {} failed, {} problem{}{}",
            if self.ok() { "ok" } else { "FAILED" },
            self.passed,
            self.failed,
            self.problems.len(),
            if self.problems.len() == 1 { "" } else { "s" },
            if self.updated > 0 {
                format!(
                    ", {} case(s) updated: review them with `git diff`",
                    self.updated
                )
            } else {
                String::new()
            }
        );
        out
    }

    /// For machines.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// JUnit XML: a test suite per case file, a test case per case; a failure's details
    /// (file and line, what differs, the decision) are in the element's body. Problems
    /// are test cases in error, named by their place.
    pub fn to_junit(&self) -> String {
        use quick_junit::{NonSuccessKind, TestCase, TestCaseStatus, TestSuite};
        let mut report = quick_junit::Report::new("gatekeeper test");
        for suite in &self.suites {
            for file in &suite.files {
                let mut ts = TestSuite::new(file.path.clone());
                for c in &file.cases {
                    let status = if c.passed {
                        TestCaseStatus::success()
                    } else {
                        let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                        s.set_message(format!(
                            "{}:{}: {}",
                            file.path,
                            c.line,
                            c.problems.first().cloned().unwrap_or_default()
                        ));
                        let mut body = format!("{}:{}: {}\n", file.path, c.line, c.name);
                        for p in &c.problems {
                            body.push_str(&format!("  {p}\n"));
                        }
                        if let Some(a) = &c.actual {
                            body.push_str(&format!("  decision: {a}\n"));
                        }
                        s.set_description(body);
                        s
                    };
                    let mut tc = TestCase::new(c.name.clone(), status);
                    tc.set_classname(file.path.clone());
                    ts.add_test_case(tc);
                }
                report.add_test_suite(ts);
            }
        }
        if !self.problems.is_empty() {
            let mut ts = TestSuite::new("problems");
            for p in &self.problems {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Error);
                s.set_message(format!("{}: {}", p.place, first_line(&p.message)));
                s.set_description(format!("{}: {}\n", p.place, p.message));
                let mut tc = TestCase::new(p.place.clone(), s);
                tc.set_classname("problems");
                ts.add_test_case(tc);
            }
            report.add_test_suite(ts);
        }
        report.to_string().unwrap_or_default()
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"
[instrument]
id = "law"
kind = "statute"
title = "Law"
authority = "A"
citation = "1 XR 1"
source = "https://example.org/law"
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

[[app]]
id = "b"
name = "B"
owner = "e"
android = ["com.example.b"]

[[prohibition]]
id = "p1"
apps = ["a"]
actions = ["download"]
region = "R"
effective = 2021-02-01T00:00:00Z
text = "t"

[[prohibition]]
id = "p2"
apps = ["b"]
actions = ["download"]
region = "R"
effective = { earliest = 2021-03-01T00:00:00Z, latest = 2021-03-02T00:00:00Z, note = "a day" }
text = "t"
"#;

    fn change(id: &str, kind: &str, issued: &str, item: &str) -> String {
        format!(
            "[instrument]\nid = \"{id}\"\nkind = \"{kind}\"\ntitle = \"{id}\"\nauthority = \"A\"\ncitation = \"2 XR {id}\"\nsource = \"https://example.org/{id}\"\nissued = {issued}\n\n{item}\n"
        )
    }

    fn case(name: &str, app: &str, at: &str) -> String {
        format!(
            "{{\"case\": \"{name}\", \"request\": {{\"app\": {{\"platform\": \"android\", \"id\": \"com.example.{app}\"}}, \"action\": \"download\", \"at\": \"{at}\", \"storefront\": \"US\"}}, \"expect\": {{}}}}"
        )
    }

    /// A set with one change of each kind, in a temporary folder, and its cases.
    fn set(cases: &[String]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let files = [
            ("law.toml", POLICY.to_owned()),
            (
                "delay.toml",
                change(
                    "delay",
                    "amendment",
                    "2021-01-15T00:00:00Z",
                    "[[delay]]\nprohibitions = [\"p1\"]\neffective = 2021-02-10T00:00:00Z",
                ),
            ),
            (
                "court.toml",
                change(
                    "court",
                    "court-order",
                    "2021-04-01T00:00:00Z",
                    "[[injunction]]\nprohibitions = [\"p1\"]\nfrom = 2021-04-01T00:00:00Z\nuntil = 2021-05-01T00:00:00Z",
                ),
            ),
            (
                "eo.toml",
                change(
                    "eo",
                    "non-enforcement-order",
                    "2021-06-01T00:00:00Z",
                    "[[non-enforcement]]\nprohibitions = [\"p1\"]\nfrom = 2021-06-01T00:00:00Z",
                ),
            ),
            (
                "div.toml",
                change(
                    "div",
                    "divestiture",
                    "2021-07-01T00:00:00Z",
                    "[[exemption]]\napps = [\"b\"]\nprohibitions = [\"p2\"]\nfrom = 2021-07-01T00:00:00Z",
                ),
            ),
            (
                "rev.toml",
                change(
                    "rev",
                    "revocation",
                    "2021-08-01T00:00:00Z",
                    "[[revocation]]\nprohibitions = [\"p1\"]\nfrom = 2021-08-01T00:00:00Z",
                ),
            ),
            // Changes whose answers equal an earlier instrument's, so that decisions name
            // the earlier one: exercised by a case that falls within them.
            (
                "court2.toml",
                change(
                    "court2",
                    "court-order",
                    "2021-04-10T00:00:00Z",
                    "[[injunction]]\nprohibitions = [\"p1\"]\nfrom = 2021-04-10T00:00:00Z\nuntil = 2021-04-20T00:00:00Z",
                ),
            ),
            (
                "div2.toml",
                change(
                    "div2",
                    "divestiture",
                    "2021-07-10T00:00:00Z",
                    "[[exemption]]\napps = [\"b\"]\nprohibitions = [\"p2\"]\nfrom = 2021-07-10T00:00:00Z",
                ),
            ),
            (
                "rev2.toml",
                change(
                    "rev2",
                    "revocation",
                    "2021-08-10T00:00:00Z",
                    "[[revocation]]\nprohibitions = [\"p1\"]\nfrom = 2021-08-10T00:00:00Z",
                ),
            ),
        ];
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        std::fs::create_dir(dir.path().join(TESTS_DIR)).unwrap();
        std::fs::write(dir.path().join("tests/cases.jsonl"), cases.join("\n")).unwrap();
        dir
    }

    fn unexercised(report: &Report) -> Vec<String> {
        report
            .coverage
            .unexercised
            .iter()
            .map(|i| format!("{} {}", i.kind, i.label))
            .collect()
    }

    /// Each kind of item counts as exercised only by a case that shows it: a prohibition by
    /// a deny, a relief, revocation or exemption by an allow for its reason, a delay by a
    /// case waiting for its instant, a window by a case inside it.
    #[test]
    fn coverage_names_exactly_what_no_case_shows() {
        let some = [
            case("denied", "a", "2021-02-15T00:00:00Z"),
            case(
                "enjoined after the second order",
                "a",
                "2021-04-25T00:00:00Z",
            ),
            case(
                "revoked before the second revocation",
                "a",
                "2021-08-05T00:00:00Z",
            ),
            case("at the second order's end", "a", "2021-04-20T00:00:00Z"),
            case("exempt before the second exemption", "b", "2021-07-05T00:00:00Z"),
            case("waiting for another instant", "b", "2021-02-15T00:00:00Z"),
            "{\"case\": \"the non-enforcement order set aside\", \"request\": {\"app\": {\"platform\": \"android\", \"id\": \"com.example.a\"}, \"action\": \"download\", \"at\": \"2021-06-15T00:00:00Z\", \"storefront\": \"US\"}, \"posture\": {\"non_enforcement\": \"ignore\"}, \"expect\": {}}".to_owned(),
        ];
        let dir = set(&some);
        let report = run(&[dir.path().to_path_buf()], Options { update: true });
        assert!(report.ok(), "{}", report.to_text(true));
        assert_eq!(
            unexercised(&report),
            [
                "change delay by `delay`",
                "change exemption by `div2`",
                "change injunction by `court2`",
                "change revocation by `rev2`",
                "prohibition `p2`",
                "window `p2` takes effect",
            ],
            "{}",
            report.to_text(true)
        );
        assert_eq!(report.coverage.items, 11);

        let all: Vec<String> = some
            .iter()
            .cloned()
            .chain([
                case(
                    "waiting for the delayed instant",
                    "a",
                    "2021-02-05T00:00:00Z",
                ),
                case("inside the window", "b", "2021-03-01T12:00:00Z"),
                case("not enforced", "a", "2021-06-15T00:00:00Z"),
                case("exempt", "b", "2021-07-15T00:00:00Z"),
                case("within both injunctions", "a", "2021-04-15T00:00:00Z"),
                case("revoked twice", "a", "2021-08-15T00:00:00Z"),
            ])
            .collect();
        let dir = set(&all);
        let report = run(&[dir.path().to_path_buf()], Options { update: true });
        assert!(unexercised(&report).is_empty(), "{}", report.to_text(true));
        assert_eq!(report.coverage.exercised, 11);
        // A folder that cannot be read is a problem: the run is not ok, with no failure.
        let missing = dir.path().join("missing");
        let report = run(&[dir.path().to_path_buf(), missing], Options::default());
        assert_eq!((report.failed, report.problems.len()), (0, 1));
        assert!(!report.ok());
    }

    /// `--update` writes what a fresh case should expect: the decision's own fields, no
    /// empty ones, `valid_until` even when it is `null`; a refused request expects its
    /// error; a case's chosen fields are kept.
    #[test]
    fn update_writes_the_fields_a_case_should_expect() {
        let refused = "{\"case\": \"no signal\", \"request\": {\"app\": {\"platform\": \"android\", \"id\": \"com.example.a\"}, \"action\": \"download\", \"at\": \"2021-02-15T00:00:00Z\"}}";
        let chosen = "{\"case\": \"chosen\", \"request\": {\"app\": {\"platform\": \"android\", \"id\": \"com.example.a\"}, \"action\": \"download\", \"at\": \"2021-09-01T00:00:00Z\", \"storefront\": \"US\"}, \"expect\": {\"by\": \"x\"}}";
        let dir = set(&[
            case("denied", "a", "2021-02-15T00:00:00Z"),
            refused.to_owned(),
            chosen.to_owned(),
        ]);
        let report = run(&[dir.path().to_path_buf()], Options { update: true });
        assert_eq!(report.updated, 3, "{}", report.to_text(true));
        let text = std::fs::read_to_string(dir.path().join("tests/cases.jsonl")).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let deny = lines[0]["expect"].as_object().unwrap();
        assert_eq!(deny["decision"], "deny");
        assert_eq!(deny["reasons"], serde_json::json!(["p1"]));
        assert!(deny.contains_key("valid_until"));
        assert!(
            !deny.contains_key("because") && !deny.contains_key("by"),
            "{deny:?}"
        );
        let error = lines[1]["expect"].as_object().unwrap();
        assert_eq!(error.keys().collect::<Vec<_>>(), ["error"]);
        assert!(
            error["error"].as_str().unwrap().contains("signal"),
            "{error:?}"
        );
        assert_eq!(lines[2]["expect"], serde_json::json!({"by": "rev"}));
        let again = run(&[dir.path().to_path_buf()], Options::default());
        assert!(again.ok() && again.passed == 3, "{}", again.to_text(true));
    }
}
