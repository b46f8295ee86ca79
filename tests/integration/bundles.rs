//! Policy bundles from files and over HTTP from a local bundle server on 127.0.0.1.

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
    Bundle, BundleError, Gatekeeper, HttpSource, ManualClock, PolicySource, ReloadError, Reloaded,
};
use http::{HeaderMap, StatusCode, header};

use crate::handle::{at, wechat_update};
use crate::support::root;

fn bundle(set: &str, revision: u64) -> Bundle {
    Bundle::build(
        &[root().join("policies").join(set)],
        revision,
        at("2026-01-01T00:00:00Z"),
        None,
    )
    .unwrap()
}

#[derive(Clone)]
enum Serve {
    Bundle { bytes: Vec<u8>, etag: String },
    Status(u16),
    Slow(Duration),
}

#[derive(Clone)]
struct Server {
    serve: Arc<Mutex<Serve>>,
    hits: Arc<AtomicUsize>,
    if_none_match: Arc<Mutex<Vec<String>>>,
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
    }
}

/// A bundle server on 127.0.0.1 with an ephemeral port, on a runtime of its own.
struct BundleServer {
    url: String,
    state: Server,
    _runtime: tokio::runtime::Runtime,
}

impl BundleServer {
    fn start(serve: Serve) -> BundleServer {
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

    fn serve(&self, serve: Serve) {
        *self.state.serve.lock().unwrap() = serve;
    }
}

fn served(b: &Bundle, etag: &str) -> Serve {
    Serve::Bundle {
        bytes: b.to_bytes(),
        etag: etag.to_owned(),
    }
}

fn source(url: &str, cache: Option<&std::path::Path>) -> HttpSource {
    let mut s = HttpSource::new(url);
    s.timeout = Duration::from_millis(500);
    s.cache_dir = cache.map(std::path::Path::to_path_buf);
    s
}

fn over_http(source: HttpSource) -> Gatekeeper {
    Gatekeeper::builder()
        .source(PolicySource::BundleUrl(source))
        .build()
        .unwrap()
}

#[test]
fn http_200_then_304_with_etag_then_a_newer_bundle() {
    let first = bundle("us-2020", 1);
    let server = BundleServer::start(served(&first, "\"v1\""));
    let gk = over_http(source(&server.url, None));
    let active = gk.active().expect("the first fetch loads the bundle");
    assert_eq!(active.bundle_revision, Some(1));
    assert_eq!(
        gk.check(&wechat_update()).unwrap().gate,
        gatekeeper::Gate::Deny
    );
    assert!(matches!(gk.reload().unwrap(), Reloaded::Unchanged(_)));
    assert_eq!(
        *server.state.if_none_match.lock().unwrap(),
        vec!["\"v1\"".to_owned()]
    );
    server.serve(served(&bundle("us-2020-courts", 2), "\"v2\""));
    assert!(matches!(gk.reload().unwrap(), Reloaded::Swapped(_)));
    assert_eq!(gk.active().unwrap().bundle_revision, Some(2));
    // The courts set suspends the WeChat rule: the new policy decides.
    assert_eq!(
        gk.check(&wechat_update()).unwrap().gate,
        gatekeeper::Gate::Allow
    );
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
        matches!(&e, ReloadError::Fetch(m) if m.contains("500")),
        "{e}"
    );
    still_good(&gk);

    server.serve(Serve::Slow(Duration::from_secs(3)));
    let started = std::time::Instant::now();
    let e = gk.reload().unwrap_err();
    assert!(matches!(e, ReloadError::Fetch(_)), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the timeout did not apply"
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
                active: 5
            })
        ),
        "{e}"
    );
    still_good(&gk);
}

/// A server that promises more bytes than it sends, then hangs up.
#[test]
fn a_truncated_body_is_refused() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/bundle.json", listener.local_addr().unwrap());
    let body = bundle("us-2020", 1).to_bytes();
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut request = [0u8; 4096];
        let _ = stream.read(&mut request).unwrap();
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(&body[..body.len() / 2]).unwrap();
    });
    let gk = Gatekeeper::builder()
        .source(PolicySource::BundleUrl(source(&url, None)))
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
    let gk = over_http(pinned);
    assert!(gk.active().is_none());
    assert!(matches!(gk.reload(), Err(ReloadError::Fetch(m)) if m.contains("pinned")));
}

#[test]
fn the_cached_bundle_survives_a_restart_with_the_server_down() {
    let cache = tempfile::tempdir().unwrap();
    let revision = {
        let server = BundleServer::start(served(&bundle("us-2020", 7), "\"v7\""));
        let gk = over_http(source(&server.url, Some(cache.path())));
        gk.active().unwrap().revision.clone()
    };
    // The server is gone; nothing listens on a port bound and released here.
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/bundle.json", l.local_addr().unwrap())
    };
    let gk = over_http(source(&dead, Some(cache.path())));
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
    assert!(
        gk.active().is_some(),
        "an expired bundle does not unload the active policy"
    );
    // One changed byte in a file's text.
    clock.set(at("2026-11-28T00:00:00Z"));
    let text =
        std::fs::read_to_string(&path)
            .unwrap()
            .replacen("ByteDance Ltd.", "ByteDance Ltd!", 1);
    std::fs::write(&path, text).unwrap();
    assert!(matches!(
        gk.reload(),
        Err(ReloadError::Bundle(BundleError::Digest { .. }))
    ));
}
