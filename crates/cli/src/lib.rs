//! The `gatekeeper` command line, as a library so that tests run it in-process.
//!
//! ```no_run
//! let mut out = Vec::new();
//! let mut err = Vec::new();
//! let code = cli::run(["gatekeeper", "validate", "--policies", "policies/us-2020"], &mut std::io::empty(), &mut out, &mut err);
//! assert_eq!(code, 0);
//! ```

#![forbid(unsafe_code)]

mod audit;
mod bundle;
mod serve;

use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use policy::{Policy, RequestRecord};

/// Gatekeeper: decides app-store, hosting, CDN, peering, payment and code-use requests
/// for apps named by government restrictions.
#[derive(Parser, Debug)]
#[command(name = "gatekeeper", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Load policy folders and report every problem; exit 1 if there is any.
    Validate(Policies),
    /// Decide JSON Lines requests; write one JSON decision per line, in order.
    Check(WithInput),
    /// Decide JSON Lines requests and explain each decision in plain English.
    Explain(WithInput),
    /// Policy bundles: policy files packed with a manifest.
    #[command(subcommand)]
    Bundle(bundle::BundleCommand),
    /// The audit trail.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Run the sidecar decision service over HTTP (with an Envoy ext_authz endpoint).
    Serve(Box<serve::ServeArgs>),
}

#[derive(clap::Args, Debug)]
struct Policies {
    /// A folder of `*.toml` policy files (or one file); repeat for several sets.
    #[arg(long = "policies", value_name = "DIR", required = true)]
    policies: Vec<PathBuf>,
}

/// The operator's posture where the law leaves room.
#[derive(clap::Args, Debug, Default)]
pub(crate) struct PostureArgs {
    /// How to read instants the law leaves open: `conservative` (never early to serve; the
    /// default) or `permissive`.
    #[arg(long, value_parser = ["conservative", "permissive"])]
    posture: Option<String>,
    /// Whether executive non-enforcement orders count as relief: `honour` (the default) or
    /// `ignore` (deny, naming the order set aside).
    #[arg(long, value_parser = ["honour", "ignore"])]
    non_enforcement: Option<String>,
}

impl PostureArgs {
    pub(crate) fn apply(&self, posture: &mut policy::Posture) {
        if let Some(b) = self.posture.as_deref().and_then(policy::Boundaries::parse) {
            posture.boundaries = b;
        }
        if let Some(n) = self
            .non_enforcement
            .as_deref()
            .and_then(policy::NonEnforcement::parse)
        {
            posture.non_enforcement = n;
        }
    }
}

#[derive(clap::Args, Debug)]
struct WithInput {
    #[command(flatten)]
    policies: Policies,
    #[command(flatten)]
    posture: PostureArgs,
    /// JSON Lines requests; `-` or nothing reads standard input.
    #[arg(value_name = "FILE|-")]
    input: Option<PathBuf>,
}

/// Runs the command line; returns the process exit code: 0 success, 1 a bad policy
/// (validate) or a bad request line (check, explain), 2 policies that fail to load
/// (check, explain) or a usage or I/O error.
pub fn run<I, T>(
    args: I,
    stdin: &mut dyn BufRead,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let text = e.render().to_string();
            let _ = if e.use_stderr() {
                stderr.write_all(text.as_bytes())
            } else {
                stdout.write_all(text.as_bytes())
            };
            return code;
        }
    };
    let result = match cli.command {
        Command::Validate(p) => validate(&p, stdout, stderr),
        Command::Check(w) => decide_lines(&w, Mode::Check, stdin, stdout, stderr),
        Command::Explain(w) => decide_lines(&w, Mode::Explain, stdin, stdout, stderr),
        Command::Bundle(command) => bundle::run(command, stdout, stderr),
        Command::Audit(command) => audit::run(command, stdin, stdout, stderr),
        Command::Serve(args) => serve::run(*args, stdout),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(stderr, "error: {e:#}");
            2
        }
    }
}

fn load(p: &Policies, stderr: &mut dyn Write) -> anyhow::Result<Option<gatekeeper::LoadedPolicy>> {
    match gatekeeper::load_dirs(&p.policies) {
        Ok(loaded) => Ok(Some(loaded)),
        Err(diagnostics) => {
            stderr.write_all(diagnostics.render().as_bytes())?;
            writeln!(stderr, "error: {diagnostics}; nothing was loaded")?;
            Ok(None)
        }
    }
}

fn validate(p: &Policies, stdout: &mut dyn Write, stderr: &mut dyn Write) -> anyhow::Result<u8> {
    let Some(loaded) = load(p, stderr)? else {
        return Ok(1);
    };
    let policy = &loaded.policy;
    writeln!(
        stdout,
        "ok: {} files, {} instruments, {} regions, {} apps, {} prohibitions, {} changes",
        loaded.files.len(),
        policy.instruments().len(),
        policy.regions().len(),
        policy.apps().len(),
        policy.prohibitions().len(),
        policy.changes().len()
    )?;
    Ok(0)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Check,
    Explain,
}

fn decide_lines(
    w: &WithInput,
    mode: Mode,
    stdin: &mut dyn BufRead,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> anyhow::Result<u8> {
    let Some(loaded) = load(&w.policies, stderr)? else {
        return Ok(2);
    };
    let mut file_reader;
    let input: &mut dyn BufRead = match &w.input {
        Some(path) if path.as_os_str() != "-" => {
            let f = File::open(path)
                .with_context(|| format!("opening requests `{}`", path.display()))?;
            file_reader = BufReader::new(f);
            &mut file_reader
        }
        _ => stdin,
    };
    let mut posture = policy::Posture::default();
    w.posture.apply(&mut posture);
    let mut bad = false;
    let mut line = String::new();
    let mut number = 0usize;
    let mut first = true;
    loop {
        line.clear();
        let read = input.read_line(&mut line).context("reading requests")?;
        if read == 0 {
            break;
        }
        number += 1;
        if line.trim().is_empty() {
            continue;
        }
        match decide_line(&loaded.policy, line.trim(), mode, posture) {
            Ok(out) => {
                if mode == Mode::Explain && !first {
                    writeln!(stdout)?;
                }
                writeln!(stdout, "{out}")?;
            }
            Err(message) => {
                bad = true;
                let error = format!("line {number}: {message}");
                if mode == Mode::Explain && !first {
                    writeln!(stdout)?;
                }
                writeln!(stdout, "{}", serde_json::json!({ "error": error }))?;
            }
        }
        first = false;
    }
    stdout.flush()?;
    Ok(u8::from(bad))
}

fn decide_line(
    policy: &Policy,
    line: &str,
    mode: Mode,
    posture: policy::Posture,
) -> Result<String, String> {
    let record: RequestRecord =
        serde_json::from_str(line).map_err(|e| format!("invalid request: {e}"))?;
    let request = record.into_request().map_err(|e| e.to_string())?;
    let decision = policy.decide(&request, posture);
    Ok(match mode {
        Mode::Check => serde_json::to_string(&decision.to_record()).map_err(|e| e.to_string())?,
        Mode::Explain => decision.explain(&request).trim_end().to_owned(),
    })
}
