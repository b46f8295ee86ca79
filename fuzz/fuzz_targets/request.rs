//! Request decoding: arbitrary bytes as a JSON request record, validated, decided against
//! the shipped policies under every posture, explained and serialized. Must never panic.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use policy::{Policy, Posture, RequestRecord};

fn policy() -> &'static Policy {
    static POLICY: OnceLock<Policy> = OnceLock::new();
    POLICY.get_or_init(|| {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../policies");
        match gatekeeper::load_dirs(&[
            format!("{root}/us-2020-courts"),
            format!("{root}/us-2024-pafaca"),
        ]) {
            Ok(loaded) => loaded.policy,
            Err(d) => panic!("the shipped policies do not load:\n{}", d.render()),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let policy = policy();
    let Ok(record) = serde_json::from_slice::<RequestRecord>(data) else {
        return;
    };
    let Ok(request) = record.into_request() else {
        return;
    };
    for posture in Posture::ALL {
        let decision = policy.decide(&request, posture);
        let _ = decision.explain(&request);
        let record = decision.to_record();
        let _ = serde_json::to_string(&record);
    }
});
