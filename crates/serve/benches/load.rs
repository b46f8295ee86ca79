//! A bounded load run against `gatekeeper serve` on 127.0.0.1 (`cargo xtask bench`):
//! decisions per second over keep-alive connections, single requests and batches of
//! 1,000, with p50 and p99 latency. Client and service share this machine's cores.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a benchmark harness may fail loudly

use std::time::{Duration, Instant};

const REQUESTS: [&str; 4] = [
    r#"{"app":{"platform":"android","id":"com.tencent.mm"},"action":"update","at":"2020-09-22T12:00:00Z","storefront":"US"}"#,
    r#"{"app":{"platform":"ios","id":"com.zhiliaoapp.musically"},"action":"download","at":"2020-09-22T12:00:00Z","storefront":"CAN"}"#,
    r#"{"app":{"platform":"android","id":"com.lemon.lvoverseas"},"action":"update","at":"2025-03-01T12:00:00Z","storefront":"USA"}"#,
    r#"{"app":{"platform":"android","id":"com.example.notes"},"action":"download","at":"2025-03-01T12:00:00Z","storefront":"US"}"#,
];

/// Pairs of measured rounds (an odd number, for a median).
const ROUNDS: usize = 9;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Sends `per_task` bodies from each of `tasks` concurrent keep-alive clients; returns the
/// wall time and every request's latency.
async fn run(
    url: &str,
    body: bytes::Bytes,
    tasks: usize,
    per_task: usize,
) -> (Duration, Vec<Duration>) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(tasks)
        .build()
        .unwrap();
    let started = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let (client, url, body) = (client.clone(), url.to_owned(), body.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per_task);
                for _ in 0..per_task {
                    let t = Instant::now();
                    let response = client.post(&url).body(body.clone()).send().await.unwrap();
                    assert!(response.status().is_success(), "{}", response.status());
                    let _ = response.bytes().await.unwrap();
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(tasks * per_task);
    for h in handles {
        latencies.extend(h.await.unwrap());
    }
    let wall = started.elapsed();
    latencies.sort();
    (wall, latencies)
}

/// Measured rounds of the sidecar and of a baseline serving the same bytes, in pairs
/// (which goes first alternates), with `tasks` clients sending `per_task` bodies of
/// `decisions` decisions each; prints each round, the medians, and the median of the
/// pairs' ratios (the figure: the machine's speed moves between pairs more than within
/// one).
#[allow(clippy::too_many_arguments)]
fn rounds(
    client: &tokio::runtime::Runtime,
    label: &str,
    url: &str,
    baseline: &str,
    body: &bytes::Bytes,
    tasks: usize,
    per_task: usize,
    decisions: usize,
) {
    let unit = if decisions == 1 {
        "requests"
    } else {
        "decisions"
    };
    let mut rates = [Vec::new(), Vec::new()];
    let mut cpu = [Vec::new(), Vec::new()];
    let mut ratios = Vec::new();
    let mut cpu_ratios = Vec::new();
    for round in 0..ROUNDS {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for side in order {
            let target = [url, baseline][side];
            let spent = service_cpu_ns();
            let (wall, lat) = client.block_on(run(target, body.clone(), tasks, per_task));
            let spent = service_cpu_ns() - spent;
            let rate = (lat.len() * decisions) as f64 / wall.as_secs_f64();
            let per = spent as f64 / (lat.len() * decisions) as f64;
            rates[side].push(rate);
            cpu[side].push(per);
            println!(
                "{label:<8} {:<9} round {round}: {} requests of {decisions} in {:.2} s: {rate:.0} {unit}/s, p50 {:?}, p99 {:?} per request; server CPU {per:.0} ns per {}",
                ["sidecar", "baseline"][side],
                lat.len(),
                wall.as_secs_f64(),
                percentile(&lat, 0.5),
                percentile(&lat, 0.99),
                &unit[..unit.len() - 1]
            );
        }
        ratios.push(rates[0][round] / rates[1][round]);
        cpu_ratios.push(cpu[0][round] / cpu[1][round]);
    }
    for r in rates
        .iter_mut()
        .chain(cpu.iter_mut())
        .chain([&mut ratios, &mut cpu_ratios])
    {
        r.sort_by(f64::total_cmp);
    }
    let middle = ROUNDS / 2;
    println!(
        "{label:<8} median: sidecar {:.0} {unit}/s, baseline {:.0} {unit}/s; median of the pairs' ratios {:.2} ({:.2} to {:.2})",
        rates[0][middle],
        rates[1][middle],
        ratios[middle],
        ratios[0],
        ratios[ROUNDS - 1]
    );
    println!(
        "{label:<8} server CPU: sidecar {:.0} ns, baseline {:.0} ns per {}; median of the pairs' ratios {:.2} ({:.2} to {:.2})",
        cpu[0][middle],
        cpu[1][middle],
        &unit[..unit.len() - 1],
        cpu_ratios[middle],
        cpu_ratios[0],
        cpu_ratios[ROUNDS - 1]
    );
}

/// The name of the service runtime's threads, where both servers run.
const SERVICE_THREAD: &str = "bench-service";

/// CPU time the service runtime's threads have run, in nanoseconds (from
/// `/proc/self/task/*/schedstat`, whose first field is that).
fn service_cpu_ns() -> u64 {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let path = task.unwrap().path();
        let Ok(name) = std::fs::read_to_string(path.join("comm")) else {
            continue; // the thread ended
        };
        if name.trim_end() != SERVICE_THREAD {
            continue;
        }
        if let Ok(stat) = std::fs::read_to_string(path.join("schedstat")) {
            total += stat
                .split_whitespace()
                .next()
                .and_then(|ns| ns.parse::<u64>().ok())
                .unwrap();
        }
    }
    total
}

/// The baseline: a bare axum server that reads the body and answers the bytes the sidecar
/// answered to the same body (a single request's answer, or a batch's), with no decision.
async fn baseline(single: bytes::Bytes, batch: bytes::Bytes) -> std::net::SocketAddr {
    use axum::routing::post;
    let app = axum::Router::new().route(
        "/v1/decide",
        post(move |body: bytes::Bytes| {
            let answer = if body.first() == Some(&b'[') {
                batch.clone()
            } else {
                single.clone()
            };
            async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    answer,
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn main() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../policies");
    let service = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(SERVICE_THREAD)
        .enable_all()
        .build()
        .unwrap();
    let config = serve::Config {
        listen: "127.0.0.1:0".into(),
        policies: ["us-2020", "us-2020-courts", "us-2024-pafaca"]
            .iter()
            .map(|s| format!("{root}/{s}").into())
            .collect(),
        reload_interval_ms: 0,
        ..serve::Config::default()
    };
    let server = service.block_on(serve::start(config)).unwrap();
    let url = format!("http://{}/v1/decide", server.addr);
    let client = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    // Bodies are sent without a copy each time (a clone of `Bytes` shares them), so that
    // the client's work, shared by both sides, is no more than it must be.
    let single = bytes::Bytes::from_static(REQUESTS[0].as_bytes());
    let batch: Vec<&str> = (0..1_000).map(|i| REQUESTS[i % REQUESTS.len()]).collect();
    let batch = bytes::Bytes::from(format!("[{}]", batch.join(",")));
    let answer = |body: &bytes::Bytes| {
        client.block_on(async {
            reqwest::Client::new()
                .post(&url)
                .body(body.clone())
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap()
        })
    };
    let (single_answer, batch_answer) = (answer(&single), answer(&batch));
    let base = service.block_on(baseline(single_answer.clone(), batch_answer.clone()));
    let base_url = format!("http://{base}/v1/decide");

    println!(
        "gatekeeper serve load run (audit off, 127.0.0.1, 2 cores shared by client and service); baseline: a bare axum server answering the same bytes ({} for a single request, {} for a batch of 1,000)",
        single_answer.len(),
        batch_answer.len()
    );
    // `cargo bench --bench load -- single` (or `batch`) runs only that part.
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wanted = |part: &str| only.is_empty() || only.iter().any(|o| o == part);
    if wanted("single") {
        // Single requests: warm up, then the measured runs.
        client.block_on(run(&url, single.clone(), 16, 200));
        client.block_on(run(&base_url, single.clone(), 16, 200));
        rounds(&client, "single", &url, &base_url, &single, 16, 2_500, 1);
    }
    if wanted("batch") {
        client.block_on(run(&url, batch.clone(), 2, 5));
        client.block_on(run(&base_url, batch.clone(), 2, 5));
        rounds(&client, "batch", &url, &base_url, &batch, 4, 100, 1_000);
    }
    service.block_on(server.shutdown()).unwrap();
}
