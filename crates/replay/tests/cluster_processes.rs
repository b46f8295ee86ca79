//! `gatekeeper-cluster` as real processes: a scheduler and an executor started from the
//! built binary on free ports, and a client session on them, compared row for row with
//! DataFusion in this process.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use replay::datafusion::arrow::array::{ArrayRef, RecordBatch, UInt64Array};
use replay::datafusion::arrow::datatypes::{DataType, Field, Schema};
use replay::datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use replay::datafusion::parquet::arrow::ArrowWriter;
use replay::datafusion::parquet::file::properties::WriterProperties;
use replay::genlog::{LogGenerator, LogSpec, batch_of};
use replay::session::{Engine, Inputs, Session};

const BIN: &str = env!("CARGO_BIN_EXE_gatekeeper-cluster");
const US_2020: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../policies/us-2020");
const US_2024: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../policies/us-2024-pafaca");

/// How long a process has to start listening, or a query to run.
const STARTUP: Duration = Duration::from_secs(30);
const QUERY: Duration = Duration::from_secs(120);
const EXIT: Duration = Duration::from_secs(20);

/// A child process, killed (and reaped) however the test ends.
struct Proc {
    name: &'static str,
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Proc {
    fn start(name: &'static str, dir: &Path, args: &[&str]) -> Proc {
        let stdout = dir.join(format!("{name}.out"));
        let stderr = dir.join(format!("{name}.err"));
        let child = Command::new(BIN)
            .args(args)
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).unwrap())
            .stderr(File::create(&stderr).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {BIN}: {e}"));
        Proc {
            name,
            child,
            stdout,
            stderr,
        }
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn output(&self) -> String {
        format!(
            "--- {} stdout:\n{}--- {} stderr:\n{}",
            self.name,
            self.stdout(),
            self.name,
            self.stderr()
        )
    }

    /// Waits until the process accepts connections on `port`.
    async fn wait_listening(&mut self, port: u16) {
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "{} exited ({status}) before listening\n{}",
                    self.name,
                    self.output()
                );
            }
            let connect = tokio::net::TcpStream::connect(("127.0.0.1", port));
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(1), connect).await {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not listen on {port} within {STARTUP:?}\n{}",
                self.name,
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for the process to exit on its own.
    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + EXIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {EXIT:?}\n{}",
                self.name,
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends SIGTERM and waits for the process to exit.
    fn terminate(&mut self) -> ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -TERM {}", self.child.id());
        self.wait_exit()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // SIGKILL: the wait that follows is not long.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `n` ports free on 127.0.0.1 (all held at once, so different).
fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<std::net::TcpListener> = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().unwrap().port())
}

/// A request log of `files` Parquet files of `rows` rows each in `dir/log`, with `seq`
/// (the row's position from 1) before the request columns.
fn write_log(dir: &Path, files: u64, rows: u64) -> PathBuf {
    let loaded = replay::load_policy(Path::new(US_2020)).unwrap();
    let mut generator = LogGenerator::new(
        LogSpec {
            rows: files * rows,
            seed: 7,
            other_apps: 200,
            malformed_every: 97,
        },
        &[&loaded.policy],
    );
    let numbered = {
        let mut fields = vec![Arc::new(Field::new("seq", DataType::UInt64, false))];
        fields.extend(replay::schema::requests().fields().iter().cloned());
        Arc::new(Schema::new(fields))
    };
    let log = dir.join("log");
    std::fs::create_dir_all(&log).unwrap();
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(500))
        .build();
    let mut seq = 0u64;
    for k in 0..files {
        let path = log.join(format!("requests-{k}.parquet"));
        let mut writer = ArrowWriter::try_new(
            File::create(&path).unwrap(),
            numbered.clone(),
            Some(props.clone()),
        )
        .unwrap();
        let records = generator.next_records(rows as usize);
        let batch = batch_of(&records);
        let mut columns: Vec<ArrayRef> = vec![Arc::new(UInt64Array::from_iter_values(
            seq + 1..=seq + rows,
        ))];
        columns.extend(batch.columns().iter().cloned());
        writer
            .write(&RecordBatch::try_new(numbered.clone(), columns).unwrap())
            .unwrap();
        writer.close().unwrap();
        seq += rows;
    }
    log
}

/// Runs `sql` on `engine` with `decide` under us-2020 and the log registered.
async fn run(engine: Engine, log: &Path, sql: &str) -> anyhow::Result<Vec<RecordBatch>> {
    let mut session = Session::new(engine, 2).await?;
    session.add_policy(
        "decide",
        replay::load_policy(Path::new(US_2020))?,
        policy::Posture::default(),
    )?;
    session
        .add_inputs(&Inputs {
            parquet: vec![log.to_path_buf()],
            ..Default::default()
        })
        .await?;
    let batches =
        tokio::time::timeout(QUERY, async { session.ctx.sql(sql).await?.collect().await })
            .await
            .map_err(|_| anyhow::anyhow!("the query did not end within {QUERY:?}"))??;
    Ok(batches)
}

/// The rows of `batches`, each as text.
fn rows(batches: &[RecordBatch]) -> Vec<String> {
    let options = FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for b in batches {
        let columns: Vec<ArrayFormatter> = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).unwrap())
            .collect();
        for r in 0..b.num_rows() {
            let values: Vec<String> = columns.iter().map(|f| f.value(r).to_string()).collect();
            out.push(values.join(" | "));
        }
    }
    out
}

fn assert_same(label: &str, local: &[RecordBatch], remote: &[RecordBatch]) -> usize {
    let (local_rows, remote_rows) = (rows(local), rows(remote));
    assert_eq!(
        local_rows.len(),
        remote_rows.len(),
        "{label}: rows in DataFusion and on the cluster"
    );
    for (i, (l, r)) in local_rows.iter().zip(&remote_rows).enumerate() {
        assert_eq!(l, r, "{label}: row {i} differs");
    }
    if let (Some(l), Some(r)) = (local.first(), remote.first()) {
        let fields = |b: &RecordBatch| -> Vec<(String, DataType)> {
            b.schema()
                .fields()
                .iter()
                .map(|f| (f.name().clone(), f.data_type().clone()))
                .collect()
        };
        assert_eq!(fields(l), fields(r), "{label}: columns");
    }
    local_rows.len()
}

/// A scheduler holding `scheduler_policy` and an executor holding `executor_policy`.
struct Cluster {
    scheduler: Proc,
    executor: Proc,
    port: u16,
}

async fn cluster(
    dir: &Path,
    scheduling: &str,
    scheduler_policy: &str,
    executor_policy: &str,
) -> Cluster {
    let [port, flight, grpc] = free_ports::<3>();
    let bind = format!("127.0.0.1:{port}");
    let mut scheduler = Proc::start(
        "scheduler",
        dir,
        &[
            "scheduler",
            "--bind",
            &bind,
            "--scheduling",
            scheduling,
            "--policies",
            scheduler_policy,
        ],
    );
    scheduler.wait_listening(port).await;
    let work = dir.join("work");
    let (flight_text, grpc_text) = (flight.to_string(), grpc.to_string());
    let mut executor = Proc::start(
        "executor",
        dir,
        &[
            "executor",
            "--scheduler",
            &bind,
            "--bind",
            "127.0.0.1",
            "--port",
            &flight_text,
            "--grpc-port",
            &grpc_text,
            "--policies",
            executor_policy,
            "--concurrent-tasks",
            "2",
            "--work-dir",
            work.to_str().unwrap(),
            "--scheduling",
            scheduling,
        ],
    );
    executor.wait_listening(flight).await;
    Cluster {
        scheduler,
        executor,
        port,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_decides_as_datafusion_does() -> anyhow::Result<()> {
    let started = Instant::now();
    let dir = tempfile::tempdir()?;
    let log = write_log(dir.path(), 2, 2_000);
    let mut c = cluster(dir.path(), "pull", US_2020, US_2020).await;
    let revision = replay::load_policy(Path::new(US_2020))?.revision.clone();
    for p in [&c.scheduler, &c.executor] {
        assert!(
            p.stdout()
                .contains(&format!("policy {revision} from {US_2020}")),
            "{}",
            p.output()
        );
    }
    assert!(
        c.scheduler
            .stdout()
            .contains(&format!("scheduler listening on 127.0.0.1:{}", c.port))
    );
    assert!(
        c.executor
            .stdout()
            .contains(&format!("executor holds {revision}"))
    );
    let url = format!("df://127.0.0.1:{}", c.port);
    let call = Session::call("decide");

    // Row for row, every field of the decision, malformed rows included.
    let sql = format!("SELECT seq, {call} AS d FROM requests_parquet ORDER BY seq");
    let local = run(Engine::Local, &log, &sql).await?;
    let remote = run(Engine::Remote(url.clone()), &log, &sql)
        .await
        .map_err(|e| anyhow::anyhow!("{e:#}\n{}{}", c.scheduler.output(), c.executor.output()))?;
    assert_eq!(assert_same("decisions", &local, &remote), 4_000);
    let all = rows(&local).join("\n");
    for expected in ["decision: deny", "decision: allow", "error: "] {
        assert!(
            all.contains(expected),
            "no `{expected}` in the log's decisions"
        );
    }

    // Decisions grouped: a shuffle between two stages of the executor.
    let sql = format!(
        "SELECT d['decision'] AS decision, d['region'] AS region, count(*) AS n \
         FROM (SELECT {call} AS d FROM requests_parquet) GROUP BY 1, 2 ORDER BY 1, 2"
    );
    let local = run(Engine::Local, &log, &sql).await?;
    let remote = run(Engine::Remote(url), &log, &sql).await?;
    assert_same("grouped", &local, &remote);
    eprintln!("grouped decisions:\n{}", rows(&remote).join("\n"));

    // SIGTERM ends both cleanly.
    let status = c.executor.terminate();
    assert_eq!(
        status.code(),
        Some(0),
        "executor: {status}\n{}",
        c.executor.output()
    );
    let status = c.scheduler.terminate();
    assert_eq!(
        status.code(),
        Some(0),
        "scheduler: {status}\n{}",
        c.scheduler.output()
    );
    eprintln!("cluster test took {:?}", started.elapsed());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_without_the_policy_names_the_revision() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = write_log(dir.path(), 1, 200);
    let c = cluster(dir.path(), "pull", US_2020, US_2024).await;
    let revision = replay::load_policy(Path::new(US_2020))?.revision.clone();
    let held = replay::load_policy(Path::new(US_2024))?.revision.clone();
    assert_ne!(revision, held);
    let sql = format!(
        "SELECT seq, {} AS d FROM requests_parquet ORDER BY seq",
        Session::call("decide")
    );
    let started = Instant::now();
    let result = run(
        Engine::Remote(format!("df://127.0.0.1:{}", c.port)),
        &log,
        &sql,
    )
    .await;
    let Err(e) = result else {
        panic!(
            "the query ran on an executor without policy {revision}\n{}",
            c.executor.output()
        );
    };
    let message = format!("{e:#}");
    eprintln!("failed after {:?} with: {message}", started.elapsed());
    assert!(
        message.contains(&format!("needs policy revision {revision}"))
            && message.contains(&format!("it holds: {held}")),
        "{message}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.bundle");
    let mut p = Proc::start(
        "bad-bundle",
        dir.path(),
        &[
            "scheduler",
            "--bind",
            "127.0.0.1:0",
            "--bundle",
            missing.to_str().unwrap(),
        ],
    );
    assert_eq!(p.wait_exit().code(), Some(2), "{}", p.output());
    assert!(p.stderr().starts_with("error: "), "{}", p.output());
    assert!(p.stderr().contains("missing.bundle"), "{}", p.output());

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let mut p = Proc::start(
        "scheduler-port-in-use",
        dir.path(),
        &[
            "scheduler",
            "--bind",
            &format!("127.0.0.1:{port}"),
            "--policies",
            US_2020,
        ],
    );
    assert_eq!(p.wait_exit().code(), Some(2), "{}", p.output());
    assert!(p.stderr().starts_with("error: "), "{}", p.output());
    assert!(p.stderr().contains(&port), "{}", p.output());

    let [free] = free_ports::<1>();
    let mut p = Proc::start(
        "executor-port-in-use",
        dir.path(),
        &[
            "executor",
            "--scheduler",
            "127.0.0.1:1",
            "--port",
            &port,
            "--grpc-port",
            &free.to_string(),
            "--policies",
            US_2020,
        ],
    );
    assert_eq!(p.wait_exit().code(), Some(2), "{}", p.output());
    assert!(p.stderr().starts_with("error: "), "{}", p.output());
    assert!(p.stderr().contains(&port), "{}", p.output());
    drop(taken);
}

/// With `--scheduling push` the decisions are the same; an executor without the policy
/// fails the query too, but Ballista keeps the executor's reason to itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_scheduling() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = write_log(dir.path(), 2, 500);
    let sql = format!(
        "SELECT seq, {} AS d FROM requests_parquet ORDER BY seq",
        Session::call("decide")
    );
    let local = run(Engine::Local, &log, &sql).await?;
    {
        let c = cluster(dir.path(), "push", US_2020, US_2020).await;
        let url = format!("df://127.0.0.1:{}", c.port);
        let remote = run(Engine::Remote(url), &log, &sql).await.map_err(|e| {
            anyhow::anyhow!("{e:#}\n{}{}", c.scheduler.output(), c.executor.output())
        })?;
        assert_eq!(assert_same("push", &local, &remote), 1_000);
    }
    let other = tempfile::tempdir()?;
    let c = cluster(other.path(), "push", US_2020, US_2024).await;
    let url = format!("df://127.0.0.1:{}", c.port);
    let Err(e) = run(Engine::Remote(url), &log, &sql).await else {
        panic!(
            "the query ran on an executor without the policy\n{}",
            c.executor.output()
        );
    };
    eprintln!("push, executor without the policy: {e:#}");
    Ok(())
}
