//! Workspace automation, run as `cargo xtask <task>`.
//!
//! - `ci`: format check, clippy with warnings denied, then every test.
//! - `bench`: the benchmarks, with their medians.
//! - `simulate`: the mock store through the shipped scenarios (arguments go to `simulate`).
//! - `differential`: the engine against the independent reference evaluator on generated
//!   policies (`--cases N --seed S`; arguments go to `reference`'s `differential`).

use std::process::{Command, ExitCode};

fn cargo(args: &[&str]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    eprintln!("$ cargo {}", args.join(" "));
    // The peers' workspace builds into the main target folder, beside everything else.
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".to_owned());
    let status = Command::new(&cargo)
        .args(args)
        .env(
            "CARGO_TARGET_DIR",
            std::fs::canonicalize(&target).unwrap_or_else(|_| target.into()),
        )
        .status()
        .map_err(|e| format!("cannot run `{cargo}`: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`cargo {}` failed ({status})", args.join(" ")))
    }
}

fn ci() -> Result<(), String> {
    cargo(&["fmt", "--all", "--check"])?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    cargo(&["test", "--workspace"])
}

fn bench() -> Result<(), String> {
    cargo(&["bench", "--package", "policy", "--bench", "decide"])?;
    cargo(&["bench", "--package", "gatekeeper", "--bench", "check"])?;
    cargo(&["bench", "--package", "serve", "--bench", "load"])?;
    // Cedar and Rego on the same decisions: a workspace of its own, outside the tests' build.
    cargo(&[
        "run",
        "--release",
        "--quiet",
        "--manifest-path",
        "crates/peers/Cargo.toml",
    ])
}

/// The mock store driven through the shipped scenarios (and a load run, with `--load N`).
fn simulate(args: &[String]) -> Result<(), String> {
    let mut command = vec![
        "run",
        "--release",
        "--quiet",
        "--package",
        "mockstore",
        "--bin",
        "simulate",
        "--",
    ];
    command.extend(args.iter().map(String::as_str));
    cargo(&command)
}

/// The engine against the reference evaluator on generated policies and requests; fails
/// on any mismatch.
fn differential(args: &[String]) -> Result<(), String> {
    let mut command = vec![
        "run",
        "--release",
        "--quiet",
        "--package",
        "reference",
        "--bin",
        "differential",
        "--",
    ];
    command.extend(args.iter().map(String::as_str));
    cargo(&command)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("bench") => bench(),
        Some("simulate") => simulate(&args[1..]),
        Some("differential") => differential(&args[1..]),
        _ => Err("usage: cargo xtask <ci|bench|simulate|differential>\n  ci            format check, clippy, tests\n  bench         benchmarks\n  simulate      the mock store through the shipped scenarios (`--load N --seed S`, `--scenario PATH`, `--policies DIR`)\n  differential  the engine against the reference evaluator (`--cases N --seed S`, `--threads T`, `--show K`, `--no-shrink`)".to_owned()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
