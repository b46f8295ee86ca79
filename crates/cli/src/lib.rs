//! The `gatekeeper` command line, as a library so that tests run it in-process.
//!
//! [`run`] writes plain text unless `--color always` is given; `main.rs` calls [`run_with`]
//! with the [`Terminal`] it runs on, so that `--color auto` (the default) colours
//! diagnostics on a terminal without `NO_COLOR`.
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
mod fmt;
mod maintain;
mod replay;
mod serve;

use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal as _, Write};
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use policy::{Policy, RequestRecord};

/// The widest help is written.
const HELP_WIDTH: usize = 100;

/// What the tool does, for `gatekeeper -h`.
const ABOUT: &str = "Decides whether an app store may serve a request for an app that a government has \
restricted, and says why, citing the legal instrument";

/// What the tool does and its command families, for `gatekeeper --help`.
const LONG_ABOUT: &str = "\
Gatekeeper decides, to the minute and by territory, whether an app store (or a host, CDN, \
transit provider, payment path or software vendor) may serve a request for an app that a \
government has restricted, and says why, citing the legal instrument. The instruments are \
TOML files in policy folders.

Command families:
  policies      validate a set; fmt, schema, test, diff and timeline for its maintainers
  decisions     check and explain JSON Lines requests
  distribution  bundle: pack, sign and verify policy bundles
  records       audit: verify the audit trail, prove records are in it, export it
  replay        replay and sql: decide request logs and the trail in Apache DataFusion
  service       serve: the decision sidecar over HTTP";

/// The exit codes of the commands, for `gatekeeper --help`.
const EXIT_STATUS: &str = "\
Exit status:
  0  success
  1  a problem was found: a policy that does not validate, a request line that cannot be
     decided, a bundle, audit trail or proof that does not verify, a test case that fails,
     an answer that differs between two versions, a file that fmt would change
  2  the command could not run: a usage error, policies that do not load (check, explain),
     a file that cannot be read or written, a service that cannot start

Each command's --help says which of these it uses.";

#[derive(Parser, Debug)]
#[command(
    name = "gatekeeper",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = EXIT_STATUS
)]
struct Cli {
    /// When to colour diagnostics: auto (when standard error is a terminal and NO_COLOR is
    /// not set), always or never.
    #[arg(long, global = true, value_enum, default_value_t = ColorWhen::Auto, value_name = "WHEN")]
    color: ColorWhen,
    #[command(subcommand)]
    command: Command,
}

/// `--color`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum ColorWhen {
    Auto,
    Always,
    Never,
}

/// What the output goes to: `--color auto` colours diagnostics when standard error is a
/// terminal and the `NO_COLOR` environment variable is not set to anything but the empty
/// string (<https://no-color.org>); help fits a terminal on standard output (up to 100
/// columns), and is 100 columns wide anywhere else. [`run`] assumes no terminal.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Terminal {
    /// Standard error is a terminal.
    pub stderr_is_terminal: bool,
    /// Standard output is a terminal.
    pub stdout_is_terminal: bool,
    /// `NO_COLOR` is set and not empty.
    pub no_color: bool,
}

impl Terminal {
    /// The process's own: its standard output and error, and its environment.
    pub fn detect() -> Terminal {
        Terminal {
            stderr_is_terminal: std::io::stderr().is_terminal(),
            stdout_is_terminal: std::io::stdout().is_terminal(),
            no_color: Terminal::no_color_set(std::env::var_os("NO_COLOR").as_deref()),
        }
    }

    /// Whether a value of `NO_COLOR` turns colour off: any but the empty one does.
    pub fn no_color_set(value: Option<&std::ffi::OsStr>) -> bool {
        value.is_some_and(|v| !v.is_empty())
    }

    fn colour(self, when: ColorWhen) -> bool {
        match when {
            ColorWhen::Always => true,
            ColorWhen::Never => false,
            ColorWhen::Auto => self.stderr_is_terminal && !self.no_color,
        }
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Load policy folders and report every problem at once.
    #[command(after_help = VALIDATE_EXIT)]
    Validate(ValidateArgs),
    /// Decide JSON Lines requests; write one JSON decision per line, in order, each as
    /// soon as its line is read.
    #[command(after_help = DECIDE_EXIT)]
    Check(WithInput),
    /// Decide JSON Lines requests and explain each decision in plain English.
    #[command(after_help = DECIDE_EXIT)]
    Explain(WithInput),
    /// Policy bundles: policy files packed with a manifest, signed and verified.
    #[command(subcommand, after_help = bundle::EXIT)]
    Bundle(bundle::BundleCommand),
    /// The audit trail: verify it, prove a record is in it, check a proof.
    #[command(subcommand, after_help = audit::EXIT)]
    Audit(audit::AuditCommand),
    /// Replay request logs or the audit trail under a new policy (or posture): what would
    /// it have answered, and where does that differ from a baseline or from what was
    /// served? A report by app, action, region and day (Markdown, and JSON on request).
    #[command(after_help = replay::REPLAY_EXIT)]
    Replay(Box<replay::ReplayArgs>),
    /// Ad-hoc SQL (Apache DataFusion) over request logs and the audit trail, with the
    /// decision functions of the policies given.
    #[command(after_help = replay::SQL_EXIT)]
    Sql(Box<replay::SqlArgs>),
    /// Run the sidecar decision service over HTTP (with an Envoy ext_authz endpoint).
    #[command(after_help = serve::EXIT)]
    Serve(Box<serve::ServeArgs>),
    /// Run the test cases kept beside the policies (<set>/tests/*.jsonl).
    Test(maintain::TestArgs),
    /// Show how the answers differ between two versions of a policy set.
    Diff(maintain::DiffArgs),
    /// Draw what is prohibited when, as SVG or an HTML page.
    Timeline(maintain::TimelineArgs),
    /// Rewrite policy files in the canonical layout, comments kept.
    ///
    /// With --check, write nothing: list the files that would change, and exit 1 if any
    /// would.
    Fmt(fmt::FmtArgs),
    /// Print the JSON Schema of policy files, for editors.
    Schema(fmt::SchemaArgs),
}

const VALIDATE_EXIT: &str = "\
Exit status:
  0  the policies are valid
  1  a problem was found (each is reported), or a folder cannot be read
  2  a usage error, or the output cannot be written";

const DECIDE_EXIT: &str = "\
Exit status:
  0  every request line was decided
  1  a line could not be decided (its answer is an error line; the others are decided)
  2  the policies do not load (nothing is decided), a usage error, or the input cannot be
     read";

// No doc comment: clap would show it in place of the command's.
#[derive(clap::Args, Debug)]
struct ValidateArgs {
    #[command(flatten)]
    policies: Policies,
    /// How to report: text (diagnostics on standard error) or json (one JSON document on
    /// standard output, with every problem or, when there is none, a summary).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// `validate --format`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Text,
    Json,
}

#[derive(clap::Args, Debug)]
struct Policies {
    /// A folder of policy files (*.toml), or one file; repeat for several sets.
    #[arg(long = "policies", value_name = "DIR", required = true)]
    policies: Vec<PathBuf>,
}

/// The operator's posture where the law leaves room.
#[derive(clap::Args, Debug, Default)]
pub(crate) struct PostureArgs {
    /// How to read instants the law leaves open: conservative (never early to serve; the
    /// default) or permissive.
    #[arg(long, value_parser = ["conservative", "permissive"])]
    posture: Option<String>,
    /// Whether executive non-enforcement orders count as relief: honour (the default) or
    /// ignore (deny, naming the order set aside).
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
    /// JSON Lines requests; - or nothing reads standard input.
    #[arg(value_name = "FILE|-")]
    input: Option<PathBuf>,
}

/// Runs the command line; returns the process exit code: 0 success, 1 a bad policy
/// (validate, bundle build), a bad request line (check, explain) or something that does
/// not verify (bundle verify, audit), 2 policies that fail to load (check, explain), a
/// service that cannot start (serve), or a usage or I/O error.
///
/// `--color auto` writes plain text here, as if standard error were not a terminal: see
/// [`run_with`].
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
    run_with(args, stdin, stdout, stderr, Terminal::default())
}

/// [`run`], with what `--color auto` goes by: diagnostics are coloured when `terminal`
/// says standard error is a terminal and `NO_COLOR` is not set.
pub fn run_with<I, T>(
    args: I,
    stdin: &mut dyn BufRead,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
    terminal: Terminal,
) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let mut command = Cli::command().max_term_width(HELP_WIDTH);
    if !terminal.stdout_is_terminal {
        // The same help whatever terminal the process was started from.
        command = command.term_width(HELP_WIDTH);
    }
    let parsed = command
        .try_get_matches_from(args)
        .and_then(|matches| Cli::from_arg_matches(&matches));
    let cli = match parsed {
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
    let colour = terminal.colour(cli.color);
    let result = match cli.command {
        Command::Validate(v) => validate(&v, colour, stdout, stderr),
        Command::Check(w) => decide_lines(&w, Mode::Check, colour, stdin, stdout, stderr),
        Command::Explain(w) => decide_lines(&w, Mode::Explain, colour, stdin, stdout, stderr),
        Command::Bundle(command) => bundle::run(command, colour, stdout, stderr),
        Command::Audit(command) => audit::run(command, stdin, stdout, stderr),
        Command::Serve(args) => serve::run(*args, stdout),
        Command::Replay(args) => replay::replay(&args, stdout, stderr),
        Command::Sql(args) => replay::sql(&args, stdout, stderr),
        Command::Test(args) => maintain::test(&args, stdout),
        Command::Diff(args) => maintain::diff(&args, stdout, stderr),
        Command::Timeline(args) => maintain::timeline(&args, colour, stdout, stderr),
        Command::Fmt(args) => fmt::run(&args, stdout, stderr),
        Command::Schema(args) => fmt::schema(&args, stdout),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(stderr, "error: {e:#}");
            2
        }
    }
}

/// Loads policy folders; on failure writes every diagnostic (coloured if `colour`) and a
/// closing line, and returns `None`.
fn load_with(
    p: &Policies,
    colour: bool,
    stderr: &mut dyn Write,
) -> anyhow::Result<Option<gatekeeper::LoadedPolicy>> {
    match gatekeeper::load_dirs(&p.policies) {
        Ok(loaded) => Ok(Some(loaded)),
        Err(diagnostics) => {
            write_diagnostics(&diagnostics, "nothing was loaded", colour, stderr)?;
            Ok(None)
        }
    }
}

/// Every diagnostic, then ``error: 3 problems in the policies; {outcome}``.
pub(crate) fn write_diagnostics(
    diagnostics: &policy::Diagnostics,
    outcome: &str,
    colour: bool,
    stderr: &mut dyn Write,
) -> std::io::Result<()> {
    if colour {
        stderr.write_all(diagnostics.render_styled().as_bytes())?;
        // The renderer's style for `error`: bold bright red, then bold for the message.
        writeln!(
            stderr,
            "\u{1b}[1m\u{1b}[91merror\u{1b}[0m\u{1b}[1m: {diagnostics}; {outcome}\u{1b}[0m"
        )
    } else {
        stderr.write_all(diagnostics.render().as_bytes())?;
        writeln!(stderr, "error: {diagnostics}; {outcome}")
    }
}

fn validate(
    v: &ValidateArgs,
    colour: bool,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> anyhow::Result<u8> {
    let loaded = gatekeeper::load_dirs(&v.policies.policies);
    if v.format == Format::Json {
        let (document, code) = match &loaded {
            Ok(loaded) => (validation_json(&[], Some(summary(loaded))), 0),
            Err(diagnostics) => (validation_json(&diagnostics.0, None), 1),
        };
        writeln!(stdout, "{}", serde_json::to_string_pretty(&document)?)?;
        return Ok(code);
    }
    let loaded = match loaded {
        Ok(loaded) => loaded,
        Err(diagnostics) => {
            write_diagnostics(&diagnostics, "nothing was loaded", colour, stderr)?;
            return Ok(1);
        }
    };
    let s = summary(&loaded);
    writeln!(
        stdout,
        "ok: {} files, {} instruments, {} regions, {} apps, {} prohibitions, {} changes",
        s.files, s.instruments, s.regions, s.apps, s.prohibitions, s.changes
    )?;
    Ok(0)
}

/// What a valid set holds.
#[derive(serde::Serialize)]
struct Summary {
    files: usize,
    instruments: usize,
    regions: usize,
    apps: usize,
    prohibitions: usize,
    changes: usize,
}

fn summary(loaded: &gatekeeper::LoadedPolicy) -> Summary {
    let policy = &loaded.policy;
    Summary {
        files: loaded.files.len(),
        instruments: policy.instruments().len(),
        regions: policy.regions().len(),
        apps: policy.apps().len(),
        prohibitions: policy.prohibitions().len(),
        changes: policy.changes().len(),
    }
}

/// `validate --format json`: `{"ok", "problems": [...], "summary": {...} | null}`, each
/// problem in the policy crate's JSON form of a diagnostic (fields in their order).
#[derive(serde::Serialize)]
struct Validation<'d> {
    ok: bool,
    problems: &'d [policy::Diagnostic],
    summary: Option<Summary>,
}

fn validation_json(problems: &[policy::Diagnostic], summary: Option<Summary>) -> Validation<'_> {
    Validation {
        ok: problems.is_empty(),
        problems,
        summary,
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
    colour: bool,
    stdin: &mut dyn BufRead,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> anyhow::Result<u8> {
    let Some(loaded) = load_with(&w.policies, colour, stderr)? else {
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
    let mut lines = Lines::new(input);
    let mut bad = false;
    let mut number = 0usize;
    let mut first = true;
    // Whatever has been decided is written out before any read that may block, so that a
    // co-process sees each answer before it sends the next request.
    while let Some(line) = lines.next(stdout).context("reading requests")? {
        number += 1;
        let answer = match std::str::from_utf8(line) {
            Ok(text) if text.trim().is_empty() => continue,
            Ok(text) => decide_line(&loaded.policy, text.trim(), mode, posture),
            Err(e) => Err(format!(
                "not UTF-8: byte {} of the line is not part of a UTF-8 character",
                e.valid_up_to() + 1
            )),
        };
        if mode == Mode::Explain && !first {
            writeln!(stdout)?;
        }
        match answer {
            Ok(out) => writeln!(stdout, "{out}")?,
            Err(message) => {
                bad = true;
                let error = format!("line {number}: {message}");
                writeln!(stdout, "{}", serde_json::json!({ "error": error }))?;
            }
        }
        first = false;
    }
    stdout.flush()?;
    Ok(u8::from(bad))
}

/// Lines of bytes from a reader, each decoded by the caller (a line that is not UTF-8 is
/// one bad line, not the end of the input).
struct Lines<'r> {
    input: &'r mut dyn BufRead,
    line: Vec<u8>,
    /// Bytes known to be left in the reader's buffer: while there are some, the next
    /// line starts without a read that could block.
    buffered: usize,
}

impl<'r> Lines<'r> {
    fn new(input: &'r mut dyn BufRead) -> Lines<'r> {
        Lines {
            input,
            line: Vec::new(),
            buffered: 0,
        }
    }

    /// The next line without its line end, or `None` at the end of the input. `out` is
    /// flushed before any read from the input itself (once per buffer of input, not once
    /// per line).
    fn next(&mut self, out: &mut dyn Write) -> std::io::Result<Option<&[u8]>> {
        self.line.clear();
        loop {
            if self.buffered == 0 {
                out.flush()?;
            }
            let available = match self.input.fill_buf() {
                Ok(available) => available,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if available.is_empty() {
                self.buffered = 0;
                let done = self.line.is_empty();
                return Ok((!done).then_some(self.line.as_slice()));
            }
            let (taken, ended) = match available.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (available.len(), false),
            };
            self.line.extend_from_slice(&available[..taken]);
            self.buffered = available.len() - taken;
            self.input.consume(taken);
            if ended {
                self.line.pop();
                return Ok(Some(self.line.as_slice()));
            }
        }
    }
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
