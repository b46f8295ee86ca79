//! `cargo xtask simulate`: the mock store driven through dated scenarios and a seeded
//! random workload over real HTTP on 127.0.0.1; with `--proxy nginx|caddy`, behind a real
//! proxy and the sidecar instead of its embedded layer. `simulate serve-store ...` serves
//! one store of a load run, in a process of its own: the run starts it so.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use mockstore::proxy::Proxy;

/// Drive the mock app store through scenarios and a random workload; exit non-zero on
/// any mismatch.
#[derive(Parser, Debug)]
#[command(name = "simulate")]
struct Args {
    /// A scenario file (repeat); every `tests/scenarios/*.toml` when none is given.
    #[arg(long = "scenario", value_name = "PATH")]
    scenarios: Vec<PathBuf>,
    /// Policy folders to load instead of the scenarios' own, and for the load run
    /// (default there: `us-2020` and `us-2024-pafaca`).
    #[arg(long = "policies", value_name = "DIR")]
    policies: Vec<PathBuf>,
    /// How the store reads windows, for every scenario (instead of the scenario's own
    /// `posture`) and the load run: `conservative` or `permissive`.
    #[arg(long, value_name = "POSTURE", value_parser = ["conservative", "permissive"])]
    posture: Option<String>,
    /// Whether the store honours non-enforcement orders, for every scenario (instead of the
    /// scenario's own `non_enforcement`) and the load run: `honour` or `ignore`.
    #[arg(long, value_name = "SETTING", value_parser = ["honour", "ignore"])]
    non_enforcement: Option<String>,
    /// Requests of a seeded random workload, cross-checked against `gatekeeper check`, on
    /// which the layer's cost is measured: store CPU per request with the layer and without,
    /// the two stores in processes of their own.
    #[arg(long, value_name = "N")]
    load: Option<usize>,
    /// The workload's seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Concurrent load clients.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Pairs of measured load rounds (1,000 requests each), one through the store with the
    /// layer and one through the store without it, in alternating order; at least one per
    /// round of the workload.
    #[arg(long, value_name = "P", default_value_t = mockstore::load::PAIRS)]
    pairs: usize,
    /// Where the reports go.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Put the store behind this proxy (repeat for both), with `gatekeeper serve` as its
    /// authorizer and the configuration shipped in `deploy/`, instead of the embedded layer:
    /// the scenarios run through each proxy, and `--load N` measures the throughput through
    /// each with and without the authorizer.
    #[arg(long, value_name = "PROXY", value_parser = ["nginx", "caddy"])]
    proxy: Vec<String>,
}

fn repo() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::canonicalize(&root).unwrap_or(root)
}

fn main() -> ExitCode {
    // `simulate serve-store ...`: one store of a load run, in a process of its own.
    let mut argv = std::env::args_os().skip(1).peekable();
    if argv
        .peek()
        .is_some_and(|a| a == mockstore::standalone::SERVE_STORE)
    {
        argv.next();
        return match mockstore::standalone::serve(argv) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    match run(Args::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> anyhow::Result<bool> {
    let started = std::time::Instant::now();
    let root = repo();
    let scenarios = if args.scenarios.is_empty() {
        mockstore::scenario::shipped(&root.join("tests/scenarios"))?
    } else {
        args.scenarios.clone()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut proxies: Vec<Proxy> = args.proxy.iter().filter_map(|p| Proxy::parse(p)).collect();
    proxies.dedup();
    let options = mockstore::scenario::RunOptions {
        policies: args.policies.clone(),
        boundaries: args.posture.as_deref().and_then(policy::Boundaries::parse),
        non_enforcement: args
            .non_enforcement
            .as_deref()
            .and_then(policy::NonEnforcement::parse),
        proxy: None,
    };
    // Through the embedded layer, or through each proxy in turn.
    let fronts: Vec<Option<Proxy>> = if proxies.is_empty() {
        vec![None]
    } else {
        proxies.iter().copied().map(Some).collect()
    };
    let runs = fronts
        .iter()
        .flat_map(|front| scenarios.iter().map(move |path| (*front, path)));
    // Every step of every scenario, through each front.
    let mut steps = 0;
    for path in &scenarios {
        steps += mockstore::scenario::load(path)?.step.len();
    }
    let progress = progress_bar(steps * fronts.len(), true, "steps");
    let mut results = Vec::new();
    for (front, path) in runs {
        let options = mockstore::scenario::RunOptions {
            proxy: front,
            ..options.clone()
        };
        let result = runtime.block_on(mockstore::scenario::run_with(
            path,
            &root.join("policies"),
            &options,
        ))?;
        progress.inc(result.steps.len() as u64);
        progress.suspend(|| print_result(&result));
        results.push(result);
    }
    progress.finish_and_clear();
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| root.join("target/simulate"));
    let mut proxy_load_ok = true;
    let load = match args.load {
        None => None,
        Some(n) if !proxies.is_empty() => {
            let policies = default_load_policies(&root, &args.policies);
            let progress = progress_bar(
                mockstore::proxy_load::requests_sent(proxies.len(), n),
                n >= 5_000,
                "requests",
            );
            let report = runtime.block_on(mockstore::proxy_load::run(
                &root,
                &policies,
                &mockstore::proxy_load::Options {
                    proxies: proxies.clone(),
                    requests: n,
                    seed: args.seed,
                    concurrency: args.concurrency.max(1),
                    posture: policy::Posture {
                        boundaries: options.boundaries.unwrap_or_default(),
                        non_enforcement: options.non_enforcement.unwrap_or_default(),
                    },
                },
                &progress,
            ))?;
            progress.finish_and_clear();
            println!(
                "load: {} requests (seed {}) at {}, {} denied, {} mismatches; medians of {} alternating rounds:",
                report.requests,
                report.seed,
                report.at,
                report.denied,
                report.mismatches.len(),
                report.rounds
            );
            for row in &report.proxies {
                println!(
                    "  {:<6} {:>8.0} requests/s with the authorizer, {:>8.0} without: ratio {:.2}",
                    row.proxy.as_str(),
                    row.with_authorizer,
                    row.without_authorizer,
                    row.ratio
                );
            }
            println!(
                "  the store itself, nothing in front: {:.0} requests/s",
                report.direct
            );
            if report.misrouted > 0 {
                println!(
                    "  {} answers through Caddy came from the wrong upstream (404 `no such route`: its forward_auth dial race, caddyserver/caddy#7859); refused, not counted as decisions",
                    report.misrouted
                );
            }
            for m in report.mismatches.iter().take(20) {
                println!("  {m}");
            }
            mockstore::proxy_load::write(&out, &report).context("writing the proxy report")?;
            proxy_load_ok = report.mismatches.is_empty();
            None
        }
        Some(n) => {
            let policies = default_load_policies(&root, &args.policies);
            let progress = progress_bar(
                mockstore::load::requests_sent(n, args.pairs),
                n >= 5_000,
                "requests",
            );
            let load_options = mockstore::load::Options {
                requests: n,
                seed: args.seed,
                concurrency: args.concurrency.max(1),
                posture: policy::Posture {
                    boundaries: options.boundaries.unwrap_or_default(),
                    non_enforcement: options.non_enforcement.unwrap_or_default(),
                },
                pairs: args.pairs,
                // The stores are this program again, each in a process of its own.
                stores: mockstore::load::Stores::Processes(
                    mockstore::standalone::StoreProgram::current_exe()?,
                ),
            };
            let report =
                runtime.block_on(mockstore::load::run(&policies, &load_options, &progress))?;
            progress.finish_and_clear();
            let us = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2} us"));
            println!(
                "load: {} requests (seed {}), {} denied, {} mismatches",
                report.requests,
                report.seed,
                report.denied,
                report.mismatches.len()
            );
            println!(
                "  the layer's cost: store CPU per request with the layer {}, without {} (medians; standalone stores, {} pairs of {}-request rounds in alternating order); median of the pairs' ratios {}; of their throughput ratios {:.3}",
                us(report.gated_cpu_us_per_request),
                us(report.ungated_cpu_us_per_request),
                report.pairs.len(),
                report.round,
                report
                    .cpu_ratio
                    .map_or("unavailable (no /proc)".to_owned(), |r| format!("{r:.3}")),
                report.throughput_ratio
            );
            for m in report.mismatches.iter().take(20) {
                println!("  {m}");
            }
            Some(report)
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    mockstore::report::write(&out, &results, load.as_ref(), seconds)
        .context("writing the reports")?;
    let ok = results.iter().all(|r| r.failures() == 0)
        && proxy_load_ok
        && load.as_ref().is_none_or(|l| l.mismatches.is_empty());
    println!(
        "{} in {seconds:.1} s; reports in {}",
        if ok { "ok" } else { "MISMATCHES" },
        out.display()
    );
    Ok(ok)
}

/// The load run's policies: the ones given, or else the rules without the court orders, so
/// that the workload meets denies across the years (with them, the 2020 rule never takes
/// force).
fn default_load_policies(root: &Path, given: &[PathBuf]) -> Vec<PathBuf> {
    if given.is_empty() {
        ["us-2020", "us-2024-pafaca"]
            .iter()
            .map(|s| root.join("policies").join(s))
            .collect()
    } else {
        given.to_vec()
    }
}

/// A bar on standard error (drawn only on a terminal) for `total` units: every request of
/// the measured rounds of a load run, or every step of the scenario runs; a rate in whole
/// units per second.
fn progress_bar(total: usize, show: bool, unit: &str) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let template =
        format!("{{bar:40}} {{human_pos}}/{{human_len}} {unit} {{per_sec:0}} eta {{eta}}");
    indicatif::ProgressBar::new(total as u64).with_style(
        indicatif::ProgressStyle::with_template(&template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    )
}

/// One scenario's line, and each mismatched step with its `file:line`.
fn print_result(result: &mockstore::scenario::ScenarioResult) {
    let failures = result.failures();
    println!(
        "{:<70} {:>3} steps  {}",
        result.name,
        result.steps.len(),
        if failures == 0 {
            "ok".to_owned()
        } else {
            format!("{failures} MISMATCHED")
        }
    );
    for step in result.steps.iter().filter(|s| s.mismatch.is_some()) {
        println!(
            "  {}:{}: step \"{}\" at {}: {}",
            result.file,
            step.line,
            step.name,
            step.at,
            step.mismatch.as_deref().unwrap_or_default()
        );
    }
}
