//! `target/bench/report.md` from the rows of a run, and README.md's tables from report.md.

use std::fmt::Write as _;
use std::process::Command;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use crate::engines::IMAGE;
use crate::generate::{BASE_PROHIBITIONS, root};

/// README.md and report.md hold the generated tables between these two lines.
pub const BEGIN: &str = "<!-- peers-report:begin -->";
pub const END: &str = "<!-- peers-report:end -->";

/// What the agreement check decided for one policy.
pub struct Checked {
    pub case: String,
    pub requests: usize,
    pub cold: usize,
    pub cold_of: usize,
}

/// The conditions of a run, kept beside `report.json` in `run.json` so that the report can
/// be written again from the two (`--report`).
pub struct Run {
    pub when: String,
    pub seconds: f64,
    pub load_before: String,
    pub load_after: String,
    pub cpu: String,
    pub revision: String,
    pub checked: Vec<Checked>,
}

impl Run {
    pub fn to_json(&self) -> Value {
        json!({
            "when": self.when,
            "seconds": self.seconds,
            "load_before": self.load_before,
            "load_after": self.load_after,
            "cpu": self.cpu,
            "revision": self.revision,
            "checked": self.checked.iter().map(|c| json!({
                "policy": c.case, "requests": c.requests, "cold": c.cold, "cold_of": c.cold_of,
            })).collect::<Vec<_>>(),
        })
    }

    pub fn from_json(v: &Value) -> Run {
        let text = |k: &str| v[k].as_str().unwrap_or("unknown").to_owned();
        let count = |c: &Value, k: &str| c[k].as_u64().unwrap_or_default() as usize;
        Run {
            when: text("when"),
            seconds: v["seconds"].as_f64().unwrap_or(f64::NAN),
            load_before: text("load_before"),
            load_after: text("load_after"),
            cpu: text("cpu"),
            revision: text("revision"),
            checked: v["checked"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| Checked {
                    case: c["policy"].as_str().unwrap_or_default().to_owned(),
                    requests: count(c, "requests"),
                    cold: count(c, "cold"),
                    cold_of: count(c, "cold_of"),
                })
                .collect(),
        }
    }
}

/// The one-, five- and fifteen-minute load averages.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The time now, to the second, in UTC.
pub fn now() -> String {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or_else(
            |_| "an unknown time".to_owned(),
            |d| policy::Instant::from_nanos(d.as_secs() as i64 * 1_000_000_000).to_string(),
        )
}

pub fn cpu() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "an unknown processor".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores of {model}")
}

/// The commit Gatekeeper was built from, and whether its crates had uncommitted changes.
pub fn revision() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(root())
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "--short=12", "HEAD"]) {
        None => "an unknown commit".to_owned(),
        Some(commit) => {
            let dirty = git(&[
                "status",
                "--porcelain",
                "--",
                "crates/policy",
                "crates/gatekeeper",
            ])
            .is_some_and(|s| !s.is_empty());
            if dirty {
                format!(
                    "commit {commit} with uncommitted changes to crates/policy or crates/gatekeeper"
                )
            } else {
                format!("commit {commit}")
            }
        }
    }
}

/// `1234567.8` as `1,234,568`.
fn thousands(x: f64) -> String {
    if !x.is_finite() {
        return "n/a".to_owned();
    }
    let digits = format!("{:.0}", x.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if x < 0.0 { format!("-{out}") } else { out }
}

/// Nanoseconds or milliseconds: one decimal below 100, whole numbers with separators above.
fn num(x: f64) -> String {
    if !x.is_finite() {
        "n/a".to_owned()
    } else if x < 100.0 {
        format!("{x:.1}")
    } else {
        thousands(x)
    }
}

fn ratio(x: f64) -> String {
    if !x.is_finite() {
        "n/a".to_owned()
    } else if x >= 10.0 {
        format!("{}x", thousands(x))
    } else if x >= 0.1 {
        format!("{x:.2}x")
    } else {
        format!("{x:.3}x")
    }
}

fn f(row: &Value, key: &str) -> f64 {
    row[key].as_f64().unwrap_or(f64::NAN)
}

fn s<'a>(row: &'a Value, key: &str) -> &'a str {
    row[key].as_str().unwrap_or_default()
}

fn apps(row: &Value) -> String {
    let n = thousands(f(row, "apps"));
    if s(row, "policy") == "shipped" {
        format!("shipped ({n})")
    } else {
        n
    }
}

/// The row of `engine` for the same policy and request set as `row`.
fn same<'a>(rows: &'a [Value], row: &Value, engine: &str) -> Option<&'a Value> {
    rows.iter().find(|r| {
        s(r, "engine") == engine
            && r["policy"] == row["policy"]
            && r["apps"] == row["apps"]
            && r["prohibitions"] == row["prohibitions"]
            && r["cache"] == row["cache"]
    })
}

/// The engines of the load table, in its order.
const LOADS: [&str; 4] = ["gatekeeper", IMAGE, "cedar", "regorus"];

/// The load row of `engine` for the same policy as `row`: its warm-set row, or the row of its
/// load alone (an engine measured for its load only has no request set).
fn load_of<'a>(rows: &'a [Value], row: &Value, engine: &str) -> Option<&'a Value> {
    rows.iter().find(|r| {
        s(r, "engine") == engine
            && r["policy"] == row["policy"]
            && r["apps"] == row["apps"]
            && r["prohibitions"] == row["prohibitions"]
            && (s(r, "cache") == "warm" || r["cache"].is_null())
    })
}

/// The gatekeeper row for a generated policy.
fn ours<'a>(rows: &'a [Value], apps: u64, prohibitions: u64, cache: &str) -> Option<&'a Value> {
    rows.iter().find(|r| {
        s(r, "engine") == "gatekeeper"
            && s(r, "policy") == "generated"
            && r["apps"].as_u64() == Some(apps)
            && r["prohibitions"].as_u64() == Some(prohibitions)
            && s(r, "cache") == cache
    })
}

fn decisions_table(md: &mut String, rows: &[Value]) {
    md.push_str(
        "| apps | prohibitions | requests | engine | median ns | p99 ns | median ns, each request just read | ns per decision, whole pass | decisions per pass | vs gatekeeper: median | vs gatekeeper: pass |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for row in rows.iter().filter(|r| !r["cache"].is_null()) {
        let Some(gk) = same(rows, row, "gatekeeper") else {
            continue;
        };
        let requests = f(row, "requests");
        let per_pass = f(row, "pass_decisions");
        let pass = if per_pass < requests {
            format!("{} of {}", thousands(per_pass), thousands(requests))
        } else {
            "all".to_owned()
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            apps(row),
            thousands(f(row, "prohibitions")),
            s(row, "cache"),
            thousands(requests),
            s(row, "engine"),
            num(f(row, "median_ns")),
            num(f(row, "p99_ns")),
            num(f(row, "median_just_read_ns")),
            num(f(row, "ns_per_decision_pass")),
            pass,
            ratio(f(row, "median_ns") / f(gk, "median_ns")),
            ratio(f(row, "ns_per_decision_pass") / f(gk, "ns_per_decision_pass")),
        );
    }
}

fn load_table(md: &mut String, rows: &[Value]) {
    md.push_str(
        "| apps | prohibitions | engine | load ms | parse ms | validate ms | compile ms | peak MB | vs gatekeeper: load | vs gatekeeper: peak |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    // The load is the same for both request sets: one line per engine and policy, the
    // policies in the order of their gatekeeper rows.
    let policies = rows
        .iter()
        .filter(|r| s(r, "engine") == "gatekeeper" && s(r, "cache") == "warm");
    for gk in policies {
        for row in LOADS.into_iter().filter_map(|e| load_of(rows, gk, e)) {
            let phase = |key: &str| row[key].as_f64().map_or_else(|| "none".to_owned(), num);
            let (parse, validate, compile) = if row["load_image_ms"].is_f64() {
                ("‡".to_owned(), "‡".to_owned(), "‡".to_owned())
            } else if let Some(both) = row["load_validate_compile_ms"].as_f64() {
                (
                    phase("load_parse_ms"),
                    "†".to_owned(),
                    format!("{} †", num(both)),
                )
            } else {
                (
                    phase("load_parse_ms"),
                    phase("load_validate_ms"),
                    phase("load_compile_ms"),
                )
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                apps(row),
                thousands(f(row, "prohibitions")),
                s(row, "engine"),
                num(f(row, "load_ms")),
                parse,
                validate,
                compile,
                num(f(row, "peak_mb")),
                ratio(f(row, "load_ms") / f(gk, "load_ms")),
                ratio(f(row, "peak_mb") / f(gk, "peak_mb")),
            );
        }
    }
}

fn yes(met: bool) -> &'static str {
    if met { "yes" } else { "no" }
}

/// The goals of the engine's owners, measured by this run.
fn goals_table(md: &mut String, rows: &[Value]) {
    md.push_str("| goal | measured | met |\n|---|---|---|\n");
    let base = BASE_PROHIBITIONS as u64;
    if let Some(gk) = ours(rows, 100_000, base, "cold") {
        let median = f(gk, "median_ns");
        let _ = writeln!(
            md,
            "| decision, 100,000 apps, cold set ({} requests): median <= 300 ns | median {} ns, p99 {} ns (each request just read: median {} ns), whole pass {} ns | {} |",
            thousands(f(gk, "requests")),
            num(median),
            num(f(gk, "p99_ns")),
            num(f(gk, "median_just_read_ns")),
            num(f(gk, "ns_per_decision_pass")),
            yes(median <= 300.0)
        );
        for peer in ["cedar", "regorus"] {
            if let Some(p) = same(rows, gk, peer) {
                let by_median = f(p, "median_ns") / median;
                let _ = writeln!(
                    md,
                    "| the same, >= 50x {peer} | {peer}'s median / ours: {}; whole pass: {} | {} |",
                    ratio(by_median),
                    ratio(f(p, "ns_per_decision_pass") / f(gk, "ns_per_decision_pass")),
                    yes(by_median >= 50.0)
                );
            }
        }
    }
    for apps in [1_000, 100_000] {
        for cache in ["warm", "cold"] {
            let (Some(few), Some(many)) = (
                ours(rows, apps, base, cache),
                ours(rows, apps, 1_000, cache),
            ) else {
                continue;
            };
            let by_median = f(many, "median_ns") / f(few, "median_ns");
            let _ = writeln!(
                md,
                "| decision, {} apps, {cache} set: 1,000 prohibitions vs {base}, <= 1.5x | median {} vs {} ns ({}); whole pass {} vs {} ns ({}) | {} |",
                thousands(apps as f64),
                num(f(many, "median_ns")),
                num(f(few, "median_ns")),
                ratio(by_median),
                num(f(many, "ns_per_decision_pass")),
                num(f(few, "ns_per_decision_pass")),
                ratio(f(many, "ns_per_decision_pass") / f(few, "ns_per_decision_pass")),
                yes(by_median <= 1.5)
            );
        }
    }
    // The load goals are for the compiled form; the load from TOML is beside, for reference.
    for prohibitions in [base, 1_000] {
        let Some(toml) = ours(rows, 100_000, prohibitions, "warm") else {
            continue;
        };
        let Some(rego) = same(rows, toml, "regorus") else {
            continue;
        };
        let (load, peak) = (f(rego, "load_ms"), f(rego, "peak_mb"));
        let image = load_of(rows, toml, IMAGE);
        let (image_load, image_peak) =
            image.map_or((f64::NAN, f64::NAN), |i| (f(i, "load_ms"), f(i, "peak_mb")));
        let met = |m: bool| {
            if image.is_some() {
                yes(m)
            } else {
                "not measured (no image row)"
            }
        };
        let _ = writeln!(
            md,
            "| load, 100,000 apps, {} prohibitions, from the compiled image: faster than regorus loading the same policy | image {} vs regorus {} ms ({}); from TOML {} ms ({}) | {} |",
            thousands(prohibitions as f64),
            num(image_load),
            num(load),
            ratio(image_load / load),
            num(f(toml, "load_ms")),
            ratio(f(toml, "load_ms") / load),
            met(image_load < load)
        );
        let _ = writeln!(
            md,
            "| peak memory of that load: no more than regorus | image {} vs regorus {} MB ({}); from TOML {} MB ({}) | {} |",
            num(image_peak),
            num(peak),
            ratio(image_peak / peak),
            num(f(toml, "peak_mb")),
            ratio(f(toml, "peak_mb") / peak),
            met(image_peak <= peak)
        );
    }
}

/// Why OPA itself is not among the engines.
const OPA: &str = "OPA, the Go implementation of Rego, is not represented. It is a Go program and library, not a Rust \
crate, and none of the registries this machine reaches (crates.io, PyPI, Debian, npm) offers a build of it to call: \
Debian 12 packages Go 1.19 but not OPA, and OPA's Go modules are not served by any of them; npm has OPA's WebAssembly \
SDK and HTTP clients, which need policies compiled by, or a server run from, the `opa` program; PyPI's one package \
with OPA inside (`opa-golib-python-bindings` 0.4.4, an unofficial alpha for Python 3.14 or later) embeds OPA 1.20.2 \
as a C shared library whose every call passes JSON text, which would be timed with OPA, and calling it from Rust needs \
unsafe code, which this crate forbids. Rego is represented by regorus, a Rust implementation of Rego: its figures are \
regorus's, not OPA's.";

/// report.md: the conditions of the run, then the tables between [`BEGIN`] and [`END`],
/// which README.md copies.
pub fn markdown(rows: &[Value], run: &Run) -> String {
    let mut md = String::from("# Gatekeeper, Cedar and Rego on the same decisions\n\n");
    let _ = writeln!(
        md,
        "Made by `cargo xtask bench` (its last step, `cargo run --release --manifest-path crates/peers/Cargo.toml`); \
         every row is in `report.json`.\n"
    );
    md.push_str(BEGIN);
    md.push('\n');
    let total: usize = run.checked.iter().map(|c| c.requests).sum();
    let per: Vec<String> = run
        .checked
        .iter()
        .map(|c| {
            format!(
                "{} {} ({} of the {} of the cold set)",
                c.case,
                thousands(c.requests as f64),
                thousands(c.cold as f64),
                thousands(c.cold_of as f64)
            )
        })
        .collect();
    let image_checked = if rows.iter().any(|r| s(r, "engine") == IMAGE) {
        ", Gatekeeper loaded from its TOML and from its compiled image alike"
    } else {
        ""
    };
    let _ = writeln!(
        md,
        "Run of {}, Gatekeeper built from {}, {:.0} s for the peers' step, on {} (load average {} before, {} \
         after: the machine is shared, so absolute times are noisy and the ratios, measured in the same run, more \
         telling). Every engine gave the same allow or deny on all {} requests checked{image_checked} (by policy: {}).\n",
        run.when,
        run.revision,
        run.seconds,
        run.cpu,
        run.load_before,
        run.load_after,
        thousands(total as f64),
        per.join("; ")
    );
    md.push_str(
        "**Decisions.** Median and p99 of single calls on the requests prepared beforehand (each timed, the timer's own \
         cost taken off: figures near the timer's resolution, tens of nanoseconds, are rough; in the cold set the \
         requests' own bytes are cold in memory too, as the policy's data is); the median of single calls on each \
         request prepared for its engine just before its call, untimed (as a store decides a request it has just \
         read, whose bytes are in the cache); and the nanoseconds per decision of whole passes over the requests \
         prepared beforehand (one clock reading at each end; where a pass over the whole set would take more than a \
         second, the pass covers the requests at its start). The ratios to Gatekeeper and the goals are of the \
         first median. Warm: 4,000 requests cycled. Cold: every listed app at least once, in a shuffled order, each \
         request decided once per pass.\n\n",
    );
    decisions_table(&mut md, rows);
    md.push_str(
        "\n**Loads.** Each engine and policy in a process of its own; peak MB is the growth of the resident set over \
         the first load; the time is the median of three loads in the process (five when they fit in a second), so \
         that one slow load on a shared machine does not stand for the engine. Gatekeeper: `policy::parse_file` for each file, then `Policy::from_parsed`. Cedar: parsing the \
         policies and the entities (whose hierarchy is closed as they are parsed), then validating the policies \
         against `encodings/gatekeeper.cedarschema`; Cedar has no compile step. Regorus: parsing the Rego policy and \
         the data document, then compiling (its analysis, which validates, and scheduling); no validation step \
         apart. Gatekeeper (image): `Policy::from_image` on the policy's compiled image (‡). Every engine's input is \
         read from disk before the load is timed.\n\n",
    );
    load_table(&mut md, rows);
    md.push_str(
        "\n† validate and compile together: the policy crate's public API (`Policy::from_parsed`) does both in one \
         call, so they are not timed apart.\n\n\
         ‡ one phase, `Policy::from_image`: decoding the image and checking every index and range in it, as the \
         compiler would have made them; nothing is parsed, validated or compiled. The image (`Policy::to_image`) is \
         the compiled policy, its model and index, as bytes, and is read only by the engine build that wrote it. The \
         TOML files remain the policy's source, from which the image is compiled; bundles carry both. Its decisions \
         are Gatekeeper's and are not timed apart; they are in the agreement check.\n\n**Goals** of the engine's owners, from the rows above (judged on the \
         median, as the goals are written; the whole-pass figure is beside it).\n\n",
    );
    goals_table(&mut md, rows);
    md.push('\n');
    md.push_str(OPA);
    md.push('\n');
    md.push_str(END);
    md.push_str("\n\n");
    md.push_str(NOT_EXPRESSED);
    md.push('\n');
    md
}

/// What the peers' encodings leave out.
const NOT_EXPRESSED: &str = "Not expressed for the peers: a request naming several covered apps at once (an app \
identifier and another app's code digest): Cedar takes one resource, and none is generated. Matching by publisher \
account (an unlisted app published from a covered owner's account): the peers resolve apps by identifier, and the \
generated requests carry no publisher. Postures other than the default (the permissive reading of windows, \
non-enforcement orders ignored) and the `uncertain` stretch a decision reports: each posture would need encodings \
of its own. Identifiers are resolved to the app before the peers are called (preparation, not timed); Gatekeeper's \
time includes that lookup.";

/// Replaces README.md's text between the markers with report.md's.
pub fn splice_readme() -> anyhow::Result<()> {
    let report_path = root().join("target/bench/report.md");
    let report = std::fs::read_to_string(&report_path)
        .with_context(|| format!("reading {}", report_path.display()))?;
    let block = between(&report).context("report.md has no generated tables")?;
    let readme_path = root().join("README.md");
    let readme = std::fs::read_to_string(&readme_path).context("reading README.md")?;
    let (Some(start), Some(end)) = (readme.find(BEGIN), readme.find(END)) else {
        bail!("README.md has no `{BEGIN}` ... `{END}` lines");
    };
    if end < start {
        bail!("README.md has `{END}` before `{BEGIN}`");
    }
    let updated = format!(
        "{}{}{}",
        &readme[..start + BEGIN.len()],
        block,
        &readme[end..]
    );
    if updated != readme {
        std::fs::write(&readme_path, updated).context("writing README.md")?;
        println!("README.md: tables replaced from {}", report_path.display());
    }
    Ok(())
}

/// The text between the markers, with its line breaks.
fn between(text: &str) -> Option<&str> {
    let start = text.find(BEGIN)? + BEGIN.len();
    let end = text[start..].find(END)? + start;
    Some(&text[start..end])
}
