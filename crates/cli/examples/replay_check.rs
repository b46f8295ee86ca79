//! `cargo xtask replay-check`: replay at scale, checked and measured.
//!
//! 1. Writes a generated log (`replay::genlog`) of `--rows` requests as Parquet (with `seq`,
//!    the row's line) and JSON Lines, unless the same log is already there.
//! 2. Correctness: for each shipped policy set, `gatekeeper check` (the command line, in
//!    this process) answers every line of the JSON Lines file; DataFusion answers every
//!    row of the Parquet and of the JSON Lines tables; each answer is reduced to what the
//!    decision function returns and compared row for row (by a 64-bit hash per row, kept
//!    by line). A Ballista cluster in this process answers the first `--ballista-rows`.
//! 3. Throughput, side by side, alternating, medians: replay over Parquet and over JSON
//!    Lines (decisions per second), and a plain loop over the same rows already in memory
//!    (reading each request and deciding it with the policy crate, on as many threads as
//!    the query has partitions): the engine's overhead is their ratio.
//! 4. Memory: peak resident memory of a replay over the whole log, in a fresh process.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hash::{Hash as _, Hasher as _};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt as _;
use replay::datafusion::arrow::array::{
    Array, ArrayRef, AsArray as _, RecordBatch, StructArray, UInt64Array,
};
use replay::datafusion::arrow::datatypes::{DataType, Field, Schema, UInt64Type};
use replay::datafusion::parquet::arrow::ArrowWriter;
use replay::genlog::{LogGenerator, LogSpec, batch_of};
use replay::session::{Engine, Inputs, Session};

struct Args {
    rows: u64,
    seed: u64,
    dir: PathBuf,
    ballista_rows: u64,
    partitions: usize,
    runs: usize,
    memory_only: bool,
    /// Only the throughput runs (no comparison with `check`, no memory run).
    throughput_only: bool,
    /// Only the Parquet query, `--runs` times (for a profiler).
    parquet_only: bool,
    /// With `--parquet-only`: the Parquet query at each of these batch sizes in turn, run
    /// after run in one process, and the median of the runs' ratios to the first size.
    batch_sizes: Vec<usize>,
}

fn args() -> Args {
    let mut a = Args {
        rows: 10_000_000,
        seed: 1,
        dir: PathBuf::from("target/replay-check"),
        ballista_rows: 200_000,
        partitions: 2,
        runs: 5,
        memory_only: false,
        throughput_only: false,
        parquet_only: false,
        batch_sizes: Vec::new(),
    };
    let all: Vec<String> = std::env::args().skip(1).collect();
    let mut it = all.iter();
    while let Some(k) = it.next() {
        let mut v = || it.next().expect("a value").clone();
        match k.as_str() {
            "--rows" => a.rows = v().parse().expect("--rows N"),
            "--seed" => a.seed = v().parse().expect("--seed S"),
            "--dir" => a.dir = PathBuf::from(v()),
            "--ballista-rows" => a.ballista_rows = v().parse().expect("--ballista-rows N"),
            "--partitions" => a.partitions = v().parse().expect("--partitions N"),
            "--runs" => a.runs = v().parse().expect("--runs N"),
            "--memory-only" => a.memory_only = true,
            "--throughput-only" => a.throughput_only = true,
            "--parquet-only" => {
                a.throughput_only = true;
                a.parquet_only = true;
            }
            "--batch-sizes" => {
                a.batch_sizes = v()
                    .split(',')
                    .map(|n| n.parse().expect("--batch-sizes N,N,..."))
                    .collect();
                assert!(
                    a.batch_sizes.iter().all(|&n| n > 0),
                    "--batch-sizes: a batch holds at least one row"
                );
            }
            other => panic!("unknown argument `{other}`"),
        }
    }
    assert!(
        a.batch_sizes.is_empty() || a.parquet_only,
        "--batch-sizes goes with --parquet-only"
    );
    a
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

const SETS: [&str; 3] = ["us-2020", "us-2020-courts", "us-2024-pafaca"];

fn set(name: &str) -> PathBuf {
    root().join("policies").join(name)
}

/// Writes the log unless a log of the same rows and seed is there.
fn write_log(a: &Args) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(&a.dir).unwrap();
    let parquet = a.dir.join("log.parquet");
    let jsonl = a.dir.join("log.jsonl");
    let stamp = a.dir.join("log.stamp");
    let want = format!("rows {} seed {}\n", a.rows, a.seed);
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(want.as_str()) {
        return (parquet, jsonl);
    }
    let _ = std::fs::remove_file(&stamp);
    let started = Instant::now();
    let loaded: Vec<_> = SETS
        .iter()
        .map(|s| gatekeeper::load_dirs(&[set(s)]).unwrap().policy)
        .collect();
    let refs: Vec<&policy::Policy> = loaded.iter().collect();
    let spec = LogSpec {
        rows: a.rows,
        seed: a.seed,
        ..LogSpec::default()
    };
    let mut generator = LogGenerator::new(spec, &refs);
    let mut fields = vec![Arc::new(Field::new("seq", DataType::UInt64, false))];
    fields.extend(replay::schema::requests().fields().iter().cloned());
    let schema = Arc::new(Schema::new(fields));
    let props = replay::datafusion::parquet::file::properties::WriterProperties::builder()
        .set_compression(replay::datafusion::parquet::basic::Compression::ZSTD(
            replay::datafusion::parquet::basic::ZstdLevel::try_new(1).unwrap(),
        ))
        .set_max_row_group_row_count(Some(1 << 20))
        .build();
    let mut w = ArrowWriter::try_new(
        std::fs::File::create(&parquet).unwrap(),
        schema.clone(),
        Some(props),
    )
    .unwrap();
    let mut j = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&jsonl).unwrap());
    let mut seq = 0u64;
    while seq < a.rows {
        let n = (a.rows - seq).min(65_536) as usize;
        let records = generator.next_records(n);
        for r in &records {
            serde_json::to_writer(&mut j, r).unwrap();
            j.write_all(b"\n").unwrap();
        }
        let batch = batch_of(&records);
        let mut columns: Vec<ArrayRef> = vec![Arc::new(UInt64Array::from_iter_values(
            seq + 1..=seq + n as u64,
        ))];
        columns.extend(batch.columns().iter().cloned());
        w.write(&RecordBatch::try_new(schema.clone(), columns).unwrap())
            .unwrap();
        seq += n as u64;
    }
    w.close().unwrap();
    j.flush().unwrap();
    std::fs::write(&stamp, want).unwrap();
    eprintln!(
        "wrote {} rows in {:.1} s: Parquet {:.0} MB, JSON Lines {:.0} MB",
        a.rows,
        started.elapsed().as_secs_f64(),
        size_mb(&parquet),
        size_mb(&jsonl)
    );
    (parquet, jsonl)
}

fn size_mb(p: &Path) -> f64 {
    std::fs::metadata(p)
        .map(|m| m.len() as f64 / 1e6)
        .unwrap_or(0.0)
}

fn hash(text: &str) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

/// A `check` answer reduced to the decision function's fields.
fn from_check(line: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(line).unwrap();
    if let Some(e) = v.get("error") {
        let e = e.as_str().unwrap();
        return format!("error|{}", e.split_once(": ").unwrap().1);
    }
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_owned();
    let reasons = v
        .get("reasons")
        .and_then(|r| r.as_array())
        .cloned()
        .unwrap_or_default();
    let prohibitions: Vec<&str> = reasons
        .iter()
        .map(|r| r["prohibition"].as_str().unwrap())
        .collect();
    let mut instruments: Vec<String> = Vec::new();
    for r in &reasons {
        let i = r["instrument"].as_str().unwrap().to_owned();
        if !instruments.contains(&i) {
            instruments.push(i);
        }
    }
    if let Some(by) = v.get("by").and_then(|b| b.as_str()) {
        instruments.push(by.to_owned());
    }
    let region = v
        .get("jurisdiction")
        .and_then(|j| j.get("region"))
        .and_then(|r| r.as_str())
        .unwrap_or("");
    format!(
        "{}|{}|{}|{}|{}|{}|{}|{}",
        s("decision"),
        s("because"),
        s("by"),
        prohibitions.join(","),
        instruments.join(","),
        region,
        s("app"),
        s("owner")
    )
}

fn from_struct(d: &StructArray, row: usize, invalid: Option<&str>) -> String {
    let text = |name: &str| {
        let a = d.column_by_name(name).unwrap().as_string::<i32>();
        if a.is_null(row) {
            String::new()
        } else {
            a.value(row).to_owned()
        }
    };
    let list = |name: &str| {
        let a = d.column_by_name(name).unwrap().as_list::<i32>();
        if a.is_null(row) {
            return String::new();
        }
        let items = a.value(row);
        items
            .as_string::<i32>()
            .iter()
            .map(|i| i.unwrap())
            .collect::<Vec<_>>()
            .join(",")
    };
    if let Some(i) = invalid {
        return format!("error|{i}");
    }
    if !d.column_by_name("error").unwrap().is_null(row) {
        return format!("error|{}", text("error"));
    }
    format!(
        "{}|{}|{}|{}|{}|{}|{}|{}",
        text("decision"),
        text("because"),
        text("by"),
        list("prohibitions"),
        list("instruments"),
        text("region"),
        text("app"),
        text("owner")
    )
}

/// `gatekeeper check`'s output, reduced and hashed line by line as it is written.
struct CheckSink {
    line: Vec<u8>,
    hashes: Vec<u64>,
}

impl std::io::Write for CheckSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        for &b in buf {
            if b == b'\n' {
                self.hashes.push(hash(&from_check(&self.line)));
                self.line.clear();
            } else {
                self.line.push(b);
            }
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn check_hashes(policies: &Path, jsonl: &Path) -> Vec<u64> {
    let mut sink = CheckSink {
        line: Vec::new(),
        hashes: Vec::new(),
    };
    let mut err = Vec::new();
    cli::run(
        [
            "gatekeeper",
            "check",
            "--policies",
            policies.to_str().unwrap(),
            jsonl.to_str().unwrap(),
        ],
        &mut std::io::empty(),
        &mut sink,
        &mut err,
    );
    assert!(err.is_empty(), "{}", String::from_utf8_lossy(&err));
    sink.hashes
}

async fn session(engine: Engine, partitions: usize, policies: &Path, inputs: &Inputs) -> Session {
    let mut s = Session::new(engine, partitions).await.unwrap();
    s.add_policy(
        "decide",
        replay::load_policy(policies).unwrap(),
        policy::Posture::default(),
    )
    .unwrap();
    s.add_inputs(inputs).await.unwrap();
    s
}

/// Compares every row of a query's answers with `check`'s; returns (rows, mismatches).
async fn compare(s: &Session, sql: &str, expected: &[u64]) -> (u64, Vec<u64>) {
    let mut seen = vec![false; expected.len()];
    let mut rows = 0u64;
    let mut wrong = Vec::new();
    let mut stream = s
        .ctx
        .sql(sql)
        .await
        .unwrap()
        .execute_stream()
        .await
        .unwrap();
    while let Some(b) = stream.next().await {
        let b = b.unwrap();
        let k = replay::datafusion::arrow::compute::cast(b.column(0), &DataType::UInt64).unwrap();
        let k = k.as_primitive::<UInt64Type>();
        let d = b.column(1).as_struct();
        let inv = replay::datafusion::arrow::compute::cast(b.column(2), &DataType::Utf8).unwrap();
        let inv = inv.as_string::<i32>();
        for row in 0..b.num_rows() {
            let key = k.value(row);
            let i = (!inv.is_null(row)).then(|| inv.value(row));
            let at = (key - 1) as usize;
            rows += 1;
            if at >= expected.len() || seen[at] || expected[at] != hash(&from_struct(d, row, i)) {
                wrong.push(key);
            } else {
                seen[at] = true;
            }
        }
    }
    (rows, wrong)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The decisions of a whole pass of a query that decides every row.
async fn time_query(s: &Session, table: &str) -> (f64, u64) {
    let sql = format!(
        "SELECT count(*) FILTER (WHERE {}['decision'] = 'deny') AS denied, count(*) AS n FROM {table}",
        Session::call("decide")
    );
    let started = Instant::now();
    let b = s.ctx.sql(&sql).await.unwrap().collect().await.unwrap();
    let secs = started.elapsed().as_secs_f64();
    let n = b[0]
        .column(1)
        .as_primitive::<replay::datafusion::arrow::datatypes::Int64Type>()
        .value(0);
    (secs, n as u64)
}

/// The plain loop: the same requests, already in memory as records, read and decided
/// with the policy crate on `threads` threads.
fn time_loop(
    policy: &policy::Policy,
    records: &[policy::RequestRecord],
    threads: usize,
) -> (f64, u64) {
    let started = Instant::now();
    let chunk = records.len().div_ceil(threads.max(1));
    let denied: u64 = std::thread::scope(|scope| {
        let handles: Vec<_> = records
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    let mut denied = 0u64;
                    let mut kept: Option<policy::Request> = None;
                    for r in part {
                        let record = r.borrowed();
                        let ok = match &mut kept {
                            Some(k) => record.read_into(k).is_ok(),
                            None => record.into_request().map(|q| kept = Some(q)).is_ok(),
                        };
                        if ok && let Some(k) = &kept {
                            denied +=
                                u64::from(policy.decide(k, policy::Posture::default()).is_deny());
                        }
                    }
                    denied
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    (started.elapsed().as_secs_f64(), denied)
}

fn vm_hwm_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() {
    let a = args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(a.partitions.max(1))
        .enable_all()
        .build()
        .unwrap();
    let (parquet, jsonl) = write_log(&a);
    let both = Inputs {
        parquet: vec![parquet.clone()],
        jsonl: vec![jsonl.clone()],
        trail: vec![],
        ..Inputs::default()
    };
    if a.memory_only {
        // A fresh process: a replay of the whole log, then its peak resident memory.
        let spec = replay::replay::ReplaySpec {
            new: "decide".to_owned(),
            baseline: replay::replay::Baseline::Function("old".to_owned()),
            changed_parquet: None,
            shown: 5,
        };
        let before = vm_hwm_mb();
        let report = rt.block_on(async {
            let mut s = Session::new(Engine::Local, a.partitions).await.unwrap();
            s.add_policy(
                "decide",
                replay::load_policy(&set("us-2020-courts")).unwrap(),
                policy::Posture::default(),
            )
            .unwrap();
            s.add_policy(
                "old",
                replay::load_policy(&set("us-2020")).unwrap(),
                policy::Posture::default(),
            )
            .unwrap();
            s.add_inputs(&Inputs {
                parquet: vec![parquet.clone()],
                ..Inputs::default()
            })
            .await
            .unwrap();
            replay::replay::replay(&s, &spec).await.unwrap()
        });
        println!(
            "memory {} {:.1} {:.1} {}",
            report.rows,
            before,
            vm_hwm_mb(),
            report.changed
        );
        return;
    }
    // Correctness.
    let mut all_ok = true;
    let checked: &[&str] = if a.throughput_only { &[] } else { &SETS };
    for s in checked {
        let started = Instant::now();
        let expected = check_hashes(&set(s), &jsonl);
        let check_secs = started.elapsed().as_secs_f64();
        assert_eq!(expected.len() as u64, a.rows);
        let (p, j, b) = rt.block_on(async {
            let local = session(Engine::Local, a.partitions, &set(s), &both).await;
            let call = Session::call("decide");
            let p = compare(&local, &format!("SELECT seq, {call}, CAST(NULL AS VARCHAR) FROM requests_parquet"), &expected).await;
            let j = compare(&local, &format!("SELECT line, {call}, invalid FROM requests_jsonl"), &expected).await;
            let cluster_inputs = Inputs { parquet: vec![parquet.clone()], ..Inputs::default() };
            let cluster = session(Engine::Standalone, a.partitions, &set(s), &cluster_inputs).await;
            let b = compare(
                &cluster,
                &format!("SELECT seq, {call}, CAST(NULL AS VARCHAR) FROM requests_parquet WHERE seq <= {}", a.ballista_rows),
                &expected,
            )
            .await;
            (p, j, b)
        });
        let ok = p.0 == a.rows
            && p.1.is_empty()
            && j.0 == a.rows
            && j.1.is_empty()
            && b.0 == a.ballista_rows.min(a.rows)
            && b.1.is_empty();
        all_ok &= ok;
        println!(
            "{s}: check {:.1} s; DataFusion Parquet {} rows, {} differ; JSON Lines {} rows, {} differ; Ballista (standalone) {} rows, {} differ{}",
            check_secs,
            p.0,
            p.1.len(),
            j.0,
            j.1.len(),
            b.0,
            b.1.len(),
            if ok { "" } else { "  <-- MISMATCH" }
        );
        for (what, wrong) in [("parquet", &p.1), ("jsonl", &j.1), ("ballista", &b.1)] {
            if !wrong.is_empty() {
                println!(
                    "  {what}: first differing rows {:?}",
                    &wrong[..wrong.len().min(10)]
                );
            }
        }
    }
    // Throughput, alternating, medians.
    let loop_rows = if a.parquet_only {
        0
    } else {
        a.rows.min(2_000_000) as usize
    };
    let records: Vec<policy::RequestRecord> = std::io::BufRead::lines(std::io::BufReader::new(
        std::fs::File::open(&jsonl).unwrap(),
    ))
    .take(loop_rows)
    .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
    .collect();
    let courts = gatekeeper::load_dirs(&[set("us-2020-courts")])
        .unwrap()
        .policy;
    let (mut pq, mut js, mut lp) = (Vec::new(), Vec::new(), Vec::new());
    rt.block_on(async {
        let local = session(Engine::Local, a.partitions, &set("us-2020-courts"), &both).await;
        if !a.batch_sizes.is_empty() {
            // Per size, the rate of each run; the sizes in turn within a run.
            let mut rates = vec![Vec::new(); a.batch_sizes.len()];
            for run in 0..a.runs {
                for k in 0..a.batch_sizes.len() {
                    // Each run starts with another size, so that no size always comes first.
                    let k = (k + run) % a.batch_sizes.len();
                    let set = format!("SET datafusion.execution.batch_size = {}", a.batch_sizes[k]);
                    local.ctx.sql(&set).await.unwrap().collect().await.unwrap();
                    let (secs, n) = time_query(&local, "requests_parquet").await;
                    rates[k].push(n as f64 / secs);
                }
            }
            for (size, r) in a.batch_sizes.iter().zip(&rates) {
                let ratios = r.iter().zip(&rates[0]).map(|(x, y)| x / y).collect();
                println!(
                    "batch size {size}: Parquet {:.2} M decisions/s (median of {}), median ratio to {} {:.3}",
                    median(r.clone()) / 1e6,
                    a.runs,
                    a.batch_sizes[0],
                    median(ratios)
                );
            }
            return;
        }
        for _ in 0..a.runs {
            let (secs, n) = time_query(&local, "requests_parquet").await;
            pq.push(n as f64 / secs);
            if a.parquet_only {
                continue;
            }
            let (secs, n) = time_loop(&courts, &records, a.partitions);
            let _ = n;
            lp.push(records.len() as f64 / secs);
            let (secs, n) = time_query(&local, "requests_jsonl").await;
            js.push(n as f64 / secs);
        }
    });
    // The batch sizes' runs printed their figures (their `return` left the async block only).
    if !a.batch_sizes.is_empty() {
        return;
    }
    if a.parquet_only {
        println!(
            "Parquet {:.2} M decisions/s (median of {})",
            median(pq) / 1e6,
            a.runs
        );
        return;
    }
    let (pq, js, lp) = (median(pq), median(js), median(lp));
    println!(
        "throughput ({} partitions, medians of {} alternating runs): Parquet {:.2} M decisions/s; JSON Lines {:.2} M/s; plain loop over {} in-memory records {:.2} M/s; Parquet / loop {:.2}",
        a.partitions,
        a.runs,
        pq / 1e6,
        js / 1e6,
        records.len(),
        lp / 1e6,
        pq / lp
    );
    if a.throughput_only {
        return;
    }
    // Memory: a replay (new and baseline policy) of the whole Parquet log, in a fresh process.
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(std::env::args().skip(1))
        .arg("--memory-only")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    if let Some(line) = text.lines().find(|l| l.starts_with("memory ")) {
        let f: Vec<&str> = line.split(' ').collect();
        println!(
            "memory: replay of {} rows against a baseline: peak resident {} MB ({} MB before the query); {} changed",
            f[1], f[3], f[2], f[4]
        );
    } else {
        println!(
            "memory run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        all_ok = false;
    }
    if !all_ok {
        std::process::exit(1);
    }
}
