//! Replay and investigation at store scale: Gatekeeper's decision function inside
//! Apache DataFusion.
//!
//! - [`udf`]: `Policy::decide` as a scalar function over the columns of a request table,
//!   one per loaded policy and posture, side by side;
//! - [`tables`]: request logs in Parquet and JSON Lines, and the verified audit trail,
//!   as tables;
//! - [`genlog`]: a seeded, realistic request log to run on.

#![forbid(unsafe_code)]

/// The DataFusion this crate is built on, for callers that handle its batches.
pub use datafusion;
/// Its plan serialization, for callers that send plans (and the decision functions in
/// them) to a cluster.
pub use datafusion_proto;

pub mod cluster;
pub mod genlog;
pub mod replay;
pub mod schema;
pub mod session;
pub mod tables;
pub mod udf;

use std::path::Path;
use std::sync::Arc;

use datafusion::common::Result;

/// Loads a policy set (a folder or file of policy files, or a bundle) for a decision
/// function.
pub fn load_policy(path: &Path) -> anyhow::Result<Arc<udf::LoadedRevision>> {
    let loaded = authoring::load(path)?;
    Ok(Arc::new(udf::LoadedRevision {
        revision: loaded.revision.to_string(),
        policy: loaded.policy,
        source: path.display().to_string(),
    }))
}

/// Writes a verified audit trail as one Parquet file ([`tables::trail_schema`]),
/// verified against `checkpoints` and its folders' checkpoints (signatures checked with
/// `key`); returns the records written. A trail that does not verify is refused with the
/// reason, and nothing is written.
pub async fn export_trail(
    trail: &[std::path::PathBuf],
    checkpoints: &[gatekeeper::audit::Checkpoint],
    key: Option<&gatekeeper::keys::VerifierKey>,
    out: &Path,
) -> Result<(gatekeeper::audit::VerifyReport, u64)> {
    let (report, batches) = tables::read_trail(trail, checkpoints, key)?;
    // Written beside the target, then renamed: a failed export leaves no half file.
    let mut file = tables::WholeParquet::create(out, tables::trail_schema())?;
    let mut rows = 0;
    for b in &batches {
        file.write(b)?;
        rows += b.num_rows() as u64;
    }
    file.finish()?;
    Ok((report, rows))
}
