//! Policy bundles: policy files packed with a manifest (a monotonic revision number, the
//! creation instant, an optional expiry and the SHA-256 of each file), as one JSON file,
//! signed by one or more Ed25519 keys.
//!
//! A signature covers the manifest, and through its digests every file. What is signed is
//! the text of a signed note (the Go `note` format of [`crate::keys`]): the line
//! `gatekeeper bundle manifest v1`, then the manifest as compact JSON (fields in the order of
//! [`Manifest`]), each followed by a newline. The bundle keeps the note's signature lines in
//! `signatures`; a verifier serializes the manifest it parsed the same way, so the bundle
//! file's own layout (indentation, key order) is not part of what is signed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use policy::{Diagnostics, Instant};
use serde::{Deserialize, Serialize};

use crate::keys::{KeyError, SignerKey, VerifierKey, open_note, sign_note};
use crate::revision::sha256_hex;
use crate::source::{LoadedPolicy, MemoryFiles, load_dirs, load_from};

/// The bundle format this crate reads and writes.
pub const BUNDLE_FORMAT: u32 = 1;

/// The first line of the signed text: says what the signature is for, so that a signature
/// made for something else with the same key (an audit checkpoint) is never a bundle's.
const SIGNED_CONTEXT: &str = "gatekeeper bundle manifest v1";

/// One file of a bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestFile {
    /// Relative path, `/`-separated.
    pub path: String,
    /// Hex SHA-256 of the file's text.
    pub sha256: String,
}

/// What a bundle says about itself; what its signatures cover.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    /// Monotonic: a bundle with a lower number than the highest accepted is refused.
    pub revision: u64,
    /// RFC 3339.
    pub created: String,
    /// RFC 3339; an expired bundle is refused, and an active one is withdrawn when it expires.
    pub expires: Option<String>,
    /// The folders (relative paths inside the bundle) the policy is loaded from.
    pub roots: Vec<String>,
    pub files: Vec<ManifestFile>,
}

/// A bundle: its manifest, the files' texts and the signatures.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    pub manifest: Manifest,
    pub files: BTreeMap<String, String>,
    /// Signature lines of the signed note over the manifest (`— <key name> <base64>`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signatures: Vec<String>,
}

/// Keys whose signatures a bundle needs: at least `threshold` of them, counted by key name
/// (an old and a new key of one signer, listed together during a rotation, count once).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustedKeys {
    keys: Vec<VerifierKey>,
    threshold: usize,
}

/// Why a set of trusted keys is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    #[error("a signature threshold of 0 accepts unsigned bundles; give at least 1")]
    ZeroThreshold,
    #[error(
        "a threshold of {threshold} signatures cannot be met by {names} distinctly named trusted keys"
    )]
    Unreachable { threshold: usize, names: usize },
}

impl TrustedKeys {
    /// Bundles must carry valid signatures by `threshold` of `keys`.
    pub fn new(
        keys: impl IntoIterator<Item = VerifierKey>,
        threshold: usize,
    ) -> Result<TrustedKeys, TrustError> {
        let keys: Vec<VerifierKey> = keys.into_iter().collect();
        let mut names: Vec<&str> = keys.iter().map(VerifierKey::name).collect();
        names.sort_unstable();
        names.dedup();
        if threshold == 0 {
            return Err(TrustError::ZeroThreshold);
        }
        if threshold > names.len() {
            return Err(TrustError::Unreachable {
                threshold,
                names: names.len(),
            });
        }
        Ok(TrustedKeys { keys, threshold })
    }

    /// The keys.
    pub fn keys(&self) -> &[VerifierKey] {
        &self.keys
    }

    /// How many distinct keys must have signed.
    pub fn threshold(&self) -> usize {
        self.threshold
    }
}

/// Why a bundle was refused.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("bundle is not valid JSON of format {BUNDLE_FORMAT}")]
    Malformed(#[source] serde_json::Error),
    #[error("bundle format {0} is not supported; this build reads format {BUNDLE_FORMAT}")]
    Format(u32),
    #[error("bundle digest {found} is not the pinned {pinned}")]
    Pin { found: String, pinned: String },
    #[error("bundle is not signed, and {threshold} signature(s) by trusted keys are required")]
    Unsigned { threshold: usize },
    #[error(
        "bundle has valid signatures by {} trusted key(s) ({}), and {threshold} are required",
        .signed_by.len(),
        if .signed_by.is_empty() { "none".to_owned() } else { .signed_by.join(", ") }
    )]
    UnderSigned {
        signed_by: Vec<String>,
        threshold: usize,
    },
    #[error("bundle signatures are refused")]
    Signature(#[source] KeyError),
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
    #[error("bundle expired at {at} (now {now})")]
    Expired { at: Instant, now: Instant },
    #[error(
        "bundle revision {bundle} is lower than revision {highest}, the highest accepted: rollback refused"
    )]
    Rollback { bundle: u64, highest: u64 },
    #[error("bundle instant `{0}` is not RFC 3339")]
    Instant(String),
    #[error("bundle policies do not load: {}\n{}", .0, .0.render())]
    Policy(Diagnostics),
    #[error("cannot resolve `{path}`")]
    Resolve {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Bundle {
    /// Packs the policy folders (which must load without a problem) into an unsigned bundle.
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
                std::fs::canonicalize(d.as_ref()).map_err(|source| BundleError::Resolve {
                    path: d.as_ref().to_path_buf(),
                    source,
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
            signatures: Vec::new(),
        })
    }

    /// The bundle as bytes to write or serve.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// Parses bundle bytes. Checks nothing beyond the shape: see [`Bundle::verify_signatures`]
    /// and [`Bundle::verify`].
    pub fn parse(bytes: &[u8]) -> Result<Bundle, BundleError> {
        let bundle: Bundle = serde_json::from_slice(bytes).map_err(BundleError::Malformed)?;
        if bundle.manifest.format != BUNDLE_FORMAT {
            return Err(BundleError::Format(bundle.manifest.format));
        }
        Ok(bundle)
    }

    /// The text the signatures cover: a context line, then the manifest as compact JSON.
    pub fn signed_text(&self) -> String {
        // Serializing a struct of strings and numbers cannot fail.
        let manifest = serde_json::to_string(&self.manifest).unwrap_or_default();
        format!("{SIGNED_CONTEXT}\n{manifest}\n")
    }

    /// Adds `key`'s signature over the manifest, replacing an earlier one by the same key.
    pub fn sign(&mut self, key: &SignerKey) -> Result<(), KeyError> {
        let note = sign_note(&self.signed_text(), &[key])?;
        let line = note
            .lines()
            .last()
            .ok_or_else(|| KeyError::MalformedNote("signing gave no signature".to_owned()))?
            .to_owned();
        let own = key.verifier();
        self.signatures
            .retain(|l| signature_key(l) != Some((own.name(), own.hash())));
        self.signatures.push(line);
        Ok(())
    }

    /// Checks the signatures against the trusted keys and returns the names of the keys
    /// whose signatures are valid. A signature by a key not in `trusted` is ignored; a
    /// signature that names a trusted key and does not verify refuses the bundle, as does
    /// having fewer valid signatures than the threshold.
    pub fn verify_signatures(&self, trusted: &TrustedKeys) -> Result<Vec<String>, BundleError> {
        if self.signatures.is_empty() {
            return Err(BundleError::Unsigned {
                threshold: trusted.threshold,
            });
        }
        if let Some(line) = self
            .signatures
            .iter()
            .find(|l| l.is_empty() || l.contains(['\n', '\r']))
        {
            return Err(BundleError::Signature(KeyError::MalformedNote(format!(
                "signature line `{}` is empty or spans lines",
                line.escape_debug()
            ))));
        }
        let note = format!("{}\n{}\n", self.signed_text(), self.signatures.join("\n"));
        let (_, signed_by) = open_note(&note, &trusted.keys).map_err(BundleError::Signature)?;
        if signed_by.len() < trusted.threshold {
            return Err(BundleError::UnderSigned {
                signed_by,
                threshold: trusted.threshold,
            });
        }
        Ok(signed_by)
    }

    /// Checks every file against its digest in the manifest, and that the bundle holds
    /// exactly the files the manifest lists.
    pub fn verify_digests(&self) -> Result<(), BundleError> {
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
        Ok(())
    }

    /// The manifest's expiry, if it has one.
    pub fn expires(&self) -> Result<Option<Instant>, BundleError> {
        self.manifest
            .expires
            .as_deref()
            .map(|e| Instant::parse_rfc3339(e).map_err(|_| BundleError::Instant(e.to_owned())))
            .transpose()
    }

    /// Checks every digest, that the revision number is not lower than `highest` (the
    /// highest accepted so far), and the expiry against `now`, in that order (TUF's:
    /// rollback before freeze). Signatures are checked apart: [`Bundle::verify_signatures`].
    pub fn verify(&self, now: Instant, highest: Option<u64>) -> Result<(), BundleError> {
        self.verify_digests()?;
        if let Some(highest) = highest
            && self.manifest.revision < highest
        {
            return Err(BundleError::Rollback {
                bundle: self.manifest.revision,
                highest,
            });
        }
        if let Some(at) = self.expires()?
            && at <= now
        {
            return Err(BundleError::Expired { at, now });
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

/// The key name and key hash a signature line names, if it is well formed.
fn signature_key(line: &str) -> Option<(&str, u32)> {
    let (name, sig) = line.strip_prefix("\u{2014} ")?.split_once(' ')?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(sig).ok()?;
    let hash = u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?);
    Some((name, hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle() -> Bundle {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../policies/us-2020");
        let created = Instant::parse_rfc3339("2026-01-01T00:00:00Z").unwrap();
        Bundle::build(&[root], 3, created, None).unwrap()
    }

    #[test]
    fn signatures_cover_the_manifest_not_the_layout() {
        let alice = SignerKey::generate("alice").unwrap();
        let mut b = bundle();
        b.sign(&alice).unwrap();
        b.sign(&alice).unwrap();
        assert_eq!(
            b.signatures.len(),
            1,
            "signing again replaces the signature"
        );
        let trusted = TrustedKeys::new([alice.verifier()], 1).unwrap();
        // Compact and pretty JSON verify alike: the manifest is re-serialized.
        let compact = serde_json::to_vec(&b).unwrap();
        let again = Bundle::parse(&compact).unwrap();
        assert_eq!(again.verify_signatures(&trusted).unwrap(), vec!["alice"]);
        let mut raised = again.clone();
        raised.manifest.revision += 1;
        assert!(matches!(
            raised.verify_signatures(&trusted),
            Err(BundleError::Signature(_))
        ));
    }

    #[test]
    fn thresholds_count_distinct_names() {
        let a = SignerKey::generate("a").unwrap();
        assert_eq!(
            TrustedKeys::new([a.verifier()], 2),
            Err(TrustError::Unreachable {
                threshold: 2,
                names: 1
            })
        );
        assert_eq!(
            TrustedKeys::new([a.verifier()], 0),
            Err(TrustError::ZeroThreshold)
        );
    }
}
