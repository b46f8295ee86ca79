//! The writer thread: recovery at start, group commit, rotation, failures with backoff,
//! and checkpoints.
//!
//! Two lengths of the current file are kept: `len`, what has been written, and
//! `synced_len`, what is known to be on disk (with the tree at that point). A failed write
//! or sync cuts the file back to `synced_len` and counts every record after it as lost:
//! after a failed sync, nothing unsynced can be trusted to be on disk.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::checkpoint::{Checkpoint, UNSIGNED_ORIGIN};
use super::merkle::{Frontier, Hash, leaf_hash};
use super::queue::{Msg, Receipt, Received, recv_timeout};
use super::record::{Record, Resumed};
use super::{
    AuditConfig, AuditError, CHECKPOINT_FILE, CHECKPOINT_LOG, DiskSpace, Durability, Head, Shared,
    file_name, files_in, io,
};

/// At most this many messages are taken per batch (one write, one sync).
const MAX_BATCH: usize = 16_384;
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

pub(crate) fn hex(hash: &Hash) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Writes `bytes`, or as much of them as the simulated disk has room for.
fn write_limited(file: &mut File, bytes: &[u8], space: Option<&DiskSpace>) -> std::io::Result<()> {
    if let Some(space) = space {
        let fits = space.take(bytes.len() as u64) as usize;
        if fits < bytes.len() {
            file.write_all(&bytes[..fits])?;
            return Err(std::io::ErrorKind::StorageFull.into());
        }
    }
    file.write_all(bytes)
}

fn sync_dir(dir: &Path) -> Result<(), AuditError> {
    #[cfg(unix)]
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(dir, e))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Cuts whatever follows the last line end of `path` (a write torn by a crash), at the
/// byte level: the bytes cut need not be text. Returns how many bytes were cut.
pub(crate) fn cut_torn_tail(path: &Path) -> Result<u64, AuditError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| io(path, e))?;
    let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let cut = (bytes.len() - keep) as u64;
    if cut > 0 {
        let f = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| io(path, e))?;
        f.set_len(keep as u64).map_err(|e| io(path, e))?;
        f.sync_all().map_err(|e| io(path, e))?;
        tracing::warn!(file = %path.display(), bytes = cut, "audit trail: cut a record torn by a crash");
    }
    Ok(cut)
}

/// Why records cannot be written, and when to try again.
#[derive(Debug)]
struct Failure {
    error: String,
    /// The count of lost records when the failure began: every record lost since (here
    /// or refused by a check) belongs to this gap.
    lost_before: u64,
    retry_at: Instant,
    backoff: Duration,
}

pub(crate) struct Writer {
    config: AuditConfig,
    shared: Arc<Shared>,
    index: u64,
    path: PathBuf,
    file: Option<File>,
    len: u64,
    synced_len: u64,
    tree: Frontier,
    synced_tree: Frontier,
    /// Records written but not yet synced.
    unsynced: u64,
    dirty: bool,
    last_sync: Instant,
    /// The batch's lines, and their leaf hashes, not yet written.
    buf: Vec<u8>,
    staged: Vec<Hash>,
    line: Vec<u8>,
    /// Durable records' acknowledgements, sent at the next sync.
    acks: Vec<oneshot::Sender<Receipt>>,
    replies: Vec<(oneshot::Sender<Result<Head, AuditError>>, bool)>,
    checkpointed: u64,
    last_checkpoint: Instant,
    checkpoint_blocked_until: Option<Instant>,
    failure: Option<Failure>,
}

impl Writer {
    /// Cuts a torn tail, rebuilds the tree from the files, and opens the newest file.
    pub(crate) fn open(
        config: AuditConfig,
        shared: Arc<Shared>,
    ) -> Result<(Writer, u64), AuditError> {
        let dir = config.dir.clone();
        fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let files = files_in(&dir)?;
        let recovered = match files.last() {
            Some((_, last)) => cut_torn_tail(last)?,
            None => 0,
        };
        let mut tree = Frontier::default();
        for (i, (_, path)) in files.iter().enumerate() {
            let bytes = fs::read(path).map_err(|e| io(path, e))?;
            let mut rest = bytes.as_slice();
            while !rest.is_empty() {
                let end = rest.iter().position(|&b| b == b'\n');
                let line = &rest[..end.unwrap_or(rest.len())];
                if end.is_none() && i + 1 < files.len() {
                    tracing::error!(file = %path.display(), "audit trail: a file before the newest ends inside a record; run `gatekeeper audit verify`");
                }
                tree.push(leaf_hash(line));
                rest = &rest[end.map_or(rest.len(), |e| e + 1)..];
            }
        }
        let checkpointed = fs::read_to_string(dir.join(CHECKPOINT_FILE))
            .ok()
            .and_then(|t| Checkpoint::parse_unverified(&t).ok())
            .map_or(0, |c| c.size);
        if checkpointed > tree.size() {
            tracing::error!(
                records = tree.size(),
                checkpoint = checkpointed,
                "audit trail: the trail holds fewer records than its last checkpoint; run `gatekeeper audit verify`"
            );
        }
        let log = dir.join(CHECKPOINT_LOG);
        if log.exists() {
            cut_torn_tail(&log)?;
        }
        let index = files.last().map_or(1, |(i, _)| *i);
        let path = dir.join(file_name(index));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io(&path, e))?;
        let len = file.metadata().map_err(|e| io(&path, e))?.len();
        if files.is_empty() {
            sync_dir(&dir)?;
        }
        let now = Instant::now();
        Ok((
            Writer {
                config,
                shared,
                index,
                path,
                file: Some(file),
                len,
                synced_len: len,
                synced_tree: tree.clone(),
                tree,
                unsynced: 0,
                dirty: false,
                last_sync: now,
                buf: Vec::with_capacity(256 * 1024),
                staged: Vec::new(),
                line: Vec::with_capacity(1024),
                acks: Vec::new(),
                replies: Vec::new(),
                checkpointed,
                last_checkpoint: now,
                checkpoint_blocked_until: None,
                failure: None,
            },
            recovered,
        ))
    }

    pub(crate) fn run(mut self, mut receiver: mpsc::Receiver<Msg>) {
        loop {
            let timeout = self
                .next_deadline()
                .map(|d| d.saturating_duration_since(Instant::now()));
            match recv_timeout(&mut receiver, timeout) {
                Received::Msg(msg) => {
                    self.take(msg);
                    for _ in 1..MAX_BATCH {
                        match receiver.try_recv() {
                            Ok(msg) => self.take(msg),
                            Err(_) => break,
                        }
                    }
                }
                Received::Timeout => {}
                Received::Disconnected => {
                    self.after_batch(true);
                    return;
                }
            }
            let closing = self.replies.iter().any(|(_, close)| *close);
            self.after_batch(closing);
            if closing {
                return;
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let mut deadlines = Vec::with_capacity(3);
        if let Some(f) = &self.failure {
            deadlines.push(f.retry_at);
        }
        if self.dirty {
            deadlines.push(self.last_sync + self.config.fsync_interval);
        }
        if self.failure.is_none() && self.tree.size() > self.checkpointed {
            let due = self.last_checkpoint + self.config.checkpoint_every.interval;
            deadlines.push(self.checkpoint_blocked_until.map_or(due, |b| b.max(due)));
        }
        deadlines.into_iter().min()
    }

    fn take(&mut self, msg: Msg) {
        match msg {
            Msg::Record(record, ack) => {
                self.shared.queued.fetch_sub(1, Ordering::Relaxed);
                if self.failure.is_some() {
                    self.lose(1, ack);
                } else {
                    self.stage(record, ack);
                }
            }
            Msg::Flush(reply) => self.replies.push((reply, false)),
            Msg::Close(reply) => self.replies.push((reply, true)),
        }
    }

    /// Counts records lost and refuses their acknowledgement.
    fn lose(&mut self, count: u64, ack: Option<oneshot::Sender<Receipt>>) {
        self.shared.lose(count);
        let error = self
            .failure
            .as_ref()
            .map_or_else(|| "record not written".to_owned(), |f| f.error.clone());
        if let Some(ack) = ack {
            let _ = ack.send(Err(AuditError::WriterFailed(error)));
        }
    }

    fn stage(&mut self, mut record: Record, ack: Option<oneshot::Sender<Receipt>>) {
        record.n = self.tree.size() + self.staged.len() as u64;
        self.line.clear();
        if let Err(e) = serde_json::to_writer(&mut self.line, &record) {
            tracing::error!(error = %e, "audit record could not be serialized");
            self.lose(1, ack);
            return;
        }
        let leaf = leaf_hash(&self.line);
        self.line.push(b'\n');
        let pending = self.len + self.buf.len() as u64;
        if pending > 0
            && pending + self.line.len() as u64 > self.config.max_file_bytes
            && let Err(e) = self.commit(true).and_then(|()| self.rotate())
        {
            self.fail(e);
            self.lose(1, ack);
            return;
        }
        self.buf.extend_from_slice(&self.line);
        self.staged.push(leaf);
        if let Some(ack) = ack {
            self.acks.push(ack);
        }
    }

    /// Writes the staged lines; with `sync`, forces everything written to disk and
    /// acknowledges the durable records.
    fn commit(&mut self, sync: bool) -> Result<(), AuditError> {
        if !self.buf.is_empty() {
            let file = self
                .file
                .as_mut()
                .ok_or_else(|| AuditError::WriterFailed("no audit file is open".to_owned()))?;
            write_limited(file, &self.buf, self.config.disk_space.as_ref())
                .map_err(|e| io(&self.path, e))?;
            self.len += self.buf.len() as u64;
            self.unsynced += self.staged.len() as u64;
            for leaf in self.staged.drain(..) {
                self.tree.push(leaf);
            }
            self.buf.clear();
            self.dirty = true;
        }
        if sync && self.dirty {
            if let Some(file) = &self.file {
                file.sync_data().map_err(|e| io(&self.path, e))?;
            }
            self.synced_len = self.len;
            self.synced_tree = self.tree.clone();
            self.shared
                .written
                .fetch_add(self.unsynced, Ordering::Relaxed);
            self.unsynced = 0;
            self.dirty = false;
            self.last_sync = Instant::now();
            for ack in self.acks.drain(..) {
                let _ = ack.send(Ok(()));
            }
        }
        Ok(())
    }

    /// Closes the current file (already synced) and starts the next.
    fn rotate(&mut self) -> Result<(), AuditError> {
        let next = self.index + 1;
        let path = self.config.dir.join(file_name(next));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io(&path, e))?;
        sync_dir(&self.config.dir)?;
        self.index = next;
        self.path = path;
        self.file = Some(file);
        self.len = 0;
        self.synced_len = 0;
        Ok(())
    }

    /// Cuts the file back to what is on disk, counts every record after it as lost, and
    /// waits before trying again.
    fn fail(&mut self, error: AuditError) {
        let lost = self.staged.len() as u64 + self.unsynced;
        if let Some(file) = &self.file
            && let Err(e) = file.set_len(self.synced_len)
        {
            tracing::error!(error = %e, file = %self.path.display(), "audit trail: cannot cut a failed write back");
        }
        self.len = self.synced_len;
        self.tree = self.synced_tree.clone();
        self.buf.clear();
        self.staged.clear();
        self.unsynced = 0;
        self.dirty = false;
        let text = error.to_string();
        match &mut self.failure {
            Some(f) => f.error = text.clone(),
            None => {
                tracing::error!(error = %text, "audit trail: records cannot be written; retrying with backoff");
                self.failure = Some(Failure {
                    error: text.clone(),
                    lost_before: self.shared.lost.load(Ordering::Relaxed),
                    retry_at: Instant::now() + FIRST_BACKOFF,
                    backoff: FIRST_BACKOFF,
                });
            }
        }
        self.shared.error.store(Some(Arc::new(text)));
        self.shared.failing.store(true, Ordering::Release);
        // Counted before the checks waiting on them learn of it.
        self.lose(lost, None);
        for ack in self.acks.drain(..) {
            let _ = ack.send(Err(error.clone()));
        }
    }

    /// Tries to write again: cuts the file back, then writes and syncs a `resumed`
    /// record that states the gap. On failure, waits twice as long.
    fn resume(&mut self) {
        let Some(failure) = &self.failure else {
            return;
        };
        let record = Record {
            n: self.synced_tree.size(),
            id: None,
            t: now_ms(),
            rev: None,
            deny: None,
            shadow_deny: None,
            allow: None,
            by: None,
            set_aside: Vec::new(),
            req: None,
            resumed: Some(Resumed {
                lost: self
                    .shared
                    .lost
                    .load(Ordering::Relaxed)
                    .saturating_sub(failure.lost_before),
                error: failure.error.clone(),
            }),
        };
        let attempt = (|| -> Result<(), AuditError> {
            if self.file.is_none() {
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)
                    .map_err(|e| io(&self.path, e))?;
                self.file = Some(file);
            }
            if let Some(file) = &self.file {
                file.set_len(self.synced_len)
                    .map_err(|e| io(&self.path, e))?;
            }
            let mut line =
                serde_json::to_vec(&record).map_err(|e| AuditError::WriterFailed(e.to_string()))?;
            let leaf = leaf_hash(&line);
            line.push(b'\n');
            if self.len > 0 && self.len + line.len() as u64 > self.config.max_file_bytes {
                self.rotate()?;
            }
            self.buf.extend_from_slice(&line);
            self.staged.push(leaf);
            self.commit(true)
        })();
        match attempt {
            Ok(()) => {
                self.failure = None;
                let lost = record.resumed.map_or(0, |r| r.lost);
                self.shared.failing.store(false, Ordering::Release);
                self.shared.error.store(None);
                tracing::info!(lost, "audit trail: writing again");
            }
            Err(e) => {
                // The probe is not a record anyone waits for: nothing more is lost.
                self.buf.clear();
                self.staged.clear();
                self.unsynced = 0;
                self.fail(e);
                if let Some(f) = &mut self.failure {
                    f.backoff = (f.backoff * 2).min(MAX_BACKOFF);
                    f.retry_at = Instant::now() + f.backoff;
                }
            }
        }
    }

    fn head(&self) -> Head {
        Head {
            seq: self.synced_tree.size(),
            hash: hex(&self.synced_tree.root()),
        }
    }

    /// After each batch: write and sync as the durability asks, retry after a failure,
    /// write a checkpoint when one is due, answer flushes.
    fn after_batch(&mut self, closing: bool) {
        let now = Instant::now();
        if self.failure.is_none() {
            let sync = !self.acks.is_empty()
                || !self.replies.is_empty()
                || closing
                || (self.config.durability == Durability::Buffered
                    && (self.dirty || !self.buf.is_empty())
                    && now >= self.last_sync + self.config.fsync_interval);
            if let Err(e) = self.commit(sync) {
                self.fail(e);
            }
        }
        if self.failure.as_ref().is_some_and(|f| now >= f.retry_at) {
            self.resume();
        }
        let grown = self.tree.size().saturating_sub(self.checkpointed);
        let due = grown > 0
            && (closing
                || grown >= self.config.checkpoint_every.records
                || now >= self.last_checkpoint + self.config.checkpoint_every.interval)
            && self
                .checkpoint_blocked_until
                .is_none_or(|b| closing || now >= b);
        if due && self.failure.is_none() {
            match self.commit(true) {
                Err(e) => self.fail(e),
                Ok(()) => match self.checkpoint() {
                    Ok(()) => self.checkpoint_blocked_until = None,
                    Err(e) => {
                        if self.checkpoint_blocked_until.is_none() {
                            tracing::warn!(error = %e, "audit trail: checkpoint not written; retrying");
                        }
                        self.checkpoint_blocked_until = Some(Instant::now() + MAX_BACKOFF);
                    }
                },
            }
        }
        let answer = match &self.failure {
            None => Ok(self.head()),
            Some(f) => Err(AuditError::WriterFailed(f.error.clone())),
        };
        for (reply, _) in self.replies.drain(..) {
            let _ = reply.send(answer.clone());
        }
        metrics::gauge!("gatekeeper_audit_queue_depth")
            .set(self.shared.queued.load(Ordering::Relaxed) as f64);
    }

    /// Writes a checkpoint of what is on disk: appended to the log of checkpoints, and
    /// as the latest (written aside, then renamed over it).
    fn checkpoint(&mut self) -> Result<(), AuditError> {
        let key = self.config.checkpoint_key.as_ref();
        let checkpoint = Checkpoint {
            origin: key.map_or(UNSIGNED_ORIGIN, |k| k.name()).to_owned(),
            size: self.synced_tree.size(),
            root: self.synced_tree.root(),
        };
        let note = checkpoint
            .to_note(key)
            .map_err(|e| AuditError::WriterFailed(e.to_string()))?;
        let dir = self.config.dir.clone();
        let space = self.config.disk_space.clone();
        let log = dir.join(CHECKPOINT_LOG);
        let mut line = serde_json::to_vec(&serde_json::json!({ "note": note }))
            .map_err(|e| AuditError::WriterFailed(e.to_string()))?;
        line.push(b'\n');
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| io(&log, e))?;
        let before = file.metadata().map_err(|e| io(&log, e))?.len();
        if let Err(e) =
            write_limited(&mut file, &line, space.as_ref()).and_then(|()| file.sync_data())
        {
            let _ = file.set_len(before);
            return Err(io(&log, e));
        }
        let latest = dir.join(CHECKPOINT_FILE);
        let aside = dir.join(format!("{CHECKPOINT_FILE}.tmp"));
        let written = File::create(&aside).and_then(|mut f| {
            write_limited(&mut f, note.as_bytes(), space.as_ref())?;
            f.sync_all()
        });
        if let Err(e) = written.and_then(|()| fs::rename(&aside, &latest)) {
            let _ = fs::remove_file(&aside);
            return Err(io(&latest, e));
        }
        sync_dir(&dir)?;
        self.checkpointed = checkpoint.size;
        self.last_checkpoint = Instant::now();
        Ok(())
    }
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("path", &self.path)
            .field("size", &self.tree.size())
            .finish()
    }
}
