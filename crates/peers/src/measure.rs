//! One engine and policy in a process of its own: the load in phases, the peak memory of the
//! load, and the decisions on the warm and the cold request sets.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant as Clock};

use anyhow::bail;
use policy::Source;
use serde_json::{Value, json};

use crate::engines::{Cedar, Engine, IMAGE, Load, Ours, Rego, Texts};
use crate::generate::{Case, root};
use crate::requests::{self, Cache, Prepared};

/// How long single calls are timed, per request set.
const CALLS_BUDGET: Duration = Duration::from_secs(2);
/// How long whole passes are timed, per request set; a pass is cut to the requests that fit
/// in this time when one pass over the whole set would take longer (the slow peers at 1,000
/// prohibitions).
const PASS_BUDGET: Duration = Duration::from_secs(1);

pub fn inputs_dir(case: Case) -> PathBuf {
    root().join("target/bench/inputs").join(case.label())
}

pub fn requests_file(case: Case, cache: Cache) -> PathBuf {
    inputs_dir(case).join(format!("requests-{}.json", cache.as_str()))
}

/// Writes what each engine of one policy loads, for the child processes. Gatekeeper's files
/// are numbered so that they are read back in their load order; its compiled image is
/// `policy.image` beside them.
pub fn write_inputs(case: Case, texts: &Texts) -> anyhow::Result<()> {
    let dir = inputs_dir(case);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("gatekeeper"))?;
    for (i, s) in texts.sources.iter().enumerate() {
        let name = Path::new(&s.name)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        std::fs::write(
            dir.join("gatekeeper").join(format!("{i:05}-{name}")),
            &s.text,
        )?;
    }
    std::fs::write(dir.join("policy.image"), &texts.image)?;
    std::fs::write(dir.join("policies.cedar"), &texts.cedar_policies)?;
    std::fs::write(dir.join("entities.json"), &texts.cedar_entities)?;
    std::fs::write(dir.join("data.json"), &texts.rego_data)?;
    Ok(())
}

fn read_sources(dir: &Path) -> anyhow::Result<Vec<Source>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| Ok(e?.path()))
        .collect::<anyhow::Result<_>>()?;
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            Ok(Source::new(
                p.display().to_string(),
                std::fs::read_to_string(&p)?,
            ))
        })
        .collect()
}

fn proc_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// One engine and policy, in a fresh process: prints one JSON line per request set.
pub fn child(engine: &str, case: Case) -> anyhow::Result<()> {
    // Read the engine's input first, so that only the load counts; the requests after the
    // load, so that the memory they take and give back is not reused by the load (which
    // would then not grow the resident set as it does in a process that only loads).
    let dir = inputs_dir(case);
    let read = |name: &str| std::fs::read_to_string(dir.join(name));
    match engine {
        "gatekeeper" => {
            let sources = read_sources(&dir.join("gatekeeper"))?;
            run(|| Ours::load(sources.clone()), case)
        }
        IMAGE => {
            let image = std::fs::read(dir.join("policy.image"))?;
            load_only(|| Ours::from_image(&image))
        }
        "cedar" => {
            let (policies, entities) = (read("policies.cedar")?, read("entities.json")?);
            let schema = std::fs::read_to_string(
                root().join("crates/peers/encodings/gatekeeper.cedarschema"),
            )?;
            run(|| Cedar::load(&policies, &entities, &schema), case)
        }
        "regorus" => {
            let rego =
                std::fs::read_to_string(root().join("crates/peers/encodings/gatekeeper.rego"))?;
            let data = read("data.json")?;
            run(|| Rego::load(&rego, &data), case)
        }
        other => bail!("unknown engine `{other}`"),
    }
}

/// The load: the engine, the load of median total time, and the peak MB of the first load.
fn measure_load<E: Engine>(
    load: impl Fn() -> anyhow::Result<(E, Load)>,
) -> anyhow::Result<(E, Load, f64)> {
    // Reset the peak resident size (Linux: `5` to clear_refs), then load.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let base_kb = proc_kb("VmRSS:");
    let (e, first) = load()?;
    let peak_mb = proc_kb("VmHWM:").saturating_sub(base_kb) as f64 / 1024.0;
    // Every engine's load is timed again: three loads, or five while a second lasts, and
    // the load of median total time reported, so that one slow load (the machine is
    // shared) does not stand for the engine. The peak is the first load's.
    let mut loads = vec![first];
    let started = Clock::now();
    while loads.len() < 3
        || (loads.len() < 5 && started.elapsed() < Duration::from_secs(1))
        || loads.len() % 2 == 0
    {
        loads.push(load()?.1);
    }
    loads.sort_by(|a, b| a.total_ms().total_cmp(&b.total_ms()));
    Ok((e, loads[loads.len() / 2], peak_mb))
}

/// The load's fields of a row.
fn load_fields(load: &Load, peak_mb: f64) -> Value {
    json!({
        "load_ms": load.total_ms(),
        "load_parse_ms": load.parse_ms,
        "load_validate_ms": load.validate_ms,
        "load_compile_ms": load.compile_ms,
        "load_validate_compile_ms": load.validate_compile_ms,
        "load_image_ms": load.image_ms,
        "peak_mb": peak_mb,
    })
}

/// The load alone: one JSON line, with no request set.
fn load_only<E: Engine>(load: impl Fn() -> anyhow::Result<(E, Load)>) -> anyhow::Result<()> {
    let (_, load, peak_mb) = measure_load(load)?;
    println!("{}", load_fields(&load, peak_mb));
    Ok(())
}

fn run<E: Engine>(load: impl Fn() -> anyhow::Result<(E, Load)>, case: Case) -> anyhow::Result<()> {
    let (mut e, load, peak_mb) = measure_load(load)?;
    let sets: Vec<(Cache, Vec<Prepared>)> = Cache::ALL
        .into_iter()
        .map(|c| Ok((c, requests::read(&requests_file(case, c))?)))
        .collect::<anyhow::Result<_>>()?;
    for (cache, reqs) in &sets {
        let inputs: Vec<E::Input> = reqs
            .iter()
            .map(|r| e.prepare(r))
            .collect::<anyhow::Result<_>>()?;
        let t = time(&mut e, reqs, &inputs)?;
        let mut row = json!({
            "cache": cache.as_str(),
            "requests": inputs.len(),
            "median_ns": t.median_ns,
            "median_just_read_ns": t.median_just_read_ns,
            "p99_ns": t.p99_ns,
            "ns_per_decision_pass": t.pass_ns,
            "pass_decisions": t.pass_decisions,
            "passes": t.passes,
            "decisions_timed": t.timed,
            "timer_ns": t.timer_ns,
        });
        if let (Some(row), Value::Object(fields)) =
            (row.as_object_mut(), load_fields(&load, peak_mb))
        {
            row.extend(fields);
        }
        println!("{row}");
        drop(inputs);
    }
    Ok(())
}

struct Timing {
    median_ns: f64,
    median_just_read_ns: f64,
    p99_ns: f64,
    timed: usize,
    timer_ns: f64,
    pass_ns: f64,
    pass_decisions: usize,
    passes: usize,
}

/// Single calls (each timed, the timer's own cost taken off) on the requests prepared
/// beforehand (in a cold set, the requests' own bytes are cold in memory too); single
/// calls again, each on a request prepared for the engine just before it (untimed), as a
/// store decides a request it has just read; then whole passes over the requests prepared
/// beforehand (one clock reading at each end: what a pass costs, divided by its
/// decisions).
fn time<E: Engine>(
    e: &mut E,
    prepared: &[Prepared],
    inputs: &[E::Input],
) -> anyhow::Result<Timing> {
    let warm_up = Clock::now();
    for i in inputs.iter().take(200) {
        black_box(e.allows(i)?);
        if warm_up.elapsed() > Duration::from_millis(300) {
            break;
        }
    }
    let mut timer = Vec::with_capacity(1_000);
    for _ in 0..1_000 {
        let t = Clock::now();
        timer.push(t.elapsed().as_nanos() as f64);
    }
    timer.sort_by(f64::total_cmp);
    let timer_ns = timer[timer.len() / 2];

    let samples = single_calls(e, timer_ns, inputs.len(), |e, k| timed(e, &inputs[k]))?;
    let mean = samples.iter().sum::<f64>() / samples.len() as f64;

    // Each request just read. The request before is kept until this one is timed, so that
    // an engine keeping its last input (regorus does) does not free it inside the timing.
    let mut before: Option<E::Input> = None;
    let just_read = single_calls(e, timer_ns, prepared.len(), |e, k| {
        let input = e.prepare(&prepared[k])?;
        let done = timed(e, &input)?;
        before = Some(input);
        Ok(done)
    })?;
    drop(before);

    let fit = (PASS_BUDGET.as_nanos() as f64 / mean.max(1.0)) as usize;
    let pass = &inputs[..fit.max(100).min(inputs.len())];
    let started = Clock::now();
    let mut passes = 0;
    let mut allowed = 0usize;
    loop {
        for i in pass {
            allowed += usize::from(e.allows(i)?);
        }
        passes += 1;
        if started.elapsed() >= PASS_BUDGET {
            break;
        }
    }
    let elapsed = started.elapsed();
    black_box(allowed);
    Ok(Timing {
        median_ns: samples[samples.len() / 2],
        median_just_read_ns: just_read[just_read.len() / 2],
        p99_ns: samples[(samples.len() - 1) * 99 / 100],
        timed: samples.len(),
        timer_ns,
        pass_ns: elapsed.as_nanos() as f64 / (passes * pass.len()) as f64,
        pass_decisions: pass.len(),
        passes,
    })
}

/// One decision, timed: its nanoseconds (the timer's own cost not yet taken off) and when
/// it ended.
fn timed<E: Engine>(e: &mut E, input: &E::Input) -> anyhow::Result<(f64, Clock)> {
    let t = Clock::now();
    let allowed = e.allows(input)?;
    let done = Clock::now();
    black_box(allowed);
    Ok(((done - t).as_nanos() as f64, done))
}

/// Single calls, `call(e, k)` for the requests `0..len` in turn, round after round, until
/// [`CALLS_BUDGET`] is spent (and at least 200 are timed, at most 50 rounds): their
/// nanoseconds, the timer's own cost taken off, sorted.
fn single_calls<E: Engine>(
    e: &mut E,
    timer_ns: f64,
    len: usize,
    mut call: impl FnMut(&mut E, usize) -> anyhow::Result<(f64, Clock)>,
) -> anyhow::Result<Vec<f64>> {
    let started = Clock::now();
    let mut samples = Vec::new();
    'calls: for _ in 0..50 {
        for k in 0..len {
            let (ns, done) = call(e, k)?;
            samples.push((ns - timer_ns).max(1.0));
            if done.duration_since(started) > CALLS_BUDGET && samples.len() >= 200 {
                break 'calls;
            }
        }
    }
    samples.sort_by(f64::total_cmp);
    Ok(samples)
}

/// What `--compare` decides, and how often.
#[derive(Debug, Clone)]
pub struct Compare {
    /// Rounds, each a few passes over each set with each policy (`--rounds`).
    pub rounds: usize,
    /// The first this many requests of each set (`--requests`).
    pub requests: usize,
    /// Those requests, each repeated in turn up to this many, then shuffled with a fixed
    /// seed (`--shuffled-into`): few requests, whose data stays in the first-level cache,
    /// in an order the processor's branch predictor cannot learn, where a short set
    /// decided over and over in the same order is one it learns.
    pub shuffled_into: Option<usize>,
    /// Only the requests that carry no `known_at` (`--without-known-at`), before the
    /// first `requests` are taken: the default path without judgements in hindsight.
    pub without_known_at: bool,
}

impl Default for Compare {
    fn default() -> Compare {
        Compare {
            rounds: 100,
            requests: usize::MAX,
            shuffled_into: None,
            without_known_at: false,
        }
    }
}

/// `--compare A B [--rounds N] [--requests K] [--shuffled-into M] [--without-known-at]`:
/// Gatekeeper on two policies in one process, whole passes over each policy's warm and
/// cold request sets (their first `K` requests; see [`Compare`]), the two policies in
/// turn, round after round; the median nanoseconds per decision of each, and the median of
/// the rounds' ratios (B over A). Side by side, the ratio holds where a shared machine
/// moves the absolute figures; fewer requests tell what a decision costs once its data is
/// in the processor's caches from what it costs to fetch it, and the same few shuffled
/// into many what the processor's wrong guesses at branches cost. Reads the inputs a run
/// (or `--only A B`) wrote under `target/bench/inputs`.
pub fn compare(a: Case, b: Case, how: &Compare) -> anyhow::Result<()> {
    const PASSES: usize = 5;
    let load = |case: Case| -> anyhow::Result<(Ours, Vec<Vec<policy::Request>>)> {
        let dir = inputs_dir(case);
        let (engine, _) = Ours::load(read_sources(&dir.join("gatekeeper"))?)?;
        let sets = Cache::ALL
            .iter()
            .map(|&cache| {
                let set = requests::read(&requests_file(case, cache))?;
                let first: Vec<policy::Request> = set
                    .into_iter()
                    .map(|p| p.ours)
                    .filter(|r| !how.without_known_at || r.known_at().is_none())
                    .take(how.requests)
                    .collect();
                Ok(match how.shuffled_into {
                    Some(m) if !first.is_empty() => {
                        let mut many: Vec<policy::Request> = first
                            .iter()
                            .cycle()
                            .take(m.max(first.len()))
                            .cloned()
                            .collect();
                        fastrand::Rng::with_seed(7).shuffle(&mut many);
                        many
                    }
                    _ => first,
                })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok((engine, sets))
    };
    let mut both = [load(a)?, load(b)?];
    // Per policy, per request set: nanoseconds per decision of each round.
    let mut ns = vec![vec![Vec::with_capacity(how.rounds); Cache::ALL.len()]; 2];
    for _ in 0..how.rounds.max(1) {
        for ((engine, sets), ns) in both.iter_mut().zip(&mut ns) {
            for (set, ns) in sets.iter().zip(ns.iter_mut()) {
                // The set's start again, so that the pass finds the policy's data as the
                // set leaves it, not as the other policy's passes left the caches.
                for r in set.iter().take(500) {
                    black_box(engine.allows(r)?);
                }
                let t = Clock::now();
                let mut allowed = 0usize;
                for _ in 0..PASSES {
                    for r in set {
                        allowed += usize::from(engine.allows(r)?);
                    }
                }
                black_box(allowed);
                ns.push(t.elapsed().as_nanos() as f64 / (PASSES * set.len().max(1)) as f64);
            }
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    for (k, cache) in Cache::ALL.iter().enumerate() {
        let (x, y) = (&ns[0][k], &ns[1][k]);
        let ratios = x.iter().zip(y).map(|(x, y)| y / x).collect();
        println!(
            "{} {}: {:.1} vs {:.1} ns per decision (medians of {} rounds), median ratio {:.2}",
            cache.as_str(),
            both[0].1[k].len(),
            median(x.clone()),
            median(y.clone()),
            x.len(),
            median(ratios)
        );
    }
    Ok(())
}
