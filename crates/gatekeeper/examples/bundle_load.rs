//! Loading a large bundle: its policy compiled from the TOML against loaded from the compiled
//! image, side by side (time and peak memory).
//!
//! ```sh
//! cargo run --release -p gatekeeper --example bundle_load              # 100,000 apps, 11 runs
//! cargo run --release -p gatekeeper --example bundle_load -- 20000 3   # apps, runs
//! ```
//!
//! Generates a policy of N covered apps (owners with subsidiaries, three identifiers and a
//! certificate per app, in files of 10,000 apps; the instruments of the peers' base policy:
//! prohibitions by owner and by app, delays, an injunction, non-enforcement orders, an
//! exemption, an end and a revocation), packs it as a signed bundle three ways (format 1
//! JSON without an image; format 2 binary with the image; format 2 in its JSON form, the
//! image as base64), and loads each in a fresh child process the way a gatekeeper does
//! (read, parse, signatures, digests, load, with [`Bundle::parse_owned`] as its reloads do),
//! several times. Reports the median time of each step, the fastest load and the mean CPU
//! time of one (which a busy machine changes less than the wall time), and the peak resident
//! memory above what the process held before its first load (`VmHWM` less the `VmRSS` before, from
//! `/proc/self/status`; Linux only), and what stays resident once loaded.

use std::error::Error;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant as Clock;

use gatekeeper::keys::{SignerKey, VerifierKey};
use gatekeeper::{Bundle, ImageUse, TrustedKeys};
use policy::{Instant, Posture, RequestRecord};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// Apps per policy file: each well under the 8 MiB limit on a policy file.
const APPS_PER_FILE: usize = 10_000;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        return child(&args[1..]);
    }
    let apps: usize = args.first().map_or(Ok(100_000), |a| a.parse())?;
    let runs: usize = args.get(1).map_or(Ok(11), |a| a.parse())?;
    let dir = tempfile::tempdir()?;
    let policies = dir.path().join("policies");
    let started = Clock::now();
    let (files, bytes) = generate(&policies, apps)?;
    println!(
        "policy: {apps} apps in {files} files, {:.1} MB of TOML (generated in {:.2} s)",
        mb(bytes),
        started.elapsed().as_secs_f64()
    );

    let key = SignerKey::generate("bench")?;
    let created = Instant::parse_rfc3339("2026-01-01T00:00:00Z")?;
    let started = Clock::now();
    let mut plain = Bundle::build(&[&policies], 1, created, None)?;
    plain.sign(&key)?;
    let built_plain = started.elapsed();
    let started = Clock::now();
    let mut imaged = Bundle::build_with_image(&[&policies], 1, created, None)?;
    imaged.sign(&key)?;
    let built_imaged = started.elapsed();
    let image_len = imaged.image.as_ref().map_or(0, Vec::len);
    let kinds = [
        ("toml", "format 1, JSON, no image", plain.to_bytes()),
        ("image", "format 2, binary, image", imaged.to_bytes()),
        (
            "image-json",
            "format 2, JSON, base64 image",
            serde_json::to_vec(&imaged)?,
        ),
    ];
    drop((plain, imaged));
    println!(
        "bundles: built in {:.2} s without the image, {:.2} s with it (image {:.1} MB)",
        built_plain.as_secs_f64(),
        built_imaged.as_secs_f64(),
        mb(image_len)
    );
    let mut report = String::new();
    let _ = writeln!(
        report,
        "{:<11} {:<29} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9}  compiled from",
        "bundle",
        "",
        "MB",
        "read",
        "parse",
        "verify",
        "load",
        "total",
        "fastest",
        "CPU",
        "peak MB",
        "kept MB",
    );
    let exe = std::env::current_exe()?;
    for (name, what, bytes) in &kinds {
        let path = dir.path().join(format!("{name}.bundle"));
        std::fs::write(&path, bytes)?;
        let out = Command::new(&exe)
            .arg("--child")
            .arg(&path)
            .arg(runs.to_string())
            .arg(key.verifier().to_string())
            .output()?;
        if !out.status.success() {
            return Err(format!(
                "loading the {name} bundle failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        let _ = writeln!(
            report,
            "{name:<11} {what:<29} {:>8.1} {}",
            mb(bytes.len()),
            String::from_utf8_lossy(&out.stdout).trim_end()
        );
    }
    println!(
        "median of {runs} loads each (seconds; `fastest`: the fastest total; `CPU`: the mean CPU time of a load, every thread's), each kind in a fresh process:\n{report}"
    );
    Ok(())
}

/// One kind of bundle, loaded `runs` times in this process: one line of medians and memory.
fn child(args: &[String]) -> Result<()> {
    let [path, runs, key] = args else {
        return Err("usage: --child BUNDLE RUNS KEY".into());
    };
    let path = PathBuf::from(path);
    let runs: usize = runs.parse()?;
    let trusted = TrustedKeys::new([VerifierKey::parse(key)?], 1)?;
    let now = Instant::parse_rfc3339("2026-06-01T00:00:00Z")?;
    let before = status("VmRSS:")?;
    let mut times: [Vec<f64>; 5] = Default::default();
    let (mut peak, mut kept) = (0, 0);
    let mut how = String::new();
    let mut cpu = 0;
    for run in 0..runs {
        let cpu0 = cpu_ticks()?;
        let t0 = Clock::now();
        let bytes = std::fs::read(&path)?;
        let t1 = Clock::now();
        // As a gatekeeper does: the bytes are handed over, and a binary bundle's image is
        // kept in their buffer.
        let bundle = Bundle::parse_owned(bytes)?;
        let t2 = Clock::now();
        bundle.verify_signatures(&trusted)?;
        bundle.verify(now, None)?;
        let t3 = Clock::now();
        let loaded = bundle.into_loaded("bench")?;
        let t4 = Clock::now();
        cpu += cpu_ticks()?.saturating_sub(cpu0);
        if run == 0 {
            // The first load's: later ones reuse memory the allocator kept.
            peak = status("VmHWM:")?.saturating_sub(before);
        }
        for (i, (a, b)) in [(t0, t1), (t1, t2), (t2, t3), (t3, t4), (t0, t4)]
            .into_iter()
            .enumerate()
        {
            times[i].push((b - a).as_secs_f64());
        }
        // A decision, so that the load is not optimised away and is seen to work.
        let record: RequestRecord = serde_json::from_str(
            r#"{"app": {"platform": "android", "id": "com.example.app3"},
                "action": "update", "at": "2025-02-01T12:00:00Z", "storefront": "USA"}"#,
        )?;
        let decision = loaded
            .policy
            .decide(&record.into_request()?, Posture::default());
        std::hint::black_box(decision.is_deny());
        how = match &loaded.image {
            ImageUse::Loaded => "image".to_owned(),
            ImageUse::NotOffered => "TOML".to_owned(),
            ImageUse::Skipped(why) => format!("TOML ({why})"),
        };
        // What a gatekeeper keeps: the policy (the handle drops the texts).
        let policy = loaded.policy;
        drop((loaded.texts, loaded.files));
        if run == 0 {
            kept = status("VmRSS:")?.saturating_sub(before);
        }
        drop(policy);
    }
    let mut line = String::new();
    for t in &mut times {
        t.sort_by(f64::total_cmp);
        let _ = write!(line, " {:>8.3}", t.get(t.len() / 2).copied().unwrap_or(0.0));
    }
    let fastest = times[4].first().copied().unwrap_or(0.0);
    let cpu = cpu as f64 / TICKS_PER_SECOND / runs.max(1) as f64;
    let _ = write!(line, " {fastest:>8.3} {cpu:>8.3}");
    println!(
        "{} {:>9.1} {:>9.1}  {how}",
        line.trim_start(),
        peak as f64 / 1024.0,
        kept as f64 / 1024.0
    );
    Ok(())
}

/// The kernel's clock ticks per second, in which `/proc/self/stat` gives CPU time (`USER_HZ`,
/// 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// The CPU time of the process so far, every thread's, user and system, in clock ticks
/// (`utime` and `stime` of `/proc/self/stat`).
fn cpu_ticks() -> Result<u64> {
    let text = std::fs::read_to_string("/proc/self/stat")?;
    // The fields after the command name (which is in parentheses and may hold spaces).
    let after = text.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `utime` and `stime` are fields 14 and 15; the name is field 2, `after` starts at 3.
    let field = |n: usize| -> Result<u64> {
        Ok(fields.get(n - 3).ok_or("short /proc/self/stat")?.parse()?)
    };
    Ok(field(14)? + field(15)?)
}

/// A field of `/proc/self/status`, in KiB.
fn status(field: &str) -> Result<u64> {
    let text = std::fs::read_to_string("/proc/self/status")?;
    let line = text
        .lines()
        .find(|l| l.starts_with(field))
        .ok_or_else(|| format!("no `{field}` in /proc/self/status"))?;
    let kib = line[field.len()..].trim().trim_end_matches(" kB").trim();
    Ok(kib.parse()?)
}

fn mb(bytes: usize) -> f64 {
    bytes as f64 / 1e6
}

/// Writes a policy of `n` apps below `dir`: how many files, and how many bytes.
fn generate(dir: &Path, n: usize) -> Result<(usize, usize)> {
    std::fs::create_dir_all(dir)?;
    let roots = (n / 20).max(3);
    let mut files: Vec<(String, String)> = Vec::new();
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
    files.push(("common.toml".to_owned(), common));
    for (f, start) in (0..n).step_by(APPS_PER_FILE).enumerate() {
        let mut text = String::new();
        for a in start..n.min(start + APPS_PER_FILE) {
            let r = a % roots;
            let owner = match a % 3 {
                0 => format!("owner-{r}"),
                s => format!("owner-{r}-{}", s - 1),
            };
            let _ = write!(
                text,
                "[[app]]\nid = \"app-{a}\"\nname = \"App {a}\"\nowner = \"{owner}\"\nios = [\"com.example.ios.app{a}\"]\nandroid = [\"com.example.app{a}\", \"com.example.app{a}.lite\"]\nsigning_cert_sha256 = [\"{:064x}\"]\n\n",
                a + 1
            );
        }
        files.push((format!("apps-{f:03}.toml"), text));
    }
    let window = |e: &str, l: &str| {
        format!("{{ earliest = {e}, latest = {l}, note = \"no hour in the record\" }}")
    };
    let instrument = |id: &str, kind: &str, issued: &str| {
        format!(
            "[instrument]\nid = \"{id}\"\nkind = \"{kind}\"\ntitle = \"{id}\"\nauthority = \"A\"\ncitation = \"{id}\"\nsource = \"https://example.org/{id}\"\nissued = {issued}\n\n"
        )
    };
    let few: Vec<String> = (0..n.min(5)).map(|a| format!("\"app-{a}\"")).collect();
    let exempt: Vec<String> = (0..n)
        .filter(|a| a % roots == 0 && (a / roots) % 2 == 1)
        .map(|a| format!("\"app-{a}\""))
        .collect();
    let statute_day = window("2025-01-18T14:00:00Z", "2025-01-19T10:00:00Z");
    files.push((
        "identification.toml".to_owned(),
        instrument("identification", "identification", &window("2020-09-18T04:00:00Z", "2020-09-18T16:00:00Z"))
            + &format!("[[prohibition]]\nid = \"p-store\"\nowners = [\"owner-0\", \"owner-1\"]\nactions = [\"download\", \"update\"]\nregion = \"US\"\neffective = {}\ntext = \"t\"\n\n", window("2020-09-20T04:00:00Z", "2020-09-20T05:00:00Z"))
            + &format!("[[prohibition]]\nid = \"p-infra\"\napps = [{}]\nactions = [\"host\", \"cdn\", \"peering\"]\nregion = \"US\"\njurisdiction = [[\"server_country\"]]\neffective = 2020-11-13T04:59:00Z\ntext = \"t\"\n\n", few.join(", "))
            + &format!("[[prohibition]]\nid = \"p-pay\"\nowners = [\"owner-2-0\"]\nactions = [\"payment\"]\nregion = \"EU\"\neffective = 2021-01-01T00:00:00Z\nend = {}\ntext = \"t\"\n", window("2021-12-31T23:00:00Z", "2022-01-01T01:00:00Z")),
    ));
    files.push((
        "statute.toml".to_owned(),
        instrument("statute", "statute", &window("2024-04-24T04:00:00Z", "2024-04-25T04:00:00Z"))
            + &format!("[[prohibition]]\nid = \"p-statute\"\nowners = [\"owner-0\", \"owner-2\"]\nactions = [\"download\", \"update\", \"code-use\"]\nregion = \"US\"\neffective = {statute_day}\ntext = \"t\"\n\n")
            + &format!("[[prohibition]]\nid = \"p-statute-host\"\nowners = [\"owner-0\", \"owner-2\"]\nactions = [\"host\"]\nregion = \"US\"\njurisdiction = [[\"server_country\"], [\"storefront\", \"device_country\", \"ip_country\", \"billing_country\"]]\neffective = {statute_day}\ntext = \"t\"\n\n")
            + &format!("[[prohibition]]\nid = \"p-statute-asia\"\nowners = [\"owner-1-1\"]\nactions = [\"download\"]\nregion = \"ASIA\"\neffective = {statute_day}\ntext = \"t\"\n"),
    ));
    files.push((
        "delays.toml".to_owned(),
        instrument("delay-1", "amendment", "2020-09-19T04:00:00Z")
            + &format!(
                "[[delay]]\nprohibitions = [\"p-store\"]\neffective = {}\n",
                window("2020-09-28T03:59:00Z", "2020-09-28T04:59:00Z")
            ),
    ));
    files.push((
        "court.toml".to_owned(),
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
    files.push((
        "non-enforcement.toml".to_owned(),
        instrument(
            "non-enforcement",
            "non-enforcement-order",
            &window("2025-01-20T17:00:00Z", "2025-01-21T05:00:00Z"),
        ) + &format!(
            "[[non-enforcement]]\ninstruments = [\"statute\"]\nfrom = {statute_day}\nuntil = {}\n",
            window("2025-04-05T04:00:00Z", "2025-04-06T04:00:00Z")
        ),
    ));
    if !exempt.is_empty() {
        files.push((
            "divestiture.toml".to_owned(),
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
    }
    files.push((
        "revocation.toml".to_owned(),
        instrument(
            "revocation",
            "revocation",
            &window("2021-06-09T04:00:00Z", "2021-06-10T04:00:00Z"),
        ) + &format!(
            "[[revocation]]\ninstruments = [\"identification\"]\nfrom = {}\n",
            window("2021-06-09T04:00:00Z", "2021-06-10T04:00:00Z")
        ),
    ));
    let mut bytes = 0;
    for (name, text) in &files {
        bytes += text.len();
        std::fs::write(dir.join(name), text)?;
    }
    Ok((files.len(), bytes))
}
