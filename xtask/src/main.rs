//! Workspace automation, run as `cargo xtask <task>`.
//!
//! - `ci`: format check, clippy with warnings denied, then every test.
//! - `bench`: the benchmarks, with their medians; last, Gatekeeper against Cedar and regorus
//!   (`crates/peers`), whose report's tables replace README.md's between its `peers-report` lines.
//! - `simulate`: the mock store through the shipped scenarios (arguments go to `simulate`).
//! - `differential`: the engine against the independent reference evaluator on generated
//!   policies (`--cases N --seed S`; arguments go to `reference`'s `differential`).
//! - `fuzz`: every cargo-fuzz target in `fuzz/` in turn, on the nightly toolchain
//!   (`--seconds N` each, 60 by default); fails if any finds a crash.
//! - `schema`: writes `schema/policy.schema.json`, the editor schema of policy files.
//!
//! Builds are not quiet: cargo shows what it compiles, so a long build is not a silent
//! minute; the programs' own output follows on standard output.

use std::path::PathBuf;
use std::process::{Command, ExitCode};

/// The target folder every build uses (the peers' workspace builds into it too).
fn target_dir() -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".to_owned());
    std::fs::canonicalize(&target).unwrap_or_else(|_| target.into())
}

fn cargo(args: &[&str]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    eprintln!("$ cargo {}", args.join(" "));
    let status = Command::new(&cargo)
        .args(args)
        .env("CARGO_TARGET_DIR", target_dir())
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
    cargo(&["bench", "--package", "authoring", "--bench", "diff"])?;
    // A 100,000-app bundle loaded from its files and from its compiled image.
    cargo(&[
        "run",
        "--release",
        "--package",
        "gatekeeper",
        "--example",
        "bundle_load",
    ])?;
    // Cedar and Rego on the same decisions: a workspace of its own, outside the tests' build.
    cargo(&[
        "run",
        "--release",
        "--manifest-path",
        "crates/peers/Cargo.toml",
    ])
}

/// Builds a binary of the workspace in release and runs it with `args`.
///
/// The build names the binary but no package: cargo then resolves features for the
/// workspace's default members, exactly as `cargo build --release --bin gatekeeper`
/// does, so the two builds share every dependency. With `--package mockstore` the
/// selection differs and features unify differently (`policy`'s `schema` and
/// `tracing-core`'s `default`, both through the command line), so cargo built a second
/// copy of `policy`, `gatekeeper` and `serve` for it, and compiled every change to them
/// twice when the two commands alternated.
fn release_bin(bin: &str, args: &[String]) -> Result<(), String> {
    cargo(&["build", "--release", "--bin", bin])?;
    let path = target_dir()
        .join("release")
        .join(format!("{bin}{}", std::env::consts::EXE_SUFFIX));
    eprintln!("$ {} {}", path.display(), args.join(" "));
    let status = Command::new(&path)
        .args(args)
        .status()
        .map_err(|e| format!("cannot run `{}`: {e}", path.display()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{bin}` failed ({status})"))
    }
}

/// The mock store driven through the shipped scenarios (and a load run, with `--load N`).
fn simulate(args: &[String]) -> Result<(), String> {
    release_bin("simulate", args)
}

/// The engine against the reference evaluator on generated policies and requests; fails
/// on any mismatch.
fn differential(args: &[String]) -> Result<(), String> {
    release_bin("differential", args)
}

/// Writes the editor schema, `schema/policy.schema.json`, as `gatekeeper schema` prints it.
fn schema() -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let args = ["run", "--bin", "gatekeeper", "--", "schema"];
    eprintln!("$ cargo {} > schema/policy.schema.json", args.join(" "));
    let output = Command::new(&cargo)
        .args(args)
        .env("CARGO_TARGET_DIR", target_dir())
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run `{cargo}`: {e}"))?;
    if !output.status.success() {
        return Err(format!("`gatekeeper schema` failed ({})", output.status));
    }
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../schema/policy.schema.json");
    std::fs::write(&path, &output.stdout).map_err(|e| format!("writing `{}`: {e}", path.display()))
}

/// The fuzz targets of `fuzz/`, run by `cargo xtask fuzz`.
const FUZZ_TARGETS: [&str; 5] = ["request", "policy", "bundle", "audit", "image"];

/// Every fuzz target for `--seconds N` (60 by default), one after the other, with
/// `cargo +nightly fuzz run` in `fuzz/` (its own workspace and target folder). Crash inputs
/// are left in `fuzz/artifacts/<target>/`; fails if any target found one, naming them, or
/// if a target could not be built or run (told apart from a crash by whether it left an
/// input). Without cargo-fuzz for the nightly toolchain, says so before trying any.
fn fuzz(args: &[String]) -> Result<(), String> {
    let seconds = match args {
        [] => 60,
        [flag, n] if flag == "--seconds" => n
            .parse::<u64>()
            .map_err(|_| format!("`--seconds {n}`: expected a number of seconds"))?,
        _ => return Err("usage: cargo xtask fuzz [--seconds N]".to_owned()),
    };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    // The rustup proxy, not `$CARGO`: `+nightly` picks the toolchain.
    let nightly = |args: &[&str]| {
        let mut command = Command::new("cargo");
        command
            .arg("+nightly")
            .args(args)
            .current_dir(&dir)
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("RUSTUP_TOOLCHAIN");
        command
    };
    let probe = nightly(&["fuzz", "--version"])
        .output()
        .map_err(|e| format!("cannot run `cargo +nightly fuzz`: {e}"))?;
    if !probe.status.success() {
        return Err(format!(
            "`cargo +nightly fuzz --version` failed: cargo-fuzz and the nightly toolchain are \
             needed (`rustup toolchain install nightly`, `cargo install cargo-fuzz`): {}",
            String::from_utf8_lossy(&probe.stderr).trim()
        ));
    }
    let mut crashed = Vec::new();
    let mut broken = Vec::new();
    for target in FUZZ_TARGETS {
        let artifacts = dir.join("artifacts").join(target);
        let before = files_in(&artifacts);
        let max_time = format!("-max_total_time={seconds}");
        let args = ["fuzz", "run", target, "--", &max_time];
        eprintln!("$ cargo +nightly {} (in fuzz/)", args.join(" "));
        let status = nightly(&args)
            .status()
            .map_err(|e| format!("cannot run `cargo +nightly fuzz`: {e}"))?;
        if !status.success() {
            let found: Vec<String> = files_in(&artifacts)
                .into_iter()
                .filter(|f| !before.contains(f))
                .map(|f| format!("fuzz/artifacts/{target}/{f}"))
                .collect();
            if found.is_empty() {
                broken.push(format!("{target} ({status})"));
            } else {
                crashed.extend(found);
            }
        }
    }
    let mut problems = Vec::new();
    if !crashed.is_empty() {
        problems.push(format!("crash inputs found: {}", crashed.join(", ")));
    }
    if !broken.is_empty() {
        problems.push(format!(
            "targets that failed without leaving a new crash input (a build or run error, or \
             a crash whose input was already in fuzz/artifacts/: see their output above): {}",
            broken.join(", ")
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// The names of the files in a folder (none when it does not exist).
fn files_in(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// `cargo xtask gen-log ...`: the generator, built in release (by its name alone, as the
/// other release programs are: the same features as `cargo build --release --bin gatekeeper`).
fn gen_log(args: &[String]) -> Result<(), String> {
    let mut all = vec!["run", "--release", "--quiet", "--bin", "gen-log", "--"];
    all.extend(args.iter().map(String::as_str));
    cargo(&all)
}

/// `cargo xtask replay-check ...`: the replay's correctness and throughput run
/// (`crates/cli/examples/replay_check.rs`).
fn replay_check(args: &[String]) -> Result<(), String> {
    let mut all = vec![
        "run",
        "--release",
        "--quiet",
        "--example",
        "replay_check",
        "--",
    ];
    all.extend(args.iter().map(String::as_str));
    cargo(&all)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("bench") => bench(),
        Some("simulate") => simulate(&args[1..]),
        Some("differential") => differential(&args[1..]),
        Some("fuzz") => fuzz(&args[1..]),
        Some("schema") => schema(),
        Some("gen-log") => gen_log(&args[1..]),
        Some("replay-check") => replay_check(&args[1..]),
        _ => Err("usage: cargo xtask <ci|bench|simulate|differential|fuzz|schema|gen-log|replay-check>\n  ci            format check, clippy, tests\n  bench         benchmarks\n  simulate      the mock store through the shipped scenarios (`--load N --seed S`, `--scenario PATH`, `--policies DIR`)\n  differential  the engine against the reference evaluator (`--cases N --seed S`, `--threads T`, `--show K`, `--no-shrink`)\n  fuzz          every fuzz target on nightly (`--seconds N` each)\n  schema        write schema/policy.schema.json, the editor schema of policy files\n  gen-log       a seeded request log, Parquet and JSON Lines (`--rows N --seed S`, `--out DIR`, `--format parquet|jsonl|both`, `--files K`)\n  replay-check  replay (DataFusion, and Ballista with `--ballista`) against `gatekeeper check`, row for row, and its throughput (`--rows N --seed S`)".to_owned()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
