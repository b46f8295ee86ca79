//! A seeded random workload through the store over HTTP, each answer cross-checked against
//! the decision `gatekeeper check` gives for the same request, and the store's throughput
//! with the gatekeeper layer on and off in the same run.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant as Stopwatch;

use anyhow::Context as _;
use policy::{Policy, Posture, RequestRecord};
use serde::Serialize;
use serde_json::{Value, json};

use crate::store::StoreConfig;

const APPS: [(&str, &str); 9] = [
    ("android", "com.zhiliaoapp.musically"),
    ("ios", "com.zhiliaoapp.musically"),
    ("android", "com.ss.android.ugc.trill"),
    ("android", "com.zhiliaoapp.musically.go"),
    ("android", "com.lemon.lvoverseas"),
    ("ios", "com.tencent.xin"),
    ("android", "com.tencent.mm"),
    ("android", "com.example.notes"),
    ("ios", "com.example.maps"),
];
const COUNTRIES: [&str; 14] = [
    "US", "USA", "PR", "PRI", "gu", "VIR", "AS", "MNP", "UMI", "CA", "CAN", "GB", "DE", "JP",
];
const ACTIONS: [&str; 4] = ["download", "cdn", "host", "payment"];

/// One generated request: how it goes over HTTP and what `gatekeeper check` reads.
#[derive(Clone, Debug)]
pub struct Generated {
    pub method: &'static str,
    pub path: String,
    pub record: RequestRecord,
}

/// Draws `n` requests from `seed`: apps (covered and not), actions, countries (alpha-2
/// and alpha-3, any case) and instants from 2020 to 2025.
pub fn generate(n: usize, seed: u64) -> Vec<Generated> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let start = 1_577_836_800i64; // 2020-01-01T00:00:00Z
    let end = 1_767_225_600i64; // 2026-01-01T00:00:00Z
    (0..n)
        .map(|_| {
            let (platform, id) = APPS[rng.usize(..APPS.len())];
            let action = ACTIONS[rng.usize(..ACTIONS.len())];
            let country = COUNTRIES[rng.usize(..COUNTRIES.len())];
            let at = policy::Instant::from_nanos(rng.i64(start..end) * 1_000_000_000).to_string();
            let mut record = RequestRecord {
                app: Some(policy::AppRecord {
                    platform: platform.to_owned(),
                    id: id.to_owned(),
                }),
                action: action.to_owned(),
                at: at.clone(),
                ..RequestRecord::default()
            };
            let (method, path) = match action {
                "download" => {
                    record.storefront = Some(country.to_owned());
                    (
                        "GET",
                        format!("/v1/apps/{platform}/{id}/download?storefront={country}&at={at}"),
                    )
                }
                "cdn" => {
                    record.server_country = Some(country.to_owned());
                    (
                        "GET",
                        format!("/v1/cdn/{country}/{platform}/{id}/1.0.0?at={at}"),
                    )
                }
                "host" => {
                    record.server_country = Some(country.to_owned());
                    (
                        "POST",
                        format!("/v1/hosting/{country}/{platform}/{id}?at={at}"),
                    )
                }
                _ => {
                    record.billing_country = Some(country.to_owned());
                    (
                        "POST",
                        format!("/v1/payments/{platform}/{id}?payer_country={country}&at={at}"),
                    )
                }
            };
            Generated {
                method,
                path,
                record,
            }
        })
        .collect()
}

/// Checks a store's answer against the engine's decision for the same request: whether
/// the engine denies it, and what differs, if anything.
pub(crate) fn compare(
    record: &RequestRecord,
    policy: &Policy,
    posture: Posture,
    status: u16,
    body: &Value,
) -> (bool, Option<String>) {
    let expected = record
        .clone()
        .into_request()
        .map(|r| policy.decide(&r, posture).to_record());
    match expected {
        Err(e) => (
            false,
            Some(format!("`gatekeeper check` refuses the request: {e}")),
        ),
        Ok(d) if d.decision == "deny" => {
            let want: Vec<&str> = d.reasons.iter().map(|r| r.prohibition.as_str()).collect();
            let got: Vec<&str> = body["reasons"]
                .as_array()
                .map(|r| r.iter().filter_map(|x| x["prohibition"].as_str()).collect())
                .unwrap_or_default();
            (
                true,
                (status != 451 || want != got)
                    .then(|| format!("expected 451 {want:?}, got {status} {got:?}")),
            )
        }
        Ok(d) => (
            false,
            (status != 200).then(|| {
                format!(
                    "expected 200 ({}), got {status}: {body}",
                    d.because.unwrap_or_default()
                )
            }),
        ),
    }
}

/// Measured rounds through each store (gated and ungated), alternating.
pub const ROUNDS: usize = 5;

/// Requests the measured rounds send for a workload of `n`: every round, through the
/// ungated and the gated store.
pub fn requests_sent(n: usize) -> usize {
    2 * ROUNDS * n
}

/// What a load run measured.
#[derive(Clone, Debug, Serialize)]
pub struct LoadReport {
    pub requests: usize,
    pub seed: u64,
    pub concurrency: usize,
    pub denied: usize,
    pub mismatches: Vec<String>,
    pub gated_requests_per_sec: f64,
    pub ungated_requests_per_sec: f64,
    /// How much throughput the gatekeeper layer costs, in percent.
    pub layer_cost_percent: f64,
}

/// Sends every request from `concurrency` keep-alive clients; the answers in order and the
/// requests per second.
pub(crate) async fn drive(
    base: &str,
    work: &Arc<Vec<Generated>>,
    concurrency: usize,
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<(Vec<(u16, bytes::Bytes)>, f64)> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let next = Arc::new(AtomicUsize::new(0));
    let started = Stopwatch::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, work, next, base, progress) = (
                client.clone(),
                work.clone(),
                next.clone(),
                base.to_owned(),
                progress.clone(),
            );
            tokio::spawn(async move {
                let mut answers = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(g) = work.get(i) else { break };
                    let url = format!("{base}{}", g.path);
                    let request = if g.method == "GET" {
                        client.get(url)
                    } else {
                        client.post(url)
                    };
                    let response = request.send().await?;
                    let status = response.status().as_u16();
                    // Parsed after the clock stops: the client's own JSON work is not the store's.
                    let body = response.bytes().await?;
                    answers.push((i, status, body));
                    progress.inc(1);
                }
                anyhow::Ok(answers)
            })
        })
        .collect();
    let mut all = vec![(0u16, Vec::new().into()); work.len()];
    for t in tasks {
        for (i, status, body) in t.await.context("a load client")?? {
            all[i] = (status, body);
        }
    }
    let rate = work.len() as f64 / started.elapsed().as_secs_f64();
    Ok((all, rate))
}

/// Publishes a release of every app of the workload, so that downloads find one.
pub(crate) async fn stock(base: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    for (platform, id) in APPS {
        let body = json!({ "app": { "platform": platform, "id": id }, "version": "1.0.0" });
        let r = client
            .post(format!("{base}/v1/publisher/releases"))
            .json(&body)
            .send()
            .await?;
        anyhow::ensure!(
            r.status().as_u16() == 201,
            "publishing `{id}` failed: {}",
            r.status()
        );
    }
    Ok(())
}

/// Runs the workload five times through a gated store and five times through an ungated
/// one, alternating; cross-checks the gated answers against `policy`; compares the median
/// throughputs. The store and the cross-check decide under the default posture.
pub async fn run(
    policies: &[PathBuf],
    n: usize,
    seed: u64,
    concurrency: usize,
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<LoadReport> {
    run_with_posture(policies, n, seed, concurrency, Posture::default(), progress).await
}

/// [`run`], with the store and the cross-check deciding under `posture`.
pub async fn run_with_posture(
    policies: &[PathBuf],
    n: usize,
    seed: u64,
    concurrency: usize,
    posture: Posture,
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<LoadReport> {
    let dirs = policies.to_vec();
    let policy: Policy =
        tokio::task::spawn_blocking(move || gatekeeper::load_dirs(&dirs).map(|l| l.policy))
            .await?
            .map_err(|d| anyhow::anyhow!("the policies do not load:\n{}", d.render()))?;
    let work = Arc::new(generate(n, seed));
    let config = StoreConfig {
        posture,
        ..StoreConfig::default()
    };
    let ungated = crate::start(
        policies,
        StoreConfig {
            guard: crate::Guard::Off,
            ..config.clone()
        },
    )
    .await?;
    let gated = crate::start(policies, config).await?;
    stock(&ungated.base).await?;
    stock(&gated.base).await?;
    // Warm both stores' connections the same way, then alternate the measured runs so that
    // neither store is favoured by what else the machine is doing at the time.
    let warm = Arc::new(work.iter().take(200).cloned().collect::<Vec<_>>());
    let hidden = indicatif::ProgressBar::hidden();
    drive(&ungated.base, &warm, concurrency, &hidden).await?;
    drive(&gated.base, &warm, concurrency, &hidden).await?;
    let rounds = ROUNDS;
    // The bar counts the measured requests only, timed from the first of them: setup and
    // warm-up neither count nor slow its rate.
    progress.set_length(requests_sent(n) as u64);
    progress.reset();
    let mut ungated_rates = Vec::new();
    let mut gated_rates = Vec::new();
    let mut answers = Vec::new();
    for _ in 0..rounds {
        ungated_rates.push(drive(&ungated.base, &work, concurrency, progress).await?.1);
        let (a, rate) = drive(&gated.base, &work, concurrency, progress).await?;
        gated_rates.push(rate);
        answers = a;
    }
    ungated.stop().await;
    gated.stop().await;
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (ungated_rate, gated_rate) = (median(ungated_rates), median(gated_rates));

    let mut mismatches = Vec::new();
    let mut denied = 0;
    for (i, (g, (status, bytes))) in work.iter().zip(&answers).enumerate() {
        let body: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
        let (deny, problem) = compare(&g.record, &policy, posture, *status, &body);
        denied += usize::from(deny);
        if let Some(p) = problem {
            mismatches.push(format!("request {i}: {} {}: {p}", g.method, g.path));
        }
    }
    Ok(LoadReport {
        requests: n,
        seed,
        concurrency,
        denied,
        mismatches,
        gated_requests_per_sec: gated_rate,
        ungated_requests_per_sec: ungated_rate,
        layer_cost_percent: (ungated_rate - gated_rate) / ungated_rate * 100.0,
    })
}
