//! The decision function (`cargo xtask bench`), on the shipped policies and on a
//! generated catalogue the size of a store's.
//!
//! The shipped sets are loaded together; the requests fall around the real dates of the
//! record and mix denies, every allow reason, alpha-2 and alpha-3 codes, and apps no
//! policy names. Only the `decide` call is timed; requests are prepared first.
//!
//! The catalogue (`cold_*`): 100,000 apps of 1,000 owners, each app with an iOS bundle
//! id, an Android package, a signing certificate and a code digest (400,000
//! identifiers), under 5 prohibitions or, in the second variant, 1,000 (the same 5 and
//! one more for each of 995 owners). Its 100,000 requests name every app once, by any of
//! its identifiers (or, for an unlisted app, by its owner's account), with mixed actions,
//! instants and places, in an order shuffled with a fixed seed: a decision finds nothing
//! of the previous one's policy data in the cache, as in a store's real traffic. (The
//! requests themselves are laid out in the order they are decided, as a store's are in
//! the cache when it has just parsed them.) `cold_decide*` times single calls; after
//! divan's table, `cold_summary` times whole passes (nanoseconds per decision, the
//! median of several passes, the two variants alternating), and, in child processes
//! that do nothing else, the compilation of each catalogue and the resident memory it
//! added (from `/proc/self/statm`; printed, not asserted), and what a second copy beside
//! the first added (about what a compiled policy keeps).
//!
//! `cargo bench -p policy --bench decide -- cold` runs the catalogue's benchmarks only.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a benchmark harness may fail loudly

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant as Clock};

use divan::Bencher;
use policy::{Instant, Policy, Posture, PublisherRecord, Request, RequestRecord, Source};

fn main() {
    // A child run by `cold_summary`: compile one catalogue in a fresh process and say
    // what it cost.
    if let Ok(variant) = std::env::var(BUILD_ONLY) {
        let variant = match variant.as_str() {
            "5" => Variant::Five,
            _ => Variant::Thousand,
        };
        let sources = catalogue_sources(variant);
        // The texts stay alive until after the measurement, so that freeing them does
        // not hide what the policy holds.
        let before = resident_bytes();
        let start = Clock::now();
        let first = compile(&sources, variant);
        let took = start.elapsed();
        let after = resident_bytes();
        // A second copy beside the first (as during a reload): compiling it reuses what
        // the first compilation freed, so what it adds is about what a policy keeps.
        let second = compile(&sources, variant);
        let again = resident_bytes();
        let grown =
            |a: Option<u64>, b: Option<u64>| a.zip(b).map_or(-1, |(a, b)| a as i64 - b as i64);
        println!(
            "{} {} {}",
            took.as_nanos(),
            grown(after, before),
            grown(again, after)
        );
        drop((first, second, sources));
        return;
    }
    // With a filter (`-- decide_mix`), only the named benchmarks run.
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wanted =
        |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()));
    divan::main();
    if wanted("cold_summary") {
        cold_summary();
    }
}

fn shipped() -> Policy {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies");
    let mut files: Vec<PathBuf> = Vec::new();
    let mut stack = vec![root];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "toml") {
                files.push(path);
            }
        }
    }
    files.sort();
    let sources = files
        .iter()
        .map(|f| Source::new(f.display().to_string(), std::fs::read_to_string(f).unwrap()));
    Policy::from_sources(sources).unwrap_or_else(|d| panic!("{}", d.render()))
}

fn request(app: (&str, &str), action: &str, at: &str, signal: (&str, &str)) -> Request {
    let mut r = RequestRecord {
        app: Some(policy::AppRecord {
            platform: app.0.into(),
            id: app.1.into(),
        }),
        action: action.into(),
        at: at.into(),
        ..Default::default()
    };
    match signal.0 {
        "storefront" => r.storefront = Some(signal.1.into()),
        "device_country" => r.device_country = Some(signal.1.into()),
        "billing_country" => r.billing_country = Some(signal.1.into()),
        _ => r.server_country = Some(signal.1.into()),
    }
    r.into_request().unwrap()
}

fn mix() -> Vec<Request> {
    let tiktok = ("android", "com.zhiliaoapp.musically");
    let wechat = ("ios", "com.tencent.xin");
    let capcut = ("android", "com.lemon.lvoverseas");
    let other = ("android", "com.example.notes");
    vec![
        request(
            tiktok,
            "update",
            "2020-09-22T12:00:00Z",
            ("storefront", "US"),
        ),
        request(
            tiktok,
            "download",
            "2020-09-19T12:00:00Z",
            ("storefront", "USA"),
        ),
        request(
            tiktok,
            "host",
            "2020-11-13T04:59:00Z",
            ("server_country", "US"),
        ),
        request(
            tiktok,
            "update",
            "2021-07-01T00:00:00Z",
            ("storefront", "PRI"),
        ),
        request(
            wechat,
            "payment",
            "2020-09-21T12:00:00Z",
            ("billing_country", "US"),
        ),
        request(
            wechat,
            "download",
            "2020-09-21T12:00:00Z",
            ("storefront", "CAN"),
        ),
        request(
            capcut,
            "update",
            "2025-01-19T12:00:00Z",
            ("device_country", "GU"),
        ),
        request(
            capcut,
            "update",
            "2025-03-01T12:00:00Z",
            ("storefront", "US"),
        ),
        request(
            capcut,
            "cdn",
            "2025-03-01T12:00:00Z",
            ("server_country", "US"),
        ),
        request(
            other,
            "download",
            "2025-03-01T12:00:00Z",
            ("storefront", "US"),
        ),
    ]
}

/// The request mix, one decision per iteration, cycling through the mix.
#[divan::bench(sample_count = 300, sample_size = 500)]
fn decide_mix(bencher: Bencher) {
    let policy = shipped();
    let requests = mix();
    let mut i = 0;
    bencher.bench_local(|| {
        i = (i + 1) % requests.len();
        divan::black_box(
            policy
                .decide(divan::black_box(&requests[i]), Posture::default())
                .is_deny(),
        )
    });
}

/// One typical deny: TikTok update in a US storefront on 2025-01-19, the statute in force and
/// EO 14166 not yet issued (in 2020 the courts' orders, loaded too, leave nothing denied for
/// long).
#[divan::bench(sample_count = 300, sample_size = 500)]
fn decide_deny(bencher: Bencher) {
    let policy = shipped();
    let deny = request(
        ("android", "com.zhiliaoapp.musically"),
        "update",
        "2025-01-19T12:00:00Z",
        ("storefront", "US"),
    );
    assert!(
        policy.decide(&deny, Posture::default()).is_deny(),
        "the deny benchmark's request must be denied"
    );
    bencher.bench_local(|| {
        divan::black_box(
            policy
                .decide(divan::black_box(&deny), Posture::default())
                .is_deny(),
        )
    });
}

/// An app that no policy names.
#[divan::bench(sample_count = 300, sample_size = 500)]
fn decide_not_covered(bencher: Bencher) {
    let policy = shipped();
    let requests = mix();
    bencher.bench_local(|| {
        divan::black_box(
            policy
                .decide(divan::black_box(&requests[9]), Posture::default())
                .is_deny(),
        )
    });
}

/// A hindsight judgement (`known_at`), which scans instead of using the time line.
#[divan::bench(sample_count = 300, sample_size = 500)]
fn decide_in_hindsight(bencher: Bencher) {
    let policy = shipped();
    let mut record = RequestRecord::from(&mix().swap_remove(4));
    record.known_at = Some("2020-09-19T06:00:00Z".into());
    let request = record.into_request().unwrap();
    bencher.bench_local(|| {
        divan::black_box(
            policy
                .decide(divan::black_box(&request), Posture::default())
                .is_deny(),
        )
    });
}

/// Loading and compiling the shipped policies from their text.
#[divan::bench(sample_count = 20)]
fn compile_shipped(bencher: Bencher) {
    bencher.bench_local(|| divan::black_box(shipped().prohibitions().len()));
}

/// The apps of the generated catalogue, and the owners they are spread over.
const APPS: usize = 100_000;
const OWNERS: usize = 1_000;
/// Owners are grouped under parents; prohibitions name parents.
const GROUPS: usize = 10;

/// Which prohibitions the catalogue's apps are under.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Variant {
    /// Five prohibitions over groups of owners.
    Five,
    /// The same five, and one more for each of 995 owners.
    Thousand,
}

impl Variant {
    fn prohibitions(self) -> usize {
        match self {
            Variant::Five => 5,
            Variant::Thousand => 1_000,
        }
    }
}

/// Set in the child processes that measure compiling a catalogue (`5` or `1000`).
const BUILD_ONLY: &str = "DECIDE_BENCH_BUILD_ONLY";

/// A compiled catalogue and its requests.
struct Catalogue {
    policy: Policy,
    requests: &'static [Request],
}

fn catalogue(variant: Variant) -> &'static Catalogue {
    static FIVE: OnceLock<Catalogue> = OnceLock::new();
    static THOUSAND: OnceLock<Catalogue> = OnceLock::new();
    let cell = match variant {
        Variant::Five => &FIVE,
        Variant::Thousand => &THOUSAND,
    };
    cell.get_or_init(|| {
        // The requests first, in memory no policy has used yet: one set for both.
        static REQUESTS: OnceLock<Vec<Request>> = OnceLock::new();
        let requests = REQUESTS.get_or_init(catalogue_requests);
        Catalogue {
            policy: compile(&catalogue_sources(variant), variant),
            requests,
        }
    })
}

fn compile(sources: &[Source], variant: Variant) -> Policy {
    let policy =
        Policy::from_sources(sources.iter().cloned()).unwrap_or_else(|d| panic!("{}", d.render()));
    assert_eq!(policy.apps().len(), APPS);
    assert_eq!(policy.prohibitions().len(), variant.prohibitions());
    policy
}

/// What compiling a catalogue cost, measured in a child process (this benchmark run with
/// [`BUILD_ONLY`]) that has done nothing else.
struct Build {
    took: Duration,
    /// Resident memory added by compiling it (`None` where it cannot be read).
    resident: Option<u64>,
    /// Resident memory added by compiling a second copy beside the first: about what a
    /// compiled policy keeps.
    kept: Option<u64>,
}

fn build_in_child(variant: Variant) -> Build {
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .env(BUILD_ONLY, variant.prohibitions().to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let fields: Vec<i64> = text
        .split_whitespace()
        .map(|f| f.parse().unwrap())
        .collect();
    Build {
        took: Duration::from_nanos(fields[0] as u64),
        resident: u64::try_from(fields[1]).ok(),
        kept: u64::try_from(fields[2]).ok(),
    }
}

/// The process's resident memory, from `/proc/self/statm` (Linux, 4 KiB pages).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// An app's identifiers: iOS bundle id (every third written with capitals, as many
/// are), Android package, signing certificate and code digest.
fn identifiers(app: usize) -> [String; 4] {
    let owner = app % OWNERS;
    let ios = if app.is_multiple_of(3) {
        format!("com.Vendor{owner}.App{app}")
    } else {
        format!("com.vendor{owner}.app{app}")
    };
    let android = format!("com.vendor{owner}.android.app{app}");
    [ios, android, digest(app as u64, 1), digest(app as u64, 2)]
}

/// A SHA-256-shaped digest, distinct for each app and kind.
fn digest(app: u64, kind: u64) -> String {
    let mut rng = fastrand::Rng::with_seed(app << 2 | kind);
    (0..4).fold(String::with_capacity(64), |mut s, _| {
        let _ = write!(s, "{:016x}", rng.u64(..));
        s
    })
}

/// An owner's store accounts: an Apple team id and a Google Play account.
fn accounts(owner: usize) -> (String, String) {
    (
        format!("T{owner:09}"),
        format!("{}", 5_700_000_000_000u64 + owner as u64),
    )
}

fn instrument(id: &str, kind: &str, issued: &str) -> String {
    format!(
        "[instrument]\nid = \"{id}\"\nkind = \"{kind}\"\ntitle = \"{id}\"\nauthority = \"Generated\"\ncitation = \"{id}\"\nsource = \"https://example.org/{id}\"\nissued = {issued}\n"
    )
}

/// The catalogue's policy files.
fn catalogue_sources(variant: Variant) -> Vec<Source> {
    let mut common = String::with_capacity(40 << 20);
    common.push_str(
        "[[region]]\nid = \"US\"\nname = \"United States\"\ncountries = [\"US\", \"PR\", \"GU\", \"VI\", \"AS\", \"MP\", \"UM\"]\n\n\
         [[region]]\nid = \"EU\"\nname = \"Some of the EU\"\ncountries = [\"DE\", \"FR\", \"IT\", \"ES\", \"NL\"]\n\n\
         [[region]]\nid = \"CA\"\nname = \"Canada\"\ncountries = [\"CA\"]\n",
    );
    for g in 0..GROUPS {
        let _ = write!(
            common,
            "\n[[entity]]\nid = \"group-{g}\"\nname = \"Group {g}\"\n"
        );
    }
    for o in 0..OWNERS {
        let (apple, google) = accounts(o);
        let _ = write!(
            common,
            "\n[[entity]]\nid = \"owner-{o}\"\nname = \"Owner {o}\"\nparent = \"group-{}\"\npublisher_accounts = [{{ store = \"apple\", id = \"{apple}\" }}, {{ store = \"google\", id = \"{google}\" }}]\n",
            o % GROUPS
        );
    }
    for a in 0..APPS {
        let [ios, android, cert, code] = identifiers(a);
        let _ = write!(
            common,
            "\n[[app]]\nid = \"app-{a}\"\nname = \"App {a}\"\nowner = \"owner-{}\"\nios = [\"{ios}\"]\nandroid = [\"{android}\"]\nsigning_cert_sha256 = [\"{cert}\"]\ncode_sha256 = [\"{code}\"]\n",
            a % OWNERS
        );
    }
    let groups = |range: std::ops::Range<usize>| {
        range
            .map(|g| format!("\"group-{g}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut order = instrument(
        "order-1",
        "identification",
        "{ earliest = 2020-09-18T04:00:00Z, latest = 2020-09-18T16:00:00Z, note = \"that morning\" }",
    );
    let _ = write!(
        order,
        "\n[[prohibition]]\nid = \"p-stores\"\nowners = [{}]\nactions = [\"download\", \"update\"]\nregion = \"US\"\neffective = {{ earliest = 2020-09-21T03:59:00Z, latest = 2020-09-21T04:59:00Z, note = \"EDT or EST\" }}\ntext = \"stores\"\n",
        groups(0..5)
    );
    let _ = write!(
        order,
        "\n[[prohibition]]\nid = \"p-payments\"\nowners = [{}]\nactions = [\"payment\"]\nregion = \"US\"\njurisdiction = [[\"billing_country\"]]\neffective = 2020-09-21T04:00:00Z\ntext = \"payments\"\n",
        groups(3..8)
    );
    let _ = write!(
        order,
        "\n[[prohibition]]\nid = \"p-hosting\"\nowners = [{}]\nactions = [\"host\", \"cdn\", \"peering\"]\nregion = \"US\"\njurisdiction = [[\"server_country\"]]\neffective = 2020-11-12T05:00:00Z\ntext = \"hosting\"\n",
        groups(5..10)
    );
    let mut statute = instrument("statute", "statute", "2024-04-24T16:00:00Z");
    let _ = write!(
        statute,
        "\n[[prohibition]]\nid = \"p-statute\"\nowners = [{}]\nactions = [\"download\", \"update\", \"host\"]\nregion = \"US\"\njurisdiction = [[\"storefront\", \"device_country\", \"ip_country\"], [\"server_country\"]]\neffective = 2025-01-19T05:00:00Z\ntext = \"statute\"\n",
        groups(0..10)
    );
    let _ = write!(
        statute,
        "\n[[prohibition]]\nid = \"p-code\"\nowners = [{}]\nactions = [\"code-use\"]\nregion = \"EU\"\neffective = 2025-06-01T00:00:00Z\nend = 2026-06-01T00:00:00Z\ntext = \"code\"\n",
        groups(2..6)
    );
    let mut sources = vec![
        Source::new("common.toml", common),
        Source::new("order-1.toml", order),
        Source::new("statute.toml", statute),
    ];
    let mut delay = instrument("delay", "amendment", "2020-09-19T23:00:00Z");
    delay
        .push_str("\n[[delay]]\nprohibitions = [\"p-stores\"]\neffective = 2020-09-28T03:59:00Z\n");
    let mut injunction = instrument(
        "injunction",
        "court-order",
        "{ earliest = 2020-10-30T20:00:00Z, latest = 2020-10-31T02:00:00Z, note = \"that evening\" }",
    );
    injunction.push_str(
        "\n[[injunction]]\nprohibitions = [\"p-hosting\"]\nfrom = 2020-10-30T20:00:00Z\nuntil = 2021-06-09T00:00:00Z\n",
    );
    let mut revocation = instrument("revocation", "revocation", "2021-06-09T00:00:00Z");
    revocation
        .push_str("\n[[revocation]]\ninstruments = [\"order-1\"]\nfrom = 2021-06-09T00:00:00Z\n");
    let mut deferral = instrument("deferral", "non-enforcement-order", "2025-01-20T17:00:00Z");
    deferral.push_str(
        "\n[[non-enforcement]]\ninstruments = [\"statute\"]\nfrom = 2025-01-20T17:00:00Z\nuntil = 2025-04-05T04:00:00Z\n",
    );
    sources.extend([
        Source::new("delay.toml", delay),
        Source::new("injunction.toml", injunction),
        Source::new("revocation.toml", revocation),
        Source::new("deferral.toml", deferral),
    ]);
    if variant == Variant::Thousand {
        // One more prohibition for each of 995 owners, each with its own actions, place
        // and dates.
        let mut orders = instrument("order-2", "identification", "2022-01-01T00:00:00Z");
        let actions = [
            "\"download\", \"update\"",
            "\"payment\"",
            "\"host\", \"cdn\"",
            "\"update\", \"code-use\"",
            "\"peering\"",
        ];
        let regions = ["US", "EU", "CA"];
        for o in 0..995 {
            let effective = Instant::from_nanos(
                Instant::parse_rfc3339("2022-01-02T00:00:00Z")
                    .unwrap()
                    .as_nanos()
                    + o as i64 * 86_400_000_000_000,
            );
            let _ = write!(
                orders,
                "\n[[prohibition]]\nid = \"p-owner-{o}\"\nowners = [\"owner-{o}\"]\nactions = [{}]\nregion = \"{}\"\neffective = {effective}\ntext = \"owner {o}\"\n",
                actions[o % actions.len()],
                regions[o % regions.len()],
            );
            if o.is_multiple_of(4) {
                let _ = writeln!(
                    orders,
                    "end = {}",
                    Instant::from_nanos(effective.as_nanos() + 400 * 86_400_000_000_000)
                );
            }
        }
        sources.push(Source::new("order-2.toml", orders));
    }
    sources
}

/// One request for each app, in a shuffled order: by any of its identifiers (an iOS id
/// sometimes in another letter case), or, for one in twenty, as an unlisted app
/// published from its owner's account; mixed actions, instants from 2020 to 2026, and
/// places in and out of the regions.
fn catalogue_requests() -> Vec<Request> {
    let mut rng = fastrand::Rng::with_seed(0x6a7e_6b65_6570_6572);
    let mut apps: Vec<usize> = (0..APPS).collect();
    rng.shuffle(&mut apps);
    let first = Instant::parse_rfc3339("2020-09-01T00:00:00Z")
        .unwrap()
        .as_nanos()
        / 1_000_000_000;
    let last = Instant::parse_rfc3339("2026-12-31T00:00:00Z")
        .unwrap()
        .as_nanos()
        / 1_000_000_000;
    let actions = [
        "download", "update", "host", "cdn", "peering", "payment", "code-use",
    ];
    let countries = ["US", "USA", "PR", "GUM", "CA", "DE", "FRA", "CN", "JP"];
    // Written in the order they are decided, then validated, so that their memory is
    // in that order too: as a store's requests are in the cache when it has just parsed
    // them, these are read in order, ahead, as the processor does; only the policy's
    // memory is met in no order.
    let records: Vec<RequestRecord> = apps
        .into_iter()
        .map(|a| {
            let [ios, android, cert, code] = identifiers(a);
            let mut r = RequestRecord {
                action: actions[rng.usize(..actions.len())].into(),
                at: Instant::from_nanos(rng.i64(first..last) * 1_000_000_000).to_string(),
                ..Default::default()
            };
            let app = |platform: &str, id: String| {
                Some(policy::AppRecord {
                    platform: platform.into(),
                    id,
                })
            };
            match rng.u8(..20) {
                0..=6 => r.app = app("ios", ios),
                7 => r.app = app("ios", ios.to_ascii_lowercase()),
                8 => r.app = app("ios", ios.to_ascii_uppercase()),
                9..=14 => r.app = app("android", android),
                15..=16 => r.signing_cert_sha256 = Some(cert),
                17..=18 => r.code_sha256 = vec![code],
                _ => {
                    let (_, google) = accounts(a % OWNERS);
                    r.app = app("android", format!("com.unlisted.app{a}"));
                    r.publisher = Some(PublisherRecord {
                        store: "google".into(),
                        id: google,
                    });
                }
            }
            let country = countries[rng.usize(..countries.len())].to_owned();
            match r.action.as_str() {
                "payment" => r.billing_country = Some(country),
                "host" | "cdn" | "peering" => r.server_country = Some(country),
                _ if rng.bool() => r.storefront = Some(country),
                _ => r.device_country = Some(country),
            }
            r
        })
        .collect();
    records
        .into_iter()
        .map(|r| r.into_request().unwrap())
        .collect()
}

/// One decision per call, the next request each time, 5 prohibitions.
#[divan::bench(sample_count = 500, sample_size = 1_000)]
fn cold_decide(bencher: Bencher) {
    cold_calls(bencher, catalogue(Variant::Five));
}

/// The same with 1,000 prohibitions over the same apps.
#[divan::bench(sample_count = 500, sample_size = 1_000)]
fn cold_decide_1000_prohibitions(bencher: Bencher) {
    cold_calls(bencher, catalogue(Variant::Thousand));
}

fn cold_calls(bencher: Bencher, catalogue: &Catalogue) {
    let (policy, requests) = (&catalogue.policy, catalogue.requests);
    let mut i = 0;
    bencher.bench_local(|| {
        i = (i + 1) % requests.len();
        divan::black_box(
            policy
                .decide(divan::black_box(&requests[i]), Posture::default())
                .is_deny(),
        )
    });
}

/// Nanoseconds per decision over one whole pass of the requests: the pass's time over
/// the number of requests.
fn pass(catalogue: &Catalogue) -> f64 {
    let (policy, requests) = (&catalogue.policy, catalogue.requests);
    let start = Clock::now();
    let mut denied = 0usize;
    for r in requests {
        let decision = policy.decide(divan::black_box(r), Posture::default());
        denied += usize::from(decision.is_deny());
    }
    divan::black_box(denied);
    start.elapsed().as_nanos() as f64 / requests.len() as f64
}

/// Whole passes over the catalogue's requests, both variants in alternating rounds, and
/// what compiling each catalogue cost (each in a fresh process).
fn cold_summary() {
    let builds = [Variant::Five, Variant::Thousand].map(build_in_child);
    let (five, thousand) = (catalogue(Variant::Five), catalogue(Variant::Thousand));
    let rounds = 11;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        a.push(pass(five));
        b.push(pass(thousand));
    }
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    println!();
    let named = [
        ("5 prohibitions", five, &a),
        ("1,000 prohibitions", thousand, &b),
    ];
    let mib = |bytes: Option<u64>| {
        bytes.map_or_else(
            || "unknown".to_owned(),
            |b| format!("{:.1} MiB", b as f64 / f64::from(1 << 20)),
        )
    };
    for ((name, c, p), build) in named.into_iter().zip(builds) {
        let denied = c
            .requests
            .iter()
            .filter(|r| c.policy.decide(r, Posture::default()).is_deny())
            .count();
        println!(
            "cold_summary: {name}: {} requests ({denied} denied), {rounds} passes: median {:.1} ns per decision (min {:.1}, max {:.1}); compiled in {:.2} s, resident memory +{} (a second copy beside it: +{})",
            c.requests.len(),
            p[rounds / 2],
            p[0],
            p[rounds - 1],
            build.took.as_secs_f64(),
            mib(build.resident),
            mib(build.kept),
        );
    }
    println!(
        "cold_summary: 1,000 against 5 prohibitions, median per decision: {:.2}x",
        b[rounds / 2] / a[rounds / 2]
    );
}
