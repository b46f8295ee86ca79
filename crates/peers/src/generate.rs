//! The policies every engine is given: the shipped sets, and generated ones along two axes,
//! covered apps (10, 1,000, 100,000) and prohibitions (the base six, 10, 100, 1,000).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::anyhow;
use policy::{Action, Policy, Source};

/// The prohibitions of the base generated policy (see [`base`]).
pub const BASE_PROHIBITIONS: usize = 6;

/// One policy of the run: the shipped sets (`apps: None`), or a generated policy with
/// `apps` covered apps and `prohibitions` prohibitions (`None`: the base six).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Case {
    pub apps: Option<usize>,
    pub prohibitions: Option<usize>,
    /// How many requests of the cold set the agreement check decides with every engine (the
    /// whole set where that is cheap; a prefix of the shuffled set, a uniform sample, where
    /// a peer takes milliseconds a decision).
    pub check_cold: usize,
}

/// Every policy of the run, in the order of the report. The prohibitions axis is taken at
/// 1,000 apps (10, 100, 1,000) and at 100,000 apps (1,000 only), to keep the peers' step
/// of `cargo xtask bench` within about ten minutes on a 2-core machine.
pub const CASES: [Case; 8] = [
    Case::new(None, None, usize::MAX),
    Case::new(Some(10), None, usize::MAX),
    Case::new(Some(1_000), None, usize::MAX),
    Case::new(Some(1_000), Some(10), usize::MAX),
    Case::new(Some(1_000), Some(100), usize::MAX),
    Case::new(Some(1_000), Some(1_000), 1_000),
    Case::new(Some(100_000), None, 20_000),
    Case::new(Some(100_000), Some(1_000), 1_000),
];

impl Case {
    const fn new(apps: Option<usize>, prohibitions: Option<usize>, check_cold: usize) -> Case {
        Case {
            apps,
            prohibitions,
            check_cold,
        }
    }

    /// A name for folders and command lines: `shipped`, `1000`, `1000x100`.
    pub fn label(&self) -> String {
        match (self.apps, self.prohibitions) {
            (None, _) => "shipped".to_owned(),
            (Some(n), None) => n.to_string(),
            (Some(n), Some(p)) => format!("{n}x{p}"),
        }
    }

    pub fn from_label(label: &str) -> anyhow::Result<Case> {
        CASES
            .into_iter()
            .find(|c| c.label() == label)
            .ok_or_else(|| anyhow!("unknown policy `{label}`"))
    }

    /// The policy's files, as Gatekeeper loads them.
    pub fn sources(&self) -> anyhow::Result<Vec<Source>> {
        match self.apps {
            None => shipped_sources(),
            Some(n) => Ok(generated(n, self.prohibitions.unwrap_or(BASE_PROHIBITIONS))),
        }
    }

    /// The policy model, from which the peers' encodings and the requests are made.
    pub fn model(&self) -> anyhow::Result<Policy> {
        Policy::from_sources(self.sources()?).map_err(|d| anyhow!("{}", d.render()))
    }
}

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Seconds since the epoch, rounded up: a request at whole second `t` is at or after an
/// instant `i` exactly when `t >= secs(i)`, so that the peers' comparisons are exact.
pub fn secs(i: policy::Instant) -> i64 {
    let n = i.as_nanos();
    n.div_euclid(1_000_000_000) + i64::from(n.rem_euclid(1_000_000_000) != 0)
}

pub fn at(s: &str) -> policy::Instant {
    policy::Instant::parse_rfc3339(s).unwrap_or(policy::Instant::MIN)
}

/// A whole second as a TOML datetime.
fn toml_at(s: i64) -> String {
    policy::Instant::from_nanos(s * 1_000_000_000).to_string()
}

fn window(earliest: &str, latest: &str) -> String {
    format!("{{ earliest = {earliest}, latest = {latest}, note = \"no hour in the record\" }}")
}

fn instrument(id: &str, kind: &str, issued: &str) -> String {
    format!(
        "[instrument]\nid = \"{id}\"\nkind = \"{kind}\"\ntitle = \"{id}\"\nauthority = \"A\"\ncitation = \"{id}\"\nsource = \"https://example.org/{id}\"\nissued = {issued}\n\n"
    )
}

/// The shipped sets, every file under `policies/` that they load (each read once), in
/// Gatekeeper's load order: files, not folders, so that the load can be timed without
/// the file system.
pub fn shipped_sources() -> anyhow::Result<Vec<Source>> {
    let dirs: Vec<PathBuf> = ["us-2020", "us-2020-courts", "us-2024-pafaca"]
        .iter()
        .map(|s| root().join("policies").join(s))
        .collect();
    let loaded = gatekeeper::load_dirs(&dirs).map_err(|d| anyhow!("{}", d.render()))?;
    Ok(loaded
        .files
        .iter()
        .zip(loaded.texts)
        .map(|(path, text)| Source::new(path.display().to_string(), text))
        .collect())
}

/// A policy with `n` covered apps and `prohibitions` prohibitions: the base policy (six
/// prohibitions, see [`base`]), and beyond six, orders of ten prohibitions each with the
/// changes later instruments make to them (see [`orders`]).
pub fn generated(n: usize, prohibitions: usize) -> Vec<Source> {
    let roots = (n / 20).max(3);
    let mut files = base(n, roots);
    files.extend(orders(
        n,
        roots,
        prohibitions.saturating_sub(BASE_PROHIBITIONS),
    ));
    files
}

/// The base policy with `n` covered apps: owners with subsidiaries, apps with several
/// identifiers each, and instruments with prohibitions by app and by owner (one with two
/// jurisdiction groups, one with one), two delays, an injunction, non-enforcement orders, an
/// exemption of named apps, an end and a revocation; several instants are windows.
fn base(n: usize, roots: usize) -> Vec<Source> {
    let mut common = String::from(
        "[[region]]\nid = \"US\"\nname = \"US and territories\"\ncountries = [\"US\", \"PR\", \"GU\", \"VI\", \"AS\", \"MP\", \"UM\"]\n\n\
         [[region]]\nid = \"EU\"\nname = \"Part of Europe\"\ncountries = [\"DE\", \"FR\", \"IT\", \"ES\", \"NL\"]\n\n\
         [[region]]\nid = \"ASIA\"\nname = \"Part of Asia\"\ncountries = [\"JP\", \"KR\", \"IN\"]\n\n",
    );
    for r in 0..roots {
        let _ = write!(
            common,
            "[[entity]]\nid = \"owner-{r}\"\nname = \"Owner {r}\"\n\n"
        );
        for s in 0..2 {
            let _ = write!(
                common,
                "[[entity]]\nid = \"owner-{r}-{s}\"\nname = \"Owner {r} {s}\"\nparent = \"owner-{r}\"\n\n"
            );
        }
    }
    for a in 0..n {
        let _ = write!(
            common,
            "[[app]]\nid = \"app-{a}\"\nname = \"App {a}\"\nowner = \"{}\"\nios = [\"com.example.ios.app{a}\"]\nandroid = [\"com.example.app{a}\", \"com.example.app{a}.lite\"]\nsigning_cert_sha256 = [\"{:064x}\"]\n\n",
            owner_of(a, roots),
            a + 1
        );
    }
    let few: Vec<String> = (0..n.min(5)).map(|a| format!("\"app-{a}\"")).collect();
    // A divestiture: half of owner-0's apps and one of owner-2's (under the statute), and
    // one of owner-1's (outside it).
    let exempt: Vec<String> = [1, 2]
        .into_iter()
        .chain((0..n).filter(|a| a % roots == 0 && (a / roots) % 2 == 1))
        .filter(|a| *a < n)
        .map(|a| format!("\"app-{a}\""))
        .collect();
    let statute_day = window("2025-01-18T14:00:00Z", "2025-01-19T10:00:00Z");
    let mut files = vec![Source::new("common.toml", common)];
    files.push(Source::new(
        "identification.toml",
        instrument("identification", "identification", &window("2020-09-18T04:00:00Z", "2020-09-18T16:00:00Z"))
            + &format!("[[prohibition]]\nid = \"p-store\"\nowners = [\"owner-0\", \"owner-1\"]\nactions = [\"download\", \"update\"]\nregion = \"US\"\neffective = {}\ntext = \"t\"\n\n", window("2020-09-20T04:00:00Z", "2020-09-20T05:00:00Z"))
            + &format!("[[prohibition]]\nid = \"p-infra\"\napps = [{}]\nactions = [\"host\", \"cdn\", \"peering\"]\nregion = \"US\"\njurisdiction = [[\"server_country\"]]\neffective = 2020-11-13T04:59:00Z\ntext = \"t\"\n\n", few.join(", "))
            + &format!("[[prohibition]]\nid = \"p-pay\"\nowners = [\"owner-2-0\"]\nactions = [\"payment\"]\nregion = \"EU\"\neffective = 2021-01-01T00:00:00Z\nend = {}\ntext = \"t\"\n", window("2021-12-31T23:00:00Z", "2022-01-01T01:00:00Z")),
    ));
    files.push(Source::new(
        "statute.toml",
        instrument("statute", "statute", &window("2024-04-24T04:00:00Z", "2024-04-25T04:00:00Z"))
            + &format!("[[prohibition]]\nid = \"p-statute\"\nowners = [\"owner-0\", \"owner-2\"]\nactions = [\"download\", \"update\", \"code-use\"]\nregion = \"US\"\neffective = {statute_day}\ntext = \"t\"\n\n")
            + &format!("[[prohibition]]\nid = \"p-statute-host\"\nowners = [\"owner-0\", \"owner-2\"]\nactions = [\"host\"]\nregion = \"US\"\njurisdiction = [[\"server_country\"], [\"storefront\", \"device_country\", \"ip_country\", \"billing_country\"]]\neffective = {statute_day}\ntext = \"t\"\n\n")
            + &format!("[[prohibition]]\nid = \"p-statute-asia\"\nowners = [\"owner-1-1\"]\nactions = [\"download\"]\nregion = \"ASIA\"\neffective = {statute_day}\ntext = \"t\"\n"),
    ));
    files.push(Source::new(
        "delay-1.toml",
        instrument("delay-1", "amendment", "2020-09-19T04:00:00Z")
            + &format!(
                "[[delay]]\nprohibitions = [\"p-store\"]\neffective = {}\n",
                window("2020-09-28T03:59:00Z", "2020-09-28T04:59:00Z")
            ),
    ));
    files.push(Source::new(
        "delay-2.toml",
        instrument(
            "delay-2",
            "amendment",
            &window("2020-09-25T04:00:00Z", "2020-09-25T16:00:00Z"),
        ) + "[[delay]]\nprohibitions = [\"p-store\"]\neffective = 2020-09-24T00:00:00Z\n",
    ));
    files.push(Source::new(
        "court.toml",
        instrument(
            "court",
            "court-order",
            &window("2020-10-30T04:00:00Z", "2020-10-31T04:00:00Z"),
        ) + &format!(
            "[[injunction]]\nprohibitions = [\"p-store\"]\nfrom = {}\nuntil = {}\n",
            window("2020-10-30T04:00:00Z", "2020-10-31T04:00:00Z"),
            window("2021-03-01T00:00:00Z", "2021-03-02T00:00:00Z")
        ),
    ));
    files.push(Source::new(
        "non-enforcement.toml",
        instrument("non-enforcement", "non-enforcement-order", &window("2025-01-20T17:00:00Z", "2025-01-21T05:00:00Z"))
            + &format!("[[non-enforcement]]\ninstruments = [\"statute\"]\nfrom = {statute_day}\nuntil = {}\n\n", window("2025-04-05T04:00:00Z", "2025-04-06T04:00:00Z"))
            + &format!("[[non-enforcement]]\ninstruments = [\"statute\"]\nfrom = {}\nuntil = {}\n", window("2025-06-19T04:00:00Z", "2025-06-20T04:00:00Z"), window("2026-01-23T05:00:00Z", "2026-01-24T05:00:00Z")),
    ));
    files.push(Source::new(
        "divestiture.toml",
        instrument(
            "divestiture",
            "divestiture",
            &window("2026-01-22T05:00:00Z", "2026-01-23T05:00:00Z"),
        ) + &format!(
            "[[exemption]]\napps = [{}]\ninstruments = [\"statute\"]\nfrom = {}\n",
            exempt.join(", "),
            window("2026-01-22T05:00:00Z", "2026-01-24T05:00:00Z")
        ),
    ));
    files.push(Source::new(
        "revocation.toml",
        instrument(
            "revocation",
            "revocation",
            &window("2021-06-09T04:00:00Z", "2021-06-10T04:00:00Z"),
        ) + &format!(
            "[[revocation]]\ninstruments = [\"identification\"]\nfrom = {}\n",
            window("2021-06-09T04:00:00Z", "2021-06-10T04:00:00Z")
        ),
    ));
    files
}

/// The owner of app `a`: a root owner or one of its two subsidiaries.
fn owner_of(a: usize, roots: usize) -> String {
    let r = a % roots;
    match a % 3 {
        0 => format!("owner-{r}"),
        s => format!("owner-{r}-{}", s - 1),
    }
}

/// Prohibitions in one order.
const ORDER: usize = 10;

const DAY: i64 = 86_400;

/// `count` more prohibitions, ten to an order, the orders issued at even steps from mid-2019
/// to the end of 2025. Each prohibition names three apps spread over all of them, or an
/// owner (a root or a subsidiary); one to three actions; a region of three; none, one or two
/// jurisdiction groups; an effective instant (a window for a third of them) and, for a sixth,
/// an end. Later instruments change them: a delay of some prohibitions of every order (and a
/// second, earlier one for every fourth order), an injunction of a whole order or of some of
/// its prohibitions (open-ended or until an instant), non-enforcement orders, revocations and
/// exemptions of named apps; every fifth order is made under the base statute, so that the
/// base non-enforcement orders and divestiture reach it through the chain of instruments.
fn orders(n: usize, roots: usize, count: usize) -> Vec<Source> {
    let mut files = Vec::new();
    if n == 0 {
        return files;
    }
    let orders = count.div_ceil(ORDER);
    let start = secs(at("2019-07-01T00:00:00Z"));
    let span = secs(at("2026-01-01T00:00:00Z")) - start;
    let hours = |h: i64| h * 3_600;
    let maybe_window = |s: i64, wide: bool, len: i64| {
        if wide {
            window(&toml_at(s), &toml_at(s + len))
        } else {
            toml_at(s)
        }
    };
    let list = |items: &[String]| {
        items
            .iter()
            .map(|i| format!("\"{i}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for o in 0..orders {
        let issued = start + span * o as i64 / orders as i64;
        let id = format!("order-{o}");
        let kind = ["identification", "executive-order", "statute"][o % 3];
        let mut text = instrument(&id, kind, &maybe_window(issued, o % 2 == 0, hours(12)));
        if o % 5 == 0 {
            // `pursuant_to` belongs to the instrument table: insert it before its blank line.
            text.truncate(text.len() - 1);
            text.push_str("pursuant_to = [\"statute\"]\n\n");
        }
        let mut ids = Vec::new();
        let mut named_apps: Vec<String> = Vec::new();
        for k in 0..ORDER {
            let j = o * ORDER + k;
            if j >= count {
                break;
            }
            let pid = format!("q-{j}");
            let targets = if j.is_multiple_of(4) {
                let r = (j * 7_919) % roots;
                let owner = match j % 3 {
                    0 => format!("owner-{r}"),
                    s => format!("owner-{r}-{}", s - 1),
                };
                format!("owners = [\"{owner}\"]")
            } else {
                let mut apps: Vec<String> = (0..3)
                    .map(|i| format!("app-{}", (j * 7_919 + i * (n / 3 + 1) + i * 104_729) % n))
                    .collect();
                apps.sort();
                apps.dedup();
                named_apps.extend(apps.iter().cloned());
                format!("apps = [{}]", list(&apps))
            };
            let mut actions: Vec<&str> = (0..1 + j % 3)
                .map(|i| Action::ALL[(j + 2 * i) % Action::ALL.len()].as_str())
                .collect();
            actions.dedup();
            let region = ["US", "EU", "ASIA"][j % 3];
            let jurisdiction = match j % 5 {
                0 => "jurisdiction = [[\"server_country\"]]\n",
                1 => {
                    "jurisdiction = [[\"server_country\"], [\"storefront\", \"device_country\", \"ip_country\", \"billing_country\"]]\n"
                }
                2 => "jurisdiction = [[\"storefront\", \"device_country\"]]\n",
                _ => "",
            };
            let effective = issued + (k as i64 + 1) * 3 * DAY;
            let end = if j.is_multiple_of(6) {
                format!(
                    "end = {}\n",
                    maybe_window(effective + 400 * DAY, j.is_multiple_of(12), hours(2))
                )
            } else {
                String::new()
            };
            let _ = write!(
                text,
                "[[prohibition]]\nid = \"{pid}\"\n{targets}\nactions = [{}]\nregion = \"{region}\"\n{jurisdiction}effective = {}\n{end}text = \"t\"\n\n",
                list(&actions.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>()),
                maybe_window(effective, j.is_multiple_of(3), hours(6)),
            );
            ids.push((pid, effective));
        }
        files.push(Source::new(format!("{id}.toml"), text));

        // A delay of every third prohibition of the order, issued after the order.
        let delayed: Vec<&(String, i64)> = ids.iter().step_by(3).collect();
        let amended = issued + 20 * DAY;
        let mut text = instrument(
            &format!("{id}-delay"),
            "amendment",
            &maybe_window(amended, o % 2 == 1, hours(8)),
        );
        for (k, (pid, effective)) in delayed.iter().enumerate() {
            let _ = write!(
                text,
                "[[delay]]\nprohibitions = [\"{pid}\"]\neffective = {}\n\n",
                maybe_window(effective + 30 * DAY, k % 2 == 0, hours(5))
            );
        }
        files.push(Source::new(format!("{id}-delay.toml"), text));
        if o % 4 == 0 {
            // A later delay that brings the first ones forward again: the latest issued wins.
            let mut text = instrument(
                &format!("{id}-delay-2"),
                "amendment",
                &toml_at(amended + 10 * DAY),
            );
            for (pid, effective) in &delayed {
                let _ = write!(
                    text,
                    "[[delay]]\nprohibitions = [\"{pid}\"]\neffective = {}\n\n",
                    toml_at(effective + 15 * DAY)
                );
            }
            files.push(Source::new(format!("{id}-delay-2.toml"), text));
        }
        if o % 3 != 2 {
            // A court order: the whole order, or its first three prohibitions.
            let from = issued + 60 * DAY;
            let targets = if o % 3 == 0 {
                format!("instruments = [\"{id}\"]")
            } else {
                let first: Vec<String> = ids.iter().take(3).map(|(p, _)| p.clone()).collect();
                format!("prohibitions = [{}]", list(&first))
            };
            let until = if o % 2 == 0 {
                format!(
                    "until = {}\n",
                    maybe_window(from + 90 * DAY, true, hours(24))
                )
            } else {
                String::new()
            };
            files.push(Source::new(
                format!("{id}-court.toml"),
                instrument(&format!("{id}-court"), "court-order", &toml_at(from))
                    + &format!(
                        "[[injunction]]\n{targets}\nfrom = {}\n{until}",
                        maybe_window(from, true, hours(10))
                    ),
            ));
        }
        if o % 4 == 1 {
            let from = issued + 40 * DAY;
            files.push(Source::new(
                format!("{id}-non-enforcement.toml"),
                instrument(
                    &format!("{id}-non-enforcement"),
                    "non-enforcement-order",
                    &toml_at(from - DAY),
                ) + &format!(
                    "[[non-enforcement]]\ninstruments = [\"{id}\"]\nfrom = {}\nuntil = {}\n",
                    toml_at(from),
                    maybe_window(from + 120 * DAY, true, hours(24))
                ),
            ));
        }
        if o % 7 == 3 {
            let from = issued + 700 * DAY;
            files.push(Source::new(
                format!("{id}-revocation.toml"),
                instrument(
                    &format!("{id}-revocation"),
                    "revocation",
                    &maybe_window(from, true, DAY),
                ) + &format!(
                    "[[revocation]]\ninstruments = [\"{id}\"]\nfrom = {}\n",
                    maybe_window(from, true, DAY)
                ),
            ));
        }
        if o % 5 == 2 && !named_apps.is_empty() {
            let from = issued + 200 * DAY;
            let exempt: Vec<String> = named_apps.iter().take(2).cloned().collect();
            files.push(Source::new(
                format!("{id}-divestiture.toml"),
                instrument(&format!("{id}-divestiture"), "divestiture", &toml_at(from))
                    + &format!(
                        "[[exemption]]\napps = [{}]\ninstruments = [\"{id}\"]\nfrom = {}\n",
                        list(&exempt),
                        maybe_window(from, true, hours(12))
                    ),
            ));
        }
    }
    files
}
