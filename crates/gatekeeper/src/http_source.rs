//! Fetching policy bundles over HTTPS: a plain function from a URL and its validator (an
//! `ETag`) to "not modified" or the body's bytes, within a size limit and a time limit.
//! What the bytes are worth (pin, signatures, digests, rollback, expiry) is decided by
//! [`crate::reload`], which also keeps the cache.
//!
//! Fetching blocks: from async code, call [`crate::Gatekeeper::reload`] through
//! `spawn_blocking`.

use std::io::Read as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A bundle URL and how to fetch it.
#[derive(Clone, Debug)]
pub struct HttpSource {
    /// `https://`, or `http://` to a loopback address (or with `allow_insecure_http`).
    pub url: String,
    /// Where the last good bundle is kept; it is verified like a download before it is used
    /// at start, and its revision counts against rollback after a restart.
    pub cache_dir: Option<PathBuf>,
    /// The time limit for the headers, and again for the body.
    pub timeout: Duration,
    /// When set, the bundle's bytes must have this SHA-256 (hex).
    pub pinned_sha256: Option<String>,
    /// Fetch over plain `http://` from a host that is not a loopback address. Anyone on the
    /// path can then replace the bundle (with signatures required, only by an older or
    /// equally signed one) or withhold it.
    pub allow_insecure_http: bool,
}

impl HttpSource {
    /// A source with a 10-second timeout, no cache, no pinned digest, https only (or
    /// http to loopback).
    pub fn new(url: impl Into<String>) -> HttpSource {
        HttpSource {
            url: url.into(),
            cache_dir: None,
            timeout: Duration::from_secs(10),
            pinned_sha256: None,
            allow_insecure_http: false,
        }
    }
}

/// Why a bundle could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("bundle URL `{url}` is not a valid URL")]
    Url {
        url: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(
        "bundle URL `{url}` is plain http to a host that is not a loopback address; use https (or opt in with `allow_insecure_http`)"
    )]
    Insecure { url: String },
    #[error(
        "bundle URL `{url}` has the scheme `{scheme}`; only https (and http to loopback) is fetched"
    )]
    Scheme { url: String, scheme: String },
    #[error("cannot set up the HTTP client")]
    Client(#[source] reqwest::Error),
    #[error("fetching `{url}` failed")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("`{url}` answered {status}")]
    Status { url: String, status: u16 },
    #[error("the bundle at `{url}` is larger than the limit of {limit} bytes")]
    TooLarge { url: String, limit: u64 },
    #[error("reading the bundle from `{url}` failed")]
    Body {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("reading the bundle from `{url}` took longer than {timeout:?}")]
    Timeout { url: String, timeout: Duration },
}

/// What a fetch found.
#[derive(Debug)]
pub(crate) enum Fetched {
    /// The server holds what the validator names.
    NotModified,
    /// The body, whole, and its validator.
    Body {
        bytes: Vec<u8>,
        etag: Option<String>,
    },
}

/// Whether `url` may be fetched: https, or http to 127.0.0.0/8, ::1 or `localhost`, or
/// http anywhere when `allow_insecure_http`.
pub(crate) fn check_url(url: &str, allow_insecure_http: bool) -> Result<(), FetchError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| FetchError::Url {
        url: url.to_owned(),
        source: Box::new(e),
    })?;
    check_parsed(&parsed, allow_insecure_http)
}

fn check_parsed(url: &reqwest::Url, allow_insecure_http: bool) -> Result<(), FetchError> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if allow_insecure_http || is_loopback(url) => Ok(()),
        "http" => Err(FetchError::Insecure {
            url: url.to_string(),
        }),
        other => Err(FetchError::Scheme {
            url: url.to_string(),
            scheme: other.to_owned(),
        }),
    }
}

fn is_loopback(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") || host.eq_ignore_ascii_case("localhost.") {
        return true;
    }
    host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A client with the source's time limit that follows at most five redirects, each to a URL
/// the same rule allows (an https URL never leads to plain http).
pub(crate) fn client(
    timeout: Duration,
    allow_insecure_http: bool,
) -> Result<reqwest::blocking::Client, FetchError> {
    let redirects = reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= 5 {
            return attempt.error("more than 5 redirects");
        }
        match check_parsed(attempt.url(), allow_insecure_http) {
            Ok(()) => attempt.follow(),
            Err(e) => attempt.error(e),
        }
    });
    reqwest::blocking::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(redirects)
        .build()
        .map_err(FetchError::Client)
}

/// Fetches `url`, sending `etag` as `If-None-Match`. A body is read only up to `max_bytes`:
/// a declared length over the limit is refused before reading, and a body that runs past it
/// is refused at the first byte over. Reading the body must end within the client's time
/// limit again (on top of the wait for the headers), so a server that drips bytes is cut off.
pub(crate) fn fetch(
    client: &reqwest::blocking::Client,
    url: &str,
    etag: Option<&str>,
    max_bytes: u64,
    timeout: Duration,
) -> Result<Fetched, FetchError> {
    let transport = |source| FetchError::Transport {
        url: url.to_owned(),
        source,
    };
    let mut request = client.get(url);
    if let Some(etag) = etag {
        request = request.header(reqwest::header::IF_NONE_MATCH, etag);
    }
    let mut response = request.send().map_err(transport)?;
    let status = response.status();
    if status == reqwest::StatusCode::NOT_MODIFIED && etag.is_some() {
        return Ok(Fetched::NotModified);
    }
    if !status.is_success() {
        return Err(FetchError::Status {
            url: url.to_owned(),
            status: status.as_u16(),
        });
    }
    let too_large = || FetchError::TooLarge {
        url: url.to_owned(),
        limit: max_bytes,
    };
    let declared = response.content_length();
    if declared.is_some_and(|len| len > max_bytes) {
        return Err(too_large());
    }
    let etag = response
        .headers()
        .get(reqwest::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let deadline = std::time::Instant::now() + timeout;
    let mut bytes =
        Vec::with_capacity(usize::try_from(declared.unwrap_or(0).min(max_bytes)).unwrap_or(0));
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = response
            .read(&mut chunk)
            .map_err(|source| FetchError::Body {
                url: url.to_owned(),
                source,
            })?;
        if n == 0 {
            break;
        }
        if (bytes.len() + n) as u64 > max_bytes {
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk[..n]);
        if std::time::Instant::now() > deadline {
            return Err(FetchError::Timeout {
                url: url.to_owned(),
                timeout,
            });
        }
    }
    Ok(Fetched::Body { bytes, etag })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_or_loopback() {
        for ok in [
            "https://policies.example/bundle.json",
            "http://127.0.0.1:8080/b.json",
            "http://127.9.8.7/b.json",
            "http://[::1]:80/b.json",
            "http://localhost/b.json",
            "http://LOCALHOST:1/b.json",
        ] {
            assert!(check_url(ok, false).is_ok(), "{ok}");
        }
        for refused in [
            "http://policies.example/bundle.json",
            "http://10.0.0.1/b.json",
            "http://localhost.evil.example/b.json",
            "http://127.0.0.1.evil.example/b.json",
            "http://[::ffff:10.0.0.1]/b.json",
        ] {
            assert!(
                matches!(check_url(refused, false), Err(FetchError::Insecure { .. })),
                "{refused}"
            );
            assert!(check_url(refused, true).is_ok(), "{refused}");
        }
        assert!(matches!(
            check_url("file:///etc/passwd", true),
            Err(FetchError::Scheme { .. })
        ));
        assert!(matches!(
            check_url("not a url", false),
            Err(FetchError::Url { .. })
        ));
    }
}
