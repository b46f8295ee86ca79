//! Workspace automation, run as `cargo xtask <task>`.
//!
//! - `ci`: format check, clippy with warnings denied, then every test.
//! - `bench`: the benchmarks, with their medians.

use std::process::{Command, ExitCode};

fn cargo(args: &[&str]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    eprintln!("$ cargo {}", args.join(" "));
    let status = Command::new(&cargo)
        .args(args)
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
    cargo(&["bench", "--package", "serve", "--bench", "load"])
}

fn main() -> ExitCode {
    let task = std::env::args().nth(1);
    let result = match task.as_deref() {
        Some("ci") => ci(),
        Some("bench") => bench(),
        _ => Err("usage: cargo xtask <ci|bench>\n  ci     format check, clippy, tests\n  bench  benchmarks".to_owned()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
