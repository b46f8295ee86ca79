//! Durable against buffered audit through `gatekeeper serve` on 127.0.0.1
//! (`cargo xtask bench`): single decide requests over keep-alive connections, two services
//! side by side (one per durability, each with its own trail), measured in alternating
//! rounds; then the bytes of a record against the bytes of its request.
//!
//! A durable answer waits for a sync of the disk, so one client gets one answer per sync:
//! throughput is latency-bound at low concurrency and catches up once enough clients are in
//! flight for group commit to fill each sync. Both concurrencies are shown.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a benchmark harness may fail loudly

use std::sync::Arc;
use std::time::{Duration, Instant};

const REQUESTS: [&str; 4] = [
    r#"{"app":{"platform":"android","id":"com.tencent.mm"},"action":"update","at":"2020-09-22T12:00:00Z","storefront":"US"}"#,
    r#"{"app":{"platform":"ios","id":"com.zhiliaoapp.musically"},"action":"download","at":"2020-09-22T12:00:00Z","storefront":"CAN"}"#,
    r#"{"app":{"platform":"android","id":"com.lemon.lvoverseas"},"action":"update","at":"2025-03-01T12:00:00Z","storefront":"USA"}"#,
    r#"{"app":{"platform":"android","id":"com.example.notes"},"action":"download","at":"2025-03-01T12:00:00Z","storefront":"US"}"#,
];

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// `tasks` keep-alive clients each send `per_task` single requests (cycling through
/// `REQUESTS`); the rate and the sorted latencies.
async fn run(url: &str, tasks: usize, per_task: usize) -> (f64, Vec<Duration>) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(tasks)
        .build()
        .unwrap();
    let started = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let (client, url) = (client.clone(), url.to_owned());
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per_task);
                for i in 0..per_task {
                    let t0 = Instant::now();
                    let response = client
                        .post(&url)
                        .body(REQUESTS[(t + i) % REQUESTS.len()])
                        .send()
                        .await
                        .unwrap();
                    assert!(response.status().is_success(), "{}", response.status());
                    let _ = response.bytes().await.unwrap();
                    latencies.push(t0.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(tasks * per_task);
    for h in handles {
        latencies.extend(h.await.unwrap());
    }
    let rate = latencies.len() as f64 / started.elapsed().as_secs_f64();
    latencies.sort();
    (rate, latencies)
}

fn main() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../policies");
    let service = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let modes = [
        ("durable", gatekeeper::Durability::Durable),
        ("buffered", gatekeeper::Durability::Buffered),
    ];
    let trails: Vec<_> = modes.iter().map(|_| tempfile::tempdir().unwrap()).collect();
    let servers: Vec<_> = modes
        .iter()
        .zip(&trails)
        .map(|((_, durability), trail)| {
            let config = serve::Config {
                listen: "127.0.0.1:0".into(),
                policies: ["us-2020", "us-2020-courts", "us-2024-pafaca"]
                    .iter()
                    .map(|s| format!("{root}/{s}").into())
                    .collect(),
                reload_interval_ms: 0,
                audit_dir: Some(trail.path().to_path_buf()),
                audit_durability: *durability,
                ..serve::Config::default()
            };
            service.block_on(serve::start(config)).unwrap()
        })
        .collect();
    let urls: Vec<_> = servers
        .iter()
        .map(|s| Arc::new(format!("http://{}/v1/decide", s.addr)))
        .collect();
    println!(
        "gatekeeper serve, durable against buffered audit (127.0.0.1, 2 cores shared by client and service, single requests)"
    );
    for (tasks, per_task) in [(16, 300), (64, 100), (256, 40)] {
        for url in &urls {
            client.block_on(run(url, tasks, per_task / 4));
        }
        let mut rates = [Vec::new(), Vec::new()];
        for round in 0..5 {
            for (m, url) in urls.iter().enumerate() {
                let (rate, lat) = client.block_on(run(url, tasks, per_task));
                println!(
                    "{:<8} {tasks:>3} clients round {round}: {rate:.0} requests/s, p50 {:?}, p99 {:?}",
                    modes[m].0,
                    percentile(&lat, 0.5),
                    percentile(&lat, 0.99)
                );
                rates[m].push(rate);
            }
        }
        for r in &mut rates {
            r.sort_by(f64::total_cmp);
        }
        println!(
            "{tasks:>3} clients: durable median {:.0} requests/s, buffered median {:.0}: durable/buffered {:.2}",
            rates[0][2],
            rates[1][2],
            rates[0][2] / rates[1][2]
        );
    }
    for server in servers {
        service.block_on(server.shutdown()).unwrap();
    }
    // Record bytes against request bytes, over the durable trail.
    let records = gatekeeper::audit::read_records(&[trails[0].path()]).unwrap();
    let record_bytes: usize = gatekeeper::audit::files_in(trails[0].path())
        .unwrap()
        .iter()
        .map(|(_, f)| std::fs::metadata(f).unwrap().len() as usize)
        .sum();
    let request_bytes =
        REQUESTS.iter().map(|r| r.len()).sum::<usize>() as f64 / REQUESTS.len() as f64;
    let per_record = record_bytes as f64 / records.len() as f64;
    println!(
        "audit records: {per_record:.0} bytes per record for requests of {request_bytes:.0} bytes on average ({:.2}x), {} records",
        per_record / request_bytes,
        records.len()
    );
}
