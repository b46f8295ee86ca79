//! The audit trail: compact records, the Merkle tree and its checkpoints, tamper
//! detection, crash recovery (torn tails at the byte level), rotation, concurrency.

use std::path::{Path, PathBuf};

use gatekeeper::audit::{AuditConfig, AuditLog, Problem, Record};
use gatekeeper::{CheckError, FailureMode, Gatekeeper};

use crate::handle::wechat_update;
use crate::support::root;

pub fn gatekeeper_with(config: AuditConfig, failure_mode: FailureMode) -> Gatekeeper {
    Gatekeeper::builder()
        .policy_dirs([root().join("policies/us-2020")])
        .failure_mode(failure_mode)
        .audit(config)
        .build()
        .unwrap()
}

fn gatekeeper(dir: &Path, failure_mode: FailureMode, max_file_bytes: u64) -> Gatekeeper {
    let mut config = AuditConfig::new(dir);
    config.max_file_bytes = max_file_bytes;
    gatekeeper_with(config, failure_mode)
}

pub fn only_file(dir: &Path) -> PathBuf {
    let files = gatekeeper::audit::files_in(dir).unwrap();
    assert_eq!(files.len(), 1);
    files[0].1.clone()
}

/// Writes `n` records, closes the trail (which writes a last checkpoint) and returns the
/// trail's folder.
fn trail(n: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let gk = gatekeeper(dir.path(), FailureMode::Closed, u64::MAX);
    for _ in 0..n {
        gk.check(&wechat_update()).unwrap();
    }
    gk.close_audit().unwrap();
    dir
}

pub fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| format!("{l}\n"))
        .collect()
}

fn run_cli(args: &[&str]) -> (u8, String, String) {
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

#[test]
fn every_verdict_is_recorded_by_reference_and_the_tree_verifies() {
    let dir = trail(25);
    let report = gatekeeper::verify(&[dir.path()]).unwrap();
    assert_eq!(report.records, 25);
    // Closing wrote a checkpoint of the whole trail, and the trail matches it.
    assert_eq!((report.checkpoints > 0, report.covered), (true, 25));
    let all = lines(&only_file(dir.path()));
    let first: serde_json::Value = serde_json::from_str(&all[0]).unwrap();
    assert_eq!(first["n"], 0);
    assert_eq!(first["deny"], serde_json::json!(["wechat-app-store"]));
    assert_eq!(first["req"]["app"]["id"], "com.tencent.mm");
    assert_eq!(first["id"].as_str().unwrap().len(), 32);
    assert_eq!(first["rev"].as_str().unwrap().len(), 12);
    // The revision and the prohibition's id stand for the texts, which are not repeated.
    assert!(!all[0].contains("Federal Register") && !all[0].contains("citation"));
    let last: Record = serde_json::from_str(&all[24]).unwrap();
    assert_eq!(last.n, 24);
}

/// The bound the issue sets: a record is about twice the request it records, at most.
#[test]
fn a_record_is_at_most_about_twice_its_request() {
    let requests = [
        r#"{"app":{"platform":"android","id":"com.tencent.mm"},"action":"update","at":"2020-09-22T12:00:00Z","storefront":"US"}"#,
        r#"{"app":{"platform":"ios","id":"com.zhiliaoapp.musically"},"action":"download","at":"2020-09-22T12:00:00Z","storefront":"CA"}"#,
        r#"{"app":{"platform":"android","id":"com.example.notes"},"action":"download","at":"2025-03-01T12:00:00Z","storefront":"US"}"#,
        r#"{"app":{"platform":"ios","id":"com.tencent.xin"},"action":"payment","at":"2020-09-21T12:00:00Z","billing_country":"US"}"#,
    ];
    let dir = tempfile::tempdir().unwrap();
    let gk = gatekeeper(dir.path(), FailureMode::Closed, u64::MAX);
    for r in requests {
        let request = serde_json::from_str::<policy::RequestRecord>(r)
            .unwrap()
            .into_request()
            .unwrap();
        gk.check(&request).unwrap();
    }
    gk.close_audit().unwrap();
    let records = lines(&only_file(dir.path()));
    for (request, record) in requests.iter().zip(&records) {
        let ratio = record.len() as f64 / request.len() as f64;
        assert!(ratio <= 2.2, "{ratio:.2}: {record}");
    }
}

#[test]
fn a_changed_decision_is_found_by_the_checkpoint() {
    let dir = trail(10);
    let file = only_file(dir.path());
    // Turn the 5th record's deny into an allow: still a well-formed record.
    let mut l = lines(&file);
    l[4] = l[4].replacen(
        r#""deny":["wechat-app-store"]"#,
        r#""allow":"not-covered""#,
        1,
    );
    std::fs::write(&file, l.concat()).unwrap();
    let e = gatekeeper::verify(&[dir.path()]).unwrap_err();
    assert_eq!(e.problem, Problem::Rewritten);
    assert!(e.reason.contains("was changed"), "{}", e.reason);
}

#[test]
fn a_malformed_record_is_named() {
    let dir = trail(10);
    let file = only_file(dir.path());
    let mut l = lines(&file);
    l[4] = l[4].replacen(r#""deny":"#, r#""denY":"#, 1);
    std::fs::write(&file, l.concat()).unwrap();
    let e = gatekeeper::verify(&[dir.path()]).unwrap_err();
    assert_eq!((e.problem, e.index, e.line), (Problem::Malformed, 4, 5));
}

#[test]
fn a_deleted_record_is_found() {
    let dir = trail(10);
    let file = only_file(dir.path());
    let mut l = lines(&file);
    l.remove(3);
    std::fs::write(&file, l.concat()).unwrap();
    let e = gatekeeper::verify(&[dir.path()]).unwrap_err();
    assert_eq!((e.problem, e.index), (Problem::Sequence, 3));
    assert!(e.reason.contains("#4 where #3 was due"), "{}", e.reason);
}

#[test]
fn two_reordered_records_are_found() {
    let dir = trail(10);
    let file = only_file(dir.path());
    let mut l = lines(&file);
    l.swap(6, 7);
    std::fs::write(&file, l.concat()).unwrap();
    let e = gatekeeper::verify(&[dir.path()]).unwrap_err();
    assert_eq!((e.problem, e.index), (Problem::Sequence, 6));
}

/// A crash cut a write inside a multi-byte character: `verify` reports a torn tail, and
/// the trail opens again, cutting exactly those bytes.
#[test]
fn a_tail_torn_inside_a_multi_byte_character_is_reported_and_cut_on_open() {
    let dir = trail(10);
    let file = only_file(dir.path());
    let before = std::fs::metadata(&file).unwrap().len();
    // A record whose text has `é` (0xC3 0xA9), cut after its first byte.
    let torn: &[u8] = b"{\"n\":10,\"t\":1,\"resumed\":{\"lost\":0,\"error\":\"caf\xC3";
    let mut bytes = std::fs::read(&file).unwrap();
    bytes.extend_from_slice(torn);
    std::fs::write(&file, &bytes).unwrap();

    let report = gatekeeper::verify(&[dir.path()]).unwrap();
    assert_eq!(report.records, 10);
    let tail = report.torn_tail.unwrap();
    assert_eq!(tail.bytes, torn.len() as u64);
    let (code, out, _) = run_cli(&["audit", "verify", dir.path().to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(
        out.contains(&format!("torn tail: {} bytes", torn.len())),
        "{out}"
    );

    let log = AuditLog::open(AuditConfig::new(dir.path())).unwrap();
    assert_eq!(log.recovered_bytes, torn.len() as u64);
    drop(log);
    assert_eq!(std::fs::metadata(&file).unwrap().len(), before);
    // The trail goes on from record #10.
    let gk = gatekeeper(dir.path(), FailureMode::Closed, u64::MAX);
    gk.check(&wechat_update()).unwrap();
    let head = gk.close_audit().unwrap().unwrap();
    assert_eq!(head.seq, 11);
    let report = gatekeeper::verify(&[dir.path()]).unwrap();
    assert_eq!((report.records, report.torn_tail), (11, None));
    assert_eq!(report.head, head.hash);
}

#[test]
fn a_tail_torn_inside_a_file_before_the_newest_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let gk = gatekeeper(dir.path(), FailureMode::Closed, 1_500);
    for _ in 0..20 {
        gk.check(&wechat_update()).unwrap();
    }
    gk.close_audit().unwrap();
    let files = gatekeeper::audit::files_in(dir.path()).unwrap();
    assert!(files.len() > 2);
    let first = &files[0].1;
    let text = std::fs::read(first).unwrap();
    std::fs::write(first, &text[..text.len() - 10]).unwrap();
    let e = gatekeeper::verify(&[dir.path()]).unwrap_err();
    assert_eq!(e.problem, Problem::Malformed);
    assert!(e.reason.contains("not the newest"), "{}", e.reason);
}

#[test]
fn rotation_by_size_continues_the_tree_across_files() {
    let dir = tempfile::tempdir().unwrap();
    let gk = gatekeeper(dir.path(), FailureMode::Closed, 4_000);
    for _ in 0..60 {
        gk.check(&wechat_update()).unwrap();
    }
    gk.close_audit().unwrap();
    let files = gatekeeper::audit::files_in(dir.path()).unwrap();
    assert!(files.len() > 3, "{} files", files.len());
    for (_, f) in &files {
        assert!(std::fs::metadata(f).unwrap().len() <= 4_000 || lines(f).len() == 1);
    }
    let report = gatekeeper::verify(&[dir.path()]).unwrap();
    assert_eq!((report.records, report.files), (60, files.len()));
    // Reopening continues after the last file's last record.
    let gk = gatekeeper(dir.path(), FailureMode::Closed, 4_000);
    gk.check(&wechat_update()).unwrap();
    assert_eq!(gk.close_audit().unwrap().unwrap().seq, 61);
    assert_eq!(gatekeeper::verify(&[dir.path()]).unwrap().records, 61);
}

#[test]
fn no_record_is_lost_under_concurrent_writers() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = AuditConfig::new(dir.path());
    // A small queue makes writers wait for room: backpressure, not drops.
    config.queue_capacity = 16;
    let gk = gatekeeper_with(config, FailureMode::Closed);
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let gk = gk.clone();
            std::thread::spawn(move || {
                for _ in 0..1_000 {
                    gk.check(&wechat_update()).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let head = gk.close_audit().unwrap().unwrap();
    assert_eq!(head.seq, 8_000);
    assert_eq!(gk.audit_counts(), Some((8_000, 0)));
    assert_eq!(gatekeeper::verify(&[dir.path()]).unwrap().records, 8_000);
}

/// The writer cannot create its next file: closed mode fails checks, open mode counts.
#[test]
fn a_failed_writer_fails_closed_checks_and_is_counted_when_open() {
    for mode in [FailureMode::Closed, FailureMode::Open] {
        let dir = tempfile::tempdir().unwrap();
        let gk = gatekeeper(dir.path(), mode, 2_000);
        // A folder where the next file must go makes the rotation fail.
        std::fs::create_dir(dir.path().join("audit-000002.jsonl")).unwrap();
        let mut failed = None;
        for i in 0..200 {
            match gk.check(&wechat_update()) {
                Ok(_) => {}
                Err(CheckError::Audit(e)) => {
                    failed = Some((i, e));
                    break;
                }
            }
        }
        match mode {
            FailureMode::Closed => {
                let (_, e) = failed.expect("closed mode must fail checks once the writer failed");
                assert!(e.to_string().contains("audit-000002.jsonl"), "{e}");
                assert!(gk.audit_health().unwrap().failing.is_some());
            }
            FailureMode::Open => {
                assert!(failed.is_none());
                let (_, lost) = gk.audit_counts().unwrap();
                assert!(lost > 0);
            }
        }
        // What was written before the failure still verifies.
        drop(gk);
        std::fs::remove_dir(dir.path().join("audit-000002.jsonl")).unwrap();
        assert!(gatekeeper::verify(&[dir.path()]).unwrap().records > 0);
    }
}

#[test]
fn the_command_line_verifies_and_reports_the_first_broken_record() {
    let dir = trail(5);
    let path = dir.path().display().to_string();
    let (code, out, _) = run_cli(&["audit", "verify", &path]);
    assert_eq!(code, 0);
    assert!(out.starts_with("ok: 5 records in 1 files, head "), "{out}");
    let file = only_file(dir.path());
    let mut l = lines(&file);
    l.swap(1, 2);
    std::fs::write(&file, l.concat()).unwrap();
    let (code, _, err) = run_cli(&["audit", "verify", &path]);
    assert_eq!(code, 1);
    assert!(err.contains("record #1 ("), "{err}");
}
