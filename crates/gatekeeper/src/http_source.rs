//! Policy bundles over HTTP(S): conditional GETs with `ETag`, timeouts, an optional pinned
//! digest, and a cache folder holding the last good bundle so that a restart works with
//! the bundle server down.
//!
//! Fetching blocks: from async code, call [`crate::Gatekeeper::reload`] through
//! `spawn_blocking`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::bundle::Bundle;
use crate::handle::{Gatekeeper, ReloadError, ReloadState, Reloaded};
use crate::revision::sha256_hex;

/// A bundle URL and how to fetch it.
#[derive(Clone, Debug)]
pub struct HttpSource {
    /// `http://` or `https://`.
    pub url: String,
    /// Where the last good bundle is kept.
    pub cache_dir: Option<PathBuf>,
    /// The whole request's time limit.
    pub timeout: Duration,
    /// When set, the bundle's bytes must have this SHA-256 (hex).
    pub pinned_sha256: Option<String>,
}

impl HttpSource {
    /// A source with a 10-second timeout, no cache and no pinned digest.
    pub fn new(url: impl Into<String>) -> HttpSource {
        HttpSource {
            url: url.into(),
            cache_dir: None,
            timeout: Duration::from_secs(10),
            pinned_sha256: None,
        }
    }
}

const CACHED_BUNDLE: &str = "bundle.json";
const CACHED_ETAG: &str = "bundle.etag";

/// Loads the cached bundle at start, if there is a good one.
pub(crate) fn load_cache(gk: &Gatekeeper, source: &HttpSource) {
    let Some(dir) = &source.cache_dir else { return };
    let path = dir.join(CACHED_BUNDLE);
    let Ok(bytes) = std::fs::read(&path) else {
        return;
    };
    let origin = format!("{} (cached)", path.display());
    match Bundle::parse(&bytes)
        .map_err(ReloadError::from)
        .and_then(|b| gk.offer_bundle(&b, origin))
    {
        Ok(_) => {
            if let Ok(etag) = std::fs::read_to_string(dir.join(CACHED_ETAG))
                && let Ok(mut state) = gk.inner_reload_state()
            {
                state.etag = Some(etag.trim().to_owned());
            }
        }
        Err(e) => tracing::warn!(error = %e, file = %path.display(), "cached bundle refused"),
    }
}

/// Fetches the bundle, unless the server says it has not changed.
pub(crate) fn fetch(
    gk: &Gatekeeper,
    source: &HttpSource,
    state: &mut ReloadState,
) -> Result<Reloaded, ReloadError> {
    let client = match &state.client {
        Some(c) => c.clone(),
        None => {
            let c = reqwest::blocking::Client::builder()
                .timeout(source.timeout)
                .build()
                .map_err(|e| ReloadError::Fetch(e.to_string()))?;
            state.client = Some(c.clone());
            c
        }
    };
    let active = gk.active();
    let mut request = client.get(&source.url);
    if let (Some(etag), Some(_)) = (&state.etag, &active) {
        request = request.header(reqwest::header::IF_NONE_MATCH, etag.as_str());
    }
    let response = request
        .send()
        .map_err(|e| ReloadError::Fetch(describe(&e)))?;
    let status = response.status();
    if status == reqwest::StatusCode::NOT_MODIFIED
        && let Some(active) = active
    {
        return Ok(Reloaded::Unchanged(active.revision.clone()));
    }
    if !status.is_success() {
        return Err(ReloadError::Fetch(format!(
            "`{}` answered {status}",
            source.url
        )));
    }
    let etag = response
        .headers()
        .get(reqwest::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = response
        .bytes()
        .map_err(|e| ReloadError::Fetch(describe(&e)))?;
    if let Some(pinned) = &source.pinned_sha256 {
        let found = sha256_hex(&bytes);
        if !found.eq_ignore_ascii_case(pinned) {
            return Err(ReloadError::Fetch(format!(
                "bundle digest {found} is not the pinned {pinned}"
            )));
        }
    }
    let bundle = Bundle::parse(&bytes)?;
    let reloaded = gk.offer_bundle(&bundle, source.url.clone())?;
    state.etag = etag;
    if let Some(dir) = &source.cache_dir
        && let Err(e) = persist(dir, &bytes, state.etag.as_deref())
    {
        tracing::warn!(error = %e, dir = %dir.display(), "could not cache the bundle");
    }
    Ok(reloaded)
}

fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Writes the bundle and its ETag beside it, each through a temporary file and a rename.
fn persist(dir: &Path, bytes: &[u8], etag: Option<&str>) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let write = |name: &str, data: &[u8]| -> std::io::Result<()> {
        let tmp = dir.join(format!("{name}.tmp"));
        std::fs::write(&tmp, data)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, dir.join(name))
    };
    write(CACHED_BUNDLE, bytes)?;
    match etag {
        Some(e) => write(CACHED_ETAG, e.as_bytes()),
        None => match std::fs::remove_file(dir.join(CACHED_ETAG)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
    }
}
