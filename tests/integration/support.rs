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
