//! The store's calls to the sidecar, behind a proxy: what a store not written in Rust does
//! for the checks it makes itself.

use anyhow::Context as _;
use policy::RequestRecord;
use serde_json::Value;

/// Judges `records` with one `POST /v1/decide` to the sidecar at `base`; the verdict
/// records in order.
pub(crate) async fn decide(
    client: &reqwest::Client,
    base: &str,
    records: &[RequestRecord],
) -> anyhow::Result<Vec<Value>> {
    let response = client
        .post(format!("{base}/v1/decide"))
        .json(records)
        .send()
        .await
        .with_context(|| format!("the sidecar at `{base}` does not answer"))?;
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .with_context(|| format!("the sidecar's answer ({status}) is not JSON"))?;
    anyhow::ensure!(status.is_success(), "the sidecar answered {status}: {body}");
    let verdicts = match body {
        Value::Array(verdicts) if verdicts.len() == records.len() => verdicts,
        other => anyhow::bail!(
            "the sidecar answered {} records with {other}",
            records.len()
        ),
    };
    if let Some(error) = verdicts
        .iter()
        .find_map(|v| v.get("error").filter(|_| v.get("gate").is_none()))
    {
        anyhow::bail!("the sidecar refused a record the store validated: {error}");
    }
    Ok(verdicts)
}
