//! The requests every engine decides: the warm set (4,000 requests, cycled) and the cold set
//! (every listed app at least once, more distinct requests than apps, in a shuffled order),
//! and the ones only the agreement check adds.

use std::collections::HashMap;
use std::path::Path;

use anyhow::anyhow;
use policy::model::{ChangeKind, Moment};
use policy::{Action, Country, Platform, Policy, Request, Signal};
use serde_json::{Value, json};

use crate::generate::{at, secs};

/// Which requests a row decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cache {
    /// 4,000 requests decided over and over: what a cache holds after a few passes.
    Warm,
    /// At least as many distinct requests as apps (every listed app at least once, one in
    /// eleven for an unlisted app, 4,000 at the least), in a shuffled order, each decided once
    /// per pass.
    Cold,
}

impl Cache {
    pub const ALL: [Cache; 2] = [Cache::Warm, Cache::Cold];

    pub fn as_str(self) -> &'static str {
        match self {
            Cache::Warm => "warm",
            Cache::Cold => "cold",
        }
    }
}

/// The size of the warm set, and the least size of the cold one.
pub const WARM_REQUESTS: usize = 4_000;

/// A request for every engine: ours as the engine takes it, and the resolved app, action,
/// instants and countries for the peers (resolving identifiers is preparation, not timed).
#[derive(Clone, Debug)]
pub struct Prepared {
    pub ours: Request,
    pub app: String,
    pub action: &'static str,
    pub at: i64,
    pub known: i64,
    /// Every country the request carries (alpha-2), each once.
    pub countries: Vec<String>,
    /// The country of each signal carried (alpha-2), in [`Signal::ALL`] order.
    pub signals: Vec<(Signal, String)>,
}

const COUNTRIES: [&str; 14] = [
    "US", "USA", "pr", "PRI", "GU", "VIR", "DE", "FRA", "JP", "KOR", "IN", "CA", "CAN", "GB",
];

/// Both edges of an instant or window.
fn edges(m: &Moment) -> [i64; 2] {
    [secs(m.earliest), secs(m.latest)]
}

/// Every instant the policy names: both edges of every window.
fn named_instants(policy: &Policy) -> Vec<i64> {
    let mut out: Vec<i64> = Vec::new();
    out.extend(policy.instruments().iter().flat_map(|i| edges(&i.issued)));
    for p in policy.prohibitions() {
        out.extend(edges(&p.effective));
        out.extend(p.end.iter().flat_map(edges));
    }
    for c in policy.changes() {
        match &c.kind {
            ChangeKind::Delay { effective } => out.extend(edges(effective)),
            ChangeKind::Relief { from, until, .. } => {
                out.extend(edges(from));
                out.extend(until.iter().flat_map(edges));
            }
            ChangeKind::Revocation { from } | ChangeKind::Exemption { from, .. } => {
                out.extend(edges(from));
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// What the requests of one policy are drawn from.
struct Draw {
    /// Each identifier of the apps requests may name, and its app's id.
    by_id: HashMap<(Platform, String), String>,
    /// The same identifiers, sorted, to draw from with a seed.
    known: Vec<(Platform, String)>,
    /// Every instant the policy names, and the range of the other instants.
    instants: Vec<i64>,
    lo: i64,
    hi: i64,
}

impl Draw {
    /// `covered_only`: only the identifiers of apps a prohibition covers.
    fn new(policy: &Policy, covered_only: bool) -> Draw {
        let mut by_id: HashMap<(Platform, String), String> = HashMap::new();
        let mut covered = vec![!covered_only; policy.apps().len()];
        for p in policy.prohibitions() {
            for &a in &p.covered {
                if let Some(c) = covered.get_mut(a as usize) {
                    *c = true;
                }
            }
        }
        for (app, _) in policy.apps().iter().zip(&covered).filter(|(_, c)| **c) {
            for id in app.android() {
                by_id.insert((Platform::Android, id.to_owned()), app.id().to_owned());
            }
            for id in app.ios() {
                by_id.insert((Platform::Ios, id.to_owned()), app.id().to_owned());
            }
        }
        let mut known: Vec<(Platform, String)> = by_id.keys().cloned().collect();
        known.sort_by(|a, b| (a.0.as_str(), &a.1).cmp(&(b.0.as_str(), &b.1)));
        Draw {
            by_id,
            known,
            // Instants around every edge of every instant the policy names, and across the years.
            instants: named_instants(policy),
            lo: secs(at("2019-06-01T00:00:00Z")),
            hi: secs(at("2026-06-01T00:00:00Z")),
        }
    }

    /// A request for `app` (an identifier; `None`: an app the policy does not list), with
    /// a random action, instants and signals.
    fn request(
        &self,
        rng: &mut fastrand::Rng,
        app: Option<(Platform, String)>,
    ) -> anyhow::Result<Prepared> {
        let (platform, id) = app.unwrap_or_else(|| {
            (
                Platform::Android,
                format!("com.unknown.app{}", rng.u32(..1000)),
            )
        });
        let instant = |s: i64| policy::Instant::from_nanos(s * 1_000_000_000).to_string();
        let action = Action::ALL[rng.usize(..Action::ALL.len())];
        let at_s = if rng.bool() && !self.instants.is_empty() {
            self.instants[rng.usize(..self.instants.len())] + rng.i64(-1..=1)
        } else {
            rng.i64(self.lo..self.hi)
        };
        let known_s = if rng.u8(..5) == 0 {
            Some(rng.i64(self.lo..self.hi))
        } else {
            None
        };
        // Signals: mostly a storefront, the others now and then, so that a group of a
        // jurisdiction test is sometimes carried and sometimes not; never none.
        let mut record = policy::RequestRecord {
            app: Some(policy::AppRecord {
                platform: platform.as_str().to_owned(),
                id: id.clone(),
            }),
            action: action.as_str().to_owned(),
            at: instant(at_s),
            known_at: known_s.map(instant),
            ..Default::default()
        };
        let mut countries = Vec::new();
        let mut signals = Vec::new();
        for signal in Signal::ALL {
            let one_in = match signal {
                Signal::Storefront => 6,
                Signal::DeviceCountry | Signal::ServerCountry => 3,
                Signal::IpCountry | Signal::BillingCountry => 6,
            };
            let carried = if signal == Signal::Storefront {
                rng.u8(..one_in) != 0
            } else {
                rng.u8(..one_in) == 0
            };
            let last = signal == Signal::ServerCountry && signals.is_empty();
            if !(carried || last) {
                continue;
            }
            let code = COUNTRIES[rng.usize(..COUNTRIES.len())];
            let alpha2 = Country::parse(code)?.alpha2().to_owned();
            let slot = match signal {
                Signal::Storefront => &mut record.storefront,
                Signal::DeviceCountry => &mut record.device_country,
                Signal::IpCountry => &mut record.ip_country,
                Signal::BillingCountry => &mut record.billing_country,
                Signal::ServerCountry => &mut record.server_country,
            };
            *slot = Some(code.to_owned());
            if !countries.contains(&alpha2) {
                countries.push(alpha2.clone());
            }
            signals.push((signal, alpha2));
        }
        Ok(Prepared {
            ours: record.into_request()?,
            app: self
                .by_id
                .get(&(platform, id))
                .cloned()
                .unwrap_or_else(|| "unknown".to_owned()),
            action: action.as_str(),
            at: at_s,
            known: known_s.unwrap_or(at_s),
            countries,
            signals,
        })
    }
}

/// `count` requests: for any listed app, or only for apps a prohibition covers
/// (`covered_only`: requests the agreement check adds, so that a large policy, where few
/// apps are covered, is checked on denies too); one in ten names an app the policy does
/// not list.
pub fn requests(
    policy: &Policy,
    count: usize,
    seed: u64,
    covered_only: bool,
) -> anyhow::Result<Vec<Prepared>> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let draw = Draw::new(policy, covered_only);
    (0..count)
        .map(|_| {
            let app = if rng.u8(..10) == 0 || draw.known.is_empty() {
                None
            } else {
                Some(draw.known[rng.usize(..draw.known.len())].clone())
            };
            draw.request(&mut rng, app)
        })
        .collect()
}

/// The cold set: rounds of one request for every listed app (by one of its identifiers,
/// drawn at random) and one for an unlisted app per ten listed, until there are at least
/// [`WARM_REQUESTS`]; then shuffled. Every request is drawn afresh (action, instants,
/// signals), so the set holds at least as many distinct requests as the policy lists apps.
pub fn cold_requests(policy: &Policy, seed: u64) -> anyhow::Result<Vec<Prepared>> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let draw = Draw::new(policy, false);
    let apps: Vec<Vec<(Platform, String)>> = policy
        .apps()
        .iter()
        .map(|a| {
            let android = a.android().map(|i| (Platform::Android, i.to_owned()));
            let ios = a.ios().map(|i| (Platform::Ios, i.to_owned()));
            android.chain(ios).collect()
        })
        .filter(|ids: &Vec<_>| !ids.is_empty())
        .collect();
    let mut out = Vec::new();
    while out.len() < WARM_REQUESTS.max(apps.len()) {
        for (i, ids) in apps.iter().enumerate() {
            let pick = ids[rng.usize(..ids.len())].clone();
            out.push(draw.request(&mut rng, Some(pick))?);
            if i % 10 == 9 {
                out.push(draw.request(&mut rng, None)?);
            }
        }
        if apps.is_empty() {
            out.push(draw.request(&mut rng, None)?);
        }
    }
    rng.shuffle(&mut out);
    Ok(out)
}

/// The signals carried, as `{"storefront": "US", ...}`.
pub fn signals_json(r: &Prepared) -> Value {
    Value::Object(
        r.signals
            .iter()
            .map(|(s, c)| (s.as_str().to_owned(), Value::from(c.as_str())))
            .collect(),
    )
}

/// Writes requests for a child process.
pub fn write(path: &Path, reqs: &[Prepared]) -> anyhow::Result<()> {
    let values: Vec<Value> = reqs
        .iter()
        .map(|r| {
            json!({
                "record": policy::RequestRecord::from(&r.ours),
                "app": r.app, "action": r.action, "at": r.at, "known": r.known, "countries": r.countries,
                "signals": signals_json(r),
            })
        })
        .collect();
    std::fs::write(path, serde_json::to_string(&values)?)?;
    Ok(())
}

/// Reads what [`write`] wrote.
pub fn read(path: &Path) -> anyhow::Result<Vec<Prepared>> {
    let text = std::fs::read_to_string(path)?;
    let values: Vec<Value> = serde_json::from_str(&text)?;
    values
        .into_iter()
        .map(|v| {
            let record: policy::RequestRecord = serde_json::from_value(v["record"].clone())?;
            let action = Action::ALL
                .into_iter()
                .find(|a| Some(a.as_str()) == v["action"].as_str())
                .ok_or_else(|| anyhow!("action"))?;
            Ok(Prepared {
                ours: record.into_request()?,
                app: v["app"].as_str().unwrap_or_default().to_owned(),
                action: action.as_str(),
                at: v["at"].as_i64().unwrap_or_default(),
                known: v["known"].as_i64().unwrap_or_default(),
                countries: v["countries"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c.as_str().map(str::to_owned))
                    .collect(),
                signals: Signal::ALL
                    .into_iter()
                    .filter_map(|s| Some((s, v["signals"][s.as_str()].as_str()?.to_owned())))
                    .collect(),
            })
        })
        .collect()
}
