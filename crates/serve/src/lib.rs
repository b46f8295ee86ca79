//! `gatekeeper serve`: the sidecar decision service, for stores, CDNs and payment paths
//! not written in Rust, or behind Envoy.
//!
//! - `POST /v1/decide`: one request (the JSON of `gatekeeper check`) or an array of them.
//! - `ANY /v1/envoy/authz/...`: an Envoy ext_authz HTTP authorization service, judged at
//!   the sidecar's clock unless the operator trusts the time header.
//! - `ANY /v1/nginx/authz/...`: the same for nginx's `auth_request`, a refusal being a 403
//!   with the decision in headers (the only refusal nginx passes on).
//! - `GET /health` (readiness: a valid policy is active), `GET /health/live`, `GET /metrics`.
//! - `POST /v1/admin/reload` with a bearer token, optionally on a listener of its own.
//!
//! Connections are served by hyper directly, so that every phase of one is bounded: the
//! request head (`header_read_timeout_ms`), the answer (`timeout_ms`), a connection on which
//! nothing moves (`idle_timeout_ms`) and the drain on shutdown (`shutdown_timeout_ms`); the
//! bytes of request bodies held across connections are bounded too
//! (`max_body_bytes_in_flight`).
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
mod nginx;
mod routes;
mod telemetry;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::ConnectInfo;
use gatekeeper::keys::VerifierKey;
use gatekeeper::{
    AuditConfig, BuildError, Gatekeeper, Head, HttpSource, PolicySource, ReloadError,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

pub use config::{Config, EnvoyHeaders, LogFormat, MIN_ADMIN_TOKEN_BYTES};

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
        if ::metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics shows only what reaches this one");
        }
        telemetry::describe();
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
    tasks: Vec<JoinHandle<()>>,
    _watcher: Option<gatekeeper::Watcher>,
}

/// The error `start` gives when there is no valid policy: the reason, with every
/// diagnostic rendered.
fn no_policy_error(error: &ReloadError) -> anyhow::Error {
    let details = match error {
        ReloadError::Policy(d) => format!("\n{}", d.render()),
        _ => String::new(),
    };
    anyhow::anyhow!(
        "no valid policy, so nothing was started: {error}{details}\n\
         (give `--start-without-policy` to start anyway and answer under the failure mode)"
    )
}

/// Builds the gatekeeper from the configuration, binds the listeners and starts serving.
/// Refuses to start when the first policy load fails, unless `start_without_policy` is set.
pub async fn start(config: Config) -> anyhow::Result<Server> {
    start_with_clock(config, None).await
}

/// [`start`], with the gatekeeper reading `clock` instead of the system clock: for
/// simulations that move time (a `ManualClock` shared with the mock store, so that the
/// sidecar judges at each scenario step's instant). Not a setting: a configured sidecar
/// always judges at the system clock.
pub async fn start_with_clock(
    config: Config,
    clock: Option<Arc<dyn gatekeeper::Clock>>,
) -> anyhow::Result<Server> {
    config.check()?;
    let metrics = prometheus().clone();
    telemetry::register();
    let source = if let Some(url) = &config.bundle_url {
        let mut s = HttpSource::new(url.clone());
        s.pinned_sha256 = config.bundle_sha256.clone();
        s.cache_dir = config.bundle_cache.clone();
        s.allow_insecure_http = config.bundle_allow_http;
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
        })
        .max_bundle_bytes(config.max_bundle_bytes)
        .start_empty(config.start_without_policy);
    if let Some(clock) = clock {
        builder = builder.clock(clock);
    }
    if !config.bundle_keys.is_empty() {
        let keys = config
            .bundle_keys
            .iter()
            .map(|k| {
                VerifierKey::parse(k.trim())
                    .with_context(|| format!("trusted bundle key `{}`", k.trim()))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        builder = builder.trusted_keys(keys, config.bundle_threshold);
    }
    if let Some(dir) = &config.audit_dir {
        let mut audit = AuditConfig::new(dir);
        audit.durability = config.audit_durability;
        builder = builder.audit(audit);
    }
    // Building loads the first policy, which may fetch a bundle: off the async threads.
    let gatekeeper = match tokio::task::spawn_blocking(move || builder.build())
        .await
        .context("starting the gatekeeper")?
    {
        Ok(gk) => gk,
        // The gatekeeper has logged the failure with every diagnostic; the error repeats
        // them for whoever started the process.
        Err(BuildError::FirstLoad(e)) => return Err(no_policy_error(&e)),
        Err(e) => return Err(anyhow::Error::new(e).context("starting the gatekeeper")),
    };
    let readiness = gatekeeper.readiness();
    if !readiness.is_ready() {
        tracing::warn!(
            %readiness,
            failure_mode = ?config.failure_mode,
            "starting without a valid policy (`start_without_policy`): answers follow the failure mode and /health is 503 until a reload succeeds"
        );
    }
    let watcher = (config.reload_interval_ms > 0)
        .then(|| gatekeeper.watch(Duration::from_millis(config.reload_interval_ms)));

    let state = routes::AppState::new(gatekeeper.clone(), &config, metrics);
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("binding `{}`", config.listen))?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = watch::channel(false);
    let limits = Limits::from(&config);
    let mut tasks = Vec::new();
    // Each listener has its slots (`concurrency`): the admin routes share the decision
    // listener's, or have their own listener and slots.
    let guard = routes::Guard::new(&config);
    let (main_router, admin_router) = match &config.admin_listen {
        Some(_) => (
            routes::decisions(state.clone(), &guard),
            Some(routes::admin(state.clone(), &routes::Guard::new(&config))),
        ),
        None => (
            routes::decisions(state.clone(), &guard).merge(routes::admin(state.clone(), &guard)),
            None,
        ),
    };
    let mut admin_addr = None;
    let admin_listener = match &config.admin_listen {
        Some(listen) => {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("binding `{listen}`"))?;
            admin_addr = Some(listener.local_addr()?);
            Some(listener)
        }
        None => None,
    };
    tasks.push(spawn_serving(
        listener,
        main_router,
        stopped.clone(),
        limits,
    ));
    if let (Some(listener), Some(router)) = (admin_listener, admin_router) {
        tasks.push(spawn_serving(listener, router, stopped, limits));
    }
    tracing::info!(%addr, admin = ?admin_addr, trust_time_header = config.trust_time_header, "gatekeeper serving");
    Ok(Server {
        addr,
        admin_addr,
        gatekeeper,
        stop,
        tasks,
        _watcher: watcher,
    })
}

/// The bounds on one connection.
#[derive(Clone, Copy, Debug)]
struct Limits {
    header_read_timeout: Duration,
    idle_timeout: Duration,
    shutdown_timeout: Duration,
}

impl From<&Config> for Limits {
    fn from(c: &Config) -> Limits {
        Limits {
            header_read_timeout: Duration::from_millis(c.header_read_timeout_ms),
            idle_timeout: Duration::from_millis(c.idle_timeout_ms),
            shutdown_timeout: Duration::from_millis(c.shutdown_timeout_ms),
        }
    }
}

/// Accepts connections until told to stop, then waits for them to drain, cutting those
/// still open at the shutdown deadline.
fn spawn_serving(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    mut stopped: watch::Receiver<bool>,
    limits: Limits,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        connections.spawn(serve_connection(stream, peer, router.clone(), stopped.clone(), limits));
                    }
                    Err(e) => {
                        // Out of file descriptors, most likely: let connections close
                        // rather than spin on the error.
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                _ = stop_requested(&mut stopped) => break,
            }
        }
        drop(listener);
        let deadline = tokio::time::sleep(limits.shutdown_timeout);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                next = connections.join_next() => if next.is_none() { break },
                _ = &mut deadline => {
                    let open = connections.len();
                    tracing::warn!(open, "shutdown deadline reached: closing the connections still open");
                    ::metrics::counter!(telemetry::CONNECTIONS_CLOSED, "reason" => "shutdown-deadline").increment(open as u64);
                    connections.shutdown().await;
                    break;
                }
            }
        }
    })
}

/// Resolves once the service is told to stop (or its handle is gone).
async fn stop_requested(stopped: &mut watch::Receiver<bool>) {
    // The guard `wait_for` gives is not `Send`: drop it before anything else is awaited.
    let _ = stopped.wait_for(|s| *s).await;
}

/// When a byte last moved on a connection, in milliseconds since it opened.
#[derive(Debug)]
struct Activity {
    opened: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.opened + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// A stream that records when bytes move, for the idle timeout.
struct Tracked {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        result
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.stream).poll_write(cx, data);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    /// Vectored, as the socket is: hyper then sends a large answer from its own buffer
    /// beside the head, where without it hyper copies the answer into its write buffer
    /// first (329 KB for a batch of 1,000).
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.stream).poll_write_vectored(cx, data);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Serves one connection (HTTP/1.1, keep-alive) until it closes, times out, goes idle, or
/// the service stops (then it finishes the request in flight and closes).
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: axum::Router,
    mut stopped: watch::Receiver<bool>,
    limits: Limits,
) {
    let activity = Arc::new(Activity {
        opened: Instant::now(),
        last_ms: AtomicU64::new(0),
    });
    let io = TokioIo::new(Tracked {
        stream,
        activity: activity.clone(),
    });
    let service = hyper::service::service_fn(
        move |mut request: http::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            let mut router = router.clone();
            async move { tower::Service::call(&mut router, request.map(axum::body::Body::new)).await }
        },
    );
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let mut draining = false;
    loop {
        let idle_at = activity.last() + limits.idle_timeout;
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    if e.is_timeout() {
                        ::metrics::counter!(telemetry::CONNECTIONS_CLOSED, "reason" => "header-timeout").increment(1);
                        tracing::debug!(%peer, "connection closed: no complete request head in time");
                    } else {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                }
                return;
            }
            _ = stop_requested(&mut stopped), if !draining => {
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
            _ = tokio::time::sleep_until(idle_at) => {
                if activity.last() + limits.idle_timeout <= Instant::now() {
                    ::metrics::counter!(telemetry::CONNECTIONS_CLOSED, "reason" => "idle-timeout").increment(1);
                    tracing::debug!(%peer, "connection closed: idle");
                    return;
                }
            }
        }
    }
}

impl Server {
    /// Stops accepting, lets requests in flight finish (cutting connections still open
    /// after `shutdown_timeout_ms`), then flushes and closes the audit trail. Returns the
    /// audit chain's head, if there is a trail.
    pub async fn shutdown(self) -> anyhow::Result<Option<Head>> {
        let _ = self.stop.send(true);
        for task in self.tasks {
            task.await.context("joining a listener")?;
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
