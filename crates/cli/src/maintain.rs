//! `gatekeeper test`, `diff` and `timeline`: the policy maintainers' commands, over the
//! `authoring` crate.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use policy::Instant;

use crate::PostureArgs;

/// Exit codes shared by the maintainers' commands.
const EXIT_CODES_TEST: &str = "Exit status:\n  0  every case passed (and, with --require-coverage, every item is exercised)\n  1  a case failed, or an item is not exercised under --require-coverage\n  2  a case file, folder or policy set could not be read or loaded";

#[derive(clap::Args, Debug)]
#[command(after_help = EXIT_CODES_TEST)]
pub(crate) struct TestArgs {
    /// Policy sets (folders with their cases in tests/*.jsonl), or folders of sets.
    #[arg(value_name = "DIR", default_value = "policies")]
    paths: Vec<PathBuf>,
    /// Report format.
    #[arg(long, value_parser = ["text", "json", "junit"], default_value = "text")]
    format: String,
    /// Write the report to this file instead of standard output.
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<PathBuf>,
    /// Rewrite failing cases with the current answers, for review with a diff.
    #[arg(long)]
    update: bool,
    /// Fail when a prohibition, change or window is exercised by no case.
    #[arg(long)]
    require_coverage: bool,
}

pub(crate) fn test(args: &TestArgs, stdout: &mut dyn Write) -> anyhow::Result<u8> {
    let report = authoring::cases::run(
        &args.paths,
        authoring::cases::Options {
            update: args.update,
        },
    );
    let text = match args.format.as_str() {
        "json" => report.to_json() + "\n",
        "junit" => report.to_junit(),
        _ => report.to_text(true),
    };
    emit(args.output.as_deref(), &text, stdout)?;
    Ok(if !report.problems.is_empty() {
        2
    } else if report.failed > 0 || args.require_coverage && !report.coverage.unexercised.is_empty()
    {
        1
    } else {
        0
    })
}

const EXIT_CODES_DIFF: &str = "Exit status:\n  0  the two versions answer every request alike\n  1  some answer changes\n  2  a version could not be read or loaded";

#[derive(clap::Args, Debug)]
#[command(after_help = EXIT_CODES_DIFF)]
pub(crate) struct DiffArgs {
    /// The old version: a folder of policy files, or a bundle (.json).
    #[arg(value_name = "OLD")]
    old: PathBuf,
    /// The new version: a folder of policy files, or a bundle (.json).
    #[arg(value_name = "NEW")]
    new: PathBuf,
    /// Report format: text for a terminal, markdown for a pull-request comment, json.
    #[arg(long, value_parser = ["text", "markdown", "json"], default_value = "text")]
    format: String,
    /// Write the report to this file instead of standard output.
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<PathBuf>,
}

pub(crate) fn diff(
    args: &DiffArgs,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> anyhow::Result<u8> {
    let load = |path: &Path, stderr: &mut dyn Write| match authoring::load(path) {
        Ok(l) => Ok(Some(l)),
        Err(e) => {
            writeln!(stderr, "error: {e}")?;
            Ok::<_, anyhow::Error>(None)
        }
    };
    let (Some(old), Some(new)) = (load(&args.old, stderr)?, load(&args.new, stderr)?) else {
        return Ok(2);
    };
    let report = authoring::diff::diff(
        &old.policy,
        &new.policy,
        &args.old.display().to_string(),
        &args.new.display().to_string(),
    );
    let text = match args.format.as_str() {
        "json" => report.to_json() + "\n",
        "markdown" => report.to_markdown(),
        _ => report.to_text(),
    };
    emit(args.output.as_deref(), &text, stdout)?;
    Ok(u8::from(report.changed))
}

const EXIT_CODES_TIMELINE: &str = "Exit status:\n  0  the picture was written\n  2  the policies could not be loaded, or the file written";

#[derive(clap::Args, Debug)]
#[command(after_help = EXIT_CODES_TIMELINE)]
pub(crate) struct TimelineArgs {
    #[command(flatten)]
    policies: crate::Policies,
    #[command(flatten)]
    posture: PostureArgs,
    /// svg (a picture) or html (a page with hover details and the instruments).
    #[arg(long, value_parser = ["svg", "html"], default_value = "svg")]
    format: String,
    /// Write to this file instead of standard output.
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<PathBuf>,
    /// Start of the time axis (2020-09-01 or an RFC 3339 instant).
    #[arg(long, value_name = "WHEN", value_parser = parse_when)]
    from: Option<Instant>,
    /// End of the time axis (2021-07-01 or an RFC 3339 instant).
    #[arg(long, value_name = "WHEN", value_parser = parse_when)]
    until: Option<Instant>,
    /// The heading.
    #[arg(long, default_value = "What is prohibited when")]
    title: String,
    /// events: stretches of time widen with the logarithm of their length, so that days
    /// of many orders stay visible beside years of calm; linear: time to scale.
    #[arg(long, value_parser = ["events", "linear"], default_value = "events")]
    scale: String,
}

fn parse_when(text: &str) -> Result<Instant, String> {
    if let Ok(at) = Instant::parse_rfc3339(text) {
        return Ok(at);
    }
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .and_then(|dt| Instant::from_utc(dt.and_utc()))
        .ok_or_else(|| format!("`{text}` is neither a date (2020-09-01) nor an RFC 3339 instant"))
}

pub(crate) fn timeline(
    args: &TimelineArgs,
    colour: bool,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> anyhow::Result<u8> {
    let Some(loaded) = crate::load_with(&args.policies, colour, stderr)? else {
        return Ok(2);
    };
    let mut options = authoring::timeline::Options {
        from: args.from,
        until: args.until,
        title: args.title.clone(),
        scale: if args.scale == "linear" {
            authoring::timeline::Scale::Linear
        } else {
            authoring::timeline::Scale::Events
        },
        ..Default::default()
    };
    args.posture.apply(&mut options.posture);
    let picture = authoring::timeline::build(&loaded.policy, &options);
    let text = if args.format == "html" {
        picture.to_html()
    } else {
        picture.to_svg()
    };
    emit(args.output.as_deref(), &text, stdout)?;
    Ok(0)
}

/// Writes a report to a file (whole or not at all) or to standard output.
pub(crate) fn emit(
    output: Option<&Path>,
    text: &str,
    stdout: &mut dyn Write,
) -> anyhow::Result<()> {
    match output {
        Some(path) => {
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            let mut tmp = tempfile::NamedTempFile::new_in(dir)
                .with_context(|| format!("writing `{}`", path.display()))?;
            // A report is for reading: not the temporary file's owner-only mode.
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt as _;
                tmp.as_file()
                    .set_permissions(std::fs::Permissions::from_mode(0o644))
                    .with_context(|| format!("writing `{}`", path.display()))?;
            }
            tmp.write_all(text.as_bytes())
                .with_context(|| format!("writing `{}`", path.display()))?;
            tmp.persist(path)
                .with_context(|| format!("writing `{}`", path.display()))?;
        }
        None => match stdout.write_all(text.as_bytes()) {
            // A reader that stopped early (`| head`) is not an error.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            other => other?,
        },
    }
    Ok(())
}
