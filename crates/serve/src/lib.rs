//! `gatekeeper serve`: the sidecar decision service, for stores, CDNs and payment paths
//! not written in Rust, or behind Envoy.
//!
//! - `POST /v1/decide`: one request (the JSON of `gatekeeper check`) or an array of them.
//! - `ANY /v1/envoy/authz/...`: an Envoy ext_authz HTTP authorization service.
//! - `GET /health` (readiness: a valid policy is active), `GET /health/live`, `GET /metrics`.
//! - `POST /v1/admin/reload` with a bearer token, optionally on a listener of its own.
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! let mut config = serve::Config::default();
//! config.policies = vec!["policies/us-2020-courts".into()];
//! config.listen = "127.0.0.1:0".into();
//! let server = serve::start(config).await?;
//! println!("listening on {}", server.addr);
//! server.shutdown().await?;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

mod config;
mod routes;

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Context as _;
use gatekeeper::{AuditConfig, Gatekeeper, Head, HttpSource, PolicySource};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::{Config, EnvoyHeaders, LogFormat};

/// The process-wide Prometheus recorder; installed once, before any gatekeeper registers
/// its counters.
fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 1.0])
            .map(PrometheusBuilder::build_recorder)
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics shows only what reaches this one");
        }
        handle
    })
}

/// A running service.
#[derive(Debug)]
pub struct Server {
    /// The decision listener's address.
    pub addr: SocketAddr,
    /// The admin listener's address, when admin routes have a listener of their own.
    pub admin_addr: Option<SocketAddr>,
    /// The gatekeeper deciding the requests.
    pub gatekeeper: Gatekeeper,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<std::io::Result<()>>>,
    _watcher: Option<gatekeeper::Watcher>,
}

/// Builds the gatekeeper from the configuration, binds the listeners and starts serving.
pub async fn start(config: Config) -> anyhow::Result<Server> {
    config.check()?;
    let metrics = prometheus().clone();
    let source = if let Some(url) = &config.bundle_url {
        let mut s = HttpSource::new(url.clone());
        s.pinned_sha256 = config.bundle_sha256.clone();
        s.cache_dir = config.bundle_cache.clone();
        PolicySource::BundleUrl(s)
    } else {
        PolicySource::Dirs(config.policies.clone())
    };
    let mut builder = Gatekeeper::builder()
        .source(source)
        .mode(config.mode)
        .failure_mode(config.failure_mode)
        .posture(policy::Posture {
            boundaries: config.posture,
            non_enforcement: config.non_enforcement,
        });
    if let Some(dir) = &config.audit_dir {
        builder = builder.audit(AuditConfig::new(dir));
    }
    // Building loads the first policy, which may fetch a bundle: off the async threads.
    let gatekeeper = tokio::task::spawn_blocking(move || builder.build())
        .await
        .context("starting the gatekeeper")?
        .context("opening the audit trail")?;
    let watcher = (config.reload_interval_ms > 0)
        .then(|| gatekeeper.watch(Duration::from_millis(config.reload_interval_ms)));

    let state = routes::AppState::new(gatekeeper.clone(), &config, metrics);
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("binding `{}`", config.listen))?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = watch::channel(false);
    let mut tasks = Vec::new();
    let (main_router, admin_router) = match &config.admin_listen {
        Some(_) => (
            routes::decisions(state.clone(), &config),
            Some(routes::admin(state.clone(), &config)),
        ),
        None => (
            routes::decisions(state.clone(), &config).merge(routes::admin(state.clone(), &config)),
            None,
        ),
    };
    tasks.push(spawn_serving(listener, main_router, stopped.clone()));
    let mut admin_addr = None;
    if let (Some(listen), Some(router)) = (&config.admin_listen, admin_router) {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding `{listen}`"))?;
        admin_addr = Some(listener.local_addr()?);
        tasks.push(spawn_serving(listener, router, stopped));
    }
    tracing::info!(%addr, admin = ?admin_addr, "gatekeeper serving");
    Ok(Server {
        addr,
        admin_addr,
        gatekeeper,
        stop,
        tasks,
        _watcher: watcher,
    })
}

fn spawn_serving(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    mut stopped: watch::Receiver<bool>,
) -> JoinHandle<std::io::Result<()>> {
    tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = stopped.wait_for(|s| *s).await;
            })
            .await
    })
}

impl Server {
    /// Stops accepting, lets requests in flight finish, then flushes and closes the audit
    /// trail. Returns the audit chain's head, if there is a trail.
    pub async fn shutdown(self) -> anyhow::Result<Option<Head>> {
        let _ = self.stop.send(true);
        for task in self.tasks {
            task.await
                .context("joining a listener")?
                .context("serving")?;
        }
        let gk = self.gatekeeper.clone();
        let head = tokio::task::spawn_blocking(move || gk.close_audit()).await??;
        tracing::info!("gatekeeper stopped");
        Ok(head)
    }

    /// Serves until SIGTERM or Ctrl-C, then shuts down gracefully.
    pub async fn run_until_signal(self) -> anyhow::Result<Option<Head>> {
        wait_for_signal().await;
        tracing::info!("signal received: draining requests and flushing the audit trail");
        self.shutdown().await
    }
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
