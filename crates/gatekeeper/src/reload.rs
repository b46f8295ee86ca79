//! Reloading: where policies come from, what makes a bundle acceptable, and the state that
//! outlives one reload (the highest bundle revision accepted, the `ETag`, the cache).
//!
//! [`Reloader::next`] reads the source and hands the handle a [`Candidate`]: a loaded policy
//! that passed every check, which the handle installs (or finds already active). A bundle,
//! from a file, a URL or the cache, is accepted only when, in this order (TUF's):
//!
//! 1. its bytes have the pinned SHA-256, if one is pinned;
//! 2. it is signed by the threshold of trusted keys, if keys are configured (a signature by a
//!    key not in the list is ignored; a signature by a listed key that does not verify
//!    refuses the bundle);
//! 3. every file matches its digest in the (signed) manifest;
//! 4. its revision is not lower than the highest accepted so far (rollback);
//! 5. it has not expired (freeze);
//! 6. its policies load.
//!
//! Only a bundle that passed all of these raises the highest revision, so once signatures
//! are required a forged bundle (any revision, `u64::MAX` included) never locks out the
//! next legitimate one. The cache holds the last bundle accepted; at start it is checked
//! like a download, and even when it has expired its revision remains the floor for
//! rollback, so a restart does not reopen the door to older bundles.

use std::path::PathBuf;

use policy::{Diagnostics, Instant};

use crate::bundle::{Bundle, BundleError, TrustedKeys};
use crate::revision::{Revision, sha256_hex};
use crate::source::{LoadedPolicy, ReadError, load_dirs, read_bounded};

#[cfg(feature = "http-source")]
use crate::http_source::{FetchError, Fetched, HttpSource};

/// The default limit on a bundle's size, over HTTP and on disk: 256 MiB (a bundle of
/// 100,000 apps with its compiled image is some 64 MB).
pub const DEFAULT_MAX_BUNDLE_BYTES: u64 = 256 * 1024 * 1024;

/// Where policies come from.
#[derive(Clone, Debug)]
pub enum PolicySource {
    /// Policy folders on disk.
    Dirs(Vec<PathBuf>),
    /// A bundle file on disk.
    BundleFile(PathBuf),
    /// A bundle served over HTTPS.
    #[cfg(feature = "http-source")]
    BundleUrl(HttpSource),
}

/// Why a reload did not change the active policy.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("no policy source is configured")]
    NoSource,
    #[error("policies do not load: {0}")]
    Policy(Diagnostics),
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[cfg(feature = "http-source")]
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Read(#[from] ReadError),
}

/// A reload error for logs: the error, each of its sources, and every diagnostic.
pub(crate) fn describe(error: &ReloadError) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    if let ReloadError::Policy(d) = error {
        text.push('\n');
        text.push_str(d.render().trim_end());
    }
    text
}

/// What a bundle said about itself, once accepted.
#[derive(Clone, Debug)]
pub(crate) struct BundleFacts {
    pub(crate) revision: u64,
    pub(crate) expires: Option<Instant>,
    pub(crate) signed_by: Vec<String>,
}

/// A policy that passed every check, for the handle to install.
#[derive(Debug)]
pub(crate) struct Candidate {
    pub(crate) loaded: LoadedPolicy,
    pub(crate) bundle: Option<BundleFacts>,
    /// Where it came from, for people.
    pub(crate) origin: String,
}

impl Candidate {
    /// A policy loaded from a bundle (of revision number `revision`) that passed every
    /// check. A compiled image offered and not used is logged, with why.
    fn of_bundle(
        loaded: LoadedPolicy,
        revision: u64,
        expires: Option<Instant>,
        signed_by: Vec<String>,
        origin: String,
    ) -> Candidate {
        if let Some(warning) = loaded.image.warning() {
            tracing::warn!(bundle = %origin, revision, "{warning}");
        }
        Candidate {
            loaded,
            bundle: Some(BundleFacts {
                revision,
                expires,
                signed_by,
            }),
            origin,
        }
    }
}

/// What a reload found.
#[derive(Debug)]
pub(crate) enum Next {
    /// The server holds what is active (`304 Not Modified`).
    #[cfg_attr(not(feature = "http-source"), allow(dead_code))]
    Unchanged(Revision),
    /// A policy to install (perhaps the same content as the active one).
    Candidate(Box<Candidate>),
}

#[cfg(feature = "http-source")]
const CACHED_BUNDLE: &str = "bundle.json";
#[cfg(feature = "http-source")]
const CACHED_ETAG: &str = "bundle.etag";
/// A downloaded bundle being checked, before it replaces [`CACHED_BUNDLE`].
#[cfg(feature = "http-source")]
const STAGED_BUNDLE: &str = "bundle.json.tmp";

/// The reload state of one handle; the handle holds it under a lock, so reloads run one at
/// a time.
#[derive(Debug)]
pub(crate) struct Reloader {
    source: Option<PolicySource>,
    trust: Option<TrustedKeys>,
    max_bundle_bytes: u64,
    /// The highest bundle revision accepted, from a bundle that passed every check (or a
    /// cached one that passed every check but expiry).
    highest: Option<u64>,
    #[cfg(feature = "http-source")]
    etag: Option<String>,
    #[cfg(feature = "http-source")]
    client: Option<reqwest::blocking::Client>,
    /// The last failure, as logged, so that a failure repeated on every poll is logged once.
    pub(crate) last_error: Option<String>,
}

impl Reloader {
    pub(crate) fn new(
        source: Option<PolicySource>,
        trust: Option<TrustedKeys>,
        max_bundle_bytes: u64,
    ) -> Reloader {
        Reloader {
            source,
            trust,
            max_bundle_bytes,
            highest: None,
            #[cfg(feature = "http-source")]
            etag: None,
            #[cfg(feature = "http-source")]
            client: None,
            last_error: None,
        }
    }

    /// Reads the source. `active` is the revision of the active policy, if one is active and
    /// has not expired: only then may a server answer "not modified".
    #[cfg_attr(not(feature = "http-source"), allow(unused_variables))]
    pub(crate) fn next(
        &mut self,
        now: Instant,
        active: Option<&Revision>,
    ) -> Result<Next, ReloadError> {
        // A clone, so that the checks below may update the state; a source is a few paths.
        let source = self.source.clone();
        match source {
            None => Err(ReloadError::NoSource),
            Some(PolicySource::Dirs(dirs)) => {
                let loaded = load_dirs(&dirs).map_err(ReloadError::Policy)?;
                let origin = dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ");
                Ok(Next::Candidate(Box::new(Candidate {
                    loaded,
                    bundle: None,
                    origin,
                })))
            }
            Some(PolicySource::BundleFile(path)) => {
                let bytes = read_bounded(&path, self.max_bundle_bytes)?;
                let origin = path.display().to_string();
                Ok(Next::Candidate(Box::new(
                    self.accept(bytes, None, now, origin)?,
                )))
            }
            #[cfg(feature = "http-source")]
            Some(PolicySource::BundleUrl(source)) => self.fetch(&source, now, active),
        }
    }

    /// The cached bundle, at start: checked like a download (pin, signatures, digests,
    /// expiry). A cached bundle that passes all but expiry still sets the rollback floor.
    /// Problems are logged; the first reload reports its own.
    #[cfg_attr(not(feature = "http-source"), allow(unused_variables))]
    pub(crate) fn cached(&mut self, now: Instant) -> Option<Candidate> {
        #[cfg(feature = "http-source")]
        if let Some(PolicySource::BundleUrl(source)) = self.source.clone() {
            return self.load_cache(&source, now);
        }
        None
    }

    #[cfg(feature = "http-source")]
    fn load_cache(&mut self, source: &HttpSource, now: Instant) -> Option<Candidate> {
        let dir = source.cache_dir.as_ref()?;
        let path = dir.join(CACHED_BUNDLE);
        let refused = |e: &ReloadError| {
            tracing::error!(error = %describe(e), file = %path.display(), "cached bundle refused");
        };
        let bytes = match read_bounded(&path, self.max_bundle_bytes) {
            Ok(bytes) => bytes,
            Err(e) if e.is_not_found() => return None,
            Err(e) => {
                refused(&e.into());
                return None;
            }
        };
        let vetted =
            self.vet(bytes, source.pinned_sha256.as_deref())
                .and_then(|(bundle, signed_by)| {
                    bundle.verify_digests()?;
                    Ok((bundle, signed_by))
                });
        let (bundle, signed_by) = match vetted {
            Ok(v) => v,
            Err(e) => {
                refused(&e);
                return None;
            }
        };
        // The last bundle accepted before the restart: whatever its expiry, nothing older
        // may follow it.
        self.raise(bundle.manifest.revision);
        let origin = format!("{} (cached)", path.display());
        let revision = bundle.manifest.revision;
        let loaded = bundle
            .verify(now, None)
            .and_then(|()| Ok((bundle.expires()?, bundle.into_loaded(&origin)?)));
        let (expires, loaded) = match loaded {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %describe(&e.into()), file = %path.display(), revision, "cached bundle not used; its revision still counts against rollback");
                return None;
            }
        };
        self.etag = read_bounded(&dir.join(CACHED_ETAG), 4096)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty());
        Some(Candidate::of_bundle(
            loaded, revision, expires, signed_by, origin,
        ))
    }

    #[cfg(feature = "http-source")]
    fn fetch(
        &mut self,
        source: &HttpSource,
        now: Instant,
        active: Option<&Revision>,
    ) -> Result<Next, ReloadError> {
        crate::http_source::check_url(&source.url, source.allow_insecure_http)?;
        let client = match &self.client {
            Some(c) => c.clone(),
            None => {
                let c = crate::http_source::client(source.timeout, source.allow_insecure_http)?;
                self.client = Some(c.clone());
                c
            }
        };
        // Without a usable active policy, ask for the whole bundle: "not modified" would
        // say nothing worth knowing.
        let etag = active.and(self.etag.as_deref());
        let fetched = crate::http_source::fetch(
            &client,
            &source.url,
            etag,
            self.max_bundle_bytes,
            source.timeout,
        )?;
        let (bytes, etag) = match (fetched, active) {
            (Fetched::NotModified, Some(active)) => return Ok(Next::Unchanged(active.clone())),
            (Fetched::NotModified, None) => {
                return Err(FetchError::Status {
                    url: source.url.clone(),
                    status: 304,
                }
                .into());
            }
            (Fetched::Body { bytes, etag }, _) => (bytes, etag),
        };
        // The checks consume the bytes (a large bundle is held once): the cache's copy is
        // written beside it first, and put in its place only once the bundle is accepted.
        let staged = source
            .cache_dir
            .as_deref()
            .map(|dir| (dir, stage(dir, &bytes)));
        let candidate = match self.accept(
            bytes,
            source.pinned_sha256.as_deref(),
            now,
            source.url.clone(),
        ) {
            Ok(candidate) => candidate,
            Err(e) => {
                if let Some((dir, Ok(()))) = staged {
                    let _ = std::fs::remove_file(dir.join(STAGED_BUNDLE));
                }
                return Err(e);
            }
        };
        self.etag = etag;
        if let Some((dir, staged)) = staged
            && let Err(e) = staged.and_then(|()| commit(dir, self.etag.as_deref()))
        {
            tracing::warn!(error = %e, dir = %dir.display(), "could not cache the bundle");
        }
        Ok(Next::Candidate(Box::new(candidate)))
    }

    /// Steps 1 to 2: the pin and the signatures.
    fn vet(&self, bytes: Vec<u8>, pin: Option<&str>) -> Result<(Bundle, Vec<String>), ReloadError> {
        if let Some(pinned) = pin {
            let found = sha256_hex(&bytes);
            if !found.eq_ignore_ascii_case(pinned) {
                return Err(BundleError::Pin {
                    found,
                    pinned: pinned.to_owned(),
                }
                .into());
            }
        }
        let bundle = Bundle::parse_owned(bytes)?;
        let signed_by = match &self.trust {
            Some(trust) => bundle.verify_signatures(trust)?,
            None => Vec::new(),
        };
        Ok((bundle, signed_by))
    }

    /// Every step; raises the highest revision only when all pass.
    fn accept(
        &mut self,
        bytes: Vec<u8>,
        pin: Option<&str>,
        now: Instant,
        origin: String,
    ) -> Result<Candidate, ReloadError> {
        let (bundle, signed_by) = self.vet(bytes, pin)?;
        bundle.verify(now, self.highest)?;
        let expires = bundle.expires()?;
        let revision = bundle.manifest.revision;
        let loaded = bundle.into_loaded(&origin)?;
        self.raise(revision);
        Ok(Candidate::of_bundle(
            loaded, revision, expires, signed_by, origin,
        ))
    }

    fn raise(&mut self, revision: u64) {
        self.highest = Some(self.highest.map_or(revision, |h| h.max(revision)));
    }
}

/// Writes a downloaded bundle beside the cached one ([`STAGED_BUNDLE`]), synced, for
/// [`commit`] to put in its place once the bundle is accepted.
#[cfg(feature = "http-source")]
fn stage(dir: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(STAGED_BUNDLE);
    std::fs::write(&tmp, bytes)?;
    std::fs::File::open(&tmp)?.sync_all()
}

/// Puts the staged bundle in the cache's place, and its ETag beside it (through a temporary
/// file and a rename).
#[cfg(feature = "http-source")]
fn commit(dir: &std::path::Path, etag: Option<&str>) -> std::io::Result<()> {
    std::fs::rename(dir.join(STAGED_BUNDLE), dir.join(CACHED_BUNDLE))?;
    let write = |name: &str, data: &[u8]| -> std::io::Result<()> {
        let tmp = dir.join(format!("{name}.tmp"));
        std::fs::write(&tmp, data)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, dir.join(name))
    };
    match etag {
        Some(e) => write(CACHED_ETAG, e.as_bytes()),
        None => match std::fs::remove_file(dir.join(CACHED_ETAG)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
    }
}
