//! The `Gatekeeper` handle: checks, modes, reloads, audit.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use policy::{
    Decision, DecisionParts, DecisionRecord, Diagnostics, Instant, Policy, Posture, Request,
    RequestRecord,
};
use serde::Serialize;

use crate::audit::{AuditConfig, AuditError, AuditLog, Head};
use crate::bundle::{Bundle, BundleError};
use crate::clock::{Clock, SystemClock};
use crate::revision::Revision;
use crate::source::{LoadedPolicy, load_dirs};

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

/// Where policies come from.
#[derive(Clone, Debug)]
pub enum PolicySource {
    /// Policy folders on disk.
    Dirs(Vec<PathBuf>),
    /// A bundle file on disk.
    BundleFile(PathBuf),
    /// A bundle served over HTTP(S).
    #[cfg(feature = "http-source")]
    BundleUrl(crate::http_source::HttpSource),
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

/// The active policy and what it was loaded from.
#[derive(Debug)]
pub struct Active {
    pub policy: Policy,
    /// The SHA-256 of the loaded content.
    pub revision: Revision,
    /// The bundle's revision number, for policies from bundles.
    pub bundle_revision: Option<u64>,
    /// Where it came from, for people.
    pub origin: String,
}

/// Verdict counters of one revision, by gate and action, registered once at install so
/// that a check only increments.
struct Counters([[metrics::Counter; 7]; 3]);

impl fmt::Debug for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Counters")
    }
}

impl Counters {
    fn register(revision: &Revision) -> Counters {
        let revision = revision.short().to_owned();
        Counters([Gate::Allow, Gate::Deny, Gate::ShadowDeny].map(|gate| {
            policy::Action::ALL.map(|action| {
                metrics::counter!("gatekeeper_verdicts_total", "gate" => gate.as_str(), "action" => action.as_str(), "revision" => revision.clone())
            })
        }))
    }
}

#[derive(Debug)]
enum Judgement {
    Decided {
        active: Arc<Installed>,
        parts: DecisionParts,
    },
    NoPolicy,
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

impl Verdict {
    /// Whether the request may be served (allowed, or shadow mode).
    pub fn permits(&self) -> bool {
        self.gate != Gate::Deny
    }

    /// The revision of the policy that decided, if one was active.
    pub fn revision(&self) -> Option<&Revision> {
        match &self.judgement {
            Judgement::Decided { active, .. } => Some(&active.active.revision),
            Judgement::NoPolicy => None,
        }
    }

    /// The policy that decided, if one was active.
    pub fn active(&self) -> Option<&Arc<Active>> {
        match &self.judgement {
            Judgement::Decided { active, .. } => Some(&active.active),
            Judgement::NoPolicy => None,
        }
    }

    /// The decision, naming instruments and apps; `None` when no policy was active.
    pub fn decision(&self) -> Option<Decision<'_>> {
        match &self.judgement {
            Judgement::Decided { active, parts } => Some(active.active.policy.view(parts.clone())),
            Judgement::NoPolicy => None,
        }
    }

    /// The verdict as JSON.
    pub fn to_record(&self) -> VerdictRecord {
        VerdictRecord {
            decision_id: self.decision_id.to_string(),
            revision: self.revision().map(|r| r.0.clone()),
            mode: self.mode,
            gate: self.gate.as_str(),
            error: matches!(self.judgement, Judgement::NoPolicy).then(|| NO_POLICY.to_owned()),
            decision: self.decision().map(|d| d.to_record()),
        }
    }
}

/// Why a check could not give a verdict.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The audit trail failed and the failure mode is closed.
    #[error("audit trail unavailable, refusing to decide unrecorded: {0}")]
    Audit(AuditError),
}

/// Why a reload did not change the active policy.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("no policy source is configured")]
    NoSource,
    #[error("policies do not load: {0}")]
    Policy(Diagnostics),
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error("fetching the bundle failed: {0}")]
    Fetch(String),
    #[error("cannot read `{path}`: {message}")]
    Io { path: String, message: String },
}

/// What a successful reload did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reloaded {
    /// A new policy is active.
    Swapped(Revision),
    /// The source holds what is already active.
    Unchanged(Revision),
}

/// An active policy with its counters.
#[derive(Debug)]
struct Installed {
    active: Arc<Active>,
    counters: Counters,
}

pub(crate) struct Inner {
    active: ArcSwapOption<Installed>,
    mode: Mode,
    failure_mode: FailureMode,
    posture: Posture,
    clock: Arc<dyn Clock>,
    audit: Option<AuditLog>,
    pub(crate) source: Option<PolicySource>,
    reload_lock: Mutex<ReloadState>,
    prefix: u64,
    seq: AtomicU64,
}

#[derive(Default)]
pub(crate) struct ReloadState {
    #[cfg(feature = "http-source")]
    pub(crate) etag: Option<String>,
    pub(crate) last_error: Option<String>,
    #[cfg(feature = "http-source")]
    pub(crate) client: Option<reqwest::blocking::Client>,
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

    /// Opens the audit trail and makes a first attempt to load the policy source. A
    /// failed first load is logged and leaves no policy active (the failure mode
    /// applies) until a reload succeeds; only an audit trail that cannot be opened fails
    /// the build.
    pub fn build(self) -> Result<Gatekeeper, AuditError> {
        let audit = self.audit.map(AuditLog::open).transpose()?;
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
                source: self.source,
                reload_lock: Mutex::new(ReloadState::default()),
                prefix: seed.finish(),
                seq: AtomicU64::new(0),
            }),
        };
        if let Some((policy, revision)) = self.policy {
            gk.install(Active {
                policy,
                revision,
                bundle_revision: None,
                origin: "compiled by the caller".to_owned(),
            });
        }
        #[cfg(feature = "http-source")]
        if let Some(PolicySource::BundleUrl(source)) = &gk.inner.source {
            crate::http_source::load_cache(&gk, source);
        }
        if gk.inner.source.is_some()
            && let Err(e) = gk.reload()
        {
            tracing::warn!(error = %e, "initial policy load failed; no policy is active until a reload succeeds");
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

    /// The active policy, if any.
    pub fn active(&self) -> Option<Arc<Active>> {
        self.inner.active.load().as_ref().map(|i| i.active.clone())
    }

    /// Decides a request (judged at `request.at`), records it in the audit trail, and
    /// says what to do with it.
    #[inline]
    pub fn check(&self, request: &Request) -> Result<Verdict, CheckError> {
        let active = self.inner.active.load_full();
        let mode = self.inner.mode;
        let (judgement, denied) = match active {
            Some(active) => {
                let parts = active
                    .active
                    .policy
                    .decide_parts(request, self.inner.posture);
                let denied = parts.is_deny();
                (Judgement::Decided { active, parts }, denied)
            }
            None => (
                Judgement::NoPolicy,
                self.inner.failure_mode == FailureMode::Closed,
            ),
        };
        let gate = match (denied, mode) {
            (false, _) => Gate::Allow,
            (true, Mode::Enforce) => Gate::Deny,
            (true, Mode::Shadow) => Gate::ShadowDeny,
        };
        let verdict = Verdict {
            decision_id: DecisionId {
                prefix: self.inner.prefix,
                seq: self.inner.seq.fetch_add(1, Ordering::Relaxed),
            },
            gate,
            mode,
            judgement,
        };
        match &verdict.judgement {
            Judgement::Decided { active, .. } => {
                active.counters.0[gate as usize][request.action() as usize].increment(1);
            }
            Judgement::NoPolicy => {
                metrics::counter!("gatekeeper_verdicts_total", "gate" => gate.as_str(), "action" => request.action().as_str(), "revision" => "none")
                    .increment(1);
            }
        }
        if let Some(audit) = &self.inner.audit {
            self.record(audit, request, &verdict)?;
        }
        Ok(verdict)
    }

    fn record(
        &self,
        audit: &AuditLog,
        request: &Request,
        verdict: &Verdict,
    ) -> Result<(), CheckError> {
        #[derive(Serialize)]
        struct Entry {
            time: String,
            #[serde(flatten)]
            verdict: VerdictRecord,
            request: RequestRecord,
        }
        let entry = Entry {
            time: self.now().to_string(),
            verdict: verdict.to_record(),
            request: RequestRecord::from(request),
        };
        let body =
            serde_json::to_string(&entry).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
        match audit.append(body) {
            Ok(()) => Ok(()),
            Err(e) => {
                metrics::counter!("gatekeeper_audit_failures_total").increment(1);
                match self.inner.failure_mode {
                    FailureMode::Closed => Err(CheckError::Audit(e)),
                    FailureMode::Open => {
                        tracing::error!(error = %e, decision_id = %verdict.decision_id, "audit record not written; failure mode is open, so the check goes on");
                        Ok(())
                    }
                }
            }
        }
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
        tracing::info!(revision = %revision.short(), origin = %active.origin, "policy active");
        metrics::counter!("gatekeeper_reloads_total").increment(1);
        let counters = Counters::register(&revision);
        self.inner.active.store(Some(Arc::new(Installed {
            active: Arc::new(active),
            counters,
        })));
        revision
    }

    pub(crate) fn reject(&self, state: &mut ReloadState, error: ReloadError) -> ReloadError {
        let text = error.to_string();
        if state.last_error.as_deref() != Some(text.as_str()) {
            tracing::warn!(error = %text, "policy reload rejected; the last good policy stays active");
        }
        state.last_error = Some(text);
        metrics::counter!("gatekeeper_rejected_reloads_total").increment(1);
        error
    }

    /// Installs a loaded policy unless it is what is active already.
    pub(crate) fn offer(
        &self,
        loaded: LoadedPolicy,
        bundle_revision: Option<u64>,
        origin: String,
    ) -> Reloaded {
        if let Some(active) = self.active()
            && active.revision == loaded.revision
            && active.bundle_revision == bundle_revision
        {
            return Reloaded::Unchanged(active.revision.clone());
        }
        Reloaded::Swapped(self.install(Active {
            policy: loaded.policy,
            revision: loaded.revision,
            bundle_revision,
            origin,
        }))
    }

    #[cfg(feature = "http-source")]
    pub(crate) fn inner_reload_state(&self) -> Result<std::sync::MutexGuard<'_, ReloadState>, ()> {
        self.inner.reload_lock.lock().map_err(|_| ())
    }

    /// Verifies a bundle against the clock and the active revision, then installs it.
    pub(crate) fn offer_bundle(
        &self,
        bundle: &Bundle,
        origin: String,
    ) -> Result<Reloaded, ReloadError> {
        let active = self.active().and_then(|a| a.bundle_revision);
        bundle.verify(self.now(), active)?;
        let loaded = bundle.load(&origin)?;
        Ok(self.offer(loaded, Some(bundle.manifest.revision), origin))
    }

    /// Loads the policy source now. On any failure the last good policy stays active
    /// and the error says why.
    pub fn reload(&self) -> Result<Reloaded, ReloadError> {
        let mut state = self
            .inner
            .reload_lock
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let result = match &self.inner.source {
            None => Err(ReloadError::NoSource),
            Some(PolicySource::Dirs(dirs)) => match load_dirs(dirs) {
                Ok(loaded) => Ok(self.offer(
                    loaded,
                    None,
                    dirs.iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                )),
                Err(d) => Err(ReloadError::Policy(d)),
            },
            Some(PolicySource::BundleFile(path)) => std::fs::read(path)
                .map_err(|e| ReloadError::Io {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })
                .and_then(|bytes| Ok(Bundle::parse(&bytes)?))
                .and_then(|bundle| self.offer_bundle(&bundle, path.display().to_string())),
            #[cfg(feature = "http-source")]
            Some(PolicySource::BundleUrl(source)) => {
                crate::http_source::fetch(self, source, &mut state)
            }
        };
        match result {
            Ok(r) => {
                state.last_error = None;
                Ok(r)
            }
            Err(e) => Err(self.reject(&mut state, e)),
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
