//! A mock app store over HTTP with the gatekeeper embedded at each interception point, as
//! a store would embed it, and the simulator that drives it through dated scenarios and
//! seeded random workloads (`cargo xtask simulate`); or, as a store not written in Rust
//! would run, behind nginx or Caddy with `gatekeeper serve` as their authorizer ([`proxy`]).
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! let running = mockstore::start(&["policies/us-2020".into()], mockstore::StoreConfig::default()).await?;
//! println!("store on {}", running.base);
//! running.stop().await;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

pub mod load;
pub mod proxy;
pub mod proxy_load;
pub mod report;
pub mod scenario;
mod sidecar;
pub mod standalone;
pub mod store;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use gatekeeper::{Gatekeeper, ManualClock};
use policy::Instant;
pub use store::{Guard, Store, StoreConfig};

/// A store serving on 127.0.0.1.
#[derive(Debug)]
pub struct Running {
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    pub store: Store,
    pub gatekeeper: Gatekeeper,
    pub clock: ManualClock,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Starts a store with the policy folders on an ephemeral port of 127.0.0.1, its gatekeeper
/// deciding under `config.posture`. Its clock is a settable clock (set through
/// `PUT /v1/admin/clock`), starting at 2020-01-01.
pub async fn start(policies: &[PathBuf], config: StoreConfig) -> anyhow::Result<Running> {
    start_with_clock(policies, config, start_clock()?).await
}

/// The clock a store starts with: 2020-01-01.
pub fn start_clock() -> anyhow::Result<ManualClock> {
    Ok(ManualClock::new(
        Instant::parse_rfc3339("2020-01-01T00:00:00Z").map_err(|e| anyhow::anyhow!("{e}"))?,
    ))
}

/// [`start`], with the store's clock given (behind a proxy, the sidecar reads it too).
pub async fn start_with_clock(
    policies: &[PathBuf],
    config: StoreConfig,
    clock: ManualClock,
) -> anyhow::Result<Running> {
    start_on(&tokio::runtime::Handle::current(), policies, config, clock).await
}

/// [`start_with_clock`], the store serving on `runtime` (one of its own, whose threads'
/// CPU time is then the store's) rather than on the caller's.
pub async fn start_on(
    runtime: &tokio::runtime::Handle,
    policies: &[PathBuf],
    config: StoreConfig,
    clock: ManualClock,
) -> anyhow::Result<Running> {
    let dirs = policies.to_vec();
    let c = clock.clone();
    let posture = config.posture;
    let gatekeeper = runtime
        .spawn_blocking(move || {
            // Starts even when the policies fail to load: the check below says why.
            Gatekeeper::builder()
                .policy_dirs(dirs)
                .start_empty(true)
                .clock(Arc::new(c))
                .posture(posture)
                .build()
        })
        .await
        .context("starting the gatekeeper")??;
    if gatekeeper.active().is_none() {
        // Say why, with the diagnostics.
        let dirs = policies.to_vec();
        let reason = runtime
            .spawn_blocking(move || gatekeeper::load_dirs(&dirs).err().map(|d| d.render()))
            .await?
            .unwrap_or_default();
        anyhow::bail!("the store's policies do not load:\n{reason}");
    }
    let store = Store::new(gatekeeper.clone(), clock.clone(), config);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let router = store.router();
    let task = runtime.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
    });
    Ok(Running {
        addr,
        base: format!("http://{addr}"),
        store,
        gatekeeper,
        clock,
        stop,
        task,
    })
}

impl Running {
    /// Stops serving, letting requests in flight finish.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}
