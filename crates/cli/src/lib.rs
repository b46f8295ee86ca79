//! The `gatekeeper` command line, as a library so that tests run it in-process.
//!
//! ```no_run
//! let mut out = Vec::new();
//! let mut err = Vec::new();
//! let code = cli::run(["gatekeeper", "validate", "--policies", "policies/us-2020"], &mut std::io::empty(), &mut out, &mut err);
//! assert_eq!(code, 0);
//! ```

#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use gatekeeper::Clock as _;
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
    Bundle(BundleCommand),
    /// The audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Run the sidecar decision service over HTTP (with an Envoy ext_authz endpoint).
    Serve(Box<ServeArgs>),
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// A TOML file with any of the settings below (flags override it).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Policy folders (repeat for several sets).
    #[arg(long = "policies", value_name = "DIR")]
    policies: Vec<PathBuf>,
    /// Poll a policy bundle URL instead of folders.
    #[arg(long, value_name = "URL")]
    bundle_url: Option<String>,
    /// The bundle's pinned SHA-256 (hex).
    #[arg(long, value_name = "HEX")]
    bundle_sha256: Option<String>,
    /// Where the last good bundle is cached for restarts.
    #[arg(long, value_name = "DIR")]
    bundle_cache: Option<PathBuf>,
    /// Decision listener (default 127.0.0.1:8181).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// A listener of their own for admin routes.
    #[arg(long, value_name = "ADDR")]
    admin_listen: Option<String>,
    /// `enforce` or `shadow`.
    #[arg(long, value_parser = ["enforce", "shadow"])]
    mode: Option<String>,
    /// `closed` or `open`: what happens with no valid policy or a failed audit trail.
    #[arg(long, value_parser = ["closed", "open"])]
    failure_mode: Option<String>,
    #[command(flatten)]
    posture: PostureArgs,
    /// The audit trail's folder.
    #[arg(long, value_name = "DIR")]
    audit_dir: Option<PathBuf>,
    /// Bearer token for admin routes (or the environment variable `GATEKEEPER_ADMIN_TOKEN`).
    #[arg(long, env = "GATEKEEPER_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// `text` or `json` logs.
    #[arg(long, value_parser = ["text", "json"])]
    log_format: Option<String>,
}

#[derive(Subcommand, Debug)]
enum BundleCommand {
    /// Pack policy folders (which must validate) into a bundle file.
    Build {
        #[command(flatten)]
        policies: Policies,
        /// Where to write the bundle.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: PathBuf,
        /// The bundle's revision number; bundles lower than the active one are refused.
        /// Defaults to the current Unix time in seconds.
        #[arg(long)]
        revision: Option<u64>,
        /// When the bundle stops being accepted (RFC 3339).
        #[arg(long, value_name = "RFC3339")]
        expires: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum AuditCommand {
    /// Check the hash chain of audit files (or folders of them, in order).
    Verify {
        /// Audit files or folders.
        #[arg(value_name = "PATH", required = true)]
        paths: Vec<PathBuf>,
    },
}

#[derive(clap::Args, Debug)]
struct Policies {
    /// A folder of `*.toml` policy files (or one file); repeat for several sets.
    #[arg(long = "policies", value_name = "DIR", required = true)]
    policies: Vec<PathBuf>,
}

/// The operator's posture where the law leaves room.
#[derive(clap::Args, Debug, Default)]
struct PostureArgs {
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
    fn apply(&self, posture: &mut policy::Posture) {
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
        Command::Bundle(BundleCommand::Build {
            policies,
            output,
            revision,
            expires,
        }) => bundle_build(
            &policies,
            &output,
            revision,
            expires.as_deref(),
            stdout,
            stderr,
        ),
        Command::Audit(AuditCommand::Verify { paths }) => audit_verify(&paths, stdout, stderr),
        Command::Serve(args) => serve(*args),
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

fn bundle_build(
    p: &Policies,
    output: &std::path::Path,
    revision: Option<u64>,
    expires: Option<&str>,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> anyhow::Result<u8> {
    let now = gatekeeper::SystemClock.now();
    let expires = expires
        .map(|e| {
            policy::Instant::parse_rfc3339(e).map_err(|err| anyhow::anyhow!("`--expires`: {err}"))
        })
        .transpose()?;
    let revision =
        revision.unwrap_or_else(|| u64::try_from(now.as_nanos() / 1_000_000_000).unwrap_or(0));
    let bundle = match gatekeeper::Bundle::build(&p.policies, revision, now, expires) {
        Ok(b) => b,
        Err(gatekeeper::BundleError::Policy(d)) => {
            stderr.write_all(d.render().as_bytes())?;
            writeln!(stderr, "error: {d}; no bundle was written")?;
            return Ok(1);
        }
        Err(e) => return Err(e.into()),
    };
    let bytes = bundle.to_bytes();
    let tmp = output.with_extension("tmp");
    std::fs::write(&tmp, &bytes).with_context(|| format!("writing `{}`", tmp.display()))?;
    std::fs::rename(&tmp, output).with_context(|| format!("writing `{}`", output.display()))?;
    writeln!(
        stdout,
        "wrote {}: revision {}, {} files, sha256 {}",
        output.display(),
        bundle.manifest.revision,
        bundle.manifest.files.len(),
        gatekeeper::sha256_hex(&bytes)
    )?;
    Ok(0)
}

fn serve_config(args: ServeArgs) -> anyhow::Result<serve::Config> {
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading `{}`", path.display()))?;
            serve::Config::from_toml(&text).with_context(|| format!("in `{}`", path.display()))?
        }
        None => serve::Config::default(),
    };
    if !args.policies.is_empty() {
        config.policies = args.policies;
    }
    let quoted = |v: &str| serde_json::Value::String(v.to_owned());
    config.bundle_url = args.bundle_url.or(config.bundle_url);
    config.bundle_sha256 = args.bundle_sha256.or(config.bundle_sha256);
    config.bundle_cache = args.bundle_cache.or(config.bundle_cache);
    config.listen = args.listen.unwrap_or(config.listen);
    config.admin_listen = args.admin_listen.or(config.admin_listen);
    config.audit_dir = args.audit_dir.or(config.audit_dir);
    config.admin_token = args.admin_token.or(config.admin_token);
    if let Some(m) = args.mode {
        config.mode = serde_json::from_value(quoted(&m))?;
    }
    if let Some(m) = args.failure_mode {
        config.failure_mode = serde_json::from_value(quoted(&m))?;
    }
    let mut posture = policy::Posture {
        boundaries: config.posture,
        non_enforcement: config.non_enforcement,
    };
    args.posture.apply(&mut posture);
    config.posture = posture.boundaries;
    config.non_enforcement = posture.non_enforcement;
    if let Some(f) = args.log_format {
        config.log_format = serde_json::from_value(quoted(&f))?;
    }
    config.check()?;
    Ok(config)
}

fn serve(args: ServeArgs) -> anyhow::Result<u8> {
    let config = serve_config(args)?;
    let subscriber = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match config.log_format {
        serve::LogFormat::Json => subscriber.json().try_init(),
        serve::LogFormat::Text => subscriber.try_init(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let server = serve::start(config).await?;
        eprintln!("gatekeeper serving on http://{}", server.addr);
        if let Some(admin) = server.admin_addr {
            eprintln!("admin routes on http://{admin}");
        }
        server.run_until_signal().await?;
        anyhow::Ok(0)
    })
}

fn audit_verify(
    paths: &[PathBuf],
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> anyhow::Result<u8> {
    match gatekeeper::verify(paths) {
        Ok(report) => {
            writeln!(
                stdout,
                "ok: {} records in {} files, head {}",
                report.records, report.files, report.head
            )?;
            Ok(0)
        }
        Err(e) => {
            writeln!(stderr, "error: audit trail does not verify: {e}")?;
            Ok(1)
        }
    }
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
