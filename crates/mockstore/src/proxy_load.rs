//! The store's throughput through each proxy with and without the authorizer, side by side
//! in one run: what the extra hop to the sidecar costs.
//!
//! One store (behind-a-proxy mode) and one sidecar; in front of them, for each proxy, two
//! processes: the shipped configuration, and the same without its authorizer line. The
//! seeded workload of [`crate::load`] goes through each in turn, round after round, so that
//! none is favoured by what else the machine is doing; the medians are compared. The
//! answers through the authorizer are cross-checked against the policy engine.
//!
//! The sidecar judges at its clock, never at a client's time: the workload's instants are
//! all set to [`INSTANT`] (the clock is set there), rather than drawn from 2020 to mid-2026.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use policy::{Policy, Posture};
use serde::Serialize;
use serde_json::Value;

use crate::load::{Generated, compare, drive, generate, stock};
use crate::proxy::{Proxy, ProxyProcess, backends, start_proxy};
use crate::store::StoreConfig;

/// The instant every request of the workload is judged at: the day the 2020 rule took
/// force, when its prohibitions deny part of the workload.
pub const INSTANT: &str = "2020-09-21T12:00:00Z";

/// Rounds through every target.
pub const ROUNDS: usize = 5;

/// One proxy's throughput with and without the authorizer.
#[derive(Clone, Debug, Serialize)]
pub struct ProxyThroughput {
    pub proxy: Proxy,
    /// Median requests per second through the shipped configuration.
    pub with_authorizer: f64,
    /// Median requests per second through it without the authorizer line.
    pub without_authorizer: f64,
    /// `with_authorizer / without_authorizer`.
    pub ratio: f64,
    /// Every round, in order.
    pub rounds_with: Vec<f64>,
    pub rounds_without: Vec<f64>,
}

/// What a load run through the proxies measured.
#[derive(Clone, Debug, Serialize)]
pub struct ProxyLoadReport {
    pub requests: usize,
    pub seed: u64,
    pub concurrency: usize,
    /// The instant every request was judged at.
    pub at: String,
    pub rounds: usize,
    /// Requests the policy denies at `at` (answered 451 through the authorizer; served
    /// without it).
    pub denied: usize,
    /// Answers through an authorizer that differ from the policy engine's.
    pub mismatches: Vec<String>,
    /// Answers through Caddy that came from the wrong upstream: a check sent to the store,
    /// or the request to the sidecar, each answering 404 `no such route` (Caddy's
    /// `forward_auth` dial race, fixed upstream by caddyserver/caddy#7859). Refused, never
    /// served unjudged; counted apart from the decisions, which they are not.
    pub misrouted: usize,
    /// Median requests per second to the store itself, with nothing in front.
    pub direct: f64,
    pub proxies: Vec<ProxyThroughput>,
}

/// The workload of [`generate`], every request at `at`: the `at` query parameter goes (a
/// proxy never passes a client's time on) and the cross-check judges at `at`.
fn at_instant(mut work: Vec<Generated>, at: &str) -> Vec<Generated> {
    for g in &mut work {
        for marker in ["?at=", "&at="] {
            if let Some(i) = g.path.find(marker) {
                g.path.truncate(i);
            }
        }
        g.record.at = at.to_owned();
    }
    work
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// What the cross-check found through one proxy.
#[derive(Debug, Default)]
struct Checked {
    mismatches: Vec<String>,
    denied: usize,
    misrouted: usize,
}

/// Whether an answer through `proxy` came from the wrong upstream: only Caddy does that
/// (see [`ProxyLoadReport::misrouted`]), and the store and the sidecar both answer a path
/// that is not theirs 404 `no such route`.
fn misrouted(proxy: Proxy, status: u16, body: &Value) -> bool {
    proxy == Proxy::Caddy
        && status == 404
        && *body == serde_json::json!({ "error": "no such route" })
}

/// Compares the answers through an authorizer with the policy's decisions.
fn cross_check(
    proxy: Proxy,
    work: &[Generated],
    answers: &[(u16, bytes::Bytes)],
    policy: &Policy,
    posture: Posture,
) -> Checked {
    let mut checked = Checked::default();
    for (i, (g, (status, bytes))) in work.iter().zip(answers).enumerate() {
        let body: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
        if misrouted(proxy, *status, &body) {
            checked.misrouted += 1;
            continue;
        }
        let (deny, problem) = compare(&g.record, policy, posture, *status, &body);
        checked.denied += usize::from(deny);
        if let Some(p) = problem {
            checked.mismatches.push(format!(
                "{proxy}, request {i}: {} {}: {p}",
                g.method, g.path
            ));
        }
    }
    checked
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// The proxies, each with and without the authorizer.
    pub proxies: Vec<Proxy>,
    /// Requests of the workload, per target and round.
    pub requests: usize,
    pub seed: u64,
    /// Concurrent keep-alive clients.
    pub concurrency: usize,
    /// The sidecar's and the cross-check's posture.
    pub posture: Posture,
}

/// Requests the measured rounds send for `proxies` proxies and a workload of `n`: through
/// each proxy with and without the authorizer, and to the store directly, every round.
pub fn requests_sent(proxies: usize, n: usize) -> usize {
    (2 * proxies + 1) * ROUNDS * n
}

/// Runs the workload through every proxy of `options` with and without the authorizer,
/// and to the store directly, [`ROUNDS`] times in turn; the proxies' configurations are
/// read from `root`.
pub async fn run(
    root: &Path,
    policies: &[PathBuf],
    options: &Options,
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<ProxyLoadReport> {
    let Options {
        requests: n,
        seed,
        concurrency,
        posture,
        ..
    } = *options;
    let proxies = &options.proxies;
    let dirs = policies.to_vec();
    let policy: Policy =
        tokio::task::spawn_blocking(move || gatekeeper::load_dirs(&dirs).map(|l| l.policy))
            .await?
            .map_err(|d| anyhow::anyhow!("the policies do not load:\n{}", d.render()))?;
    let work = Arc::new(at_instant(generate(n, seed), INSTANT));
    let config = StoreConfig {
        posture,
        ..StoreConfig::default()
    };
    let token = config.admin_token.clone();
    let (sidecar, store) = backends(policies, config).await?;
    let result = async {
        let clock = reqwest::Client::new()
            .put(format!("{}/v1/admin/clock", store.base))
            .bearer_auth(&token)
            .json(&serde_json::json!({ "at": INSTANT }))
            .send()
            .await?;
        anyhow::ensure!(
            clock.status().is_success(),
            "setting the store's clock failed: {}",
            clock.status()
        );
        stock(&store.base).await?;
        // Each proxy twice: the shipped configuration, then without the authorizer.
        let mut fronts: Vec<(Proxy, bool, ProxyProcess)> = Vec::new();
        for &proxy in proxies {
            for authorizer in [true, false] {
                let p = start_proxy(proxy, root, sidecar.addr, store.addr, authorizer).await?;
                fronts.push((proxy, authorizer, p));
            }
        }
        let warm = Arc::new(work.iter().take(200).cloned().collect::<Vec<_>>());
        let hidden = indicatif::ProgressBar::hidden();
        drive(&store.base, &warm, concurrency, &hidden).await?;
        for (_, _, p) in &fronts {
            drive(&p.base, &warm, concurrency, &hidden).await?;
        }
        // The bar counts the measured requests only, timed from the first of them: setup
        // and warm-up neither count nor slow its rate.
        progress.set_length(requests_sent(proxies.len(), n) as u64);
        progress.reset();
        let mut direct = Vec::new();
        let mut rates = vec![Vec::new(); fronts.len()];
        let mut answers = vec![Vec::new(); fronts.len()];
        for _ in 0..ROUNDS {
            direct.push(drive(&store.base, &work, concurrency, progress).await?.1);
            for (i, (_, _, p)) in fronts.iter().enumerate() {
                let (a, rate) = drive(&p.base, &work, concurrency, progress).await?;
                rates[i].push(rate);
                answers[i] = a;
            }
        }
        let mut mismatches = Vec::new();
        let mut denied = 0;
        let mut misrouted = 0;
        for (i, (proxy, authorizer, _)) in fronts.iter().enumerate() {
            if *authorizer {
                let checked = cross_check(*proxy, &work, &answers[i], &policy, posture);
                mismatches.extend(checked.mismatches);
                denied = denied.max(checked.denied);
                misrouted += checked.misrouted;
            }
        }
        let mut rows = Vec::new();
        for &proxy in proxies {
            let rounds = |with: bool| {
                fronts
                    .iter()
                    .zip(&rates)
                    .find(|((p, a, _), _)| *p == proxy && *a == with)
                    .map(|(_, r)| r.clone())
                    .unwrap_or_default()
            };
            let (rounds_with, rounds_without) = (rounds(true), rounds(false));
            let (with, without) = (median(rounds_with.clone()), median(rounds_without.clone()));
            rows.push(ProxyThroughput {
                proxy,
                with_authorizer: with,
                without_authorizer: without,
                ratio: if without > 0.0 { with / without } else { 0.0 },
                rounds_with,
                rounds_without,
            });
        }
        let fronts: Vec<ProxyProcess> = fronts.into_iter().map(|(_, _, p)| p).collect();
        let _ = tokio::task::spawn_blocking(move || drop(fronts)).await;
        anyhow::Ok(ProxyLoadReport {
            requests: n,
            seed,
            concurrency,
            at: INSTANT.to_owned(),
            rounds: ROUNDS,
            denied,
            mismatches,
            misrouted,
            direct: median(direct),
            proxies: rows,
        })
    }
    .await;
    store.stop().await;
    let _ = sidecar.shutdown().await;
    result
}

/// The report as Markdown.
pub fn markdown(report: &ProxyLoadReport) -> String {
    let mut out = String::from("# The store behind the proxies\n\n");
    let _ = writeln!(
        out,
        "{} requests (seed {}), {} clients, all judged at {} ({} denied), medians of {} alternating rounds; {} mismatches.\n",
        report.requests,
        report.seed,
        report.concurrency,
        report.at,
        report.denied,
        report.rounds,
        report.mismatches.len()
    );
    out.push_str(
        "| front | requests/s with the authorizer | without | ratio |\n|---|---|---|---|\n",
    );
    for row in &report.proxies {
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.0} | {:.2} |",
            row.proxy, row.with_authorizer, row.without_authorizer, row.ratio
        );
    }
    let _ = writeln!(
        out,
        "| none (the store itself) | | {:.0} | |",
        report.direct
    );
    if report.misrouted > 0 {
        let _ = writeln!(
            out,
            "\n{} answers through Caddy came from the wrong upstream (404 `no such route`: its `forward_auth` dial race, caddyserver/caddy#7859), refused and not counted as decisions.",
            report.misrouted
        );
    }
    for m in report.mismatches.iter().take(20) {
        let _ = writeln!(out, "\n**Mismatch**: {m}");
    }
    out
}

/// Writes `proxies.md` and `proxies.json` in `dir`.
pub fn write(dir: &Path, report: &ProxyLoadReport) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating `{}`", dir.display()))?;
    for (name, text) in [
        ("proxies.md", markdown(report)),
        ("proxies.json", serde_json::to_string_pretty(report)?),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing `{}`", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workload_at_one_instant_sends_no_time() {
        let work = at_instant(generate(200, 7), INSTANT);
        assert!(work.iter().all(|g| !g.path.contains("at=")));
        assert!(work.iter().all(|g| g.record.at == INSTANT));
        assert!(work.iter().any(|g| g.path.contains("storefront=")));
        assert!(work.iter().any(|g| g.path.contains("payer_country=")));
    }
}
