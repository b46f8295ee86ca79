//! Audit reading: arbitrary bytes as a trail folder: the first part is the trail file,
//! and after each `\n--checkpoint--\n` line come the folder's `checkpoint` and then its
//! `checkpoints.jsonl`. Read, verified (with and without the seeds' key) and proved from.
//! Must never panic.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use gatekeeper::audit::{self, CHECKPOINT_FILE, CHECKPOINT_LOG, Checkpoint};
use gatekeeper::keys::VerifierKey;
use libfuzzer_sys::fuzz_target;

const SPLIT: &[u8] = b"\n--checkpoint--\n";
/// The public key the seed trail's checkpoints are signed with.
const KEY: &str = "fuzz-seed+b1d1f812+ASx6utyfb3GwWQot6+EXpWlz+IERcx0UWmy2KSh4FsRW";

fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir =
            std::env::temp_dir().join(format!("gatekeeper-fuzz-audit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    })
}

fn key() -> &'static VerifierKey {
    static KEY_: OnceLock<VerifierKey> = OnceLock::new();
    KEY_.get_or_init(|| VerifierKey::parse(KEY).unwrap())
}

fn split(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = data.windows(SPLIT.len()).position(|w| w == SPLIT)?;
    Some((&data[..at], &data[at + SPLIT.len()..]))
}

fn put(path: PathBuf, bytes: Option<&[u8]>) {
    match bytes {
        Some(b) => std::fs::write(path, b).unwrap(),
        None => {
            let _ = std::fs::remove_file(path);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let dir = dir();
    let (trail, rest) = split(data).map_or((data, None), |(a, b)| (a, Some(b)));
    let (checkpoint, log) = match rest.map(|r| split(r).map_or((r, None), |(a, b)| (a, Some(b)))) {
        Some((c, l)) => (Some(c), l),
        None => (None, None),
    };
    let file = dir.join("audit-000001.jsonl");
    std::fs::write(&file, trail).unwrap();
    put(dir.join(CHECKPOINT_FILE), checkpoint);
    put(dir.join(CHECKPOINT_LOG), log);

    let text = checkpoint.and_then(|c| std::str::from_utf8(c).ok());
    let given: Vec<Checkpoint> = text
        .and_then(|c| Checkpoint::parse_unverified(c).ok())
        .into_iter()
        .collect();
    if let Some(text) = text {
        let _ = Checkpoint::open(text, key());
    }

    let _ = audit::read_records(&[&file]);
    let _ = audit::verify(&[dir]);
    let _ = audit::verify_with(&[dir], &[], Some(key()));
    let _ = audit::verify_with(&[&file], &given, None);
    for index in 0..(data.len() as u64 % 5) {
        let _ = audit::prove_inclusion(dir, index, None);
        let _ = audit::prove_consistency(dir, index, None);
    }
    if let Some(c) = given.first() {
        if let Ok(p) = audit::prove_inclusion(dir, 0, None) {
            let _ = p.check(c, None);
        }
        if let Ok(p) = audit::prove_consistency(dir, 1, None) {
            let _ = p.check(c, Some(c));
        }
    }
});
