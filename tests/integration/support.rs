//! Shared helpers: paths and policy loading.

use std::path::{Path, PathBuf};

use policy::Policy;

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Loads policy folders given relative to the repository root.
pub fn load(dirs: &[&str]) -> Policy {
    let paths: Vec<PathBuf> = dirs.iter().map(|d| root().join(d)).collect();
    match gatekeeper::load_dirs(&paths) {
        Ok(loaded) => loaded.policy,
        Err(d) => panic!("{dirs:?} failed to load:\n{}", d.render()),
    }
}

/// The folders each corpus file is judged against.
pub fn corpus_sets(name: &str) -> Vec<&'static str> {
    match name {
        "us-2020" => vec!["policies/us-2020"],
        "us-2020-courts" => vec!["policies/us-2020-courts"],
        "us-2024-pafaca" => vec!["policies/us-2024-pafaca"],
        "fixtures" => vec!["tests/fixtures/good"],
        other => panic!("no policy sets known for corpus `{other}`"),
    }
}

/// Every corpus file, by name.
pub const CORPORA: [&str; 4] = ["us-2020", "us-2020-courts", "us-2024-pafaca", "fixtures"];
