//! Signed bundles over HTTP from a bundle server on 127.0.0.1 and from real files: forged
//! bundles, thresholds and key rotation, the cache after a restart, rollback, and the
//! `bundle keygen` / `sign` / `verify` commands.

use std::path::Path;

use gatekeeper::keys::{SignerKey, VerifierKey};
use gatekeeper::{
    BuildError, Bundle, BundleError, Gate, Gatekeeper, HttpSource, ManualClock, PolicySource,
    Readiness, ReloadError, Reloaded,
};

use crate::bundles::{BundleServer, bundle, dead_url, expiring, forge, served, source};
use crate::handle::{at, wechat_update};
use crate::support::root;

fn key(name: &str) -> SignerKey {
    SignerKey::generate(name).unwrap()
}

fn signed(b: &Bundle, keys: &[&SignerKey]) -> Bundle {
    let mut b = b.clone();
    for k in keys {
        b.sign(k).unwrap();
    }
    b
}

fn trusting(
    source: HttpSource,
    keys: &[&SignerKey],
    threshold: usize,
) -> Result<Gatekeeper, BuildError> {
    Gatekeeper::builder()
        .source(PolicySource::BundleUrl(source))
        .trusted_keys(keys.iter().map(|k| k.verifier()), threshold)
        .build()
}

#[track_caller]
fn refused(result: Result<Reloaded, ReloadError>, what: fn(&BundleError) -> bool) {
    match result {
        Err(ReloadError::Bundle(e)) if what(&e) => {}
        other => panic!("expected a refused bundle, got {other:?}"),
    }
}

/// Whoever can write the file at the bundle URL edits a policy, recomputes the digests and
/// raises the revision: accepted without keys (the finding), refused with them, whether the
/// old signatures are kept, stripped, or replaced by the forger's own.
#[test]
fn a_forged_bundle_with_recomputed_digests_and_a_raised_revision_is_refused() {
    let alice = key("alice");
    let mallory = key("mallory");
    let genuine = signed(&bundle("us-2020", 1), &[&alice]);
    let server = BundleServer::start(served(&genuine, "\"v1\""));
    let gk = trusting(source(&server.url, None), &[&alice], 1).unwrap();
    assert_eq!(gk.active().unwrap().signed_by, vec!["alice".to_owned()]);
    assert_eq!(gk.check(&wechat_update()).unwrap().gate, Gate::Deny);

    let forged = forge(&genuine, 2);
    assert!(forged.verify_digests().is_ok(), "the digests match");
    server.serve(served(&forged, "\"forged\""));
    refused(gk.reload(), |e| matches!(e, BundleError::Signature(_)));
    let mut stripped = forged.clone();
    stripped.signatures.clear();
    server.serve(served(&stripped, "\"stripped\""));
    refused(gk.reload(), |e| matches!(e, BundleError::Unsigned { .. }));
    let mut own = stripped.clone();
    own.sign(&mallory).unwrap();
    server.serve(served(&own, "\"mallory\""));
    refused(
        gk.reload(),
        |e| matches!(e, BundleError::UnderSigned { signed_by, threshold: 1 } if signed_by.is_empty()),
    );
    assert_eq!(gk.active().unwrap().bundle_revision, Some(1));
    assert_eq!(gk.check(&wechat_update()).unwrap().gate, Gate::Deny);

    // Without trusted keys the forgery goes through: what signatures are for.
    let unguarded = Gatekeeper::builder()
        .source(PolicySource::BundleUrl(source(&server.url, None)))
        .build()
        .unwrap();
    assert_eq!(unguarded.active().unwrap().bundle_revision, Some(2));
    assert_eq!(unguarded.check(&wechat_update()).unwrap().gate, Gate::Allow);
}

/// A bundle of revision `u64::MAX` that is not properly signed never becomes the rollback
/// floor: the next legitimate bundle loads, and the cache keeps the legitimate one.
#[test]
fn an_unsigned_u64_max_revision_cannot_lock_out_the_next_legitimate_bundle() {
    let alice = key("alice");
    let mallory = key("mallory");
    let cache = tempfile::tempdir().unwrap();
    let five = signed(&bundle("us-2020", 5), &[&alice]);
    let server = BundleServer::start(served(&five, "\"v5\""));
    let gk = trusting(source(&server.url, Some(cache.path())), &[&alice], 1).unwrap();
    assert_eq!(gk.active().unwrap().bundle_revision, Some(5));

    let mut max = forge(&five, u64::MAX);
    max.signatures.clear();
    server.serve(served(&max, "\"max\""));
    refused(gk.reload(), |e| matches!(e, BundleError::Unsigned { .. }));
    max.sign(&mallory).unwrap();
    server.serve(served(&max, "\"max-mallory\""));
    refused(gk.reload(), |e| {
        matches!(e, BundleError::UnderSigned { .. })
    });

    let six = signed(&bundle("us-2020-courts", 6), &[&alice]);
    server.serve(served(&six, "\"v6\""));
    assert!(matches!(gk.reload().unwrap(), Reloaded::Swapped(_)));
    assert_eq!(gk.active().unwrap().bundle_revision, Some(6));
    drop(server);

    // After a restart with the server down, the cache holds the legitimate bundle.
    let restarted = trusting(source(&dead_url(), Some(cache.path())), &[&alice], 1).unwrap();
    assert_eq!(restarted.active().unwrap().bundle_revision, Some(6));
}

/// Two of three signers; then a rotation: a new key is listed beside the old ones, bundles
/// are signed by the new key, and the old key is dropped.
#[test]
fn two_of_three_signers_and_a_key_rotation() {
    let (alice, bob, carol, dave) = (key("alice"), key("bob"), key("carol"), key("dave"));
    let server = BundleServer::start(served(
        &signed(&bundle("us-2020", 1), &[&alice]),
        "\"one-signer\"",
    ));
    let before = trusting(source(&server.url, None), &[&alice, &bob, &carol], 2);
    assert!(
        matches!(
            &before,
            Err(BuildError::FirstLoad(ReloadError::Bundle(BundleError::UnderSigned { signed_by, threshold: 2 })))
                if signed_by == &["alice".to_owned()]
        ),
        "{before:?}"
    );
    server.serve(served(
        &signed(&bundle("us-2020", 1), &[&alice, &bob]),
        "\"v1\"",
    ));
    let old = trusting(source(&server.url, None), &[&alice, &bob, &carol], 2).unwrap();
    assert_eq!(old.active().unwrap().signed_by, ["alice", "bob"]);
    server.serve(served(
        &signed(&bundle("us-2020", 2), &[&alice, &carol]),
        "\"v2\"",
    ));
    assert!(matches!(old.reload().unwrap(), Reloaded::Swapped(_)));

    // Rotation, step 1: dave is listed beside the old keys.
    let rotating = trusting(source(&server.url, None), &[&alice, &bob, &carol, &dave], 2).unwrap();
    let by_bob_and_dave = signed(&bundle("us-2020-courts", 3), &[&bob, &dave]);
    server.serve(served(&by_bob_and_dave, "\"v3\""));
    assert!(matches!(rotating.reload().unwrap(), Reloaded::Swapped(_)));
    assert_eq!(rotating.active().unwrap().signed_by, ["bob", "dave"]);
    // A gatekeeper that does not list dave yet counts bob only.
    refused(
        old.reload(),
        |e| matches!(e, BundleError::UnderSigned { signed_by, .. } if signed_by == &["bob".to_owned()]),
    );

    // Step 2: alice is dropped; her signature no longer counts.
    let after = trusting(source(&server.url, None), &[&bob, &carol, &dave], 2).unwrap();
    server.serve(served(
        &signed(&bundle("us-2020-courts", 4), &[&alice, &bob]),
        "\"v4-alice\"",
    ));
    refused(after.reload(), |e| {
        matches!(e, BundleError::UnderSigned { .. })
    });
    server.serve(served(
        &signed(&bundle("us-2020-courts", 4), &[&carol, &dave]),
        "\"v4\"",
    ));
    assert!(matches!(after.reload().unwrap(), Reloaded::Swapped(_)));
    assert_eq!(after.active().unwrap().bundle_revision, Some(4));
}

/// A signature by a key that is not trusted is ignored, even one under a trusted key's name.
#[test]
fn a_signature_by_an_unknown_key_is_ignored() {
    let alice = key("alice");
    let impostor = key("alice");
    let mallory = key("mallory");
    let b = signed(&bundle("us-2020", 1), &[&mallory, &impostor, &alice]);
    let server = BundleServer::start(served(&b, "\"v1\""));
    let gk = trusting(source(&server.url, None), &[&alice], 1).unwrap();
    assert_eq!(gk.active().unwrap().signed_by, ["alice"]);
    // Without alice's own signature, the others count for nothing.
    server.serve(served(
        &signed(&bundle("us-2020", 2), &[&mallory, &impostor]),
        "\"v2\"",
    ));
    refused(
        gk.reload(),
        |e| matches!(e, BundleError::UnderSigned { signed_by, .. } if signed_by.is_empty()),
    );
}

/// A signature that names a trusted key and does not verify refuses the bundle, even when
/// other valid signatures meet the threshold.
#[test]
fn a_bad_signature_by_a_known_key_is_refused() {
    let (alice, bob) = (key("alice"), key("bob"));
    let mut b = signed(&bundle("us-2020", 1), &[&alice, &bob]);
    let line = b
        .signatures
        .iter_mut()
        .find(|l| l.contains(" bob "))
        .unwrap();
    // Flip a character of the signature proper, after the key hash's base64.
    let mut chars: Vec<char> = line.chars().collect();
    let i = chars.len() - 10;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    *line = chars.into_iter().collect();
    let server = BundleServer::start(served(&b, "\"v1\""));
    let built = trusting(source(&server.url, None), &[&alice, &bob], 1);
    assert!(
        matches!(
            &built,
            Err(BuildError::FirstLoad(ReloadError::Bundle(
                BundleError::Signature(_)
            )))
        ),
        "{built:?}"
    );
}

fn write_cache(cache: &Path, b: &Bundle) {
    std::fs::write(cache.join("bundle.json"), b.to_bytes()).unwrap();
}

fn read_cache(cache: &Path) -> Bundle {
    Bundle::parse(&std::fs::read(cache.join("bundle.json")).unwrap()).unwrap()
}

/// A cache edited while the gatekeeper was down (a forged policy, a raised revision) is
/// refused at start, and its revision does not become the rollback floor.
#[test]
fn a_cache_tampered_while_down_is_refused_at_start() {
    let alice = key("alice");
    let cache = tempfile::tempdir().unwrap();
    {
        let server =
            BundleServer::start(served(&signed(&bundle("us-2020", 3), &[&alice]), "\"v3\""));
        let gk = trusting(source(&server.url, Some(cache.path())), &[&alice], 1).unwrap();
        assert_eq!(gk.active().unwrap().bundle_revision, Some(3));
    }
    let mut forged = forge(&read_cache(cache.path()), u64::MAX);
    write_cache(cache.path(), &forged);
    let dead = dead_url();
    let built = trusting(source(&dead, Some(cache.path())), &[&alice], 1);
    assert!(
        matches!(built, Err(BuildError::FirstLoad(ReloadError::Fetch(_)))),
        "the forged cache must not load: {built:?}"
    );
    forged.signatures.clear();
    write_cache(cache.path(), &forged);
    let gk = Gatekeeper::builder()
        .source(PolicySource::BundleUrl(source(&dead, Some(cache.path()))))
        .trusted_keys([alice.verifier()], 1)
        .start_empty(true)
        .build()
        .unwrap();
    assert!(gk.active().is_none());
    assert!(matches!(gk.readiness(), Readiness::NoPolicy { .. }));
    assert_eq!(gk.check(&wechat_update()).unwrap().gate, Gate::Deny);

    // The bundle server comes back with revision 4: not locked out by the forged revision.
    let server = BundleServer::start(served(&signed(&bundle("us-2020", 4), &[&alice]), "\"v4\""));
    let gk = trusting(source(&server.url, Some(cache.path())), &[&alice], 1).unwrap();
    assert_eq!(gk.active().unwrap().bundle_revision, Some(4));
    assert_eq!(read_cache(cache.path()).manifest.revision, 4);
}

/// With a pinned digest and no keys, the cache is checked against the pin at start.
#[test]
fn the_cache_is_checked_against_the_pinned_digest_at_start() {
    let cache = tempfile::tempdir().unwrap();
    let genuine = bundle("us-2020", 1);
    let pinned = |url: &str| {
        let mut s = source(url, Some(cache.path()));
        s.pinned_sha256 = Some(gatekeeper::sha256_hex(&genuine.to_bytes()));
        s
    };
    {
        let server = BundleServer::start(served(&genuine, "\"v1\""));
        let gk = Gatekeeper::builder()
            .source(PolicySource::BundleUrl(pinned(&server.url)))
            .build()
            .unwrap();
        assert!(gk.active().is_some());
    }
    let dead = dead_url();
    let restarted = Gatekeeper::builder()
        .source(PolicySource::BundleUrl(pinned(&dead)))
        .build()
        .unwrap();
    assert_eq!(restarted.active().unwrap().bundle_revision, Some(1));
    // Edited while down, digests recomputed: the digests match, the pin does not.
    let forged = forge(&read_cache(cache.path()), 2);
    assert!(forged.verify_digests().is_ok());
    write_cache(cache.path(), &forged);
    let built = Gatekeeper::builder()
        .source(PolicySource::BundleUrl(pinned(&dead)))
        .build();
    assert!(matches!(built, Err(BuildError::FirstLoad(_))), "{built:?}");
}

/// The highest accepted revision survives a restart through the cache: an older (genuinely
/// signed) bundle is refused, even once the cached bundle has expired.
#[test]
fn rollback_is_refused_across_restarts_through_the_cache() {
    let alice = key("alice");
    let cache = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(at("2026-06-01T00:00:00Z"));
    let seven = signed(
        &expiring("us-2020", 7, Some("2027-01-01T00:00:00Z")),
        &[&alice],
    );
    let build = |url: &str| {
        Gatekeeper::builder()
            .source(PolicySource::BundleUrl(source(url, Some(cache.path()))))
            .trusted_keys([alice.verifier()], 1)
            .clock(std::sync::Arc::new(clock.clone()))
            .build()
    };
    {
        let server = BundleServer::start(served(&seven, "\"v7\""));
        assert_eq!(
            build(&server.url)
                .unwrap()
                .active()
                .unwrap()
                .bundle_revision,
            Some(7)
        );
    }
    // Restarted, the server now offers revision 6, properly signed but older.
    let six = signed(&bundle("us-2020-courts", 6), &[&alice]);
    let server = BundleServer::start(served(&six, "\"v6\""));
    let gk = build(&server.url).unwrap();
    assert_eq!(gk.active().unwrap().bundle_revision, Some(7));
    refused(gk.reload(), |e| {
        matches!(
            e,
            BundleError::Rollback {
                bundle: 6,
                highest: 7
            }
        )
    });
    // Once the cached bundle has expired it is not used, but it is still the floor.
    clock.set(at("2027-06-01T00:00:00Z"));
    let built = build(&server.url);
    assert!(
        matches!(
            built,
            Err(BuildError::FirstLoad(ReloadError::Bundle(
                BundleError::Rollback {
                    bundle: 6,
                    highest: 7
                }
            )))
        ),
        "{built:?}"
    );
}

fn run(args: &[&str]) -> (u8, String, String) {
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let mut all = vec!["gatekeeper"];
    all.extend_from_slice(args);
    let code = cli::run(all, &mut std::io::empty(), &mut stdout, &mut stderr);
    (
        code,
        String::from_utf8(stdout).unwrap(),
        String::from_utf8(stderr).unwrap(),
    )
}

/// `bundle keygen`, `bundle build --sign-with`, `bundle sign` and `bundle verify`, and a
/// gatekeeper trusting the public key files.
#[test]
fn keygen_sign_and_verify_on_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).display().to_string();
    for name in ["alice", "bob"] {
        let (code, out, err) = run(&["bundle", "keygen", "--name", name, "-o", &p(name)]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains(&format!("{}.pub", p(name))), "{out}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(p("alice")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the private key is its owner's only");
    }
    let (code, _, err) = run(&["bundle", "keygen", "--name", "alice", "-o", &p("alice")]);
    assert_eq!(code, 2, "an existing key is never overwritten");
    assert!(err.contains("never overwritten"), "{err}");
    let alice_pub = VerifierKey::parse(&std::fs::read_to_string(p("alice.pub")).unwrap()).unwrap();
    assert_eq!(alice_pub.name(), "alice");

    let policies = root().join("policies/us-2020").display().to_string();
    let bundle_path = p("bundle.json");
    let (code, out, err) = run(&[
        "bundle",
        "build",
        "--policies",
        &policies,
        "-o",
        &bundle_path,
        "--revision",
        "3",
        "--sign-with",
        &p("alice"),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("signed by alice"), "{out}");
    let verify = |threshold: &str| {
        run(&[
            "bundle",
            "verify",
            &bundle_path,
            "--trusted-key",
            &p("alice.pub"),
            "--trusted-key",
            &p("bob.pub"),
            "--threshold",
            threshold,
        ])
    };
    assert_eq!(verify("1").0, 0);
    let (code, _, err) = verify("2");
    assert_eq!(code, 1);
    assert!(err.contains("2 are required"), "{err}");
    let (code, out, err) = run(&["bundle", "sign", &bundle_path, "--key", &p("bob")]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("2 signature(s)"), "{out}");
    let (code, out, _) = verify("2");
    assert_eq!(code, 0);
    assert!(out.contains("signed by alice, bob"), "{out}");

    let keys = ["alice.pub", "bob.pub"]
        .map(|f| VerifierKey::parse(&std::fs::read_to_string(p(f)).unwrap()).unwrap());
    let gk = Gatekeeper::builder()
        .source(PolicySource::BundleFile(bundle_path.clone().into()))
        .trusted_keys(keys, 2)
        .build()
        .unwrap();
    assert_eq!(gk.active().unwrap().signed_by, ["alice", "bob"]);

    // A bundle whose files no longer match their digests is never signed. (The bundle is
    // binary, with the compiled image: a byte is changed in place, so that it still parses.)
    let mut bytes = std::fs::read(&bundle_path).unwrap();
    let at = bytes.windows(7).position(|w| w == b"Tencent").unwrap();
    bytes[at + 5] = b'm';
    std::fs::write(&bundle_path, bytes).unwrap();
    let (code, _, err) = run(&["bundle", "sign", &bundle_path, "--key", &p("bob")]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("does not match its manifest digest"), "{err}");
}
