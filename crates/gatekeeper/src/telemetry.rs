//! The gatekeeper's metrics, through the `metrics` facade: each described (so that the
//! Prometheus exporter writes `# HELP`), and each counter registered when a handle is built,
//! so that it is present, at 0, from the start.
//!
//! The policy revision is not a label of the counters (each reload would add series, kept
//! forever): `gatekeeper_policy_info{revision}` is 1 for the active revision, and 0 for the
//! ones it replaced. The facade cannot remove a series, so a replaced revision's series stays
//! at 0; it is set again on every reload attempt, so that an exporter's idle timeout for
//! gauges (longer than the reload interval) drops the old ones.

use metrics::{Counter, Gauge, Unit};

use crate::handle::Gate;
use crate::revision::Revision;

pub(crate) const VERDICTS: &str = "gatekeeper_verdicts_total";
pub(crate) const FAILURE_MODE_VERDICTS: &str = "gatekeeper_failure_mode_verdicts_total";
pub(crate) const RELOADS: &str = "gatekeeper_reloads_total";
pub(crate) const REJECTED_RELOADS: &str = "gatekeeper_rejected_reloads_total";
pub(crate) const POLICY_INFO: &str = "gatekeeper_policy_info";
pub(crate) const POLICY_EXPIRED: &str = "gatekeeper_policy_expired";
pub(crate) const POLICY_EXPIRES: &str = "gatekeeper_policy_expiry_timestamp_seconds";
pub(crate) const AUDIT_FAILURES: &str = "gatekeeper_audit_failures_total";
pub(crate) const AUDIT_QUEUE_DEPTH: &str = "gatekeeper_audit_queue_depth";
pub(crate) const AUDIT_LOST: &str = "gatekeeper_audit_lost_records_total";

/// Why a verdict came from the failure mode.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Unpoliced {
    /// No policy was ever loaded (or none loaded since start).
    NoPolicy = 0,
    /// The active bundle expired.
    Expired = 1,
}

/// The handles of one gatekeeper's metrics, registered with the recorder installed when it
/// was built.
pub(crate) struct Telemetry {
    /// By gate, then action.
    verdicts: [[Counter; policy::Action::ALL.len()]; 3],
    unpoliced: [Counter; 2],
    pub(crate) reloads: Counter,
    pub(crate) rejected_reloads: Counter,
    pub(crate) expired: Gauge,
    pub(crate) expires_at: Gauge,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Telemetry")
    }
}

impl Telemetry {
    /// Describes every metric and registers every counter and gauge.
    pub(crate) fn register() -> Telemetry {
        describe();
        let verdicts = [Gate::Allow, Gate::Deny, Gate::ShadowDeny].map(|gate| {
            policy::Action::ALL.map(|action| {
                metrics::counter!(VERDICTS, "gate" => gate.as_str(), "action" => action.as_str())
            })
        });
        let unpoliced = ["no-policy", "expired"]
            .map(|reason| metrics::counter!(FAILURE_MODE_VERDICTS, "reason" => reason));
        // Registered so that they are present from the start; the audit trail updates them.
        metrics::counter!(AUDIT_FAILURES).absolute(0);
        metrics::counter!(AUDIT_LOST).absolute(0);
        metrics::gauge!(AUDIT_QUEUE_DEPTH).increment(0.0);
        let telemetry = Telemetry {
            verdicts,
            unpoliced,
            reloads: metrics::counter!(RELOADS),
            rejected_reloads: metrics::counter!(REJECTED_RELOADS),
            expired: metrics::gauge!(POLICY_EXPIRED),
            expires_at: metrics::gauge!(POLICY_EXPIRES),
        };
        telemetry.expired.set(0.0);
        telemetry.expires_at.set(0.0);
        telemetry
    }

    /// Counts a verdict.
    #[inline]
    pub(crate) fn verdict(&self, gate: Gate, action: policy::Action, unpoliced: Option<Unpoliced>) {
        self.verdicts[gate as usize][action as usize].increment(1);
        if let Some(why) = unpoliced {
            self.unpoliced[why as usize].increment(1);
        }
    }

    /// Marks `active` as the active revision and `previous` (if another) as replaced.
    pub(crate) fn policy_info(&self, active: Option<&Revision>, previous: Option<&Revision>) {
        if let Some(previous) = previous
            && Some(previous) != active
        {
            metrics::gauge!(POLICY_INFO, "revision" => previous.0.clone()).set(0.0);
        }
        if let Some(active) = active {
            metrics::gauge!(POLICY_INFO, "revision" => active.0.clone()).set(1.0);
        }
    }

    /// Counts verdicts counted apart ([`Tally`]), all at once: only the counters with
    /// something to add, so that a small batch updates few shared counters.
    pub(crate) fn tally(&self, tally: &Tally) {
        let counters = self.verdicts.iter().flatten().chain(&self.unpoliced);
        let counts = tally.verdicts.iter().flatten().chain(&tally.unpoliced);
        for (counter, &n) in counters.zip(counts) {
            if n != 0 {
                counter.increment(n);
            }
        }
    }
}

/// Verdicts counted by one caller, to be added to the shared counters at once: a batch's
/// checks then do not each update a counter that every core's checks update.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    verdicts: [[u64; policy::Action::ALL.len()]; 3],
    unpoliced: [u64; 2],
}

impl Tally {
    /// Counts a verdict, as [`Telemetry::verdict`] would.
    #[inline]
    pub(crate) fn verdict(
        &mut self,
        gate: Gate,
        action: policy::Action,
        unpoliced: Option<Unpoliced>,
    ) {
        self.verdicts[gate as usize][action as usize] += 1;
        if let Some(why) = unpoliced {
            self.unpoliced[why as usize] += 1;
        }
    }
}

fn describe() {
    metrics::describe_counter!(
        VERDICTS,
        "Verdicts given, by gate (allow, deny, shadow-deny) and action"
    );
    metrics::describe_counter!(
        FAILURE_MODE_VERDICTS,
        "Verdicts given by the failure mode, by reason: no policy was active (no-policy) or the active bundle had expired (expired)"
    );
    metrics::describe_counter!(RELOADS, "Policies installed (at start and by reloads)");
    metrics::describe_counter!(
        REJECTED_RELOADS,
        "Policy loads refused (the source failed, or a bundle failed a check); the last good policy stays active"
    );
    metrics::describe_gauge!(
        POLICY_INFO,
        "1 for the revision (SHA-256 of the policy content) of the active policy; 0 for revisions it replaced"
    );
    metrics::describe_gauge!(
        POLICY_EXPIRED,
        "1 while the active bundle's expiry has passed and it is withdrawn (the failure mode applies)"
    );
    metrics::describe_gauge!(
        POLICY_EXPIRES,
        Unit::Seconds,
        "When the active bundle expires, in seconds since the Unix epoch; 0 when it does not"
    );
    metrics::describe_counter!(AUDIT_FAILURES, "Audit records that could not be written");
    metrics::describe_gauge!(AUDIT_QUEUE_DEPTH, "Audit records queued for the writer");
    metrics::describe_counter!(
        AUDIT_LOST,
        "Audit records that will never reach the disk (counted once each)"
    );
}
