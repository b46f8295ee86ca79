//! Signed checkpoints of the audit trail's Merkle tree: truncation and rewriting since a
//! checkpoint kept elsewhere are found, and inclusion and consistency proofs check out
//! without the trail (and fail when tampered with).

use std::path::Path;

use gatekeeper::audit::{AuditConfig, Checkpoint, CheckpointEvery, Problem, Proof};
use gatekeeper::keys::SignerKey;
use gatekeeper::{FailureMode, Gatekeeper};

use crate::audit::{gatekeeper_with, lines, only_file};
use crate::handle::wechat_update;

const ORIGIN: &str = "audit.example.org/store";

struct Signed {
    dir: tempfile::TempDir,
    /// Where the operator keeps checkpoints and the public key, away from the trail.
    kept: tempfile::TempDir,
    key: SignerKey,
}

impl Signed {
    fn key_file(&self) -> String {
        let path = self.kept.path().join("audit.pub");
        std::fs::write(&path, self.key.verifier().to_string()).unwrap();
        path.display().to_string()
    }

    /// Copies the trail's latest checkpoint away, as an operator's shipper would.
    fn keep_checkpoint(&self, name: &str) -> String {
        let to = self.kept.path().join(name);
        std::fs::copy(self.dir.path().join("checkpoint"), &to).unwrap();
        to.display().to_string()
    }

    fn open(&self, name: &str) -> Checkpoint {
        let note = std::fs::read_to_string(self.kept.path().join(name)).unwrap();
        Checkpoint::open(&note, &self.key.verifier()).unwrap()
    }

    fn gatekeeper(&self, max_file_bytes: u64) -> Gatekeeper {
        let mut config = AuditConfig::new(self.dir.path());
        config.max_file_bytes = max_file_bytes;
        config.checkpoint_key = Some(self.key.clone());
        config.checkpoint_every = CheckpointEvery {
            records: 10,
            interval: std::time::Duration::from_secs(3600),
        };
        gatekeeper_with(config, FailureMode::Closed)
    }

    fn append(&self, n: usize, max_file_bytes: u64) {
        let gk = self.gatekeeper(max_file_bytes);
        for _ in 0..n {
            gk.check(&wechat_update()).unwrap();
        }
        gk.close_audit().unwrap();
    }

    /// An attacker who cannot sign covers their tracks: the trail's own checkpoints go.
    fn remove_folder_checkpoints(&self) {
        std::fs::remove_file(self.dir.path().join("checkpoint")).unwrap();
        std::fs::remove_file(self.dir.path().join("checkpoints.jsonl")).unwrap();
    }

    fn verify_with_kept(
        &self,
        name: &str,
    ) -> Result<gatekeeper::VerifyReport, gatekeeper::VerifyError> {
        gatekeeper::audit::verify_with(
            &[self.dir.path()],
            &[self.open(name)],
            Some(&self.key.verifier()),
        )
    }
}

/// A trail of `n` records in files of at most `max_file_bytes`, with its signed
/// checkpoint kept as `kept.checkpoint`.
fn signed_trail(n: usize, max_file_bytes: u64) -> Signed {
    let s = Signed {
        dir: tempfile::tempdir().unwrap(),
        kept: tempfile::tempdir().unwrap(),
        key: SignerKey::generate(ORIGIN).unwrap(),
    };
    s.append(n, max_file_bytes);
    s.keep_checkpoint("kept.checkpoint");
    s
}

fn cli(args: &[&str]) -> (u8, String, String) {
    let mut out = Vec::new();
    let mut err = Vec::new();
    let mut argv = vec!["gatekeeper"];
    argv.extend_from_slice(args);
    let code = cli::run(argv, &mut std::io::empty(), &mut out, &mut err);
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

fn verify_cli(s: &Signed, checkpoint: &str) -> (u8, String, String) {
    let key = s.key_file();
    let checkpoint = s.kept.path().join(checkpoint).display().to_string();
    cli(&[
        "audit",
        "verify",
        s.dir.path().to_str().unwrap(),
        "--checkpoint",
        &checkpoint,
        "--key",
        &key,
    ])
}

#[test]
fn checkpoints_are_signed_notes_in_the_c2sp_format_written_every_n_records() {
    let s = signed_trail(25, u64::MAX);
    let note = std::fs::read_to_string(s.dir.path().join("checkpoint")).unwrap();
    let mut lines = note.lines();
    assert_eq!(lines.next(), Some(ORIGIN));
    assert_eq!(lines.next(), Some("25"));
    assert_eq!(lines.next().unwrap().len(), 44); // base64 of 32 bytes
    assert_eq!(lines.next(), Some(""));
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with(&format!("\u{2014} {ORIGIN} "))
    );
    // Every 10 records, and when closed.
    let log = std::fs::read_to_string(s.dir.path().join("checkpoints.jsonl")).unwrap();
    let sizes: Vec<u64> = log
        .lines()
        .map(|l| {
            let note = serde_json::from_str::<serde_json::Value>(l).unwrap()["note"]
                .as_str()
                .unwrap()
                .to_owned();
            Checkpoint::open(&note, &s.key.verifier()).unwrap().size
        })
        .collect();
    assert_eq!(sizes, [10, 20, 25]);
    let (code, out, err) = verify_cli(&s, "kept.checkpoint");
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("matches 3 checkpoints, signatures verified"),
        "{out}"
    );
}

/// The tail cut at a line end, the folder's checkpoints removed: only the checkpoint kept
/// elsewhere tells.
#[test]
fn a_tail_cut_at_a_line_end_is_found_given_a_checkpoint() {
    let s = signed_trail(30, u64::MAX);
    let file = only_file(s.dir.path());
    let l = lines(&file);
    std::fs::write(&file, l[..27].concat()).unwrap();
    s.remove_folder_checkpoints();
    assert_eq!(gatekeeper::verify(&[s.dir.path()]).unwrap().records, 27);
    let e = s.verify_with_kept("kept.checkpoint").unwrap_err();
    assert_eq!(e.problem, Problem::Truncated);
    let (code, _, err) = verify_cli(&s, "kept.checkpoint");
    assert_eq!(code, 1);
    assert!(err.contains("records #27 to #29 were removed"), "{err}");
}

#[test]
fn a_deleted_newest_file_is_found_given_a_checkpoint() {
    let s = signed_trail(40, 2_000);
    let files = gatekeeper::audit::files_in(s.dir.path()).unwrap();
    assert!(files.len() > 2);
    std::fs::remove_file(&files.last().unwrap().1).unwrap();
    s.remove_folder_checkpoints();
    assert!(gatekeeper::verify(&[s.dir.path()]).is_ok());
    let e = s.verify_with_kept("kept.checkpoint").unwrap_err();
    assert_eq!(e.problem, Problem::Truncated);
}

/// Decisions flipped, and everything an attacker without the key can recompute
/// recomputed: the folder's checkpoints rewritten unsigned. Both the kept checkpoint and
/// the key find it.
#[test]
fn flipped_decisions_are_found_however_the_rest_is_recomputed() {
    let s = signed_trail(30, u64::MAX);
    let file = only_file(s.dir.path());
    let mut l = lines(&file);
    for i in [3, 17] {
        l[i] = l[i].replacen(
            r#""deny":["wechat-app-store"]"#,
            r#""allow":"not-covered""#,
            1,
        );
    }
    std::fs::write(&file, l.concat()).unwrap();
    s.remove_folder_checkpoints();
    // The forger's own, unsigned checkpoint of the rewritten trail.
    let leaves: Vec<_> = l
        .iter()
        .map(|r| gatekeeper::audit::merkle::leaf_hash(r.trim_end().as_bytes()))
        .collect();
    let forged = Checkpoint {
        origin: ORIGIN.to_owned(),
        size: 30,
        root: gatekeeper::audit::merkle::root_of(&leaves),
    };
    std::fs::write(
        s.dir.path().join("checkpoint"),
        forged.to_note(None).unwrap(),
    )
    .unwrap();
    // Without a key, the trail agrees with itself...
    assert!(gatekeeper::verify(&[s.dir.path()]).is_ok());
    // ...but not with the kept checkpoint,
    let e = s.verify_with_kept("kept.checkpoint").unwrap_err();
    assert_eq!(e.problem, Problem::Rewritten);
    assert!(e.reason.contains("#0 to #29"), "{}", e.reason);
    // and its own checkpoint is not signed by the operator's key.
    let e =
        gatekeeper::audit::verify_with(&[s.dir.path()], &[], Some(&s.key.verifier())).unwrap_err();
    assert_eq!(e.problem, Problem::Checkpoint);
    let (code, _, err) = verify_cli(&s, "kept.checkpoint");
    assert_eq!(code, 1);
    assert!(err.contains("does not verify"), "{err}");
}

/// With the folder's checkpoint log intact, a rewrite is placed between two checkpoints.
#[test]
fn a_rewrite_is_placed_between_two_checkpoints() {
    let s = signed_trail(30, u64::MAX);
    let file = only_file(s.dir.path());
    let mut l = lines(&file);
    l[23] = l[23].replacen(
        r#""deny":["wechat-app-store"]"#,
        r#""allow":"not-covered""#,
        1,
    );
    std::fs::write(&file, l.concat()).unwrap();
    let e =
        gatekeeper::audit::verify_with(&[s.dir.path()], &[], Some(&s.key.verifier())).unwrap_err();
    assert_eq!(e.problem, Problem::Rewritten);
    assert!(e.reason.contains("among #20 to #29"), "{}", e.reason);
}

#[test]
fn inclusion_proofs_check_out_without_the_trail_and_fail_when_tampered() {
    let s = signed_trail(30, 3_000);
    let checkpoint = s.open("kept.checkpoint");
    for index in [0, 7, 29] {
        let proof = gatekeeper::audit::prove_inclusion(s.dir.path(), index, None).unwrap();
        proof.check(&checkpoint, None).unwrap();
        let Proof::Inclusion(p) = &proof else {
            panic!("not an inclusion proof")
        };
        assert_eq!(p.size, 30);
        // A changed record, a changed hash, another index: refused.
        let mut changed = p.clone();
        changed.record = changed.record.replacen("deny", "allow", 1);
        assert!(Proof::Inclusion(changed).check(&checkpoint, None).is_err());
        if !p.proof.is_empty() {
            let mut changed = p.clone();
            let first = &mut changed.proof[0];
            let other = if first.starts_with('A') { "B" } else { "A" };
            first.replace_range(0..1, other);
            assert!(Proof::Inclusion(changed).check(&checkpoint, None).is_err());
        }
        let mut moved = p.clone();
        moved.index = (index + 1) % 30;
        assert!(Proof::Inclusion(moved).check(&checkpoint, None).is_err());
    }

    // The command line: prove a decision by its id, check it with the kept checkpoint.
    let id = gatekeeper::audit::read_records(&[s.dir.path()]).unwrap()[12]
        .id
        .clone()
        .unwrap();
    let (code, proof, err) = cli(&[
        "audit",
        "prove",
        s.dir.path().to_str().unwrap(),
        "--id",
        &id,
    ]);
    assert_eq!(code, 0, "{err}");
    let proof_file = s.kept.path().join("proof.json");
    std::fs::write(&proof_file, &proof).unwrap();
    let key = s.key_file();
    let kept = s.kept.path().join("kept.checkpoint").display().to_string();
    let proof_path = proof_file.display().to_string();
    let (code, out, err) = cli(&[
        "audit",
        "check-proof",
        &proof_path,
        "--checkpoint",
        &kept,
        "--key",
        &key,
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.trim(),
        format!("ok: record #12 is in the tree of 30 records signed by `{ORIGIN}`")
    );
    std::fs::write(
        &proof_file,
        proof.replacen("wechat-app-store", "wechat-app-stork", 1),
    )
    .unwrap();
    let (code, _, err) = cli(&[
        "audit",
        "check-proof",
        &proof_path,
        "--checkpoint",
        &kept,
        "--key",
        &key,
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("is not in the checkpoint's tree"), "{err}");
}

#[test]
fn consistency_proofs_check_out_without_the_trail_and_fail_when_tampered() {
    let s = signed_trail(13, 2_500);
    s.keep_checkpoint("old.checkpoint");
    s.append(20, 2_500);
    s.keep_checkpoint("new.checkpoint");
    let (old, new) = (s.open("old.checkpoint"), s.open("new.checkpoint"));
    assert_eq!((old.size, new.size), (13, 33));
    let proof = gatekeeper::audit::prove_consistency(s.dir.path(), 13, None).unwrap();
    proof.check(&new, Some(&old)).unwrap();
    let Proof::Consistency(p) = &proof else {
        panic!("not a consistency proof")
    };
    let mut changed = p.clone();
    changed.proof.swap(0, 1);
    assert!(Proof::Consistency(changed).check(&new, Some(&old)).is_err());
    // Against another old tree (say, a forked history): refused.
    let forged = Checkpoint {
        root: [9; 32],
        ..old.clone()
    };
    assert!(proof.check(&new, Some(&forged)).is_err());

    let (code, out, err) = cli(&[
        "audit",
        "prove",
        s.dir.path().to_str().unwrap(),
        "--from",
        "13",
    ]);
    assert_eq!(code, 0, "{err}");
    let proof_file = s.kept.path().join("proof.json");
    std::fs::write(&proof_file, &out).unwrap();
    let key = s.key_file();
    let at = |n: &str| s.kept.path().join(n).display().to_string();
    let args = |proof: &Path| {
        vec![
            "audit".to_owned(),
            "check-proof".to_owned(),
            proof.display().to_string(),
            "--checkpoint".to_owned(),
            at("new.checkpoint"),
            "--old-checkpoint".to_owned(),
            at("old.checkpoint"),
            "--key".to_owned(),
            key.clone(),
        ]
    };
    let a = args(&proof_file);
    let (code, out, err) = cli(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("the tree of 13 records is a prefix of the tree of 33"),
        "{out}"
    );

    // Records #0 to #12 rewritten after the old checkpoint: no proof from the trail as
    // it now is can reach the old checkpoint's root.
    let file = &gatekeeper::audit::files_in(s.dir.path()).unwrap()[0].1;
    let mut l = lines(file);
    l[2] = l[2].replacen(
        r#""deny":["wechat-app-store"]"#,
        r#""allow":"not-covered""#,
        1,
    );
    std::fs::write(file, l.concat()).unwrap();
    let rewritten = gatekeeper::audit::prove_consistency(s.dir.path(), 13, Some(33)).unwrap();
    assert!(rewritten.check(&new, Some(&old)).is_err());
}
