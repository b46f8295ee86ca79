//! Beyond one machine: the decision function on a Ballista cluster.
//!
//! A query names its decision functions; Ballista sends the plan to its scheduler and
//! executors, which must build the same functions. They do it through the codecs here:
//! a decision function travels as its policy's revision and its posture (never the
//! policy itself), and each process finds the policy in its own [`PolicyRegistry`],
//! which holds the bundles it was started with (`gatekeeper-cluster executor --bundle
//! FILE`) or, in a standalone cluster, the policies the session loaded. A revision a
//! process does not hold is an error naming it, never another policy's answer.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use ballista_core::serde::{BallistaLogicalExtensionCodec, BallistaPhysicalExtensionCodec};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::common::{Result, TableReference, exec_err};
use datafusion::datasource::file_format::FileFormatFactory;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Extension, LogicalPlan, ScalarUDF};
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use policy::{Boundaries, NonEnforcement, Posture};

use crate::udf::{Decide, LoadedRevision, NamedPolicy};

/// The policies a process can decide under, by revision.
#[derive(Debug, Default)]
pub struct PolicyRegistry {
    by_revision: RwLock<HashMap<String, Arc<LoadedRevision>>>,
}

impl PolicyRegistry {
    /// Adds a policy (a second copy of a revision is the same policy: the first is kept).
    pub fn insert(&self, loaded: Arc<LoadedRevision>) -> Arc<LoadedRevision> {
        let mut map = match self.by_revision.write() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.entry(loaded.revision.clone()).or_insert(loaded).clone()
    }

    /// The policy of a revision, if this process holds it.
    pub fn get(&self, revision: &str) -> Option<Arc<LoadedRevision>> {
        let map = match self.by_revision.read() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.get(revision).cloned()
    }

    /// The revisions held.
    pub fn revisions(&self) -> Vec<String> {
        let map = match self.by_revision.read() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut all: Vec<String> = map.keys().cloned().collect();
        all.sort();
        all
    }
}

/// What a decision function travels as.
const MAGIC: &[u8] = b"gatekeeper-decide 1\n";

fn encode_udf(node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
    if let Some(decide) = node.inner().downcast_ref::<Decide>() {
        let p = decide.policy();
        buf.extend_from_slice(MAGIC);
        let mut text = format!(
            "{} {} {}",
            p.loaded.revision,
            p.posture.boundaries.as_str(),
            p.posture.non_enforcement.as_str()
        );
        if decide.is_decision_only() {
            text.push_str(" decision");
        }
        buf.extend_from_slice(text.as_bytes());
    }
    // Any other function travels by name, as Ballista's own codec sends it.
    Ok(())
}

fn decode_udf(registry: &PolicyRegistry, name: &str, buf: &[u8]) -> Option<Result<Arc<ScalarUDF>>> {
    let rest = buf.strip_prefix(MAGIC)?;
    let text = match std::str::from_utf8(rest) {
        Ok(t) => t,
        Err(_) => {
            return Some(exec_err!(
                "decision function `{name}`: its encoding is not text"
            ));
        }
    };
    let mut parts = text.split(' ');
    let (
        Some(revision),
        Some(boundaries),
        Some(non_enforcement),
        only @ (None | Some("decision")),
        None,
    ) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    )
    else {
        return Some(exec_err!(
            "decision function `{name}`: `{}` is not `REVISION BOUNDARIES NON_ENFORCEMENT [decision]`",
            text.escape_debug()
        ));
    };
    let posture = match (
        Boundaries::parse(boundaries),
        NonEnforcement::parse(non_enforcement),
    ) {
        (Some(boundaries), Some(non_enforcement)) => Posture {
            boundaries,
            non_enforcement,
        },
        _ => {
            return Some(exec_err!(
                "decision function `{name}`: unknown posture `{boundaries} {non_enforcement}`"
            ));
        }
    };
    Some(match registry.get(revision) {
        Some(loaded) => {
            let decide = Decide::new(Arc::new(NamedPolicy {
                // A function giving the decision alone is named after its policy's.
                name: match only {
                    Some(_) => name.strip_suffix(".decision").unwrap_or(name).to_owned(),
                    None => name.to_owned(),
                },
                loaded,
                posture,
            }));
            Ok(Arc::new(ScalarUDF::new_from_impl(match only {
                Some(_) => decide.decision_only(),
                None => decide,
            })))
        }
        None => exec_err!(
            "decision function `{name}` needs policy revision {revision}, which this process \
             does not hold (it holds: {}); start it with that policy's bundle",
            match registry.revisions() {
                r if r.is_empty() => "none".to_owned(),
                r => r.join(", "),
            }
        ),
    })
}

/// Ballista's logical codec, with decision functions sent as their policy's revision.
#[derive(Debug)]
pub struct LogicalCodec {
    inner: BallistaLogicalExtensionCodec,
    registry: Arc<PolicyRegistry>,
}

impl LogicalCodec {
    pub fn new(registry: Arc<PolicyRegistry>) -> LogicalCodec {
        LogicalCodec {
            inner: BallistaLogicalExtensionCodec::default(),
            registry,
        }
    }
}

impl LogicalExtensionCodec for LogicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[LogicalPlan],
        ctx: &TaskContext,
    ) -> Result<Extension> {
        self.inner.try_decode(buf, inputs, ctx)
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.try_encode(node, buf)
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        table_ref: &TableReference,
        schema: SchemaRef,
        ctx: &TaskContext,
    ) -> Result<Arc<dyn TableProvider>> {
        self.inner
            .try_decode_table_provider(buf, table_ref, schema, ctx)
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        self.inner.try_encode_table_provider(table_ref, node, buf)
    }

    fn try_decode_file_format(
        &self,
        buf: &[u8],
        ctx: &TaskContext,
    ) -> Result<Arc<dyn FileFormatFactory>> {
        self.inner.try_decode_file_format(buf, ctx)
    }

    fn try_encode_file_format(
        &self,
        buf: &mut Vec<u8>,
        node: Arc<dyn FileFormatFactory>,
    ) -> Result<()> {
        self.inner.try_encode_file_format(buf, node)
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        decode_udf(&self.registry, name, buf)
            .unwrap_or_else(|| self.inner.try_decode_udf(name, buf))
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
        encode_udf(node, buf)
    }
}

/// Ballista's physical codec, with decision functions sent as their policy's revision.
#[derive(Debug)]
pub struct PhysicalCodec {
    inner: BallistaPhysicalExtensionCodec,
    registry: Arc<PolicyRegistry>,
}

impl PhysicalCodec {
    pub fn new(registry: Arc<PolicyRegistry>) -> PhysicalCodec {
        PhysicalCodec {
            inner: BallistaPhysicalExtensionCodec::default(),
            registry,
        }
    }
}

impl PhysicalExtensionCodec for PhysicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.inner.try_decode(buf, inputs, ctx, proto_converter)
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        self.inner.try_encode(node, buf, proto_converter)
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        decode_udf(&self.registry, name, buf)
            .unwrap_or_else(|| self.inner.try_decode_udf(name, buf))
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
        encode_udf(node, buf)
    }
}
