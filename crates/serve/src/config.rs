//! The service's configuration, from flags or a TOML file.

use std::path::PathBuf;

use gatekeeper::{FailureMode, Mode};
use serde::Deserialize;

/// How logs are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Which request headers the Envoy endpoint reads.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnvoyHeaders {
    pub platform: String,
    pub app: String,
    pub action: String,
    pub at: String,
    pub storefront: String,
    pub device_country: String,
    pub ip_country: String,
    pub billing_country: String,
    pub server_country: String,
    pub signing_cert_sha256: String,
    pub publisher_store: String,
    pub publisher_id: String,
}

impl Default for EnvoyHeaders {
    fn default() -> EnvoyHeaders {
        EnvoyHeaders {
            platform: "x-gatekeeper-platform".into(),
            app: "x-gatekeeper-app".into(),
            action: "x-gatekeeper-action".into(),
            at: "x-gatekeeper-at".into(),
            storefront: "x-gatekeeper-storefront".into(),
            device_country: "x-gatekeeper-device-country".into(),
            ip_country: "x-gatekeeper-ip-country".into(),
            billing_country: "x-gatekeeper-billing-country".into(),
            server_country: "x-gatekeeper-server-country".into(),
            signing_cert_sha256: "x-gatekeeper-signing-cert-sha256".into(),
            publisher_store: "x-gatekeeper-publisher-store".into(),
            publisher_id: "x-gatekeeper-publisher-id".into(),
        }
    }
}

/// Everything `gatekeeper serve` can be told.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Decision listener, `host:port`.
    pub listen: String,
    /// Admin listener; without it admin routes share the decision listener.
    pub admin_listen: Option<String>,
    /// Policy folders (or use `bundle_url`).
    pub policies: Vec<PathBuf>,
    /// A bundle URL to poll instead of folders.
    pub bundle_url: Option<String>,
    /// The bundle's pinned SHA-256.
    pub bundle_sha256: Option<String>,
    /// Where the last good bundle is kept.
    pub bundle_cache: Option<PathBuf>,
    /// How often the source is reloaded; 0 turns polling off.
    pub reload_interval_ms: u64,
    pub mode: Mode,
    pub failure_mode: FailureMode,
    /// How to read instants the law leaves open: `conservative` or `permissive`.
    pub posture: policy::Boundaries,
    /// Whether executive non-enforcement orders count as relief: `honour` or `ignore`.
    pub non_enforcement: policy::NonEnforcement,
    /// The audit trail's folder; no trail without it.
    pub audit_dir: Option<PathBuf>,
    /// Bearer token for admin routes; admin routes refuse everything without it.
    pub admin_token: Option<String>,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Most requests in one batch.
    pub max_batch: usize,
    /// Time limit of one HTTP request.
    pub timeout_ms: u64,
    /// Requests served at once; more wait.
    pub concurrency: usize,
    pub log_format: LogFormat,
    pub envoy: EnvoyHeaders,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: "127.0.0.1:8181".into(),
            admin_listen: None,
            policies: Vec::new(),
            bundle_url: None,
            bundle_sha256: None,
            bundle_cache: None,
            reload_interval_ms: 5_000,
            mode: Mode::Enforce,
            failure_mode: FailureMode::Closed,
            posture: policy::Boundaries::Conservative,
            non_enforcement: policy::NonEnforcement::Honour,
            audit_dir: None,
            admin_token: None,
            max_body_bytes: 16 * 1024 * 1024,
            max_batch: 10_000,
            timeout_ms: 10_000,
            concurrency: 1_024,
            log_format: LogFormat::Text,
            envoy: EnvoyHeaders::default(),
        }
    }
}

impl Config {
    /// Reads a TOML configuration file.
    pub fn from_toml(text: &str) -> anyhow::Result<Config> {
        toml::from_str(text).map_err(|e| anyhow::anyhow!("{}", e.to_string().trim_end()))
    }

    /// Refuses contradictions.
    pub fn check(&self) -> anyhow::Result<()> {
        match (self.policies.is_empty(), &self.bundle_url) {
            (true, None) => anyhow::bail!("give `--policies DIR` or `--bundle-url URL`"),
            (false, Some(_)) => {
                anyhow::bail!("give either `--policies` or `--bundle-url`, not both")
            }
            _ => {}
        }
        if self.bundle_sha256.is_some() && self.bundle_url.is_none() {
            anyhow::bail!("`--bundle-sha256` pins a bundle URL; give `--bundle-url` too");
        }
        if self.max_batch == 0
            || self.max_body_bytes == 0
            || self.concurrency == 0
            || self.timeout_ms == 0
        {
            anyhow::bail!(
                "`max_batch`, `max_body_bytes`, `concurrency` and `timeout_ms` must be positive"
            );
        }
        Ok(())
    }
}
