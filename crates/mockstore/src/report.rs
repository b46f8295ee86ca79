//! The simulator's reports: Markdown for people, JSON for tools, JUnit XML for CI
//! (written with `quick-junit`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use serde_json::json;

use crate::load::LoadReport;
use crate::scenario::ScenarioResult;

/// Per scenario, a table of app x action x place over the scenario's instants.
fn table(s: &ScenarioResult) -> String {
    let instants: BTreeSet<&str> = s.steps.iter().map(|x| x.at.as_str()).collect();
    let mut rows: BTreeMap<(String, String, String), BTreeMap<&str, String>> = BTreeMap::new();
    for step in &s.steps {
        if step.cells.is_empty() {
            rows.entry((step.app.clone(), step.action.clone(), step.place.clone()))
                .or_default()
                .insert(&step.at, step.outcome.clone());
        }
        for (place, cell) in &step.cells {
            rows.entry((step.app.clone(), "release".to_owned(), place.clone()))
                .or_default()
                .insert(&step.at, cell.clone());
        }
    }
    let mut out = String::new();
    let _ = write!(out, "| app | action | where |");
    for i in &instants {
        let _ = write!(out, " {i} |");
    }
    let _ = write!(out, "\n|---|---|---|");
    for _ in &instants {
        out.push_str("---|");
    }
    out.push('\n');
    for ((app, action, place), cells) in rows {
        let _ = write!(out, "| `{app}` | {action} | {place} |");
        for i in &instants {
            let _ = write!(out, " {} |", cells.get(i).map_or("", String::as_str));
        }
        out.push('\n');
    }
    out
}

fn markdown(scenarios: &[ScenarioResult], load: Option<&LoadReport>, seconds: f64) -> String {
    let mut out = String::from("# Gatekeeper simulation\n\n");
    let steps: usize = scenarios.iter().map(|s| s.steps.len()).sum();
    let failed: usize = scenarios.iter().map(ScenarioResult::failures).sum();
    let _ = writeln!(
        out,
        "{} scenarios, {steps} steps, {failed} mismatches, {seconds:.1} s.\n",
        scenarios.len()
    );
    for s in scenarios {
        let _ = writeln!(
            out,
            "## {}\n\n`{}`, policies: {}; posture: {}, non-enforcement orders: {}\n",
            s.name,
            s.file,
            s.policies.join(", "),
            s.posture,
            s.non_enforcement
        );
        out.push_str(&table(s));
        for step in s.steps.iter().filter(|x| x.mismatch.is_some()) {
            let _ = writeln!(
                out,
                "\n**Mismatch** in step \"{}\" (`{}:{}`) at {}: {}",
                step.name,
                s.file,
                step.line,
                step.at,
                step.mismatch.as_deref().unwrap_or_default()
            );
        }
        out.push('\n');
    }
    if let Some(l) = load {
        let _ = writeln!(out, "## Load\n");
        let _ = writeln!(
            out,
            "{} requests (seed {}, {} concurrent clients), {} denied, {} mismatches.\n",
            l.requests,
            l.seed,
            l.concurrency,
            l.denied,
            l.mismatches.len()
        );
        out.push_str(&load_table(l));
        for m in l.mismatches.iter().take(20) {
            let _ = writeln!(out, "\n- {m}");
        }
    }
    out
}

/// What the layer cost in a load run, for people: every pair of rounds, then the medians.
pub fn load_table(l: &LoadReport) -> String {
    let mut out = String::new();
    let whence = if l.stores == "processes" {
        "two stores in processes of their own, driven by the same client from outside"
    } else {
        "two stores on runtimes of their own in the client's process"
    };
    let _ = writeln!(
        out,
        "What the gatekeeper layer costs the store: its CPU time per request with the layer and \
         without ({whence}), in {} pairs of rounds of {} requests, in alternating order.\n",
        l.pairs.len(),
        l.round
    );
    let _ = writeln!(
        out,
        "| pair | first | CPU per request with the layer | without | ratio | requests/s with the layer | without | ratio |\n|---|---|---|---|---|---|---|---|"
    );
    let us = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2} us"));
    let ratio = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.3}"));
    for (i, p) in l.pairs.iter().enumerate() {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {:.0} | {:.0} | {:.3} |",
            i + 1,
            if p.gated_first { "with" } else { "without" },
            us(p.gated.cpu_us_per_request),
            us(p.ungated.cpu_us_per_request),
            ratio(p.cpu_ratio),
            p.gated.requests_per_sec,
            p.ungated.requests_per_sec,
            p.throughput_ratio
        );
    }
    let _ = writeln!(
        out,
        "\nThe median of the pairs' CPU ratios: **{}** (median CPU per request {} with the layer, \
         {} without); the median of their throughput ratios: {:.3}.",
        ratio(l.cpu_ratio),
        us(l.gated_cpu_us_per_request),
        us(l.ungated_cpu_us_per_request),
        l.throughput_ratio
    );
    out
}

/// The JUnit report: a suite per scenario, a test case per step; a mismatch is a failure
/// whose body names the scenario file and the step's line, then what differed.
fn junit(scenarios: &[ScenarioResult], load: Option<&LoadReport>) -> anyhow::Result<String> {
    use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
    let seconds = |s: f64| std::time::Duration::from_secs_f64(s.max(0.0));
    let mut report = Report::new("gatekeeper simulate");
    for s in scenarios {
        let mut suite = TestSuite::new(s.name.as_str());
        suite.set_time(seconds(s.steps.iter().map(|x| x.seconds).sum()));
        for step in &s.steps {
            let status = match &step.mismatch {
                None => TestCaseStatus::success(),
                Some(m) => {
                    let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
                    status
                        .set_type("mismatch")
                        .set_message(m.lines().next().unwrap_or_default())
                        .set_description(format!(
                            "{}:{}: step \"{}\" at {}\n{m}",
                            s.file, step.line, step.name, step.at
                        ));
                    status
                }
            };
            let mut case = TestCase::new(format!("{} ({})", step.name, step.at), status);
            case.set_classname(s.file.as_str())
                .set_time(seconds(step.seconds));
            suite.add_test_case(case);
        }
        report.add_test_suite(suite);
    }
    if let Some(l) = load {
        let status = if l.mismatches.is_empty() {
            TestCaseStatus::success()
        } else {
            let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
            status
                .set_type("mismatch")
                .set_message(format!(
                    "{} answers differ from `gatekeeper check`",
                    l.mismatches.len()
                ))
                .set_description(l.mismatches.join("\n"));
            status
        };
        let mut case = TestCase::new(format!("{} requests, seed {}", l.requests, l.seed), status);
        case.set_classname("load");
        let mut suite = TestSuite::new("load");
        suite.add_test_case(case);
        report.add_test_suite(suite);
    }
    Ok(report.to_string()?)
}

/// Writes `report.md`, `report.json` and `junit.xml` into `dir`.
pub fn write(
    dir: &Path,
    scenarios: &[ScenarioResult],
    load: Option<&LoadReport>,
    seconds: f64,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating `{}`", dir.display()))?;
    let json = json!({ "seconds": seconds, "scenarios": scenarios, "load": load });
    for (name, text) in [
        ("report.md", markdown(scenarios, load, seconds)),
        ("report.json", serde_json::to_string_pretty(&json)?),
        ("junit.xml", junit(scenarios, load)?),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing `{}`", path.display()))?;
    }
    Ok(())
}
