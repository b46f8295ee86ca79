//! The sidecar cannot be talked around, held open or left quiet: its clock against a
//! client's time header, repeated headers, slow clients, bodies in flight, admin tokens,
//! starting without a policy, logging and settings, and metrics an operator can keep. All
//! over real HTTP (or raw TCP, for what a well-behaved client would never send) on 127.0.0.1.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::blocking::Client;

use crate::serve::{Service, TOKEN, config};

/// A made-up policy in force from 2020-01-01 with no end: a download of
/// `com.example.restricted` in the United States is denied at any instant from then on, the
/// sidecar's clock included, and allowed before.
pub(crate) fn restricted_policy(dir: &Path) -> PathBuf {
    let folder = dir.join("restricted");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(
        folder.join("order.toml"),
        r#"
[instrument]
id = "order-x"
kind = "identification"
title = "A made-up order for the sidecar's tests"
authority = "Made-up authority"
citation = "1 XR 1"
source = "https://example.org/order-x"
issued = 2020-01-01T00:00:00Z

[[region]]
id = "US"
name = "The United States and its territories"
countries = ["US", "PR", "GU", "VI", "AS", "MP", "UM"]

[[entity]]
id = "restricted-owner"
name = "Restricted Owner"

[[app]]
id = "restricted"
name = "Restricted"
owner = "restricted-owner"
android = ["com.example.restricted"]

[[prohibition]]
id = "restricted-store"
apps = ["restricted"]
actions = ["download", "update"]
region = "US"
effective = 2020-01-01T00:00:00Z
text = "Distributing Restricted"
"#,
    )
    .unwrap();
    folder
}

/// The headers a store sets for a download of the restricted app in the US.
pub(crate) const STORE_HEADERS: [(&str, &str); 4] = [
    ("x-gatekeeper-platform", "android"),
    ("x-gatekeeper-app", "com.example.restricted"),
    ("x-gatekeeper-action", "download"),
    ("x-gatekeeper-storefront", "US"),
];

fn envoy_check(svc: &Service, headers: &[(&str, &str)]) -> (StatusCode, serde_json::Value) {
    let mut request = svc
        .client
        .get(format!("{}/v1/envoy/authz/apps/restricted", svc.base));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let r = request.send().unwrap();
    let status = r.status();
    (status, r.json().unwrap_or(serde_json::Value::Null))
}

fn addr(svc: &Service) -> SocketAddr {
    svc.server.as_ref().unwrap().addr
}

/// The value of one series in `/metrics` (0 when absent).
pub(crate) fn metric(svc: &Service, series: &str) -> f64 {
    let text = svc.metrics_text();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// Before: the sidecar believed `x-gatekeeper-at`, so a client could move the decision to
/// 2019 and get a 200 for a download denied today. Now the sidecar's clock decides unless
/// the operator trusts the header, and an untrusted one is refused, never believed.
#[test]
fn a_client_time_header_no_longer_turns_a_451_into_a_200() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Service::start(config(&restricted_policy(dir.path())));
    let (status, answer) = envoy_check(&svc, &STORE_HEADERS);
    assert_eq!(
        status,
        StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS,
        "{answer}"
    );
    let mut forged = STORE_HEADERS.to_vec();
    forged.push(("x-gatekeeper-at", "2019-01-01T00:00:00Z"));
    let (status, answer) = envoy_check(&svc, &forged);
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("not trusted"),
        "{answer}"
    );
    svc.shutdown();
    // An operator who strips clients' copies may trust the header explicitly.
    let svc = Service::start(serve::Config {
        trust_time_header: true,
        ..config(&restricted_policy(dir.path()))
    });
    assert_eq!(envoy_check(&svc, &forged).0, StatusCode::OK);
    assert_eq!(
        envoy_check(&svc, &STORE_HEADERS).0,
        StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS
    );
    svc.shutdown();
}

/// Before: with a header given twice the first value won, so a client's `storefront: CA`
/// sent before the store's `US` decided. Now any of our headers given twice is a 400.
#[test]
fn a_repeated_gatekeeper_header_is_a_400() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Service::start(config(&restricted_policy(dir.path())));
    let mut twice = vec![("x-gatekeeper-storefront", "CA")];
    twice.extend(STORE_HEADERS);
    let (status, answer) = envoy_check(&svc, &twice);
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("`x-gatekeeper-storefront` appears more than once"),
        "{answer}"
    );
    // Any x-gatekeeper- header, even one the sidecar does not read.
    let mut unknown = STORE_HEADERS.to_vec();
    unknown.extend([("x-gatekeeper-note", "a"), ("x-gatekeeper-note", "b")]);
    assert_eq!(envoy_check(&svc, &unknown).0, StatusCode::BAD_REQUEST);
    svc.shutdown();
}

/// Opens `n` connections that each send part of a request head and then nothing more.
fn half_sent(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(b"POST /v1/decide HTTP/1.1\r\nHost: gatekeeper\r\nContent-Le")
                .unwrap();
            s
        })
        .collect()
}

/// Waits (at most `bound`) for the server to close a connection; panics if it does not.
fn closed_by_server(s: &mut TcpStream, bound: Duration) {
    s.set_read_timeout(Some(bound)).unwrap();
    let mut buf = [0u8; 512];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return,
            // An answer (a 408 or such) before the close is fine; keep reading to the end.
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) => panic!("the server still holds a half-sent request open: {e}"),
        }
    }
}

const RESTRICTED_DOWNLOAD: &str = r#"{"app":{"platform":"android","id":"com.example.restricted"},"action":"download","at":"2021-01-01T00:00:00Z","storefront":"US"}"#;

/// Before: 300 half-sent requests were held for as long as the clients liked. Now each is
/// closed once `header_read_timeout_ms` passes, and other clients are served meanwhile.
#[test]
fn half_sent_requests_are_cut_at_the_header_read_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let mut svc = Service::start(serve::Config {
        header_read_timeout_ms: 300,
        ..config(&restricted_policy(dir.path()))
    });
    // A connection kept for the next request would be closed by the server after 300 ms,
    // perhaps just as the client sends on it: a new connection for each request.
    svc.client = Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let series = r#"http_connections_closed_total{reason="header-timeout"}"#;
    let before = metric(&svc, series);
    let mut slow = half_sent(addr(&svc), 300);
    let (status, answer) = svc.post("/v1/decide", RESTRICTED_DOWNLOAD);
    assert_eq!(status, StatusCode::OK, "{answer}");
    for s in &mut slow {
        closed_by_server(s, Duration::from_secs(20));
    }
    assert!(metric(&svc, series) >= before + 300.0);
    svc.shutdown();
}

/// Before: half-sent requests held a graceful shutdown (SIGTERM) open as long as they
/// stayed. Now the drain ends at `shutdown_timeout_ms`, even with a header read timeout far
/// longer than that.
#[test]
fn half_sent_requests_do_not_hold_shutdown_open() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Service::start(serve::Config {
        header_read_timeout_ms: 600_000,
        idle_timeout_ms: 600_000,
        shutdown_timeout_ms: 500,
        ..config(&restricted_policy(dir.path()))
    });
    let mut slow = half_sent(addr(&svc), 300);
    // A request in flight elsewhere is still answered before the stop.
    assert_eq!(
        svc.post("/v1/decide", RESTRICTED_DOWNLOAD).0,
        StatusCode::OK
    );
    let (done, finished) = mpsc::channel();
    let stopper = std::thread::spawn(move || {
        svc.shutdown();
        let _ = done.send(());
    });
    finished
        .recv_timeout(Duration::from_secs(60))
        .expect("shutdown is still held open by half-sent requests");
    stopper.join().unwrap();
    for s in &mut slow {
        closed_by_server(s, Duration::from_secs(20));
    }
}

/// A client that asks for a large answer and never reads it holds a connection (and the
/// answer's memory) for as long as it likes, unless a connection on which no byte moves is
/// closed: after `idle_timeout_ms`, it is.
#[test]
fn a_client_that_stops_reading_is_cut_at_the_idle_timeout() {
    let svc = Service::start(serve::Config {
        timeout_ms: 5_000,
        idle_timeout_ms: 6_000,
        ..config(&crate::support::root().join("policies/us-2020"))
    });
    let series = r#"http_connections_closed_total{reason="idle-timeout"}"#;
    let before = metric(&svc, series);
    let one = r#"{"app":{"platform":"android","id":"com.tencent.mm"},"action":"update","at":"2020-09-22T12:00:00Z","storefront":"US"}"#;
    let batch = format!("[{}]", vec![one; 8_000].join(","));
    let mut s = TcpStream::connect(addr(&svc)).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    let head = format!(
        "POST /v1/decide HTTP/1.1\r\nHost: gatekeeper\r\nContent-Length: {}\r\n\r\n",
        batch.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(batch.as_bytes()).unwrap();
    // The answer (megabytes) fills the socket buffers; this client reads none of it. Wait,
    // bounded, for the server to give up on the connection.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while metric(&svc, series) < before + 1.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "a connection whose client stopped reading is still open"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The connection is closed: reading drains what was buffered, then ends.
    closed_by_server(&mut s, Duration::from_secs(20));
    svc.shutdown();
}

/// Sends a request head declaring `length` body bytes and all but the last of them, then
/// reads the status of the answer (bounded).
fn nearly_complete_body(addr: SocketAddr, length: usize) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head =
        format!("POST /v1/decide HTTP/1.1\r\nHost: gatekeeper\r\nContent-Length: {length}\r\n\r\n");
    s.write_all(head.as_bytes()).unwrap();
    // A refused body is answered before it is read: the server may stop reading it.
    let _ = s.write_all(&vec![b' '; length - 1]);
    let line = read_until(&mut s, b"\r\n");
    line.split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {line:?}"))
}

/// What the sidecar sends on a connection, up to `end` (or until it closes or resets it).
fn read_until(s: &mut TcpStream, end: &[u8]) -> String {
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.windows(end.len()).any(|w| w == end) {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("no answer: {e}"),
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

/// Before: 200 connections each holding a nearly complete 16 MB body drove memory to
/// 3.1 GB. Now the bytes of bodies in flight across connections are bounded: past
/// `max_body_bytes_in_flight`, a body is refused with 503 before it is read.
#[test]
fn bodies_in_flight_are_bounded_across_connections() {
    const MIB: usize = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    let svc = Service::start(serve::Config {
        max_body_bytes: MIB,
        max_body_bytes_in_flight: 4 * MIB,
        timeout_ms: 3_000,
        ..config(&restricted_policy(dir.path()))
    });
    let before = metric(&svc, "http_body_budget_refusals_total");
    let at = addr(&svc);
    let clients: Vec<_> = (0..16)
        .map(|_| std::thread::spawn(move || nearly_complete_body(at, MIB)))
        .collect();
    let statuses: Vec<u16> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let refused = statuses.iter().filter(|s| **s == 503).count();
    // At most four bodies of 1 MiB fit in 4 MiB: those wait for their last byte until the
    // request times out (408); every other one is refused at once.
    assert!(refused >= 12, "{statuses:?}");
    assert!(
        statuses.iter().all(|s| [503, 408].contains(s)),
        "{statuses:?}"
    );
    assert!(metric(&svc, "http_body_budget_refusals_total") >= before + refused as f64);
    assert!(metric(&svc, "http_body_bytes_in_flight") <= (4 * MIB) as f64);
    // The budget is given back: a normal request still goes through.
    assert_eq!(
        svc.post("/v1/decide", RESTRICTED_DOWNLOAD).0,
        StatusCode::OK
    );
    svc.shutdown();
}

fn run_cli(args: &[&str]) -> (u8, String, String) {
    let mut out = Vec::new();
    let mut err = Vec::new();
    let code = cli::run(
        std::iter::once("gatekeeper").chain(args.iter().copied()),
        &mut std::io::empty(),
        &mut out,
        &mut err,
    );
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// Before: a one-character admin token was accepted. Now a token under 32 bytes stops the
/// service from starting.
#[test]
fn a_short_admin_token_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let policy = restricted_policy(dir.path());
    let error = runtime()
        .block_on(serve::start(serve::Config {
            admin_token: Some("s3cret".into()),
            ..config(&policy)
        }))
        .unwrap_err();
    assert!(format!("{error:#}").contains("at least 32"), "{error:#}");
    let (code, _, err) = run_cli(&[
        "serve",
        "--policies",
        policy.to_str().unwrap(),
        "--admin-token",
        "x",
    ]);
    assert_eq!(code, 2);
    assert!(
        err.contains("the admin token is 1 bytes; it must be at least 32"),
        "{err}"
    );
}

/// Before: wrong tokens could be tried as fast as the network allowed. Now each failure
/// from an address makes it wait (twice as long each time) and it gets 429 until then,
/// even with the right token; other addresses are not affected.
#[test]
fn failed_admin_attempts_are_rate_limited() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Service::start(config(&restricted_policy(dir.path())));
    let limited_before = metric(&svc, r#"http_admin_refusals_total{reason="rate-limited"}"#);
    let (status, _) = svc.reload(Some("a wrong guess, long enough to look real"));
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Each failure doubles the wait (1 s, 2 s, ...): a 429 comes within a few attempts
    // however slowly this machine runs.
    let limited = (0..5).find_map(|_| {
        let r = svc
            .client
            .post(format!("{}/v1/admin/reload", svc.admin))
            .bearer_auth("another wrong guess")
            .send()
            .unwrap();
        (r.status() == StatusCode::TOO_MANY_REQUESTS).then_some(r)
    });
    let limited = limited.expect("wrong tokens are never rate-limited");
    assert!(limited.headers().contains_key("retry-after"));
    // While it waits, the address is refused even with the right token.
    assert_eq!(svc.reload(Some(TOKEN)).0, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        metric(&svc, r#"http_admin_refusals_total{reason="rate-limited"}"#) >= limited_before + 2.0
    );
    // Another address (127.0.0.2 is loopback too) is not held back.
    let other = Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let r = other
        .post(format!("{}/v1/admin/reload", svc.admin))
        .bearer_auth(TOKEN)
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    svc.shutdown();
}

/// Before: `serve` on a broken policy started, denying (or serving) everything, and said
/// "the last good policy stays active" when there was none. Now it refuses to start and
/// shows every diagnostic, unless told to start without a policy: then `/health` says why.
#[test]
fn serve_refuses_to_start_without_a_valid_policy_unless_told() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("a.toml"), "[instrument\n").unwrap();
    std::fs::write(broken.join("b.toml"), "[[app]]\nid = 3\n").unwrap();
    let error = runtime()
        .block_on(serve::start(config(&broken)))
        .unwrap_err();
    let text = format!("{error:#}");
    assert!(text.contains("no valid policy"), "{text}");
    assert!(text.contains("a.toml") && text.contains("b.toml"), "{text}");
    assert!(text.contains("--start-without-policy"), "{text}");
    // (`--log-level off`: the process-wide logger this installs stays quiet for the other
    // tests of this binary.)
    let (code, _, err) = run_cli(&[
        "serve",
        "--log-level=off",
        "--policies",
        broken.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("a.toml") && err.contains("b.toml"), "{err}");
    // A path that does not exist is as loud.
    let (code, _, err) = run_cli(&[
        "serve",
        "--log-level=off",
        "--policies",
        "/no/such/policies",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no valid policy"), "{err}");
    let svc = Service::start(serve::Config {
        start_without_policy: true,
        ..config(&broken)
    });
    let (status, health) = svc.get("/health");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(health["status"], "not ready");
    assert_eq!(health["reason"], "no-policy");
    assert!(
        health["error"].as_str().unwrap().contains("a.toml"),
        "{health}"
    );
    // Closed failure mode: no policy, no allow (503: not a legal reason).
    let (status, answer) = envoy_check(&svc, &STORE_HEADERS);
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    assert_eq!(answer["error"], gatekeeper::NO_POLICY);
    svc.shutdown();
}

/// `--log-level` takes a tracing filter and refuses one that does not parse.
#[test]
fn log_level_is_a_filter_and_a_bad_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let policy = restricted_policy(dir.path());
    let policy = policy.to_str().unwrap();
    let (code, out, err) = run_cli(&[
        "serve",
        "--policies",
        policy,
        "--log-level",
        "gatekeeper=debug,warn",
        "--print-config",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(r#"log_level = "gatekeeper=debug,warn""#),
        "{out}"
    );
    let (code, _, err) = run_cli(&[
        "serve",
        "--policies",
        policy,
        "--log-level",
        "gatekeeper=[[",
        "--print-config",
    ]);
    assert_eq!(code, 2);
    assert!(
        err.contains("`--log-level` `gatekeeper=[[` is not a log filter"),
        "{err}"
    );
}

/// Before: `reload_interval_ms`, `max_body_bytes`, `max_batch`, `timeout_ms`,
/// `concurrency` and the Envoy header names were TOML-only. Now every key of the file has a
/// flag: setting every one by flags gives the same settings as setting them in a file, and
/// each differs from its default.
#[test]
fn every_setting_is_both_a_flag_and_a_toml_key() {
    let dir = tempfile::tempdir().unwrap();
    let key_a = "a+00000000+AQ";
    let key_b = "b+00000000+AQ";
    let file = dir.path().join("gatekeeper.toml");
    std::fs::write(
        &file,
        format!(
            r#"
listen = "127.0.0.1:9001"
admin_listen = "127.0.0.1:9002"
bundle_url = "https://policies.example/bundle.json"
bundle_sha256 = "{sha}"
bundle_cache = "/var/cache/gatekeeper"
bundle_keys = ["{key_a}", "{key_b}"]
bundle_threshold = 2
bundle_allow_http = true
max_bundle_bytes = 1000
reload_interval_ms = 1
mode = "shadow"
failure_mode = "open"
posture = "permissive"
non_enforcement = "ignore"
start_without_policy = true
audit_dir = "/var/lib/gatekeeper/audit"
audit_durability = "buffered"
trust_time_header = true
max_body_bytes = 1000
max_body_bytes_in_flight = 2000
max_batch = 3
timeout_ms = 4
header_read_timeout_ms = 5
idle_timeout_ms = 6
shutdown_timeout_ms = 7
concurrency = 8
log_level = "debug"
log_format = "json"

[envoy]
platform = "x-s-platform"
app = "x-s-app"
action = "x-s-action"
at = "x-s-at"
storefront = "x-s-storefront"
device_country = "x-s-device-country"
ip_country = "x-s-ip-country"
billing_country = "x-s-billing-country"
server_country = "x-s-server-country"
signing_cert_sha256 = "x-s-signing-cert-sha256"
publisher_store = "x-s-publisher-store"
publisher_id = "x-s-publisher-id"
"#,
            sha = "ab".repeat(32)
        ),
    )
    .unwrap();
    let sha = "ab".repeat(32);
    let mut flags: Vec<String> = [
        "serve",
        "--print-config",
        "--listen=127.0.0.1:9001",
        "--admin-listen=127.0.0.1:9002",
        "--bundle-url=https://policies.example/bundle.json",
        "--bundle-cache=/var/cache/gatekeeper",
        "--bundle-threshold=2",
        "--bundle-allow-http",
        "--max-bundle-bytes=1000",
        "--reload-interval-ms=1",
        "--mode=shadow",
        "--failure-mode=open",
        "--posture=permissive",
        "--non-enforcement=ignore",
        "--start-without-policy",
        "--audit-dir=/var/lib/gatekeeper/audit",
        "--audit-durability=buffered",
        "--trust-time-header",
        "--max-body-bytes=1000",
        "--max-body-bytes-in-flight=2000",
        "--max-batch=3",
        "--timeout-ms=4",
        "--header-read-timeout-ms=5",
        "--idle-timeout-ms=6",
        "--shutdown-timeout-ms=7",
        "--concurrency=8",
        "--log-level=debug",
        "--log-format=json",
    ]
    .map(String::from)
    .to_vec();
    flags.push(format!("--bundle-sha256={sha}"));
    flags.push(format!("--bundle-key={key_a}"));
    flags.push(format!("--bundle-key={key_b}"));
    for key in serve::EnvoyHeaders::KEYS {
        flags.push(format!(
            "--envoy-header={key}=x-s-{}",
            key.replace('_', "-")
        ));
    }
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let (code, by_flags, err) = run_cli(&flags);
    assert_eq!(code, 0, "{err}");
    let (code, by_file, err) = run_cli(&[
        "serve",
        "--print-config",
        "--config",
        file.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(by_flags, by_file);
    let table = |text: &str| text.parse::<toml::Table>().unwrap();
    let set = table(&by_flags);
    let defaults = table(&serve::Config::default().to_toml().unwrap());
    for (key, default) in &defaults {
        // `policies` contradicts `bundle_url`; it is a flag (`--policies`) of old.
        if key == "policies" {
            continue;
        }
        assert_ne!(
            Some(default),
            set.get(key),
            "`{key}` was not set by its flag"
        );
    }
    // Flags win over the file.
    let (code, out, err) = run_cli(&[
        "serve",
        "--print-config",
        "--config",
        file.to_str().unwrap(),
        "--max-batch=9",
        "--trust-time-header=false",
    ]);
    assert_eq!(code, 0, "{err}");
    let merged = table(&out);
    assert_eq!(merged["max_batch"].as_integer(), Some(9));
    assert_eq!(merged["trust_time_header"].as_bool(), Some(false));
    assert_eq!(merged["max_body_bytes"].as_integer(), Some(1000));
}

/// Series names with their labels (`name{labels}`), of lines that are not comments.
fn series(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.rsplit_once(' ').map(|(s, _)| s.to_owned()))
        .collect()
}

/// Before: `/metrics` had no `# HELP`, and every reload added 21 series kept forever (the
/// revision was a label). Now every metric is described, and 20 reloads of different
/// content leave the number of the gatekeeper's series unchanged.
#[test]
fn metrics_are_described_and_reloads_add_no_series() {
    let dir = tempfile::tempdir().unwrap();
    let policy = restricted_policy(dir.path());
    let svc = Service::start(config(&policy));
    // Warm up every kind of answer once, then take the first count.
    assert_eq!(
        svc.post("/v1/decide", RESTRICTED_DOWNLOAD).0,
        StatusCode::OK
    );
    assert_eq!(
        envoy_check(&svc, &STORE_HEADERS).0,
        StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS
    );
    std::fs::write(policy.join("generation.toml"), "# warm-up\n").unwrap();
    let (_, warm) = svc.reload(Some(TOKEN));
    assert_eq!(warm["result"], "swapped");
    let mut revisions = vec![warm["revision"].as_str().unwrap().to_owned()];
    let first = svc.metrics_text();
    for name in first.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let name = name.split(' ').next().unwrap();
        assert!(
            first.contains(&format!("# HELP {name} ")),
            "`{name}` has no `# HELP` line"
        );
    }
    // The metrics recorder is the process's: services of tests running beside this one add
    // the info gauges of their own revisions, which are left out.
    let ours = |text: &str, revisions: &[String]| -> Vec<String> {
        series(text)
            .into_iter()
            .filter(|s| s.starts_with("gatekeeper_"))
            .filter(|s| {
                !s.starts_with("gatekeeper_policy_info{")
                    || revisions.iter().any(|r| s.contains(r.as_str()))
            })
            .collect()
    };
    let before = ours(&first, &revisions);
    assert!(
        before
            .iter()
            .any(|s| s.starts_with("gatekeeper_policy_info{")),
        "no info gauge for the active revision: {before:#?}"
    );
    for g in 0..20 {
        std::fs::write(policy.join("generation.toml"), format!("# {g}\n")).unwrap();
        let (status, answer) = svc.reload(Some(TOKEN));
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["result"], "swapped");
        revisions.push(answer["revision"].as_str().unwrap().to_owned());
        assert_eq!(
            svc.post("/v1/decide", RESTRICTED_DOWNLOAD).0,
            StatusCode::OK
        );
    }
    let after = ours(&svc.metrics_text(), &revisions);
    let new: Vec<&String> = after.iter().filter(|s| !before.contains(s)).collect();
    assert_eq!(
        before.len(),
        after.len(),
        "the gatekeeper's series grew with reloads: {new:#?}"
    );
    // Only the info gauge names a revision, and only the active one.
    let active = revisions.last().unwrap();
    for s in &after {
        let named = revisions.iter().find(|r| s.contains(&r[..12]));
        assert!(
            named.is_none() || (s.starts_with("gatekeeper_policy_info") && named == Some(active)),
            "a series names a revision that is not active: {s}"
        );
    }
    svc.shutdown();
}

/// Counters an alert reads are in `/metrics` from the start, at zero, before any event.
#[test]
fn counters_are_present_from_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Service::start(config(&restricted_policy(dir.path())));
    let text = svc.metrics_text();
    for series in [
        "http_body_budget_refusals_total",
        r#"http_admin_refusals_total{reason="unauthorized"}"#,
        r#"http_admin_refusals_total{reason="rate-limited"}"#,
        r#"http_connections_closed_total{reason="header-timeout"}"#,
        r#"http_connections_closed_total{reason="idle-timeout"}"#,
        r#"http_connections_closed_total{reason="shutdown-deadline"}"#,
        "gatekeeper_reloads_total",
        "gatekeeper_rejected_reloads_total",
        "gatekeeper_audit_failures_total",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("{series} "))),
            "`{series}` is not in /metrics from the start:\n{text}"
        );
    }
    svc.shutdown();
}

/// The time limit covers waiting for a slot: with one slot and three requests whose bodies
/// never end, each is answered 408 about `timeout_ms` after it was sent, not after the
/// requests ahead of it have used up their own time (which would take three times as long
/// for the last).
#[test]
fn waiting_for_a_slot_counts_against_the_time_limit() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Service::start(serve::Config {
        concurrency: 1,
        timeout_ms: 1_000,
        ..config(&restricted_policy(dir.path()))
    });
    let at = addr(&svc);
    let started = std::time::Instant::now();
    let clients: Vec<_> = (0..3)
        .map(|_| std::thread::spawn(move || (nearly_complete_body(at, 100), started.elapsed())))
        .collect();
    let answers: Vec<(u16, Duration)> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    assert!(answers.iter().all(|(s, _)| *s == 408), "{answers:?}");
    let last = answers.iter().map(|(_, t)| *t).max().unwrap();
    assert!(last < Duration::from_millis(1_800), "{answers:?}");
    svc.shutdown();
}

/// Sends a decision request whose body never ends (`Expect: 100-continue`, so that the
/// sidecar says when its handler starts reading it, that is, once the request has a slot),
/// and returns once it has. The connection is kept open, the slot taken, until the
/// sidecar's time limit cuts the request.
fn hold_a_slot(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(
        b"POST /v1/decide HTTP/1.1\r\nHost: gatekeeper\r\nContent-Length: 100\r\nExpect: 100-continue\r\n\r\n",
    )
    .unwrap();
    let answer = read_until(&mut s, b"\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 100 "), "{answer}");
    s.write_all(b"{").unwrap();
    s
}

/// `concurrency` is the slots of a listener, whatever its routes: admin routes on the
/// decision listener wait for its slots (before, they had a pool of their own there, and a
/// listener twice the slots), and on a listener of their own have their own.
#[test]
fn the_routes_of_a_listener_share_its_slots() {
    let dir = tempfile::tempdir().unwrap();
    let policy = restricted_policy(dir.path());
    let time_limit = Duration::from_secs(2);
    let reload_with_the_slot_held = |admin_listen: Option<String>| {
        let svc = Service::start(serve::Config {
            concurrency: 1,
            timeout_ms: time_limit.as_millis() as u64,
            admin_listen,
            ..config(&policy)
        });
        let _held = hold_a_slot(addr(&svc));
        let started = std::time::Instant::now();
        let (status, _) = svc.reload(Some(TOKEN));
        let waited = started.elapsed();
        svc.shutdown();
        (status, waited)
    };
    // On the decision listener, the reload waits for the slot until the time limit cuts
    // the request holding it (about when its own is up too: it may get 408).
    let (status, waited) = reload_with_the_slot_held(None);
    assert!(
        [StatusCode::OK, StatusCode::REQUEST_TIMEOUT].contains(&status),
        "{status}"
    );
    assert!(waited >= time_limit / 2, "{waited:?}");
    let (status, waited) = reload_with_the_slot_held(Some("127.0.0.1:0".into()));
    assert_eq!(status, StatusCode::OK);
    assert!(waited < time_limit / 2, "{waited:?}");
}
