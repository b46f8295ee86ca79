//! The audit trail: every verdict as a JSON line, chained by SHA-256.
//!
//! A record line is `{"seq":N,"prev":"<hash of record N-1>",...fields...,"hash":"<hex>"}`
//! where `hash` is the SHA-256 of the line's bytes up to (not including) `,"hash":`.
//! Changing a byte breaks that record's hash; deleting, inserting or reordering records
//! breaks `seq` and `prev`. The chain continues across files: `audit-000001.jsonl`,
//! `audit-000002.jsonl`, ... in one folder, a new file whenever one reaches its size limit.
//!
//! Records are handed to one writer thread through a bounded queue: a full queue makes
//! callers wait (backpressure), never drops. The writer writes as records come and
//! forces them to disk every `fsync_interval` (group commit).

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};

/// The `prev` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

const HASH_FIELD: &str = ",\"hash\":\"";

/// How the audit trail is kept.
#[derive(Clone, Debug)]
pub struct AuditConfig {
    /// The folder of `audit-NNNNNN.jsonl` files.
    pub dir: PathBuf,
    /// Records waiting for the writer before callers wait.
    pub queue_capacity: usize,
    /// How often written records are forced to disk.
    pub fsync_interval: Duration,
    /// A file is closed and the next one started past this size.
    pub max_file_bytes: u64,
}

impl AuditConfig {
    /// Defaults: a 65,536-record queue, fsync every 10 ms, 64 MiB files.
    pub fn new(dir: impl Into<PathBuf>) -> AuditConfig {
        AuditConfig {
            dir: dir.into(),
            queue_capacity: 65_536,
            fsync_interval: Duration::from_millis(10),
            max_file_bytes: 64 * 1024 * 1024,
        }
    }
}

/// What went wrong with the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    #[error("audit trail `{path}`: {message}")]
    Io { path: String, message: String },
    #[error(
        "audit trail `{path}` ends in a record that does not verify ({reason}); run `gatekeeper audit verify`"
    )]
    CorruptTail { path: String, reason: String },
    #[error("audit trail writer failed: {0}")]
    WriterFailed(String),
    #[error("audit trail is closed")]
    Closed,
}

fn io(path: &Path, e: impl std::fmt::Display) -> AuditError {
    AuditError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

enum Msg {
    Record(String),
    Flush(SyncSender<Result<Head, AuditError>>),
}

/// The chain's head: the last record's number and hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Head {
    pub seq: u64,
    pub hash: String,
}

#[derive(Debug, Default)]
struct Shared {
    failed: AtomicBool,
    error: Mutex<Option<String>>,
    written: AtomicU64,
    lost: AtomicU64,
    queued: AtomicI64,
}

/// An open audit trail with its writer thread.
#[derive(Debug)]
pub struct AuditLog {
    sender: Mutex<Option<SyncSender<Msg>>>,
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Bytes cut from a torn last line when the trail was opened.
    pub recovered_bytes: u64,
}

fn file_name(index: u64) -> String {
    format!("audit-{index:06}.jsonl")
}

/// The trail's files in a folder, in chain order.
pub fn files_in(dir: &Path) -> Result<Vec<(u64, PathBuf)>, AuditError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| io(dir, e))? {
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

/// One record line's parts, checked against its own hash.
struct Parsed {
    seq: u64,
    prev: String,
    hash: String,
}

fn parse_line(line: &str) -> Result<Parsed, String> {
    let at = line.rfind(HASH_FIELD).ok_or("record has no `hash` field")?;
    let (prefix, rest) = line.split_at(at);
    let hash = rest[HASH_FIELD.len()..]
        .strip_suffix("\"}")
        .filter(|h| h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()))
        .ok_or("record's `hash` field is malformed")?;
    let computed = format!("{:x}", Sha256::digest(prefix.as_bytes()));
    if computed != hash {
        return Err("record was modified: its hash does not match its content".to_owned());
    }
    #[derive(serde::Deserialize)]
    struct Chain {
        seq: u64,
        prev: String,
    }
    let chain: Chain = serde_json::from_str(&format!("{prefix}}}"))
        .map_err(|e| format!("record is not valid JSON: {e}"))?;
    Ok(Parsed {
        seq: chain.seq,
        prev: chain.prev,
        hash: hash.to_owned(),
    })
}

/// Cuts a torn last line off the newest file and reads the chain's head.
fn recover(dir: &Path) -> Result<(u64, Head, u64), AuditError> {
    fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let files = files_in(dir)?;
    let Some((index, last)) = files.last().cloned() else {
        return Ok((
            1,
            Head {
                seq: 0,
                hash: GENESIS.to_owned(),
            },
            0,
        ));
    };
    let mut text = String::new();
    File::open(&last)
        .and_then(|mut f| f.read_to_string(&mut text))
        .map_err(|e| io(&last, e))?;
    let keep = text.rfind('\n').map_or(0, |i| i + 1);
    let cut = (text.len() - keep) as u64;
    if cut > 0 {
        let f = OpenOptions::new()
            .write(true)
            .open(&last)
            .map_err(|e| io(&last, e))?;
        f.set_len(keep as u64).map_err(|e| io(&last, e))?;
        f.sync_all().map_err(|e| io(&last, e))?;
        tracing::warn!(file = %last.display(), bytes = cut, "audit trail: cut a torn last line");
    }
    let head = match last_head(&last, &text[..keep])? {
        Some(head) => head,
        None if files.len() > 1 => {
            // The newest file is empty: the head is the previous file's last record.
            let (_, before) = &files[files.len() - 2];
            let text = fs::read_to_string(before).map_err(|e| io(before, e))?;
            last_head(before, &text)?.unwrap_or(Head {
                seq: 0,
                hash: GENESIS.to_owned(),
            })
        }
        None => Head {
            seq: 0,
            hash: GENESIS.to_owned(),
        },
    };
    Ok((index, head, cut))
}

/// The head a file's last record makes, if it has one.
fn last_head(path: &Path, text: &str) -> Result<Option<Head>, AuditError> {
    let Some(line) = text.lines().last() else {
        return Ok(None);
    };
    let p = parse_line(line).map_err(|reason| AuditError::CorruptTail {
        path: path.display().to_string(),
        reason,
    })?;
    Ok(Some(Head {
        seq: p.seq,
        hash: p.hash,
    }))
}

struct Writer {
    config: AuditConfig,
    index: u64,
    path: PathBuf,
    out: BufWriter<File>,
    size: u64,
    head: Head,
    dirty: bool,
    last_sync: std::time::Instant,
    line: String,
}

impl Writer {
    fn open(config: AuditConfig, index: u64, head: Head) -> Result<Writer, AuditError> {
        let path = config.dir.join(file_name(index));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io(&path, e))?;
        let size = file.metadata().map_err(|e| io(&path, e))?.len();
        Ok(Writer {
            config,
            index,
            path,
            out: BufWriter::with_capacity(256 * 1024, file),
            size,
            head,
            dirty: false,
            last_sync: std::time::Instant::now(),
            line: String::with_capacity(1024),
        })
    }

    fn sync(&mut self) -> Result<(), AuditError> {
        self.out.flush().map_err(|e| io(&self.path, e))?;
        self.out
            .get_ref()
            .sync_data()
            .map_err(|e| io(&self.path, e))?;
        self.dirty = false;
        self.last_sync = std::time::Instant::now();
        Ok(())
    }

    fn rotate(&mut self) -> Result<(), AuditError> {
        self.sync()?;
        self.index += 1;
        self.path = self.config.dir.join(file_name(self.index));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| io(&self.path, e))?;
        self.out = BufWriter::with_capacity(256 * 1024, file);
        self.size = 0;
        Ok(())
    }

    /// Appends one record; `body` is a JSON object's text.
    fn write(&mut self, body: &str) -> Result<(), AuditError> {
        let inner = body
            .trim()
            .strip_prefix('{')
            .and_then(|b| b.strip_suffix('}'))
            .unwrap_or("")
            .trim();
        let seq = self.head.seq + 1;
        self.line.clear();
        self.line.push_str("{\"seq\":");
        self.line.push_str(&seq.to_string());
        self.line.push_str(",\"prev\":\"");
        self.line.push_str(&self.head.hash);
        self.line.push('"');
        if !inner.is_empty() {
            self.line.push(',');
            self.line.push_str(inner);
        }
        let hash = format!("{:x}", Sha256::digest(self.line.as_bytes()));
        self.line.push_str(HASH_FIELD);
        self.line.push_str(&hash);
        self.line.push_str("\"}\n");
        if self.size > 0 && self.size + self.line.len() as u64 > self.config.max_file_bytes {
            self.rotate()?;
        }
        self.out
            .write_all(self.line.as_bytes())
            .map_err(|e| io(&self.path, e))?;
        self.size += self.line.len() as u64;
        self.head = Head { seq, hash };
        self.dirty = true;
        Ok(())
    }
}

impl AuditLog {
    /// Opens (or creates) the trail in `config.dir`, cutting a torn last line left by a
    /// crash, and starts its writer thread.
    pub fn open(config: AuditConfig) -> Result<AuditLog, AuditError> {
        let (index, head, recovered_bytes) = recover(&config.dir)?;
        let mut writer = Writer::open(config.clone(), index, head)?;
        let (sender, receiver) = mpsc::sync_channel::<Msg>(config.queue_capacity.max(1));
        let shared = Arc::new(Shared::default());
        let state = shared.clone();
        let interval = config.fsync_interval;
        let thread = std::thread::Builder::new()
            .name("gatekeeper-audit".to_owned())
            .spawn(move || {
                let fail = |state: &Shared, e: AuditError| {
                    if !state.failed.swap(true, Ordering::SeqCst) {
                        tracing::error!(error = %e, "audit trail writer failed");
                    }
                    if let Ok(mut slot) = state.error.lock() {
                        slot.get_or_insert_with(|| e.to_string());
                    }
                };
                let handle = |writer: &mut Writer, msg: Msg| match msg {
                    Msg::Record(body) => {
                        state.queued.fetch_sub(1, Ordering::Relaxed);
                        if state.failed.load(Ordering::Relaxed) {
                            state.lost.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                        match writer.write(&body) {
                            Ok(()) => {
                                state.written.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => {
                                state.lost.fetch_add(1, Ordering::Relaxed);
                                fail(&state, e);
                            }
                        }
                    }
                    Msg::Flush(reply) => {
                        let result = match writer.sync() {
                            Ok(()) => Ok(writer.head.clone()),
                            Err(e) => {
                                fail(&state, e.clone());
                                Err(e)
                            }
                        };
                        let result = match (&result, state.failed.load(Ordering::SeqCst)) {
                            (Ok(_), true) => Err(AuditError::WriterFailed(
                                state
                                    .error
                                    .lock()
                                    .ok()
                                    .and_then(|e| e.clone())
                                    .unwrap_or_default(),
                            )),
                            _ => result,
                        };
                        let _ = reply.send(result);
                    }
                };
                loop {
                    let next = if writer.dirty {
                        let wait = interval.saturating_sub(writer.last_sync.elapsed());
                        receiver.recv_timeout(wait)
                    } else {
                        receiver.recv().map_err(|_| RecvTimeoutError::Disconnected)
                    };
                    match next {
                        Ok(msg) => {
                            handle(&mut writer, msg);
                            // Take what else is waiting before syncing: one fsync for the group.
                            for _ in 0..8192 {
                                match receiver.try_recv() {
                                    Ok(msg) => handle(&mut writer, msg),
                                    Err(_) => break,
                                }
                            }
                        }
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => {
                            if let Err(e) = writer.sync() {
                                fail(&state, e);
                            }
                            break;
                        }
                    }
                    metrics::gauge!("gatekeeper_audit_queue_depth")
                        .set(state.queued.load(Ordering::Relaxed) as f64);
                    if writer.dirty
                        && writer.last_sync.elapsed() >= interval
                        && let Err(e) = writer.sync()
                    {
                        fail(&state, e);
                    }
                }
            })
            .map_err(|e| io(&config.dir, e))?;
        Ok(AuditLog {
            sender: Mutex::new(Some(sender)),
            shared,
            thread: Mutex::new(Some(thread)),
            recovered_bytes,
        })
    }

    /// Whether the writer has failed; the error, if so.
    pub fn failure(&self) -> Option<String> {
        if self.shared.failed.load(Ordering::Relaxed) {
            Some(
                self.shared
                    .error
                    .lock()
                    .ok()
                    .and_then(|e| e.clone())
                    .unwrap_or_default(),
            )
        } else {
            None
        }
    }

    /// The writer's queue, until the trail is closed.
    fn sender(&self) -> Result<SyncSender<Msg>, AuditError> {
        self.sender
            .lock()
            .map_err(|_| AuditError::Closed)?
            .clone()
            .ok_or(AuditError::Closed)
    }

    /// Records written so far, and records that could not be written.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.shared.written.load(Ordering::Relaxed),
            self.shared.lost.load(Ordering::Relaxed),
        )
    }

    /// Queues one record (a JSON object's text). Waits while the queue is full; fails when
    /// the writer has failed or the trail is closed.
    pub fn append(&self, body: String) -> Result<(), AuditError> {
        if let Some(e) = self.failure() {
            return Err(AuditError::WriterFailed(e));
        }
        let sender = self.sender()?;
        self.shared.queued.fetch_add(1, Ordering::Relaxed);
        let msg = Msg::Record(body);
        let sent = match sender.try_send(msg) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(msg)) => sender.send(msg).map_err(|_| AuditError::Closed),
            Err(TrySendError::Disconnected(_)) => Err(AuditError::Closed),
        };
        if sent.is_err() {
            self.shared.queued.fetch_sub(1, Ordering::Relaxed);
        }
        sent
    }

    /// Waits until every record queued before the call is written and on disk; returns the head.
    pub fn flush(&self) -> Result<Head, AuditError> {
        let sender = self.sender()?;
        let (reply, answer) = mpsc::sync_channel(1);
        sender
            .send(Msg::Flush(reply))
            .map_err(|_| AuditError::Closed)?;
        answer.recv().map_err(|_| AuditError::Closed)?
    }

    /// Flushes, then stops the writer. Appends after this fail with [`AuditError::Closed`].
    pub fn close(&self) -> Result<Head, AuditError> {
        let head = self.flush();
        if let Ok(mut sender) = self.sender.lock() {
            sender.take();
        }
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

/// A verified trail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub records: u64,
    pub head: String,
    pub files: usize,
}

/// The first record that does not verify.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("record {index} ({file}:{line}): {reason}")]
pub struct VerifyError {
    /// 1-based position of the record in the trail.
    pub index: u64,
    pub file: String,
    /// 1-based line in the file.
    pub line: usize,
    pub reason: String,
}

/// Verifies a trail: files in the order given, folders expanded to their
/// `audit-NNNNNN.jsonl` files. The first record must start the chain.
pub fn verify<P: AsRef<Path>>(paths: &[P]) -> Result<VerifyReport, VerifyError> {
    let mut files = Vec::new();
    for p in paths {
        let p = p.as_ref();
        if p.is_dir() {
            match files_in(p) {
                Ok(found) => files.extend(found.into_iter().map(|(_, f)| f)),
                Err(e) => return Err(verify_error(0, p, 0, e.to_string())),
            }
        } else {
            files.push(p.to_path_buf());
        }
    }
    let mut expected_seq = 1u64;
    let mut prev = GENESIS.to_owned();
    let mut index = 0u64;
    for file in &files {
        let mut bytes = Vec::new();
        File::open(file)
            .and_then(|mut f| {
                f.seek(SeekFrom::Start(0))?;
                f.read_to_end(&mut bytes)
            })
            .map_err(|e| verify_error(index + 1, file, 0, format!("cannot read: {e}")))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| verify_error(index + 1, file, 0, "not UTF-8 text".to_owned()))?;
        let mut rest = text.as_str();
        let mut line_no = 0usize;
        while !rest.is_empty() {
            line_no += 1;
            index += 1;
            let Some(end) = rest.find('\n') else {
                return Err(verify_error(
                    index,
                    file,
                    line_no,
                    "record is truncated (no line end)".to_owned(),
                ));
            };
            let line = &rest[..end];
            rest = &rest[end + 1..];
            let parsed =
                parse_line(line).map_err(|reason| verify_error(index, file, line_no, reason))?;
            if parsed.seq != expected_seq {
                return Err(verify_error(
                    index,
                    file,
                    line_no,
                    format!(
                        "sequence number {} where {expected_seq} was due: a record is missing, out of order or inserted",
                        parsed.seq
                    ),
                ));
            }
            if parsed.prev != prev {
                return Err(verify_error(
                    index,
                    file,
                    line_no,
                    "`prev` does not match the previous record's hash: the chain is broken"
                        .to_owned(),
                ));
            }
            prev = parsed.hash;
            expected_seq += 1;
        }
    }
    Ok(VerifyReport {
        records: index,
        head: prev,
        files: files.len(),
    })
}

fn verify_error(index: u64, file: &Path, line: usize, reason: String) -> VerifyError {
    VerifyError {
        index,
        file: file.display().to_string(),
        line,
        reason,
    }
}
