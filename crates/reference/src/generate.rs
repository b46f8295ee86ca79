//! Random policy sets, written as TOML files, and random requests against them.
//!
//! A generated set is a structure first ([`GenPolicy`]) and text second
//! ([`GenPolicy::sources`]), so that a failing case can be shrunk by taking items out
//! and rendering again. Every instant falls between 2019-12-29 and 2020-03-01, before
//! the daylight-saving change, so that local times written with a zone are never
//! skipped or repeated.

use std::fmt::Write as _;

use chrono::{DateTime, Duration, Utc};
use fastrand::Rng;

use policy::model::{ChangeKind, Moment};
use policy::{Action, Instant, Policy, RequestRecord, Signal, Source};

/// Seconds since 2020-01-01T00:00:00Z.
type Secs = i64;

const BASE: i64 = 1_577_836_800;
const HOUR: Secs = 3600;

/// Countries regions are made of (alpha-2, alpha-3).
const COUNTRIES: [(&str, &str); 8] = [
    ("US", "USA"),
    ("PR", "PRI"),
    ("GU", "GUM"),
    ("CA", "CAN"),
    ("MX", "MEX"),
    ("FR", "FRA"),
    ("DE", "DEU"),
    ("CN", "CHN"),
];

const KINDS: [&str; 9] = [
    "executive-order",
    "identification",
    "amendment",
    "court-order",
    "non-enforcement-order",
    "revocation",
    "statute",
    "divestiture",
    "assurance-letter",
];

/// How an instant is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// A TOML offset date-time in UTC: `2020-01-05T03:00:00Z`.
    Utc,
    /// A TOML offset date-time at -05:00.
    Offset,
    /// `"2020-01-04T22:00:00 America/New_York"`.
    NewYork,
    /// `"2020-01-04T19:00:00[America/Los_Angeles]"`.
    LosAngeles,
    /// `"2020-01-05T03:00:00Z"`, as a string.
    UtcString,
}

/// An instant or a window, as the generator writes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenMoment {
    pub earliest: Secs,
    /// Equal to `earliest` for an exact instant.
    pub latest: Secs,
    pub styles: (Style, Style),
}

impl GenMoment {
    fn exact(at: Secs, style: Style) -> GenMoment {
        GenMoment {
            earliest: at,
            latest: at,
            styles: (style, style),
        }
    }

    fn is_window(&self) -> bool {
        self.earliest != self.latest
    }
}

#[derive(Clone, Debug)]
pub struct GenInstrument {
    pub kind: &'static str,
    pub pursuant_to: Vec<usize>,
    pub issued: GenMoment,
}

#[derive(Clone, Debug)]
pub struct GenRegion {
    /// Indices into the country list, with the spelling (alpha-3 or not).
    pub countries: Vec<(usize, bool)>,
    /// The file it is written in: an instrument's, or the common file.
    pub file: Option<usize>,
}

#[derive(Clone, Debug)]
pub struct GenEntity {
    pub parent: Option<usize>,
    /// `("apple" | "google", id)`.
    pub accounts: Vec<(&'static str, String)>,
    pub file: Option<usize>,
}

#[derive(Clone, Debug)]
pub struct GenApp {
    pub owner: usize,
    pub ios: Vec<String>,
    pub android: Vec<String>,
    pub certs: Vec<String>,
    pub codes: Vec<String>,
    pub file: Option<usize>,
}

#[derive(Clone, Debug)]
pub struct GenProhibition {
    pub instrument: usize,
    pub apps: Vec<usize>,
    pub owners: Vec<usize>,
    pub actions: Vec<Action>,
    pub region: usize,
    pub jurisdiction: Option<Vec<Vec<Signal>>>,
    pub effective: GenMoment,
    pub end: Option<GenMoment>,
}

#[derive(Clone, Debug)]
pub enum GenChangeKind {
    Delay {
        effective: GenMoment,
    },
    Injunction {
        from: GenMoment,
        until: Option<GenMoment>,
    },
    NonEnforcement {
        from: GenMoment,
        until: Option<GenMoment>,
    },
    Revocation {
        from: GenMoment,
    },
    Exemption {
        apps: Vec<usize>,
        from: GenMoment,
    },
}

impl GenChangeKind {
    fn table(&self) -> &'static str {
        match self {
            GenChangeKind::Delay { .. } => "delay",
            GenChangeKind::Injunction { .. } => "injunction",
            GenChangeKind::NonEnforcement { .. } => "non-enforcement",
            GenChangeKind::Revocation { .. } => "revocation",
            GenChangeKind::Exemption { .. } => "exemption",
        }
    }
}

#[derive(Clone, Debug)]
pub struct GenChange {
    pub instrument: usize,
    pub kind: GenChangeKind,
    pub prohibitions: Vec<usize>,
    pub instruments: Vec<usize>,
}

/// A generated policy set. Items are `None` once a shrink has taken them out; references
/// to them are dropped when the set is written.
#[derive(Clone, Debug)]
pub struct GenPolicy {
    pub instruments: Vec<Option<GenInstrument>>,
    pub regions: Vec<Option<GenRegion>>,
    pub entities: Vec<Option<GenEntity>>,
    pub apps: Vec<Option<GenApp>>,
    pub prohibitions: Vec<Option<GenProhibition>>,
    pub changes: Vec<Option<GenChange>>,
}

fn chance(rng: &mut Rng, p: f64) -> bool {
    rng.f64() < p
}

fn pick<T: Copy>(rng: &mut Rng, items: &[T]) -> T {
    items[rng.usize(..items.len())]
}

/// A few distinct indices below `n` (at least `min`, when `n` allows).
fn subset(rng: &mut Rng, n: usize, min: usize, max: usize) -> Vec<usize> {
    if n == 0 {
        return Vec::new();
    }
    let count = rng.usize(min.min(n)..=max.min(n));
    let mut all: Vec<usize> = (0..n).collect();
    rng.shuffle(&mut all);
    all.truncate(count);
    all.sort_unstable();
    all
}

fn style(rng: &mut Rng) -> Style {
    pick(
        rng,
        &[
            Style::Utc,
            Style::Utc,
            Style::Offset,
            Style::NewYork,
            Style::LosAngeles,
            Style::UtcString,
        ],
    )
}

/// Flips the letter case of some ASCII letters (at least one when there is one).
pub fn change_case(rng: &mut Rng, text: &str) -> String {
    let letters: Vec<usize> = text
        .char_indices()
        .filter(|(_, c)| c.is_ascii_alphabetic())
        .map(|(i, _)| i)
        .collect();
    if letters.is_empty() {
        return text.to_owned();
    }
    let forced = letters[rng.usize(..letters.len())];
    text.char_indices()
        .map(|(i, c)| {
            if i == forced || (c.is_ascii_alphabetic() && chance(rng, 0.3)) {
                if c.is_ascii_uppercase() {
                    c.to_ascii_lowercase()
                } else {
                    c.to_ascii_uppercase()
                }
            } else {
                c
            }
        })
        .collect()
}

fn hex(rng: &mut Rng) -> String {
    (0..64)
        .map(|_| pick(rng, b"0123456789abcdef".as_slice()) as char)
        .collect()
}

/// A digest as a file or request may write it: lower or upper case, with or without
/// colons.
fn spell_digest(rng: &mut Rng, digest: &str) -> String {
    let d = if chance(rng, 0.3) {
        digest.to_ascii_uppercase()
    } else {
        digest.to_owned()
    };
    if chance(rng, 0.2) {
        d.as_bytes()
            .chunks(2)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join(":")
    } else {
        d
    }
}

fn apple_account(rng: &mut Rng) -> String {
    (0..10)
        .map(|_| pick(rng, b"ABCDEFGHJKLMNPQRSTUVWXYZ0123456789".as_slice()) as char)
        .collect()
}

fn google_account(rng: &mut Rng) -> String {
    let len = rng.usize(4..=19);
    let mut s: String = (0..len)
        .map(|_| pick(rng, b"0123456789".as_slice()) as char)
        .collect();
    if s.starts_with('0') && s.len() > 1 {
        s.replace_range(..1, "7");
    }
    s
}

/// The random choices a policy's instants are drawn from: a few shared instants, so
/// that boundaries often coincide.
struct Clock {
    pool: Vec<Secs>,
}

impl Clock {
    fn new(rng: &mut Rng) -> Clock {
        let pool = (0..rng.usize(3..8))
            .map(|_| rng.i64(0..1200) * HOUR)
            .collect();
        Clock { pool }
    }

    fn instant(&self, rng: &mut Rng) -> Secs {
        if chance(rng, 0.6) {
            pick(rng, &self.pool)
        } else if chance(rng, 0.8) {
            rng.i64(0..1200) * HOUR
        } else {
            rng.i64(0..1200 * 60) * 60
        }
    }

    /// An instant or (one time in four) a window starting at `at`.
    fn moment_at(&self, rng: &mut Rng, at: Secs) -> GenMoment {
        if chance(rng, 0.25) {
            let width = if chance(rng, 0.5) {
                rng.i64(1..48) * HOUR
            } else {
                rng.i64(1..120) * 60
            };
            GenMoment {
                earliest: at,
                latest: at + width,
                styles: (style(rng), style(rng)),
            }
        } else {
            GenMoment::exact(at, style(rng))
        }
    }

    fn moment(&self, rng: &mut Rng) -> GenMoment {
        let at = self.instant(rng);
        self.moment_at(rng, at)
    }

    /// A moment strictly after every reading of `start`.
    fn after(&self, rng: &mut Rng, start: &GenMoment) -> GenMoment {
        let later: Vec<Secs> = self
            .pool
            .iter()
            .copied()
            .filter(|&p| p > start.latest)
            .collect();
        let at = if !later.is_empty() && chance(rng, 0.5) {
            pick(rng, &later)
        } else {
            start.latest + rng.i64(1..200) * HOUR
        };
        self.moment_at(rng, at)
    }
}

/// Draws a policy set.
pub fn policy(rng: &mut Rng) -> GenPolicy {
    let clock = Clock::new(rng);
    let n_instruments = rng.usize(1..=6);
    let instruments: Vec<Option<GenInstrument>> = (0..n_instruments)
        .map(|i| {
            // Made under earlier instruments only: the chain of authority stays acyclic.
            let pursuant_to = if i > 0 && chance(rng, 0.5) {
                subset(rng, i, 1, 2)
            } else {
                Vec::new()
            };
            // Mostly issued early, so that most requests are judged against something.
            let issued = if chance(rng, 0.5) {
                let at = rng.i64(0..300) * HOUR;
                clock.moment_at(rng, at)
            } else {
                clock.moment(rng)
            };
            Some(GenInstrument {
                kind: pick(rng, &KINDS),
                pursuant_to,
                issued,
            })
        })
        .collect();
    let file = |rng: &mut Rng| {
        if chance(rng, 0.3) {
            Some(rng.usize(..n_instruments))
        } else {
            None
        }
    };
    let regions: Vec<Option<GenRegion>> = (0..rng.usize(1..=5))
        .map(|_| {
            Some(GenRegion {
                countries: subset(rng, COUNTRIES.len(), 1, 4)
                    .into_iter()
                    .map(|c| (c, rng.bool()))
                    .collect(),
                file: file(rng),
            })
        })
        .collect();
    let n_entities = rng.usize(1..=5);
    // An account belongs to one entity: the validator refuses a second claim.
    let mut claimed: Vec<String> = Vec::new();
    let entities: Vec<Option<GenEntity>> = (0..n_entities)
        .map(|e| {
            let accounts = (0..rng.usize(0..=2))
                .filter_map(|_| {
                    let (store, id) = if rng.bool() {
                        let id = apple_account(rng);
                        // The file may write a team id in lower case.
                        let id = if chance(rng, 0.2) {
                            id.to_ascii_lowercase()
                        } else {
                            id
                        };
                        ("apple", id)
                    } else {
                        ("google", google_account(rng))
                    };
                    let key = format!("{store}:{}", id.to_ascii_uppercase());
                    if claimed.contains(&key) {
                        None
                    } else {
                        claimed.push(key);
                        Some((store, id))
                    }
                })
                .collect();
            Some(GenEntity {
                parent: if e > 0 && chance(rng, 0.6) {
                    Some(rng.usize(..e))
                } else {
                    None
                },
                accounts,
                file: file(rng),
            })
        })
        .collect();
    let n_apps = rng.usize(1..=6);
    let apps: Vec<Option<GenApp>> = (0..n_apps)
        .map(|a| {
            let vendor = if chance(rng, 0.4) { "Vendor" } else { "vendor" };
            let name = |rng: &mut Rng, platform: &str, i: usize| {
                let base = format!("com.{vendor}{a}.{platform}{i}");
                if chance(rng, 0.3) {
                    change_case(rng, &base)
                } else {
                    base
                }
            };
            let ios: Vec<String> = (0..rng.usize(0..=2)).map(|i| name(rng, "App", i)).collect();
            let android: Vec<String> = (0..rng.usize(0..=2))
                .map(|i| name(rng, "app_x", i))
                .collect();
            let certs: Vec<String> = (0..usize::from(chance(rng, 0.4)))
                .map(|_| {
                    let d = hex(rng);
                    spell_digest(rng, &d)
                })
                .collect();
            let mut codes: Vec<String> = (0..rng.usize(0..=2))
                .map(|_| {
                    let d = hex(rng);
                    spell_digest(rng, &d)
                })
                .collect();
            if ios.is_empty() && android.is_empty() && certs.is_empty() && codes.is_empty() {
                codes.push(hex(rng));
            }
            Some(GenApp {
                owner: rng.usize(..n_entities),
                ios,
                android,
                certs,
                codes,
                file: file(rng),
            })
        })
        .collect();
    // Now and then a wide set: many prohibitions on few apps, so that an app is judged
    // against more jurisdiction tests than the engine indexes.
    let wide = chance(rng, 0.1);
    let n_prohibitions = if wide {
        rng.usize(8..=16)
    } else if chance(rng, 0.05) {
        0
    } else {
        rng.usize(1..=8)
    };
    let prohibitions: Vec<Option<GenProhibition>> = (0..n_prohibitions)
        .map(|_| {
            let mut apps_named = if wide && chance(rng, 0.8) {
                vec![0]
            } else if chance(rng, 0.7) {
                subset(rng, n_apps, 1, 3)
            } else {
                Vec::new()
            };
            let owners = if apps_named.is_empty() || chance(rng, 0.3) {
                subset(rng, n_entities, 1, 2)
            } else {
                Vec::new()
            };
            if apps_named.is_empty() && owners.is_empty() {
                apps_named.push(0);
            }
            let mut actions = vec![Action::Download];
            for a in Action::ALL {
                if chance(rng, 0.3) && !actions.contains(&a) {
                    actions.push(a);
                }
            }
            if chance(rng, 0.2) {
                actions.retain(|a| *a != Action::Download);
                if actions.is_empty() {
                    actions.push(Action::Update);
                }
            }
            let jurisdiction = if chance(rng, if wide { 0.7 } else { 0.35 }) {
                let mut signals = Signal::ALL.to_vec();
                rng.shuffle(&mut signals);
                signals.truncate(rng.usize(1..=5));
                let groups = rng.usize(1..=signals.len().min(3));
                let mut out: Vec<Vec<Signal>> = vec![Vec::new(); groups];
                for (i, s) in signals.into_iter().enumerate() {
                    let g = if i < groups { i } else { rng.usize(..groups) };
                    out[g].push(s);
                }
                Some(out)
            } else {
                None
            };
            let effective = clock.moment(rng);
            let end = chance(rng, 0.3).then(|| clock.after(rng, &effective));
            Some(GenProhibition {
                instrument: rng.usize(..n_instruments),
                apps: apps_named,
                owners,
                actions,
                region: rng.usize(..regions.len()),
                jurisdiction,
                effective,
                end,
            })
        })
        .collect();
    let n_changes = if n_prohibitions == 0 {
        0
    } else {
        rng.usize(0..=8)
    };
    let changes: Vec<Option<GenChange>> = (0..n_changes)
        .map(|_| {
            let relief = |rng: &mut Rng| {
                let from = clock.moment(rng);
                let until = chance(rng, 0.6).then(|| clock.after(rng, &from));
                (from, until)
            };
            let kind = match rng.usize(..5) {
                0 => GenChangeKind::Delay {
                    effective: clock.moment(rng),
                },
                1 => {
                    let (from, until) = relief(rng);
                    GenChangeKind::Injunction { from, until }
                }
                2 => {
                    let (from, until) = relief(rng);
                    GenChangeKind::NonEnforcement { from, until }
                }
                3 => GenChangeKind::Revocation {
                    from: clock.moment(rng),
                },
                _ => GenChangeKind::Exemption {
                    apps: subset(rng, n_apps, 1, 2),
                    from: clock.moment(rng),
                },
            };
            let by_instrument = chance(rng, 0.3);
            let prohibitions_named = if !by_instrument || chance(rng, 0.3) {
                subset(rng, n_prohibitions, 1, 3)
            } else {
                Vec::new()
            };
            let instruments_named = if by_instrument || prohibitions_named.is_empty() {
                subset(rng, n_instruments, 1, 2)
            } else {
                Vec::new()
            };
            Some(GenChange {
                instrument: rng.usize(..n_instruments),
                kind,
                prohibitions: prohibitions_named,
                instruments: instruments_named,
            })
        })
        .collect();
    GenPolicy {
        instruments,
        regions,
        entities,
        apps,
        prohibitions,
        changes,
    }
}

fn datetime(secs: Secs) -> DateTime<Utc> {
    DateTime::<Utc>::UNIX_EPOCH + Duration::seconds(BASE + secs)
}

fn write_instant(secs: Secs, style: Style) -> String {
    let utc = datetime(secs);
    let local = |hours: i64| (utc - Duration::hours(hours)).format("%Y-%m-%dT%H:%M:%S");
    match style {
        Style::Utc => utc.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        Style::Offset => format!("{}-05:00", local(5)),
        // Eastern and Pacific standard time: every generated instant is in winter.
        Style::NewYork => format!("\"{} America/New_York\"", local(5)),
        Style::LosAngeles => format!("\"{}[America/Los_Angeles]\"", local(8)),
        Style::UtcString => format!("\"{}\"", utc.format("%Y-%m-%dT%H:%M:%SZ")),
    }
}

fn write_moment(m: &GenMoment) -> String {
    if m.is_window() {
        format!(
            "{{ earliest = {}, latest = {}, note = \"the record leaves it open\" }}",
            write_instant(m.earliest, m.styles.0),
            write_instant(m.latest, m.styles.1)
        )
    } else {
        write_instant(m.earliest, m.styles.0)
    }
}

/// `["p-0", "p-3"]`, leaving out the items taken out.
fn list<T>(prefix: &str, ids: &[usize], items: &[Option<T>]) -> String {
    let names: Vec<String> = ids
        .iter()
        .filter(|&&i| items.get(i).is_some_and(Option::is_some))
        .map(|i| format!("\"{prefix}-{i}\""))
        .collect();
    format!("[{}]", names.join(", "))
}

fn strings(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("\"{s}\"")).collect();
    format!("[{}]", quoted.join(", "))
}

impl GenPolicy {
    /// The set as policy files: one per instrument, and `common.toml`.
    pub fn sources(&self) -> Vec<(String, String)> {
        let mut files: Vec<String> = vec![String::new(); self.instruments.len()];
        let mut common = String::new();
        for (i, ins) in self.instruments.iter().enumerate() {
            let Some(ins) = ins else { continue };
            let text = &mut files[i];
            let _ = writeln!(
                text,
                "[instrument]\nid = \"ins-{i}\"\nkind = \"{}\"",
                ins.kind
            );
            let _ = writeln!(
                text,
                "title = \"Instrument {i}\"\nauthority = \"Authority\"\ncitation = \"{i} XR 1\"\nsource = \"https://example.org/ins-{i}\""
            );
            if !ins.pursuant_to.is_empty() {
                let _ = writeln!(
                    text,
                    "pursuant_to = {}",
                    list("ins", &ins.pursuant_to, &self.instruments)
                );
            }
            let _ = writeln!(text, "issued = {}", write_moment(&ins.issued));
        }
        // An item may live in an instrument's file, or in the common one when that
        // instrument was taken out.
        let home = |file: Option<usize>| match file {
            Some(f) if self.instruments.get(f).is_some_and(Option::is_some) => Some(f),
            _ => None,
        };
        let mut put = |file: Option<usize>, text: String| match home(file) {
            Some(f) => files[f].push_str(&text),
            None => common.push_str(&text),
        };
        for (i, r) in self.regions.iter().enumerate() {
            let Some(r) = r else { continue };
            let countries: Vec<String> = r
                .countries
                .iter()
                .map(|&(c, alpha3)| {
                    let (a2, a3) = COUNTRIES[c];
                    format!("\"{}\"", if alpha3 { a3 } else { a2 })
                })
                .collect();
            put(
                r.file,
                format!(
                    "\n[[region]]\nid = \"reg-{i}\"\nname = \"Region {i}\"\ncountries = [{}]\n",
                    countries.join(", ")
                ),
            );
        }
        for (i, e) in self.entities.iter().enumerate() {
            let Some(e) = e else { continue };
            let mut text = format!("\n[[entity]]\nid = \"ent-{i}\"\nname = \"Entity {i}\"\n");
            if let Some(p) = e.parent
                && self.entities.get(p).is_some_and(Option::is_some)
            {
                let _ = writeln!(text, "parent = \"ent-{p}\"");
            }
            if !e.accounts.is_empty() {
                let accounts: Vec<String> = e
                    .accounts
                    .iter()
                    .map(|(store, id)| format!("{{ store = \"{store}\", id = \"{id}\" }}"))
                    .collect();
                let _ = writeln!(text, "publisher_accounts = [{}]", accounts.join(", "));
            }
            put(e.file, text);
        }
        for (i, a) in self.apps.iter().enumerate() {
            let Some(a) = a else { continue };
            let mut text = format!(
                "\n[[app]]\nid = \"app-{i}\"\nname = \"App {i}\"\nowner = \"ent-{}\"\n",
                a.owner
            );
            for (key, values) in [
                ("ios", &a.ios),
                ("android", &a.android),
                ("signing_cert_sha256", &a.certs),
                ("code_sha256", &a.codes),
            ] {
                if !values.is_empty() {
                    let _ = writeln!(text, "{key} = {}", strings(values));
                }
            }
            put(a.file, text);
        }
        for (i, p) in self.prohibitions.iter().enumerate() {
            let Some(p) = p else { continue };
            if home(Some(p.instrument)).is_none() {
                continue;
            }
            let text = &mut files[p.instrument];
            let _ = writeln!(text, "\n[[prohibition]]\nid = \"p-{i}\"");
            if !p.apps.is_empty() {
                let _ = writeln!(text, "apps = {}", list("app", &p.apps, &self.apps));
            }
            if !p.owners.is_empty() {
                let _ = writeln!(text, "owners = {}", list("ent", &p.owners, &self.entities));
            }
            let actions: Vec<String> = p.actions.iter().map(|a| format!("\"{a}\"")).collect();
            let _ = writeln!(text, "actions = [{}]", actions.join(", "));
            let _ = writeln!(text, "region = \"reg-{}\"", p.region);
            if let Some(groups) = &p.jurisdiction {
                let groups: Vec<String> = groups
                    .iter()
                    .map(|g| {
                        let names: Vec<String> =
                            g.iter().map(|s| format!("\"{}\"", s.as_str())).collect();
                        format!("[{}]", names.join(", "))
                    })
                    .collect();
                let _ = writeln!(text, "jurisdiction = [{}]", groups.join(", "));
            }
            let _ = writeln!(text, "effective = {}", write_moment(&p.effective));
            if let Some(end) = &p.end {
                let _ = writeln!(text, "end = {}", write_moment(end));
            }
            let _ = writeln!(text, "text = \"Prohibition {i}\"");
        }
        for c in self.changes.iter().flatten() {
            if home(Some(c.instrument)).is_none() {
                continue;
            }
            let text = &mut files[c.instrument];
            let _ = writeln!(text, "\n[[{}]]", c.kind.table());
            if !c.prohibitions.is_empty() {
                let _ = writeln!(
                    text,
                    "prohibitions = {}",
                    list("p", &c.prohibitions, &self.prohibitions)
                );
            }
            if !c.instruments.is_empty() {
                let _ = writeln!(
                    text,
                    "instruments = {}",
                    list("ins", &c.instruments, &self.instruments)
                );
            }
            match &c.kind {
                GenChangeKind::Delay { effective } => {
                    let _ = writeln!(text, "effective = {}", write_moment(effective));
                }
                GenChangeKind::Injunction { from, until }
                | GenChangeKind::NonEnforcement { from, until } => {
                    let _ = writeln!(text, "from = {}", write_moment(from));
                    if let Some(u) = until {
                        let _ = writeln!(text, "until = {}", write_moment(u));
                    }
                }
                GenChangeKind::Revocation { from } => {
                    let _ = writeln!(text, "from = {}", write_moment(from));
                }
                GenChangeKind::Exemption { apps, from } => {
                    let _ = writeln!(text, "apps = {}", list("app", apps, &self.apps));
                    let _ = writeln!(text, "from = {}", write_moment(from));
                }
            }
        }
        let mut out: Vec<(String, String)> = Vec::new();
        if !common.is_empty() {
            out.push(("common.toml".to_owned(), common));
        }
        for (i, text) in files.into_iter().enumerate() {
            if !text.is_empty() {
                out.push((format!("ins-{i}.toml"), text));
            }
        }
        out
    }

    /// Loads the set through the real parser and validator.
    pub fn load(&self) -> Result<Policy, policy::Diagnostics> {
        Policy::from_sources(
            self.sources()
                .into_iter()
                .map(|(name, text)| Source::new(name, text)),
        )
    }

    /// What each change should target, as `(instrument, table, sorted prohibition ids)`,
    /// sorted: "every prohibition made by (or under)" a named instrument, and the named
    /// prohibitions. Compared with the validator's expansion.
    pub fn expected_targets(&self) -> Vec<(String, &'static str, Vec<String>)> {
        let made_under =
            |mut stack: Vec<usize>, root: usize| {
                let mut seen = Vec::new();
                while let Some(i) = stack.pop() {
                    if i == root {
                        return true;
                    }
                    if !seen.contains(&i) {
                        seen.push(i);
                        if let Some(Some(ins)) = self.instruments.get(i) {
                            stack.extend(ins.pursuant_to.iter().filter(|u| {
                                self.instruments.get(**u).is_some_and(Option::is_some)
                            }));
                        }
                    }
                }
                false
            };
        let live_prohibition = |i: usize| {
            self.prohibitions
                .get(i)
                .and_then(Option::as_ref)
                .filter(|p| {
                    self.instruments
                        .get(p.instrument)
                        .is_some_and(Option::is_some)
                })
        };
        let mut out = Vec::new();
        for c in self.changes.iter().flatten() {
            if !self
                .instruments
                .get(c.instrument)
                .is_some_and(Option::is_some)
            {
                continue;
            }
            let mut targets: Vec<usize> = c
                .prohibitions
                .iter()
                .copied()
                .filter(|&p| live_prohibition(p).is_some())
                .collect();
            for &root in &c.instruments {
                if !self.instruments.get(root).is_some_and(Option::is_some) {
                    continue;
                }
                for p in 0..self.prohibitions.len() {
                    if let Some(pr) = live_prohibition(p)
                        && made_under(vec![pr.instrument], root)
                    {
                        targets.push(p);
                    }
                }
            }
            targets.sort_unstable();
            targets.dedup();
            let mut ids: Vec<String> = targets.into_iter().map(|p| format!("p-{p}")).collect();
            ids.sort();
            out.push((format!("ins-{}", c.instrument), c.kind.table(), ids));
        }
        out.sort();
        out
    }
}

/// The validator's expansion of each change's targets, in the shape of
/// [`GenPolicy::expected_targets`].
pub fn loaded_targets(policy: &Policy) -> Vec<(String, &'static str, Vec<String>)> {
    let mut out: Vec<(String, &'static str, Vec<String>)> = policy
        .changes()
        .iter()
        .map(|c| {
            let table = match &c.kind {
                ChangeKind::Delay { .. } => "delay",
                ChangeKind::Relief {
                    relief: policy::model::Relief::Injunction,
                    ..
                } => "injunction",
                ChangeKind::Relief { .. } => "non-enforcement",
                ChangeKind::Revocation { .. } => "revocation",
                ChangeKind::Exemption { .. } => "exemption",
            };
            let mut targets: Vec<String> = c
                .targets
                .iter()
                .map(|&p| policy.prohibitions()[p as usize].id.clone())
                .collect();
            targets.sort();
            (
                policy.instruments()[c.instrument as usize].id.clone(),
                table,
                targets,
            )
        })
        .collect();
    out.sort();
    out
}

/// A generated request, before it is written as JSON.
#[derive(Clone, Debug)]
pub struct GenRequest {
    /// `("ios" | "android", id)`.
    pub app: Option<(&'static str, String)>,
    /// `("apple" | "google", id)`.
    pub publisher: Option<(&'static str, String)>,
    pub cert: Option<String>,
    pub codes: Vec<String>,
    pub action: Action,
    /// Nanoseconds since the Unix epoch.
    pub at: i64,
    pub known_at: Option<i64>,
    /// By [`Signal::ALL`] order.
    pub signals: [Option<String>; 5],
}

impl GenRequest {
    /// The request as JSON would carry it.
    pub fn record(&self) -> RequestRecord {
        let signal = |s: Signal| self.signals[s as usize].clone();
        RequestRecord {
            app: self.app.as_ref().map(|(platform, id)| policy::AppRecord {
                platform: (*platform).to_owned(),
                id: id.clone(),
            }),
            publisher: self
                .publisher
                .as_ref()
                .map(|(store, id)| policy::PublisherRecord {
                    store: (*store).to_owned(),
                    id: id.clone(),
                }),
            action: self.action.as_str().to_owned(),
            at: Instant::from_nanos(self.at).to_string(),
            known_at: self.known_at.map(|k| Instant::from_nanos(k).to_string()),
            storefront: signal(Signal::Storefront),
            device_country: signal(Signal::DeviceCountry),
            ip_country: signal(Signal::IpCountry),
            billing_country: signal(Signal::BillingCountry),
            server_country: signal(Signal::ServerCountry),
            signing_cert_sha256: self.cert.clone(),
            code_sha256: self.codes.clone(),
        }
    }
}

/// Every edge of every instant or window of a loaded policy, in nanoseconds.
pub fn boundaries(policy: &Policy) -> Vec<i64> {
    let mut out = Vec::new();
    let mut add = |m: &Moment| {
        out.push(m.earliest.as_nanos());
        out.push(m.latest.as_nanos());
    };
    for i in policy.instruments() {
        add(&i.issued);
    }
    for p in policy.prohibitions() {
        add(&p.effective);
        if let Some(e) = &p.end {
            add(e);
        }
    }
    for c in policy.changes() {
        match &c.kind {
            ChangeKind::Delay { effective } => add(effective),
            ChangeKind::Relief { from, until, .. } => {
                add(from);
                if let Some(u) = until {
                    add(u);
                }
            }
            ChangeKind::Revocation { from } | ChangeKind::Exemption { from, .. } => add(from),
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

const SECOND: i64 = 1_000_000_000;

/// An instant on or just around a boundary of the policy, or anywhere in its span.
fn request_instant(rng: &mut Rng, boundaries: &[i64]) -> i64 {
    if !boundaries.is_empty() && chance(rng, 0.75) {
        let b = pick(rng, boundaries);
        b + pick(rng, &[0, 0, SECOND, -SECOND, 1, -1])
    } else {
        (BASE + rng.i64(-50 * HOUR..1500 * HOUR)) * SECOND
    }
}

/// Draws a request against a generated policy.
pub fn request(rng: &mut Rng, g: &GenPolicy, boundaries: &[i64]) -> GenRequest {
    let apps: Vec<&GenApp> = g.apps.iter().flatten().collect();
    let accounts: Vec<(&'static str, String)> = g
        .entities
        .iter()
        .flatten()
        .flat_map(|e| e.accounts.iter().cloned())
        .collect();
    let mut app: Option<(&'static str, String)> = None;
    let roll = rng.f64();
    if roll < 0.7 {
        let ids: Vec<(&'static str, &String)> = apps
            .iter()
            .flat_map(|a| {
                a.ios
                    .iter()
                    .map(|i| ("ios", i))
                    .chain(a.android.iter().map(|i| ("android", i)))
            })
            .collect();
        if !ids.is_empty() {
            let (mut platform, id) = pick(rng, &ids);
            // Now and then asked for on the other platform, where it names nothing.
            if chance(rng, 0.05) {
                platform = if platform == "ios" { "android" } else { "ios" };
            }
            let id = if chance(rng, 0.4) {
                change_case(rng, id)
            } else {
                id.clone()
            };
            app = Some((platform, id));
        }
    } else if roll < 0.85 {
        let platform = if rng.bool() { "ios" } else { "android" };
        app = Some((platform, format!("com.unknown.app{}", rng.u8(..4))));
    }
    let publisher = if chance(rng, 0.35) {
        // A store that publishes the app's platform.
        let store = match &app {
            Some(("ios", _)) => "apple",
            Some(_) => "google",
            None => {
                if rng.bool() {
                    "apple"
                } else {
                    "google"
                }
            }
        };
        let known: Vec<&String> = accounts
            .iter()
            .filter(|(s, _)| *s == store)
            .map(|(_, id)| id)
            .collect();
        let id = if !known.is_empty() && chance(rng, 0.8) {
            let id = pick(rng, &known).clone();
            if store == "apple" && chance(rng, 0.3) {
                change_case(rng, &id)
            } else {
                id
            }
        } else if store == "apple" {
            apple_account(rng)
        } else {
            google_account(rng)
        };
        Some((store, id))
    } else {
        None
    };
    let certs: Vec<&String> = apps.iter().flat_map(|a| a.certs.iter()).collect();
    let codes: Vec<&String> = apps.iter().flat_map(|a| a.codes.iter()).collect();
    let digest = |rng: &mut Rng, known: &[&String]| {
        let d = if !known.is_empty() && chance(rng, 0.8) {
            pick(rng, known).replace(':', "").to_ascii_lowercase()
        } else {
            hex(rng)
        };
        spell_digest(rng, &d)
    };
    let mut cert = chance(rng, 0.2).then(|| digest(rng, &certs));
    let mut code = if chance(rng, 0.25) {
        (0..rng.usize(1..=2)).map(|_| digest(rng, &codes)).collect()
    } else {
        Vec::new()
    };
    if app.is_none() && cert.is_none() && code.is_empty() {
        if rng.bool() {
            cert = Some(digest(rng, &certs));
        } else {
            code.push(digest(rng, &codes));
        }
    }
    // Mostly an action some prohibition names.
    let named: Vec<Action> = g
        .prohibitions
        .iter()
        .flatten()
        .flat_map(|p| p.actions.iter().copied())
        .collect();
    let action = if !named.is_empty() && chance(rng, 0.8) {
        pick(rng, &named)
    } else {
        pick(rng, &Action::ALL)
    };
    let mut signals: [Option<String>; 5] = Default::default();
    for slot in signals.iter_mut() {
        if chance(rng, 0.4) {
            *slot = Some(country(rng));
        }
    }
    if signals.iter().all(Option::is_none) {
        signals[rng.usize(..5)] = Some(country(rng));
    }
    let at = request_instant(rng, boundaries);
    let known_at = chance(rng, 0.25).then(|| request_instant(rng, boundaries));
    GenRequest {
        app,
        publisher,
        cert,
        codes: code,
        action,
        at,
        known_at,
        signals,
    }
}

/// A country code as a request may spell it: alpha-2 or alpha-3, any case.
fn country(rng: &mut Rng) -> String {
    let (a2, a3) = if chance(rng, 0.9) {
        pick(rng, &COUNTRIES)
    } else {
        ("JP", "JPN")
    };
    let code = if rng.bool() { a2 } else { a3 };
    if chance(rng, 0.2) {
        code.to_ascii_lowercase()
    } else {
        code.to_owned()
    }
}
