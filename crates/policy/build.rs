//! Fingerprints the engine's source, so that a compiled image (`Policy::to_image`) names the
//! exact build that wrote it: an image's layout is the layout of this crate's types, and an
//! image of another build is refused rather than misread.

use std::path::{Path, PathBuf};

fn files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

fn main() -> std::io::Result<()> {
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=Cargo.toml");
    let mut paths = Vec::new();
    files(Path::new("src"), &mut paths)?;
    paths.sort();
    // FNV-1a over each file's path and text: a fingerprint, not a defence.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for &b in bytes {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for path in &paths {
        feed(path.to_string_lossy().replace('\\', "/").as_bytes());
        feed(&[0]);
        feed(&std::fs::read(path)?);
        feed(&[0]);
    }
    println!("cargo:rustc-env=POLICY_IMAGE_FINGERPRINT={hash:016x}");
    Ok(())
}
