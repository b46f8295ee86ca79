//! Compiled images: a valid image of a small policy (made at start, so that it is always
//! this build's), damaged by the input (pairs of a position and a byte to exclusive-or
//! in, and a length to cut it to), then read; and the input itself read as an image.
//! Must never panic or hang; an image that reads decides and explains requests.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use policy::{Policy, Posture, Request, RequestRecord, Source};

const POLICY: &str = r#"[instrument]
id = "o"
kind = "statute"
title = "O"
authority = "A"
citation = "1 XR 1"
source = "https://example.org/o"
issued = 2021-01-01T00:00:00Z
pursuant_to = []

[[region]]
id = "US"
name = "US"
countries = ["US", "PR"]

[[entity]]
id = "e"
name = "E"
publisher_accounts = [{ store = "google", id = "1234567890" }]

[[entity]]
id = "f"
name = "F"
parent = "e"

[[app]]
id = "a"
name = "A"
owner = "f"
android = ["app.a"]
ios = ["com.Example.A"]
signing_cert_sha256 = ["0000000000000000000000000000000000000000000000000000000000000001"]

[[prohibition]]
id = "p"
apps = ["a"]
owners = ["e"]
actions = ["download", "update"]
region = "US"
jurisdiction = [["storefront"], ["device_country", "ip_country"]]
effective = { earliest = 2021-02-01T00:00:00Z, latest = 2021-02-02T00:00:00Z, note = "open" }
text = "t"

[[injunction]]
prohibitions = ["p"]
from = 2021-03-01T00:00:00Z
until = 2021-04-01T00:00:00Z
"#;

fn seed() -> &'static (Vec<u8>, Vec<Request>) {
    static SEED: OnceLock<(Vec<u8>, Vec<Request>)> = OnceLock::new();
    SEED.get_or_init(|| {
        let policy = Policy::from_sources([Source::new("o.toml", POLICY)]).unwrap();
        let requests = [
            r#"{"app":{"platform":"android","id":"app.a"},"action":"download","at":"2021-02-15T00:00:00Z","storefront":"US","device_country":"PR"}"#,
            r#"{"app":{"platform":"ios","id":"com.example.a"},"action":"update","at":"2021-03-15T00:00:00Z","storefront":"US","known_at":"2021-02-15T00:00:00Z"}"#,
            r#"{"publisher":{"store":"google","id":"1234567890"},"app":{"platform":"android","id":"other"},"action":"download","at":"2022-01-01T00:00:00Z","ip_country":"US"}"#,
            r#"{"signing_cert_sha256":"0000000000000000000000000000000000000000000000000000000000000001","action":"download","at":"2021-02-01T12:00:00Z","storefront":"US"}"#,
        ]
        .iter()
        .map(|r| serde_json::from_str::<RequestRecord>(r).unwrap().into_request().unwrap())
        .collect();
        (policy.to_image(), requests)
    })
}

fn exercise(policy: &Policy, requests: &[Request]) {
    for r in requests {
        for posture in Posture::ALL {
            let d = policy.decide(r, posture);
            let _ = d.to_record();
            let _ = d.explain(r);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (image, requests) = seed();
    let mut damaged = image.clone();
    let mut pairs = data.chunks_exact(3);
    for pair in &mut pairs {
        let at = usize::from(u16::from_le_bytes([pair[0], pair[1]])) % damaged.len();
        damaged[at] ^= pair[2];
    }
    if let [a, b] = pairs.remainder() {
        damaged.truncate(usize::from(u16::from_le_bytes([*a, *b])) % (damaged.len() + 1));
    }
    if let Ok(p) = Policy::from_image(&damaged) {
        exercise(&p, requests);
    }
    if let Ok(p) = Policy::from_image(data) {
        exercise(&p, requests);
    }
});
