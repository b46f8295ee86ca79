//! The audit trail: hash chain, tamper detection, crash recovery, rotation, concurrency.

use std::path::{Path, PathBuf};

use gatekeeper::{AuditConfig, AuditLog, CheckError, FailureMode, Gatekeeper};

use crate::handle::wechat_update;
use crate::support::root;

fn gatekeeper(dir: &Path, failure_mode: FailureMode, max_file_bytes: u64) -> Gatekeeper {
    let mut config = AuditConfig::new(dir);
    config.max_file_bytes = max_file_bytes;
    Gatekeeper::builder()
        .policy_dirs([root().join("policies/us-2020")])
        .failure_mode(failure_mode)
        .audit(config)
        .build()
        .unwrap()
}

fn only_file(dir: &Path) -> PathBuf {
    let files = gatekeeper::audit::files_in(dir).unwrap();
    assert_eq!(files.len(), 1);
    files[0].1.clone()
}

/// Writes `n` records and returns the trail's folder.
fn trail(n: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let gk = gatekeeper(dir.path(), FailureMode::Closed, u64::MAX);
    for _ in 0..n {
        gk.check(&wechat_update()).unwrap();
    }
    gk.close_audit().unwrap();
    dir
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn every_verdict_is_recorded_and_the_chain_verifies() {
    let dir = trail(25);
    let report = gatekeeper::verify(&[dir.path()]).unwrap();
    assert_eq!(report.records, 25);
    let first: serde_json::Value = serde_json::from_str(&lines(&only_file(dir.path()))[0]).unwrap();
    assert_eq!(first["seq"], 1);
    assert_eq!(first["prev"], gatekeeper::audit::GENESIS);
    assert_eq!(first["gate"], "deny");
    assert_eq!(first["request"]["app"]["id"], "com.tencent.mm");
    assert_eq!(first["reasons"][0]["prohibition"], "wechat-app-store");
    assert!(first["decision_id"].as_str().unwrap().len() == 32);
    assert_eq!(
        report.head,
        serde_json::from_str::<serde_json::Value>(lines(&only_file(dir.path()))[24].trim())
            .unwrap()["hash"]
    );
}

#[test]
fn one_tampered_byte_is_found() {
    let dir = trail(10);
    let file = only_file(dir.path());
    // Flip one byte of the 5th record: `deny` becomes `denY`.
    let mut l = lines(&file);
    let before = l[4].len();
    l[4] = l[4].replacen("\"gate\":\"deny\"", "\"gate\":\"denY\"", 1);
    assert_eq!(l[4].len(), before);
    std::fs::write(&file, l.concat()).unwrap();
    let e = gatekeeper::verify(&[dir.path()]).unwrap_err();
    assert_eq!((e.index, e.line), (5, 5));
    assert!(e.reason.contains("modified"), "{}", e.reason);
}

#[test]
fn a_deleted_record_is_found() {
    let dir = trail(10);
    let file = only_file(dir.path());
    let mut l = lines(&file);
    l.remove(3);
    std::fs::write(&file, l.concat()).unwrap();
    let e = gatekeeper::verify(&[dir.path()]).unwrap_err();
    assert_eq!(e.index, 4);
    assert!(
        e.reason.contains("sequence number 5 where 4 was due"),
        "{}",
        e.reason
    );
}

#[test]
fn two_reordered_records_are_found() {
    let dir = trail(10);
    let file = only_file(dir.path());
    let mut l = lines(&file);
    l.swap(6, 7);
    std::fs::write(&file, l.concat()).unwrap();
    let e = gatekeeper::verify(&[dir.path()]).unwrap_err();
    assert_eq!(e.index, 7);
}

#[test]
fn a_record_cut_mid_line_is_found_and_recovered_on_open() {
    let dir = trail(10);
    let file = only_file(dir.path());
    let text = std::fs::read_to_string(&file).unwrap();
    let cut = text.len() - 40;
    std::fs::write(&file, &text[..cut]).unwrap();
    let e = gatekeeper::verify(&[dir.path()]).unwrap_err();
    assert_eq!(e.index, 10);
    assert!(e.reason.contains("truncated"), "{}", e.reason);
    // Opening again cuts the torn line, and the chain continues from record 9.
    let log = AuditLog::open(AuditConfig::new(dir.path())).unwrap();
    assert!(log.recovered_bytes > 0);
    log.append("{\"note\":\"after the crash\"}".to_owned())
        .unwrap();
    let head = log.close().unwrap();
    assert_eq!(head.seq, 10);
    let report = gatekeeper::verify(&[dir.path()]).unwrap();
    assert_eq!(report.records, 10);
    assert_eq!(report.head, head.hash);
}

#[test]
fn rotation_by_size_continues_the_chain_across_files() {
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
    // A small queue makes writers wait on the writer thread: backpressure, not drops.
    config.queue_capacity = 16;
    let gk = Gatekeeper::builder()
        .policy_dirs([root().join("policies/us-2020")])
        .audit(config)
        .build()
        .unwrap();
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
            // Let the writer reach the rotation before the next check.
            let _ = gk.flush_audit();
        }
        match mode {
            FailureMode::Closed => {
                let (_, e) = failed.expect("closed mode must fail checks once the writer failed");
                assert!(e.to_string().contains("audit-000002.jsonl"), "{e}");
            }
            FailureMode::Open => {
                assert!(failed.is_none());
                let (_, lost) = gk.audit_counts().unwrap();
                assert!(lost > 0);
            }
        }
        // What was written before the failure still verifies.
        std::fs::remove_dir(dir.path().join("audit-000002.jsonl")).unwrap();
        assert!(gatekeeper::verify(&[dir.path()]).unwrap().records > 0);
    }
}

#[test]
fn the_command_line_verifies_and_reports_the_first_broken_record() {
    let dir = trail(5);
    let path = dir.path().display().to_string();
    let mut out = Vec::new();
    let mut err = Vec::new();
    let code = cli::run(
        ["gatekeeper", "audit", "verify", &path],
        &mut std::io::empty(),
        &mut out,
        &mut err,
    );
    assert_eq!(code, 0);
    assert!(
        String::from_utf8(out)
            .unwrap()
            .starts_with("ok: 5 records in 1 files, head ")
    );
    let file = only_file(dir.path());
    let mut l = lines(&file);
    l.swap(1, 2);
    std::fs::write(&file, l.concat()).unwrap();
    let mut out = Vec::new();
    let mut err = Vec::new();
    let code = cli::run(
        ["gatekeeper", "audit", "verify", &path],
        &mut std::io::empty(),
        &mut out,
        &mut err,
    );
    assert_eq!(code, 1);
    let err = String::from_utf8(err).unwrap();
    assert!(err.contains("record 2 ("), "{err}");
}
