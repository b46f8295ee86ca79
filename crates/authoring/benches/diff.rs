//! `gatekeeper diff` (`cargo xtask bench`): the shipped sets against each other, and two
//! generated versions of a 100,000-app set, the second moving one prohibition's instant,
//! exempting 1,000 apps and adding 100. Only the diff is timed; loading is done first.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a benchmark harness may fail loudly

use std::fmt::Write as _;
use std::path::Path;

use divan::Bencher;
use policy::{Policy, Source};

fn main() {
    divan::main();
}

fn shipped(set: &str) -> Policy {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../policies")
        .join(set);
    gatekeeper::load_dirs(&[dir]).unwrap().policy
}

const APPS: usize = 100_000;

/// A set of `APPS` apps (plus `extra`), five prohibitions over blocks of them, and in the
/// new version a later instant for one and an exemption of 1,000 apps.
fn generated(new: bool) -> Policy {
    let mut text = String::from(
        "[instrument]\nid = \"order\"\nkind = \"statute\"\ntitle = \"Order\"\nauthority = \"A\"\ncitation = \"1 XR 1\"\nsource = \"https://example.org/order\"\nissued = 2021-01-01T00:00:00Z\n\n[[region]]\nid = \"US\"\nname = \"US\"\ncountries = [\"US\", \"PR\", \"GU\"]\n\n[[entity]]\nid = \"owner\"\nname = \"Owner\"\n",
    );
    let apps = if new { APPS + 100 } else { APPS };
    for i in 0..apps {
        let _ = write!(
            text,
            "\n[[app]]\nid = \"app{i}\"\nname = \"App {i}\"\nowner = \"owner\"\nandroid = [\"com.example.app{i}\"]\nios = [\"com.example.ios{i}\"]\n"
        );
    }
    let actions = ["download", "update", "host", "cdn", "payment"];
    for (p, action) in actions.iter().enumerate() {
        let block: Vec<String> = (0..apps)
            .filter(|i| i % actions.len() == p || p == 0)
            .map(|i| format!("\"app{i}\""))
            .collect();
        let day = if new && p == 1 { 20 } else { 10 + p };
        let _ = write!(
            text,
            "\n[[prohibition]]\nid = \"p{p}\"\napps = [{}]\nactions = [\"{action}\"]\nregion = \"US\"\neffective = 2021-02-{day:02}T00:00:00Z\ntext = \"t\"\n",
            block.join(", ")
        );
    }
    if new {
        let exempt: Vec<String> = (0..1_000).map(|i| format!("\"app{i}\"")).collect();
        let _ = write!(
            text,
            "\n[[exemption]]\napps = [{}]\nprohibitions = [\"p0\"]\nfrom = 2022-01-01T00:00:00Z\ntext = \"t\"\n",
            exempt.join(", ")
        );
    }
    Policy::from_sources([Source::new("generated.toml", text)])
        .unwrap_or_else(|d| panic!("{}", d.render()))
}

#[divan::bench(sample_count = 20)]
fn shipped_rule_vs_courts(bencher: Bencher) {
    let (old, new) = (shipped("us-2020"), shipped("us-2020-courts"));
    bencher.bench(|| authoring::diff::diff(&old, &new, "old", "new"));
}

#[divan::bench(sample_count = 20)]
fn shipped_pafaca_vs_itself(bencher: Bencher) {
    let (old, new) = (shipped("us-2024-pafaca"), shipped("us-2024-pafaca"));
    bencher.bench(|| authoring::diff::diff(&old, &new, "old", "new"));
}

#[divan::bench(sample_count = 5, sample_size = 1)]
fn generated_100k_apps(bencher: Bencher) {
    let (old, new) = (generated(false), generated(true));
    bencher.bench(|| {
        let report = authoring::diff::diff(&old, &new, "old", "new");
        assert!(report.changed);
        report
    });
}
