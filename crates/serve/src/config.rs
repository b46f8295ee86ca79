//! The service's configuration, from flags or a TOML file.
//!
//! Every setting is a key of the TOML file and a flag of `gatekeeper serve` (the command line
//! maps one onto the other; flags win). [`Config::check`] refuses contradictions and unsafe
//! values before anything starts.

use std::path::PathBuf;

use gatekeeper::{Durability, FailureMode, Mode};
use serde::{Deserialize, Serialize};

/// The shortest admin token accepted, in bytes: 32 random bytes' worth, so that guessing it
/// is hopeless even without the rate limit.
pub const MIN_ADMIN_TOKEN_BYTES: usize = 32;

/// How logs are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Which request headers the Envoy endpoint reads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnvoyHeaders {
    pub platform: String,
    pub app: String,
    pub action: String,
    /// Read only when `trust_time_header` is on; otherwise its presence is an error.
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

impl EnvoyHeaders {
    /// The keys of the `[envoy]` table (and of `--envoy-header KEY=NAME`).
    pub const KEYS: [&'static str; 12] = [
        "platform",
        "app",
        "action",
        "at",
        "storefront",
        "device_country",
        "ip_country",
        "billing_country",
        "server_country",
        "signing_cert_sha256",
        "publisher_store",
        "publisher_id",
    ];

    fn slot(&mut self, key: &str) -> Option<&mut String> {
        Some(match key {
            "platform" => &mut self.platform,
            "app" => &mut self.app,
            "action" => &mut self.action,
            "at" => &mut self.at,
            "storefront" => &mut self.storefront,
            "device_country" => &mut self.device_country,
            "ip_country" => &mut self.ip_country,
            "billing_country" => &mut self.billing_country,
            "server_country" => &mut self.server_country,
            "signing_cert_sha256" => &mut self.signing_cert_sha256,
            "publisher_store" => &mut self.publisher_store,
            "publisher_id" => &mut self.publisher_id,
            _ => return None,
        })
    }

    /// Every configured header name, in the order of [`EnvoyHeaders::KEYS`].
    pub fn names(&self) -> [&str; 12] {
        [
            &self.platform,
            &self.app,
            &self.action,
            &self.at,
            &self.storefront,
            &self.device_country,
            &self.ip_country,
            &self.billing_country,
            &self.server_country,
            &self.signing_cert_sha256,
            &self.publisher_store,
            &self.publisher_id,
        ]
    }

    /// Renames the header read for `key`.
    pub fn set(&mut self, key: &str, name: &str) -> anyhow::Result<()> {
        let slot = self.slot(key).ok_or_else(|| {
            anyhow::anyhow!(
                "unknown Envoy header key `{key}`; expected one of {}",
                EnvoyHeaders::KEYS.join(", ")
            )
        })?;
        name.clone_into(slot);
        Ok(())
    }

    fn check(&self) -> anyhow::Result<()> {
        let names = self.names();
        for (key, name) in EnvoyHeaders::KEYS.iter().zip(names) {
            let valid = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !valid {
                anyhow::bail!(
                    "Envoy header `{key}` is `{name}`; a header name is lowercase ASCII letters, digits and `-`"
                );
            }
            if let Some(other) = EnvoyHeaders::KEYS
                .iter()
                .zip(names)
                .find(|(k, n)| *k != key && *n == name)
            {
                anyhow::bail!("Envoy headers `{key}` and `{}` are both `{name}`", other.0);
            }
        }
        Ok(())
    }
}

/// Everything `gatekeeper serve` can be told.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
    /// Keys trusted to sign bundles (`<name>+<hash>+<base64>`, as `gatekeeper bundle
    /// keygen` prints them); with any, an unsigned or under-signed bundle is refused.
    pub bundle_keys: Vec<String>,
    /// How many of `bundle_keys` must have signed a bundle (default 1).
    pub bundle_threshold: usize,
    /// Accept a plain `http://` bundle URL that is not a loopback address.
    pub bundle_allow_http: bool,
    /// The largest bundle accepted, in bytes.
    pub max_bundle_bytes: u64,
    /// How often the source is reloaded; 0 turns polling off.
    pub reload_interval_ms: u64,
    pub mode: Mode,
    pub failure_mode: FailureMode,
    /// How to read instants the law leaves open: `conservative` or `permissive`.
    pub posture: policy::Boundaries,
    /// Whether executive non-enforcement orders count as relief: `honour` or `ignore`.
    pub non_enforcement: policy::NonEnforcement,
    /// Start (and answer under the failure mode, with `/health` at 503) even when the first
    /// policy load fails. Off: `serve` refuses to start without a valid policy.
    pub start_without_policy: bool,
    /// The audit trail's folder; no trail without it.
    pub audit_dir: Option<PathBuf>,
    /// `durable` (an answer leaves once its record is on disk) or `buffered`.
    pub audit_durability: Durability,
    /// Bearer token for admin routes, at least [`MIN_ADMIN_TOKEN_BYTES`] bytes; admin routes
    /// refuse everything without it.
    pub admin_token: Option<String>,
    /// Judge Envoy requests at the time in the `at` header instead of the sidecar's clock.
    /// Off by default: a client must not be able to move a decision in time.
    pub trust_time_header: bool,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Most request body bytes held at once, across all connections; a body that would go
    /// over is refused with 503.
    pub max_body_bytes_in_flight: usize,
    /// Most requests in one batch.
    pub max_batch: usize,
    /// Time limit of one HTTP request, from its head to its answer (queueing included).
    pub timeout_ms: u64,
    /// Time a connection has to send a complete request head, once open or once its
    /// previous request is answered (so also the keep-alive idle limit).
    pub header_read_timeout_ms: u64,
    /// A connection on which no byte moves either way for this long is closed.
    pub idle_timeout_ms: u64,
    /// On shutdown, how long requests in flight may take before their connections are cut.
    pub shutdown_timeout_ms: u64,
    /// Requests served at once by a listener, across its routes; more wait (within
    /// `timeout_ms`).
    pub concurrency: usize,
    /// A tracing filter (`info`, `gatekeeper=debug,warn`); `RUST_LOG` applies when unset.
    pub log_level: Option<String>,
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
            bundle_keys: Vec::new(),
            bundle_threshold: 1,
            bundle_allow_http: false,
            max_bundle_bytes: gatekeeper::DEFAULT_MAX_BUNDLE_BYTES,
            reload_interval_ms: 5_000,
            mode: Mode::Enforce,
            failure_mode: FailureMode::Closed,
            posture: policy::Boundaries::Conservative,
            non_enforcement: policy::NonEnforcement::Honour,
            start_without_policy: false,
            audit_dir: None,
            audit_durability: Durability::Durable,
            admin_token: None,
            trust_time_header: false,
            max_body_bytes: 16 * 1024 * 1024,
            max_body_bytes_in_flight: 64 * 1024 * 1024,
            max_batch: 10_000,
            timeout_ms: 10_000,
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 30_000,
            shutdown_timeout_ms: 15_000,
            concurrency: 1_024,
            log_level: None,
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

    /// The configuration as TOML, without the admin token (a comment says whether one is set).
    pub fn to_toml(&self) -> anyhow::Result<String> {
        let shown = Config {
            admin_token: None,
            ..self.clone()
        };
        let mut text = toml::to_string(&shown)?;
        if self.admin_token.is_some() {
            text.insert_str(0, "# admin_token is set (not shown)\n");
        }
        Ok(text)
    }

    /// Refuses contradictions and unsafe values.
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
        if !self.bundle_keys.is_empty() && self.bundle_url.is_none() {
            anyhow::bail!(
                "`--bundle-key` trusts signers of bundles, but policy folders carry no signatures; give `--bundle-url`"
            );
        }
        if !self.bundle_keys.is_empty()
            && (self.bundle_threshold == 0 || self.bundle_threshold > self.bundle_keys.len())
        {
            anyhow::bail!(
                "`bundle_threshold` is {} but {} keys are trusted; it must be between 1 and the number of keys",
                self.bundle_threshold,
                self.bundle_keys.len()
            );
        }
        let positive = [
            ("max_batch", self.max_batch as u64),
            ("max_body_bytes", self.max_body_bytes as u64),
            ("max_bundle_bytes", self.max_bundle_bytes),
            (
                "max_body_bytes_in_flight",
                self.max_body_bytes_in_flight as u64,
            ),
            ("concurrency", self.concurrency as u64),
            ("timeout_ms", self.timeout_ms),
            ("header_read_timeout_ms", self.header_read_timeout_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
            ("shutdown_timeout_ms", self.shutdown_timeout_ms),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            anyhow::bail!("`{name}` must be positive");
        }
        if self.idle_timeout_ms <= self.timeout_ms {
            anyhow::bail!(
                "`idle_timeout_ms` ({}) must be longer than `timeout_ms` ({}), so that a request being answered is never cut as idle",
                self.idle_timeout_ms,
                self.timeout_ms
            );
        }
        if self.max_body_bytes > self.max_body_bytes_in_flight {
            anyhow::bail!(
                "`max_body_bytes` ({}) is more than `max_body_bytes_in_flight` ({}): no such body could ever be read",
                self.max_body_bytes,
                self.max_body_bytes_in_flight
            );
        }
        if u32::try_from(self.max_body_bytes_in_flight).is_err() {
            anyhow::bail!("`max_body_bytes_in_flight` must be below 4 GiB");
        }
        if let Some(token) = &self.admin_token
            && token.len() < MIN_ADMIN_TOKEN_BYTES
        {
            anyhow::bail!(
                "the admin token is {} bytes; it must be at least {MIN_ADMIN_TOKEN_BYTES} (for example `openssl rand -hex 32`)",
                token.len()
            );
        }
        self.envoy.check()
    }
}
