//! The `Gatekeeper` handle: checks, modes, reloads, audit.

use std::cell::{Cell, RefCell};
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use arc_swap::ArcSwapOption;
use policy::{
    Decision, DecisionParts, DecisionRecord, Instant, Policy, Posture, Request, RequestRecord,
};
use serde::Serialize;

use crate::audit::{Ack, AuditConfig, AuditError, AuditHealth, AuditLog, Head, Record};
use crate::bundle::{TrustError, TrustedKeys};
use crate::clock::{Clock, SystemClock};
use crate::keys::VerifierKey;
use crate::reload::{
    Candidate, DEFAULT_MAX_BUNDLE_BYTES, Next, PolicySource, ReloadError, Reloader, describe,
};
use crate::revision::Revision;
use crate::telemetry::{Tally, Telemetry, Unpoliced};

/// Whether denies are enforced.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// A deny stops the request.
    #[default]
    Enforce,
    /// A would-be deny is recorded and reported; the request passes.
    Shadow,
}

/// What to do when no valid policy is active (at start, before the first bundle).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureMode {
    /// Deny gated requests, saying why. Audit failures fail checks.
    #[default]
    Closed,
    /// Let gated requests pass. Audit failures are counted and logged.
    Open,
}

/// What the caller should do with the request.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Gate {
    /// Serve it.
    Allow,
    /// Refuse it (451).
    Deny,
    /// Serve it, but it would have been denied (shadow mode).
    ShadowDeny,
}

impl Gate {
    /// The spelling in records.
    pub fn as_str(self) -> &'static str {
        match self {
            Gate::Allow => "allow",
            Gate::Deny => "deny",
            Gate::ShadowDeny => "shadow-deny",
        }
    }
}

/// Decision ids are handed out in blocks of this many sequence numbers, a block to a
/// thread at a time.
const ID_BLOCK: u64 = 1 << 12;

/// Install numbers, unique in the process (see `Inner::generation`); 0 is none.
static INSTALLS: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The block of decision ids this thread hands out: the gatekeeper's prefix, the next
    /// sequence number, the end of the block.
    static THREAD_IDS: Cell<(u64, u64, u64)> = const { Cell::new((0, 0, 0)) };
    /// The policy this thread last checked with, the install number it was loaded
    /// under, and the strong counts of it that verdicts dropped here gave back.
    static THREAD_ACTIVE: RefCell<Cached> = const { RefCell::new(Cached::NONE) };
}

/// At most this many handles on a policy wait in a thread's cache for its next verdicts;
/// a verdict dropped when the cache is full gives its handle up.
const SPARE: usize = 64;

/// A thread's handle on the policy it last checked with (see [`Gatekeeper::installed`]).
struct Cached {
    generation: u64,
    installed: Weak<Installed>,
    /// Handles on `installed` given back by verdicts dropped on this thread, each taken
    /// by a later check for its verdict. Checking and dropping verdicts then takes no
    /// atomic operation on the policy's count, where taking a handle and giving it up
    /// take one each (and each waits for every write before it).
    spare: Vec<Arc<Installed>>,
}

impl Cached {
    const NONE: Cached = Cached {
        generation: 0,
        installed: Weak::new(),
        spare: Vec::new(),
    };
}

/// Gives up a verdict's handle on its policy: to this thread's cache, for its next
/// check, when the cache holds the same policy and has room; else the handle is dropped.
fn give_back(installed: Arc<Installed>) {
    // Kept by the cache, or else dropped here (in the closure, or with it).
    let _ = THREAD_ACTIVE.try_with(move |cached| {
        if let Ok(mut cached) = cached.try_borrow_mut()
            && cached.spare.len() < SPARE
            && std::ptr::eq(cached.installed.as_ptr(), Arc::as_ptr(&installed))
        {
            cached.spare.push(installed);
        }
    });
}

/// A unique decision id: a per-process random prefix and a counter.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct DecisionId {
    prefix: u64,
    seq: u64,
}

impl fmt::Display for DecisionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}{:016x}", self.prefix, self.seq)
    }
}

impl DecisionId {
    /// The id as one number, the prefix above the counter: its 32 hex digits are the
    /// id's text.
    pub fn as_u128(&self) -> u128 {
        (u128::from(self.prefix) << 64) | u128::from(self.seq)
    }

    /// The id's text, as its `Display` writes it (32 lower-case hex digits), without
    /// formatting: for a header or a body written by hand.
    pub fn hex(&self) -> [u8; 32] {
        /// Each byte's two digits: one load a byte, where a digit at a time takes two.
        const PAIRS: [[u8; 2]; 256] = {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            let mut pairs = [[0u8; 2]; 256];
            let mut b = 0;
            while b < 256 {
                pairs[b] = [HEX[b >> 4], HEX[b & 0xf]];
                b += 1;
            }
            pairs
        };
        let mut text = [0u8; 32];
        for (pair, byte) in text.chunks_exact_mut(2).zip(self.as_u128().to_be_bytes()) {
            pair.copy_from_slice(&PAIRS[usize::from(byte)]);
        }
        text
    }
}

/// Verdicts' JSON written one after another into one buffer (a batch's answer), the same
/// bytes as [`Verdict::write_json`] gives each. What follows a verdict's id depends only on
/// its policy, mode, gate and decision fields ([`policy::AnswerKey`]): when an earlier
/// verdict of the buffer had the same, those bytes are copied from the buffer rather than
/// written again. A batch whose requests share outcomes (many asking for one app from one
/// place at one time) is then mostly copied. The table has [`VerdictWriter::SLOTS`] slots,
/// each the latest outcome written whose mix falls in it (a later one in the same slot
/// takes its place, and is written again when it comes back); a verdict whose outcome is
/// not there costs one look. The buffer is only appended to, so that what the table points
/// at stays as it was written.
#[derive(Debug)]
pub struct VerdictWriter {
    out: Vec<u8>,
    /// The policy the table's outcomes are of, held so that no other takes its place.
    installed: Option<Arc<Installed>>,
    /// By the outcome's mix: the outcome, and where its bytes after the id are in `out`.
    slots: Box<[Option<WrittenAnswer>]>,
    /// Verdicts whose bytes after the id were copied.
    copied: usize,
}

/// An outcome written: its mode, gate and key, and where its bytes after the id are.
#[derive(Debug)]
struct WrittenAnswer {
    mode: Mode,
    gate: Gate,
    key: policy::AnswerKey,
    bytes: std::ops::Range<usize>,
}

impl VerdictWriter {
    /// The outcomes the table holds at most.
    pub const SLOTS: usize = 64;

    /// An empty buffer with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> VerdictWriter {
        VerdictWriter {
            out: Vec::with_capacity(capacity),
            installed: None,
            slots: (0..Self::SLOTS).map(|_| None).collect(),
            copied: 0,
        }
    }

    /// Appends `verdict`'s JSON, as [`Verdict::write_json`] writes it.
    pub fn write(&mut self, verdict: &Verdict) {
        let Some((active, parts)) = verdict.judgement.decided() else {
            verdict.write_undecided(&mut self.out);
            return;
        };
        verdict.write_id(&mut self.out);
        let Some(key) = parts.answer_key() else {
            verdict.write_after_id(active, parts, &mut self.out);
            return;
        };
        if !self
            .installed
            .as_ref()
            .is_some_and(|held| Arc::ptr_eq(held, active))
        {
            self.slots.iter_mut().for_each(|slot| *slot = None);
            self.installed = Some(Arc::clone(active));
        }
        let (mode, gate) = (verdict.mode, verdict.gate);
        let mix = key.mix() ^ ((mode as u64) << 1 | gate as u64).wrapping_mul(0x9e37_79b9);
        let slot = &mut self.slots[(mix % Self::SLOTS as u64) as usize];
        match slot {
            // The mode and the gate follow from the gatekeeper and the judgement today (an
            // installed policy belongs to one gatekeeper, whose mode is fixed): compared all
            // the same, so that a copy stays right if either ever changes.
            Some(w) if w.key == key && w.mode == mode && w.gate == gate => {
                self.out.extend_from_within(w.bytes.clone());
                self.copied += 1;
            }
            _ => {
                let start = self.out.len();
                verdict.write_after_id(active, parts, &mut self.out);
                *slot = Some(WrittenAnswer {
                    mode,
                    gate,
                    key,
                    bytes: start..self.out.len(),
                });
            }
        }
    }

    /// Appends bytes of the caller's (the separators of a list, an item's error).
    pub fn push(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    /// Verdicts whose bytes after the id were copied from an earlier verdict's.
    pub fn copied(&self) -> usize {
        self.copied
    }

    /// The bytes written.
    pub fn into_inner(self) -> Vec<u8> {
        self.out
    }
}

/// Appends, as [`VerdictWriter::push`] does (for `serde_json::to_writer`).
impl std::io::Write for VerdictWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.push(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The active policy and what it was loaded from.
#[derive(Debug)]
pub struct Active {
    pub policy: Policy,
    /// The SHA-256 of the loaded content.
    pub revision: Revision,
    /// The bundle's revision number, for policies from bundles.
    pub bundle_revision: Option<u64>,
    /// When the bundle expires: from then on it is withdrawn (the failure mode applies).
    pub expires: Option<Instant>,
    /// The trusted keys whose signatures on the bundle are valid (empty when no keys are
    /// configured).
    pub signed_by: Vec<String>,
    /// Where it came from, for people.
    pub origin: String,
}

#[derive(Debug)]
enum Judgement {
    Decided {
        active: Held,
        parts: DecisionParts,
    },
    NoPolicy,
    /// The active bundle expired at this instant and is withdrawn.
    Expired {
        at: Instant,
    },
}

impl Judgement {
    /// The policy that decided and the decision, when one did.
    #[inline]
    fn decided(&self) -> Option<(&Arc<Installed>, &DecisionParts)> {
        match self {
            Judgement::Decided {
                active: Held(Some(active)),
                parts,
            } => Some((active, parts)),
            Judgement::Decided {
                active: Held(None), ..
            }
            | Judgement::NoPolicy
            | Judgement::Expired { .. } => None,
        }
    }

    /// Why the failure mode gives the verdict; `None` for a decided one.
    fn unpoliced(&self) -> Option<Unpoliced> {
        match self {
            Judgement::Decided { .. } => None,
            Judgement::NoPolicy => Some(Unpoliced::NoPolicy),
            Judgement::Expired { .. } => Some(Unpoliced::Expired),
        }
    }
}

/// The answer of [`Gatekeeper::check`]: the decision, the revision it used, its id.
#[derive(Debug)]
pub struct Verdict {
    pub decision_id: DecisionId,
    pub gate: Gate,
    pub mode: Mode,
    judgement: Judgement,
}

/// A verdict as JSON.
#[derive(Clone, Debug, Serialize)]
pub struct VerdictRecord {
    pub decision_id: String,
    pub revision: Option<String>,
    pub mode: Mode,
    pub gate: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(flatten)]
    pub decision: Option<DecisionRecord>,
}

/// The reason given when no valid policy is active.
pub const NO_POLICY: &str = "no valid policy is active";

/// A verdict's handle on the policy that decided, given back to the thread it is dropped
/// on ([`give_back`]). The handle's `Drop`, not the verdict's: a verdict has none, so
/// that moving one (out of its `Result`, say) may be left out by the compiler, where a
/// verdict with a `Drop` of its own was kept whole in memory and copied, each copy waiting
/// for the writes of the decision just made. `None` only once given up, as the verdict is
/// dropped.
#[derive(Debug)]
struct Held(Option<Arc<Installed>>);

impl Drop for Held {
    #[inline]
    fn drop(&mut self) {
        if let Some(installed) = self.0.take() {
            give_back(installed);
        }
    }
}

impl Verdict {
    /// Whether the request may be served (allowed, or shadow mode).
    pub fn permits(&self) -> bool {
        self.gate != Gate::Deny
    }

    /// The revision of the policy that decided, if one was active.
    pub fn revision(&self) -> Option<&Revision> {
        (self.judgement.decided()).map(|(active, _)| &active.active.revision)
    }

    /// The policy that decided, if one was active.
    pub fn active(&self) -> Option<&Arc<Active>> {
        (self.judgement.decided()).map(|(active, _)| &active.active)
    }

    /// The decision, naming instruments and apps; `None` when no policy was active.
    pub fn decision(&self) -> Option<Decision<'_>> {
        (self.judgement.decided()).map(|(active, parts)| active.active.policy.view(parts.clone()))
    }

    /// Appends the verdict's JSON: the bytes its `Serialize` gives (`decision_id`,
    /// `revision`, `mode`, `gate`, then the decision's fields), written straight from the
    /// decision, with what every verdict of its policy shares rendered once per policy
    /// (the revision, each reason's texts). A verdict without a decision (no policy, or an
    /// expired bundle) is written by `Serialize` itself.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let Some((active, parts)) = self.judgement.decided() else {
            self.write_undecided(out);
            return;
        };
        self.write_id(out);
        self.write_after_id(active, parts, out);
    }

    /// A verdict without a decision, by `Serialize`.
    fn write_undecided(&self, out: &mut Vec<u8>) {
        let start = out.len();
        // Writing into a vector fails only if `Serialize` does, which it does not.
        if serde_json::to_writer(&mut *out, self).is_err() {
            out.truncate(start);
        }
    }

    /// The JSON up to the end of the decision id's string.
    fn write_id(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"decision_id\":\"");
        out.extend_from_slice(&self.decision_id.hex());
    }

    /// The JSON after the decision id's string: what depends on the policy, the mode, the
    /// gate and the decision's fields alone.
    fn write_after_id(&self, active: &Installed, parts: &DecisionParts, out: &mut Vec<u8>) {
        let rendered = &active.rendered;
        out.extend_from_slice(b"\",\"revision\":");
        out.extend_from_slice(&rendered.revision);
        out.extend_from_slice(match self.mode {
            Mode::Enforce => b",\"mode\":\"enforce\",\"gate\":\"",
            Mode::Shadow => b",\"mode\":\"shadow\",\"gate\":\"",
        });
        out.extend_from_slice(self.gate.as_str().as_bytes());
        out.extend_from_slice(b"\",");
        let decision = active.active.policy.view(parts.clone());
        rendered.decisions.write_fields(&decision, out);
        out.push(b'}');
    }

    /// The revision header's value of the policy that decided, made when it was installed.
    #[cfg(feature = "tower")]
    pub(crate) fn revision_header(&self) -> Option<http::HeaderValue> {
        (self.judgement.decided()).and_then(|(active, _)| active.rendered.revision_header.clone())
    }

    /// The verdict as JSON.
    pub fn to_record(&self) -> VerdictRecord {
        VerdictRecord {
            decision_id: self.decision_id.to_string(),
            revision: self.revision().map(|r| r.0.clone()),
            mode: self.mode,
            gate: self.gate.as_str(),
            error: match &self.judgement {
                Judgement::Decided { .. } => None,
                Judgement::NoPolicy => Some(NO_POLICY.to_owned()),
                Judgement::Expired { at } => {
                    Some(format!("{NO_POLICY}: the policy bundle expired at {at}"))
                }
            },
            decision: self.decision().map(|d| d.to_record()),
        }
    }
}

impl Serialize for Verdict {
    /// The same JSON as [`Verdict::to_record`]'s, written from borrowed data: the
    /// decision's fields follow the verdict's in one flat object.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        struct Shown<'a, T>(&'a T);
        impl<T: fmt::Display> Serialize for Shown<'_, T> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self.0)
            }
        }
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("decision_id", &Shown(&self.decision_id))?;
        map.serialize_entry("revision", &self.revision().map(|r| r.0.as_str()))?;
        map.serialize_entry("mode", &self.mode)?;
        map.serialize_entry("gate", self.gate.as_str())?;
        match &self.judgement {
            Judgement::Decided {
                active: Held(Some(active)),
                parts,
            } => {
                active
                    .active
                    .policy
                    .view(parts.clone())
                    .serialize_fields(&mut map)?;
            }
            Judgement::Decided {
                active: Held(None), ..
            }
            | Judgement::NoPolicy => map.serialize_entry("error", NO_POLICY)?,
            Judgement::Expired { at } => map.serialize_entry(
                "error",
                &format!("{NO_POLICY}: the policy bundle expired at {at}"),
            )?,
        }
        map.end()
    }
}

/// A verdict whose audit record may still be on its way to disk: a future for async
/// code, [`PendingVerdict::wait`] for threads that may block. Given by
/// [`Gatekeeper::check_async`]; it resolves once the record is on disk (durable audit)
/// or at once (buffered audit, or none). In closed failure mode, a record that cannot be
/// written makes it resolve to [`CheckError::Audit`]; in open mode the verdict stands and
/// the failure is counted.
#[derive(Debug)]
#[must_use = "a verdict may be answered only once its record is on disk: await it or `wait()`"]
pub struct PendingVerdict {
    verdict: Option<Verdict>,
    ack: Option<Ack>,
    failure_mode: FailureMode,
}

impl PendingVerdict {
    fn settle(&mut self, receipt: Result<(), AuditError>) -> Result<Verdict, CheckError> {
        let verdict = self
            .verdict
            .take()
            .ok_or(CheckError::Audit(AuditError::Closed))?;
        match receipt {
            Ok(()) => Ok(verdict),
            Err(e) => {
                metrics::counter!(crate::telemetry::AUDIT_FAILURES).increment(1);
                match self.failure_mode {
                    FailureMode::Closed => Err(CheckError::Audit(e)),
                    // The writer logs the failure and counts the records lost.
                    FailureMode::Open => Ok(verdict),
                }
            }
        }
    }

    /// Blocks the calling thread until the record is on disk (durable audit), then gives
    /// the verdict. Never call it on an async worker thread: await the `PendingVerdict`.
    pub fn wait(mut self) -> Result<Verdict, CheckError> {
        let receipt = self.ack.take().map_or(Ok(()), Ack::wait);
        self.settle(receipt)
    }
}

impl std::future::Future for PendingVerdict {
    type Output = Result<Verdict, CheckError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let receipt = match self.ack.as_mut() {
            Some(ack) => match std::pin::Pin::new(ack).poll(cx) {
                std::task::Poll::Ready(r) => r,
                std::task::Poll::Pending => return std::task::Poll::Pending,
            },
            None => Ok(()),
        };
        self.ack = None;
        std::task::Poll::Ready(self.settle(receipt))
    }
}

/// Checks of many requests in a row, for a gatekeeper without an audit trail
/// ([`Gatekeeper::checks`]). Each check gives what [`Gatekeeper::check`] would, with two
/// differences that make it cheaper: every check is decided under the policy the first one
/// was (as if the batch had come in at one instant: an install or an expiry during it
/// applies from the next batch), and the verdicts after the first are counted in the
/// metrics when the checks end (when this is dropped). Per check, this saves taking and
/// releasing the policy, and updating counters that every core's checks update. Keep one
/// for one batch: a `Checks` kept longer would decide with a replaced or expired policy.
#[derive(Debug)]
pub struct Checks<'g> {
    gatekeeper: &'g Gatekeeper,
    /// The last verdict, which the next check writes over; none before the first.
    verdict: Option<Verdict>,
    /// The verdicts after the first, to be counted.
    tally: Tally,
}

impl Checks<'_> {
    /// Decides a request: the verdict, until the next check.
    pub fn check(&mut self, request: &Request) -> &Verdict {
        let gk = self.gatekeeper;
        match self.verdict {
            // The first: as `check` gives it (and counts it), with the policy it takes.
            None => self.verdict.insert(gk.verdict(request)),
            Some(ref mut verdict) => {
                let denied = match &mut verdict.judgement {
                    Judgement::Decided {
                        active: Held(Some(active)),
                        parts,
                    } => {
                        *parts = active.active.policy.decide_parts(request, gk.inner.posture);
                        parts.is_deny()
                    }
                    Judgement::Decided {
                        active: Held(None), ..
                    }
                    | Judgement::NoPolicy
                    | Judgement::Expired { .. } => gk.unpoliced_denies(),
                };
                verdict.gate = gk.gate_of(denied);
                let why = verdict.judgement.unpoliced();
                self.tally.verdict(verdict.gate, request.action(), why);
                verdict.decision_id = gk.decision_id();
                verdict
            }
        }
    }
}

impl Drop for Checks<'_> {
    fn drop(&mut self) {
        self.gatekeeper.inner.telemetry.tally(&self.tally);
    }
}

/// Why a check could not give a verdict.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The audit trail failed and the failure mode is closed.
    #[error("audit trail unavailable, refusing to decide unrecorded: {0}")]
    Audit(AuditError),
}

/// Why [`Builder::build`] gave no gatekeeper.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("the first policy load failed (to start with no policy active, set `start_empty`)")]
    FirstLoad(#[source] ReloadError),
    #[error(
        "no policy source and no policy are given (to start with no policy active, set `start_empty`)"
    )]
    NoPolicy,
    #[error("the trusted keys cannot be used")]
    Trust(#[source] TrustError),
    #[error(
        "trusted keys are set, but the policy source is not a bundle: policy folders carry no signatures"
    )]
    TrustWithoutBundle,
    #[cfg(feature = "http-source")]
    #[error("the bundle URL is refused")]
    Url(#[source] crate::http_source::FetchError),
    #[error("cannot open the audit trail")]
    Audit(#[source] AuditError),
}

/// Whether the gatekeeper has a policy to decide with, for health checks.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Readiness {
    /// A valid policy is active.
    Ready {
        revision: Revision,
        bundle_revision: Option<u64>,
    },
    /// No policy has loaded: the failure mode applies. `reason` is the last load failure.
    NoPolicy { reason: String },
    /// The active bundle expired at `at` and is withdrawn: the failure mode applies until
    /// a newer bundle loads.
    Expired {
        revision: Revision,
        bundle_revision: Option<u64>,
        at: Instant,
    },
    /// The audit trail cannot write records and the failure mode is closed, so checks
    /// are refused until it recovers (it retries by itself). `error` is why.
    AuditFailing { error: String },
}

impl Readiness {
    /// Whether checks are decided by a policy (rather than by the failure mode).
    pub fn is_ready(&self) -> bool {
        matches!(self, Readiness::Ready { .. })
    }
}

impl fmt::Display for Readiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Readiness::Ready { revision, .. } => write!(f, "ready: revision {revision}"),
            Readiness::NoPolicy { reason } => write!(f, "{NO_POLICY}: {reason}"),
            Readiness::Expired { revision, at, .. } => write!(
                f,
                "{NO_POLICY}: the policy bundle of revision {revision} expired at {at}"
            ),
            Readiness::AuditFailing { error } => {
                write!(f, "the audit trail cannot write records: {error}")
            }
        }
    }
}

/// What a successful reload did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reloaded {
    /// A new policy is active.
    Swapped(Revision),
    /// The source holds what is already active.
    Unchanged(Revision),
}

/// An installed policy, with what the check path needs to withdraw it when it expires.
#[derive(Debug)]
struct Installed {
    active: Arc<Active>,
    /// `active.expires`, at hand.
    expires: Option<Instant>,
    /// Whether its expiry has been logged and counted.
    expiry_noted: AtomicBool,
    /// What its verdicts' JSON shares.
    rendered: Rendered,
}

/// What the JSON of one policy's verdicts shares: the revision as a JSON string, and the
/// policy's [`policy::DecisionJson`] (each reason's texts escaped once).
#[derive(Debug)]
struct Rendered {
    revision: Vec<u8>,
    decisions: policy::DecisionJson,
    /// The revision as the layer's header value.
    #[cfg(feature = "tower")]
    revision_header: Option<http::HeaderValue>,
}

impl Installed {
    fn new(active: Active) -> Installed {
        let active = Arc::new(active);
        Installed {
            expires: active.expires,
            rendered: Rendered::of(&active),
            active,
            expiry_noted: AtomicBool::new(false),
        }
    }
}

impl Rendered {
    /// Made when a policy is installed (on the thread that installs it), not by the first
    /// verdict written: `DecisionJson::new` reads every id of the policy.
    fn of(active: &Active) -> Rendered {
        let mut revision = Vec::with_capacity(active.revision.0.len() + 2);
        // Writing a string into a vector cannot fail.
        if serde_json::to_writer(&mut revision, &active.revision.0).is_err() {
            revision = b"null".to_vec();
        }
        Rendered {
            revision,
            decisions: policy::DecisionJson::new(&active.policy),
            #[cfg(feature = "tower")]
            revision_header: http::HeaderValue::from_str(&active.revision.0).ok(),
        }
    }
}

pub(crate) struct Inner {
    active: ArcSwapOption<Installed>,
    mode: Mode,
    failure_mode: FailureMode,
    posture: Posture,
    clock: Arc<dyn Clock>,
    audit: Option<AuditLog>,
    pub(crate) source: Option<PolicySource>,
    /// Reloads run one at a time, under this lock (never taken by checks).
    reloader: Mutex<Reloader>,
    /// The last load failure, for [`Gatekeeper::readiness`]; cleared by a success.
    last_failure: ArcSwapOption<String>,
    telemetry: Telemetry,
    prefix: u64,
    seq: AtomicU64,
    /// Raised (to a number from [`INSTALLS`]) by every install, after the swap: a
    /// thread's cached handle on the active policy ([`THREAD_ACTIVE`]) is good while
    /// this still holds the number it was cached with.
    generation: AtomicU64,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gatekeeper")
            .field("mode", &self.mode)
            .field("failure_mode", &self.failure_mode)
            .field("source", &self.source)
            .field(
                "revision",
                &self
                    .active
                    .load()
                    .as_ref()
                    .map(|a| a.active.revision.short().to_owned()),
            )
            .finish()
    }
}

/// The embeddable gatekeeper: cheap to clone, `Send + Sync`. Checks read the active
/// policy without a lock; reloads swap it atomically, so a check in flight finishes on
/// the revision it started with. **API Boundary.**
#[derive(Clone, Debug)]
pub struct Gatekeeper {
    pub(crate) inner: Arc<Inner>,
}

/// Builds a [`Gatekeeper`].
#[derive(Debug, Default)]
pub struct Builder {
    source: Option<PolicySource>,
    policy: Option<(Policy, Revision)>,
    mode: Mode,
    failure_mode: FailureMode,
    posture: Posture,
    clock: Option<Arc<dyn Clock>>,
    audit: Option<AuditConfig>,
    trusted_keys: Option<(Vec<VerifierKey>, usize)>,
    max_bundle_bytes: Option<u64>,
    start_empty: bool,
}

impl Builder {
    /// Policies from folders on disk.
    pub fn policy_dirs<P: Into<PathBuf>>(mut self, dirs: impl IntoIterator<Item = P>) -> Builder {
        self.source = Some(PolicySource::Dirs(
            dirs.into_iter().map(Into::into).collect(),
        ));
        self
    }

    /// Policies from a source.
    pub fn source(mut self, source: PolicySource) -> Builder {
        self.source = Some(source);
        self
    }

    /// A policy compiled by the caller (no reloads).
    pub fn policy(mut self, policy: Policy, revision: Revision) -> Builder {
        self.policy = Some((policy, revision));
        self
    }

    /// Enforce or shadow.
    pub fn mode(mut self, mode: Mode) -> Builder {
        self.mode = mode;
        self
    }

    /// Closed (default) or open.
    pub fn failure_mode(mut self, failure_mode: FailureMode) -> Builder {
        self.failure_mode = failure_mode;
        self
    }

    /// How to read instants the law leaves open, and whether non-enforcement orders
    /// are honoured; conservative and honoured by default.
    pub fn posture(mut self, posture: Posture) -> Builder {
        self.posture = posture;
        self
    }

    /// The clock; the system clock by default.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Builder {
        self.clock = Some(clock);
        self
    }

    /// Keep an audit trail.
    pub fn audit(mut self, config: AuditConfig) -> Builder {
        self.audit = Some(config);
        self
    }

    /// Require bundles (from a file, a URL or the cache) to carry valid signatures by at
    /// least `threshold` of `keys`, counted by key name. To rotate a key, list the old and
    /// the new one while bundles are signed with both (or with enough others), then drop the
    /// old one. A signature by a key not listed is ignored; a signature by a listed key that
    /// does not verify refuses the bundle.
    pub fn trusted_keys(
        mut self,
        keys: impl IntoIterator<Item = VerifierKey>,
        threshold: usize,
    ) -> Builder {
        self.trusted_keys = Some((keys.into_iter().collect(), threshold));
        self
    }

    /// The largest bundle accepted, in bytes, over HTTP and on disk; 64 MiB by default.
    /// A larger bundle is refused without being read past the limit.
    pub fn max_bundle_bytes(mut self, bytes: u64) -> Builder {
        self.max_bundle_bytes = Some(bytes);
        self
    }

    /// Start even when the first load fails (or nothing is given to load): no policy is
    /// active and the failure mode applies until a reload succeeds. Off by default, so that
    /// a wrong path is an error rather than a gatekeeper that denies (or, open, serves)
    /// everything.
    pub fn start_empty(mut self, start_empty: bool) -> Builder {
        self.start_empty = start_empty;
        self
    }

    /// Checks the settings, opens the audit trail, registers the metrics and loads the
    /// policy: for a bundle URL with a cache folder, the cached bundle first (checked like a
    /// download), then the source. A first load that fails is an error unless the cached
    /// bundle is active or [`Builder::start_empty`] is set; every failure is logged.
    pub fn build(self) -> Result<Gatekeeper, BuildError> {
        let trust = self
            .trusted_keys
            .map(|(keys, threshold)| TrustedKeys::new(keys, threshold))
            .transpose()
            .map_err(BuildError::Trust)?;
        match &self.source {
            Some(PolicySource::BundleFile(_)) => {}
            #[cfg(feature = "http-source")]
            Some(PolicySource::BundleUrl(source)) => {
                crate::http_source::check_url(&source.url, source.allow_insecure_http)
                    .map_err(BuildError::Url)?;
            }
            Some(PolicySource::Dirs(_)) | None if trust.is_some() => {
                return Err(BuildError::TrustWithoutBundle);
            }
            Some(PolicySource::Dirs(_)) | None => {}
        }
        let telemetry = Telemetry::register();
        let audit = self
            .audit
            .map(AuditLog::open)
            .transpose()
            .map_err(BuildError::Audit)?;
        let mut seed = RandomState::new().build_hasher();
        seed.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        let gk = Gatekeeper {
            inner: Arc::new(Inner {
                active: ArcSwapOption::empty(),
                mode: self.mode,
                failure_mode: self.failure_mode,
                posture: self.posture,
                clock: self.clock.unwrap_or_else(|| Arc::new(SystemClock)),
                audit,
                reloader: Mutex::new(Reloader::new(
                    self.source.clone(),
                    trust,
                    self.max_bundle_bytes.unwrap_or(DEFAULT_MAX_BUNDLE_BYTES),
                )),
                source: self.source,
                last_failure: ArcSwapOption::empty(),
                telemetry,
                prefix: seed.finish(),
                seq: AtomicU64::new(0),
                generation: AtomicU64::new(0),
            }),
        };
        if let Some((policy, revision)) = self.policy {
            gk.install(Active {
                policy,
                revision,
                bundle_revision: None,
                expires: None,
                signed_by: Vec::new(),
                origin: "compiled by the caller".to_owned(),
            });
        }
        let cached = gk
            .inner
            .reloader
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .cached(gk.now());
        if let Some(candidate) = cached {
            gk.offer(candidate);
        }
        if gk.inner.source.is_some() {
            if let Err(e) = gk.reload()
                && gk.active().is_none()
                && !self.start_empty
            {
                return Err(BuildError::FirstLoad(e));
            }
        } else if gk.active().is_none() && !self.start_empty {
            return Err(BuildError::NoPolicy);
        }
        Ok(gk)
    }
}

impl Gatekeeper {
    /// A builder.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// The clock's current instant.
    pub fn now(&self) -> Instant {
        self.inner.clock.now()
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.inner.mode
    }

    /// The failure mode.
    pub fn failure_mode(&self) -> FailureMode {
        self.inner.failure_mode
    }

    /// The posture decisions are made under.
    pub fn posture(&self) -> Posture {
        self.inner.posture
    }

    /// The active policy, if any: `None` before the first load and once the active bundle
    /// has expired.
    pub fn active(&self) -> Option<Arc<Active>> {
        let installed = self.inner.active.load_full()?;
        self.usable(installed).ok().map(|i| i.active.clone())
    }

    /// Whether a policy decides checks, and if not, why: for health checks.
    pub fn readiness(&self) -> Readiness {
        if self.inner.failure_mode == FailureMode::Closed
            && let Some(error) = self.inner.audit.as_ref().and_then(AuditLog::failure)
        {
            return Readiness::AuditFailing { error };
        }
        let Some(installed) = self.inner.active.load_full() else {
            let reason = self.inner.last_failure.load_full();
            return Readiness::NoPolicy {
                reason: reason
                    .map_or_else(|| "nothing has loaded yet".to_owned(), |r| (*r).clone()),
            };
        };
        let active = installed.active.clone();
        match self.usable(installed) {
            Ok(_) => Readiness::Ready {
                revision: active.revision.clone(),
                bundle_revision: active.bundle_revision,
            },
            Err(at) => Readiness::Expired {
                revision: active.revision.clone(),
                bundle_revision: active.bundle_revision,
                at,
            },
        }
    }

    /// The installed policy, unless its expiry has passed by the handle's clock: then the
    /// instant it expired. One comparison (and, for a bundle with an expiry, a clock read):
    /// cheap enough for every check.
    #[inline]
    fn usable(&self, installed: Arc<Installed>) -> Result<Arc<Installed>, Instant> {
        match installed.expires {
            Some(at) if self.inner.clock.now() >= at => {
                if !installed.expiry_noted.load(Ordering::Relaxed) {
                    self.note_expiry(&installed, at);
                }
                Err(at)
            }
            _ => Ok(installed),
        }
    }

    /// Logs and counts, once, that the active bundle expired.
    #[cold]
    fn note_expiry(&self, installed: &Installed, at: Instant) {
        if installed.expiry_noted.swap(true, Ordering::AcqRel) {
            return;
        }
        self.inner.telemetry.expired.set(1.0);
        tracing::error!(
            revision = %installed.active.revision.short(),
            bundle_revision = ?installed.active.bundle_revision,
            expired_at = %at,
            failure_mode = ?self.inner.failure_mode,
            "the active policy bundle expired and is withdrawn; {} until a newer bundle loads",
            self.failure_mode_effect()
        );
    }

    /// What the failure mode does, in words, for logs.
    fn failure_mode_effect(&self) -> &'static str {
        match self.inner.failure_mode {
            FailureMode::Closed => "the failure mode is closed: gated requests are denied",
            FailureMode::Open => "the failure mode is open: gated requests are served unchecked",
        }
    }

    /// Decides a request (judged at `request.at`) and hands its record to the audit
    /// trail without waiting: it never blocks and takes no lock, so it is what async code
    /// calls. The record is queued before this returns; the [`PendingVerdict`] resolves
    /// (`.await` it, or [`PendingVerdict::wait`] on a thread that may block) once the
    /// record is on disk under [`Durability::Durable`](crate::Durability), at once under
    /// `Buffered`. Answer only with a resolved verdict. For a batch, call this for every
    /// request first, then await them in turn: one write and one sync carry the batch.
    ///
    /// ```
    /// use gatekeeper::{CheckError, Gatekeeper, policy::Request};
    ///
    /// async fn answer(gk: &Gatekeeper, requests: &[Request]) -> Result<(), CheckError> {
    ///     // One request.
    ///     let verdict = gk.check_async(&requests[0]).await?;
    ///     // A batch: queue every record first, then await them.
    ///     let pending: Vec<_> = requests.iter().map(|r| gk.check_async(r)).collect();
    ///     for p in pending {
    ///         let verdict = p.await?;
    ///     }
    ///     Ok(())
    /// }
    /// ```
    pub fn check_async(&self, request: &Request) -> PendingVerdict {
        let verdict = self.verdict(request);
        let ack = self
            .inner
            .audit
            .as_ref()
            .map(|audit| audit.append(self.record(request, &verdict)));
        PendingVerdict {
            verdict: Some(verdict),
            ack,
            failure_mode: self.inner.failure_mode,
        }
    }

    /// Decides a request (judged at `request.at`), records it in the audit trail, and
    /// says what to do with it. Under durable audit this blocks the calling thread until
    /// the record is on disk (one sync serves every check waiting at the time): call it
    /// from threads that may block; async code calls [`Gatekeeper::check_async`].
    #[inline]
    pub fn check(&self, request: &Request) -> Result<Verdict, CheckError> {
        if self.inner.audit.is_none() {
            // No record to wait for: the verdict as it is, without a pending one to settle.
            return Ok(self.verdict(request));
        }
        self.check_async(request).wait()
    }

    /// Decides a request and counts the verdict: what `check` and `check_async` share.
    #[inline]
    fn verdict(&self, request: &Request) -> Verdict {
        // Each arm builds its verdict whole: the decision (80 bytes, just written) is moved
        // once into the verdict, not through a tuple and a match as well (each such copy
        // waits for the writes it reads, and they showed in a check's profile).
        match self.installed().map(|a| self.usable(a)) {
            Some(Ok(active)) => {
                let parts = active
                    .active
                    .policy
                    .decide_parts(request, self.inner.posture);
                let gate = self.gate(parts.is_deny(), request, None);
                Verdict {
                    decision_id: self.decision_id(),
                    gate,
                    mode: self.inner.mode,
                    judgement: Judgement::Decided {
                        active: Held(Some(active)),
                        parts,
                    },
                }
            }
            Some(Err(at)) => self.unpoliced(request, Judgement::Expired { at }),
            None => self.unpoliced(request, Judgement::NoPolicy),
        }
    }

    /// The verdict of the failure mode: no policy, or an expired one.
    #[cold]
    fn unpoliced(&self, request: &Request, judgement: Judgement) -> Verdict {
        Verdict {
            decision_id: self.decision_id(),
            gate: self.gate(self.unpoliced_denies(), request, judgement.unpoliced()),
            mode: self.inner.mode,
            judgement,
        }
    }

    /// Whether the failure mode denies (no policy, or an expired one).
    #[inline]
    fn unpoliced_denies(&self) -> bool {
        self.inner.failure_mode == FailureMode::Closed
    }

    /// The gate of a denial or not under the handle's mode, counted.
    #[inline]
    fn gate(&self, denied: bool, request: &Request, unpoliced: Option<Unpoliced>) -> Gate {
        let gate = self.gate_of(denied);
        self.inner
            .telemetry
            .verdict(gate, request.action(), unpoliced);
        gate
    }

    /// The gate of a denial or not under the handle's mode.
    #[inline]
    fn gate_of(&self, denied: bool) -> Gate {
        match (denied, self.inner.mode) {
            (false, _) => Gate::Allow,
            (true, Mode::Enforce) => Gate::Deny,
            (true, Mode::Shadow) => Gate::ShadowDeny,
        }
    }

    /// Checks of many requests in a row (a batch), or `None` when the gatekeeper keeps an
    /// audit trail: then each check's record is to be awaited, so call
    /// [`Gatekeeper::check_async`] for every request, then await them.
    pub fn checks(&self) -> Option<Checks<'_>> {
        if self.is_audited() {
            return None;
        }
        Some(Checks {
            gatekeeper: self,
            verdict: None,
            tally: Tally::default(),
        })
    }

    /// The installed policy, through this thread's cached handle while no install has
    /// happened since it was cached: one of the counts the cache owns (given back by this
    /// thread's verdicts), or else upgrading its `Weak` (one atomic operation, where
    /// loading from the `ArcSwapOption` and keeping an `Arc` takes three). A thread that
    /// stops checking keeps the policy it last checked with alive (replaced since, or that
    /// of a gatekeeper since dropped) by the handles its dropped verdicts gave back (at
    /// most [`SPARE`]), until it checks again or ends. Before its first install a
    /// gatekeeper's number is 0, which every such gatekeeper shares: then the cache is not
    /// used (a policy swapped in just before the number is raised would otherwise be
    /// cached under 0, and read by a check of another gatekeeper with no policy).
    #[inline]
    fn installed(&self) -> Option<Arc<Installed>> {
        let generation = self.inner.generation.load(Ordering::Acquire);
        if generation == 0 {
            return self.inner.active.load_full();
        }
        THREAD_ACTIVE
            .try_with(|cached| {
                let mut cached = cached.borrow_mut();
                if cached.generation == generation {
                    if let Some(installed) = cached.spare.pop() {
                        return Some(installed);
                    }
                    if let Some(installed) = cached.installed.upgrade() {
                        return Some(installed);
                    }
                }
                let installed = self.inner.active.load_full();
                cached.generation = generation;
                cached.installed = installed.as_ref().map_or_else(Weak::new, Arc::downgrade);
                let replaced = std::mem::take(&mut cached.spare);
                drop(cached);
                // Given up out of the borrow: the last of them frees the policy.
                drop(replaced);
                installed
            })
            // A check from a thread-local's destructor: no cache.
            .unwrap_or_else(|_| self.inner.active.load_full())
    }

    /// The next decision id: the next of this thread's block of the gatekeeper's
    /// sequence numbers, or of a new block. Checks on several threads then do not all
    /// write one counter (a line that would move between cores on every check); ids stay
    /// unique, not ordered across threads.
    #[inline]
    fn decision_id(&self) -> DecisionId {
        let prefix = self.inner.prefix;
        let seq = THREAD_IDS
            .try_with(|block| {
                let (of, next, end) = block.get();
                if of == prefix && next < end {
                    block.set((of, next + 1, end));
                    return next;
                }
                let start = self.inner.seq.fetch_add(ID_BLOCK, Ordering::Relaxed);
                block.set((prefix, start + 1, start + ID_BLOCK));
                start
            })
            // A check from a thread-local's destructor: no block.
            .unwrap_or_else(|_| self.inner.seq.fetch_add(1, Ordering::Relaxed));
        DecisionId { prefix, seq }
    }

    /// The verdict's audit record: the revision and the ids of what decided, not their
    /// texts.
    fn record(&self, request: &Request, verdict: &Verdict) -> Record {
        let mut record = Record::decision(
            verdict.decision_id.to_string(),
            self.now().as_nanos().div_euclid(1_000_000),
            verdict.revision().map(|r| r.short().to_owned()),
            RequestRecord::from(request),
        );
        let shadow = verdict.gate == Gate::ShadowDeny;
        match verdict.judgement.decided() {
            Some((active, parts)) => {
                let policy = &active.active.policy;
                match policy.view(parts.clone()).verdict {
                    policy::Verdict::Deny {
                        prohibitions,
                        set_aside,
                    } => {
                        let ids = prohibitions
                            .iter()
                            .map(|&p| policy.prohibition(p).id.clone())
                            .collect();
                        if shadow {
                            record.shadow_deny = Some(ids);
                        } else {
                            record.deny = Some(ids);
                        }
                        record.set_aside = set_aside
                            .iter()
                            .map(|&i| policy.instrument(i).id.clone())
                            .collect();
                    }
                    policy::Verdict::Allow { because, by, .. } => {
                        record.allow = Some(because.as_str().to_owned());
                        record.by = by.map(|i| policy.instrument(i).id.clone());
                    }
                }
            }
            // No policy decided: the failure mode did.
            None => match verdict.gate {
                Gate::Deny => record.deny = Some(Vec::new()),
                Gate::ShadowDeny => record.shadow_deny = Some(Vec::new()),
                Gate::Allow => record.allow = Some("no-policy".to_owned()),
            },
        }
        record
    }

    /// Whether checks are recorded in an audit trail (set when the gatekeeper is built).
    /// Without one, [`Gatekeeper::check`] never blocks, and a pending verdict is settled
    /// as it is given.
    pub fn is_audited(&self) -> bool {
        self.inner.audit.is_some()
    }

    /// The audit trail's state (records written and lost, whether it is failing);
    /// `None` without a trail.
    pub fn audit_health(&self) -> Option<AuditHealth> {
        self.inner.audit.as_ref().map(AuditLog::health)
    }

    /// Waits until every audit record so far is on disk; the chain's head.
    pub fn flush_audit(&self) -> Result<Option<Head>, AuditError> {
        self.inner.audit.as_ref().map(AuditLog::flush).transpose()
    }

    /// Flushes and closes the audit trail; checks after this fail in closed mode.
    pub fn close_audit(&self) -> Result<Option<Head>, AuditError> {
        self.inner.audit.as_ref().map(AuditLog::close).transpose()
    }

    /// Audit records written and lost so far.
    pub fn audit_counts(&self) -> Option<(u64, u64)> {
        self.inner.audit.as_ref().map(AuditLog::counts)
    }

    pub(crate) fn install(&self, active: Active) -> Revision {
        let revision = active.revision.clone();
        tracing::info!(
            revision = %revision.short(),
            bundle_revision = ?active.bundle_revision,
            expires = ?active.expires.map(|e| e.to_string()),
            signed_by = ?active.signed_by,
            origin = %active.origin,
            "policy active"
        );
        let telemetry = &self.inner.telemetry;
        telemetry.reloads.increment(1);
        telemetry.expired.set(0.0);
        telemetry
            .expires_at
            .set(active.expires.map_or(0.0, |e| e.as_nanos() as f64 / 1e9));
        let previous = self
            .inner
            .active
            .swap(Some(Arc::new(Installed::new(active))));
        // After the swap, so that a check that sees the new number finds the new policy;
        // raised, never lowered, so that of two installs in a race the later number stays.
        self.inner
            .generation
            .fetch_max(INSTALLS.fetch_add(1, Ordering::Relaxed), Ordering::Release);
        telemetry.policy_info(
            Some(&revision),
            previous.as_ref().map(|p| &p.active.revision),
        );
        revision
    }

    /// Counts a failed load and logs it with every diagnostic, each distinct failure once
    /// (a failure repeated on every poll is logged when it first happens), saying whether
    /// a policy stays active.
    fn reject(&self, reloader: &mut Reloader, error: ReloadError) -> ReloadError {
        let text = describe(&error);
        self.inner.telemetry.rejected_reloads.increment(1);
        self.inner.last_failure.store(Some(Arc::new(text.clone())));
        if reloader.last_error.as_deref() != Some(text.as_str()) {
            match self.inner.active.load_full().map(|i| self.usable(i)) {
                Some(Ok(installed)) => tracing::warn!(
                    error = %text,
                    revision = %installed.active.revision.short(),
                    "policy reload rejected; the active policy stays active"
                ),
                Some(Err(at)) => tracing::error!(
                    error = %text,
                    expired_at = %at,
                    "policy reload rejected, and the active bundle has expired: no policy is active; {}",
                    self.failure_mode_effect()
                ),
                None => tracing::error!(
                    error = %text,
                    "policy load failed and no policy is active; {}",
                    self.failure_mode_effect()
                ),
            }
        }
        reloader.last_error = Some(text);
        error
    }

    /// Installs a candidate unless it is what is active already.
    fn offer(&self, candidate: Candidate) -> Reloaded {
        let Candidate {
            loaded,
            bundle,
            origin,
        } = candidate;
        let (bundle_revision, expires, signed_by) = match bundle {
            Some(b) => (Some(b.revision), b.expires, b.signed_by),
            None => (None, None, Vec::new()),
        };
        if let Some(active) = self.active()
            && active.revision == loaded.revision
            && active.bundle_revision == bundle_revision
            && active.expires == expires
        {
            return Reloaded::Unchanged(active.revision.clone());
        }
        Reloaded::Swapped(self.install(Active {
            policy: loaded.policy,
            revision: loaded.revision,
            bundle_revision,
            expires,
            signed_by,
            origin,
        }))
    }

    /// Sets the policy gauges again from the installed policy, so that they are fresh
    /// after every reload attempt (and an exporter's idle timeout keeps only these).
    fn refresh_gauges(&self) {
        let telemetry = &self.inner.telemetry;
        let Some(installed) = self.inner.active.load_full() else {
            telemetry.expired.set(0.0);
            return;
        };
        let revision = installed.active.revision.clone();
        let expired = self.usable(installed).is_err();
        telemetry.policy_info(Some(&revision), None);
        telemetry.expired.set(if expired { 1.0 } else { 0.0 });
    }

    /// Loads the policy source now. On any failure the last good policy stays active
    /// (until it expires) and the error says why; every failure is counted, and each
    /// distinct one logged.
    pub fn reload(&self) -> Result<Reloaded, ReloadError> {
        let mut reloader = self
            .inner
            .reloader
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let active = self.active();
        let next = reloader.next(self.now(), active.as_ref().map(|a| &a.revision));
        let result = match next {
            Ok(Next::Unchanged(revision)) => Ok(Reloaded::Unchanged(revision)),
            Ok(Next::Candidate(candidate)) => Ok(self.offer(*candidate)),
            Err(e) => Err(e),
        };
        self.refresh_gauges();
        match result {
            Ok(r) => {
                reloader.last_error = None;
                self.inner.last_failure.store(None);
                Ok(r)
            }
            Err(e) => Err(self.reject(&mut reloader, e)),
        }
    }

    /// Reloads every `interval` (with up to a tenth of it as random jitter) on a thread
    /// of its own, until the returned watcher is dropped or every handle is gone.
    pub fn watch(&self, interval: std::time::Duration) -> Watcher {
        let weak = Arc::downgrade(&self.inner);
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let mut jitter = RandomState::new().build_hasher();
        let thread = std::thread::Builder::new()
            .name("gatekeeper-reload".to_owned())
            .spawn(move || {
                loop {
                    jitter.write_u8(0);
                    let spread = interval.as_nanos() as u64 / 10;
                    let extra = if spread == 0 {
                        0
                    } else {
                        jitter.finish() % spread
                    };
                    let wait = interval + std::time::Duration::from_nanos(extra);
                    match stopped.recv_timeout(wait) {
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                        _ => break,
                    }
                    let Some(inner) = weak.upgrade() else { break };
                    let _ = Gatekeeper { inner }.reload();
                }
            })
            .ok();
        Watcher {
            stop: Some(stop),
            thread,
        }
    }
}

/// A background reloader; stops when dropped.
#[derive(Debug)]
#[must_use = "dropping the watcher stops it: keep it for as long as the policies should reload"]
pub struct Watcher {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A policy that prohibits updates of `com.acme.chat` in the US from 2020 on, or (with
    /// `lapsed`) until a day later.
    fn acme(lapsed: bool) -> (Policy, Revision) {
        let end = if lapsed {
            "end = 2020-01-02T00:00:00Z\n"
        } else {
            ""
        };
        order(&format!(
            "[[app]]\nid = \"chat\"\nname = \"Chat\"\nowner = \"acme\"\nandroid = [\"com.acme.chat\"]\n\n[[prohibition]]\nid = \"p\"\napps = [\"chat\"]\nactions = [\"update\"]\nregion = \"US\"\neffective = 2020-01-01T00:00:00Z\n{end}text = \"t\"\n"
        ))
    }

    /// A policy of one file: an order issued 2019-12-01, the region `US` and the entity
    /// `acme`, then `rest` (its apps and prohibitions).
    fn order(rest: &str) -> (Policy, Revision) {
        let text = format!(
            "[instrument]\nid = \"order\"\nkind = \"identification\"\ntitle = \"t\"\nauthority = \"a\"\ncitation = \"c\"\nsource = \"https://example.org/order\"\nissued = 2019-12-01T00:00:00Z\n\n[[region]]\nid = \"US\"\nname = \"US\"\ncountries = [\"US\"]\n\n[[entity]]\nid = \"acme\"\nname = \"Acme\"\n\n{rest}"
        );
        let revision = Revision::of_texts([text.as_str()]);
        let policy = Policy::from_sources([policy::Source::new("order.toml", text)])
            .unwrap_or_else(|d| panic!("{}", d.render()));
        (policy, revision)
    }

    /// A request from its record's JSON.
    fn request(json: &str) -> Request {
        serde_json::from_str::<RequestRecord>(json)
            .unwrap()
            .into_request()
            .unwrap()
    }

    fn update() -> Request {
        request(
            r#"{"app":{"platform":"android","id":"com.acme.chat"},"action":"update","at":"2021-01-01T00:00:00Z","storefront":"US"}"#,
        )
    }

    /// Installs [`acme`] as a bundle that expired at `expires`.
    fn install_expired(gk: &Gatekeeper, expires: Instant) {
        let (policy, revision) = acme(false);
        gk.install(Active {
            policy,
            revision,
            bundle_revision: Some(7),
            expires: Some(expires),
            signed_by: Vec::new(),
            origin: "test".to_owned(),
        });
    }

    fn install(gk: &Gatekeeper, (policy, revision): (Policy, Revision)) -> Revision {
        gk.install(Active {
            policy,
            revision,
            bundle_revision: None,
            expires: None,
            signed_by: Vec::new(),
            origin: "test".to_owned(),
        })
    }

    /// A gatekeeper, no audit trail, with [`acme`] installed (and its revision).
    fn gatekeeper(lapsed: bool) -> (Gatekeeper, Revision) {
        let (policy, revision) = acme(lapsed);
        let gk = Gatekeeper::builder()
            .policy(policy, revision.clone())
            .build()
            .unwrap();
        (gk, revision)
    }

    /// The thread's cached handle on the active policy (`THREAD_ACTIVE`) never outlives an
    /// install: the next check on the same thread, or on another, uses the new policy,
    /// while a verdict given before keeps the policy that made it.
    #[test]
    fn a_check_after_an_install_uses_the_new_policy_on_every_thread() {
        let (gk, revision) = gatekeeper(false);
        let before = gk.check(&update()).unwrap();
        assert_eq!(
            (before.gate, before.revision()),
            (Gate::Deny, Some(&revision))
        );
        let lapsed = install(&gk, acme(true));
        let after = gk.check(&update()).unwrap();
        assert_eq!((after.gate, after.revision()), (Gate::Allow, Some(&lapsed)));
        let elsewhere = std::thread::scope(|s| s.spawn(|| gk.check(&update()).unwrap()).join());
        assert_eq!(elsewhere.unwrap().gate, Gate::Allow);
        // Back and forth on this thread.
        let again = install(&gk, acme(false));
        assert_eq!(gk.check(&update()).unwrap().gate, Gate::Deny);
        assert_eq!(again, revision);
        // The first verdict still names, and reads, the policy that decided it.
        assert_eq!(before.revision(), Some(&revision));
        assert!(before.decision().unwrap().is_deny());
    }

    /// How many handles on a policy this thread's cache keeps for its next verdicts.
    fn spare() -> usize {
        THREAD_ACTIVE.with(|cached| cached.borrow().spare.len())
    }

    /// A verdict dropped on the thread that checked gives its handle on the policy to
    /// that thread's next check (no atomic operation on the policy's count), up to
    /// [`SPARE`] of them; one dropped on another thread gives its handle up there.
    #[test]
    fn verdicts_dropped_on_their_thread_hand_their_policy_to_its_next_checks() {
        let (gk, _) = gatekeeper(false);
        let installed = gk.inner.active.load_full().unwrap();
        let first = gk.check(&update()).unwrap();
        assert_eq!(spare(), 0);
        drop(first);
        assert_eq!(spare(), 1);
        let second = gk.check(&update()).unwrap();
        assert_eq!(spare(), 0);
        let counted = Arc::strong_count(&installed);
        // Many alive at once, then dropped: the cache keeps at most SPARE of them.
        let many: Vec<Verdict> = (0..SPARE + 10)
            .map(|_| gk.check(&update()).unwrap())
            .collect();
        assert_eq!(Arc::strong_count(&installed), counted + SPARE + 10);
        drop(many);
        assert_eq!(spare(), SPARE);
        assert_eq!(Arc::strong_count(&installed), counted + SPARE);
        // Dropped on another thread, whose cache holds nothing of this policy.
        std::thread::scope(|s| s.spawn(move || drop(second)).join()).unwrap();
        assert_eq!(Arc::strong_count(&installed), counted + SPARE - 1);
        assert_eq!(spare(), SPARE);
        // A check draws on the cache: its verdict holds one of its handles.
        let verdict = gk.check(&update()).unwrap();
        assert_eq!(spare(), SPARE - 1);
        assert!(verdict.decision().unwrap().is_deny());
    }

    /// The handles a thread's cache keeps on a replaced policy are given up by its next
    /// check, and by its end: the policy is freed once no verdict holds it.
    #[test]
    fn a_replaced_policy_is_freed_by_the_next_check_of_a_thread_that_kept_it() {
        let (gk, _) = gatekeeper(false);
        let replaced = Arc::downgrade(&gk.inner.active.load_full().unwrap());
        let held = gk.check(&update()).unwrap();
        drop(gk.check(&update()).unwrap());
        assert_eq!(spare(), 1);
        install(&gk, acme(true));
        // Kept by the cache and by a verdict.
        assert!(replaced.upgrade().is_some());
        assert_eq!(gk.check(&update()).unwrap().gate, Gate::Allow);
        // Only the verdict keeps it now; dropped here, it is not kept for the new policy.
        assert_eq!(replaced.strong_count(), 1);
        drop(held);
        assert!(replaced.upgrade().is_none());
        // A thread that ends gives up what its cache kept.
        let current = Arc::downgrade(&gk.inner.active.load_full().unwrap());
        std::thread::scope(|s| {
            s.spawn(|| {
                drop(gk.check(&update()).unwrap());
                assert_eq!(spare(), 1);
            })
            .join()
        })
        .unwrap();
        install(&gk, acme(false));
        assert_eq!(gk.check(&update()).unwrap().gate, Gate::Deny);
        assert!(current.upgrade().is_none());
    }

    /// A gatekeeper with no policy installed has install number 0, as every such one has:
    /// its checks do not read the thread's cache, even when the cache holds another
    /// gatekeeper's policy under 0 (as it could if that one's first install swapped its
    /// policy in just as a check read its number, before the number was raised).
    #[test]
    fn a_gatekeeper_with_no_policy_never_decides_with_a_policy_cached_under_no_install() {
        let (other, _) = gatekeeper(false);
        let installed = other.inner.active.load_full().unwrap();
        let empty = Gatekeeper::builder().start_empty(true).build().unwrap();
        assert_eq!(empty.inner.generation.load(Ordering::Acquire), 0);
        THREAD_ACTIVE.with_borrow_mut(|cached| {
            cached.generation = 0;
            cached.installed = Arc::downgrade(&installed);
            cached.spare = vec![installed.clone()];
        });
        let verdict = empty.check(&update()).unwrap();
        assert_eq!(verdict.revision(), None);
        assert!(verdict.decision().is_none());
        // The cache was neither drawn on nor replaced.
        assert_eq!(spare(), 1);
        THREAD_ACTIVE.with_borrow_mut(|cached| *cached = Cached::NONE);
    }

    /// A gatekeeper says whether it keeps an audit trail: only then does a verdict wait
    /// for its record.
    #[test]
    fn a_gatekeeper_says_whether_it_keeps_an_audit_trail() {
        let (plain, _) = gatekeeper(false);
        assert!(!plain.is_audited());
        let dir = tempfile::tempdir().unwrap();
        let (policy, revision) = acme(false);
        let audited = Gatekeeper::builder()
            .policy(policy, revision)
            .audit(crate::AuditConfig::new(dir.path()))
            .build()
            .unwrap();
        assert!(audited.is_audited());
        assert_eq!(audited.check(&update()).unwrap().gate, Gate::Deny);
        assert_eq!(audited.close_audit().unwrap().unwrap().seq, 1);
    }

    /// Two gatekeepers used in turn on one thread each decide with their own policy.
    #[test]
    fn gatekeepers_in_turn_on_one_thread_keep_their_own_policies() {
        let (a, _) = gatekeeper(false);
        let (b, _) = gatekeeper(true);
        for _ in 0..3 {
            assert_eq!(a.check(&update()).unwrap().gate, Gate::Deny);
            assert_eq!(b.check(&update()).unwrap().gate, Gate::Allow);
        }
    }

    /// Decision ids come from per-thread blocks of the counter: unique across threads.
    #[test]
    fn decision_ids_are_unique_across_threads() {
        let (gk, _) = gatekeeper(false);
        let ids: Vec<DecisionId> = std::thread::scope(|s| {
            let threads: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        (0..(ID_BLOCK as usize + 10))
                            .map(|_| gk.check(&update()).unwrap().decision_id)
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            threads
                .into_iter()
                .flat_map(|t| t.join().unwrap())
                .collect()
        });
        let distinct: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
    }

    /// A verdict writer gives each verdict the bytes `write_json` gives it, whether it
    /// copies them from an earlier verdict of the same outcome or writes them: denies and
    /// allows, covered and unlisted apps, places in and out of the region, several
    /// instants, both modes, a policy installed in the middle, and no policy at all.
    #[test]
    fn a_verdict_writer_writes_what_write_json_writes_copying_repeated_outcomes() {
        let mut requests = Vec::new();
        for id in ["com.acme.chat", "com.ACME.chat", "com.other.app"] {
            for action in ["update", "download"] {
                for at in [
                    "2019-06-01T00:00:00Z",
                    "2020-01-01T12:00:00Z",
                    "2021-01-01T00:00:00Z",
                ] {
                    for storefront in ["US", "USA", "DE"] {
                        requests.push(request(&format!(
                            r#"{{"app":{{"platform":"android","id":"{id}"}},"action":"{action}","at":"{at}","storefront":"{storefront}"}}"#
                        )));
                    }
                }
            }
        }
        for mode in [Mode::Enforce, Mode::Shadow] {
            let gk = Gatekeeper::builder()
                .mode(mode)
                .start_empty(true)
                .build()
                .unwrap();
            let mut writer = VerdictWriter::with_capacity(0);
            let mut expected = Vec::new();
            let mut copied = 0;
            let mut write = |verdict: &Verdict, writer: &mut VerdictWriter| {
                let before = writer.copied();
                writer.write(verdict);
                verdict.write_json(&mut expected);
                writer.push(b",");
                expected.push(b',');
                writer.copied() - before
            };
            // No policy: nothing to copy.
            let none = gk.check(&update()).unwrap();
            assert_eq!(write(&none, &mut writer) + write(&none, &mut writer), 0);
            for lapsed in [false, true, false] {
                install(&gk, acme(lapsed));
                // Each request twice in a row: the second copies the first, whose outcome
                // may be new or that of an earlier request.
                let mut first_copied = 0;
                for r in &requests {
                    let (a, b) = (gk.check(r).unwrap(), gk.check(r).unwrap());
                    assert_ne!(a.decision_id, b.decision_id);
                    first_copied += write(&a, &mut writer);
                    assert_eq!(write(&b, &mut writer), 1, "{r:?}");
                    copied += 1;
                }
                // Fewer outcomes than requests, and each outcome written out once.
                assert!(
                    first_copied > 0 && first_copied < requests.len(),
                    "{first_copied}"
                );
                copied += first_copied;
            }
            assert_eq!(writer.copied(), copied);
            let written = writer.into_inner();
            assert_eq!(
                String::from_utf8(written).unwrap(),
                String::from_utf8(expected).unwrap()
            );
        }
    }

    /// More outcomes than the table has slots (an app each): outcomes share slots, and a
    /// verdict is never given the bytes of another outcome in its slot, however the keys mix.
    #[test]
    fn a_verdict_writer_copies_only_its_own_outcome_from_a_shared_slot() {
        let apps = VerdictWriter::SLOTS + 16;
        let mut text = String::new();
        for n in 0..apps {
            text += &format!(
                "\n[[app]]\nid = \"app{n}\"\nname = \"App {n}\"\nowner = \"acme\"\nandroid = [\"com.acme.app{n}\"]\n"
            );
        }
        text += "\n[[prohibition]]\nid = \"p\"\nowners = [\"acme\"]\nactions = [\"update\"]\nregion = \"US\"\neffective = 2020-01-01T00:00:00Z\ntext = \"t\"\n";
        let (policy, revision) = order(&text);
        let gk = Gatekeeper::builder()
            .policy(policy, revision)
            .build()
            .unwrap();
        let verdicts: Vec<Verdict> = (0..apps)
            .map(|n| {
                gk.check(&request(&format!(
                    r#"{{"app":{{"platform":"android","id":"com.acme.app{n}"}},"action":"update","at":"2021-01-01T00:00:00Z","storefront":"US"}}"#
                )))
                .unwrap()
            })
            .collect();
        let mut writer = VerdictWriter::with_capacity(0);
        let mut expected = Vec::new();
        // Forwards, then backwards, then forwards: each pass's outcomes find the slots
        // holding the outcomes of the one before.
        let order = (0..apps).chain((0..apps).rev()).chain(0..apps);
        for n in order {
            writer.write(&verdicts[n]);
            verdicts[n].write_json(&mut expected);
        }
        assert!(writer.copied() > 0, "nothing copied");
        assert!(writer.copied() < 2 * apps, "{} copied", writer.copied());
        assert_eq!(
            String::from_utf8(writer.into_inner()).unwrap(),
            String::from_utf8(expected).unwrap()
        );
    }

    /// What the table does not hold is written as `write_json` writes it, between copies:
    /// a request naming two covered apps (a judgement made for it alone), an expired
    /// bundle's verdict, and an item's error written by the caller through `io::Write`.
    #[test]
    fn a_verdict_writer_writes_verdicts_without_an_outcome_key_and_the_callers_bytes() {
        let digest = "ab".repeat(32);
        let (policy, revision) = order(&format!(
            "[[app]]\nid = \"chat\"\nname = \"Chat\"\nowner = \"acme\"\nandroid = [\"com.acme.chat\"]\n\n[[app]]\nid = \"kit\"\nname = \"Kit\"\nowner = \"acme\"\ncode_sha256 = [\"{digest}\"]\n\n[[prohibition]]\nid = \"p\"\napps = [\"chat\", \"kit\"]\nactions = [\"update\"]\nregion = \"US\"\neffective = 2020-01-01T00:00:00Z\ntext = \"t\"\n"
        ));
        let at = |text: &str| Instant::parse_rfc3339(text).unwrap();
        let clock = crate::clock::ManualClock::new(at("2021-01-01T00:00:00Z"));
        let gk = Gatekeeper::builder()
            .clock(Arc::new(clock.clone()))
            .policy(policy, revision)
            .build()
            .unwrap();
        let both = request(&format!(
            r#"{{"app":{{"platform":"android","id":"com.acme.chat"}},"code_sha256":["{digest}"],"action":"update","at":"2021-01-01T00:00:00Z","storefront":"US"}}"#
        ));
        let (chat, both) = (gk.check(&update()).unwrap(), gk.check(&both).unwrap());
        let Judgement::Decided { parts, .. } = &both.judgement else {
            panic!("not decided: {both:?}");
        };
        assert!(parts.answer_key().is_none(), "two apps: {parts:?}");
        assert!(both.decision().unwrap().is_deny());
        let mut writer = VerdictWriter::with_capacity(0);
        let mut expected = Vec::new();
        for verdict in [&chat, &both, &chat, &both, &both, &chat] {
            writer.write(verdict);
            verdict.write_json(&mut expected);
            serde_json::to_writer(&mut writer, &serde_json::json!({ "error": "bad" })).unwrap();
            expected.extend_from_slice(br#"{"error":"bad"}"#);
        }
        // The second and third `chat` copy the first; no `both` is copied.
        assert_eq!(writer.copied(), 2);
        // An expired bundle: no decision, written by `Serialize`, nothing copied.
        install_expired(&gk, at("2020-06-01T00:00:00Z"));
        let expired = gk.check(&update()).unwrap();
        for _ in 0..2 {
            writer.write(&expired);
            expired.write_json(&mut expected);
        }
        assert_eq!(writer.copied(), 2);
        let written = writer.into_inner();
        assert!(String::from_utf8_lossy(&written).contains("expired"));
        assert_eq!(
            String::from_utf8(written).unwrap(),
            String::from_utf8(expected).unwrap()
        );
    }

    /// `write_json` writes the bytes `Serialize` gives: allows and denies, enforce and
    /// shadow, a policy installed after another, an expired bundle and no policy at all.
    #[test]
    fn verdicts_are_written_as_serde_writes_them() {
        let written = |verdict: &Verdict| {
            let mut out = b"[".to_vec();
            verdict.write_json(&mut out);
            assert_eq!(out[1..], serde_json::to_vec(verdict).unwrap()[..]);
            out
        };
        let at = |text: &str| Instant::parse_rfc3339(text).unwrap();
        let allowed = {
            let mut r = update();
            r.set_at(at("2019-06-01T00:00:00Z"));
            r
        };
        let clock = crate::clock::ManualClock::new(at("2021-01-01T00:00:00Z"));
        for mode in [Mode::Enforce, Mode::Shadow] {
            let gk = Gatekeeper::builder()
                .mode(mode)
                .clock(Arc::new(clock.clone()))
                .start_empty(true)
                .build()
                .unwrap();
            let none = gk.check(&update()).unwrap();
            assert!(
                String::from_utf8(written(&none))
                    .unwrap()
                    .contains(NO_POLICY)
            );
            for lapsed in [false, true] {
                install(&gk, acme(lapsed));
                let deny = gk.check(&update()).unwrap();
                assert_eq!(deny.gate == Gate::Allow, lapsed);
                written(&deny);
                written(&gk.check(&allowed).unwrap());
            }
            install_expired(&gk, at("2020-06-01T00:00:00Z"));
            let expired = gk.check(&update()).unwrap();
            assert!(
                String::from_utf8(written(&expired))
                    .unwrap()
                    .contains("expired")
            );
        }
    }
}
