//! Bundle parsing: arbitrary bytes parsed as a bundle, its signatures checked against the
//! seeds' key, verified (digests, rollback, expiry) and loaded. Must never panic.
#![no_main]

use std::sync::OnceLock;

use gatekeeper::keys::VerifierKey;
use gatekeeper::policy::Instant;
use gatekeeper::{Bundle, TrustedKeys};
use libfuzzer_sys::fuzz_target;

/// The public key the seed bundle is signed with.
const KEY: &str = "fuzz-seed+b1d1f812+ASx6utyfb3GwWQot6+EXpWlz+IERcx0UWmy2KSh4FsRW";

fn trusted() -> &'static TrustedKeys {
    static KEYS: OnceLock<TrustedKeys> = OnceLock::new();
    KEYS.get_or_init(|| TrustedKeys::new([VerifierKey::parse(KEY).unwrap()], 1).unwrap())
}

fuzz_target!(|data: &[u8]| {
    let Ok(bundle) = Bundle::parse(data) else {
        return;
    };
    let _ = bundle.verify_signatures(trusted());
    let _ = bundle.expires();
    let now = Instant::parse_rfc3339("2025-01-01T00:00:00Z").unwrap();
    let _ = bundle.verify(now, Some(1));
    let _ = bundle.verify(now, None);
    if let Err(gatekeeper::BundleError::Policy(d)) = bundle.load("fuzz") {
        let _ = d.render();
    }
    let _ = bundle.to_bytes();
});
