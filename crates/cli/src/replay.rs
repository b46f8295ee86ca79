//! `gatekeeper replay` and `gatekeeper sql`: Gatekeeper's decision function inside
//! Apache DataFusion (or a Ballista cluster), over request logs and the audit trail.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context as _;
use replay::replay::{Baseline, ReplaySpec};
use replay::session::{Engine, Inputs, Session};

pub(crate) const REPLAY_EXIT: &str = "\
Exit status:
  0  no answer changed and every row was a request
  1  answers changed, or rows were malformed (each is reported with its file and row)
  2  a usage error, policies that do not load, an input that cannot be read, or an audit
     trail that does not verify (refused with the reason)";

pub(crate) const SQL_EXIT: &str = "\
Exit status:
  0  the query ran and its rows are printed
  2  a usage error, policies that do not load, an input that cannot be read, a query that
     fails, or an audit trail that does not verify";

/// Where the queries run.
#[derive(clap::Args, Debug)]
pub(crate) struct EngineArgs {
    /// A Ballista cluster's scheduler (df://host:port) to run on; its executors must hold
    /// the policies' bundles (gatekeeper-cluster executor --bundle FILE).
    #[arg(long, value_name = "URL", conflicts_with = "standalone")]
    scheduler: Option<String>,
    /// Run on a Ballista scheduler and executor started in this process.
    #[arg(long)]
    standalone: bool,
    /// Partitions (threads) of the query; by default, the machine's cores.
    #[arg(long, value_name = "N", default_value_t = 0)]
    partitions: usize,
}

impl EngineArgs {
    fn engine(&self) -> Engine {
        match (&self.scheduler, self.standalone) {
            (Some(url), _) => Engine::Remote(url.clone()),
            (None, true) => Engine::Standalone,
            (None, false) => Engine::Local,
        }
    }
}

/// The inputs, by kind.
#[derive(clap::Args, Debug)]
pub(crate) struct InputArgs {
    /// Request logs: Parquet files or folders (*.parquet), JSON Lines files (*.jsonl,
    /// *.ndjson, *.json: the gatekeeper check format).
    #[arg(value_name = "LOG")]
    logs: Vec<PathBuf>,
    /// An audit trail (files or folders, in order): verified, then read as requests with
    /// what was served.
    #[arg(long, value_name = "PATH")]
    trail: Vec<PathBuf>,
    #[command(flatten)]
    trust: crate::audit::TrailTrust,
}

impl InputArgs {
    fn inputs(&self) -> anyhow::Result<Inputs> {
        let mut inputs = Inputs::default();
        for p in &self.logs {
            inputs
                .add_by_name(p.clone())
                .map_err(|e| anyhow::anyhow!("{}", said(&e)))?;
        }
        inputs.trail = self.trail.clone();
        if self.trail.is_empty() && self.trust.given() {
            anyhow::bail!("--checkpoint and --key verify an audit trail: give it with --trail");
        }
        (inputs.trail_checkpoints, inputs.trail_key) = self.trust.read()?;
        Ok(inputs)
    }
}

// No doc comment: clap would show it in place of the command's.
#[derive(clap::Args, Debug)]
pub(crate) struct ReplayArgs {
    /// The new policy: a folder of policy files, or a bundle.
    #[arg(long = "policies", value_name = "NEW")]
    policies: PathBuf,
    /// The policy to compare with (by default, the new one: compare postures with
    /// --baseline-posture, or what was served with --trail).
    #[arg(long, value_name = "OLD")]
    baseline: Option<PathBuf>,
    #[command(flatten)]
    posture: crate::PostureArgs,
    /// The baseline's reading of open instants (by default, the new one's).
    #[arg(long, value_parser = ["conservative", "permissive"])]
    baseline_posture: Option<String>,
    /// The baseline's reading of non-enforcement orders (by default, the new one's).
    #[arg(long, value_parser = ["honour", "ignore"])]
    baseline_non_enforcement: Option<String>,
    #[command(flatten)]
    inputs: InputArgs,
    /// Also write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write every changed decision to this Parquet file.
    #[arg(long, value_name = "FILE")]
    changed: Option<PathBuf>,
    /// How many rows each table of the Markdown report lists.
    #[arg(long, value_name = "N", default_value_t = 20)]
    shown: usize,
    #[command(flatten)]
    engine: EngineArgs,
}

/// `sql --format`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SqlFormat {
    Table,
    Csv,
    Json,
}

// No doc comment: clap would show it in place of the command's.
#[derive(clap::Args, Debug)]
pub(crate) struct SqlArgs {
    /// A decision function: NAME=PATH (a folder of policy files or a bundle), or PATH for
    /// the name `decide`; repeat for several, side by side. Call it with the request
    /// columns: NAME(app_platform, app_id, action, at, storefront, device_country,
    /// ip_country, billing_country, server_country[, known_at, publisher_store,
    /// publisher_id, signing_cert_sha256, code_sha256]).
    #[arg(long = "policies", value_name = "NAME=PATH")]
    policies: Vec<String>,
    #[command(flatten)]
    posture: crate::PostureArgs,
    /// The query. The inputs are the table `requests` (see gatekeeper replay --help).
    #[arg(long, short = 'q', value_name = "SQL")]
    query: String,
    #[command(flatten)]
    inputs: InputArgs,
    /// How to print rows: table, csv or json (JSON Lines).
    #[arg(long, value_enum, default_value_t = SqlFormat::Table)]
    format: SqlFormat,
    #[command(flatten)]
    engine: EngineArgs,
}

/// Runs `work` on a query runtime, then shuts the runtime down, giving what it still
/// runs (a Ballista cluster's servers in this process) a bounded time to stop.
fn on_runtime<T>(work: impl std::future::Future<Output = T>) -> anyhow::Result<T> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the query runtime")?;
    let out = runtime.block_on(work);
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    Ok(out)
}

fn posture_of(
    args: &crate::PostureArgs,
    boundaries: Option<&str>,
    non_enforcement: Option<&str>,
) -> policy::Posture {
    let mut posture = policy::Posture::default();
    args.apply(&mut posture);
    if let Some(b) = boundaries.and_then(policy::Boundaries::parse) {
        posture.boundaries = b;
    }
    if let Some(n) = non_enforcement.and_then(policy::NonEnforcement::parse) {
        posture.non_enforcement = n;
    }
    posture
}

pub(crate) fn replay(
    args: &ReplayArgs,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> anyhow::Result<u8> {
    let new = match replay::load_policy(&args.policies) {
        Ok(p) => p,
        Err(e) => {
            writeln!(stderr, "error: {e:#}")?;
            return Ok(2);
        }
    };
    let old = match &args.baseline {
        Some(path) => match replay::load_policy(path) {
            Ok(p) => Some(p),
            Err(e) => {
                writeln!(stderr, "error: {e:#}")?;
                return Ok(2);
            }
        },
        None => None,
    };
    let inputs = args.inputs.inputs()?;
    let posture = posture_of(&args.posture, None, None);
    let baseline_posture = posture_of(
        &args.posture,
        args.baseline_posture.as_deref(),
        args.baseline_non_enforcement.as_deref(),
    );
    let served = old.is_none() && baseline_posture == posture;
    if served && inputs.trail.is_empty() {
        writeln!(
            stderr,
            "error: nothing to compare with: give --baseline OLD, a baseline posture, or an \
             audit trail (--trail) to compare with what was served"
        )?;
        return Ok(2);
    }
    let spec = ReplaySpec {
        new: "decide".to_owned(),
        baseline: if served {
            Baseline::Served
        } else {
            Baseline::Function("decide_baseline".to_owned())
        },
        changed_parquet: args.changed.clone(),
        shown: args.shown,
    };
    let report = on_runtime(async {
        let mut session = Session::new(args.engine.engine(), args.engine.partitions).await?;
        session.add_policy("decide", new.clone(), posture)?;
        if !served {
            session.add_policy(
                "decide_baseline",
                old.clone().unwrap_or_else(|| new.clone()),
                baseline_posture,
            )?;
        }
        session.add_inputs(&inputs).await?;
        replay::replay::replay(&session, &spec).await
    })?;
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            writeln!(stderr, "error: {}", said(&e))?;
            return Ok(2);
        }
    };
    stdout.write_all(report.markdown(args.shown).as_bytes())?;
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)? + "\n";
        crate::maintain::emit(Some(path), &text, stdout)?;
    }
    Ok(u8::from(report.changed > 0 || report.malformed_rows > 0))
}

pub(crate) fn sql(
    args: &SqlArgs,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> anyhow::Result<u8> {
    let posture = posture_of(&args.posture, None, None);
    let mut functions = Vec::new();
    for given in &args.policies {
        let (name, path) = match given.split_once('=') {
            Some((name, path)) => (name.to_owned(), PathBuf::from(path)),
            None => ("decide".to_owned(), PathBuf::from(given)),
        };
        match replay::load_policy(&path) {
            Ok(p) => functions.push((name, p)),
            Err(e) => {
                writeln!(stderr, "error: {e:#}")?;
                return Ok(2);
            }
        }
    }
    let inputs = args.inputs.inputs()?;
    let format = args.format;
    let result = on_runtime(async {
        let mut session = Session::new(args.engine.engine(), args.engine.partitions).await?;
        for (name, loaded) in &functions {
            session.add_policy(name, loaded.clone(), posture)?;
        }
        if !inputs.is_empty() {
            session.add_inputs(&inputs).await?;
        }
        let mut first = true;
        let mut failed: Option<std::io::Error> = None;
        replay::replay::stream_sql(&session, &args.query, |batch| {
            let written = write_batch(batch, format, first, stdout);
            first = false;
            if let Err(e) = written {
                failed = Some(e);
                return Err(datafusion_error("writing the rows"));
            }
            Ok(())
        })
        .await
        .map_err(|e| match failed.take() {
            Some(io) => anyhow::Error::new(io).context("writing the rows"),
            None => anyhow::Error::new(e),
        })
    })?;
    match result {
        Ok(()) => Ok(0),
        Err(e) => {
            match e.downcast_ref::<replay::datafusion::common::DataFusionError>() {
                Some(d) => writeln!(stderr, "error: {}", said(d))?,
                None => writeln!(stderr, "error: {e:#}")?,
            }
            Ok(2)
        }
    }
}

/// What went wrong, without DataFusion's wrapping ("Execution error: ...").
fn said(e: &replay::datafusion::common::DataFusionError) -> String {
    e.find_root().message().into_owned()
}

fn datafusion_error(what: &str) -> replay::datafusion::common::DataFusionError {
    replay::datafusion::common::DataFusionError::Execution(what.to_owned())
}

fn write_batch(
    batch: &replay::datafusion::arrow::array::RecordBatch,
    format: SqlFormat,
    first: bool,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let other =
        |e: replay::datafusion::arrow::error::ArrowError| std::io::Error::other(e.to_string());
    match format {
        SqlFormat::Table => {
            let text = replay::datafusion::arrow::util::pretty::pretty_format_batches(
                std::slice::from_ref(batch),
            )
            .map_err(other)?;
            writeln!(out, "{text}")
        }
        SqlFormat::Csv => {
            let mut w = replay::datafusion::arrow::csv::WriterBuilder::new()
                .with_header(first)
                .build(&mut *out);
            w.write(batch).map_err(other)
        }
        SqlFormat::Json => {
            let mut w = replay::datafusion::arrow::json::LineDelimitedWriter::new(&mut *out);
            w.write(batch).map_err(other)?;
            w.finish().map_err(other)
        }
    }
}
