//! `gatekeeper fmt` (the canonical layout of policy files) and `gatekeeper schema` (the
//! JSON Schema of the policy format, for editors).

use std::io::Write;
use std::path::PathBuf;

use authoring::fmt::{Mode, Status};

/// Arguments of `gatekeeper fmt`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Layout: key = value; one blank line before each [table] and [[table]] header; arrays on
one line when they fit in 100 columns and hold no comment, else one item per line with a
trailing comma; strings in double quotes; comments kept where they are; nothing reordered.
The formatted file must parse to the same TOML as the original, or it is not written.

Exit status:
  0  nothing to change, or every file formatted
  1  with --check: some file is not in the canonical layout
  2  an error: a file that is not valid TOML (file:line:column), cannot be read or
     written, or would change meaning; such files are left as they are")]
pub(crate) struct FmtArgs {
    /// Write nothing: list the files that would change, each with a diff.
    #[arg(long)]
    check: bool,
    /// Policy files, or folders: every *.toml file below them, sorted.
    #[arg(value_name = "PATH", default_value = "policies")]
    paths: Vec<PathBuf>,
}

/// Runs `gatekeeper fmt`; returns the exit code.
pub(crate) fn run(
    args: &FmtArgs,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> anyhow::Result<u8> {
    let mode = if args.check { Mode::Check } else { Mode::Write };
    let report = authoring::fmt::run(&args.paths, mode);
    let mut checked = 0;
    for file in &report.files {
        match file {
            Ok(outcome) => {
                checked += 1;
                match &outcome.status {
                    Status::Unchanged => {}
                    Status::Formatted => {
                        writeln!(stdout, "formatted {}", outcome.path.display())?;
                    }
                    Status::WouldChange { diff } => {
                        writeln!(stdout, "would reformat {}", outcome.path.display())?;
                        stdout.write_all(diff.as_bytes())?;
                    }
                }
            }
            Err(e) => writeln!(stderr, "error: {e}")?,
        }
    }
    let changed = report.changed().count();
    let errors = report.errors().count();
    if args.check && changed > 0 {
        writeln!(
            stderr,
            "{changed} of {checked} files not in the canonical layout; run `gatekeeper fmt` to rewrite them"
        )?;
    }
    if errors > 0 {
        writeln!(stderr, "{errors} files could not be formatted")?;
    }
    stdout.flush()?;
    Ok(report.exit_code())
}

/// Arguments of `gatekeeper schema`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Editors that read JSON Schema for TOML (Taplo, Even Better TOML) use it through the
.taplo.toml at the repository's root; the checked-in copy is schema/policy.schema.json:
  gatekeeper schema > schema/policy.schema.json")]
pub(crate) struct SchemaArgs {}

/// Runs `gatekeeper schema`: the JSON Schema on standard output.
pub(crate) fn schema(_: &SchemaArgs, stdout: &mut dyn Write) -> anyhow::Result<u8> {
    let text = serde_json::to_string_pretty(&policy::schema())?;
    writeln!(stdout, "{text}")?;
    stdout.flush()?;
    Ok(0)
}
