//! Bundles that carry the compiled image of their policy: written to real files and read
//! back, tampered with, damaged, made by "another build", and compared, decision for
//! decision, with the policy compiled from the same files.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use gatekeeper::keys::{SignerKey, VerifierKey};
use gatekeeper::policy::{Action, Instant, Policy, Posture, RequestRecord};
use gatekeeper::{
    BUNDLE_FORMAT, BUNDLE_FORMAT_IMAGE, Bundle, BundleError, Gatekeeper, ImageSkipped, ImageUse,
    PolicySource, TrustedKeys, load_dirs, sha256_hex,
};

fn policies() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies")
}

/// Every shipped set, as one policy.
fn shipped() -> Vec<PathBuf> {
    ["us-2020", "us-2020-courts", "us-2024-pafaca"]
        .iter()
        .map(|s| policies().join(s))
        .collect()
}

fn at(s: &str) -> Instant {
    Instant::parse_rfc3339(s).unwrap()
}

fn with_image(dirs: &[PathBuf]) -> Bundle {
    Bundle::build_with_image(dirs, 7, at("2026-01-01T00:00:00Z"), None).unwrap()
}

/// Writes the bundle's bytes to a file and reads them back.
fn through_file(dir: &Path, name: &str, bytes: &[u8]) -> Vec<u8> {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    std::fs::read(&path).unwrap()
}

/// Where the image starts in a binary bundle's bytes: it is their last part.
fn image_offset(bundle: &Bundle, bytes: &[u8]) -> usize {
    bytes.len() - bundle.image.as_ref().unwrap().len()
}

/// Recomputes the image's entry in the manifest (what a careless or hostile packer does).
fn relist_image(bundle: &mut Bundle) {
    let image = bundle.image.as_ref().unwrap();
    let entry = bundle.manifest.image.as_mut().unwrap();
    entry.sha256 = sha256_hex(image);
    entry.size = image.len() as u64;
}

#[test]
fn round_trip_through_a_binary_file_loads_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let key = SignerKey::generate("policy-team").unwrap();
    let trusted = TrustedKeys::new([key.verifier()], 1).unwrap();
    let mut bundle = with_image(&shipped());
    bundle.sign(&key).unwrap();
    assert_eq!(bundle.manifest.format, BUNDLE_FORMAT_IMAGE);
    let entry = bundle.manifest.image.clone().unwrap();
    assert_eq!(entry.build, gatekeeper::policy::image_build());
    assert!(bundle.manifest.files.iter().all(|f| f.size.is_some()));

    let bytes = through_file(dir.path(), "bundle.gkb", &bundle.to_bytes());
    assert!(bytes.starts_with(b"gatekeeper-bundle 2\n"), "binary form");
    let parsed = Bundle::parse(&bytes).unwrap();
    assert_eq!(parsed, bundle);
    let owned = Bundle::parse_owned(bytes.clone()).unwrap();
    assert_eq!(owned, bundle);
    // The JSON form (base64 image) reads back to the same bundle too.
    let json = serde_json::to_vec(&bundle).unwrap();
    assert_eq!(Bundle::parse(&json).unwrap(), bundle);
    assert_eq!(Bundle::parse_owned(json).unwrap(), bundle);

    assert_eq!(owned.verify_signatures(&trusted).unwrap(), ["policy-team"]);
    owned.verify(at("2026-02-01T00:00:00Z"), Some(7)).unwrap();
    let from_image = owned.clone().into_loaded("bundle.gkb").unwrap();
    assert_eq!(from_image.image, ImageUse::Loaded);
    assert_eq!(from_image.image.warning(), None);

    // The revision is the content's, whichever way the policy was made.
    let from_files = owned.load_files("bundle.gkb").unwrap();
    assert_eq!(from_files.image, ImageUse::NotOffered);
    let from_disk = load_dirs(&shipped()).unwrap();
    assert_eq!(from_image.revision, from_disk.revision);
    assert_eq!(from_files.revision, from_disk.revision);
    assert_eq!(from_image.texts.len(), from_disk.texts.len());

    // Compiling is deterministic: the image is what the files make, every time.
    assert_eq!(
        from_files.policy.to_image(),
        *owned.image.as_ref().unwrap(),
        "the image is byte for byte what compiling the files gives"
    );
    assert_eq!(from_image.policy.to_image(), *owned.image.as_ref().unwrap());
}

#[test]
fn a_handle_loads_a_signed_binary_bundle_from_its_image() {
    let dir = tempfile::tempdir().unwrap();
    let key = SignerKey::generate("policy-team").unwrap();
    let mut bundle = with_image(&shipped());
    bundle.sign(&key).unwrap();
    let path = dir.path().join("bundle.json");
    std::fs::write(&path, bundle.to_bytes()).unwrap();
    let gk = Gatekeeper::builder()
        .source(PolicySource::BundleFile(path.clone()))
        .trusted_keys([key.verifier()], 1)
        .build()
        .unwrap();
    let active = gk.active().unwrap();
    assert_eq!(active.revision, load_dirs(&shipped()).unwrap().revision);

    // A tampered image is refused, and the good policy stays.
    let mut bytes = bundle.to_bytes();
    let at_image = image_offset(&bundle, &bytes);
    bytes[at_image + 100] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let refused = gk.reload().unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("compiled image does not match"),
        "{refused}"
    );
    assert_eq!(gk.active().unwrap().revision, active.revision);
}

#[test]
fn tampered_image_bytes_fail_their_digest() {
    let dir = tempfile::tempdir().unwrap();
    let key = SignerKey::generate("policy-team").unwrap();
    let trusted = TrustedKeys::new([key.verifier()], 1).unwrap();
    let mut bundle = with_image(&shipped());
    bundle.sign(&key).unwrap();
    let mut bytes = bundle.to_bytes();
    let at_image = image_offset(&bundle, &bytes);
    for offset in [
        0,
        9,
        (bytes.len() - at_image) / 2,
        bytes.len() - at_image - 1,
    ] {
        bytes[at_image + offset] ^= 0x20;
        let read = through_file(dir.path(), "tampered.gkb", &bytes);
        let tampered = Bundle::parse(&read).unwrap();
        // The manifest is untouched, so the signatures still hold: the digest catches it.
        tampered.verify_signatures(&trusted).unwrap();
        let err = tampered.verify_digests().unwrap_err();
        assert!(
            matches!(err, BundleError::ImageDigest { ref expected, .. } if *expected == bundle.manifest.image.as_ref().unwrap().sha256),
            "{err}"
        );
        bytes[at_image + offset] ^= 0x20;
    }
    // A byte cut from the image moves everything: the binary form no longer adds up.
    let mut short = bytes.clone();
    short.pop();
    let err = Bundle::parse(&short).unwrap_err();
    assert!(matches!(err, BundleError::Binary(_)), "{err}");
    assert!(err.to_string().contains("compiled image"), "{err}");
    // A tampered policy file is caught as before, by its own digest.
    let mut bytes = bundle.to_bytes();
    let text_at = bytes.windows(8).position(|w| w == b"[[app]]\n").unwrap();
    bytes[text_at + 2] = b'X';
    let err = Bundle::parse(&bytes).unwrap().verify_digests().unwrap_err();
    assert!(matches!(err, BundleError::Digest { .. }), "{err}");
    // Changing the manifest's digest to match breaks the signatures.
    let mut relisted = Bundle::parse(&bundle.to_bytes()).unwrap();
    relisted.image.as_mut().unwrap()[50] ^= 1;
    relist_image(&mut relisted);
    relisted.verify_digests().unwrap();
    assert!(matches!(
        relisted.verify_signatures(&trusted),
        Err(BundleError::Signature(_))
    ));
}

#[test]
fn an_image_of_another_build_is_not_used_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let mut bundle = with_image(&shipped());
    bundle.manifest.image.as_mut().unwrap().build = "0.0.1+elsewhere".to_owned();
    let key = SignerKey::generate("policy-team").unwrap();
    bundle.sign(&key).unwrap();
    let bytes = through_file(dir.path(), "other.gkb", &bundle.to_bytes());
    let parsed = Bundle::parse_owned(bytes).unwrap();
    parsed
        .verify_signatures(&TrustedKeys::new([key.verifier()], 1).unwrap())
        .unwrap();
    parsed.verify_digests().unwrap();
    let loaded = parsed.into_loaded("other.gkb").unwrap();
    assert_eq!(
        loaded.image,
        ImageUse::Skipped(ImageSkipped::OtherBuild {
            found: "0.0.1+elsewhere".to_owned(),
            expected: gatekeeper::policy::image_build().to_owned(),
        })
    );
    let warning = loaded.image.warning().unwrap();
    assert!(warning.contains("0.0.1+elsewhere"), "{warning}");
    assert!(
        warning.contains("compiled from the bundle's policy files"),
        "{warning}"
    );
    assert_eq!(loaded.revision, load_dirs(&shipped()).unwrap().revision);

    // An image whose own header names another build, listed as this build's: the engine
    // refuses it, and the files are compiled instead.
    let mut bundle = with_image(&shipped());
    let image = bundle.image.as_mut().unwrap();
    let build = gatekeeper::policy::image_build().as_bytes();
    let at = image.windows(build.len()).position(|w| w == build).unwrap();
    image[at] = if image[at] == b'9' { b'8' } else { b'9' };
    relist_image(&mut bundle);
    bundle.verify_digests().unwrap();
    let loaded = bundle.load("relabelled.gkb").unwrap();
    assert!(
        matches!(
            loaded.image,
            ImageUse::Skipped(ImageSkipped::Refused(
                gatekeeper::policy::ImageError::Build { .. }
            ))
        ),
        "{:?}",
        loaded.image
    );
}

#[test]
fn a_damaged_image_with_a_correct_digest_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let good = with_image(&[policies().join("us-2020")]);
    let image = good.image.clone().unwrap();
    let n = image.len();
    let mut damaged: Vec<(String, Vec<u8>)> = vec![
        ("empty".to_owned(), Vec::new()),
        (
            "not an image".to_owned(),
            b"{\"not\": \"an image\"}".to_vec(),
        ),
        (
            "doubled".to_owned(),
            [image.clone(), image.clone()].concat(),
        ),
    ];
    for cut in [1, 8, 9, 20, n / 3, n / 2, n - 1] {
        damaged.push((format!("cut at {cut}"), image[..cut].to_vec()));
    }
    // Bytes overwritten at spread offsets: most make the image inconsistent; one that
    // lands in a name may leave a loadable image (an image is as trustworthy as its signer).
    let mut rng = fastrand_like(0x5eed);
    for round in 0..200 {
        let mut bytes = image.clone();
        for _ in 0..1 + round % 4 {
            let i = (rng() as usize) % n;
            bytes[i] = rng() as u8;
        }
        damaged.push((format!("overwritten, round {round}"), bytes));
    }
    let mut refused = 0;
    let total = damaged.len();
    for (what, bytes) in damaged {
        let mut bundle = good.clone();
        bundle.image = Some(bytes);
        relist_image(&mut bundle);
        let read = through_file(dir.path(), "damaged.gkb", &bundle.to_bytes());
        let bundle = Bundle::parse(&read).unwrap_or_else(|e| panic!("{what}: {e}"));
        bundle.verify_digests().unwrap();
        let loaded = bundle
            .into_loaded("damaged.gkb")
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        match &loaded.image {
            ImageUse::Skipped(ImageSkipped::Refused(e)) => {
                refused += 1;
                let warning = loaded.image.warning().unwrap();
                assert!(warning.contains(&e.to_string()), "{what}: {warning}");
            }
            ImageUse::Loaded => {
                assert!(what.starts_with("overwritten"), "{what} loaded");
                // A changed name or text: the policy decides (whatever it now says) without
                // a panic.
                for record in requests(&loaded.policy).into_iter().step_by(10) {
                    if let Ok(request) = record.into_request() {
                        let decision = loaded.policy.decide(&request, Posture::default());
                        let _ = serde_json::to_string(&decision).unwrap();
                    }
                }
            }
            other => panic!("{what}: {other:?}"),
        }
    }
    eprintln!("{refused} of {total} damaged images refused, the others loaded");
    assert!(refused >= 150, "only {refused} damaged images refused");
}

/// A small deterministic generator (xorshift), so that the damage is the same every run.
fn fastrand_like(seed: u64) -> impl FnMut() -> u64 {
    let mut state = seed;
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

/// Requests over every identifier of every app, every action, instants across the years
/// the sets cover, storefronts in and out of the regions, with and without `known_at`,
/// and the requests of the sets' own test cases.
fn requests(policy: &Policy) -> Vec<RequestRecord> {
    let mut records: Vec<serde_json::Value> = Vec::new();
    let instants: Vec<String> = (0..48)
        .map(|i| {
            let secs = 1_577_836_800_i64 + i * 4_000_000 + (i % 7) * 3_600;
            Instant::from_nanos(secs * 1_000_000_000).to_string()
        })
        .collect();
    let mut apps: Vec<(&str, &str)> = Vec::new();
    for app in policy.apps() {
        apps.extend(app.ios().map(|id| ("ios", id)));
        apps.extend(app.android().map(|id| ("android", id)));
    }
    apps.push(("android", "com.example.uncovered"));
    for (i, (platform, id)) in apps.iter().enumerate() {
        for (j, action) in Action::ALL.iter().enumerate() {
            for (k, at) in instants.iter().enumerate() {
                let storefront = ["US", "PR", "CA", "DE", "CN"][(i + j + k) % 5];
                let server = ["US", "IE"][k % 2];
                let mut record = serde_json::json!({
                    "app": {"platform": platform, "id": id},
                    "action": action.as_str(),
                    "at": at,
                    "storefront": storefront,
                    "server_country": server,
                });
                if k % 6 == 0 {
                    record["known_at"] = serde_json::json!(instants[k / 2]);
                }
                records.push(record);
            }
        }
    }
    for set in ["us-2020", "us-2020-courts", "us-2024-pafaca"] {
        for file in std::fs::read_dir(policies().join(set).join("tests")).unwrap() {
            let text = std::fs::read_to_string(file.unwrap().path()).unwrap();
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let case: serde_json::Value = serde_json::from_str(line).unwrap();
                records.push(case["request"].clone());
            }
        }
    }
    records
        .into_iter()
        .map(|r| serde_json::from_value(r).unwrap())
        .collect()
}

#[test]
fn decisions_from_the_image_equal_those_from_the_files() {
    for dirs in [
        vec![policies().join("us-2020")],
        vec![policies().join("us-2020-courts")],
        vec![policies().join("us-2024-pafaca")],
        shipped(),
    ] {
        let bundle = with_image(&dirs);
        let from_image = bundle.load("b").unwrap();
        assert_eq!(from_image.image, ImageUse::Loaded);
        let from_files = bundle.load_files("b").unwrap();
        assert_eq!(from_image.revision, from_files.revision);
        let (a, b) = (&from_image.policy, &from_files.policy);
        let mut compared = 0;
        for (i, record) in requests(b).into_iter().enumerate() {
            let Ok(request) = record.clone().into_request() else {
                continue;
            };
            for posture in Posture::ALL {
                let (x, y) = (a.decide(&request, posture), b.decide(&request, posture));
                assert_eq!(
                    serde_json::to_string(&x).unwrap(),
                    serde_json::to_string(&y).unwrap(),
                    "{dirs:?} {record:?} {posture:?}"
                );
                if i % 7 == 0 {
                    assert_eq!(x.explain(&request), y.explain(&request));
                }
                compared += 1;
            }
        }
        assert!(compared > 10_000, "{dirs:?}: only {compared} decisions");
    }
}

/// A format 1 bundle made before bundles carried images (`policies/us-2020`, signed by the
/// key beside it): it still parses, verifies and loads, and signs exactly as it did.
#[test]
fn format_1_bundles_still_load() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let bytes = std::fs::read(fixtures.join("format-1-us-2020.json")).unwrap();
    let key = std::fs::read_to_string(fixtures.join("format-1-us-2020.pub")).unwrap();
    let trusted = TrustedKeys::new([VerifierKey::parse(key.trim()).unwrap()], 1).unwrap();
    let bundle = Bundle::parse_owned(bytes.clone()).unwrap();
    assert_eq!(bundle.manifest.format, BUNDLE_FORMAT);
    assert_eq!(bundle.image, None);
    assert_eq!(bundle.verify_signatures(&trusted).unwrap(), ["fixture"]);
    bundle.verify(at("2026-02-01T00:00:00Z"), None).unwrap();
    let signed = bundle.signed_text();
    assert!(!signed.contains("\"image\"") && !signed.contains("\"size\""));
    let loaded = bundle.clone().into_loaded("format-1").unwrap();
    assert_eq!(loaded.image, ImageUse::NotOffered);
    assert_eq!(loaded.image.warning(), None);
    // Written again, a format 1 bundle is the same JSON.
    let again = bundle.to_bytes();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&again).unwrap(),
        serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()
    );
    // And a new format 1 bundle (`--no-image`) is laid out the same way.
    let fresh = Bundle::build(
        &[policies().join("us-2020")],
        1,
        at("2026-01-01T00:00:00Z"),
        None,
    )
    .unwrap();
    assert_eq!(fresh.manifest.format, BUNDLE_FORMAT);
    let json: serde_json::Value = serde_json::from_slice(&fresh.to_bytes()).unwrap();
    let keys = |v: &serde_json::Value| -> BTreeSet<String> {
        v.as_object().unwrap().keys().cloned().collect()
    };
    let set = |keys: &[&str]| -> BTreeSet<String> { keys.iter().map(|k| k.to_string()).collect() };
    assert_eq!(keys(&json), set(&["manifest", "files"]));
    assert_eq!(
        keys(&json["manifest"]),
        set(&["format", "revision", "created", "expires", "roots", "files"])
    );
    assert_eq!(
        keys(&json["manifest"]["files"][0]),
        set(&["path", "sha256"])
    );
}

#[test]
fn manifests_must_match_their_format() {
    let image = with_image(&[policies().join("us-2020")]);
    // Format 2 without an image, or format 1 with one: refused at parse, whatever the form.
    let mut no_image = image.clone();
    no_image.manifest.image = None;
    no_image.image = None;
    let err = Bundle::parse(&no_image.to_bytes()).unwrap_err();
    assert!(
        matches!(err, BundleError::Inconsistent { format: 2, .. }),
        "{err}"
    );
    let mut one = image.clone();
    one.manifest.format = BUNDLE_FORMAT;
    let err = Bundle::parse(&serde_json::to_vec(&one).unwrap()).unwrap_err();
    assert!(
        matches!(err, BundleError::Inconsistent { format: 1, .. }),
        "{err}"
    );
    // An unknown format is named.
    let mut three = image.clone();
    three.manifest.format = 3;
    let err = Bundle::parse(&serde_json::to_vec(&three).unwrap()).unwrap_err();
    assert!(matches!(err, BundleError::Format(3)), "{err}");
    let err = Bundle::parse(b"gatekeeper-bundle 3\n2\n{}").unwrap_err();
    assert!(matches!(err, BundleError::Format(3)), "{err}");
    // A file the policy does not load has no place in a bundle with an image: the two ways
    // of loading would give different revisions.
    let mut extra = image.clone();
    extra
        .files
        .insert("stray/notes.txt".to_owned(), "not policy".to_owned());
    extra.manifest.files.push(gatekeeper::ManifestFile {
        path: "stray/notes.txt".to_owned(),
        sha256: sha256_hex(b"not policy"),
        size: Some(10),
    });
    extra.manifest.files.sort_by(|a, b| a.path.cmp(&b.path));
    extra.manifest.image.as_mut().unwrap().build = "elsewhere".to_owned();
    let extra = Bundle::parse(&extra.to_bytes()).unwrap();
    extra.verify_digests().unwrap();
    let err = extra.load("extra").unwrap_err();
    assert!(
        matches!(err, BundleError::Unloaded(ref p) if p == &["stray/notes.txt"]),
        "{err}"
    );
    // Binary forms that do not add up are refused with what is wrong.
    let bytes = image.to_bytes();
    for (cut, what) in [(19, "format line"), (21, "header length"), (40, "header")] {
        let err = Bundle::parse(&bytes[..cut]).unwrap_err();
        assert!(err.to_string().contains(what), "{cut}: {err}");
    }
    let mut trailing = bytes.clone();
    trailing.extend_from_slice(b"more");
    let err = Bundle::parse(&trailing).unwrap_err();
    assert!(err.to_string().contains("4 bytes follow"), "{err}");
}

/// A file over the limit on a policy file fails the load from the image too, as it fails
/// compiling the files: the two ways agree.
#[test]
fn an_oversized_file_fails_either_way() {
    let mut bundle = with_image(&[policies().join("us-2020")]);
    let limit = gatekeeper::MAX_POLICY_FILE_BYTES as usize;
    let huge = "# padding\n".repeat(limit / 10 + 1);
    bundle.manifest.files.push(gatekeeper::ManifestFile {
        path: "us-2020/huge.toml".to_owned(),
        sha256: sha256_hex(huge.as_bytes()),
        size: Some(huge.len() as u64),
    });
    bundle.manifest.files.sort_by(|a, b| a.path.cmp(&b.path));
    bundle.files.insert("us-2020/huge.toml".to_owned(), huge);
    bundle.verify_digests().unwrap();
    let err = bundle.load("huge").unwrap_err();
    let BundleError::Policy(diagnostics) = &err else {
        panic!("{err}");
    };
    let rendered = diagnostics.render();
    assert!(rendered.contains("huge:us-2020/huge.toml"), "{rendered}");
    assert!(rendered.contains("over the limit"), "{rendered}");
}
