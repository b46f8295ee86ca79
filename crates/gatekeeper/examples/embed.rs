//! What README.md shows a store that embeds the gatekeeper, as a program that runs: it
//! opens the gatekeeper on `policies/us-2020` with an audit trail, decides a request on a
//! thread that may block and in async code, and sends a request through a gated route.
//!
//! ```sh
//! cargo run -p gatekeeper --example embed -- AUDIT_DIR   # a temporary folder if omitted
//! ```
//!
//! The part between the `README` markers is in README.md verbatim: a test below checks,
//! and `cargo test` also runs the example against the shipped policies.

#![allow(clippy::expect_used)] // an example may stop at a failed setup step

use axum::body::Body;
use policy::{AppRecord, Instant, RequestRecord};

// README: begin
use std::path::Path;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use gatekeeper::{AuditConfig, FailureMode, Gatekeeper, GatekeeperLayer, Mode, Watcher};
use policy::Request;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Opens the gatekeeper; it reloads the policies when their files change until the
/// watcher is dropped.
fn open(policies: &Path, audit_dir: &Path) -> Result<(Gatekeeper, Watcher), Error> {
    let gk = Gatekeeper::builder()
        .policy_dirs([policies]) // or .source(PolicySource::BundleUrl(...))
        .mode(Mode::Enforce) // Mode::Shadow: record would-be denies, serve
        .failure_mode(FailureMode::Closed) // no valid policy yet: deny (Open: serve)
        .audit(AuditConfig::new(audit_dir))
        .build()?;
    let watcher = gk.watch(Duration::from_secs(5));
    Ok((gk, watcher))
}

/// On a thread that may block: returns once the audit record is on disk.
fn may_serve(gk: &Gatekeeper, request: &Request) -> Result<bool, Error> {
    let verdict = gk.check(request)?; // decision + policy revision + decision id
    Ok(verdict.permits()) // if not, answer 451 with the verdict's reasons
}

/// In async code: never blocks the worker, resolves once the record is on disk.
async fn may_serve_async(gk: &Gatekeeper, request: &Request) -> Result<bool, Error> {
    let verdict = gk.check_async(request).await?;
    Ok(verdict.permits())
}

/// Or gate axum routes: a deny answers 451 with `Link: <source>; rel="blocked-by"`.
fn gated(gk: Gatekeeper) -> Router {
    Router::new()
        .route("/apps/{platform}/{id}/{action}", get(artifact))
        .layer(GatekeeperLayer::new(gk, extract))
}
// README: end

async fn artifact() -> &'static str {
    "here is the artifact\n"
}

/// `/apps/{platform}/{id}/{action}?storefront=XX[&at=RFC3339]` is gated; nothing else is.
fn extract(
    request: &http::Request<Body>,
    now: Instant,
) -> Result<Option<Request>, gatekeeper::ExtractError> {
    let parts: Vec<&str> = request.uri().path().trim_matches('/').split('/').collect();
    let ["apps", platform, id, action] = parts[..] else {
        return Ok(None);
    };
    let query = request.uri().query().unwrap_or_default();
    let param = |name: &str| {
        query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_owned())
    };
    let record = RequestRecord {
        app: Some(AppRecord {
            platform: platform.to_owned(),
            id: id.to_owned(),
        }),
        action: action.to_owned(),
        at: param("at").unwrap_or_else(|| now.to_string()),
        storefront: param("storefront"),
        ..RequestRecord::default()
    };
    record
        .into_request()
        .map(Some)
        .map_err(|e| gatekeeper::ExtractError(e.to_string()))
}

/// A request from the real record: a WeChat update in Puerto Rico on 2020-09-22, prohibited
/// under the rule as announced; and the same for an app no policy names.
fn requests() -> (Request, Request) {
    let request = |id: &str| {
        let text = format!(
            r#"{{"app":{{"platform":"android","id":"{id}"}},"action":"update","at":"2020-09-22T12:00:00Z","storefront":"PRI"}}"#
        );
        let record: RequestRecord = serde_json::from_str(&text).expect("a request record");
        record.into_request().expect("a valid request")
    };
    (request("com.tencent.mm"), request("com.example.notes"))
}

/// What the example shows: the HTTP status of the gated route for WeChat, and whether each
/// request may be served, blocking and async.
struct Seen {
    status: http::StatusCode,
    wechat: (bool, bool),
    notes: (bool, bool),
}

fn run(policies: &Path, audit_dir: &Path) -> Result<Seen, Error> {
    let (gk, _watcher) = open(policies, audit_dir)?;
    let (wechat, notes) = requests();
    let blocking = (may_serve(&gk, &wechat)?, may_serve(&gk, &notes)?);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let async_ = (
            may_serve_async(&gk, &wechat).await?,
            may_serve_async(&gk, &notes).await?,
        );
        let mut app = gated(gk.clone());
        let request = http::Request::get(
            "/apps/android/com.tencent.mm/update?storefront=PRI&at=2020-09-22T12:00:00Z",
        )
        .body(Body::empty())?;
        use tower::Service as _;
        std::future::poll_fn(|cx| {
            <Router as tower::Service<http::Request<Body>>>::poll_ready(&mut app, cx)
        })
        .await?;
        let response = app.call(request).await?;
        Ok(Seen {
            status: response.status(),
            wechat: (blocking.0, async_.0),
            notes: (blocking.1, async_.1),
        })
    })
}

fn main() -> Result<(), Error> {
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies/us-2020");
    let temporary = tempfile::tempdir()?;
    let given = std::env::args_os().nth(1).map(std::path::PathBuf::from);
    let audit_dir = given.as_deref().unwrap_or(temporary.path());
    let seen = run(&policies, audit_dir)?;
    println!(
        "WeChat update in Puerto Rico on 2020-09-22: may serve {} (async: {}), gated route answers {}",
        seen.wechat.0, seen.wechat.1, seen.status
    );
    println!(
        "an app no policy names: may serve {} (async: {})",
        seen.notes.0, seen.notes.1
    );
    match given {
        Some(dir) => println!("audit trail in {}", dir.display()),
        None => {
            println!("audit trail in a temporary folder, removed now (give a folder to keep it)")
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// The lines between the markers, as README.md must show them.
    fn marked() -> String {
        let this = include_str!("embed.rs");
        let begin = "// README: begin\n";
        let start = this.find(begin).unwrap() + begin.len();
        let end = this.find("// README: end\n").unwrap();
        this[start..end].to_owned()
    }

    #[test]
    fn the_readme_shows_this_example_verbatim() {
        let readme = include_str!("../../../README.md");
        let shown = format!("```rust\n{}```\n", marked());
        assert!(
            readme.contains(&shown),
            "README.md must show, verbatim, the lines between the markers of crates/gatekeeper/examples/embed.rs:\n{shown}"
        );
    }

    #[test]
    fn the_example_runs_against_the_shipped_policies() {
        let audit = tempfile::tempdir().unwrap();
        let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies/us-2020");
        let seen = run(&policies, audit.path()).unwrap();
        assert_eq!(seen.wechat, (false, false));
        assert_eq!(seen.notes, (true, true));
        assert_eq!(seen.status, http::StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS);
        // Every verdict, the gated route's included, is in the trail.
        let records = gatekeeper::audit::read_records(&[audit.path()]).unwrap();
        assert_eq!(records.len(), 5);
    }
}
