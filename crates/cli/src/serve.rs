//! `gatekeeper serve`: its flags (one for every key of the TOML file; flags win), the
//! logging set-up, and running the service until a signal.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context as _;

use crate::PostureArgs;

/// The exit codes of `serve`.
pub(crate) const EXIT: &str = "\
Exit status:
  0  stopped by SIGTERM or Ctrl-C after draining, or the settings were printed
  2  it could not start: the first policy load failed (each problem is reported; see
     --start-without-policy), bad settings, an address that cannot be bound, or a usage
     error";

/// The log filter when neither `--log-level`, `RUST_LOG` nor `log_level` says otherwise.
const DEFAULT_LOG_LEVEL: &str = "info";

#[derive(clap::Args, Debug)]
pub(crate) struct ServeArgs {
    /// A TOML file with any of the settings below, under the flag's name with _ for -
    /// (flags override it).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the settings in effect (TOML, without the admin token) and exit.
    #[arg(long)]
    print_config: bool,
    /// Policy folders (repeat for several sets).
    #[arg(long = "policies", value_name = "DIR")]
    policies: Vec<PathBuf>,
    /// Poll a policy bundle URL instead of folders.
    #[arg(long, value_name = "URL")]
    bundle_url: Option<String>,
    /// The bundle's pinned SHA-256 (hex).
    #[arg(long, value_name = "HEX")]
    bundle_sha256: Option<String>,
    /// Where the last good bundle is cached for restarts.
    #[arg(long, value_name = "DIR")]
    bundle_cache: Option<PathBuf>,
    /// A key trusted to sign bundles (<name>+<hash>+<base64>); repeat for several. With
    /// any, unsigned or under-signed bundles are refused.
    #[arg(long, value_name = "KEY")]
    bundle_key: Vec<String>,
    /// How many trusted keys must have signed a bundle (default 1).
    #[arg(long, value_name = "N")]
    bundle_threshold: Option<usize>,
    /// Accept a plain http:// bundle URL that is not a loopback address.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    bundle_allow_http: Option<bool>,
    /// The largest bundle accepted, in bytes (default 256 MiB).
    #[arg(long, value_name = "BYTES")]
    max_bundle_bytes: Option<u64>,
    /// How often the policy source is reloaded; 0 turns polling off (default 5000).
    #[arg(long, value_name = "MS")]
    reload_interval_ms: Option<u64>,
    /// Decision listener (default 127.0.0.1:8181).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// A listener of their own for admin routes.
    #[arg(long, value_name = "ADDR")]
    admin_listen: Option<String>,
    /// enforce, or shadow (record would-be denies, serve).
    #[arg(long, value_parser = ["enforce", "shadow"])]
    mode: Option<String>,
    /// closed or open: what happens with no valid policy or a failed audit trail.
    #[arg(long, value_parser = ["closed", "open"])]
    failure_mode: Option<String>,
    #[command(flatten)]
    posture: PostureArgs,
    /// Start even when the first policy load fails (answers follow the failure mode and
    /// /health is 503 until a reload succeeds); without it, serve refuses to start.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    start_without_policy: Option<bool>,
    /// The audit trail's folder.
    #[arg(long, value_name = "DIR")]
    audit_dir: Option<PathBuf>,
    /// durable (an answer leaves once its record is on disk; the default) or buffered.
    #[arg(long, value_parser = ["durable", "buffered"])]
    audit_durability: Option<String>,
    /// Bearer token for admin routes, at least 32 bytes (or the environment variable
    /// GATEKEEPER_ADMIN_TOKEN).
    #[arg(long, env = "GATEKEEPER_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Judge Envoy requests at the time in the at header rather than the sidecar's clock.
    /// Only when the proxy strips clients' copies of it; off by default.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    trust_time_header: Option<bool>,
    /// Largest request body accepted (default 16 MiB).
    #[arg(long, value_name = "BYTES")]
    max_body_bytes: Option<usize>,
    /// Most request body bytes held at once across connections (default 64 MiB).
    #[arg(long, value_name = "BYTES")]
    max_body_bytes_in_flight: Option<usize>,
    /// Most requests in one batch (default 10000).
    #[arg(long, value_name = "N")]
    max_batch: Option<usize>,
    /// Time limit of one request, from its head to its answer (default 10000).
    #[arg(long, value_name = "MS")]
    timeout_ms: Option<u64>,
    /// Time a connection has to send a complete request head (default 10000).
    #[arg(long, value_name = "MS")]
    header_read_timeout_ms: Option<u64>,
    /// A connection on which no byte moves for this long is closed (default 30000).
    #[arg(long, value_name = "MS")]
    idle_timeout_ms: Option<u64>,
    /// On shutdown, how long requests in flight may take (default 15000).
    #[arg(long, value_name = "MS")]
    shutdown_timeout_ms: Option<u64>,
    /// Requests served at once by each listener, across its routes (default 1024).
    #[arg(long, value_name = "N")]
    concurrency: Option<usize>,
    /// A log filter such as info or gatekeeper=debug,warn (over RUST_LOG, which is over
    /// the file's log_level; default info).
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
    /// text or json logs.
    #[arg(long, value_parser = ["text", "json"])]
    log_format: Option<String>,
    /// Rename a header the Envoy endpoint reads, as KEY=NAME (keys: platform, app,
    /// action, at, storefront, device_country, ip_country, billing_country,
    /// server_country, signing_cert_sha256, publisher_store, publisher_id); repeatable.
    #[arg(long, value_name = "KEY=NAME")]
    envoy_header: Vec<String>,
}

fn enumerated<T: serde::de::DeserializeOwned>(value: &str) -> anyhow::Result<T> {
    Ok(serde_json::from_value(serde_json::Value::String(
        value.to_owned(),
    ))?)
}

/// The settings in effect: the file's, overridden by the flags given.
fn config(args: &ServeArgs) -> anyhow::Result<::serve::Config> {
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading `{}`", path.display()))?;
            ::serve::Config::from_toml(&text).with_context(|| format!("in `{}`", path.display()))?
        }
        None => ::serve::Config::default(),
    };
    fn set<T: Clone>(slot: &mut T, flag: &Option<T>) {
        if let Some(v) = flag {
            *slot = v.clone();
        }
    }
    fn set_some<T: Clone>(slot: &mut Option<T>, flag: &Option<T>) {
        if flag.is_some() {
            slot.clone_from(flag);
        }
    }
    if !args.policies.is_empty() {
        config.policies.clone_from(&args.policies);
    }
    set_some(&mut config.bundle_url, &args.bundle_url);
    set_some(&mut config.bundle_sha256, &args.bundle_sha256);
    set_some(&mut config.bundle_cache, &args.bundle_cache);
    if !args.bundle_key.is_empty() {
        config.bundle_keys.clone_from(&args.bundle_key);
    }
    set(&mut config.bundle_threshold, &args.bundle_threshold);
    set(&mut config.bundle_allow_http, &args.bundle_allow_http);
    set(&mut config.max_bundle_bytes, &args.max_bundle_bytes);
    set(&mut config.reload_interval_ms, &args.reload_interval_ms);
    set(&mut config.listen, &args.listen);
    set_some(&mut config.admin_listen, &args.admin_listen);
    if let Some(m) = &args.mode {
        config.mode = enumerated(m)?;
    }
    if let Some(m) = &args.failure_mode {
        config.failure_mode = enumerated(m)?;
    }
    let mut posture = policy::Posture {
        boundaries: config.posture,
        non_enforcement: config.non_enforcement,
    };
    args.posture.apply(&mut posture);
    config.posture = posture.boundaries;
    config.non_enforcement = posture.non_enforcement;
    set(&mut config.start_without_policy, &args.start_without_policy);
    set_some(&mut config.audit_dir, &args.audit_dir);
    if let Some(d) = &args.audit_durability {
        config.audit_durability = enumerated(d)?;
    }
    set_some(&mut config.admin_token, &args.admin_token);
    set(&mut config.trust_time_header, &args.trust_time_header);
    set(&mut config.max_body_bytes, &args.max_body_bytes);
    set(
        &mut config.max_body_bytes_in_flight,
        &args.max_body_bytes_in_flight,
    );
    set(&mut config.max_batch, &args.max_batch);
    set(&mut config.timeout_ms, &args.timeout_ms);
    set(
        &mut config.header_read_timeout_ms,
        &args.header_read_timeout_ms,
    );
    set(&mut config.idle_timeout_ms, &args.idle_timeout_ms);
    set(&mut config.shutdown_timeout_ms, &args.shutdown_timeout_ms);
    set(&mut config.concurrency, &args.concurrency);
    set_some(&mut config.log_level, &args.log_level);
    if let Some(f) = &args.log_format {
        config.log_format = enumerated(f)?;
    }
    for pair in &args.envoy_header {
        let (key, name) = pair
            .split_once('=')
            .with_context(|| format!("`--envoy-header {pair}`: expected `KEY=NAME`"))?;
        config
            .envoy
            .set(key.trim(), name.trim())
            .with_context(|| format!("`--envoy-header {pair}`"))?;
    }
    config.check()?;
    Ok(config)
}

/// The log filter: `--log-level`, else `RUST_LOG`, else the file's `log_level`, else
/// `info`. A filter that does not parse is an error, never a silent default.
fn log_filter(
    flag: Option<&str>,
    rust_log: Option<&str>,
    file: Option<&str>,
) -> anyhow::Result<tracing_subscriber::EnvFilter> {
    let (directives, from) = match (flag, rust_log, file) {
        (Some(f), _, _) => (f, "`--log-level`"),
        (None, Some(env), _) => (env, "`RUST_LOG`"),
        (None, None, Some(file)) => (file, "`log_level`"),
        (None, None, None) => (DEFAULT_LOG_LEVEL, "the default log level"),
    };
    tracing_subscriber::EnvFilter::try_new(directives)
        .with_context(|| format!("{from} `{directives}` is not a log filter"))
}

pub(crate) fn run(args: ServeArgs, stdout: &mut dyn Write) -> anyhow::Result<u8> {
    let config = config(&args)?;
    let rust_log = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let filter = log_filter(
        args.log_level.as_deref(),
        rust_log.as_deref(),
        config.log_level.as_deref(),
    )?;
    if args.print_config {
        stdout.write_all(config.to_toml()?.as_bytes())?;
        return Ok(0);
    }
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match config.log_format {
        ::serve::LogFormat::Json => subscriber.json().try_init(),
        ::serve::LogFormat::Text => subscriber.try_init(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let server = ::serve::start(config).await?;
        eprintln!("gatekeeper serving on http://{}", server.addr);
        if let Some(admin) = server.admin_addr {
            eprintln!("admin routes on http://{admin}");
        }
        server.run_until_signal().await?;
        anyhow::Ok(0)
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// `--log-level` wins over `RUST_LOG`, which wins over the file; nothing set is `info`.
    #[test]
    fn log_filter_takes_the_flag_then_rust_log_then_the_file() {
        let shown = |f: Option<&str>, e: Option<&str>, t: Option<&str>| {
            log_filter(f, e, t).unwrap().to_string()
        };
        assert_eq!(shown(Some("debug"), Some("warn"), Some("error")), "debug");
        assert_eq!(shown(None, Some("warn"), Some("error")), "warn");
        assert_eq!(shown(None, None, Some("error")), "error");
        assert_eq!(shown(None, None, None), "info");
        assert_eq!(
            shown(None, Some("gatekeeper=debug,warn"), None),
            "gatekeeper=debug,warn"
        );
        let bad = log_filter(None, Some("gatekeeper=[["), None).unwrap_err();
        assert!(format!("{bad:#}").contains("`RUST_LOG`"), "{bad:#}");
    }
}
