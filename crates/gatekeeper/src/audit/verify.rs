//! Reading a trail back: verification against its own and given checkpoints, inclusion
//! and consistency proofs, and the records themselves.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use super::checkpoint::Checkpoint;
use super::merkle::{self, Frontier, Hash, leaf_hash};
use super::record::Record;
use super::writer::hex;
use super::{CHECKPOINT_FILE, CHECKPOINT_LOG, files_in};
use crate::keys::VerifierKey;

/// What kind of problem a trail has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Problem {
    /// A file could not be read.
    Unreadable,
    /// A record is not a well-formed record, or a file other than the newest ends
    /// inside one.
    Malformed,
    /// A record is not where its number says: missing, reordered or inserted records.
    Sequence,
    /// Records no longer hash to a checkpoint's root: changed since it was written.
    Rewritten,
    /// The trail holds fewer records than a checkpoint covers.
    Truncated,
    /// A checkpoint in the trail's folder does not verify.
    Checkpoint,
}

/// The first thing in a trail that does not verify.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VerifyError {
    pub problem: Problem,
    /// The record's position (its leaf index, from 0).
    pub index: u64,
    /// The file, and the 1-based line in it; empty and 0 when no one record is at fault.
    pub file: String,
    pub line: usize,
    pub reason: String,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.file.is_empty() {
            write!(f, "{}", self.reason)
        } else {
            write!(
                f,
                "record #{} ({}:{}): {}",
                self.index, self.file, self.line, self.reason
            )
        }
    }
}

impl std::error::Error for VerifyError {}

/// Bytes after the last complete record of the newest file: a write cut short by a crash.
/// The writer cuts them when it next opens the trail; they were never acknowledged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TornTail {
    pub file: String,
    pub bytes: u64,
}

/// A verified trail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Complete records.
    pub records: u64,
    pub files: usize,
    /// The Merkle tree's root over them, in hex.
    pub head: String,
    /// Checkpoints the trail was checked against, and the largest size among them.
    pub checkpoints: usize,
    pub covered: u64,
    /// A torn last record, if there is one.
    pub torn_tail: Option<TornTail>,
}

fn error(problem: Problem, index: u64, file: &Path, line: usize, reason: String) -> VerifyError {
    VerifyError {
        problem,
        index,
        file: file.display().to_string(),
        line,
        reason,
    }
}

fn whole(problem: Problem, index: u64, reason: String) -> VerifyError {
    VerifyError {
        problem,
        index,
        file: String::new(),
        line: 0,
        reason,
    }
}

/// Files in the order given, folders expanded to their `audit-NNNNNN.jsonl` files; and
/// the folders.
fn expand<P: AsRef<Path>>(paths: &[P]) -> Result<(Vec<PathBuf>, Vec<PathBuf>), VerifyError> {
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    for p in paths {
        let p = p.as_ref();
        if p.is_dir() {
            let found =
                files_in(p).map_err(|e| error(Problem::Unreadable, 0, p, 0, e.to_string()))?;
            files.extend(found.into_iter().map(|(_, f)| f));
            dirs.push(p.to_path_buf());
        } else {
            files.push(p.to_path_buf());
        }
    }
    Ok((files, dirs))
}

/// Calls `each(file, line number, bytes)` for every complete record in order; returns the
/// torn tail of the last file, if any.
fn for_each_line(
    files: &[PathBuf],
    mut each: impl FnMut(&Path, usize, &[u8]) -> Result<(), VerifyError>,
    mut index: impl FnMut() -> u64,
) -> Result<Option<TornTail>, VerifyError> {
    let mut torn = None;
    for (fi, file) in files.iter().enumerate() {
        let bytes = std::fs::read(file).map_err(|e| {
            error(
                Problem::Unreadable,
                index(),
                file,
                0,
                format!("cannot read: {e}"),
            )
        })?;
        let mut rest = bytes.as_slice();
        let mut line_no = 0;
        while !rest.is_empty() {
            line_no += 1;
            let Some(end) = rest.iter().position(|&b| b == b'\n') else {
                if fi + 1 == files.len() {
                    torn = Some(TornTail {
                        file: file.display().to_string(),
                        bytes: rest.len() as u64,
                    });
                    break;
                }
                return Err(error(
                    Problem::Malformed,
                    index(),
                    file,
                    line_no,
                    "record is cut short (no line end) in a file that is not the newest".to_owned(),
                ));
            };
            each(file, line_no, &rest[..end])?;
            rest = &rest[end + 1..];
        }
    }
    Ok(torn)
}

/// A checkpoint with where it was found, or why it does not verify.
type Found = Result<(Checkpoint, String), VerifyError>;

/// The checkpoints kept in a trail's folder. With a key, each must carry its valid
/// signature.
fn folder_checkpoints(dir: &Path, key: Option<&VerifierKey>) -> Result<Vec<Found>, VerifyError> {
    let mut notes = Vec::new();
    let log = dir.join(CHECKPOINT_LOG);
    if let Ok(text) = std::fs::read_to_string(&log) {
        for (i, line) in text.split_inclusive('\n').enumerate() {
            if !line.ends_with('\n') {
                break; // torn by a crash; the writer cuts it
            }
            #[derive(Deserialize)]
            struct Line {
                note: String,
            }
            let parsed: Line = serde_json::from_str(line).map_err(|e| {
                error(
                    Problem::Checkpoint,
                    0,
                    &log,
                    i + 1,
                    format!("not a checkpoint line: {e}"),
                )
            })?;
            notes.push((parsed.note, format!("{}:{}", log.display(), i + 1)));
        }
    }
    let latest = dir.join(CHECKPOINT_FILE);
    if let Ok(text) = std::fs::read_to_string(&latest) {
        notes.push((text, latest.display().to_string()));
    }
    Ok(notes
        .into_iter()
        .map(|(note, source)| {
            let parsed = match key {
                Some(key) => Checkpoint::open(&note, key),
                None => Checkpoint::parse_unverified(&note),
            };
            parsed.map(|c| (c, source.clone())).map_err(|e| {
                whole(
                    Problem::Checkpoint,
                    0,
                    format!("checkpoint `{source}` does not verify: {e}"),
                )
            })
        })
        .collect())
}

/// Verifies a trail: files in the order given, folders expanded to their files, against
/// the checkpoints kept in the folders. See [`verify_with`].
pub fn verify<P: AsRef<Path>>(paths: &[P]) -> Result<VerifyReport, VerifyError> {
    verify_with(paths, &[], None)
}

/// Verifies a trail against the checkpoints given (read with [`Checkpoint::open`]) and
/// those kept in its folders (whose signatures are checked when `key` is given):
///
/// - every record is well formed and numbered by its position: a missing, reordered or
///   inserted record is named;
/// - the first records hash to each checkpoint's root: a record changed since is found
///   (between two checkpoints), however the rest of the trail was recomputed;
/// - the trail holds at least as many records as each checkpoint: a tail cut at a line
///   end or a deleted newest file is found;
/// - bytes after the last line end of the newest file are reported as a torn tail, not
///   as an error.
pub fn verify_with<P: AsRef<Path>>(
    paths: &[P],
    checkpoints: &[Checkpoint],
    key: Option<&VerifierKey>,
) -> Result<VerifyReport, VerifyError> {
    let (files, dirs) = expand(paths)?;
    let mut all: Vec<(Checkpoint, String)> = checkpoints
        .iter()
        .map(|c| (c.clone(), "given".to_owned()))
        .collect();
    // A checkpoint that does not verify is reported after the records, which say more.
    let mut refused = None;
    for dir in &dirs {
        for found in folder_checkpoints(dir, key)? {
            match found {
                Ok(c) => all.push(c),
                Err(e) => {
                    refused.get_or_insert(e);
                }
            }
        }
    }
    all.sort_by_key(|(c, _)| c.size);
    // The latest checkpoint is also the last of the log: each tree head once.
    all.dedup_by(|(a, _), (b, _)| a.size == b.size && a.root == b.root);
    let mut next = 0;
    let mut good = 0u64;
    let mut tree = Frontier::default();
    let mut check_due = |tree: &Frontier, next: &mut usize| -> Result<(), VerifyError> {
        while let Some((c, source)) = all.get(*next).filter(|(c, _)| c.size == tree.size()) {
            if c.root != tree.root() {
                return Err(whole(
                    Problem::Rewritten,
                    good,
                    format!(
                        "the first {} records do not hash to the root of checkpoint `{source}`: a record among #{good} to #{} was changed, removed or inserted since it was written",
                        c.size,
                        c.size.saturating_sub(1)
                    ),
                ));
            }
            good = c.size;
            *next += 1;
        }
        Ok(())
    };
    check_due(&tree, &mut next)?;
    let size = std::cell::Cell::new(0u64);
    let torn = for_each_line(
        &files,
        |file, line_no, bytes| {
            let index = tree.size();
            let record: Record = serde_json::from_slice(bytes).map_err(|e| {
                error(
                    Problem::Malformed,
                    index,
                    file,
                    line_no,
                    format!("not a valid record: {e}"),
                )
            })?;
            record
                .check_shape()
                .map_err(|m| error(Problem::Malformed, index, file, line_no, m))?;
            if record.n != index {
                return Err(error(
                    Problem::Sequence,
                    index,
                    file,
                    line_no,
                    format!(
                        "record says it is #{} where #{index} was due: a record is missing, out of order or inserted",
                        record.n
                    ),
                ));
            }
            tree.push(leaf_hash(bytes));
            size.set(tree.size());
            check_due(&tree, &mut next)
        },
        || size.get(),
    )?;
    if let Some((c, source)) = all.get(next) {
        return Err(whole(
            Problem::Truncated,
            tree.size(),
            format!(
                "the trail holds {} records but checkpoint `{source}` covers {}: records #{} to #{} were removed (a cut tail or a deleted file)",
                tree.size(),
                c.size,
                tree.size(),
                c.size - 1
            ),
        ));
    }
    if let Some(e) = refused {
        return Err(e);
    }
    Ok(VerifyReport {
        records: tree.size(),
        files: files.len(),
        head: hex(&tree.root()),
        checkpoints: all.len(),
        covered: all.last().map_or(0, |(c, _)| c.size),
        torn_tail: torn,
    })
}

/// Every complete record of a trail, in order (a torn tail is left out).
pub fn read_records<P: AsRef<Path>>(paths: &[P]) -> Result<Vec<Record>, VerifyError> {
    let (files, _) = expand(paths)?;
    let mut out: Vec<Record> = Vec::new();
    let count = std::cell::Cell::new(0u64);
    for_each_line(
        &files,
        |file, line_no, bytes| {
            let record = serde_json::from_slice(bytes).map_err(|e| {
                error(
                    Problem::Malformed,
                    count.get(),
                    file,
                    line_no,
                    format!("not a valid record: {e}"),
                )
            })?;
            out.push(record);
            count.set(count.get() + 1);
            Ok(())
        },
        || count.get(),
    )?;
    Ok(out)
}

/// A proof that a client checks against checkpoints, without the trail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proof {
    Inclusion(InclusionProof),
    Consistency(ConsistencyProof),
}

/// Record `index` (its exact bytes, as text) is in the tree of `size` records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InclusionProof {
    pub index: u64,
    pub size: u64,
    pub record: String,
    /// The audit path, base64 hashes from the leaf up.
    pub proof: Vec<String>,
}

/// The tree of `from` records is a prefix of the tree of `to` records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyProof {
    pub from: u64,
    pub to: u64,
    pub proof: Vec<String>,
}

/// Why a proof was refused or could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("{0}")]
    Unprovable(String),
    #[error("the proof does not match the checkpoint: {0}")]
    Mismatch(String),
    #[error("malformed proof: {0}")]
    Malformed(String),
    #[error(transparent)]
    Trail(#[from] VerifyError),
}

/// The trail's leaf hashes, with the bytes of record `keep`, if asked.
fn leaves(dir: &Path, keep: Option<u64>) -> Result<(Vec<Hash>, Option<Vec<u8>>), ProofError> {
    let (files, _) = expand(&[dir])?;
    let mut out = Vec::new();
    let mut kept = None;
    let count = std::cell::Cell::new(0u64);
    for_each_line(
        &files,
        |_, _, bytes| {
            if Some(count.get()) == keep {
                kept = Some(bytes.to_vec());
            }
            out.push(leaf_hash(bytes));
            count.set(count.get() + 1);
            Ok(())
        },
        || count.get(),
    )?;
    Ok((out, kept))
}

/// The size of the latest checkpoint in the folder, if there is one.
fn latest_checkpoint_size(dir: &Path) -> Option<u64> {
    std::fs::read_to_string(dir.join(CHECKPOINT_FILE))
        .ok()
        .and_then(|t| Checkpoint::parse_unverified(&t).ok())
        .map(|c| c.size)
}

fn encode(hashes: Vec<Hash>) -> Vec<String> {
    hashes.into_iter().map(|h| STANDARD.encode(h)).collect()
}

fn decode(hashes: &[String]) -> Result<Vec<Hash>, ProofError> {
    hashes
        .iter()
        .map(|h| {
            STANDARD
                .decode(h)
                .ok()
                .and_then(|b| Hash::try_from(b.as_slice()).ok())
                .ok_or_else(|| ProofError::Malformed(format!("`{h}` is not a base64 SHA-256 hash")))
        })
        .collect()
}

/// Proves that record `index` is in the trail's tree of `size` records: by default, the
/// size of the folder's latest checkpoint if it covers the record, else the whole trail.
pub fn prove_inclusion(dir: &Path, index: u64, size: Option<u64>) -> Result<Proof, ProofError> {
    let (all, record) = leaves(dir, Some(index))?;
    let size = size
        .or_else(|| latest_checkpoint_size(dir).filter(|&s| s > index))
        .unwrap_or(all.len() as u64);
    if size > all.len() as u64 {
        return Err(ProofError::Unprovable(format!(
            "the trail holds {} records, fewer than {size}",
            all.len()
        )));
    }
    let (Some(record), Some(proof)) = (
        record,
        merkle::inclusion_proof(&all[..size as usize], index as usize),
    ) else {
        return Err(ProofError::Unprovable(format!(
            "record #{index} is not among the first {size} records"
        )));
    };
    let record = String::from_utf8(record)
        .map_err(|_| ProofError::Unprovable(format!("record #{index} is not UTF-8 text")))?;
    Ok(Proof::Inclusion(InclusionProof {
        index,
        size,
        record,
        proof: encode(proof),
    }))
}

/// Proves that the trail's tree of `from` records is a prefix of its tree of `to`
/// records: by default, the size of the folder's latest checkpoint, else the whole trail.
pub fn prove_consistency(dir: &Path, from: u64, to: Option<u64>) -> Result<Proof, ProofError> {
    let (all, _) = leaves(dir, None)?;
    let to = to
        .or_else(|| latest_checkpoint_size(dir))
        .unwrap_or(all.len() as u64);
    if to > all.len() as u64 || from > to {
        return Err(ProofError::Unprovable(format!(
            "cannot prove {from} -> {to} records from a trail of {}",
            all.len()
        )));
    }
    let proof = merkle::consistency_proof(&all[..to as usize], from as usize)
        .ok_or_else(|| ProofError::Unprovable(format!("{from} is larger than {to}")))?;
    Ok(Proof::Consistency(ConsistencyProof {
        from,
        to,
        proof: encode(proof),
    }))
}

impl Proof {
    /// Checks the proof against `checkpoint` (and, for a consistency proof, the `old`
    /// checkpoint it extends): both read and verified by the caller.
    pub fn check(
        &self,
        checkpoint: &Checkpoint,
        old: Option<&Checkpoint>,
    ) -> Result<(), ProofError> {
        match self {
            Proof::Inclusion(p) => {
                if p.size != checkpoint.size {
                    return Err(ProofError::Mismatch(format!(
                        "the proof is for a tree of {} records, the checkpoint has {}",
                        p.size, checkpoint.size
                    )));
                }
                let leaf = leaf_hash(p.record.as_bytes());
                if !merkle::verify_inclusion(
                    &leaf,
                    p.index,
                    p.size,
                    &decode(&p.proof)?,
                    &checkpoint.root,
                ) {
                    return Err(ProofError::Mismatch(format!(
                        "record #{} is not in the checkpoint's tree as given",
                        p.index
                    )));
                }
                Ok(())
            }
            Proof::Consistency(p) => {
                let old = old.ok_or_else(|| {
                    ProofError::Malformed("a consistency proof needs the old checkpoint".to_owned())
                })?;
                if (old.size, checkpoint.size) != (p.from, p.to) {
                    return Err(ProofError::Mismatch(format!(
                        "the proof is for {} -> {} records, the checkpoints have {} and {}",
                        p.from, p.to, old.size, checkpoint.size
                    )));
                }
                if !merkle::verify_consistency(
                    p.from,
                    p.to,
                    &decode(&p.proof)?,
                    &old.root,
                    &checkpoint.root,
                ) {
                    return Err(ProofError::Mismatch(format!(
                        "the tree of {} records is not a prefix of the tree of {}",
                        p.from, p.to
                    )));
                }
                Ok(())
            }
        }
    }
}
