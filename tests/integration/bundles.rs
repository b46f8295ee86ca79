//! Policy bundles from files and over HTTP from a local bundle server on 127.0.0.1: `ETag`s,
//! failures, the pinned digest, the cache, the https rule, the size limit and expiry.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use gatekeeper::{
    BuildError, Bundle, BundleError, FailureMode, FetchError, Gate, Gatekeeper, HttpSource,
    ManualClock, PolicySource, Readiness, ReloadError, Reloaded,
};
use http::{HeaderMap, StatusCode, header};

use crate::handle::{at, wechat_update};
use crate::support::root;

pub fn bundle(set: &str, revision: u64) -> Bundle {
    expiring(set, revision, None)
}

/// A bundle of a shipped set that expires at `expires` (RFC 3339), if given.
pub fn expiring(set: &str, revision: u64, expires: Option<&str>) -> Bundle {
    Bundle::build(
        &[root().join("policies").join(set)],
        revision,
        at("2026-01-01T00:00:00Z"),
        expires.map(at),
    )
    .unwrap()
}

/// What an attacker who can write the bundle does: moves the WeChat rule to 2030 (so that
/// the update of [`wechat_update`] is served), recomputes the digests and sets the revision.
/// The signatures are kept as they were (they no longer verify).
pub fn forge(genuine: &Bundle, revision: u64) -> Bundle {
    let mut forged = genuine.clone();
    let (path, text) = forged
        .files
        .iter_mut()
        .find(|(p, _)| p.ends_with("commerce-wechat-identification.toml"))
        .unwrap();
    *text = text.replace(
        "2020-09-20T23:59:00 America/New_York",
        "2030-09-20T23:59:00 America/New_York",
    );
    let digest = gatekeeper::sha256_hex(text.as_bytes());
    let path = path.clone();
    for entry in &mut forged.manifest.files {
        if entry.path == path {
            entry.sha256 = digest.clone();
        }
    }
    forged.manifest.revision = revision;
    forged
}

#[derive(Clone)]
pub enum Serve {
    Bundle { bytes: Vec<u8>, etag: String },
    Status(u16),
    Slow(Duration),
    Redirect(String),
}

#[derive(Clone)]
pub struct Server {
    serve: Arc<Mutex<Serve>>,
    pub hits: Arc<AtomicUsize>,
    pub if_none_match: Arc<Mutex<Vec<String>>>,
}

async fn handler(State(server): State<Server>, headers: HeaderMap) -> Response {
    server.hits.fetch_add(1, Ordering::SeqCst);
    let serve = server.serve.lock().unwrap().clone();
    let asked = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Some(tag) = &asked {
        server.if_none_match.lock().unwrap().push(tag.clone());
    }
    match serve {
        Serve::Bundle { bytes, etag } => {
            if asked.as_deref() == Some(etag.as_str()) {
                return StatusCode::NOT_MODIFIED.into_response();
            }
            ([(header::ETAG, etag)], bytes).into_response()
        }
        Serve::Status(code) => StatusCode::from_u16(code).unwrap().into_response(),
        Serve::Slow(delay) => {
            // A server that answers too late for the client's timeout.
            tokio::time::sleep(delay).await;
            StatusCode::OK.into_response()
        }
        Serve::Redirect(to) => (StatusCode::FOUND, [(header::LOCATION, to)]).into_response(),
    }
}

/// A bundle server on 127.0.0.1 with an ephemeral port, on a runtime of its own; it stops
/// when dropped.
pub struct BundleServer {
    pub url: String,
    pub state: Server,
    _runtime: tokio::runtime::Runtime,
}

impl BundleServer {
    pub fn start(serve: Serve) -> BundleServer {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let state = Server {
            serve: Arc::new(Mutex::new(serve)),
            hits: Arc::default(),
            if_none_match: Arc::default(),
        };
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}/bundle.json", listener.local_addr().unwrap());
        let app = Router::new()
            .route("/bundle.json", get(handler))
            .with_state(state.clone());
        runtime.spawn(async move { axum::serve(listener, app).await });
        BundleServer {
            url,
            state,
            _runtime: runtime,
        }
    }

    pub fn serve(&self, serve: Serve) {
        *self.state.serve.lock().unwrap() = serve;
    }
}

pub fn served(b: &Bundle, etag: &str) -> Serve {
    Serve::Bundle {
        bytes: b.to_bytes(),
        etag: etag.to_owned(),
    }
}

/// The clients' timeout in these tests.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);

pub fn source(url: &str, cache: Option<&std::path::Path>) -> HttpSource {
    let mut s = HttpSource::new(url);
    // Long enough for a loaded machine to answer; the slow server below outlasts it.
    s.timeout = CLIENT_TIMEOUT;
    s.cache_dir = cache.map(std::path::Path::to_path_buf);
    s
}

fn over_http(source: HttpSource) -> Gatekeeper {
    Gatekeeper::builder()
        .source(PolicySource::BundleUrl(source))
        .build()
        .unwrap()
}

/// A URL on 127.0.0.1 where nothing listens (a port bound and released here).
pub fn dead_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}/bundle.json", l.local_addr().unwrap())
}

#[test]
fn http_200_then_304_with_etag_then_a_newer_bundle() {
    let first = bundle("us-2020", 1);
    let server = BundleServer::start(served(&first, "\"v1\""));
    let gk = over_http(source(&server.url, None));
    let active = gk.active().expect("the first fetch loads the bundle");
    assert_eq!(active.bundle_revision, Some(1));
    assert_eq!(gk.check(&wechat_update()).unwrap().gate, Gate::Deny);
    assert!(matches!(gk.reload().unwrap(), Reloaded::Unchanged(_)));
    assert_eq!(
        *server.state.if_none_match.lock().unwrap(),
        vec!["\"v1\"".to_owned()]
    );
    server.serve(served(&bundle("us-2020-courts", 2), "\"v2\""));
    assert!(matches!(gk.reload().unwrap(), Reloaded::Swapped(_)));
    assert_eq!(gk.active().unwrap().bundle_revision, Some(2));
    // The courts set suspends the WeChat rule: the new policy decides.
    assert_eq!(gk.check(&wechat_update()).unwrap().gate, Gate::Allow);
    assert_eq!(server.state.hits.load(Ordering::SeqCst), 3);
}

#[test]
fn failed_fetches_keep_the_last_good_bundle() {
    let good = bundle("us-2020", 5);
    let server = BundleServer::start(served(&good, "\"good\""));
    let gk = over_http(source(&server.url, None));
    let revision = gk.active().unwrap().revision.clone();
    let still_good = |gk: &Gatekeeper| assert_eq!(gk.active().unwrap().revision, revision);

    server.serve(Serve::Status(500));
    let e = gk.reload().unwrap_err();
    assert!(
        matches!(
            &e,
            ReloadError::Fetch(FetchError::Status { status: 500, .. })
        ),
        "{e}"
    );
    still_good(&gk);

    server.serve(Serve::Slow(CLIENT_TIMEOUT * 15));
    let started = std::time::Instant::now();
    let e = gk.reload().unwrap_err();
    assert!(
        matches!(e, ReloadError::Fetch(FetchError::Transport { .. })),
        "{e}"
    );
    assert!(
        started.elapsed() < CLIENT_TIMEOUT * 5,
        "the timeout did not apply: {:?}",
        started.elapsed()
    );
    still_good(&gk);

    server.serve(Serve::Bundle {
        bytes: b"{\"manifest\":".to_vec(),
        etag: "\"bad\"".to_owned(),
    });
    let e = gk.reload().unwrap_err();
    assert!(
        matches!(e, ReloadError::Bundle(BundleError::Malformed(_))),
        "{e}"
    );
    still_good(&gk);

    let mut tampered = bundle("us-2020", 6);
    let (_, text) = tampered
        .files
        .iter_mut()
        .find(|(p, _)| p.ends_with("commerce-wechat-identification.toml"))
        .unwrap();
    *text = text.replace(
        "2020-09-20T23:59:00 America/New_York",
        "2030-09-20T23:59:00 America/New_York",
    );
    server.serve(served(&tampered, "\"tampered\""));
    let e = gk.reload().unwrap_err();
    assert!(
        matches!(e, ReloadError::Bundle(BundleError::Digest { .. })),
        "{e}"
    );
    still_good(&gk);

    server.serve(served(&bundle("us-2020-courts", 4), "\"older\""));
    let e = gk.reload().unwrap_err();
    assert!(
        matches!(
            e,
            ReloadError::Bundle(BundleError::Rollback {
                bundle: 4,
                highest: 5
            })
        ),
        "{e}"
    );
    still_good(&gk);
}

/// A server that promises more bytes than it sends, then hangs up: the first load fails,
/// so building fails (or, with `start_empty`, starts with no policy).
#[test]
fn a_truncated_body_is_refused() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/bundle.json", listener.local_addr().unwrap());
    let body = bundle("us-2020", 1).to_bytes();
    let server = std::thread::spawn(move || {
        for _ in 0..2 {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request).unwrap();
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            stream.write_all(head.as_bytes()).unwrap();
            stream.write_all(&body[..body.len() / 2]).unwrap();
        }
    });
    let built = Gatekeeper::builder()
        .source(PolicySource::BundleUrl(source(&url, None)))
        .build();
    assert!(
        matches!(built, Err(BuildError::FirstLoad(ReloadError::Fetch(_)))),
        "{built:?}"
    );
    let gk = Gatekeeper::builder()
        .source(PolicySource::BundleUrl(source(&url, None)))
        .start_empty(true)
        .build()
        .unwrap();
    server.join().unwrap();
    assert!(gk.active().is_none(), "half a bundle must not load");
}

#[test]
fn a_pinned_digest_refuses_any_other_bundle() {
    let b = bundle("us-2020", 1);
    let server = BundleServer::start(served(&b, "\"v1\""));
    let mut pinned = source(&server.url, None);
    pinned.pinned_sha256 = Some(gatekeeper::sha256_hex(&b.to_bytes()));
    assert!(over_http(pinned.clone()).active().is_some());
    pinned.pinned_sha256 = Some("0".repeat(64));
    let gk = Gatekeeper::builder()
        .source(PolicySource::BundleUrl(pinned))
        .start_empty(true)
        .build()
        .unwrap();
    assert!(gk.active().is_none());
    assert!(matches!(
        gk.reload(),
        Err(ReloadError::Bundle(BundleError::Pin { .. }))
    ));
}

#[test]
fn the_cached_bundle_survives_a_restart_with_the_server_down() {
    let cache = tempfile::tempdir().unwrap();
    let revision = {
        let server = BundleServer::start(served(&bundle("us-2020", 7), "\"v7\""));
        let gk = over_http(source(&server.url, Some(cache.path())));
        gk.active().unwrap().revision.clone()
    };
    let gk = over_http(source(&dead_url(), Some(cache.path())));
    let active = gk.active().expect("the cached bundle is active at start");
    assert_eq!(active.revision, revision);
    assert_eq!(active.bundle_revision, Some(7));
    assert!(matches!(gk.reload(), Err(ReloadError::Fetch(_))));
    assert_eq!(gk.active().unwrap().revision, revision);
}

#[test]
fn bundle_files_are_verified_and_expire() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bundle.json");
    let out = dir.path().display().to_string();
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let code = cli::run(
        [
            "gatekeeper",
            "bundle",
            "build",
            "--policies",
            &root().join("policies/us-2020-courts").display().to_string(),
            "-o",
            &format!("{out}/bundle.json"),
            "--revision",
            "9",
            "--expires",
            "2027-01-01T00:00:00Z",
        ],
        &mut std::io::empty(),
        &mut stdout,
        &mut stderr,
    );
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&stderr));
    assert!(
        String::from_utf8(stdout)
            .unwrap()
            .contains("revision 9, 16 files")
    );
    let clock = ManualClock::new(at("2026-11-28T00:00:00Z"));
    let gk = Gatekeeper::builder()
        .source(PolicySource::BundleFile(path.clone()))
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    let from_dirs = gatekeeper::load_dirs(&[root().join("policies/us-2020-courts")]).unwrap();
    assert_eq!(
        gk.active().unwrap().revision,
        from_dirs.revision,
        "a bundle has the revision of its content"
    );
    clock.set(at("2027-01-01T00:00:00Z"));
    assert!(matches!(
        gk.reload(),
        Err(ReloadError::Bundle(BundleError::Expired { .. }))
    ));
    assert!(gk.active().is_none(), "an expired bundle is withdrawn");
    // One changed byte in a file's text (in place: the bundle is binary, with the image).
    clock.set(at("2026-11-28T00:00:00Z"));
    let mut bytes = std::fs::read(&path).unwrap();
    let name = b"ByteDance Ltd.";
    let at_name = bytes.windows(name.len()).position(|w| w == name).unwrap();
    bytes[at_name + name.len() - 1] = b'!';
    std::fs::write(&path, bytes).unwrap();
    assert!(matches!(
        gk.reload(),
        Err(ReloadError::Bundle(BundleError::Digest { .. }))
    ));
}

/// Plain http is refused for a named host (anyone on the path could serve the bundle), and
/// allowed to loopback addresses or with the explicit opt-in.
#[test]
fn plain_http_is_refused_except_to_loopback() {
    for url in [
        "http://policies.example/bundle.json",
        "http://10.1.2.3/bundle.json",
    ] {
        let built = Gatekeeper::builder()
            .source(PolicySource::BundleUrl(source(url, None)))
            .start_empty(true)
            .build();
        assert!(
            matches!(built, Err(BuildError::Url(FetchError::Insecure { .. }))),
            "{url}: {built:?}"
        );
    }
    let server = BundleServer::start(served(&bundle("us-2020", 1), "\"v1\""));
    let port = server.url.split(':').nth(2).unwrap().to_owned();
    for url in [
        server.url.clone(),
        format!("http://localhost:{port}"),
        format!("http://127.0.0.1:{port}"),
    ] {
        let gk = over_http(source(&url, None));
        assert_eq!(gk.active().unwrap().bundle_revision, Some(1), "{url}");
    }
    // The opt-in lets a named host through the rule (the fetch itself then fails here).
    let mut insecure = source("http://bundles.invalid/bundle.json", None);
    insecure.allow_insecure_http = true;
    let gk = Gatekeeper::builder()
        .source(PolicySource::BundleUrl(insecure))
        .start_empty(true)
        .build()
        .unwrap();
    assert!(matches!(
        gk.reload(),
        Err(ReloadError::Fetch(FetchError::Transport { .. }))
    ));
}

/// A redirect from an allowed URL to plain http elsewhere is not followed.
#[test]
fn a_redirect_to_plain_http_elsewhere_is_refused() {
    let server = BundleServer::start(Serve::Redirect(
        "http://policies.example/bundle.json".to_owned(),
    ));
    let gk = Gatekeeper::builder()
        .source(PolicySource::BundleUrl(source(&server.url, None)))
        .start_empty(true)
        .build()
        .unwrap();
    let e = gk.reload().unwrap_err();
    let mut chain = e.to_string();
    let mut s = std::error::Error::source(&e);
    while let Some(inner) = s {
        chain.push_str(&format!(": {inner}"));
        s = inner.source();
    }
    assert!(chain.contains("not a loopback address"), "{chain}");
    assert!(gk.active().is_none());
}

/// A server that sends `head`, then body bytes until the client hangs up; reports how many
/// body bytes it managed to send.
fn endless_server(head: &'static str) -> (String, std::sync::mpsc::Receiver<usize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/bundle.json", listener.local_addr().unwrap());
    let (sent, report) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut request = [0u8; 4096];
        let _ = stream.read(&mut request).unwrap();
        stream.write_all(head.as_bytes()).unwrap();
        let chunked = head.contains("chunked");
        let data = vec![b' '; 64 * 1024];
        let mut total = 0usize;
        // Stops at the first failed write: the client has gone. The cap only ends the test
        // if the client never stops reading (a failure: the assertion below says so).
        while total < 1024 * 1024 * 1024 {
            let written = if chunked {
                stream
                    .write_all(format!("{:x}\r\n", data.len()).as_bytes())
                    .and_then(|()| stream.write_all(&data))
                    .and_then(|()| stream.write_all(b"\r\n"))
            } else {
                stream.write_all(&data)
            };
            if written.is_err() {
                break;
            }
            total += data.len();
        }
        let _ = sent.send(total);
    });
    (url, report)
}

/// A body over the limit is refused at the limit, whether its length is declared (refused
/// before reading) or not (chunked, endless: refused at the first byte over).
#[test]
fn a_body_over_the_limit_is_refused_without_reading_it_all() {
    let limit = 1024 * 1024;
    for head in [
        "HTTP/1.1 200 OK\r\ncontent-length: 1073741824\r\n\r\n",
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
    ] {
        let (url, report) = endless_server(head);
        let gk = Gatekeeper::builder()
            .source(PolicySource::BundleUrl(source(&url, None)))
            .max_bundle_bytes(limit)
            .start_empty(true)
            .build()
            .unwrap();
        // The first load failed; the reason is the limit.
        match &gk.readiness() {
            Readiness::NoPolicy { reason } => {
                assert!(
                    reason.contains("larger than the limit of 1048576 bytes"),
                    "{reason}"
                )
            }
            other => panic!("{other:?}"),
        }
        let sent = report
            .recv_timeout(Duration::from_secs(30))
            .expect("the client hung up");
        // The server could push what the sockets' buffers hold, never the whole gigabyte.
        assert!(sent < 64 * 1024 * 1024, "{head}: {sent} bytes were taken");
    }
    // The same body within the limit loads.
    let small = bundle("us-2020", 1);
    let server = BundleServer::start(served(&small, "\"v1\""));
    let gk = Gatekeeper::builder()
        .source(PolicySource::BundleUrl(source(&server.url, None)))
        .max_bundle_bytes(small.to_bytes().len() as u64)
        .build()
        .unwrap();
    assert!(gk.active().is_some());
    let gk = Gatekeeper::builder()
        .source(PolicySource::BundleUrl(source(&server.url, None)))
        .max_bundle_bytes(small.to_bytes().len() as u64 - 1)
        .start_empty(true)
        .build()
        .unwrap();
    assert!(matches!(
        gk.reload(),
        Err(ReloadError::Fetch(FetchError::TooLarge { .. }))
    ));
}

/// Bundle files on disk are held to the same limit, and read the safe way: a FIFO is
/// refused at once rather than waited on.
#[test]
fn a_bundle_file_over_the_limit_or_a_fifo_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bundle.json");
    let bytes = bundle("us-2020", 1).to_bytes();
    std::fs::write(&path, &bytes).unwrap();
    let built = Gatekeeper::builder()
        .source(PolicySource::BundleFile(path.clone()))
        .max_bundle_bytes(bytes.len() as u64 - 1)
        .build();
    assert!(
        matches!(
            built,
            Err(BuildError::FirstLoad(ReloadError::Read(
                gatekeeper::ReadError::TooLarge { .. }
            )))
        ),
        "{built:?}"
    );
    #[cfg(unix)]
    {
        let fifo = dir.path().join("fifo.json");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let built = Gatekeeper::builder()
            .source(PolicySource::BundleFile(fifo))
            .build();
        assert!(
            matches!(
                built,
                Err(BuildError::FirstLoad(ReloadError::Read(
                    gatekeeper::ReadError::NotRegular { .. }
                )))
            ),
            "{built:?}"
        );
    }
}

/// When the active bundle expires it is withdrawn, though the server answers "not
/// modified" or is down: checks get the failure mode and readiness says so, until a newer
/// bundle loads.
#[test]
fn an_expired_bundle_is_withdrawn_while_the_server_answers_304_or_is_down() {
    let clock = ManualClock::new(at("2026-06-01T00:00:00Z"));
    let expires = "2027-01-01T00:00:00Z";
    let old = expiring("us-2020", 3, Some(expires));
    let server = BundleServer::start(served(&old, "\"v3\""));
    let build = |failure_mode| {
        Gatekeeper::builder()
            .source(PolicySource::BundleUrl(source(&server.url, None)))
            .clock(Arc::new(clock.clone()))
            .failure_mode(failure_mode)
            .build()
            .unwrap()
    };
    let closed = build(FailureMode::Closed);
    let open = build(FailureMode::Open);
    assert!(closed.readiness().is_ready());
    let revision = closed.active().unwrap().revision.clone();
    assert_eq!(closed.active().unwrap().expires, Some(at(expires)));
    assert!(matches!(closed.reload().unwrap(), Reloaded::Unchanged(_)));

    clock.set(at("2027-01-01T00:00:01Z"));
    let expired = Readiness::Expired {
        revision,
        bundle_revision: Some(3),
        at: at(expires),
    };
    assert_eq!(closed.readiness(), expired);
    assert!(closed.active().is_none());
    let verdict = closed.check(&wechat_update()).unwrap();
    assert_eq!(verdict.gate, Gate::Deny);
    let error = verdict.to_record().error.unwrap();
    assert!(error.contains("expired at 2027-01-01T00:00:00Z"), "{error}");
    // An allowed request is refused too: no policy decides.
    assert!(verdict.revision().is_none());
    assert_eq!(open.check(&wechat_update()).unwrap().gate, Gate::Allow);

    // The server would answer 304 to the old ETag: the gatekeeper asks for the whole
    // bundle, which is expired.
    let asked_before = server.state.if_none_match.lock().unwrap().len();
    assert!(matches!(
        closed.reload(),
        Err(ReloadError::Bundle(BundleError::Expired { .. }))
    ));
    assert_eq!(
        server.state.if_none_match.lock().unwrap().len(),
        asked_before
    );
    assert_eq!(closed.readiness(), expired);

    // A newer bundle ends the withdrawal.
    let newer = expiring("us-2020", 4, Some("2028-01-01T00:00:00Z"));
    server.serve(served(&newer, "\"v4\""));
    assert!(matches!(closed.reload().unwrap(), Reloaded::Swapped(_)));
    assert!(closed.readiness().is_ready());
    assert_eq!(closed.check(&wechat_update()).unwrap().gate, Gate::Deny);

    // The server goes away and the newer bundle expires too.
    drop(server);
    clock.set(at("2028-01-01T00:00:00Z"));
    assert!(closed.reload().is_err());
    assert!(matches!(
        closed.readiness(),
        Readiness::Expired {
            bundle_revision: Some(4),
            ..
        }
    ));
}
