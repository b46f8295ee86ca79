//! A store in a process of its own, and the CPU time a store spends.
//!
//! To measure what the gatekeeper layer costs a store, the store must be the only thing
//! in what is measured: the load run ([`crate::load`]) starts the store with the layer and
//! the store without it as processes of their own (the `simulate` program run again with
//! [`SERVE_STORE`] as its first argument), drives both with the same client from outside,
//! and reads each process's CPU time from Linux's `/proc` before and after every round.
//!
//! A store process prints its base URL (`http://127.0.0.1:PORT`) on a line of its own and
//! serves until its standard input closes: when the parent stops it, or exits for any
//! reason, the store goes too.

use std::ffi::OsString;
use std::io::{BufRead as _, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser as _;
use policy::{Boundaries, NonEnforcement, Posture};

use crate::store::{Guard, StoreConfig};

/// The first argument that makes `simulate` serve one store and nothing else.
pub const SERVE_STORE: &str = "serve-store";

/// How long a store process may take to load its policies and start serving.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a store process may take to stop once its standard input closes.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// How to start a store process: a program and the arguments that make it serve a store,
/// before the store's own options.
#[derive(Clone, Debug)]
pub struct StoreProgram {
    pub program: PathBuf,
    pub args: Vec<OsString>,
}

impl StoreProgram {
    /// The running program itself, with [`SERVE_STORE`]: for `simulate`, whose `main`
    /// hands such a run to [`serve`].
    pub fn current_exe() -> anyhow::Result<StoreProgram> {
        Ok(StoreProgram {
            program: std::env::current_exe().context("finding the running program")?,
            args: vec![SERVE_STORE.into()],
        })
    }
}

/// The options of a store process (after [`SERVE_STORE`]).
#[derive(clap::Parser, Debug)]
#[command(name = "simulate serve-store")]
struct StoreArgs {
    /// What guards the gated routes: the gatekeeper layer, or nothing.
    #[arg(long, value_parser = ["layer", "off"])]
    guard: String,
    /// Policy folders (repeat).
    #[arg(long = "policies", value_name = "DIR", required = true)]
    policies: Vec<PathBuf>,
    /// `conservative` or `permissive`.
    #[arg(long, value_name = "POSTURE")]
    boundaries: String,
    /// `honour` or `ignore`.
    #[arg(long, value_name = "SETTING")]
    non_enforcement: String,
}

/// Serves one store as `args` (the arguments after [`SERVE_STORE`]) say, printing its
/// base URL on standard output, until standard input closes.
pub fn serve(args: impl IntoIterator<Item = OsString>) -> anyhow::Result<()> {
    let args = StoreArgs::try_parse_from(std::iter::once(OsString::from(SERVE_STORE)).chain(args))?;
    let guard = match args.guard.as_str() {
        "off" => Guard::Off,
        _ => Guard::Layer,
    };
    let posture = Posture {
        boundaries: Boundaries::parse(&args.boundaries)
            .with_context(|| format!("unknown posture `{}`", args.boundaries))?,
        non_enforcement: NonEnforcement::parse(&args.non_enforcement)
            .with_context(|| format!("unknown setting `{}`", args.non_enforcement))?,
    };
    let runtime = store_runtime(None)?;
    runtime.block_on(async {
        let config = StoreConfig {
            guard,
            posture,
            ..StoreConfig::default()
        };
        let running = crate::start(&args.policies, config).await?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", running.base)?;
        out.flush()?;
        drop(out);
        // Standard input closes when the parent stops this store or exits.
        let _ = tokio::task::spawn_blocking(|| std::io::stdin().read_to_end(&mut Vec::new())).await;
        running.stop().await;
        anyhow::Ok(())
    })
}

/// The runtime a measured store serves on: one worker thread (and `name` for its threads,
/// if given). With more, the CPU time the runtime spends waking and parking its workers
/// depends on how the requests happen to arrive, and varied from round to round by half
/// the store's own work: more than the layer costs. With one, a store's CPU time is its
/// work.
pub(crate) fn store_runtime(
    name: Option<&'static str>,
) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(1).enable_all();
    if let Some(name) = name {
        builder.thread_name(name);
    }
    builder.build()
}

/// A store process started by [`StoreProcess::start`]; killed if dropped still running.
#[derive(Debug)]
pub struct StoreProcess {
    child: Child,
    /// Its end of the store's standard input: dropping it stops the store.
    stdin: Option<ChildStdin>,
    /// `http://127.0.0.1:PORT`
    pub base: String,
}

impl StoreProcess {
    /// Starts a store process with `policies`, `guard` (the layer, or nothing) and
    /// `posture`, and waits until it serves.
    pub async fn start(
        program: &StoreProgram,
        policies: &[PathBuf],
        guard: &Guard,
        posture: Posture,
    ) -> anyhow::Result<StoreProcess> {
        let guard = match guard {
            Guard::Layer => "layer",
            Guard::Off => "off",
            Guard::Proxy { .. } => anyhow::bail!("a store process has no proxy in front"),
        };
        let mut command = Command::new(&program.program);
        command
            .args(&program.args)
            .args(["--guard", guard])
            .args(["--boundaries", posture.boundaries.as_str()])
            .args(["--non-enforcement", posture.non_enforcement.as_str()]);
        for p in policies {
            command.arg("--policies").arg(p);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting `{}`", program.program.display()))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("the store's standard output")?;
        let mut process = StoreProcess {
            child,
            stdin,
            base: String::new(),
        };
        // The first line is the base URL; the store prints nothing else.
        let line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            std::io::BufReader::new(stdout)
                .read_line(&mut line)
                .map(|_| line)
        });
        let line = match tokio::time::timeout(START_TIMEOUT, line).await {
            Ok(read) => read.context("reading the store's address")??,
            // Killed on drop, which also ends the read.
            Err(_) => anyhow::bail!(
                "the store process did not start serving within {} s",
                START_TIMEOUT.as_secs()
            ),
        };
        let base = line.trim();
        anyhow::ensure!(
            base.starts_with("http://"),
            "the store process did not start (it printed {line:?}; its errors are above)"
        );
        process.base = base.to_owned();
        Ok(process)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The CPU time the store has spent so far, every thread of it.
    pub fn cpu_time(&self) -> std::io::Result<Duration> {
        cpu_time(self.pid(), None)
    }

    /// Stops the store: closes its standard input and waits for it to finish the requests
    /// in flight; kills it if it has not within a few seconds. How it exited, if it did
    /// by itself.
    pub async fn stop(mut self) -> Option<std::process::ExitStatus> {
        self.stdin.take();
        let deadline = tokio::time::Instant::now() + STOP_TIMEOUT;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                _ => break,
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }
}

impl Drop for StoreProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The CPU time spent by the threads of process `pid` (only those named `thread`, when
/// given), summed from each thread's `/proc/PID/task/TID/schedstat`, which counts in
/// nanoseconds (`/proc/PID/stat` counts in hundredths of a second, too coarse for rounds
/// of a second or two). A thread that has exited no longer counts; the stores' threads
/// live as long as the stores.
pub fn cpu_time(pid: u32, thread: Option<&str>) -> std::io::Result<Duration> {
    let tasks = PathBuf::from(format!("/proc/{pid}/task"));
    let mut nanos: u64 = 0;
    for entry in std::fs::read_dir(&tasks)? {
        let task = entry?.path();
        if let Some(name) = thread
            && read_trimmed(&task.join("comm")).as_deref() != Some(name)
        {
            continue;
        }
        // A thread may exit between the listing and the read: it no longer counts.
        let Some(stat) = read_trimmed(&task.join("schedstat")) else {
            continue;
        };
        let on_cpu = stat
            .split_whitespace()
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or_else(|| {
                std::io::Error::other(format!("unexpected `{}`: `{stat}`", task.display()))
            })?;
        nanos += on_cpu;
    }
    Ok(Duration::from_nanos(nanos))
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}
