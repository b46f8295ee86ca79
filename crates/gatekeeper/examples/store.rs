//! A store route protected by the gatekeeper layer, under the 2020 rule as announced
//! (`policies/us-2020`).
//!
//! ```sh
//! cargo run -p gatekeeper --example store            # listens on 127.0.0.1:3000
//! curl -i '127.0.0.1:3000/apps/android/com.tencent.mm/update?storefront=PRI&at=2020-09-22T12:00:00Z'   # 451
//! curl -i '127.0.0.1:3000/apps/android/com.tencent.mm/update?storefront=CAN&at=2020-09-22T12:00:00Z'   # 200
//! ```
//!
//! Set `GATEKEEPER_EXAMPLE_ADDR` to listen elsewhere.

#![allow(clippy::expect_used)] // an example may stop at a failed setup step

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use gatekeeper::{ExtractError, Gatekeeper, GatekeeperLayer};
use policy::{AppRecord, Instant, Request, RequestRecord};

/// `/apps/{platform}/{id}/{action}?storefront=XX[&at=RFC3339]`: gated. Other routes are not.
fn extract(request: &http::Request<Body>, now: Instant) -> Result<Option<Request>, ExtractError> {
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
    // The one place a request is validated: its JSON form's `into_request`.
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
        .map_err(|e| ExtractError(e.to_string()))
}

#[tokio::main]
async fn main() {
    let policies = concat!(env!("CARGO_MANIFEST_DIR"), "/../../policies/us-2020");
    let gatekeeper = Gatekeeper::builder()
        .policy_dirs([policies])
        .build()
        .expect("opening the gatekeeper");
    let _watcher = gatekeeper.watch(std::time::Duration::from_secs(2));
    let app = Router::new()
        .route(
            "/apps/{platform}/{id}/{action}",
            get(|| async { "here is the artifact\n" }),
        )
        .route("/", get(|| async { "an app store\n" }))
        .layer(GatekeeperLayer::new(gatekeeper, extract));
    let addr =
        std::env::var("GATEKEEPER_EXAMPLE_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .expect("binding the address");
    println!(
        "store listening on http://{}",
        listener.local_addr().expect("a bound address")
    );
    axum::serve(listener, app).await.expect("serving");
}
