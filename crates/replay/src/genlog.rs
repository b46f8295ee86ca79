//! A seeded, realistic request log to replay (`cargo xtask gen-log`).
//!
//! Apps are drawn with a popularity skew (Zipf over a pool of made-up apps and every
//! identifier of the apps in the given policies, the covered apps among the most asked
//! for), instants spread over 2020-2025 with more of them near the instants the law
//! turned on, every jurisdiction signal (some requests carry several, some only one),
//! publishers, signing certificates, `known_at`, and a few malformed rows (an unknown
//! platform, action or country, an impossible date, no signal, an empty app id) that a
//! replay must report, not decide. The same rows go to Parquet and to JSON Lines (the
//! `gatekeeper check` format), so that the two can be compared row for row.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, ListBuilder, RecordBatch, StringBuilder};
use policy::{AppRecord, PublisherRecord, RequestRecord};

use crate::schema::{self, Column};

/// What to generate.
#[derive(Clone, Debug)]
pub struct LogSpec {
    pub rows: u64,
    pub seed: u64,
    /// Made-up apps beside the policies' own.
    pub other_apps: usize,
    /// One row in this many is malformed (0: none).
    pub malformed_every: u64,
}

impl Default for LogSpec {
    fn default() -> LogSpec {
        LogSpec {
            rows: 1_000_000,
            seed: 1,
            other_apps: 50_000,
            malformed_every: 997,
        }
    }
}

/// An app a request may name: its platform and id, and the publisher and signing
/// certificate a store would know for it.
#[derive(Clone, Debug)]
struct PoolApp {
    platform: &'static str,
    id: String,
    publisher: Option<(&'static str, String)>,
    cert: Option<String>,
}

/// The generator: deterministic for a seed.
#[derive(Debug)]
pub struct LogGenerator {
    spec: LogSpec,
    rng: fastrand::Rng,
    pool: Vec<PoolApp>,
    /// Cumulative popularity weights of `pool`, for a Zipf draw.
    cumulative: Vec<f64>,
    made: u64,
}

/// Instants where the answers change, in seconds since the epoch: 2020-09-20, 2020-09-27,
/// 2020-11-12, 2020-12-07, 2021-06-09, 2025-01-19, 2025-01-20, 2026-01-22 (most of the
/// log stays in 2020-2025, as the issue of the log asks).
const EDGES: [i64; 8] = [
    1_600_560_000,
    1_601_164_800,
    1_605_139_200,
    1_607_299_200,
    1_623_196_800,
    1_737_244_800,
    1_737_331_200,
    1_769_040_000,
];
/// 2020-01-01 and 2026-01-01.
const FROM: i64 = 1_577_836_800;
const UNTIL: i64 = 1_767_225_600;

/// Countries of the jurisdiction signals, the United States and its territories most.
const COUNTRIES: [(&str, u32); 16] = [
    ("US", 50),
    ("PR", 4),
    ("GU", 2),
    ("VI", 1),
    ("AS", 1),
    ("MP", 1),
    ("UM", 1),
    ("USA", 2),
    ("CN", 6),
    ("GB", 5),
    ("DE", 5),
    ("IN", 5),
    ("CA", 6),
    ("MX", 4),
    ("JP", 4),
    ("FR", 3),
];
const ACTIONS: [(&str, u32); 7] = [
    ("download", 55),
    ("update", 30),
    ("host", 4),
    ("cdn", 4),
    ("peering", 2),
    ("payment", 3),
    ("code-use", 2),
];

impl LogGenerator {
    /// A generator over the apps of `policies` and `spec.other_apps` made-up ones.
    pub fn new(spec: LogSpec, policies: &[&policy::Policy]) -> LogGenerator {
        let mut rng = fastrand::Rng::with_seed(spec.seed);
        let mut pool = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for p in policies {
            for app in p.apps() {
                let cert = app.signing_cert_sha256().next().map(str::to_owned);
                for id in app.ios() {
                    if seen.insert(("ios", id.to_owned())) {
                        let team = app.apple_team_ids().next().map(str::to_owned);
                        pool.push(PoolApp {
                            platform: "ios",
                            id: id.to_owned(),
                            publisher: team.map(|t| ("apple", t)),
                            cert: cert.clone(),
                        });
                    }
                }
                for id in app.android() {
                    if seen.insert(("android", id.to_owned())) {
                        pool.push(PoolApp {
                            platform: "android",
                            id: id.to_owned(),
                            publisher: None,
                            cert: cert.clone(),
                        });
                    }
                }
            }
        }
        // The covered apps first: they are among the most asked for.
        let covered = pool.len();
        for k in 0..spec.other_apps {
            let android = rng.bool();
            let id = if android {
                format!("com.vendor{}.app{k}", k % 97)
            } else {
                format!("com.vendor{}.App{k}", k % 89)
            };
            let publisher = if android {
                (rng.u8(..) < 64).then(|| ("google", format!("{}", 5_000_000_000u64 + k as u64)))
            } else {
                (rng.u8(..) < 128).then(|| ("apple", team_id(&mut rng)))
            };
            let cert = (rng.u8(..) < 32).then(|| hex64(&mut rng));
            pool.push(PoolApp {
                platform: if android { "android" } else { "ios" },
                id,
                publisher,
                cert,
            });
        }
        // Shuffle the made-up apps' ranks, keep the covered ones spread in the top 200.
        let mut order: Vec<usize> = (covered..pool.len()).collect();
        rng.shuffle(&mut order);
        let mut ranked: Vec<PoolApp> = order.iter().map(|&i| pool[i].clone()).collect();
        for (n, app) in pool[..covered].iter().enumerate() {
            let at = (n * 13 + 1).min(ranked.len());
            ranked.insert(at, app.clone());
        }
        let mut cumulative = Vec::with_capacity(ranked.len());
        let mut total = 0.0;
        for rank in 0..ranked.len() {
            total += 1.0 / (rank as f64 + 1.0).powf(1.07);
            cumulative.push(total);
        }
        LogGenerator {
            spec,
            rng,
            pool: ranked,
            cumulative,
            made: 0,
        }
    }

    fn pick<T: Copy>(rng: &mut fastrand::Rng, weighted: &[(T, u32)]) -> T {
        let total: u32 = weighted.iter().map(|w| w.1).sum();
        let mut r = rng.u32(..total);
        for &(v, w) in weighted {
            if r < w {
                return v;
            }
            r -= w;
        }
        weighted[0].0
    }

    fn instant(&mut self) -> i64 {
        let rng = &mut self.rng;
        if rng.u8(..) < 77 {
            // Near an edge: within a day, often to the minute.
            let edge = EDGES[rng.usize(..EDGES.len())];
            let offset = if rng.bool() {
                rng.i64(-120..120) * 60
            } else {
                rng.i64(-86_400..86_400)
            };
            edge + offset
        } else {
            rng.i64(FROM..UNTIL)
        }
    }

    /// The next request of the log.
    pub fn next_record(&mut self) -> RequestRecord {
        self.made += 1;
        let malformed =
            self.spec.malformed_every != 0 && self.made.is_multiple_of(self.spec.malformed_every);
        let x = self.rng.f64() * self.cumulative.last().copied().unwrap_or(1.0);
        let i = self
            .cumulative
            .partition_point(|&c| c < x)
            .min(self.pool.len().saturating_sub(1));
        let app = self.pool[i].clone();
        let at = self.instant();
        let rng = &mut self.rng;
        let mut r = RequestRecord {
            action: Self::pick(rng, &ACTIONS).to_owned(),
            at: rfc3339(at, rng),
            ..RequestRecord::default()
        };
        // The app: by id most of the time; by certificate or publisher alone sometimes.
        let by = rng.u8(..);
        if by < 240 || app.cert.is_none() && app.publisher.is_none() {
            r.app = Some(AppRecord {
                platform: app.platform.to_owned(),
                id: app.id.clone(),
            });
        }
        if let Some((store, id)) = &app.publisher
            && (r.app.is_none() || rng.u8(..) < 96)
        {
            r.publisher = Some(PublisherRecord {
                store: (*store).to_owned(),
                id: id.clone(),
            });
        }
        if let Some(cert) = &app.cert
            && (r.app.is_none() || rng.u8(..) < 64)
        {
            r.signing_cert_sha256 = Some(cert.clone());
        }
        if r.app.is_none() && r.signing_cert_sha256.is_none() {
            r.app = Some(AppRecord {
                platform: app.platform.to_owned(),
                id: app.id.clone(),
            });
        }
        if r.action == "code-use" && rng.u8(..) < 128 {
            r.code_sha256 = vec![hex64(rng)];
        }
        if rng.u8(..) < 20 {
            // Judged as the law was known a while later (or earlier).
            r.known_at = Some(rfc3339(at + rng.i64(-86_400 * 30..86_400 * 400), rng));
        }
        let mut signals = 0;
        while signals == 0 {
            let home = Self::pick(rng, &COUNTRIES);
            let slots = [
                &mut r.storefront,
                &mut r.device_country,
                &mut r.ip_country,
                &mut r.billing_country,
                &mut r.server_country,
            ];
            for slot in slots {
                if rng.u8(..) < 110 {
                    // Mostly the same country; sometimes another.
                    let c = if rng.u8(..) < 230 {
                        home
                    } else {
                        Self::pick(rng, &COUNTRIES)
                    };
                    *slot = Some(c.to_owned());
                    signals += 1;
                }
            }
        }
        if malformed {
            match rng.u8(..6) {
                0 => {
                    if let Some(a) = &mut r.app {
                        a.platform = "windows".to_owned();
                    } else {
                        r.action = "sideload".to_owned();
                    }
                }
                1 => r.action = "sideload".to_owned(),
                2 => r.storefront = Some("ZZ".to_owned()),
                3 => r.at = "2021-02-30T12:00:00Z".to_owned(),
                4 => {
                    r.storefront = None;
                    r.device_country = None;
                    r.ip_country = None;
                    r.billing_country = None;
                    r.server_country = None;
                }
                _ => {
                    r.app = Some(AppRecord {
                        platform: app.platform.to_owned(),
                        id: String::new(),
                    })
                }
            }
        }
        r
    }

    /// The next `n` requests.
    pub fn next_records(&mut self, n: usize) -> Vec<RequestRecord> {
        (0..n).map(|_| self.next_record()).collect()
    }
}

/// Requests as a batch of the request columns ([`schema::requests`]).
pub fn batch_of(records: &[RequestRecord]) -> RecordBatch {
    let n = records.len();
    let mut columns: Vec<StringBuilder> = (0..schema::TEXT_COLUMNS.len())
        .map(|_| StringBuilder::with_capacity(n, n * 12))
        .collect();
    let mut codes = ListBuilder::new(StringBuilder::new());
    for r in records {
        for (builder, column) in columns.iter_mut().zip(schema::TEXT_COLUMNS) {
            builder.append_option(column.of(r));
        }
        if r.code_sha256.is_empty() {
            codes.append_null();
        } else {
            for c in &r.code_sha256 {
                codes.values().append_value(c);
            }
            codes.append(true);
        }
    }
    let mut arrays: Vec<ArrayRef> = columns
        .iter_mut()
        .map(|b| Arc::new(b.finish()) as ArrayRef)
        .collect();
    arrays.push(Arc::new(codes.finish()));
    // The arrays match the schema by construction: same columns, same types.
    #[allow(clippy::expect_used)]
    RecordBatch::try_new(schema::requests(), arrays).expect("request columns")
}

impl Column {
    /// The column's value in a request record.
    pub fn of(self, r: &RequestRecord) -> Option<&str> {
        self.of_ref(&r.borrowed())
    }
}

fn hex64(rng: &mut fastrand::Rng) -> String {
    (0..4).map(|_| format!("{:016x}", rng.u64(..))).collect()
}

fn team_id(rng: &mut fastrand::Rng) -> String {
    (0..10)
        .map(|_| {
            let d = rng.u8(..36);
            char::from(if d < 10 { b'0' + d } else { b'A' + d - 10 })
        })
        .collect()
}

/// An instant as RFC 3339: mostly UTC with `Z`, sometimes with an offset or fractions, as
/// requests spell them.
fn rfc3339(seconds: i64, rng: &mut fastrand::Rng) -> String {
    use chrono::{TimeZone as _, Utc};
    let utc = Utc
        .timestamp_opt(seconds, 0)
        .single()
        .unwrap_or_else(|| Utc.timestamp_opt(FROM, 0).single().unwrap_or_default());
    match rng.u8(..16) {
        0 => format!(
            "{}+08:00",
            (utc + chrono::Duration::hours(8)).format("%Y-%m-%dT%H:%M:%S")
        ),
        1 => format!(
            "{}.{:03}Z",
            utc.format("%Y-%m-%dT%H:%M:%S"),
            rng.u32(..1000)
        ),
        _ => utc.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
    }
}
