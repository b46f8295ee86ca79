//! The mock store behind a real proxy, nginx or Caddy, with `gatekeeper serve` as the
//! proxy's authorizer: the deployment shape of a store not written in Rust. The proxies run
//! the configurations shipped in `deploy/`, changed only in their addresses (and, to
//! measure what the authorizer costs, without the authorizer's line).
//!
//! The sidecar runs in this process and reads the store's settable clock, so that every
//! scenario step is judged at its instant while the proxies never send a time: the shipped
//! configurations run as an operator would run them, and only the clock is the simulation's.
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! use mockstore::proxy::{Proxy, deploy};
//! let deployment = deploy(Proxy::Nginx, ".".as_ref(), &["policies/us-2020".into()], Default::default()).await?;
//! println!("the store behind nginx: {}", deployment.proxy.base);
//! deployment.stop().await;
//! # Ok(()) }
//! ```

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant as Stopwatch};

use anyhow::Context as _;

use crate::store::{Guard, StoreConfig};

/// How long a proxy may take to listen, and to stop.
const DEADLINE: Duration = Duration::from_secs(10);

/// A proxy in front of the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proxy {
    /// nginx with `auth_request` and the sidecar's `/v1/nginx/authz`.
    Nginx,
    /// Caddy with `forward_auth` and the sidecar's `/v1/envoy/authz`.
    Caddy,
}

impl Proxy {
    /// Both proxies.
    pub const ALL: [Proxy; 2] = [Proxy::Nginx, Proxy::Caddy];

    /// `nginx` or `caddy`.
    pub fn parse(text: &str) -> Option<Proxy> {
        match text {
            "nginx" => Some(Proxy::Nginx),
            "caddy" => Some(Proxy::Caddy),
            _ => None,
        }
    }

    /// `nginx` or `caddy`.
    pub fn as_str(self) -> &'static str {
        match self {
            Proxy::Nginx => "nginx",
            Proxy::Caddy => "caddy",
        }
    }

    /// The shipped configuration, relative to the repository's root.
    pub fn shipped_config(self) -> &'static str {
        match self {
            Proxy::Nginx => "deploy/nginx/gatekeeper.conf",
            Proxy::Caddy => "deploy/caddy/Caddyfile",
        }
    }

    /// Where Debian installs the binary, and the package that does.
    fn debian(self) -> (&'static str, &'static str) {
        match self {
            Proxy::Nginx => ("/usr/sbin/nginx", "nginx-core"),
            Proxy::Caddy => ("/usr/bin/caddy", "caddy"),
        }
    }

    /// The binary: Debian's, or else the first on `PATH`; an error naming the package to
    /// install when there is none.
    pub fn binary(self) -> anyhow::Result<PathBuf> {
        let (debian, package) = self.debian();
        let on_path = std::env::var_os("PATH")
            .into_iter()
            .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .map(|dir| dir.join(self.as_str()));
        std::iter::once(PathBuf::from(debian))
            .chain(on_path)
            .find(|p| p.is_file())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "`{}` is not installed (looked at `{debian}` and on PATH): install Debian's `{package}` package (`apt-get install -y --no-install-recommends {package}`)",
                    self.as_str()
                )
            })
    }

    /// The lines (trimmed) that put the authorizer in the shipped configuration.
    fn authorizer_line(self) -> &'static str {
        match self {
            Proxy::Nginx => "auth_request /_gatekeeper;",
            Proxy::Caddy => "import gatekeeper",
        }
    }

    /// What a run replaces in the shipped configuration: (the shipped text, this run's).
    fn replacements(self, addresses: &Addresses) -> [(String, String); 4] {
        let (listen, sidecar, store) = (addresses.listen, addresses.sidecar, addresses.store);
        match self {
            Proxy::Nginx => [
                ("listen 127.0.0.1:8000;".into(), format!("listen {listen};")),
                (
                    "server 127.0.0.1:8181;".into(),
                    format!("server {sidecar};"),
                ),
                ("server 127.0.0.1:8080;".into(), format!("server {store};")),
                // Not replaced, but required: relative to the prefix, the run's own folder.
                ("pid nginx.pid;".into(), "pid nginx.pid;".into()),
            ],
            Proxy::Caddy => [
                (
                    "http://:8000 {".into(),
                    format!("http://:{} {{", listen.port()),
                ),
                ("bind 127.0.0.1".into(), format!("bind {}", listen.ip())),
                ("127.0.0.1:8181".into(), sidecar.to_string()),
                (
                    "reverse_proxy 127.0.0.1:8080".into(),
                    format!("reverse_proxy {store}"),
                ),
            ],
        }
    }
}

impl std::fmt::Display for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a proxy listens and what it forwards to.
#[derive(Clone, Copy, Debug)]
pub struct Addresses {
    pub listen: SocketAddr,
    pub sidecar: SocketAddr,
    pub store: SocketAddr,
}

/// The shipped configuration `text` with this run's addresses in place of its own, and
/// without the authorizer when `authorizer` is false. Fails, naming what is missing, when
/// the text no longer has what is replaced: a test must never run a configuration other
/// than the shipped one by accident.
pub fn render(
    proxy: Proxy,
    text: &str,
    addresses: &Addresses,
    authorizer: bool,
) -> anyhow::Result<String> {
    let mut text = text.to_owned();
    for (from, to) in proxy.replacements(addresses) {
        anyhow::ensure!(
            text.contains(&from),
            "`{}` no longer contains `{from}`, which a run replaces with its own",
            proxy.shipped_config()
        );
        text = text.replace(&from, &to);
    }
    if !authorizer {
        let line = proxy.authorizer_line();
        let before = text.lines().count();
        text = text
            .lines()
            .filter(|l| l.trim() != line)
            .map(|l| format!("{l}\n"))
            .collect();
        anyhow::ensure!(
            text.lines().count() < before,
            "`{}` no longer contains `{line}`",
            proxy.shipped_config()
        );
    }
    Ok(text)
}

/// A free port on 127.0.0.1, for a process that binds it itself.
fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// A proxy process on 127.0.0.1, stopped (and waited for) when dropped.
#[derive(Debug)]
pub struct ProxyProcess {
    pub proxy: Proxy,
    /// Where it listens.
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    binary: PathBuf,
    config: PathBuf,
    child: Child,
    dir: tempfile::TempDir,
}

impl ProxyProcess {
    /// Starts `proxy` with its shipped configuration (read from `root`) in front of the
    /// sidecar and the store, on a free port, and waits (at most [`DEADLINE`]) until it
    /// listens. Blocks: call it off the async threads.
    pub fn start(
        proxy: Proxy,
        root: &Path,
        sidecar: SocketAddr,
        store: SocketAddr,
        authorizer: bool,
    ) -> anyhow::Result<ProxyProcess> {
        let binary = proxy.binary()?;
        let shipped = root.join(proxy.shipped_config());
        let text = std::fs::read_to_string(&shipped)
            .with_context(|| format!("reading `{}`", shipped.display()))?;
        // The port is free when chosen, not necessarily when the proxy binds it: another
        // process may take it in between, and then the proxy is started again on another.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let addresses = Addresses {
                listen: free_port()?,
                sidecar,
                store,
            };
            let config = render(proxy, &text, &addresses, authorizer)?;
            match ProxyProcess::spawn(proxy, &binary, &config, addresses.listen) {
                Err(e) if attempts < 3 && format!("{e:#}").contains("in use") => continue,
                other => return other,
            }
        }
    }

    fn spawn(
        proxy: Proxy,
        binary: &Path,
        config_text: &str,
        listen: SocketAddr,
    ) -> anyhow::Result<ProxyProcess> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("gatekeeper-{proxy}-"))
            .tempdir()
            .context("creating a folder for the proxy")?;
        // nginx started as root runs its workers as `nobody`: they must reach the folder.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        }
        let config = dir.path().join(match proxy {
            Proxy::Nginx => "nginx.conf",
            Proxy::Caddy => "Caddyfile",
        });
        std::fs::write(&config, config_text)
            .with_context(|| format!("writing `{}`", config.display()))?;
        std::fs::create_dir_all(dir.path().join("temp"))?;
        let log = File::create(dir.path().join("proxy.log"))?;
        let mut command = Command::new(binary);
        match proxy {
            Proxy::Nginx => {
                command
                    .arg("-c")
                    .arg(&config)
                    .arg("-p")
                    .arg(prefix(dir.path()))
                    .args(["-g", "daemon off;"]);
            }
            Proxy::Caddy => {
                // Caddy keeps state under the home folder: this run's, not the user's.
                command
                    .args(["run", "--config"])
                    .arg(&config)
                    .args(["--adapter", "caddyfile"])
                    .env("HOME", dir.path())
                    .env("XDG_CONFIG_HOME", dir.path())
                    .env("XDG_DATA_HOME", dir.path());
            }
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting `{}`", binary.display()))?;
        let mut process = ProxyProcess {
            proxy,
            addr: listen,
            base: format!("http://{listen}"),
            binary: binary.to_path_buf(),
            config,
            child,
            dir,
        };
        process.wait_until_listening()?;
        Ok(process)
    }

    /// Polls until the proxy accepts connections, failing with its output if it exits or
    /// the deadline passes.
    fn wait_until_listening(&mut self) -> anyhow::Result<()> {
        let started = Stopwatch::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!(
                    "`{}` exited ({status}) before listening on {}:\n{}",
                    self.proxy,
                    self.addr,
                    self.output()
                );
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(100)).is_ok() {
                return Ok(());
            }
            if started.elapsed() > DEADLINE {
                anyhow::bail!(
                    "`{}` did not listen on {} within {DEADLINE:?}:\n{}",
                    self.proxy,
                    self.addr,
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the proxy has written to its standard output and error so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("proxy.log")).unwrap_or_default()
    }

    /// The configuration it runs.
    pub fn config(&self) -> &Path {
        &self.config
    }

    /// Stops the proxy: nginx is told to stop (its master stops its workers; killing the
    /// master alone would leave them holding the port), Caddy is killed; either is killed
    /// if it has not exited by the deadline.
    fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        if self.proxy == Proxy::Nginx {
            let _ = Command::new(&self.binary)
                .arg("-c")
                .arg(&self.config)
                .arg("-p")
                .arg(prefix(self.dir.path()))
                .args(["-s", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let started = Stopwatch::now();
            while started.elapsed() < DEADLINE {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// nginx's prefix: the folder, with the trailing `/` nginx expects.
fn prefix(dir: &Path) -> String {
    format!("{}/", dir.display())
}

/// The mock store behind a proxy and the sidecar.
#[derive(Debug)]
pub struct Deployment {
    /// What clients talk to.
    pub proxy: ProxyProcess,
    /// The store itself, for its admin routes (the clock), which the proxy does not serve.
    pub store: crate::Running,
    /// The sidecar, reading the store's clock.
    pub sidecar: serve::Server,
}

impl Deployment {
    /// Stops the proxy, then the store and the sidecar.
    pub async fn stop(self) {
        let Deployment {
            proxy,
            store,
            sidecar,
        } = self;
        let _ = tokio::task::spawn_blocking(move || drop(proxy)).await;
        store.stop().await;
        let _ = sidecar.shutdown().await;
    }
}

/// The sidecar's settings for a simulation: the store's policies and posture, on a free
/// port, no polling, no audit trail.
pub fn sidecar_config(policies: &[PathBuf], config: &StoreConfig) -> serve::Config {
    serve::Config {
        listen: "127.0.0.1:0".to_owned(),
        policies: policies.to_vec(),
        reload_interval_ms: 0,
        posture: config.posture.boundaries,
        non_enforcement: config.posture.non_enforcement,
        ..serve::Config::default()
    }
}

/// Starts the sidecar (reading the store's clock) and the store behind it
/// ([`Guard::Proxy`]), for proxies to front.
pub async fn backends(
    policies: &[PathBuf],
    config: StoreConfig,
) -> anyhow::Result<(serve::Server, crate::Running)> {
    let clock = crate::start_clock()?;
    let sidecar = serve::start_with_clock(
        sidecar_config(policies, &config),
        Some(Arc::new(clock.clone())),
    )
    .await
    .context("starting the sidecar")?;
    let store_config = StoreConfig {
        guard: Guard::Proxy {
            sidecar: format!("http://{}", sidecar.addr),
        },
        ..config
    };
    match crate::start_with_clock(policies, store_config, clock).await {
        Ok(store) => Ok((sidecar, store)),
        Err(e) => {
            let _ = sidecar.shutdown().await;
            Err(e)
        }
    }
}

/// Starts `proxy` off the async threads (see [`ProxyProcess::start`]).
pub async fn start_proxy(
    proxy: Proxy,
    root: &Path,
    sidecar: SocketAddr,
    store: SocketAddr,
    authorizer: bool,
) -> anyhow::Result<ProxyProcess> {
    let root = root.to_path_buf();
    tokio::task::spawn_blocking(move || {
        ProxyProcess::start(proxy, &root, sidecar, store, authorizer)
    })
    .await
    .context("starting the proxy")?
    .with_context(|| format!("starting {proxy}"))
}

/// Starts the sidecar (reading the store's clock), the store behind it
/// ([`Guard::Proxy`]) and `proxy` in front with its shipped configuration from `root`.
pub async fn deploy(
    proxy: Proxy,
    root: &Path,
    policies: &[PathBuf],
    config: StoreConfig,
) -> anyhow::Result<Deployment> {
    let (sidecar, store) = backends(policies, config).await?;
    match start_proxy(proxy, root, sidecar.addr, store.addr, true).await {
        Ok(proxy) => Ok(Deployment {
            proxy,
            store,
            sidecar,
        }),
        Err(e) => {
            store.stop().await;
            let _ = sidecar.shutdown().await;
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addresses() -> Addresses {
        Addresses {
            listen: SocketAddr::from(([127, 0, 0, 1], 1)),
            sidecar: SocketAddr::from(([127, 0, 0, 1], 2)),
            store: SocketAddr::from(([127, 0, 0, 1], 3)),
        }
    }

    fn shipped(proxy: Proxy) -> String {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        std::fs::read_to_string(root.join(proxy.shipped_config())).unwrap_or_default()
    }

    #[test]
    fn every_shipped_address_is_replaced() {
        for proxy in Proxy::ALL {
            let text = render(proxy, &shipped(proxy), &addresses(), true);
            let text = text.unwrap_or_else(|e| format!("{e}"));
            for shipped in [":8000", "127.0.0.1:8181", "127.0.0.1:8080"] {
                assert!(
                    !text.contains(shipped),
                    "{proxy}: {shipped} left in:\n{text}"
                );
            }
            for ours in [":1", "127.0.0.1:2", "127.0.0.1:3"] {
                assert!(text.contains(ours), "{proxy}: {ours} missing");
            }
            assert!(text.contains(proxy.authorizer_line()));
        }
    }

    #[test]
    fn without_the_authorizer_only_its_lines_go() {
        for proxy in Proxy::ALL {
            let with = render(proxy, &shipped(proxy), &addresses(), true).unwrap_or_default();
            let without = render(proxy, &shipped(proxy), &addresses(), false).unwrap_or_default();
            assert!(!without.contains(proxy.authorizer_line()), "{proxy}");
            let removed = with.lines().count() - without.lines().count();
            assert_eq!(
                removed,
                with.matches(proxy.authorizer_line()).count(),
                "{proxy}"
            );
        }
    }

    #[test]
    fn a_configuration_without_the_shipped_addresses_is_refused() {
        let e = render(Proxy::Nginx, "events {}", &addresses(), true);
        assert!(e.is_err());
    }
}
