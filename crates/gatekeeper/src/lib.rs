//! The embeddable Gatekeeper: what a store links in to decide requests for covered apps.
//!
//! A [`Gatekeeper`] holds the active policy (from folders, a bundle file or a bundle
//! URL), decides requests with it, records every verdict in a Merkle-tree audit trail,
//! and swaps in new policies without a restart and without a lock on the check path.
//! The [`layer`] module (feature `tower`) gates HTTP routes, answering 451.
//!
//! ```
//! use gatekeeper::{Gatekeeper, Mode};
//! use policy::{Boundaries, NonEnforcement, Posture, RequestRecord};
//!
//! let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../policies/us-2020");
//! let gk = Gatekeeper::builder()
//!     .policy_dirs([root])
//!     .mode(Mode::Enforce)
//!     // Where the law leaves an instant open, never serve early; honour
//!     // executive non-enforcement orders (both are the defaults).
//!     .posture(Posture { boundaries: Boundaries::Conservative, non_enforcement: NonEnforcement::Honour })
//!     .build()
//!     .unwrap();
//! let record: RequestRecord = serde_json::from_str(r#"{
//!     "app": {"platform": "android", "id": "com.tencent.mm"},
//!     "action": "update", "at": "2020-09-22T12:00:00Z", "storefront": "PRI"
//! }"#).unwrap();
//! let request = record.into_request().unwrap();
//! let verdict = gk.check(&request).unwrap();
//! assert!(!verdict.permits());
//! assert_eq!(verdict.revision(), Some(&gk.active().unwrap().revision));
//! ```

#![forbid(unsafe_code)]

pub mod audit;
mod bundle;
mod clock;
mod handle;
#[cfg(feature = "http-source")]
mod http_source;
pub mod keys;
#[cfg(feature = "tower")]
pub mod layer;
mod reload;
mod revision;
mod source;
mod telemetry;

pub use audit::{
    AuditConfig, AuditError, AuditHealth, AuditLog, CheckpointEvery, Durability, Head, VerifyError,
    VerifyReport, verify,
};
pub use bundle::{
    BUNDLE_FORMAT, BUNDLE_FORMAT_IMAGE, Bundle, BundleError, Manifest, ManifestFile, ManifestImage,
    TrustError, TrustedKeys,
};
pub use clock::{Clock, ManualClock, SystemClock};
pub use handle::{
    Active, BuildError, Builder, CheckError, Checks, DecisionId, FailureMode, Gate, Gatekeeper,
    Mode, NO_POLICY, PendingVerdict, Readiness, Reloaded, Verdict, VerdictRecord, VerdictWriter,
    Watcher,
};
#[cfg(feature = "http-source")]
pub use http_source::{FetchError, HttpSource};
#[cfg(feature = "tower")]
pub use layer::{ExtractError, Extractor, GatekeeperLayer, GatekeeperService};
pub use policy;
pub use reload::{DEFAULT_MAX_BUNDLE_BYTES, PolicySource, ReloadError};
pub use revision::{Revision, sha256_hex};
pub use source::{
    Disk, Expanded, Files, ImageSkipped, ImageUse, LoadedPolicy, MAX_POLICY_FILE_BYTES,
    MemoryFiles, ReadError, load_dirs, load_from,
};
