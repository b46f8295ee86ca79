//! Gatekeeper against Cedar (`cedar-policy`) and Rego (`regorus`) on the same decisions.
//!
//! For each policy (the shipped sets, and generated policies with 10, 1,000 and 100,000
//! covered apps, and at 1,000 and 100,000 apps with 10, 100 and 1,000 prohibitions: see
//! [`generate::CASES`]) the policy model is encoded for each peer the way one would write it
//! by hand (see [`encode`]). Every engine must give the same allow or deny for every request
//! checked; the run stops at the first disagreement. Each engine and policy is then timed in
//! a process of its own, so that its peak memory is its own: the load in phases, single
//! calls and whole passes over a warm and a cold request set. Gatekeeper is also loaded from
//! the policy's compiled image (`Policy::to_image`, read back by `Policy::from_image`): that
//! load is timed in a process of its own too, and its decisions are in the agreement check.
//! Reports go to `target/bench/report.md` and `report.json`, and the tables of the report
//! replace those of README.md between its `peers-report` markers.
//!
//! ```sh
//! cargo run --release --manifest-path crates/peers/Cargo.toml            # everything
//! cargo run --release --manifest-path crates/peers/Cargo.toml -- --readme  # README from report.md
//! cargo run --release --manifest-path crates/peers/Cargo.toml -- --report  # report.md again, from
//!                                                  # report.json and run.json, then README
//! cargo run --release --manifest-path crates/peers/Cargo.toml -- --only 1000x100 shipped
//! cargo run --release --manifest-path crates/peers/Cargo.toml -- --compare 1000 1000x1000 \
//!     --rounds 100 --requests 4000             # two policies side by side (see
//!                                              # `measure::compare`)
//! cargo run --release --manifest-path crates/peers/Cargo.toml -- --compare 1000 1000x1000 \
//!     --requests 100 --shuffled-into 4000      # the first 100 requests, in an order the
//!                                              # processor cannot learn
//! ```

mod encode;
mod engines;
mod generate;
mod measure;
mod report;
mod requests;

use std::process::Command;
use std::time::Instant as Clock;

use anyhow::{Context as _, anyhow, bail};
use policy::Policy;
use serde_json::{Value, json};

use crate::engines::{Cedar, ENGINES, Engine, IMAGE, Ours, Rego, Texts};
use crate::generate::{CASES, Case, root};
use crate::report::Checked;
use crate::requests::{Cache, Prepared};

/// The peers' encodings of the shipped sets, kept in the repository for reading.
fn write_shipped_encodings(policy: &Policy) -> anyhow::Result<()> {
    let dir = root().join("crates/peers/encodings");
    std::fs::write(dir.join("shipped.cedar"), encode::cedar_policies(policy))?;
    std::fs::write(
        dir.join("shipped.entities.json"),
        serde_json::to_string_pretty(&encode::cedar_entities(policy))?,
    )?;
    std::fs::write(
        dir.join("shipped.data.json"),
        serde_json::to_string_pretty(&encode::rego_data(policy))?,
    )?;
    Ok(())
}

fn texts(case: Case, model: &Policy) -> anyhow::Result<Texts> {
    let encodings = root().join("crates/peers/encodings");
    Ok(Texts {
        sources: case.sources()?,
        image: model.to_image(),
        cedar_policies: encode::cedar_policies(model),
        cedar_entities: encode::cedar_entities(model).to_string(),
        cedar_schema: std::fs::read_to_string(encodings.join("gatekeeper.cedarschema"))
            .context("reading gatekeeper.cedarschema")?,
        rego: std::fs::read_to_string(encodings.join("gatekeeper.rego"))
            .context("reading gatekeeper.rego")?,
        rego_data: encode::rego_data(model).to_string(),
    })
}

fn said<E: Engine>(e: &mut E, r: &Prepared) -> anyhow::Result<bool> {
    let input = e.prepare(r)?;
    e.allows(&input)
}

/// Every engine on every request given, and Gatekeeper loaded from its compiled image as
/// well as from its TOML; stops at the first disagreement.
fn agree(case: Case, texts: &Texts, reqs: &[&Prepared]) -> anyhow::Result<()> {
    let (mut ours, _) = Ours::load(texts.sources.clone())?;
    let (mut image, _) = Ours::from_image(&texts.image)?;
    let (mut cedar, _) = Cedar::load(
        &texts.cedar_policies,
        &texts.cedar_entities,
        &texts.cedar_schema,
    )?;
    let (mut rego, _) = Rego::load(&texts.rego, &texts.rego_data)?;
    for r in reqs {
        let answers = [
            ("gatekeeper", said(&mut ours, r)?),
            (IMAGE, said(&mut image, r)?),
            ("cedar", said(&mut cedar, r)?),
            ("regorus", said(&mut rego, r)?),
        ];
        if answers.iter().any(|(_, a)| *a != answers[0].1) {
            let said: Vec<String> = answers
                .iter()
                .map(|(n, a)| format!("{n}: {}", if *a { "allow" } else { "deny" }))
                .collect();
            bail!(
                "engines disagree on the `{}` policy, request {}:\n  {}",
                case.label(),
                serde_json::to_string(&policy::RequestRecord::from(&r.ours))?,
                said.join("\n  ")
            );
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, engine, case] = &args[..]
        && flag == "--child"
    {
        return measure::child(engine, Case::from_label(case)?);
    }
    if let Some((flag, rest)) = args.split_first()
        && flag == "--compare"
    {
        let usage = "usage: peers --compare POLICY POLICY [--rounds N] [--requests K] \
                     [--shuffled-into M] [--without-known-at]";
        let [a, b, options @ ..] = rest else {
            bail!(usage);
        };
        let mut how = measure::Compare::default();
        let mut options = options.iter();
        while let Some(name) = options.next() {
            let mut value = || -> anyhow::Result<usize> {
                let v = options
                    .next()
                    .ok_or_else(|| anyhow!("{name} needs a number; {usage}"))?;
                v.parse()
                    .with_context(|| format!("{name} {v}: not a number; {usage}"))
            };
            match name.as_str() {
                "--rounds" => how.rounds = value()?,
                "--requests" => how.requests = value()?,
                "--shuffled-into" => how.shuffled_into = Some(value()?),
                "--without-known-at" => how.without_known_at = true,
                _ => bail!("{name}: not an option of --compare; {usage}"),
            }
        }
        return measure::compare(Case::from_label(a)?, Case::from_label(b)?, &how);
    }
    if let [flag] = &args[..]
        && flag == "--readme"
    {
        return report::splice_readme();
    }
    if let [flag] = &args[..]
        && flag == "--report"
    {
        let dir = root().join("target/bench");
        let read = |name: &str| -> anyhow::Result<Value> {
            let text = std::fs::read_to_string(dir.join(name))
                .with_context(|| format!("reading target/bench/{name}"))?;
            Ok(serde_json::from_str(&text)?)
        };
        let rows = read("report.json")?;
        let run = report::Run::from_json(&read("run.json")?);
        let md = report::markdown(rows.as_array().map_or(&[][..], |r| &r[..]), &run);
        std::fs::write(dir.join("report.md"), &md)?;
        return report::splice_readme();
    }
    // `--only LABEL...`: those policies alone (`shipped`, `1000`, `1000x100`, ...); the report
    // is written, README.md is left alone.
    let only: Vec<Case> = match args.split_first() {
        None => Vec::new(),
        Some((flag, labels)) if flag == "--only" && !labels.is_empty() => labels
            .iter()
            .map(|l| Case::from_label(l))
            .collect::<anyhow::Result<_>>()?,
        Some(_) => bail!(
            "usage: peers [--readme | --report | --only POLICY... | --compare POLICY POLICY [--rounds N] [--requests K] [--shuffled-into M] [--without-known-at]]"
        ),
    };
    let started = Clock::now();
    let load_before = report::load_average();
    let exe = std::env::current_exe()?;
    let mut rows: Vec<Value> = Vec::new();
    let mut checked: Vec<Checked> = Vec::new();
    for case in CASES
        .into_iter()
        .filter(|c| only.is_empty() || only.contains(c))
    {
        let model = case.model()?;
        if case.apps.is_none() {
            write_shipped_encodings(&model)?;
        }
        let texts = texts(case, &model)?;
        let warm = requests::requests(&model, requests::WARM_REQUESTS, 7, false)?;
        let cold = requests::cold_requests(&model, 13)?;
        measure::write_inputs(case, &texts)?;
        requests::write(&measure::requests_file(case, Cache::Warm), &warm)?;
        requests::write(&measure::requests_file(case, Cache::Cold), &cold)?;

        // The agreement check: the warm set, the start of the (shuffled) cold set, and
        // requests for any listed app and for covered apps only, so that the large policies,
        // where few apps are covered, are checked on denies too.
        let t = Clock::now();
        let any = requests::requests(&model, 3_000, 11, false)?;
        let covered = requests::requests(&model, 3_000, 12, true)?;
        let cold_checked = cold.len().min(case.check_cold);
        let all: Vec<&Prepared> = warm
            .iter()
            .chain(&cold[..cold_checked])
            .chain(&any)
            .chain(&covered)
            .collect();
        agree(case, &texts, &all)?;
        println!(
            "{:>12}: {} apps, {} prohibitions; every engine agrees on {} requests ({} of the {} of the cold set) in {:.1} s",
            case.label(),
            model.apps().len(),
            model.prohibitions().len(),
            all.len(),
            cold_checked,
            cold.len(),
            t.elapsed().as_secs_f64()
        );
        checked.push(Checked {
            case: case.label(),
            requests: all.len(),
            cold: cold_checked,
            cold_of: cold.len(),
        });
        drop((texts, warm, cold, any, covered));

        let mut measured_rows: Vec<Value> = Vec::new();
        for engine in ENGINES.into_iter().chain([IMAGE]) {
            let out = Command::new(&exe)
                .args(["--child", engine, &case.label()])
                .output()?;
            if !out.status.success() {
                bail!(
                    "{engine} on the `{}` policy: {}",
                    case.label(),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let text = String::from_utf8_lossy(&out.stdout);
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let measured: Value = serde_json::from_str(line).context("a child's row")?;
                let mut row = json!({
                    "engine": engine,
                    "policy": if case.apps.is_none() { "shipped" } else { "generated" },
                    "apps": model.apps().len(),
                    "prohibitions": model.prohibitions().len(),
                });
                if let (Some(row), Some(measured)) = (row.as_object_mut(), measured.as_object()) {
                    row.extend(measured.clone());
                }
                println!("{row}");
                measured_rows.push(row);
            }
        }
        // In the report's order: each request set, every engine; then the rows of a load
        // alone (the image's), which have no request set.
        for cache in Cache::ALL {
            rows.extend(
                measured_rows
                    .iter()
                    .filter(|r| r["cache"] == cache.as_str())
                    .cloned(),
            );
        }
        rows.extend(measured_rows.into_iter().filter(|r| r["cache"].is_null()));
    }
    let dir = root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("report.json"),
        serde_json::to_string_pretty(&rows)?,
    )?;
    let run = report::Run {
        when: report::now(),
        seconds: started.elapsed().as_secs_f64(),
        load_before,
        load_after: report::load_average(),
        cpu: report::cpu(),
        revision: report::revision(),
        checked,
    };
    std::fs::write(
        dir.join("run.json"),
        serde_json::to_string_pretty(&run.to_json())?,
    )?;
    let md = report::markdown(&rows, &run);
    std::fs::write(dir.join("report.md"), &md)?;
    println!("\n{md}");
    if !only.is_empty() {
        return Ok(());
    }
    report::splice_readme().map_err(|e| anyhow!("report written, README not updated: {e:#}"))
}
