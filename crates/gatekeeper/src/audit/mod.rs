//! The audit trail: every verdict as a JSON line, the lines as the leaves of an RFC 6962
//! Merkle tree, and signed checkpoints of the tree.
//!
//! - [`record`](Record): one line, serialized with serde. A decision refers to the policy
//!   revision and the ids of what decided it, not their texts; `n` is its leaf index.
//! - [`writer`](AuditLog): one thread appends what checks hand it through a bounded,
//!   lock-free queue. Under [`Durability::Durable`] it writes whatever has arrived, syncs
//!   it to disk once, then acknowledges every record of that batch (group commit); the
//!   check's answer waits for the acknowledgement. Under [`Durability::Buffered`] answers
//!   do not wait and records are synced every `fsync_interval`. A failed write or sync
//!   cuts the file back to what is known to be on disk, counts every record lost, and the
//!   writer retries with backoff until the disk takes records again, then writes a
//!   `resumed` record that states the gap.
//! - [`merkle`]: leaf hash `SHA-256(0x00 || line)`, node hash `SHA-256(0x01 || l || r)`,
//!   inclusion and consistency proofs and their checks.
//! - [`checkpoint`]: every `checkpoint_every` records or interval, the writer writes the
//!   tree size and root in the C2SP checkpoint format, signed with the operator's key, to
//!   `checkpoint` (the latest) and `checkpoints.jsonl` (all of them) in the trail's folder.
//!   A checkpoint kept elsewhere lets [`verify_with`] detect truncation and rewriting.
//! - [`verify`]: reads a trail, names the first malformed, missing or reordered record,
//!   checks it against checkpoints, and reports a torn tail as such; [`prove_inclusion`]
//!   and [`prove_consistency`] give proofs a client checks with [`Proof::check`].
//!
//! Files are `audit-000001.jsonl`, `audit-000002.jsonl`, ... in one folder, a new file
//! whenever one reaches its size limit; the tree runs across them. On opening, a torn
//! last line left by a crash is cut at the byte level, whatever its bytes.

pub mod checkpoint;
pub mod merkle;
mod queue;
mod record;
mod verify;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

pub use checkpoint::{Checkpoint, CheckpointError};
pub use queue::Ack;
use queue::{Msg, block_on};
pub use record::{Record, Resumed, Told};
pub use verify::{
    ConsistencyProof, InclusionProof, Problem, Proof, ProofError, TornTail, VerifyError,
    VerifyReport, prove_consistency, prove_inclusion, read_records, verify, verify_with,
};

use crate::keys::SignerKey;

/// The latest checkpoint, in the trail's folder.
pub const CHECKPOINT_FILE: &str = "checkpoint";
/// Every checkpoint written, one JSON line each (`{"note": "..."}`).
pub const CHECKPOINT_LOG: &str = "checkpoints.jsonl";

/// When a check's answer may leave, relative to its audit record.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Durability {
    /// An answer leaves only after its record is on disk (group commit).
    #[default]
    Durable,
    /// Answers do not wait; records are synced every `fsync_interval`, so a crash may
    /// lose the last ones.
    Buffered,
}

/// How often checkpoints are written: after this many records, or this long after the
/// last one if records came since, whichever is first; and when the trail is closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointEvery {
    pub records: u64,
    pub interval: Duration,
}

impl Default for CheckpointEvery {
    /// Every 10,000 records or 10 seconds.
    fn default() -> CheckpointEvery {
        CheckpointEvery {
            records: 10_000,
            interval: Duration::from_secs(10),
        }
    }
}

/// How the audit trail is kept.
#[derive(Clone, Debug)]
pub struct AuditConfig {
    /// The folder of `audit-NNNNNN.jsonl` files and checkpoints.
    pub dir: PathBuf,
    /// Whether answers wait for their records to reach the disk.
    pub durability: Durability,
    /// Records waiting for the writer before callers wait (asynchronously, in async code).
    pub queue_capacity: usize,
    /// How often written records are synced to disk under [`Durability::Buffered`].
    pub fsync_interval: Duration,
    /// A file is closed and the next one started past this size.
    pub max_file_bytes: u64,
    /// The operator's key for checkpoints; its name is the log's origin. Without one,
    /// checkpoints are written unsigned (they catch accidents, not an attacker).
    pub checkpoint_key: Option<SignerKey>,
    /// How often checkpoints are written.
    pub checkpoint_every: CheckpointEvery,
    /// Free space on the simulated disk, for tests of a full disk.
    #[doc(hidden)]
    pub disk_space: Option<DiskSpace>,
}

impl AuditConfig {
    /// Defaults: durable, a 65,536-record queue, fsync every 10 ms when buffered, 64 MiB
    /// files, unsigned checkpoints every 10,000 records or 10 seconds.
    pub fn new(dir: impl Into<PathBuf>) -> AuditConfig {
        AuditConfig {
            dir: dir.into(),
            durability: Durability::Durable,
            queue_capacity: 65_536,
            fsync_interval: Duration::from_millis(10),
            max_file_bytes: 64 * 1024 * 1024,
            checkpoint_key: None,
            checkpoint_every: CheckpointEvery::default(),
            disk_space: None,
        }
    }
}

/// A disk of limited free space, shared with the writer: writes beyond it fail as a full
/// disk does (after writing what fits), and adding space lets them succeed again. Only
/// for tests: it makes the writer's handling of a full disk testable without privileges.
#[doc(hidden)]
#[derive(Clone, Debug)]
pub struct DiskSpace(Arc<AtomicU64>);

impl DiskSpace {
    /// A disk with `bytes` free.
    pub fn new(bytes: u64) -> DiskSpace {
        DiskSpace(Arc::new(AtomicU64::new(bytes)))
    }

    /// Sets the free space.
    pub fn set(&self, bytes: u64) {
        self.0.store(bytes, Ordering::SeqCst);
    }

    /// How much of `len` bytes fits; takes it.
    pub(crate) fn take(&self, len: u64) -> u64 {
        let mut left = self.0.load(Ordering::SeqCst);
        loop {
            let fits = left.min(len);
            match self
                .0
                .compare_exchange(left, left - fits, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return fits,
                Err(now) => left = now,
            }
        }
    }
}

/// What went wrong with the audit trail.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    #[error("audit trail `{path}`: {source}")]
    Io {
        path: String,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("audit trail writer failed: {0}")]
    WriterFailed(String),
    #[error("audit trail is closed")]
    Closed,
}

pub(crate) fn io(path: &Path, e: std::io::Error) -> AuditError {
    AuditError::Io {
        path: path.display().to_string(),
        source: Arc::new(e),
    }
}

/// The trail's head: how many records it holds, and the Merkle tree's root over them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Head {
    /// The number of records (the tree size; the last record's `n` is one less).
    pub seq: u64,
    /// The tree's root, in hex.
    pub hash: String,
}

/// The trail's state, for readiness and metrics.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditHealth {
    pub durability: Durability,
    /// Records on disk since the trail was opened.
    pub written: u64,
    /// Records that never reached the disk since the trail was opened.
    pub lost: u64,
    /// Records waiting for the writer.
    pub queued: u64,
    /// Why records cannot be written now; the writer retries with backoff.
    pub failing: Option<String>,
}

impl AuditHealth {
    /// Whether records are being written.
    pub fn is_ok(&self) -> bool {
        self.failing.is_none()
    }
}

/// State shared by the checks and the writer thread: atomics only, so that the check
/// path takes no lock.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    closed: AtomicBool,
    failing: AtomicBool,
    error: ArcSwapOption<String>,
    written: AtomicU64,
    lost: AtomicU64,
    queued: AtomicI64,
}

impl Shared {
    /// Counts records that will never reach the disk.
    pub(crate) fn lose(&self, count: u64) {
        if count > 0 {
            self.lost.fetch_add(count, Ordering::Relaxed);
            metrics::counter!("gatekeeper_audit_lost_records_total").increment(count);
        }
    }

    fn error_text(&self) -> String {
        self.error
            .load()
            .as_deref()
            .cloned()
            .unwrap_or_else(|| "unknown error".to_owned())
    }
}

/// An open audit trail with its writer thread.
#[derive(Debug)]
pub struct AuditLog {
    sender: mpsc::Sender<Msg>,
    shared: Arc<Shared>,
    durability: Durability,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Bytes cut from a torn last line when the trail was opened.
    pub recovered_bytes: u64,
}

pub(crate) fn file_name(index: u64) -> String {
    format!("audit-{index:06}.jsonl")
}

/// The trail's files in a folder, in order.
pub fn files_in(dir: &Path) -> Result<Vec<(u64, PathBuf)>, AuditError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
        let path = entry.map_err(|e| io(dir, e))?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if let Some(index) = name
            .strip_prefix("audit-")
            .and_then(|n| n.strip_suffix(".jsonl"))
            .and_then(|n| n.parse::<u64>().ok())
        {
            out.push((index, path));
        }
    }
    out.sort();
    Ok(out)
}

impl AuditLog {
    /// Opens (or creates) the trail in `config.dir`, cutting a torn last line left by a
    /// crash, and starts its writer thread.
    pub fn open(config: AuditConfig) -> Result<AuditLog, AuditError> {
        let shared = Arc::new(Shared::default());
        let (sender, receiver) = mpsc::channel::<Msg>(config.queue_capacity.max(1));
        let durability = config.durability;
        let (writer, recovered_bytes) = writer::Writer::open(config.clone(), shared.clone())?;
        let thread = std::thread::Builder::new()
            .name("gatekeeper-audit".to_owned())
            .spawn(move || writer.run(receiver))
            .map_err(|e| io(&config.dir, e))?;
        Ok(AuditLog {
            sender,
            shared,
            durability,
            thread: Mutex::new(Some(thread)),
            recovered_bytes,
        })
    }

    /// Whether answers wait for the disk.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Why records cannot be written now, if they cannot.
    pub fn failure(&self) -> Option<String> {
        self.shared
            .failing
            .load(Ordering::Acquire)
            .then(|| self.shared.error_text())
    }

    /// Records on disk and records lost since the trail was opened.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.shared.written.load(Ordering::Relaxed),
            self.shared.lost.load(Ordering::Relaxed),
        )
    }

    /// The trail's state.
    pub fn health(&self) -> AuditHealth {
        let (written, lost) = self.counts();
        AuditHealth {
            durability: self.durability,
            written,
            lost,
            queued: self.shared.queued.load(Ordering::Relaxed).max(0) as u64,
            failing: self.failure(),
        }
    }

    /// Hands a record to the writer without blocking and without a lock (the writer
    /// sets its `n`). The acknowledgement resolves once it is on disk (durable trails) or
    /// at once (buffered ones); when the queue is full, it first waits for room. A
    /// record refused at once (the trail is closed, or failing) is counted as lost.
    pub fn append(&self, record: Record) -> Ack {
        let refuse = |e: AuditError| {
            self.shared.lose(1);
            Ack::done(Err(e))
        };
        if self.shared.closed.load(Ordering::Acquire) {
            return refuse(AuditError::Closed);
        }
        if self.shared.failing.load(Ordering::Acquire) {
            return refuse(AuditError::WriterFailed(self.shared.error_text()));
        }
        let (ack, receiver) = match self.durability {
            Durability::Durable => {
                let (tx, rx) = oneshot::channel();
                (Some(tx), Some(rx))
            }
            Durability::Buffered => (None, None),
        };
        self.shared.queued.fetch_add(1, Ordering::Relaxed);
        match self.sender.try_send(Msg::Record(record, ack)) {
            Ok(()) => match receiver {
                Some(rx) => Ack::waiting(rx),
                None => Ack::done(Ok(())),
            },
            Err(mpsc::error::TrySendError::Full(msg)) => {
                Ack::queueing(self.sender.clone(), msg, receiver, self.shared.clone())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.shared.queued.fetch_sub(1, Ordering::Relaxed);
                refuse(AuditError::Closed)
            }
        }
    }

    /// Sends a control message and blocks until the writer answers.
    fn ask(
        &self,
        msg: impl FnOnce(oneshot::Sender<Result<Head, AuditError>>) -> Msg,
    ) -> Result<Head, AuditError> {
        let (tx, rx) = oneshot::channel();
        let sender = self.sender.clone();
        let msg = msg(tx);
        block_on(
            async move {
                sender.send(msg).await.map_err(|_| AuditError::Closed)?;
                rx.await.unwrap_or(Err(AuditError::Closed))
            },
            None,
        )
        .unwrap_or(Err(AuditError::Closed))
    }

    /// Blocks until every record queued before the call is written and on disk; returns
    /// the head. Never call it on an async worker thread.
    pub fn flush(&self) -> Result<Head, AuditError> {
        self.ask(Msg::Flush)
    }

    /// Flushes, writes a last checkpoint, then stops the writer. Appends after this are
    /// refused with [`AuditError::Closed`]. Blocks like [`AuditLog::flush`].
    pub fn close(&self) -> Result<Head, AuditError> {
        if self.shared.closed.swap(true, Ordering::AcqRel) {
            return Err(AuditError::Closed);
        }
        let head = self.ask(Msg::Close);
        if let Some(t) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = t.join();
        }
        head
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        let _ = self.close();
    }
}
