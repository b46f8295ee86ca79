//! The policy maintainers' tools, as a library so that the command line and the Rust
//! tests run the same code.
//!
//! - [`cases`]: test cases kept beside the policies (`<set>/tests/*.jsonl`), their runner,
//!   the coverage report, `--update`, and text, JSON and JUnit reports.
//! - [`domain`]: the finite domain of a policy set (apps, actions, places, postures) and
//!   each point's answer over time, walked segment by segment.
//! - [`diff`]: the semantic difference of two versions of a policy set.
//! - [`timeline`]: what is prohibited when, as SVG and HTML.
//! - [`fmt`]: the canonical layout of policy files.

#![forbid(unsafe_code)]

pub mod cases;
pub mod diff;
pub mod domain;
pub mod fmt;
pub mod timeline;

use std::path::Path;

/// Why a version of a policy set could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The files have problems: every one, rendered.
    #[error("`{path}` does not load:\n{rendered}")]
    Policy {
        /// The folder or bundle.
        path: String,
        /// The diagnostics, as `validate` shows them.
        rendered: String,
    },
    /// A bundle that does not parse, or whose files do not match its manifest.
    #[error("`{path}` is not a usable bundle: {source}")]
    Bundle {
        /// The bundle file.
        path: String,
        /// Why.
        source: gatekeeper::BundleError,
    },
    /// A file that cannot be read.
    #[error("cannot read `{path}`: {source}")]
    Io {
        /// The path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Loads a version of a policy set: a folder (or file) of policy files, or a bundle (a
/// file made by `gatekeeper bundle build`: JSON, or binary with its compiled image, whatever
/// its name; its files are checked against its manifest; signatures are not checked: a
/// diff reads content, it does not trust it).
pub fn load(path: &Path) -> Result<gatekeeper::LoadedPolicy, LoadError> {
    let display = path.display().to_string();
    let bundle_bytes = if path.is_file() && path.extension().is_none_or(|e| e != "toml") {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Io {
            path: display.clone(),
            source,
        })?;
        let json = path.extension().is_some_and(|e| e == "json");
        (json || gatekeeper::Bundle::is_binary(&bytes)).then_some(bytes)
    } else {
        None
    };
    if let Some(bytes) = bundle_bytes {
        let bundle = gatekeeper::Bundle::parse(&bytes)
            .and_then(|b| b.verify_digests().map(|()| b))
            .map_err(|source| LoadError::Bundle {
                path: display.clone(),
                source,
            })?;
        return bundle.load(&display).map_err(|source| match source {
            gatekeeper::BundleError::Policy(d) => LoadError::Policy {
                path: display.clone(),
                rendered: d.render(),
            },
            source => LoadError::Bundle {
                path: display.clone(),
                source,
            },
        });
    }
    gatekeeper::load_dirs(&[path]).map_err(|d| LoadError::Policy {
        path: display,
        rendered: d.render(),
    })
}
