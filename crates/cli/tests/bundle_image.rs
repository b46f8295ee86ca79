//! `gatekeeper bundle build` with and without the compiled image, and `bundle verify`
//! saying whether the image was used and, with `--recompile`, whether it is the one this
//! build makes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Cursor;
use std::path::Path;

const POLICIES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../policies/us-2020");

struct Run {
    code: u8,
    stdout: String,
    stderr: String,
}

fn gatekeeper(args: &[&str]) -> Run {
    let mut input = Cursor::new(Vec::new());
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let argv = std::iter::once("gatekeeper").chain(args.iter().copied());
    let code = cli::run(argv, &mut input, &mut out, &mut err);
    Run {
        code,
        stdout: String::from_utf8(out).unwrap(),
        stderr: String::from_utf8(err).unwrap(),
    }
}

fn path(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

/// A key pair in `dir`: the private key's path and the public key's.
fn keygen(dir: &Path) -> (String, String) {
    let key = path(dir, "team.key");
    let run = gatekeeper(&["bundle", "keygen", "--name", "team", "-o", &key]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let public = format!("{key}.pub");
    (key, public)
}

#[test]
fn build_includes_the_image_and_verify_uses_it() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keygen(dir.path());
    let bundle = path(dir.path(), "bundle.gkb");
    let run = gatekeeper(&[
        "bundle",
        "build",
        "--policies",
        POLICIES,
        "-o",
        &bundle,
        "--revision",
        "5",
        "--sign-with",
        &key,
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("format 2"), "{}", run.stdout);
    assert!(run.stdout.contains("compiled image of"), "{}", run.stdout);
    assert!(
        std::fs::read(&bundle)
            .unwrap()
            .starts_with(b"gatekeeper-bundle 2\n")
    );

    let run = gatekeeper(&["bundle", "verify", &bundle, "--trusted-key", &public]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout
            .contains("policy loaded from the compiled image (engine build"),
        "{}",
        run.stdout
    );
    assert_eq!(run.stderr, "");

    let run = gatekeeper(&[
        "bundle",
        "verify",
        &bundle,
        "--trusted-key",
        &public,
        "--recompile",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("byte for byte"), "{}", run.stdout);

    // Signing again keeps the binary form.
    let run = gatekeeper(&["bundle", "sign", &bundle, "--key", &key]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        std::fs::read(&bundle)
            .unwrap()
            .starts_with(b"gatekeeper-bundle 2\n")
    );
    let run = gatekeeper(&["bundle", "verify", &bundle, "--trusted-key", &public]);
    assert_eq!(run.code, 0, "{}", run.stderr);
}

#[test]
fn no_image_builds_a_format_1_json_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keygen(dir.path());
    let bundle = path(dir.path(), "bundle.json");
    let run = gatekeeper(&[
        "bundle",
        "build",
        "--policies",
        POLICIES,
        "-o",
        &bundle,
        "--no-image",
        "--sign-with",
        &key,
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("format 1"), "{}", run.stdout);
    assert!(run.stdout.contains("no compiled image"), "{}", run.stdout);
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&bundle).unwrap()).unwrap();
    assert_eq!(json["manifest"]["format"], 1);
    assert!(json["manifest"].get("image").is_none());

    let run = gatekeeper(&["bundle", "verify", &bundle, "--trusted-key", &public]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout
            .contains("no compiled image: policy compiled from the policy files"),
        "{}",
        run.stdout
    );
    let run = gatekeeper(&[
        "bundle",
        "verify",
        &bundle,
        "--trusted-key",
        &public,
        "--recompile",
    ]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("has no compiled image to compare"),
        "{}",
        run.stderr
    );
}

#[test]
fn verify_says_why_an_image_of_another_build_is_not_used() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keygen(dir.path());
    let file = path(dir.path(), "bundle.gkb");
    let run = gatekeeper(&["bundle", "build", "--policies", POLICIES, "-o", &file]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    // As a bundle built by another version would be: its image names another build.
    let mut bundle = gatekeeper::Bundle::parse(&std::fs::read(&file).unwrap()).unwrap();
    bundle.manifest.image.as_mut().unwrap().build = "0.0.1+older".to_owned();
    std::fs::write(&file, bundle.to_bytes()).unwrap();
    let run = gatekeeper(&["bundle", "sign", &file, "--key", &key]);
    assert_eq!(run.code, 0, "{}", run.stderr);

    let run = gatekeeper(&["bundle", "verify", &file, "--trusted-key", &public]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("policy compiled from the policy files"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.starts_with("warning: ") && run.stderr.contains("0.0.1+older"),
        "{}",
        run.stderr
    );

    let run = gatekeeper(&[
        "bundle",
        "verify",
        &file,
        "--trusted-key",
        &public,
        "--recompile",
    ]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("was made by engine build 0.0.1+older, and this is build"),
        "{}",
        run.stderr
    );
}

#[test]
fn recompile_reports_an_image_that_is_not_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keygen(dir.path());
    // The image of another policy set, listed (and signed) as this one's.
    let ours = path(dir.path(), "ours.gkb");
    let theirs = path(dir.path(), "theirs.gkb");
    let courts = concat!(env!("CARGO_MANIFEST_DIR"), "/../../policies/us-2020-courts");
    for (file, set) in [(&ours, POLICIES), (&theirs, courts)] {
        let run = gatekeeper(&["bundle", "build", "--policies", set, "-o", file]);
        assert_eq!(run.code, 0, "{}", run.stderr);
    }
    let read = |f: &str| gatekeeper::Bundle::parse(&std::fs::read(f).unwrap()).unwrap();
    let mut bundle = read(&ours);
    bundle.image = read(&theirs).image;
    bundle.manifest.image = read(&theirs).manifest.image;
    std::fs::write(&ours, bundle.to_bytes()).unwrap();
    let run = gatekeeper(&["bundle", "sign", &ours, "--key", &key]);
    assert_eq!(run.code, 0, "{}", run.stderr);

    let run = gatekeeper(&[
        "bundle",
        "verify",
        &ours,
        "--trusted-key",
        &public,
        "--recompile",
    ]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(
        run.stderr
            .contains("the compiled image is not the one this build")
            && run.stderr.contains("first differ at byte"),
        "{}",
        run.stderr
    );
}

#[test]
fn verify_refuses_a_tampered_image() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keygen(dir.path());
    let file = path(dir.path(), "bundle.gkb");
    let run = gatekeeper(&[
        "bundle",
        "build",
        "--policies",
        POLICIES,
        "-o",
        &file,
        "--sign-with",
        &key,
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 10;
    bytes[last] ^= 0x40;
    std::fs::write(&file, &bytes).unwrap();
    let run = gatekeeper(&["bundle", "verify", &file, "--trusted-key", &public]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("compiled image does not match its manifest"),
        "{}",
        run.stderr
    );
}

/// `diff` and `timeline` read a bundle with its image whatever its name: the same policy
/// as its folder, no change.
#[test]
fn diff_reads_a_binary_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = path(dir.path(), "policy.bundle");
    let run = gatekeeper(&[
        "bundle",
        "build",
        "--policies",
        POLICIES,
        "-o",
        &bundle,
        "--revision",
        "1",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        std::fs::read(&bundle)
            .unwrap()
            .starts_with(b"gatekeeper-bundle ")
    );
    let run = gatekeeper(&["diff", &bundle, POLICIES]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
}
