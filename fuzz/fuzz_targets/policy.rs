//! Policy loading: arbitrary bytes as (lossy UTF-8) TOML, loaded beside a fixed common
//! file, with the diagnostics rendered. Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use policy::{Policy, Source};

const COMMON: &str = include_str!("../../policies/common/regions.toml");

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data).into_owned();
    let sources = [
        Source::new("f.toml", text),
        Source::new("common/regions.toml", COMMON),
    ];
    match Policy::from_sources(sources) {
        Ok(_) => {}
        Err(diagnostics) => {
            let _ = diagnostics.render();
        }
    }
});
