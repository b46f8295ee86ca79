//! Policy bundles: policy files packed with a manifest (a monotonic revision number, the
//! creation instant, an optional expiry and the SHA-256 of each file), as one JSON file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use policy::{Diagnostics, Instant};
use serde::{Deserialize, Serialize};

use crate::revision::sha256_hex;
use crate::source::{LoadedPolicy, MemoryFiles, load_dirs, load_from};

/// The bundle format this crate reads and writes.
pub const BUNDLE_FORMAT: u32 = 1;

/// One file of a bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestFile {
    /// Relative path, `/`-separated.
    pub path: String,
    /// Hex SHA-256 of the file's text.
    pub sha256: String,
}

/// What a bundle says about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    /// Monotonic: a bundle with a lower number than the active one is refused.
    pub revision: u64,
    /// RFC 3339.
    pub created: String,
    /// RFC 3339; an expired bundle is refused.
    pub expires: Option<String>,
    /// The folders (relative paths inside the bundle) the policy is loaded from.
    pub roots: Vec<String>,
    pub files: Vec<ManifestFile>,
}

/// A bundle: its manifest and the files' texts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    pub manifest: Manifest,
    pub files: BTreeMap<String, String>,
}

/// Why a bundle was refused.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("bundle is not valid JSON of format {BUNDLE_FORMAT}: {0}")]
    Malformed(String),
    #[error("bundle format {0} is not supported; this build reads format {BUNDLE_FORMAT}")]
    Format(u32),
    #[error(
        "bundle file `{path}` does not match its manifest digest (expected {expected}, found {found})"
    )]
    Digest {
        path: String,
        expected: String,
        found: String,
    },
    #[error("bundle manifest lists `{0}`, which the bundle does not hold")]
    Missing(String),
    #[error("bundle holds `{0}`, which its manifest does not list")]
    Unlisted(String),
    #[error("bundle expired at {expires} (now {now})")]
    Expired { expires: String, now: String },
    #[error(
        "bundle revision {bundle} is lower than the active revision {active}: rollback refused"
    )]
    Rollback { bundle: u64, active: u64 },
    #[error("bundle instant `{0}` is not RFC 3339")]
    Instant(String),
    #[error("bundle policies do not load: {}\n{}", .0, .0.render())]
    Policy(Diagnostics),
    #[error("{0}")]
    Build(String),
}

impl Bundle {
    /// Packs the policy folders (which must load without a problem) into a bundle.
    pub fn build<P: AsRef<Path>>(
        dirs: &[P],
        revision: u64,
        created: Instant,
        expires: Option<Instant>,
    ) -> Result<Bundle, BundleError> {
        let loaded = load_dirs(dirs).map_err(BundleError::Policy)?;
        let roots: Vec<PathBuf> = dirs
            .iter()
            .map(|d| {
                std::fs::canonicalize(d.as_ref()).map_err(|e| {
                    BundleError::Build(format!("cannot resolve `{}`: {e}", d.as_ref().display()))
                })
            })
            .collect::<Result<_, _>>()?;
        // Paths inside the bundle are relative to the deepest folder holding every file and root.
        let mut base = loaded
            .files
            .first()
            .and_then(|f| f.parent())
            .map(Path::to_path_buf)
            .unwrap_or_default();
        for p in loaded.files.iter().chain(roots.iter()) {
            while !p.starts_with(&base) {
                match base.parent() {
                    Some(parent) => base = parent.to_path_buf(),
                    None => break,
                }
            }
        }
        let relative = |p: &Path| -> String {
            p.strip_prefix(&base)
                .unwrap_or(p)
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/")
        };
        let mut files = BTreeMap::new();
        let mut listed = Vec::new();
        for (path, text) in loaded.files.iter().zip(&loaded.texts) {
            let rel = relative(path);
            listed.push(ManifestFile {
                path: rel.clone(),
                sha256: sha256_hex(text.as_bytes()),
            });
            files.insert(rel, text.clone());
        }
        listed.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(Bundle {
            manifest: Manifest {
                format: BUNDLE_FORMAT,
                revision,
                created: created.to_string(),
                expires: expires.map(|e| e.to_string()),
                roots: roots.iter().map(|r| relative(r)).collect(),
                files: listed,
            },
            files,
        })
    }

    /// The bundle as bytes to write or serve.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// Parses bundle bytes. Checks nothing beyond the shape: see [`Bundle::verify`].
    pub fn parse(bytes: &[u8]) -> Result<Bundle, BundleError> {
        let bundle: Bundle =
            serde_json::from_slice(bytes).map_err(|e| BundleError::Malformed(e.to_string()))?;
        if bundle.manifest.format != BUNDLE_FORMAT {
            return Err(BundleError::Format(bundle.manifest.format));
        }
        Ok(bundle)
    }

    /// Checks every digest, the expiry against `now`, and that the revision number is
    /// not lower than the active one.
    pub fn verify(&self, now: Instant, active: Option<u64>) -> Result<(), BundleError> {
        for entry in &self.manifest.files {
            let text = self
                .files
                .get(&entry.path)
                .ok_or_else(|| BundleError::Missing(entry.path.clone()))?;
            let found = sha256_hex(text.as_bytes());
            if found != entry.sha256.to_ascii_lowercase() {
                return Err(BundleError::Digest {
                    path: entry.path.clone(),
                    expected: entry.sha256.clone(),
                    found,
                });
            }
        }
        for path in self.files.keys() {
            if !self.manifest.files.iter().any(|f| &f.path == path) {
                return Err(BundleError::Unlisted(path.clone()));
            }
        }
        if let Some(expires) = &self.manifest.expires {
            let at = Instant::parse_rfc3339(expires)
                .map_err(|_| BundleError::Instant(expires.clone()))?;
            if at <= now {
                return Err(BundleError::Expired {
                    expires: expires.clone(),
                    now: now.to_string(),
                });
            }
        }
        if let Some(active) = active
            && self.manifest.revision < active
        {
            return Err(BundleError::Rollback {
                bundle: self.manifest.revision,
                active,
            });
        }
        Ok(())
    }

    /// Loads the bundle's policy (after [`Bundle::verify`]).
    pub fn load(&self, label: &str) -> Result<LoadedPolicy, BundleError> {
        let files = MemoryFiles {
            files: self.files.clone(),
            label: format!("{label}:"),
        };
        let roots: Vec<PathBuf> = self.manifest.roots.iter().map(PathBuf::from).collect();
        load_from(&files, &roots).map_err(BundleError::Policy)
    }
}
