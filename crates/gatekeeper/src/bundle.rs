//! Policy bundles: policy files packed with a manifest (a monotonic revision number, the
//! creation instant, an optional expiry and the SHA-256 of each file), signed by one or more
//! Ed25519 keys, and perhaps the compiled image of the policy, which loads without parsing,
//! validating or compiling the files.
//!
//! Two formats, both read:
//!
//! - **Format 1**: no image; one JSON file `{"manifest", "files", "signatures"}`, each file's
//!   text a JSON string.
//! - **Format 2**: with the image (`manifest.image`: the engine build that made it, its
//!   SHA-256 and size; every file's size too). Written as a binary file: the line
//!   `gatekeeper-bundle 2`, a line with the decimal length of the header, the header (compact
//!   JSON `{"manifest", "signatures"}`), then each file's bytes in the manifest's order, then
//!   the image's bytes, and nothing after. Its JSON form (the image as base64) is read too.
//!
//! A signature covers the manifest, and through its digests every file and the image. What is
//! signed is the text of a signed note (the Go `note` format of [`crate::keys`]): the line
//! `gatekeeper bundle manifest v1`, then the manifest as compact JSON (fields in the order of
//! [`Manifest`]; `image` and the files' `size` only when present, so that a format 1 manifest
//! signs exactly as before), each followed by a newline. The bundle keeps the note's signature
//! lines in `signatures`; a verifier serializes the manifest it parsed the same way, so the
//! bundle file's own layout (indentation, key order, binary or JSON) is not part of what is
//! signed.
//!
//! A bundle's policy is loaded from the image when the image was made by this engine build
//! (`policy::image_build()`), and compiled from the files otherwise, or when the image does
//! not load: [`LoadedPolicy::image`] says which, and why.

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use policy::{Diagnostics, Instant};
use serde::{Deserialize, Serialize};

use crate::keys::{KeyError, SignerKey, VerifierKey, open_note, sign_note};
use crate::revision::{Revision, sha256_hex};
use crate::source::{
    ImageSkipped, ImageUse, LoadedPolicy, MAX_POLICY_FILE_BYTES, TakenFiles, load_dirs, load_from,
};

/// The format of a bundle without a compiled image (a JSON file).
pub const BUNDLE_FORMAT: u32 = 1;

/// The format of a bundle with the compiled image of its policy (a binary file).
pub const BUNDLE_FORMAT_IMAGE: u32 = 2;

/// How a binary bundle begins: this, the format number and a newline.
const BINARY_MAGIC: &[u8] = b"gatekeeper-bundle ";

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
    /// Length of the file's text in bytes: in format 2 (where it places the file in the
    /// binary form), never in format 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// The compiled image of a bundle's policy, as its manifest lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestImage {
    /// The engine build that compiled it (`policy::image_build()`): a build loads only its own.
    pub build: String,
    /// Hex SHA-256 of the image.
    pub sha256: String,
    /// Length of the image in bytes.
    pub size: u64,
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
    /// The compiled image of the policy (format 2 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ManifestImage>,
}

/// A bundle: its manifest, the files' texts, the compiled image if any, and the signatures.
/// Its serde form is the JSON form (the image as base64); [`Bundle::to_bytes`] writes a
/// bundle with an image in the binary form, which loads faster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    pub manifest: Manifest,
    pub files: BTreeMap<String, String>,
    /// The compiled image of the policy (`policy::Policy::to_image`), in format 2.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "base64_image"
    )]
    pub image: Option<Vec<u8>>,
    /// Signature lines of the signed note over the manifest (`— <key name> <base64>`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signatures: Vec<String>,
}

/// The header of a binary bundle: what precedes the files' bytes.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    manifest: Manifest,
    #[serde(default)]
    signatures: Vec<String>,
}

/// [`Header`], borrowed, for writing.
#[derive(Serialize)]
struct HeaderRef<'a> {
    manifest: &'a Manifest,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    signatures: &'a [String],
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
    #[error("bundle is neither a binary bundle nor valid JSON of a bundle")]
    Malformed(#[source] serde_json::Error),
    #[error(
        "bundle format {0} is not supported; this build reads formats {BUNDLE_FORMAT} and {BUNDLE_FORMAT_IMAGE}"
    )]
    Format(u32),
    #[error("binary bundle is malformed: {0}")]
    Binary(String),
    #[error("binary bundle's header is not valid JSON of a bundle's manifest and signatures")]
    Header(#[source] serde_json::Error),
    #[error("bundle manifest of format {format} is inconsistent: {problem}")]
    Inconsistent { format: u32, problem: String },
    #[error("bundle file `{path}` is {found} bytes, and its manifest says {expected}")]
    Size {
        path: String,
        expected: u64,
        found: u64,
    },
    #[error(
        "bundle's compiled image does not match its manifest (expected SHA-256 {expected} of {expected_size} bytes, found {found} of {found_size} bytes)"
    )]
    ImageDigest {
        expected: String,
        expected_size: u64,
        found: String,
        found_size: u64,
    },
    #[error("bundle manifest lists a compiled image, which the bundle does not hold")]
    ImageMissing,
    #[error("bundle holds a compiled image, which its manifest does not list")]
    ImageUnlisted,
    #[error(
        "bundle holds {} that its policy does not load ({}); a bundle with a compiled image holds exactly the files its policy loads",
        if .0.len() == 1 { "a file" } else { "files" },
        .0.iter().map(|p| format!("`{p}`")).collect::<Vec<_>>().join(", ")
    )]
    Unloaded(Vec<String>),
    #[error("the compiled image of the policy does not load back: {0}")]
    Image(policy::ImageError),
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
    /// Packs the policy folders (which must load without a problem) into an unsigned bundle
    /// of format 1, without a compiled image.
    pub fn build<P: AsRef<Path>>(
        dirs: &[P],
        revision: u64,
        created: Instant,
        expires: Option<Instant>,
    ) -> Result<Bundle, BundleError> {
        Bundle::pack(dirs, revision, created, expires, false)
    }

    /// Packs the policy folders (which must load without a problem) into an unsigned bundle
    /// of format 2, with the compiled image of their policy made by this engine build
    /// (checked to load back).
    pub fn build_with_image<P: AsRef<Path>>(
        dirs: &[P],
        revision: u64,
        created: Instant,
        expires: Option<Instant>,
    ) -> Result<Bundle, BundleError> {
        Bundle::pack(dirs, revision, created, expires, true)
    }

    fn pack<P: AsRef<Path>>(
        dirs: &[P],
        revision: u64,
        created: Instant,
        expires: Option<Instant>,
        with_image: bool,
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
        for (path, text) in loaded.files.iter().zip(loaded.texts) {
            let rel = relative(path);
            listed.push(ManifestFile {
                path: rel.clone(),
                sha256: sha256_hex(text.as_bytes()),
                size: with_image.then_some(text.len() as u64),
            });
            files.insert(rel, text);
        }
        listed.sort_by(|a, b| a.path.cmp(&b.path));
        let mut bundle = Bundle {
            manifest: Manifest {
                format: BUNDLE_FORMAT,
                revision,
                created: created.to_string(),
                expires: expires.map(|e| e.to_string()),
                roots: roots.iter().map(|r| relative(r)).collect(),
                files: listed,
                image: None,
            },
            files,
            image: None,
            signatures: Vec::new(),
        };
        if with_image {
            // The image is compiled from the files as the bundle holds and names them (the
            // policy keeps each instrument's file name), not as they were found on disk: so
            // it depends on the bundle's content alone, whoever builds it and from where, and
            // is byte for byte what loading the bundle's files gives.
            drop(loaded.policy);
            let compiled = compile_files(
                &bundle.manifest,
                bundle.files.clone(),
                "",
                ImageUse::NotOffered,
            )?;
            let image = compiled.policy.to_image();
            drop(compiled);
            // A build bug found here, not where the bundle is loaded.
            policy::Policy::from_image(&image).map_err(BundleError::Image)?;
            bundle.manifest.format = BUNDLE_FORMAT_IMAGE;
            bundle.manifest.image = Some(ManifestImage {
                build: policy::image_build().to_owned(),
                sha256: sha256_hex(&image),
                size: image.len() as u64,
            });
            bundle.image = Some(image);
        }
        Ok(bundle)
    }

    /// The bundle as bytes to write or serve: a bundle with an image in the binary form, one
    /// without in the JSON form of format 1. (A bundle whose files or image do not match the
    /// sizes its manifest gives cannot be laid out in the binary form, and is written as
    /// JSON, which keeps it as it is: it then fails [`Bundle::verify_digests`] on reading.)
    pub fn to_bytes(&self) -> Vec<u8> {
        if self.image.is_some()
            && let Some(bytes) = self.to_binary()
        {
            return bytes;
        }
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// The binary form, if the files and the image are those the manifest lists, with the
    /// sizes it gives.
    fn to_binary(&self) -> Option<Vec<u8>> {
        let image = self.image.as_deref()?;
        if self.manifest.image.as_ref()?.size != image.len() as u64
            || self.files.len() != self.manifest.files.len()
        {
            return None;
        }
        let mut payload: Vec<&[u8]> = Vec::with_capacity(self.manifest.files.len() + 1);
        for entry in &self.manifest.files {
            let text = self.files.get(&entry.path)?;
            if entry.size? != text.len() as u64 {
                return None;
            }
            payload.push(text.as_bytes());
        }
        payload.push(image);
        let header = serde_json::to_vec(&HeaderRef {
            manifest: &self.manifest,
            signatures: &self.signatures,
        })
        .ok()?;
        let head = format!(
            "{}{}\n{}\n",
            String::from_utf8_lossy(BINARY_MAGIC),
            self.manifest.format,
            header.len()
        );
        let total = head.len() + header.len() + payload.iter().map(|p| p.len()).sum::<usize>();
        let mut bytes = Vec::with_capacity(total);
        bytes.extend_from_slice(head.as_bytes());
        bytes.extend_from_slice(&header);
        for part in payload {
            bytes.extend_from_slice(part);
        }
        Some(bytes)
    }

    /// Whether bytes begin as a bundle in the binary form does (a bundle with its image);
    /// bundles without one are JSON.
    pub fn is_binary(bytes: &[u8]) -> bool {
        bytes.starts_with(BINARY_MAGIC)
    }

    /// Parses bundle bytes, binary or JSON. Checks nothing beyond the shape and the
    /// manifest's consistency with its format: see [`Bundle::verify_signatures`] and
    /// [`Bundle::verify`].
    pub fn parse(bytes: &[u8]) -> Result<Bundle, BundleError> {
        let bundle = if bytes.starts_with(BINARY_MAGIC) {
            let (mut bundle, image) = parse_binary(bytes)?;
            bundle.image = image.and_then(|range| bytes.get(range)).map(<[u8]>::to_vec);
            bundle
        } else {
            serde_json::from_slice(bytes).map_err(BundleError::Malformed)?
        };
        bundle.manifest.check_format()?;
        Ok(bundle)
    }

    /// [`Bundle::parse`], keeping the image of a binary bundle in the bytes' own buffer
    /// rather than copying it out: a large bundle's image is then held once, not twice.
    pub fn parse_owned(mut bytes: Vec<u8>) -> Result<Bundle, BundleError> {
        if !bytes.starts_with(BINARY_MAGIC) {
            return Bundle::parse(&bytes);
        }
        let (mut bundle, image) = parse_binary(&bytes)?;
        bundle.manifest.check_format()?;
        if let Some(range) = image {
            bytes.truncate(range.end);
            bytes.drain(..range.start);
            bytes.shrink_to_fit();
            bundle.image = Some(bytes);
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

    /// Checks every file (and the image) against its digest and size in the manifest, and
    /// that the bundle holds exactly the files (and image) the manifest lists.
    pub fn verify_digests(&self) -> Result<(), BundleError> {
        self.manifest.check_format()?;
        // What costs nothing first: every part is there, with the size listed.
        for entry in &self.manifest.files {
            let text = self
                .files
                .get(&entry.path)
                .ok_or_else(|| BundleError::Missing(entry.path.clone()))?;
            if let Some(expected) = entry.size
                && expected != text.len() as u64
            {
                return Err(BundleError::Size {
                    path: entry.path.clone(),
                    expected,
                    found: text.len() as u64,
                });
            }
        }
        let listed: HashSet<&str> = self
            .manifest
            .files
            .iter()
            .map(|f| f.path.as_str())
            .collect();
        if let Some(path) = self.files.keys().find(|p| !listed.contains(p.as_str())) {
            return Err(BundleError::Unlisted(path.clone()));
        }
        let image = match (&self.manifest.image, &self.image) {
            (None, None) => None,
            (None, Some(_)) => return Err(BundleError::ImageUnlisted),
            (Some(_), None) => return Err(BundleError::ImageMissing),
            (Some(entry), Some(image)) => Some((entry, image.as_slice())),
        };
        // Then the digests: a large image (the largest part of a large bundle) is hashed on a
        // thread of its own beside the files.
        let (files, image) = std::thread::scope(|scope| {
            let apart = image
                .filter(|(_, bytes)| bytes.len() >= HASH_APART_BYTES)
                .and_then(|(entry, bytes)| {
                    std::thread::Builder::new()
                        .name("bundle-digest".to_owned())
                        .spawn_scoped(scope, move || check_image(entry, bytes))
                        .ok()
                });
            let files = self.check_file_digests();
            let image = match apart {
                Some(thread) => thread
                    .join()
                    .unwrap_or_else(|e| std::panic::resume_unwind(e)),
                None => image.map_or(Ok(()), |(entry, bytes)| check_image(entry, bytes)),
            };
            (files, image)
        });
        files.and(image)
    }

    /// Every file's text against its digest.
    fn check_file_digests(&self) -> Result<(), BundleError> {
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

    /// Loads the bundle's policy (after [`Bundle::verify`]): from the compiled image when
    /// this engine build made it, otherwise from the files ([`LoadedPolicy::image`] says
    /// which, and why). The files of a bundle with an image, when compiled, must all be
    /// loaded by its policy ([`BundleError::Unloaded`]): loading the image gives the revision
    /// of them all. Copies the files' texts into the result: [`Bundle::into_loaded`] moves
    /// them.
    pub fn load(&self, label: &str) -> Result<LoadedPolicy, BundleError> {
        load_parts(
            &self.manifest,
            self.files.clone(),
            self.image.as_deref(),
            label,
        )
    }

    /// [`Bundle::load`], moving the files' texts into the result rather than copying them.
    pub fn into_loaded(self, label: &str) -> Result<LoadedPolicy, BundleError> {
        load_parts(&self.manifest, self.files, self.image.as_deref(), label)
    }

    /// Compiles the bundle's policy from its files, whatever its image: what the image is
    /// checked against (`gatekeeper bundle verify --recompile`). A bundle with an image must
    /// hold no file its policy does not load.
    pub fn load_files(&self, label: &str) -> Result<LoadedPolicy, BundleError> {
        compile_files(
            &self.manifest,
            self.files.clone(),
            label,
            ImageUse::NotOffered,
        )
    }
}

impl Manifest {
    /// The manifest holds what its format has: in format 1 no image and no sizes, in format
    /// 2 an image and every file's size.
    fn check_format(&self) -> Result<(), BundleError> {
        let inconsistent = |problem: String| BundleError::Inconsistent {
            format: self.format,
            problem,
        };
        match self.format {
            BUNDLE_FORMAT => {
                if self.image.is_some() {
                    return Err(inconsistent(format!(
                        "it lists a compiled image, which only format {BUNDLE_FORMAT_IMAGE} has"
                    )));
                }
                if let Some(f) = self.files.iter().find(|f| f.size.is_some()) {
                    return Err(inconsistent(format!(
                        "file `{}` has a size, which only format {BUNDLE_FORMAT_IMAGE} gives",
                        f.path
                    )));
                }
                Ok(())
            }
            BUNDLE_FORMAT_IMAGE => {
                if self.image.is_none() {
                    return Err(inconsistent(
                        "it lists no compiled image, and this format is that of bundles with one"
                            .to_owned(),
                    ));
                }
                if let Some(f) = self.files.iter().find(|f| f.size.is_none()) {
                    return Err(inconsistent(format!("file `{}` has no size", f.path)));
                }
                let mut seen = HashSet::new();
                if let Some(f) = self.files.iter().find(|f| !seen.insert(f.path.as_str())) {
                    return Err(inconsistent(format!("file `{}` is listed twice", f.path)));
                }
                Ok(())
            }
            other => Err(BundleError::Format(other)),
        }
    }
}

/// Loads a bundle's policy from its parts: from the image when this build made it and it
/// loads; otherwise from the files, saying why the image was not used.
fn load_parts(
    manifest: &Manifest,
    files: BTreeMap<String, String>,
    image: Option<&[u8]>,
    label: &str,
) -> Result<LoadedPolicy, BundleError> {
    // A file over the limit on a policy file fails the load whichever way it is made: the
    // files are compiled, which reports it.
    let oversized = files
        .values()
        .any(|t| t.len() as u64 > MAX_POLICY_FILE_BYTES);
    let skipped = match (&manifest.image, image) {
        (None, None) => None,
        (None, Some(_)) => return Err(BundleError::ImageUnlisted),
        (Some(_), None) => return Err(BundleError::ImageMissing),
        (Some(_), Some(_)) if oversized => None,
        (Some(entry), Some(_)) if entry.build != policy::image_build() => {
            Some(ImageSkipped::OtherBuild {
                found: entry.build.clone(),
                expected: policy::image_build().to_owned(),
            })
        }
        (Some(_), Some(image)) => match policy::Policy::from_image(image) {
            Ok(policy) => return Ok(loaded_from_image(manifest, files, policy)),
            Err(e) => Some(ImageSkipped::Refused(e)),
        },
    };
    let image = match skipped {
        Some(why) => ImageUse::Skipped(why),
        None => ImageUse::NotOffered,
    };
    compile_files(manifest, files, label, image)
}

/// Compiles a bundle's policy from its files (each text moved into the result, not copied).
/// The files are named by their paths in the bundle, as when the image was compiled, so that
/// the two policies are the same; diagnostics name them `label:path`.
fn compile_files(
    manifest: &Manifest,
    files: BTreeMap<String, String>,
    label: &str,
    image: ImageUse,
) -> Result<LoadedPolicy, BundleError> {
    let taken = TakenFiles::new(files);
    let roots: Vec<PathBuf> = manifest.roots.iter().map(PathBuf::from).collect();
    let mut loaded = load_from(&taken, &roots).map_err(|Diagnostics(mut found)| {
        if !label.is_empty() {
            for d in &mut found {
                d.file = format!("{label}:{}", d.file);
                for r in &mut d.related {
                    r.file = format!("{label}:{}", r.file);
                }
            }
        }
        BundleError::Policy(Diagnostics(found))
    })?;
    if manifest.image.is_some() {
        // Loading the image gives the revision of every file in the bundle; the two ways
        // agree only if the policy loads every file.
        let unread = taken.unread();
        if !unread.is_empty() {
            return Err(BundleError::Unloaded(unread));
        }
    }
    loaded.image = image;
    Ok(loaded)
}

/// A policy loaded from the image, with the bundle's files and their revision (from the
/// manifest's digests, which [`Bundle::verify_digests`] checks: the revision the files give
/// when compiled, since a bundle with an image holds exactly the files its policy loads).
fn loaded_from_image(
    manifest: &Manifest,
    files: BTreeMap<String, String>,
    policy: policy::Policy,
) -> LoadedPolicy {
    let revision = Revision::of_digests(manifest.files.iter().map(|f| f.sha256.as_str()));
    let (paths, texts) = files
        .into_iter()
        .map(|(path, text)| (PathBuf::from(path), text))
        .unzip();
    LoadedPolicy {
        policy,
        files: paths,
        texts,
        revision,
        image: ImageUse::Loaded,
    }
}

/// Parses the binary form: magic and format line, header length line, header, the files'
/// bytes in the manifest's order, the image's bytes, nothing after.
/// The bundle with its image left out, and where the image lies in `bytes`.
fn parse_binary(bytes: &[u8]) -> Result<(Bundle, Option<Range<usize>>), BundleError> {
    let bad = |m: String| BundleError::Binary(m);
    let rest = bytes.get(BINARY_MAGIC.len()..).unwrap_or_default();
    let (format, rest) = line(rest, "the format line")?;
    let format: u32 = format.parse().map_err(|_| {
        bad(format!(
            "the format `{}` is not a number",
            format.escape_debug()
        ))
    })?;
    if format != BUNDLE_FORMAT_IMAGE {
        return Err(BundleError::Format(format));
    }
    let (length, rest) = line(rest, "the header length line")?;
    let length: usize = length.parse().map_err(|_| {
        bad(format!(
            "the header length `{}` is not a number",
            length.escape_debug()
        ))
    })?;
    if length > rest.len() {
        return Err(bad(format!(
            "the header is said to be {length} bytes, and only {} follow",
            rest.len()
        )));
    }
    let (header, mut rest) = rest.split_at(length);
    let header: Header = serde_json::from_slice(header).map_err(BundleError::Header)?;
    if header.manifest.format != format {
        return Err(bad(format!(
            "the file says format {format}, and its manifest {}",
            header.manifest.format
        )));
    }
    let mut take = |what: &str, size: Option<u64>| -> Result<&[u8], BundleError> {
        let size = size.ok_or_else(|| bad(format!("the manifest gives no size for {what}")))?;
        let size = usize::try_from(size)
            .ok()
            .filter(|s| *s <= rest.len())
            .ok_or_else(|| {
                bad(format!(
                    "{what} is said to be {size} bytes, and only {} remain",
                    rest.len()
                ))
            })?;
        let (part, after) = rest.split_at(size);
        rest = after;
        Ok(part)
    };
    let mut files = BTreeMap::new();
    for entry in &header.manifest.files {
        let what = format!("file `{}`", entry.path);
        let part = take(&what, entry.size)?;
        let text = std::str::from_utf8(part).map_err(|e| {
            bad(format!(
                "{what} is not UTF-8 text (byte {} of the file)",
                e.valid_up_to()
            ))
        })?;
        if files.insert(entry.path.clone(), text.to_owned()).is_some() {
            return Err(bad(format!("the manifest lists {what} twice")));
        }
    }
    let image = match &header.manifest.image {
        Some(entry) => {
            let image = take("the compiled image", Some(entry.size))?;
            let end = bytes.len() - rest.len();
            Some(end - image.len()..end)
        }
        None => None,
    };
    if !rest.is_empty() {
        return Err(bad(format!(
            "{} bytes follow the last part the manifest lists",
            rest.len()
        )));
    }
    let bundle = Bundle {
        manifest: header.manifest,
        files,
        image: None,
        signatures: header.signatures,
    };
    Ok((bundle, image))
}

/// An image at least this large is hashed on a thread of its own (1 MiB).
const HASH_APART_BYTES: usize = 1 << 20;

/// The image against its size and digest in the manifest.
fn check_image(entry: &ManifestImage, image: &[u8]) -> Result<(), BundleError> {
    let found = sha256_hex(image);
    if found != entry.sha256.to_ascii_lowercase() || entry.size != image.len() as u64 {
        return Err(BundleError::ImageDigest {
            expected: entry.sha256.clone(),
            expected_size: entry.size,
            found,
            found_size: image.len() as u64,
        });
    }
    Ok(())
}

/// The text up to the next newline (at most 20 bytes: a format or a length), and what
/// follows it.
fn line<'a>(bytes: &'a [u8], what: &str) -> Result<(&'a str, &'a [u8]), BundleError> {
    let end = bytes
        .iter()
        .take(21)
        .position(|&b| b == b'\n')
        .ok_or_else(|| BundleError::Binary(format!("{what} is missing or too long")))?;
    let text = std::str::from_utf8(&bytes[..end])
        .map_err(|_| BundleError::Binary(format!("{what} is not text")))?;
    Ok((text, &bytes[end + 1..]))
}

/// The image as base64 in the JSON form.
mod base64_image {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserializer, Serializer, de};

    pub(super) fn serialize<S: Serializer>(
        image: &Option<Vec<u8>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match image {
            Some(bytes) => s.serialize_str(&STANDARD.encode(bytes)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Vec<u8>>, D::Error> {
        d.deserialize_option(Image)
    }

    struct Image;

    impl<'de> de::Visitor<'de> for Image {
        type Value = Option<Vec<u8>>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("the compiled image as a base64 string")
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_str(self)
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            STANDARD
                .decode(v)
                .map(Some)
                .map_err(|e| E::custom(format!("the compiled image is not base64: {e}")))
        }
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
