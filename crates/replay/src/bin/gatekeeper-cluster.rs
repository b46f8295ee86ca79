//! `gatekeeper-cluster`: a Ballista scheduler or executor that runs Gatekeeper's decision
//! functions.
//!
//! A decision function travels in a plan as its policy's revision and posture (see
//! `replay::cluster`); each process decides under the policies it was started with
//! (`--bundle FILE`, made by `gatekeeper bundle build`, or `--policies DIR`, a policy
//! folder), never under a policy sent to it. A query naming a revision a process does not
//! hold fails with that revision named.
//!
//! ```text
//! gatekeeper-cluster scheduler --bind 127.0.0.1:50050 --bundle us-2020.bundle
//! gatekeeper-cluster executor --scheduler 127.0.0.1:50050 --bind 127.0.0.1 \
//!     --port 50051 --grpc-port 50052 --bundle us-2020.bundle
//! ```
//!
//! Both run until interrupted (Ctrl-C or SIGTERM: exit 0). An error (a policy that does
//! not load, a port in use, no scheduler) is printed as `error: ...`, exit 2.

use std::net::{SocketAddr, TcpListener as StdTcpListener, ToSocketAddrs as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use ballista_core::config::TaskSchedulingPolicy;
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::{create_scheduler, start_grpc_service_with_listener};
use clap::{Parser, Subcommand};
use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};
use replay::cluster::{LogicalCodec, PhysicalCodec, PolicyRegistry};

#[derive(Parser, Debug)]
#[command(
    name = "gatekeeper-cluster",
    about = "A Ballista scheduler or executor that runs Gatekeeper's decision functions"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a scheduler: it plans the queries of `gatekeeper replay --scheduler df://HOST:PORT`.
    Scheduler(SchedulerArgs),
    /// Run an executor: it runs the tasks its scheduler gives it.
    Executor(ExecutorArgs),
}

/// How tasks reach executors (a scheduler and its executors must agree).
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default)]
enum Scheduling {
    /// Executors ask for tasks. A task an executor cannot decode (a policy revision it
    /// does not hold) fails with the executor's reason, which reaches the client.
    #[default]
    Pull,
    /// The scheduler sends tasks (lower latency). A task an executor cannot decode fails
    /// the job with Ballista's "task could not be prepared or was rejected by executor"
    /// only: the reason stays in the executor.
    Push,
}

impl Scheduling {
    fn policy(self) -> TaskSchedulingPolicy {
        match self {
            Scheduling::Pull => TaskSchedulingPolicy::PullStaged,
            Scheduling::Push => TaskSchedulingPolicy::PushStaged,
        }
    }
}

/// The policies a process decides under.
#[derive(clap::Args, Debug)]
struct PolicyArgs {
    /// Policy bundles (made by `gatekeeper bundle build`).
    #[arg(long = "bundle", value_name = "FILE", num_args = 1..)]
    bundles: Vec<PathBuf>,
    /// Policy folders (or files).
    #[arg(long = "policies", value_name = "DIR", num_args = 1..)]
    policies: Vec<PathBuf>,
}

#[derive(clap::Args, Debug)]
struct SchedulerArgs {
    /// The address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:50050")]
    bind: SocketAddr,
    /// The host name the scheduler gives for itself (default: the bind address, or
    /// `localhost` when that is unspecified).
    #[arg(long, value_name = "HOST")]
    external_host: Option<String>,
    /// How tasks reach executors: its executors must be started with the same.
    #[arg(long, value_enum, default_value_t = Scheduling::Pull)]
    scheduling: Scheduling,
    #[command(flatten)]
    policies: PolicyArgs,
}

#[derive(clap::Args, Debug)]
struct ExecutorArgs {
    /// The scheduler, `HOST:PORT`.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:50050")]
    scheduler: String,
    /// The address to listen on.
    #[arg(long, value_name = "HOST", default_value = "127.0.0.1")]
    bind: String,
    /// The Arrow Flight port: where results and shuffles are fetched.
    #[arg(long, value_name = "P", default_value_t = 50051)]
    port: u16,
    /// The port the scheduler sends tasks to (with `--scheduling push`).
    #[arg(long, value_name = "G", default_value_t = 50052)]
    grpc_port: u16,
    /// The host name the scheduler and clients reach this executor at (default: the
    /// address the scheduler sees it connect from).
    #[arg(long, value_name = "HOST")]
    external_host: Option<String>,
    /// Tasks run at once (default: the machine's cores).
    #[arg(long, value_name = "N")]
    concurrent_tasks: Option<usize>,
    /// Where shuffle and spill files go (default: a temporary folder, removed on exit).
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// How long to wait for the scheduler to accept connections, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    connect_timeout: u64,
    /// How tasks reach this executor: as its scheduler was started.
    #[arg(long, value_enum, default_value_t = Scheduling::Pull)]
    scheduling: Scheduling,
    #[command(flatten)]
    policies: PolicyArgs,
}

/// After a signal, how long an executor has to tell its scheduler and finish its tasks.
const EXECUTOR_GRACE: Duration = Duration::from_secs(15);

/// How long after Ballista's executor ends by itself a signal may still be on its way to this
/// process's own listener.
const SIGNAL_SEEN_WITHIN: Duration = Duration::from_secs(1);

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(run(cli));
    // Ballista's own tasks are left running: do not wait for them for long.
    runtime.shutdown_timeout(Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // Listening from the start: a signal during startup ends the process cleanly too.
    let mut signals = Signals::new()?;
    match cli.command {
        Command::Scheduler(args) => scheduler(args, &mut signals).await,
        Command::Executor(args) => executor(args, &mut signals).await,
    }
}

/// Loads every policy given, printing each one's revision.
fn load_registry(args: &PolicyArgs) -> anyhow::Result<Arc<PolicyRegistry>> {
    let registry = Arc::new(PolicyRegistry::default());
    for path in &args.bundles {
        if path.is_dir() {
            bail!(
                "`{}` is a folder, not a bundle: give a policy folder with --policies",
                path.display()
            );
        }
    }
    for path in args.bundles.iter().chain(&args.policies) {
        let loaded = replay::load_policy(path)?;
        println!("policy {} from {}", loaded.revision, path.display());
        registry.insert(loaded);
    }
    if registry.revisions().is_empty() {
        bail!("no policy to decide under: give --bundle FILE or --policies DIR");
    }
    Ok(registry)
}

async fn scheduler(args: SchedulerArgs, signals: &mut Signals) -> anyhow::Result<()> {
    let registry = load_registry(&args.policies)?;
    let listener = tokio::net::TcpListener::bind(args.bind)
        .await
        .with_context(|| format!("listening on {}", args.bind))?;
    let addr = listener
        .local_addr()
        .with_context(|| format!("listening on {}", args.bind))?;
    let external_host = args.external_host.unwrap_or_else(|| {
        if addr.ip().is_unspecified() {
            "localhost".to_owned()
        } else {
            addr.ip().to_string()
        }
    });
    let config = SchedulerConfig {
        bind_host: addr.ip().to_string(),
        bind_port: addr.port(),
        external_host,
        scheduling_policy: args.scheduling.policy(),
        override_logical_codec: Some(Arc::new(LogicalCodec::new(registry.clone()))),
        override_physical_codec: Some(Arc::new(PhysicalCodec::new(registry.clone()))),
        ..SchedulerConfig::default()
    };
    config.validate().context("the scheduler's configuration")?;
    let config = Arc::new(config);
    let cluster = BallistaCluster::new_from_config(&config)
        .await
        .context("starting the scheduler")?;
    let server = create_scheduler::<LogicalPlanNode, PhysicalPlanNode>(cluster, config)
        .await
        .context("starting the scheduler")?;
    println!("scheduler listening on {addr}");
    tokio::select! {
        served = start_grpc_service_with_listener(listener, server) => match served {
            Ok(()) => bail!("the scheduler stopped serving"),
            Err(e) => Err(anyhow!(e).context("the scheduler stopped serving")),
        },
        signal = signals.recv() => {
            println!("scheduler stopped ({signal})");
            Ok(())
        }
    }
}

async fn executor(args: ExecutorArgs, signals: &mut Signals) -> anyhow::Result<()> {
    let registry = load_registry(&args.policies)?;
    println!("executor holds {}", registry.revisions().join(", "));
    let (scheduler_host, scheduler_port) = host_port(&args.scheduler)?;
    let push = matches!(args.scheduling, Scheduling::Push);
    // The ports are told to the scheduler as given: 0 would be no port at all.
    if args.port == 0 || (push && args.grpc_port == 0) {
        bail!("--port and --grpc-port must be fixed ports, not 0");
    }
    if push && args.port == args.grpc_port {
        bail!("--port and --grpc-port are both {}", args.port);
    }
    // Ballista reports a Flight port it cannot listen on only in its log, and then stops
    // as if asked to: try the ports first.
    let ports = if push {
        vec![args.port, args.grpc_port]
    } else {
        vec![args.port]
    };
    for port in ports {
        StdTcpListener::bind((args.bind.as_str(), port))
            .with_context(|| format!("listening on {}:{port}", args.bind))?;
    }
    let temporary;
    let work_dir = match &args.work_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating `{}`", dir.display()))?;
            dir.clone()
        }
        None => {
            temporary = tempfile::Builder::new()
                .prefix("gatekeeper-executor-")
                .tempdir()
                .context("creating a work folder")?;
            temporary.path().to_path_buf()
        }
    };
    let work_dir = std::path::absolute(&work_dir).unwrap_or(work_dir);
    let work_dir = work_dir
        .to_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("`{}`: the work folder must be UTF-8", work_dir.display()))?;
    let vcores = match args.concurrent_tasks {
        Some(0) => bail!("--concurrent-tasks must be at least 1"),
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };

    // Ballista's executor tries its scheduler once (its own retry loop never times out).
    let deadline = Instant::now() + Duration::from_secs(args.connect_timeout);
    tokio::select! {
        reached = wait_for(&scheduler_host, scheduler_port, deadline) => reached.with_context(|| {
            format!("no scheduler at {}:{scheduler_port}", scheduler_host)
        })?,
        signal = signals.recv() => {
            println!("executor stopped ({signal})");
            return Ok(());
        }
    }

    let config = ExecutorProcessConfig {
        bind_host: args.bind.clone(),
        external_host: args.external_host.clone(),
        port: args.port,
        grpc_port: args.grpc_port,
        scheduler_host: scheduler_host.clone(),
        scheduler_port,
        scheduler_connect_timeout_seconds: 0,
        vcores,
        task_scheduling_policy: args.scheduling.policy(),
        work_dir: Some(work_dir),
        print_thread_info: false,
        override_logical_codec: Some(Arc::new(LogicalCodec::new(registry.clone()))),
        override_physical_codec: Some(Arc::new(PhysicalCodec::new(registry.clone()))),
        ..ExecutorProcessConfig::default()
    };
    let executor_id = config.executor_id.clone();
    let mut running = tokio::spawn(start_executor_process(Arc::new(config)));

    // Ready once its Flight port answers: it has registered with the scheduler (push) or
    // started asking it for tasks (pull) by then.
    let local = if args.bind == "0.0.0.0" {
        "127.0.0.1"
    } else if args.bind == "::" || args.bind == "[::]" {
        "::1"
    } else {
        args.bind.as_str()
    };
    let mut ready = false;
    let ready_by = Instant::now() + Duration::from_secs(args.connect_timeout.max(10));
    let signal = loop {
        tokio::select! {
            // A signal first: the executor ends on it too.
            biased;
            signal = signals.recv() => break signal,
            ended = &mut running => {
                // Ballista listens for SIGTERM and Ctrl-C as well, and can finish stopping
                // on one before this loop has seen it: a clean end followed closely by a
                // signal is the signal's doing.
                let late = tokio::time::timeout(SIGNAL_SEEN_WITHIN, signals.recv());
                if matches!(ended, Ok(Ok(()))) && let Ok(signal) = late.await {
                    println!("executor stopped ({signal})");
                    return Ok(());
                }
                return executor_ended(ended);
            }
            () = tokio::time::sleep(Duration::from_millis(50)), if !ready => {
                if tokio::net::TcpStream::connect((local, args.port)).await.is_ok() {
                    ready = true;
                    let tasks = if push {
                        format!("tasks pushed to port {}", args.grpc_port)
                    } else {
                        "tasks pulled".to_owned()
                    };
                    println!(
                        "executor {executor_id} listening on {}:{} ({tasks}), scheduler \
                         {scheduler_host}:{scheduler_port}, {vcores} tasks at once",
                        args.bind, args.port
                    );
                } else if Instant::now() > ready_by {
                    running.abort();
                    bail!("the executor did not start listening on {}:{}", args.bind, args.port);
                }
            }
        }
    };
    // The executor saw the signal too: it tells its scheduler and finishes its tasks.
    match tokio::time::timeout(EXECUTOR_GRACE, &mut running).await {
        Ok(Ok(Err(e))) => eprintln!("executor stopping: {e}"),
        Ok(_) => {}
        Err(_) => running.abort(),
    }
    println!("executor stopped ({signal})");
    Ok(())
}

/// The executor stopped without a signal.
fn executor_ended(
    ended: Result<ballista_core::error::Result<()>, tokio::task::JoinError>,
) -> anyhow::Result<()> {
    match ended {
        Ok(Ok(())) => bail!(
            "the executor stopped: its services ended (a port in use?) or its scheduler \
             stopped it"
        ),
        Ok(Err(e)) => Err(anyhow!(e).context("the executor stopped")),
        Err(e) => Err(anyhow!(e).context("the executor failed")),
    }
}

/// `HOST:PORT` (`[V6]:PORT` too).
fn host_port(text: &str) -> anyhow::Result<(String, u16)> {
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| anyhow!("`{text}` is not HOST:PORT"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| anyhow!("`{text}` is not HOST:PORT: `{port}` is not a port"))?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        bail!("`{text}` is not HOST:PORT: no host");
    }
    Ok((host.to_owned(), port))
}

/// Waits until `host:port` accepts a connection, until `deadline`.
async fn wait_for(host: &str, port: u16, deadline: Instant) -> anyhow::Result<()> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .with_context(|| format!("resolving `{host}`"))?
        .collect();
    loop {
        let mut last = None;
        for addr in &addrs {
            match tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
                .await
            {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) => last = Some(e.to_string()),
                Err(_) => last = Some("timed out".to_owned()),
            }
        }
        if Instant::now() > deadline {
            bail!(last.unwrap_or_else(|| format!("`{host}` has no address")));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Ctrl-C and SIGTERM.
struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl std::fmt::Debug for Signals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signals").finish_non_exhaustive()
    }
}

impl Signals {
    #[cfg(unix)]
    fn new() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt()).context("listening for Ctrl-C")?,
            terminate: signal(SignalKind::terminate()).context("listening for SIGTERM")?,
        })
    }

    #[cfg(not(unix))]
    fn new() -> anyhow::Result<Signals> {
        Ok(Signals {})
    }

    /// The next signal, by name.
    #[cfg(unix)]
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "interrupted",
            _ = self.terminate.recv() => "terminated",
        }
    }

    #[cfg(not(unix))]
    async fn recv(&mut self) -> &'static str {
        match tokio::signal::ctrl_c().await {
            Ok(()) => "interrupted",
            Err(_) => std::future::pending().await,
        }
    }
}
