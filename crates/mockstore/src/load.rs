//! A seeded random workload through the store over HTTP, each answer cross-checked against
//! the decision `gatekeeper check` gives for the same request, and what the gatekeeper
//! layer costs the store: its CPU time per request with the layer and without, measured
//! side by side in the same run.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant as Stopwatch};

use anyhow::Context as _;
use policy::{Policy, Posture, RequestRecord};
use serde::Serialize;
use serde_json::{Value, json};

use crate::standalone::{StoreProcess, StoreProgram};
use crate::store::{Guard, StoreConfig};

const APPS: [(&str, &str); 10] = [
    ("android", "com.zhiliaoapp.musically"),
    ("ios", "com.zhiliaoapp.musically"),
    ("android", "com.ss.android.ugc.trill"),
    ("android", "com.zhiliaoapp.musically.go"),
    ("android", "com.lemon.lvoverseas"),
    ("android", "com.bd.nproject"),
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
/// and alpha-3, any case) and instants from 2020 to mid-2026 (past the 2026 divestiture).
pub fn generate(n: usize, seed: u64) -> Vec<Generated> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let start = 1_577_836_800i64; // 2020-01-01T00:00:00Z
    let end = 1_782_864_000i64; // 2026-07-01T00:00:00Z
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

/// Sends every request from `concurrency` keep-alive clients; the answers in order and the
/// requests per second.
pub(crate) async fn drive(
    base: &str,
    work: &Arc<Vec<Generated>>,
    concurrency: usize,
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<(Vec<(u16, bytes::Bytes)>, f64)> {
    drive_with(&client(concurrency)?, base, work, concurrency, progress).await
}

/// A client keeping `concurrency` connections to a store alive.
fn client(concurrency: usize) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?)
}

/// [`drive`] with a client that may already hold connections to the store (kept from
/// round to round, so that no round pays for connecting).
async fn drive_with(
    client: &reqwest::Client,
    base: &str,
    work: &Arc<Vec<Generated>>,
    concurrency: usize,
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<(Vec<(u16, bytes::Bytes)>, f64)> {
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

/// Requests in a measured round. Short rounds, each right after the other store's, see the
/// machine in nearly the same state: on a shared machine, a store's CPU time per request
/// drifts by a third within seconds, and a pair of long rounds would measure the drift.
pub const ROUND: usize = 1_000;

/// Pairs of measured rounds by default (at least one per round of the workload): enough
/// for their median to stand still from run to run on a shared machine.
pub const PAIRS: usize = 100;

/// Requests sent to warm each store up before the measured rounds.
const WARM_UP: usize = 2_000;

/// The pairs a load run of `n` requests measures when asked for `pairs`: at least one per
/// round of the workload, so that every request goes through both stores.
pub fn pairs_for(n: usize, pairs: usize) -> usize {
    pairs.max(n.div_ceil(ROUND)).max(1)
}

/// Requests the measured rounds send for a workload of `n` in `pairs` pairs ([`pairs_for`]):
/// every pair, one round through the store with the layer and one through the store
/// without it.
pub fn requests_sent(n: usize, pairs: usize) -> usize {
    let rounds = n.div_ceil(ROUND).max(1);
    (0..pairs_for(n, pairs))
        .map(|k| 2 * round_len(n, k % rounds))
        .sum()
}

/// Requests in round `r` of a workload of `n`.
fn round_len(n: usize, r: usize) -> usize {
    n.saturating_sub(r * ROUND).min(ROUND)
}

/// Where the two stores of a load run serve.
#[derive(Clone, Debug)]
pub enum Stores {
    /// Each in a process of its own, started from this program ([`StoreProgram`]), the
    /// client outside both: what `cargo xtask simulate` measures with.
    Processes(StoreProgram),
    /// Each on a runtime of its own in this process, whose threads are named apart, so
    /// that each store's CPU time is still its own; the client shares the process and its
    /// cores. For tests, which have no store program to start.
    InProcess,
}

/// How a load run goes.
#[derive(Clone, Debug)]
pub struct Options {
    /// Requests of the workload, sent in rounds of [`ROUND`].
    pub requests: usize,
    pub seed: u64,
    /// Concurrent keep-alive clients.
    pub concurrency: usize,
    /// How both stores and the cross-check decide.
    pub posture: Posture,
    /// Pairs of measured rounds ([`pairs_for`]: at least one per [`ROUND`] requests of the
    /// workload). Pair `k` sends round `k` of the workload, cycling.
    pub pairs: usize,
    pub stores: Stores,
}

/// One measured round through one store: a round of the workload.
#[derive(Clone, Debug, Serialize)]
pub struct Round {
    pub requests_per_sec: f64,
    /// The store's CPU time per request, in microseconds (every thread of the store, while
    /// it answered the round); `None` where it cannot be read (no Linux `/proc`).
    pub cpu_us_per_request: Option<f64>,
}

/// A pair of rounds, one through each store, one right after the other.
#[derive(Clone, Debug, Serialize)]
pub struct Pair {
    /// Whether the store with the layer went first: pairs alternate.
    pub gated_first: bool,
    pub gated: Round,
    pub ungated: Round,
    /// CPU per request with the layer / without.
    pub cpu_ratio: Option<f64>,
    /// Requests per second with the layer / without.
    pub throughput_ratio: f64,
}

/// What a load run measured.
#[derive(Clone, Debug, Serialize)]
pub struct LoadReport {
    pub requests: usize,
    pub seed: u64,
    pub concurrency: usize,
    /// Where the stores served: `processes` or `in-process`.
    pub stores: &'static str,
    /// Requests in a measured round (the last round of the workload may have fewer).
    pub round: usize,
    /// Requests the policy denies (answered 451 by the layer; served without it).
    pub denied: usize,
    /// Answers that differ from `gatekeeper check`'s, or, without the layer, that are not
    /// a 200.
    pub mismatches: Vec<String>,
    /// Every pair, in order.
    pub pairs: Vec<Pair>,
    /// What the layer costs a store: the median of the pairs' CPU ratios (1.10 is 10%
    /// more CPU per request).
    pub cpu_ratio: Option<f64>,
    /// The median of the pairs' throughput ratios.
    pub throughput_ratio: f64,
    /// The median CPU per request of each store, in microseconds.
    pub gated_cpu_us_per_request: Option<f64>,
    pub ungated_cpu_us_per_request: Option<f64>,
}

/// The median; the mean of the middle two of an even count.
fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => values.get(n / 2).copied(),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

/// A store being measured: a process of its own, or a runtime of its own in this one.
enum Target {
    Process(StoreProcess),
    InProcess {
        running: crate::Running,
        runtime: tokio::runtime::Runtime,
        /// The name of every thread of `runtime`.
        thread: &'static str,
    },
}

impl Target {
    async fn start(
        stores: &Stores,
        policies: &[PathBuf],
        guard: Guard,
        posture: Posture,
        thread: &'static str,
    ) -> anyhow::Result<Target> {
        match stores {
            Stores::Processes(program) => Ok(Target::Process(
                StoreProcess::start(program, policies, &guard, posture).await?,
            )),
            Stores::InProcess => {
                let runtime = crate::standalone::store_runtime(Some(thread))?;
                let config = StoreConfig {
                    guard,
                    posture,
                    ..StoreConfig::default()
                };
                let running =
                    crate::start_on(runtime.handle(), policies, config, crate::start_clock()?)
                        .await;
                match running {
                    Ok(running) => Ok(Target::InProcess {
                        running,
                        runtime,
                        thread,
                    }),
                    Err(e) => {
                        runtime.shutdown_background();
                        Err(e)
                    }
                }
            }
        }
    }

    fn base(&self) -> &str {
        match self {
            Target::Process(p) => &p.base,
            Target::InProcess { running, .. } => &running.base,
        }
    }

    /// The store's CPU time so far.
    fn cpu_time(&self) -> Option<Duration> {
        match self {
            Target::Process(p) => p.cpu_time().ok(),
            Target::InProcess { thread, .. } => {
                crate::standalone::cpu_time(std::process::id(), Some(thread)).ok()
            }
        }
    }

    async fn stop(self) {
        match self {
            Target::Process(p) => {
                p.stop().await;
            }
            Target::InProcess {
                running, runtime, ..
            } => {
                running.stop().await;
                runtime.shutdown_background();
            }
        }
    }
}

/// Sends `work` through `target` with `client`, reading the store's CPU time before and
/// after.
async fn round(
    target: &Target,
    client: &reqwest::Client,
    work: &Arc<Vec<Generated>>,
    concurrency: usize,
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<(Vec<(u16, bytes::Bytes)>, Round)> {
    let before = target.cpu_time();
    let (answers, rate) = drive_with(client, target.base(), work, concurrency, progress).await?;
    let after = target.cpu_time();
    let cpu = before
        .zip(after)
        .map(|(b, a)| a.saturating_sub(b).as_secs_f64() * 1e6 / work.len().max(1) as f64);
    Ok((
        answers,
        Round {
            requests_per_sec: rate,
            cpu_us_per_request: cpu,
        },
    ))
}

/// Every answer of each store, with and without the layer, in the workload's order.
type Answers = (Vec<(u16, bytes::Bytes)>, Vec<(u16, bytes::Bytes)>);

/// Stocks and warms both stores the same way, then measures the pairs of rounds,
/// alternating which store goes first, so that neither is favoured by what else the
/// machine is doing at the time. Each store has a client of its own, whose connections
/// stay open from the warm-up to the last round.
async fn measure(
    gated: &Target,
    ungated: &Target,
    work: &[Generated],
    options: &Options,
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<(Vec<Pair>, Answers)> {
    let concurrency = options.concurrency;
    let (to_gated, to_ungated) = (client(concurrency)?, client(concurrency)?);
    stock(gated.base()).await?;
    stock(ungated.base()).await?;
    let warm = Arc::new(work.iter().take(WARM_UP).cloned().collect::<Vec<_>>());
    let hidden = indicatif::ProgressBar::hidden();
    drive_with(&to_ungated, ungated.base(), &warm, concurrency, &hidden).await?;
    drive_with(&to_gated, gated.base(), &warm, concurrency, &hidden).await?;
    let rounds: Vec<Arc<Vec<Generated>>> =
        work.chunks(ROUND).map(|c| Arc::new(c.to_vec())).collect();
    // The bar counts the measured requests only, timed from the first of them: setup and
    // warm-up neither count nor slow its rate.
    progress.set_length(requests_sent(work.len(), options.pairs) as u64);
    progress.reset();
    let mut pairs = Vec::new();
    let mut answers: Vec<Option<Answers>> = vec![None; rounds.len()];
    for k in 0..pairs_for(work.len(), options.pairs) {
        let r = k % rounds.len().max(1);
        let Some(chunk) = rounds.get(r) else { break };
        let gated_first = k % 2 == 0;
        let ((a, g), (b, u)) = if gated_first {
            let g = round(gated, &to_gated, chunk, concurrency, progress).await?;
            let u = round(ungated, &to_ungated, chunk, concurrency, progress).await?;
            (g, u)
        } else {
            let u = round(ungated, &to_ungated, chunk, concurrency, progress).await?;
            let g = round(gated, &to_gated, chunk, concurrency, progress).await?;
            (g, u)
        };
        if let Some(slot) = answers.get_mut(r) {
            slot.get_or_insert((a, b));
        }
        pairs.push(Pair {
            gated_first,
            cpu_ratio: g
                .cpu_us_per_request
                .zip(u.cpu_us_per_request)
                .filter(|&(_, u)| u > 0.0)
                .map(|(g, u)| g / u),
            throughput_ratio: g.requests_per_sec / u.requests_per_sec,
            gated: g,
            ungated: u,
        });
    }
    let (with, without) = answers
        .into_iter()
        .flatten()
        .unzip::<_, _, Vec<_>, Vec<_>>();
    Ok((
        pairs,
        (
            with.into_iter().flatten().collect(),
            without.into_iter().flatten().collect(),
        ),
    ))
}

/// Runs the workload through a store with the layer and the same store without it, in
/// pairs of short rounds ([`ROUND`] requests) in alternating order, each store's CPU time
/// read around every round;
/// cross-checks the answers with the layer against `policy`'s decisions and checks that
/// the store without it served every request. The layer's cost is the median of the
/// pairs' ratios of CPU per request.
pub async fn run(
    policies: &[PathBuf],
    options: &Options,
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<LoadReport> {
    let posture = options.posture;
    let dirs = policies.to_vec();
    let policy: Policy =
        tokio::task::spawn_blocking(move || gatekeeper::load_dirs(&dirs).map(|l| l.policy))
            .await?
            .map_err(|d| anyhow::anyhow!("the policies do not load:\n{}", d.render()))?;
    let work = generate(options.requests, options.seed);
    let stores = &options.stores;
    let gated = Target::start(stores, policies, Guard::Layer, posture, "store-gated").await?;
    let ungated = match Target::start(stores, policies, Guard::Off, posture, "store-ungated").await
    {
        Ok(t) => t,
        Err(e) => {
            gated.stop().await;
            return Err(e);
        }
    };
    let measured = measure(&gated, &ungated, &work, options, progress).await;
    gated.stop().await;
    ungated.stop().await;
    let (pairs, (answers, served)) = measured?;

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
    for (i, (g, (status, _))) in work.iter().zip(&served).enumerate() {
        if *status != 200 {
            mismatches.push(format!(
                "request {i}: {} {}: without the layer, expected 200, got {status}",
                g.method, g.path
            ));
        }
    }
    let cpu = |f: fn(&Pair) -> Option<f64>| -> Option<f64> {
        pairs
            .iter()
            .map(f)
            .collect::<Option<Vec<f64>>>()
            .and_then(median)
    };
    Ok(LoadReport {
        requests: options.requests,
        seed: options.seed,
        concurrency: options.concurrency,
        stores: match stores {
            Stores::Processes(_) => "processes",
            Stores::InProcess => "in-process",
        },
        round: ROUND.min(options.requests),
        denied,
        mismatches,
        cpu_ratio: cpu(|p| p.cpu_ratio),
        throughput_ratio: median(pairs.iter().map(|p| p.throughput_ratio).collect())
            .unwrap_or(f64::NAN),
        gated_cpu_us_per_request: cpu(|p| p.gated.cpu_us_per_request),
        ungated_cpu_us_per_request: cpu(|p| p.ungated.cpu_us_per_request),
        pairs,
    })
}
