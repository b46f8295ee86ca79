//! `gatekeeper audit ...`: verify a trail (against checkpoints), prove that a record is in
//! it or that it only grew, and check such proofs without the trail.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Subcommand;
use gatekeeper::audit::{Checkpoint, Proof};
use gatekeeper::keys::VerifierKey;

/// The exit codes of every `audit` command.
pub(crate) const EXIT: &str = "\
Exit status:
  0  the trail verifies, the proof is printed, or the proof checks
  1  the trail does not verify, no proof can be made (no such record or tree size), or the
     proof does not check
  2  a usage error, or a file or key that cannot be read";

const VERIFY_EXIT: &str = "\
Exit status:
  0  the trail verifies (a torn tail is reported, not an error)
  1  it does not: the first malformed, missing, reordered, rewritten or cut record is named
  2  a usage error, or a key or checkpoint that cannot be read";

const PROVE_EXIT: &str = "\
Exit status:
  0  the proof is printed
  1  no proof can be made: no such record, decision id or tree size
  2  a usage error, or a trail that cannot be read";

const EXPORT_EXIT: &str = "\
Exit status:
  0  the trail verifies and is written
  1  it does not verify (the reason is given; nothing is written)
  2  a usage error, or a file that cannot be read or written";

const CHECK_PROOF_EXIT: &str = "\
Exit status:
  0  the proof checks against the signed checkpoints
  1  it does not
  2  a usage error, or a proof, checkpoint or key that cannot be read";

#[derive(Subcommand, Debug)]
pub(crate) enum AuditCommand {
    /// Check audit files (or folders of them, in order): every record well formed and in
    /// its place, the trail against its folder's checkpoints and the one given. A torn
    /// tail (a write cut by a crash) is reported, not an error.
    #[command(after_help = VERIFY_EXIT)]
    Verify {
        /// Audit files or folders.
        #[arg(value_name = "PATH", required = true)]
        paths: Vec<PathBuf>,
        #[command(flatten)]
        trust: TrailTrust,
    },
    /// Print a proof, as JSON, that a record is in the trail's tree (--index or --id), or
    /// that an earlier tree is a prefix of a later one (--from).
    #[command(after_help = PROVE_EXIT)]
    Prove {
        /// The trail's folder.
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        /// The record's position (its n).
        #[arg(long, value_name = "N", conflicts_with_all = ["id", "from"])]
        index: Option<u64>,
        /// The decision id the caller was given.
        #[arg(long, value_name = "DECISION_ID", conflicts_with = "from")]
        id: Option<String>,
        /// The tree size of the record's proof: by default the folder's latest checkpoint,
        /// if it covers the record, else the whole trail.
        #[arg(long, value_name = "N", conflicts_with = "from")]
        size: Option<u64>,
        /// The earlier tree's size, for a consistency proof.
        #[arg(long, value_name = "N")]
        from: Option<u64>,
        /// The later tree's size: by default the folder's latest checkpoint, else the whole
        /// trail.
        #[arg(long, value_name = "N", requires = "from")]
        to: Option<u64>,
    },
    /// Write a verified trail as a table, for gatekeeper replay and sql, or any tool that
    /// reads Parquet: a row per record, the request's columns and what was served. A trail
    /// that does not verify is refused with the reason, and nothing is written.
    #[command(after_help = EXPORT_EXIT)]
    Export {
        /// Audit files or folders, in order.
        #[arg(value_name = "PATH", required = true)]
        paths: Vec<PathBuf>,
        /// The Parquet file to write.
        #[arg(long, value_name = "FILE")]
        parquet: PathBuf,
        #[command(flatten)]
        trust: TrailTrust,
    },
    /// Check a proof from gatekeeper audit prove against signed checkpoints, without the
    /// trail.
    #[command(after_help = CHECK_PROOF_EXIT)]
    CheckProof {
        /// The proof (JSON), or - for standard input.
        #[arg(value_name = "PROOF")]
        proof: PathBuf,
        /// The signed checkpoint of the tree the proof is for (the later one, for a
        /// consistency proof).
        #[arg(long, value_name = "FILE")]
        checkpoint: PathBuf,
        /// The earlier signed checkpoint, for a consistency proof.
        #[arg(long, value_name = "FILE")]
        old_checkpoint: Option<PathBuf>,
        /// The operator's public key (a file, or the key itself).
        #[arg(long, value_name = "KEY")]
        key: String,
    },
}

pub(crate) fn run(
    command: AuditCommand,
    stdin: &mut dyn std::io::BufRead,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> anyhow::Result<u8> {
    match command {
        AuditCommand::Verify { paths, trust } => verify(&paths, &trust, stdout, stderr),
        AuditCommand::Prove {
            dir,
            index,
            id,
            size,
            from,
            to,
        } => prove(&dir, index, id.as_deref(), size, from, to, stdout, stderr),
        AuditCommand::Export {
            paths,
            parquet,
            trust,
        } => export(&paths, &parquet, &trust, stdout, stderr),
        AuditCommand::CheckProof {
            proof,
            checkpoint,
            old_checkpoint,
            key,
        } => check_proof(
            &proof,
            &checkpoint,
            old_checkpoint.as_deref(),
            &key,
            stdin,
            stdout,
            stderr,
        ),
    }
}

/// A public key given as text, or as the file holding it.
fn read_key(key: &str) -> anyhow::Result<VerifierKey> {
    if let Ok(k) = VerifierKey::parse(key) {
        return Ok(k);
    }
    let text = std::fs::read_to_string(key)
        .with_context(|| format!("`{key}` is neither a public key nor a readable key file"))?;
    VerifierKey::parse(&text).with_context(|| format!("reading the public key in `{key}`"))
}

fn read_checkpoint(path: &Path, key: &VerifierKey) -> anyhow::Result<Checkpoint> {
    let note = std::fs::read_to_string(path)
        .with_context(|| format!("reading the checkpoint `{}`", path.display()))?;
    Checkpoint::open(&note, key).with_context(|| format!("in `{}`", path.display()))
}

/// What a trail is verified against besides itself: a signed checkpoint kept elsewhere,
/// and the operator's key.
#[derive(clap::Args, Debug, Default, Clone)]
pub(crate) struct TrailTrust {
    /// A signed checkpoint kept outside the trail: records cut or rewritten since it was
    /// written are found. Needs --key.
    #[arg(long, value_name = "FILE", requires = "key")]
    checkpoint: Option<PathBuf>,
    /// The operator's public key (a file, or the key itself): the checkpoints must carry
    /// its signature.
    #[arg(long, value_name = "KEY")]
    key: Option<String>,
}

impl TrailTrust {
    /// Whether a checkpoint or a key was given.
    pub(crate) fn given(&self) -> bool {
        self.checkpoint.is_some() || self.key.is_some()
    }

    /// The checkpoints given and the key, read.
    pub(crate) fn read(&self) -> anyhow::Result<(Vec<Checkpoint>, Option<VerifierKey>)> {
        let key = self.key.as_deref().map(read_key).transpose()?;
        let given = match (&self.checkpoint, &key) {
            (Some(path), Some(key)) => vec![read_checkpoint(path, key)?],
            _ => Vec::new(),
        };
        Ok((given, key))
    }
}

fn verify(
    paths: &[PathBuf],
    trust: &TrailTrust,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> anyhow::Result<u8> {
    let (given, key) = trust.read()?;
    match gatekeeper::audit::verify_with(paths, &given, key.as_ref()) {
        Ok(report) => {
            write!(
                stdout,
                "ok: {} records in {} files, head {}",
                report.records, report.files, report.head
            )?;
            match report.checkpoints {
                0 => writeln!(stdout, "; no checkpoint to check against")?,
                n => writeln!(
                    stdout,
                    "; matches {n} checkpoints{} (the largest covers {} records)",
                    if key.is_some() {
                        ", signatures verified"
                    } else {
                        ", signatures not checked"
                    },
                    report.covered
                )?,
            }
            if let Some(torn) = &report.torn_tail {
                writeln!(
                    stdout,
                    "torn tail: {} bytes after the last complete record of {} (a write cut short by a crash, never acknowledged; cut when the trail is next opened)",
                    torn.bytes, torn.file
                )?;
            }
            Ok(0)
        }
        Err(e) => {
            writeln!(stderr, "error: audit trail does not verify: {e}")?;
            Ok(1)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn prove(
    dir: &Path,
    index: Option<u64>,
    id: Option<&str>,
    size: Option<u64>,
    from: Option<u64>,
    to: Option<u64>,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> anyhow::Result<u8> {
    let proof = match (from, index, id) {
        (Some(from), _, _) => gatekeeper::audit::prove_consistency(dir, from, to),
        (None, Some(index), _) => gatekeeper::audit::prove_inclusion(dir, index, size),
        (None, None, Some(id)) => {
            let records = gatekeeper::audit::read_records(&[dir])?;
            let Some(found) = records.iter().find(|r| r.id.as_deref() == Some(id)) else {
                writeln!(stderr, "error: no record of decision `{id}` in the trail")?;
                return Ok(1);
            };
            gatekeeper::audit::prove_inclusion(dir, found.n, size)
        }
        (None, None, None) => anyhow::bail!("give `--index`, `--id` or `--from`"),
    };
    match proof {
        Ok(proof) => {
            writeln!(stdout, "{}", serde_json::to_string_pretty(&proof)?)?;
            Ok(0)
        }
        Err(e) => {
            writeln!(stderr, "error: {e}")?;
            Ok(1)
        }
    }
}

fn check_proof(
    proof: &Path,
    checkpoint: &Path,
    old_checkpoint: Option<&Path>,
    key: &str,
    stdin: &mut dyn std::io::BufRead,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> anyhow::Result<u8> {
    let key = read_key(key)?;
    let text = if proof.as_os_str() == "-" {
        let mut text = String::new();
        stdin
            .read_to_string(&mut text)
            .context("reading the proof")?;
        text
    } else {
        std::fs::read_to_string(proof)
            .with_context(|| format!("reading the proof `{}`", proof.display()))?
    };
    let parsed: Proof = serde_json::from_str(&text).context("the proof is not a proof's JSON")?;
    let new = read_checkpoint(checkpoint, &key)?;
    let old = old_checkpoint
        .map(|p| read_checkpoint(p, &key))
        .transpose()?;
    match parsed.check(&new, old.as_ref()) {
        Ok(()) => {
            match &parsed {
                Proof::Inclusion(p) => writeln!(
                    stdout,
                    "ok: record #{} is in the tree of {} records signed by `{}`",
                    p.index,
                    p.size,
                    key.name()
                )?,
                Proof::Consistency(p) => writeln!(
                    stdout,
                    "ok: the tree of {} records is a prefix of the tree of {}, both signed by `{}`",
                    p.from,
                    p.to,
                    key.name()
                )?,
            }
            Ok(0)
        }
        Err(e) => {
            writeln!(stderr, "error: {e}")?;
            Ok(1)
        }
    }
}

fn export(
    paths: &[PathBuf],
    out: &Path,
    trust: &TrailTrust,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> anyhow::Result<u8> {
    let (given, key) = trust.read()?;
    // Verified first, apart, so that a trail that does not verify exits 1 with its reason.
    if let Err(e) = gatekeeper::audit::verify_with(paths, &given, key.as_ref()) {
        writeln!(
            stderr,
            "error: the audit trail does not verify: {e}; nothing was written"
        )?;
        return Ok(1);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    match runtime.block_on(replay::export_trail(paths, &given, key.as_ref(), out)) {
        Ok((report, rows)) => {
            writeln!(
                stdout,
                "wrote {rows} records of a verified trail ({} files, head {}) to {}",
                report.files,
                report.head,
                out.display()
            )?;
            Ok(0)
        }
        Err(e) => {
            writeln!(stderr, "error: {}", e.find_root().message())?;
            Ok(2)
        }
    }
}
