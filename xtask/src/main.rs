//! Workspace automation, run as `cargo xtask <task>`.
//!
//! - `ci`: format check, clippy with warnings denied, then every test.
//! - `bench`: the benchmarks, with their medians.
//! - `simulate`: the mock store through the shipped scenarios (arguments go to `simulate`).
//! - `differential`: the engine against the independent reference evaluator on generated
//!   policies (`--cases N --seed S`; arguments go to `reference`'s `differential`).
//! - `fuzz`: every cargo-fuzz target in `fuzz/` in turn, on the nightly toolchain
//!   (`--seconds N` each, 60 by default); fails if any finds a crash.

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
    cargo(&["bench", "--package", "serve", "--bench", "audit"])?;
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

/// The fuzz targets of `fuzz/`, run by `cargo xtask fuzz`.
const FUZZ_TARGETS: [&str; 4] = ["request", "policy", "bundle", "audit"];

/// Every fuzz target for `--seconds N` (60 by default), one after the other, with
/// `cargo +nightly fuzz run` in `fuzz/` (its own workspace and target folder). Crash inputs
/// are left in `fuzz/artifacts/<target>/`; fails if any target found one.
fn fuzz(args: &[String]) -> Result<(), String> {
    let seconds = match args {
        [] => 60,
        [flag, n] if flag == "--seconds" => n
            .parse::<u64>()
            .map_err(|_| format!("`--seconds {n}`: expected a number of seconds"))?,
        _ => return Err("usage: cargo xtask fuzz [--seconds N]".to_owned()),
    };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut failed = Vec::new();
    for target in FUZZ_TARGETS {
        let max_time = format!("-max_total_time={seconds}");
        let args = ["+nightly", "fuzz", "run", target, "--", &max_time];
        eprintln!("$ cargo {} (in fuzz/)", args.join(" "));
        // The rustup proxy, not `$CARGO`: `+nightly` picks the toolchain.
        let status = Command::new("cargo")
            .args(args)
            .current_dir(&dir)
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("RUSTUP_TOOLCHAIN")
            .status()
            .map_err(|e| format!("cannot run `cargo +nightly fuzz`: {e}"))?;
        if !status.success() {
            failed.push(target);
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "fuzz targets failed (crash inputs in fuzz/artifacts/): {}",
            failed.join(", ")
        ))
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("bench") => bench(),
        Some("simulate") => simulate(&args[1..]),
        Some("differential") => differential(&args[1..]),
        Some("fuzz") => fuzz(&args[1..]),
        _ => Err("usage: cargo xtask <ci|bench|simulate|differential|fuzz>\n  ci            format check, clippy, tests\n  bench         benchmarks\n  simulate      the mock store through the shipped scenarios (`--load N --seed S`, `--scenario PATH`, `--policies DIR`)\n  differential  the engine against the reference evaluator (`--cases N --seed S`, `--threads T`, `--show K`, `--no-shrink`)\n  fuzz          every fuzz target on nightly (`--seconds N` each)".to_owned()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
